//! The runtime's guarantees, end to end with the real broker and Redis, driven through the
//! cache-invalidation family: each event `u chii_members {uid}` deletes `user:v2:slim:{uid}`, so
//! "applied" is observable as "key gone".
//!
//! - SIGTERM: commits and exits 0 within the drain timeout.
//! - `/metrics`, `/healthz`, `/readyz` after a run.
//!
//! The fault scenarios (kill -9, Redis/MariaDB/broker outages, poison, rebalances, duplicates)
//! are the reliability suite: `reliability.rs` and `reliability_broker.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use cache_invalidation::{CacheInvalidation, FAMILY};
use cdc_topics::Family;
use fleet_harness::events::{MemberUpdates, member_key};
use fleet_harness::process::{KillOnDrop, signal, wait_exit, worker_command};
use fleet_harness::scenario::wait_for;
use fleet_harness::{
    Out, committed, existing, http_get, produce, producer, provisioned_family, redis_uri,
    seed_keys, unique, wait_drained, worker_config,
};
use tokio_util::sync::CancellationToken;

/// One scenario's isolated names.
struct Setup {
    /// Every key the scenario seeded.
    seeded: std::sync::Mutex<Vec<String>>,
    family: Family,
    topic: String,
    key_prefix: String,
    group: String,
    events: MemberUpdates,
}

async fn setup(name: &str) -> Setup {
    cdc_runtime::observe::init_tracing("text");
    let topic_prefix = format!("{}.", unique(&format!("it.rt.{name}")));
    let mut family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    // Only the members topic: its three partitions are what the group splits.
    family.topics.retain(|t| t.ends_with(".chii_members"));
    let topic = family
        .topics
        .iter()
        .find(|t| t.ends_with(".chii_members"))
        .expect("members topic")
        .clone();
    Setup {
        seeded: std::sync::Mutex::default(),
        family,
        topic,
        key_prefix: format!("{}:", unique(&format!("it.rt.{name}"))),
        group: unique(&format!("it.rt.{name}.group")),
        events: MemberUpdates::load().expect("template"),
    }
}

impl Setup {
    async fn seed(&self, uids: impl IntoIterator<Item = u64>) -> Vec<String> {
        let keys: Vec<String> = uids.into_iter().map(member_key).collect();
        seed_keys(&self.key_prefix, &keys).await.expect("seed");
        self.seeded
            .lock()
            .expect("lock")
            .extend(keys.iter().cloned());
        keys
    }

    async fn produce(&self, records: &[Out]) -> Vec<(i32, i64)> {
        produce(&producer().expect("producer"), &self.topic, records)
            .await
            .expect("produce")
    }

    /// The seeded keys still present (events not yet applied).
    async fn remaining(&self) -> BTreeSet<String> {
        let seeded = self.seeded.lock().expect("lock").clone();
        existing(&self.key_prefix, &seeded).await.expect("keys")
    }

    fn topic_prefix(&self) -> String {
        self.topic
            .trim_end_matches("debezium.chii.bangumi.chii_members")
            .to_owned()
    }

    /// An in-process worker with `extra` settings.
    async fn start(
        &self,
        extra: &[&str],
        redis: &str,
    ) -> (cdc_runtime::Running, CancellationToken) {
        let mut args = vec!["--redis-uri", redis];
        args.extend_from_slice(extra);
        let config = worker_config(
            &self.family,
            &self.topic_prefix(),
            &self.key_prefix,
            &self.group,
            &args,
        )
        .expect("config");
        let handler = CacheInvalidation::connect(config.clone())
            .await
            .expect("handler");
        let shutdown = CancellationToken::new();
        let running = cdc_runtime::start(&self.family, &config, handler, shutdown.clone())
            .await
            .expect("start");
        (running, shutdown)
    }

    /// The real binary as a child process.
    fn spawn(&self, extra_env: &[(&str, &str)]) -> KillOnDrop {
        let mut cmd = worker_command(
            FAMILY,
            &self.topic_prefix(),
            &self.group,
            &redis_uri(),
            &self.key_prefix,
        )
        .expect("worker binary");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        KillOnDrop(cmd.spawn().expect("spawn worker"))
    }

    async fn drained(&self) {
        wait_drained(
            &self.group,
            std::slice::from_ref(&self.topic),
            self.family.partitions,
            Duration::from_secs(90),
        )
        .await
        .expect("drained");
    }

    /// Every event below its partition's committed offset has its effect in Redis.
    async fn assert_committed_were_applied(&self, uids: &[u64], positions: &[(i32, i64)]) {
        let committed =
            committed(&self.group, &self.topic, self.family.partitions).expect("committed");
        let remaining = self.remaining().await;
        for (uid, (partition, offset)) in uids.iter().zip(positions) {
            if *offset < committed[*partition as usize] {
                assert!(
                    !remaining.contains(&member_key(*uid)),
                    "offset {offset} of partition {partition} is committed ({committed:?}) but uid {uid} was not applied"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_commits_and_exits_zero_within_the_drain_timeout() {
    let s = setup("sigterm").await;
    let uids: Vec<u64> = (1..=20_000).collect();
    s.seed(uids.iter().copied()).await;
    let positions = s.produce(&s.events.events(uids.iter().copied())).await;
    let mut child = s.spawn(&[("DRAIN_TIMEOUT", "5s"), ("COMMIT_INTERVAL", "1h")]);
    wait_for("progress", Duration::from_secs(60), async || {
        s.remaining().await.len() <= 18_000
    })
    .await;
    signal(&child, "TERM").expect("term");
    let status = wait_exit(&mut child, Duration::from_secs(5 + 5))
        .await
        .expect("wait");
    let status = status.expect("exited within the drain timeout (plus process start/stop slack)");
    assert_eq!(status.code(), Some(0), "clean exit");
    // The interval commit is an hour away: whatever is committed was committed on shutdown.
    let committed = committed(&s.group, &s.topic, s.family.partitions).expect("committed");
    assert!(
        committed.iter().sum::<i64>() > 0,
        "shutdown committed: {committed:?}"
    );
    s.assert_committed_were_applied(&uids, &positions).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_probes_after_a_run() {
    let s = setup("metrics").await;
    s.seed(1..=50).await;
    let mut records = s.events.events(1..=50);
    records.push(Out {
        key: Some(br#"{"uid":1}"#.to_vec()),
        value: Some(b"not json".to_vec()),
        ..Out::default()
    });
    s.produce(&records).await;
    let (running, shutdown) = s
        .start(
            &["--kafka-config", "statistics.interval.ms=500"],
            &redis_uri(),
        )
        .await;
    s.drained().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = format!("http://{}", running.http_addr);
    let metrics = http_get(&format!("{base}/metrics")).await.expect("metrics");
    for (name, labels) in [
        ("cdc_messages_total", r#"outcome="applied""#),
        ("cdc_messages_total", r#"outcome="dead_lettered""#),
        ("cdc_errors_total", r#"stage="decode""#),
        ("cdc_batch_size_count", ""),
        ("cdc_batch_duration_seconds_count", ""),
        ("cdc_apply_duration_seconds_count", ""),
        ("cdc_event_age_seconds_count", ""),
        ("cdc_rebalances_total", r#"kind="assign""#),
        ("cdc_active_partitions", ""),
        ("cdc_commits_total", ""),
    ] {
        assert!(
            metric_value(&metrics, name, labels) > 0.0,
            "{name}{{{labels}}} > 0 in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("cdc_consumer_lag{"),
        "consumer lag exported:\n{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "cdc_messages_total", r#"outcome="applied""#),
        50.0
    );
    assert_eq!(
        http_get(&format!("{base}/healthz"))
            .await
            .expect("healthz")
            .trim(),
        "ok"
    );
    assert_eq!(
        http_get(&format!("{base}/readyz"))
            .await
            .expect("readyz")
            .trim(),
        "ok"
    );
    shutdown.cancel();
    running.wait().await.expect("shutdown");
}

/// Sum of the samples of `name` whose labels contain `labels`.
fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
