//! Fleet-wide state in Redis, under the `REDIS_KEY_PREFIX`:
//!
//! - `lock:{job}:{tick}` (`SET NX PX`, value: the replica): whoever sets it runs the tick.
//!   It is never deleted, only expires, so a replica that reaches the same tick later (a late
//!   timer, a start-up catch-up) finds it taken; it outlives the job's catch-up window.
//! - `scheduler:last:{job}` (hash): the latest run: `tick`, `result`, `duration_ms`,
//!   `finished_at_ms`, `replica`, `summary` (for `list`); and `succeeded_at_ms`, when the
//!   latest successful run finished (for the metrics).
//! - `scheduler:runs:{job}` (list, newest first, the last [`HISTORY`]): every run as JSON.
//!
//! A tick is the scheduled instant in unix seconds; a manual run's is the second it started.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult};
use serde::{Deserialize, Serialize};

use crate::job::Job;

/// Runs kept in `scheduler:runs:{job}`.
pub const HISTORY: isize = 1000;

/// One finished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The tick (unix seconds).
    pub tick: i64,
    /// `ok` or `error`.
    pub result: String,
    /// Milliseconds the job took.
    pub duration_ms: u64,
    /// When it finished (unix milliseconds).
    pub finished_at_ms: i64,
    /// Which replica ran it (`HOSTNAME:pid`).
    pub replica: String,
    /// What it did, or its error.
    pub summary: String,
}

/// [`Run::result`] of a run that succeeded.
pub const OK: &str = "ok";
/// [`Run::result`] of a run that failed.
pub const ERROR: &str = "error";

/// `lock:{job}:{tick}`.
pub fn lock_key(prefix: &str, job: Job, tick: i64) -> String {
    format!("{prefix}lock:{}:{tick}", job.name())
}

fn last_key(prefix: &str, job: Job) -> String {
    format!("{prefix}scheduler:last:{}", job.name())
}

fn runs_key(prefix: &str, job: Job) -> String {
    format!("{prefix}scheduler:runs:{}", job.name())
}

/// Claims `tick` of `job` for `replica` for `hold`; false when another replica has it.
pub async fn claim(
    redis: &mut ConnectionManager,
    prefix: &str,
    job: Job,
    tick: i64,
    replica: &str,
    hold: Duration,
) -> RedisResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(lock_key(prefix, job, tick))
        .arg(replica)
        .arg("NX")
        .arg("PX")
        .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1))
        .query_async(redis)
        .await?;
    Ok(set.is_some())
}

/// Records `run` of `job` as its latest and in its history.
pub async fn record(
    redis: &mut ConnectionManager,
    prefix: &str,
    job: Job,
    run: &Run,
) -> anyhow::Result<()> {
    let runs = runs_key(prefix, job);
    let mut fields = vec![
        ("tick", run.tick.to_string()),
        ("result", run.result.clone()),
        ("duration_ms", run.duration_ms.to_string()),
        ("finished_at_ms", run.finished_at_ms.to_string()),
        ("replica", run.replica.clone()),
        ("summary", run.summary.clone()),
    ];
    if run.result == OK {
        fields.push(("succeeded_at_ms", run.finished_at_ms.to_string()));
    }
    let () = redis::pipe()
        .atomic()
        .hset_multiple(last_key(prefix, job), &fields)
        .ignore()
        .lpush(&runs, serde_json::to_string(run)?)
        .ignore()
        .ltrim(&runs, 0, HISTORY - 1)
        .ignore()
        .query_async(redis)
        .await?;
    Ok(())
}

/// The latest run of `job`, if any.
pub async fn last(
    redis: &mut ConnectionManager,
    prefix: &str,
    job: Job,
) -> anyhow::Result<Option<Run>> {
    let fields: std::collections::HashMap<String, String> =
        redis.hgetall(last_key(prefix, job)).await?;
    if fields.is_empty() {
        return Ok(None);
    }
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    Ok(Some(Run {
        tick: field("tick").parse().unwrap_or_default(),
        result: field("result"),
        duration_ms: field("duration_ms").parse().unwrap_or_default(),
        finished_at_ms: field("finished_at_ms").parse().unwrap_or_default(),
        replica: field("replica"),
        summary: field("summary"),
    }))
}

/// When the latest successful run of `job` finished (unix milliseconds), if one did.
pub async fn succeeded_at_ms(
    redis: &mut ConnectionManager,
    prefix: &str,
    job: Job,
) -> RedisResult<Option<i64>> {
    redis.hget(last_key(prefix, job), "succeeded_at_ms").await
}

/// The recorded runs of `job`, newest first.
pub async fn history(
    redis: &mut ConnectionManager,
    prefix: &str,
    job: Job,
) -> anyhow::Result<Vec<Run>> {
    let lines: Vec<String> = redis.lrange(runs_key(prefix, job), 0, -1).await?;
    Ok(lines
        .iter()
        .map(|line| serde_json::from_str(line))
        .collect::<Result<_, _>>()?)
}
