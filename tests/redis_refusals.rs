//! Redis refusing a healthy worker's commands is the server's state, not the records' fault: the
//! partition waits (not ready, nothing dead-lettered) and, once the fault is undone, the worker
//! leaves the state a fault-free run leaves.
//!
//! Each scenario runs a family on a private Redis, as the ACL user `worker`, through
//! [`run_through_outage`] with the refusal as the "outage":
//! - `noperm_while_the_workers_acl_is_revoked`: `ACL SETUSER worker -@all` (cache-invalidation).
//! - `misconf_while_snapshots_fail`: a snapshot that cannot be written, with
//!   `stop-writes-on-bgsave-error` on, so every write is refused with `MISCONF`
//!   (cache-invalidation: `DEL` is a write).
//! - `oom_while_memory_is_full_for_the_timeline`: `maxmemory 1`, so every write that may grow
//!   memory (`SET`, `ZADD`, the fan-out scripts) is refused with `OOM`.

use std::time::{Duration, Instant};

use fleet_harness::process::PrivateRedis;
use fleet_harness::redis_at;
use fleet_harness::scenario::{
    Dependency, Lane, Stream, fault_free_state, report, run_through_outage, wait_for,
};
use fleet_harness::state::assert_same_state;

/// How long each refusal lasts.
const REFUSAL: Duration = Duration::from_secs(5);

/// What the server refuses.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `NOPERM`: the worker's ACL user loses every command.
    Permissions,
    /// `MISCONF`: the last snapshot failed and writes stop.
    FailedSnapshot,
    /// `OOM`: memory is full (`noeviction`).
    FullMemory,
}

/// A private Redis that refuses the worker's commands while [`Dependency::stop`]ped; the
/// worker connects as the ACL user `worker`.
struct RefusingRedis {
    redis: PrivateRedis,
    refusal: Refusal,
}

impl RefusingRedis {
    async fn start(refusal: Refusal) -> Self {
        let redis = PrivateRedis::start().await.expect("private redis");
        let refusing = Self { redis, refusal };
        refusing
            .admin(&[
                "ACL",
                "SETUSER",
                "worker",
                "on",
                ">worker-secret",
                "~*",
                "&*",
                "+@all",
            ])
            .await;
        refusing
    }

    /// The worker's URI: the ACL user `worker`.
    fn worker_uri(&self) -> String {
        format!(
            "redis://worker:worker-secret@127.0.0.1:{}/0",
            self.redis.port
        )
    }

    /// Runs a command as the default (admin) user.
    async fn admin(&self, command: &[&str]) -> redis::Value {
        let mut conn = redis_at(&self.redis.uri()).await.expect("admin connection");
        let mut cmd = redis::cmd(command[0]);
        cmd.arg(&command[1..]);
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", command.join(" ")))
    }

    async fn persistence(&self) -> String {
        match self.admin(&["INFO", "persistence"]).await {
            redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            other => panic!("INFO persistence: {other:?}"),
        }
    }
}

impl Dependency for RefusingRedis {
    const NAME: &'static str = "Redis (refusing)";

    async fn stop(&mut self) -> anyhow::Result<()> {
        match self.refusal {
            Refusal::Permissions => {
                self.admin(&["ACL", "SETUSER", "worker", "-@all"]).await;
            }
            Refusal::FailedSnapshot => {
                // A directory where the snapshot goes: its final rename fails.
                std::fs::create_dir_all(self.redis.dir().join("dump.rdb"))?;
                self.admin(&["CONFIG", "SET", "save", "3600 1"]).await;
                self.admin(&["CONFIG", "SET", "stop-writes-on-bgsave-error", "yes"])
                    .await;
                self.admin(&["BGSAVE"]).await;
                wait_for(
                    "the snapshot to fail",
                    Duration::from_secs(30),
                    async || {
                        self.persistence()
                            .await
                            .contains("rdb_last_bgsave_status:err")
                    },
                )
                .await;
            }
            Refusal::FullMemory => {
                self.admin(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
                    .await;
                self.admin(&["CONFIG", "SET", "maxmemory", "1"]).await;
            }
        }
        Ok(())
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        match self.refusal {
            Refusal::Permissions => {
                self.admin(&["ACL", "SETUSER", "worker", "+@all"]).await;
            }
            Refusal::FailedSnapshot => {
                self.admin(&["CONFIG", "SET", "stop-writes-on-bgsave-error", "no"])
                    .await;
                self.admin(&["CONFIG", "SET", "save", ""]).await;
            }
            Refusal::FullMemory => {
                self.admin(&["CONFIG", "SET", "maxmemory", "0"]).await;
            }
        }
        Ok(())
    }
}

/// The scenario: `family` runs `stream` through `refusal`; nothing is dead-lettered, and the
/// final state is the fault-free run's.
async fn refused_then_recovered(name: &str, family: &str, stream: Stream, refusal: Refusal) {
    let started = Instant::now();
    let mut redis = RefusingRedis::start(refusal).await;
    let lane = Lane::new(family, name, &redis.worker_uri(), None).await;
    let reference = fault_free_state(family, name, &stream);
    let faulty = run_through_outage(&lane, &stream, &mut redis, REFUSAL);
    let (expected, recovered) = tokio::join!(reference, faulty);
    assert_eq!(lane.dlq_depth(), 0, "zero dead letters");
    assert_same_state(name, &lane.state().await, &expected);
    lane.clean_up().await;
    report(
        name,
        stream.records.len(),
        0,
        started,
        &format!(
            "refusal={refusal:?} ready_again_after={:.1}s",
            recovered.as_secs_f64()
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn noperm_while_the_workers_acl_is_revoked() {
    refused_then_recovered(
        "noperm",
        cache_invalidation::FAMILY,
        Stream::members(2_000),
        Refusal::Permissions,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn misconf_while_snapshots_fail() {
    refused_then_recovered(
        "misconf",
        cache_invalidation::FAMILY,
        Stream::members(2_000),
        Refusal::FailedSnapshot,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_while_memory_is_full_for_the_timeline() {
    refused_then_recovered(
        "oom",
        timeline::FAMILY,
        Stream::timeline(300),
        Refusal::FullMemory,
    )
    .await;
}
