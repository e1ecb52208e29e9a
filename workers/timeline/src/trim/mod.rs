//! The timeline cache trims (server-private `bin/cron.ts`, reference §6): the global inbox
//! keeps its newest 1000 items every 10 minutes; every inbox keeps 200 at 04:00 and every user
//! timeline 200 at 05:00, Asia/Shanghai (the inbox pattern also matches the global inbox, as
//! upstream). Keys are found with `SCAN … MATCH … TYPE zset`, trimmed with
//! `ZREMRANGEBYRANK key 0 -(N+1)`.
//!
//! With several replicas only one runs a job at a time: a job first takes
//! `lock:timeline:trim:{job}` (`SET NX EX`, released by compare-and-delete when done; the
//! expiry frees it if the holder dies). Not here: the fan-out, which never trims.
//!
//! # Layout
//! - [`schedule`]: when (pure).
//! - [`Job`]: what each job trims.
//! - [`run_locked`]: one run under the lock; [`scheduler`]: the loop beside the consumer.

pub mod schedule;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{RedisResult, Script};
use tokio_util::sync::CancellationToken;

use crate::keys;
use schedule::Schedule;

/// One trim job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Job {
    /// `tml:v3:inbox:0`, keep 1000, every 10 minutes.
    Global,
    /// `tml:v3:inbox:*`, keep 200, daily 04:00.
    Inbox,
    /// `tml:v3:user:*`, keep 200, daily 05:00.
    User,
}

impl Job {
    /// Every job.
    pub const ALL: [Job; 3] = [Job::Global, Job::Inbox, Job::User];

    /// Its name (logs, lock key).
    pub fn name(self) -> &'static str {
        match self {
            Job::Global => "global",
            Job::Inbox => "inbox",
            Job::User => "user",
        }
    }

    /// Items kept per key.
    pub fn keep(self) -> i64 {
        match self {
            Job::Global => 1000,
            Job::Inbox | Job::User => 200,
        }
    }

    /// When it runs.
    pub fn schedule(self) -> Schedule {
        match self {
            Job::Global => Schedule::EveryMinutes(10),
            Job::Inbox => Schedule::DailyAt(4),
            Job::User => Schedule::DailyAt(5),
        }
    }

    fn lock_seconds(self) -> u64 {
        match self {
            Job::Global => 300,
            Job::Inbox | Job::User => 3600,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// Trimmed `keys` keys, removing `removed` items.
    Trimmed {
        /// Keys visited.
        keys: u64,
        /// Items removed.
        removed: u64,
    },
    /// Another replica holds the lock.
    Locked,
}

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Runs `job` once, if no other replica is running it.
pub async fn run_locked(redis: &ConnectionManager, prefix: &str, job: Job) -> RedisResult<Ran> {
    let mut conn = redis.clone();
    let lock = keys::trim_lock(prefix, job.name());
    let token = format!(
        "{}:{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let taken: Option<String> = redis::cmd("SET")
        .arg(&lock)
        .arg(&token)
        .arg("NX")
        .arg("EX")
        .arg(job.lock_seconds())
        .query_async(&mut conn)
        .await?;
    if taken.is_none() {
        return Ok(Ran::Locked);
    }
    let result = trim(&mut conn, prefix, job).await;
    Script::new(RELEASE)
        .key(&lock)
        .arg(&token)
        .invoke_async::<i64>(&mut conn)
        .await?;
    result
}

/// Trims without the lock.
pub async fn trim(conn: &mut ConnectionManager, prefix: &str, job: Job) -> RedisResult<Ran> {
    let stop = -(job.keep() + 1);
    if job == Job::Global {
        let removed: u64 = redis::cmd("ZREMRANGEBYRANK")
            .arg(keys::inbox(prefix, 0))
            .arg(0)
            .arg(stop)
            .query_async(conn)
            .await?;
        return Ok(Ran::Trimmed { keys: 1, removed });
    }
    let pattern = match job {
        Job::User => format!("{}tml:v3:user:*", keys::glob_escape(prefix)),
        _ => format!("{}tml:v3:inbox:*", keys::glob_escape(prefix)),
    };
    let (mut cursor, mut visited, mut removed) = (0u64, 0u64, 0u64);
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("zset")
            .query_async(conn)
            .await?;
        if !found.is_empty() {
            let mut pipe = redis::pipe();
            for key in &found {
                pipe.cmd("ZREMRANGEBYRANK").arg(key).arg(0).arg(stop);
            }
            let counts: Vec<u64> = pipe.query_async(conn).await?;
            visited += found.len() as u64;
            removed += counts.iter().sum::<u64>();
        }
        if next == 0 {
            return Ok(Ran::Trimmed {
                keys: visited,
                removed,
            });
        }
        cursor = next;
    }
}

/// Runs every job on its schedule until `shutdown`. Failures are logged and the job waits for
/// its next time, as server-private's cron does.
pub async fn scheduler(redis: ConnectionManager, prefix: String, shutdown: CancellationToken) {
    let now = unix_now();
    let mut next: Vec<(Job, i64)> = Job::ALL
        .iter()
        .map(|j| (*j, j.schedule().next_after(now)))
        .collect();
    loop {
        let Some(&(job, at)) = next.iter().min_by_key(|(_, at)| *at) else {
            return;
        };
        let wait = Duration::from_secs(u64::try_from(at - unix_now()).unwrap_or(0));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if unix_now() < at {
            continue; // woke early (clock adjusted): wait again
        }
        match run_locked(&redis, &prefix, job).await {
            Ok(Ran::Trimmed { keys, removed }) => {
                tracing::info!(job = job.name(), keys, removed, "timeline trim done")
            }
            Ok(Ran::Locked) => {
                tracing::info!(
                    job = job.name(),
                    "timeline trim skipped: another replica holds the lock"
                )
            }
            Err(error) => tracing::error!(job = job.name(), %error, "timeline trim failed"),
        }
        for entry in &mut next {
            if entry.0 == job {
                entry.1 = job.schedule().next_after(unix_now().max(at));
            }
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
