//! The runtime's guarantees, end to end with the real broker and Redis, driven through the
//! cache-invalidation family: each event `u chii_members {uid}` deletes `user:v2:slim:{uid}`, so
//! "applied" is observable as "key gone".
//!
//! - kill -9 mid-stream, repeatedly: committed offsets never pass an unapplied event; after a
//!   restart every event is applied.
//! - Redis outage: nothing dead-lettered, the worker reports not ready while waiting, everything
//!   applied once Redis is back.
//! - poison interleaved with good events: exactly the poison is dead-lettered, with its bytes and
//!   every documented header; the partition moves on.
//! - consumers joining and leaving the group: no loss.
//! - SIGTERM: commits and exits 0 within the drain timeout.
//! - `/metrics`, `/healthz`, `/readyz` after a run.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cache_invalidation::{CacheInvalidation, FAMILY};
use cdc_runtime::observe::Health;
use cdc_topics::Family;
use fleet_harness::events::{MemberUpdates, member_key};
use fleet_harness::process::{KillOnDrop, PrivateRedis, signal, wait_exit, worker_binary};
use fleet_harness::{
    Out, brokers, committed, end_offsets, existing, http_get, produce, producer,
    provisioned_family, read_all, redis_at, redis_uri, seed_keys, unique, wait_drained,
    worker_config,
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
        let mut cmd = Command::new(worker_binary(FAMILY).expect("binary"));
        cmd.env("KAFKA_BROKERS", brokers())
            .env("KAFKA_CONFIG__BATCH_NUM_MESSAGES", "1")
            .env("KAFKA_TOPIC_PREFIX", self.topic_prefix())
            .env("KAFKA_GROUP_ID", &self.group)
            .env("REDIS_URI", redis_uri())
            .env("REDIS_KEY_PREFIX", &self.key_prefix)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("COMMIT_INTERVAL", "100ms")
            .env("KAFKA_CONFIG__SESSION_TIMEOUT_MS", "2000")
            .env("KAFKA_CONFIG__HEARTBEAT_INTERVAL_MS", "500")
            .env("LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
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

    fn dlq_depth(&self) -> i64 {
        end_offsets(&self.family.dlq, self.family.partitions)
            .expect("dlq")
            .iter()
            .sum()
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

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_loses_nothing_and_never_commits_ahead() {
    let s = setup("kill").await;
    let uids: Vec<u64> = (1..=30_000).collect();
    s.seed(uids.iter().copied()).await;
    let positions = s.produce(&s.events.events(uids.iter().copied())).await;

    for round in 1..=3 {
        let before = s.remaining().await.len();
        let mut child = s.spawn(&[("BATCH_MAX_MESSAGES", "50")]);
        wait_for("progress", Duration::from_secs(60), async || {
            s.remaining().await.len() + 2_000 <= before || s.remaining().await.is_empty()
        })
        .await;
        signal(&child, "KILL").expect("kill -9");
        wait_exit(&mut child, Duration::from_secs(10))
            .await
            .expect("wait");
        s.assert_committed_were_applied(&uids, &positions).await;
        eprintln!(
            "round {round}: {} of {} events still to apply",
            s.remaining().await.len(),
            uids.len()
        );
    }

    let mut child = s.spawn(&[]);
    s.drained().await;
    signal(&child, "TERM").expect("term");
    wait_exit(&mut child, Duration::from_secs(20))
        .await
        .expect("wait");
    assert!(
        s.remaining().await.is_empty(),
        "every event applied after restart"
    );
    assert_eq!(s.dlq_depth(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_pauses_without_dead_letters_and_resumes() {
    let s = setup("redis").await;
    let mut redis = PrivateRedis::start().await.expect("private redis");
    let uids: Vec<u64> = (1..=2_000).collect();
    let keys: Vec<String> = uids
        .iter()
        .map(|u| format!("{}{}", s.key_prefix, member_key(*u)))
        .collect();
    let seed = async |port: u16| {
        let mut conn = redis_at(&format!("redis://127.0.0.1:{port}/0"))
            .await
            .expect("conn");
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.set(k, "cached").ignore();
        }
        pipe.query_async::<()>(&mut conn).await.expect("seed");
        conn
    };
    let mut conn = seed(redis.port).await;
    let (running, shutdown) = s.start(&[], &redis.uri()).await;
    s.produce(&s.events.events(1..=500)).await;
    wait_for("first 500 applied", Duration::from_secs(60), async || {
        let n: usize = redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .unwrap_or(usize::MAX);
        n <= 1_500
    })
    .await;

    redis.stop().await.expect("stop redis");
    s.produce(&s.events.events(501..=2_000)).await;
    let health: Arc<Health> = running.health.clone();
    wait_for(
        "not ready while Redis is down",
        Duration::from_secs(30),
        async || !health.is_ready(),
    )
    .await;
    assert!(health.paused() > 0, "a partition is paused");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.dlq_depth(), 0, "nothing dead-lettered during the outage");
    let metrics = http_get(&format!("http://{}/metrics", running.http_addr))
        .await
        .expect("metrics");
    assert!(
        metric_value(&metrics, "cdc_retries_total", "") > 0.0,
        "retries counted"
    );

    redis.restart().await.expect("restart redis");
    wait_for("ready again", Duration::from_secs(60), async || {
        health.is_ready()
    })
    .await;
    s.drained().await;
    let mut conn = redis_at(&redis.uri()).await.expect("conn");
    let left: usize = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("dbsize");
    assert_eq!(left, 0, "every event applied after Redis returned");
    assert_eq!(s.dlq_depth(), 0);
    shutdown.cancel();
    running.wait().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_is_dead_lettered_exactly_with_its_bytes_and_headers() {
    let s = setup("poison").await;
    s.seed(1..=6).await;
    let good = |uid| Out {
        partition: Some(0),
        ..s.events.event(uid, 2_000 + uid)
    };
    let poison = |key: &[u8], value: &[u8], why: &str| Out {
        partition: Some(0),
        key: Some(key.to_vec()),
        value: Some(value.to_vec()),
        headers: vec![("test.poison".into(), why.as_bytes().to_vec())],
    };
    let template = String::from_utf8(s.events.event(9, 1).value.expect("value")).expect("utf8");
    let records = vec![
        good(1),
        poison(
            br#"{"uid":7}"#,
            br#"{"before":{"uid":7},"after":"#,
            "malformed json",
        ),
        good(2),
        poison(
            br#"{"uid":7}"#,
            b"{\"op\":\"u\",\"x\":\"\xff\xfe\"}",
            "invalid utf-8",
        ),
        good(3),
        poison(br#"{"uid":"seven"}"#, template.as_bytes(), "wrong key type"),
        good(4),
        poison(
            br#"{"uid":7}"#,
            template.replace(r#""op":"u""#, r#""op":"x""#).as_bytes(),
            "unknown op",
        ),
        good(5),
        poison(
            br#"{"uid":7}"#,
            &[0, 0, 0, 0x7f, 0x42, 2, 4, 6],
            "avro with unknown schema id",
        ),
        good(6),
    ];
    let positions = s.produce(&records).await;
    let (running, shutdown) = s.start(&[], &redis_uri()).await;
    s.drained().await;
    shutdown.cancel();
    running.wait().await.expect("shutdown");

    assert!(s.remaining().await.is_empty(), "every good event applied");
    let mut letters = read_all(&s.family.dlq, s.family.partitions).expect("dlq");
    // The DLQ partitions by key; put the letters back in their original order.
    letters.sort_by_key(|l| {
        l.header("cdc.dlq.original.offset")
            .and_then(|o| o.parse::<i64>().ok())
    });
    let poisoned: Vec<(&Out, &(i32, i64))> = records
        .iter()
        .zip(&positions)
        .filter(|(r, _)| r.headers.iter().any(|(k, _)| k == "test.poison"))
        .collect();
    assert_eq!(
        letters.len(),
        poisoned.len(),
        "exactly the poison is dead-lettered: {letters:#?}"
    );
    for (letter, (original, (partition, offset))) in letters.iter().zip(poisoned) {
        let why = letter.header("test.poison").expect("original header kept");
        assert_eq!(letter.key, original.key, "{why}: key byte-identical");
        assert_eq!(letter.value, original.value, "{why}: value byte-identical");
        assert_eq!(
            letter.header("cdc.dlq.original.topic").as_deref(),
            Some(s.topic.as_str()),
            "{why}"
        );
        assert_eq!(
            letter.header("cdc.dlq.original.partition"),
            Some(partition.to_string()),
            "{why}"
        );
        assert_eq!(
            letter.header("cdc.dlq.original.offset"),
            Some(offset.to_string()),
            "{why}"
        );
        assert!(
            letter
                .header("cdc.dlq.original.timestamp")
                .is_some_and(|t| t.parse::<i64>().is_ok()),
            "{why}"
        );
        assert_eq!(
            letter.header("cdc.dlq.error.class").as_deref(),
            Some("permanent"),
            "{why}"
        );
        let stage = letter.header("cdc.dlq.error.stage").expect("stage");
        assert_eq!(
            stage,
            if why == "wrong key type" {
                "apply"
            } else {
                "decode"
            },
            "{why}"
        );
        assert!(
            !letter
                .header("cdc.dlq.error.message")
                .unwrap_or_default()
                .is_empty(),
            "{why}"
        );
        assert_eq!(
            letter.header("cdc.dlq.attempts").as_deref(),
            Some("1"),
            "{why}"
        );
        assert_eq!(
            letter.header("cdc.dlq.worker").as_deref(),
            Some(FAMILY),
            "{why}"
        );
        assert_eq!(
            letter.header("cdc.dlq.group").as_deref(),
            Some(s.group.as_str()),
            "{why}"
        );
        assert!(
            letter
                .header("cdc.dlq.failed.at")
                .is_some_and(|t| t.parse::<i64>().is_ok()),
            "{why}"
        );
    }
    let message = |i: usize| {
        letters[i]
            .header("cdc.dlq.error.message")
            .unwrap_or_default()
    };
    assert!(
        message(2).contains("uid"),
        "the wrong-type error names the column: {}",
        message(2)
    );
    assert!(
        message(4).contains("32578"),
        "the unknown schema id (0x7f42) is named: {}",
        message(4)
    );
    assert_eq!(
        committed(&s.group, &s.topic, s.family.partitions).expect("committed")[0],
        records.len() as i64,
        "the partition moved past the poison"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_joining_and_leaving_lose_nothing() {
    let s = setup("rebalance").await;
    let uids: Vec<u64> = (1..=9_000).collect();
    s.seed(uids.iter().copied()).await;
    let slow = ["--batch-max-messages", "20"];
    let (a, stop_a) = s.start(&slow, &redis_uri()).await;
    s.produce(&s.events.events(1..=3_000)).await;
    let (b, stop_b) = s.start(&slow, &redis_uri()).await;
    s.produce(&s.events.events(3_001..=6_000)).await;
    let (c, stop_c) = s.start(&slow, &redis_uri()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_c.cancel();
    c.wait().await.expect("c leaves");
    s.produce(&s.events.events(6_001..=9_000)).await;
    s.drained().await;

    let dispatched = |h: &Arc<Health>| h.dispatched.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        dispatched(&a.health) > 0 && dispatched(&b.health) > 0,
        "both long-lived consumers got partitions"
    );
    stop_a.cancel();
    stop_b.cancel();
    a.wait().await.expect("a stops");
    b.wait().await.expect("b stops");
    assert!(
        s.remaining().await.is_empty(),
        "no event lost across the rebalances"
    );
    assert_eq!(s.dlq_depth(), 0);
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
