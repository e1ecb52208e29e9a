//! The runtime's guarantees, end to end with the real broker and Redis, driven through the
//! cache-invalidation family: each event `u chii_members {uid}` deletes `user:v2:slim:{uid}`, so
//! "applied" is observable as "key gone".
//!
//! - SIGTERM during a million-event catch-up: stops after the batch in hand, exits 0, and
//!   commits exactly what it applied.
//! - gzip, snappy, lz4 and zstd topics decode.
//! - A revoked partition's lag series leaves `/metrics`; a revocation while retrying leaves
//!   the worker ready once the dependency is back.
//! - `/metrics`, `/healthz`, `/readyz` after a run.
//! - `/readyz` says why a worker is not ready: its topics do not exist, a partition waits on a
//!   named dependency (whose log lines carry it, topic, partition and offset, never a password).
//! - Dead letters pending per DLQ partition, and the oldest one's age, in `/metrics`.
//! - An invalid Kafka setting stops the worker naming its variable; text logs off a terminal
//!   carry no colour codes.
//!
//! The fault scenarios (kill -9, Redis/MariaDB/broker outages, poison, rebalances, duplicates)
//! are the reliability suite: `reliability.rs` and `reliability_broker.rs`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use cache_invalidation::{CacheInvalidation, FAMILY};
use cdc_topics::Family;
use fleet_harness::bulk::fill;
use fleet_harness::events::{MemberUpdates, member_key, poison};
use fleet_harness::process::{
    KillOnDrop, LogFile, PrivateRedis, free_port, signal, wait_exit, worker_command,
};
use fleet_harness::scenario::wait_for;
use fleet_harness::{
    Out, client_config, committed, end_offsets, existing, family, http_get, http_response,
    metric_value, produce, producer, provision, provisioned_family, read_all, redis_uri, seed_keys,
    unique, wait_drained, worker_config,
};
use rdkafka::producer::FutureProducer;
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

/// A scenario's names, its topics created.
async fn setup(name: &str) -> Setup {
    let topic_prefix = format!("{}.", unique(&format!("it.rt.{name}")));
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    names(name, family)
}

/// A scenario's names, its topics not created.
fn unprovisioned(name: &str) -> Setup {
    let topic_prefix = format!("{}.", unique(&format!("it.rt.{name}")));
    names(name, family(FAMILY, &topic_prefix).expect("family"))
}

/// A scenario of `family`'s members topic alone: its three partitions are what the group splits.
fn names(name: &str, mut family: Family) -> Setup {
    cdc_runtime::observe::init_tracing("text");
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
        let mut cmd = self.command(&redis_uri(), extra_env);
        KillOnDrop(cmd.spawn().expect("spawn worker"))
    }

    /// The real binary's command, on the Redis at `redis`, with `extra_env`.
    fn command(&self, redis: &str, extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = worker_command(
            FAMILY,
            &self.topic_prefix(),
            &self.group,
            redis,
            &self.key_prefix,
        )
        .expect("worker binary");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
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
}

/// A backlog of a million events (a first deploy starting at `earliest`): SIGTERM takes effect
/// after the batch in hand, though every partition's prefetch queue stays full, and what is
/// committed is exactly what was applied.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_catch_up_stops_after_the_batch_in_hand() {
    const EVENTS: u64 = 1_000_000;
    let s = setup("catch-up").await;
    let partitions = s.family.partitions;
    s.seed(1..=EVENTS).await;
    // Event i (uid i + 1) goes to partition i % P, at offset i / P.
    let filled = fill(&s.topic, partitions, EVENTS, &|i| Out {
        partition: Some((i % partitions as u64) as i32),
        ..s.events.slim_event(i + 1, 1_000 + i)
    })
    .expect("fill");
    let at = |i: u64| {
        (
            (i % partitions as u64) as usize,
            (i / partitions as u64) as i64,
        )
    };
    let expected_ends: Vec<i64> = (0..partitions as u64)
        .map(|p| ((EVENTS - p).div_ceil(partitions as u64)) as i64)
        .collect();
    assert_eq!(filled.ends, expected_ends, "every event where it was sent");

    // The drain timeout is far longer than the whole catch-up: only a stop that is honoured
    // mid-stream leaves part of the backlog unconsumed. One record per batch: the queue never
    // runs short of a full batch, so a task never waits for one (where a stop used to be seen).
    let mut child = s.spawn(&[
        ("DRAIN_TIMEOUT", "600s"),
        ("COMMIT_INTERVAL", "1h"),
        ("BATCH_MAX_MESSAGES", "1"),
    ]);
    let first: Vec<String> = (1..=3_000).map(member_key).collect();
    wait_for(
        "the first events applied",
        Duration::from_secs(120),
        async || {
            existing(&s.key_prefix, &first)
                .await
                .is_ok_and(|left| left.len() < first.len())
        },
    )
    .await;
    signal(&child, "TERM").expect("term");
    let status = wait_exit(&mut child, Duration::from_secs(700))
        .await
        .expect("wait")
        .expect("exited");
    assert_eq!(status.code(), Some(0), "clean exit");

    // The interval commit is an hour away: whatever is committed was committed on shutdown.
    let committed = committed(&s.group, &s.topic, partitions).expect("committed");
    let total: i64 = committed.iter().sum();
    assert!(
        total > 0 && (total as u64) < EVENTS,
        "stopped mid-catch-up with progress committed: {committed:?} of {expected_ends:?}"
    );
    let remaining = s.remaining().await;
    let wrong: Vec<String> = (0..EVENTS)
        .filter(|&i| {
            let (p, offset) = at(i);
            let applied = !remaining.contains(&member_key(i + 1));
            applied != (offset < committed[p])
        })
        .take(5)
        .map(|i| format!("event {i} at {:?} (committed {committed:?})", at(i)))
        .collect();
    assert!(
        wrong.is_empty(),
        "applied must be exactly what is committed: {wrong:?}"
    );
}

/// gzip, snappy, lz4 and zstd batches all decode.
#[tokio::test(flavor = "multi_thread")]
async fn every_compression_codec_decodes() {
    const CODECS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
    let s = setup("codecs").await;
    let uids: Vec<u64> = (1..=CODECS.len() as u64 * 100).collect();
    s.seed(uids.iter().copied()).await;
    for (codec, chunk) in CODECS.iter().zip(uids.chunks(100)) {
        let producer: FutureProducer = client_config()
            .set("compression.type", *codec)
            .set("linger.ms", "20")
            .create()
            .unwrap_or_else(|e| panic!("a {codec} producer: {e}"));
        produce(&producer, &s.topic, &s.events.events(chunk.iter().copied()))
            .await
            .unwrap_or_else(|e| panic!("producing {codec}: {e}"));
    }
    let (running, shutdown) = s.start(&[], &redis_uri()).await;
    s.drained().await;
    shutdown.cancel();
    running.wait().await.expect("shutdown");
    assert_eq!(
        s.remaining().await,
        BTreeSet::new(),
        "every event of every codec applied"
    );
    assert_eq!(
        end_offsets(&s.family.dlq, s.family.partitions)
            .expect("dlq")
            .iter()
            .sum::<i64>(),
        0,
        "nothing dead-lettered"
    );
}

/// After a revocation, `/metrics` has no lag series of the partitions the worker gave away.
/// Two workers of one group in this process: each one's `/metrics` must list only its own
/// partitions (a stale series of the partition it gave away would also be the other's).
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_partition_leaves_no_lag_series() {
    let s = setup("lag").await;
    s.seed(1..=600).await;
    s.produce(&s.events.events(1..=300)).await;
    let stats = ["--kafka-config", "statistics.interval.ms=200"];
    let (first, stop_first) = s.start(&stats, &redis_uri()).await;
    s.drained().await;
    wait_for(
        "lag of every partition",
        Duration::from_secs(30),
        async || first.health.partition_lag.partitions().len() == 3,
    )
    .await;
    let (second, stop_second) = s.start(&stats, &redis_uri()).await;
    wait_for(
        "the second worker's lag",
        Duration::from_secs(60),
        async || !second.health.partition_lag.partitions().is_empty(),
    )
    .await;
    // More statistics of both, marked by a second drain.
    s.produce(&s.events.events(301..=600)).await;
    s.drained().await;
    let first_lag = lag_partitions(
        &http_get(&format!("http://{}/metrics", first.http_addr))
            .await
            .expect("metrics"),
    );
    let second_lag = lag_partitions(
        &http_get(&format!("http://{}/metrics", second.http_addr))
            .await
            .expect("metrics"),
    );
    assert!(
        !second_lag.is_empty() && first_lag.is_disjoint(&second_lag) && first_lag.len() < 3,
        "each worker exports the lag of its own partitions only: first {first_lag:?}, second {second_lag:?}"
    );
    stop_second.cancel();
    stop_first.cancel();
    second.wait().await.expect("shutdown");
    first.wait().await.expect("shutdown");
}

/// A revocation while a partition retries a Redis outage (its task aborted at the drain
/// timeout), then recovery: readiness comes back and no partition counts as paused.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_during_a_retry_leaves_the_worker_ready() {
    let s = setup("revoke-retry").await;
    let mut redis = PrivateRedis::start().await.expect("private redis");
    let (first, stop_first) = s.start(&["--drain-timeout", "1s"], &redis.uri()).await;
    s.produce(&s.events.events(1..=300)).await;
    s.drained().await;
    redis.stop().await.expect("stop redis");
    s.produce(&s.events.events(301..=600)).await;
    wait_for(
        "every partition retrying",
        Duration::from_secs(60),
        async || first.health.paused() == 3,
    )
    .await;
    // The second worker (on the machine's Redis) takes partitions the first was retrying.
    let (second, stop_second) = s.start(&[], &redis_uri()).await;
    wait_for(
        "the second worker applying",
        Duration::from_secs(60),
        async || {
            second
                .health
                .dispatched
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        },
    )
    .await;
    redis.restart().await.expect("restart redis");
    s.drained().await;
    assert_eq!(first.health.paused(), 0, "no partition left paused");
    assert!(first.health.is_ready(), "ready again");
    let metrics = http_get(&format!("http://{}/metrics", first.http_addr))
        .await
        .expect("metrics");
    assert_eq!(
        metric_value(&metrics, "cdc_paused_partitions", ""),
        0.0,
        "{metrics}"
    );
    stop_second.cancel();
    stop_first.cancel();
    second.wait().await.expect("shutdown");
    first.wait().await.expect("shutdown");
}

/// The partitions (`topic[partition]`) with a `cdc_consumer_lag` series.
fn lag_partitions(text: &str) -> BTreeSet<String> {
    let label = |line: &str, name: &str| {
        line.split_once(&format!("{name}=\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(value, _)| value.to_owned())
            .unwrap_or_default()
    };
    text.lines()
        .filter(|l| l.starts_with("cdc_consumer_lag{"))
        .map(|l| format!("{}[{}]", label(l, "topic"), label(l, "partition")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_probes_after_a_run() {
    let s = setup("metrics").await;
    s.seed(1..=50).await;
    let mut records = s.events.events(1..=50);
    records.push(poison());
    s.produce(&records).await;
    let (running, shutdown) = s
        .start(
            &["--kafka-config", "statistics.interval.ms=500"],
            &redis_uri(),
        )
        .await;
    s.drained().await;
    let base = format!("http://{}", running.http_addr);
    let mut metrics = String::new();
    wait_for("statistics exported", Duration::from_secs(30), async || {
        metrics = http_get(&format!("{base}/metrics")).await.expect("metrics");
        metrics.contains("cdc_consumer_lag{")
    })
    .await;
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

/// A worker subscribed to topics that do not exist consumes nothing: `/readyz` says so, naming
/// them, until they are created.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_is_not_ready_while_its_topics_do_not_exist() {
    let s = unprovisioned("missing-topics");
    // librdkafka looks for a missing topic again on its metadata refresh (5 min by default).
    let refresh = ["--kafka-config", "topic.metadata.refresh.interval.ms=1000"];
    let (running, shutdown) = s.start(&refresh, &redis_uri()).await;
    let readyz = format!("http://{}/readyz", running.http_addr);
    let missing = format!("not ready: topic {} does not exist\n", s.topic);
    wait_for(
        "/readyz naming the missing topic",
        Duration::from_secs(30),
        async || {
            http_response(&readyz)
                .await
                .is_ok_and(|(status, body)| status == 503 && body.contains(&missing))
        },
    )
    .await;
    provision(&s.family).await.expect("provision");
    wait_for(
        "ready once the topic exists",
        Duration::from_secs(60),
        async || {
            http_response(&readyz)
                .await
                .is_ok_and(|(status, body)| status == 200 && body == "ok\n")
        },
    )
    .await;
    shutdown.cancel();
    running.wait().await.expect("shutdown");
}

/// Redis refusing connections: the partition waits; `/readyz` names the partition, its offset
/// and the Redis, and each failure's JSON log line carries the dependency, its address, topic,
/// partition and offset — never the password of `REDIS_URI`.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_partition_names_its_dependency_without_credentials() {
    const PASSWORD: &str = "hunter2-not-logged";
    let s = setup("paused-reason").await;
    let port = free_port().expect("port");
    let log = LogFile::new("it.rt.paused-reason").expect("log file");
    let mut cmd = s.command(
        &format!("redis://cdc:{PASSWORD}@127.0.0.1:{port}/0"),
        &[("LOG_FORMAT", "json")],
    );
    cmd.stderr(log.stdio().expect("log file"));
    let _worker = KillOnDrop(cmd.spawn().expect("spawn worker"));
    let landed = s
        .produce(&[Out {
            partition: Some(1),
            ..s.events.slim_event(1, 1)
        }])
        .await;
    let (partition, offset) = landed[0];

    let failure = log
        .wait_for_message(
            "transient failure; partition paused",
            Duration::from_secs(60),
        )
        .await;
    let address = format!("127.0.0.1:{port}");
    assert_eq!(failure["dependency"], "redis", "{failure}");
    assert_eq!(failure["address"], address.as_str(), "{failure}");
    assert_eq!(failure["topic"], s.topic.as_str(), "{failure}");
    assert_eq!(failure["partition"], partition, "{failure}");
    assert_eq!(failure["offset"], offset, "{failure}");

    let started = log
        .wait_for_message("worker started", Duration::from_secs(10))
        .await;
    let http_addr = started["http_addr"].as_str().expect("http_addr logged");
    let (status, body) = http_response(&format!("http://{http_addr}/readyz"))
        .await
        .expect("readyz");
    let paused = format!(
        "not ready: partition {}[{partition}] paused at offset {offset}: ",
        s.topic
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with(&paused) && l.contains(&format!("redis {address}"))),
        "{body}"
    );
    let logged = log.text();
    assert!(
        !logged.contains(PASSWORD) && !body.contains(PASSWORD),
        "the Redis password leaked:\n{logged}\n{body}"
    );
}

/// A Kafka setting librdkafka refuses stops the worker at start, naming the variable and value.
#[test]
fn invalid_kafka_settings_stop_the_worker_naming_the_variable() {
    for (variable, value) in [
        ("KAFKA_CONFIG__FETCH_WAIT_MAX_MS", "abc"),
        ("KAFKA_SECURITY_PROTOCOL", "bogus"),
    ] {
        let out = worker_command(FAMILY, "it.rt.invalid.", "it.rt.invalid", &redis_uri(), "")
            .expect("worker binary")
            .env(variable, value)
            .stderr(Stdio::piped())
            .output()
            .expect("run worker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("error: invalid setting {variable}={value}: ")),
            "{stderr}"
        );
    }
}

/// `LOG_FORMAT=text` into a file (as into a pipe): no terminal colour codes, warnings included.
#[tokio::test(flavor = "multi_thread")]
async fn text_logs_off_a_terminal_carry_no_escape_codes() {
    let s = setup("text-logs").await;
    let log = LogFile::new("it.rt.text-logs").expect("log file");
    let mut cmd = s.command(&redis_uri(), &[("LOG_FORMAT", "text")]);
    cmd.stderr(log.stdio().expect("log file"));
    let _worker = KillOnDrop(cmd.spawn().expect("spawn worker"));
    s.produce(&[poison()]).await;
    wait_for(
        "the dead letter logged",
        Duration::from_secs(60),
        async || log.text().contains("dead-lettering record"),
    )
    .await;
    let logged = log.text();
    assert!(
        logged.contains(" WARN ") && !logged.contains('\x1b'),
        "{logged:?}"
    );
}

/// A dead letter counts as pending on its DLQ partition in `/metrics`, with the age of the
/// oldest pending letter, until the `dlq` tool handles it.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_pending_are_exported_per_dlq_partition() {
    let s = setup("dlq-depth").await;
    s.produce(&[poison()]).await;
    let (running, shutdown) = s
        .start(&["--dlq-metrics-interval", "200ms"], &redis_uri())
        .await;
    let metrics = format!("http://{}/metrics", running.http_addr);
    let labels = |p: i32| format!(r#"family="{FAMILY}",partition="{p}""#);
    let mut pending_on = None;
    wait_for(
        "one dead letter pending, with its age",
        Duration::from_secs(60),
        async || {
            let text = http_get(&metrics).await.unwrap_or_default();
            pending_on = (0..s.family.partitions).find(|&p| {
                metric_value(&text, "cdc_dlq_pending", &labels(p)) == 1.0
                    && metric_value(&text, "cdc_dlq_oldest_pending_age_seconds", &labels(p)) > 0.0
            });
            pending_on.is_some()
                && metric_value(&text, "cdc_dlq_pending", &format!(r#"family="{FAMILY}""#)) == 1.0
        },
    )
    .await;
    let letters = read_all(&s.family.dlq, s.family.partitions).expect("dlq");
    assert_eq!(
        letters.iter().map(|l| l.partition).collect::<Vec<_>>(),
        Vec::from_iter(pending_on),
        "the letter is where the metric counts it"
    );
    shutdown.cancel();
    running.wait().await.expect("shutdown");
}
