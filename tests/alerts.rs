//! The chart's alert rules against the metrics real workers export: the cache-invalidation and
//! scheduler binaries run against the broker, MariaDB and a private Redis that the test stops.
//! Their `/metrics` are scraped at five moments, and `scripts/alerts_eval.py` renders the
//! PrometheusRule from helm/bangumi-cdc and evaluates every rule at each of them:
//!
//! | scrape | state | alerts expected |
//! |---|---|---|
//! | 0 | 50 events applied, a poison record dead-lettered, lag 0 | `CdcDeadLettersPending` |
//! | 1 | 50 more applied, a second poison record dead-lettered | + `CdcDeadLettering` |
//! | 2–4 | Redis stopped: the partitions paused, lag ≥ 1200 and growing, heartbeats failing | `CdcPartitionPaused`, `CdcConsumerNoProgress`, `CdcConsumerLagGrowing`, `CdcDeadLettersPending`; at 4 `CdcDeadLetterWaitingLong` and `SchedulerJobNotSucceeding` |
//!
//! Prometheus' windows are minutes and the run takes seconds, so the scrapes are placed on a
//! timeline for the evaluation: scrape 4 at its real time (so `time()` meets the scheduler's real
//! timestamps), 0 and 1 fifteen and fourteen minutes before it, 2 and 3 two and one minutes
//! before. `CdcCommitErrors` must evaluate but not fire: no commit fails in the run, so its
//! `result="error"` series is the one selector allowed to match nothing.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_invalidation::FAMILY;
use fleet_harness::events::{MemberUpdates, poison};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::{KillOnDrop, PrivateRedis, free_port, worker_binary, worker_command};
use fleet_harness::scenario::wait_for;
use fleet_harness::{
    Out, http_get, metric_value, produce, producer, provisioned_family, state_dir, unique,
};
use serde_json::{Value, json};

/// The worker's and the scheduler's `/metrics` at one moment.
struct Scrape {
    worker: String,
    scheduler: String,
}

/// The two processes and where to scrape them.
struct Fleet {
    worker: String,
    scheduler: String,
    members_topic: String,
    _processes: (KillOnDrop, KillOnDrop),
}

impl Fleet {
    async fn scrape(&self) -> Scrape {
        Scrape {
            worker: http_get(&self.worker).await.unwrap_or_default(),
            scheduler: http_get(&self.scheduler).await.unwrap_or_default(),
        }
    }

    /// Scrapes until `ready` holds for a scrape; that scrape.
    async fn scrape_when(&self, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let mut last = None;
        wait_for(what, Duration::from_secs(90), async || {
            let scrape = self.scrape().await;
            let done = ready(&scrape);
            last = Some(scrape);
            done
        })
        .await;
        last.expect("scraped")
    }

    async fn produce(&self, records: &[Out]) {
        produce(&producer().expect("producer"), &self.members_topic, records)
            .await
            .expect("produce");
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn lag(text: &str) -> f64 {
    metric_value(text, "cdc_consumer_lag", "")
}

fn outcome(text: &str, outcome: &str) -> f64 {
    metric_value(
        text,
        "cdc_messages_total",
        &format!(r#"outcome="{outcome}""#),
    )
}

/// Seconds since the heartbeat job last succeeded, by the scheduler's metric.
fn heartbeat_age(text: &str) -> f64 {
    let last = metric_value(
        text,
        "scheduler_last_success_timestamp_seconds",
        r#"task="heartbeat""#,
    );
    if last == 0.0 { 0.0 } else { unix_now() - last }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_alert_rule_evaluates_on_real_metrics_and_fires_when_it_should() {
    let mut redis = PrivateRedis::start().await.expect("private redis");
    let db = TestDatabase::create_unmigrated().await.expect("db");
    let topic_prefix = format!("{}.", unique("it.alerts"));
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    let members_topic = family
        .topics
        .iter()
        .find(|t| t.ends_with(".chii_members"))
        .expect("members topic")
        .clone();

    let worker_port = free_port().expect("port");
    let mut worker = worker_command(
        FAMILY,
        &topic_prefix,
        &unique("it.alerts.group"),
        &redis.uri(),
        "",
    )
    .expect("worker");
    worker
        .env("HTTP_ADDR", format!("127.0.0.1:{worker_port}"))
        .env("KAFKA_CONFIG__STATISTICS_INTERVAL_MS", "500")
        .env("DLQ_METRICS_INTERVAL", "200ms");
    let scheduler_port = free_port().expect("port");
    let mut scheduler = Command::new(worker_binary("scheduler").expect("scheduler binary"));
    scheduler
        .arg("daemon")
        .env("REDIS_URI", redis.uri())
        .env("MYSQL_DB", &db.name)
        .env("HTTP_ADDR", format!("127.0.0.1:{scheduler_port}"))
        .env("SCHEDULER_SCHEDULES", "heartbeat=* * * * * *")
        .env(
            "SCHEDULER_DISABLE",
            "trending-subjects,trending-subject-topics,truncate-global,truncate-inbox,truncate-user",
        )
        .env("LOG_FORMAT", "text")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let fleet = Fleet {
        worker: format!("http://127.0.0.1:{worker_port}/metrics"),
        scheduler: format!("http://127.0.0.1:{scheduler_port}/metrics"),
        members_topic,
        _processes: (
            KillOnDrop(worker.spawn().expect("spawn worker")),
            KillOnDrop(scheduler.spawn().expect("spawn scheduler")),
        ),
    };
    let events = MemberUpdates::load().expect("template");

    let mut batch = events.events(1..=50);
    batch.push(poison());
    fleet.produce(&batch).await;
    let s0 = fleet
        .scrape_when("50 applied, 1 dead-lettered and pending, lag 0", |s| {
            outcome(&s.worker, "applied") == 50.0
                && outcome(&s.worker, "dead_lettered") == 1.0
                && metric_value(&s.worker, "cdc_dlq_pending", "") == 1.0
                && s.worker.contains("cdc_consumer_lag{")
                && lag(&s.worker) == 0.0
                && s.scheduler
                    .contains("scheduler_last_success_timestamp_seconds{")
        })
        .await;

    let mut batch = events.events(51..=100);
    batch.push(poison());
    fleet.produce(&batch).await;
    let s1 = fleet
        .scrape_when("100 applied, 2 dead-lettered and pending, lag 0", |s| {
            outcome(&s.worker, "applied") == 100.0
                && outcome(&s.worker, "dead_lettered") == 2.0
                && metric_value(&s.worker, "cdc_dlq_pending", "") == 2.0
                && lag(&s.worker) == 0.0
        })
        .await;

    redis.stop().await.expect("stop redis");
    fleet.produce(&events.events(101..=1300)).await;
    let s2 = fleet
        .scrape_when("partitions paused, lag 1200", |s| {
            metric_value(&s.worker, "cdc_paused_partitions", "") > 0.0 && lag(&s.worker) >= 1200.0
        })
        .await;
    fleet.produce(&events.events(1301..=1400)).await;
    let s3 = fleet
        .scrape_when("lag 1300", |s| lag(&s.worker) >= 1300.0)
        .await;
    fleet.produce(&events.events(1401..=1500)).await;
    let s4 = fleet
        .scrape_when(
            "lag 1400, the oldest letter 2 s old, no heartbeat for 3 s",
            |s| {
                lag(&s.worker) >= 1400.0
                    && metric_value(&s.worker, "cdc_dlq_oldest_pending_age_seconds", "") >= 2.0
                    && heartbeat_age(&s.scheduler) >= 3.0
            },
        )
        .await;
    let end = unix_now();
    assert_eq!(
        outcome(&s4.worker, "applied"),
        100.0,
        "nothing applied while Redis is down"
    );

    let offsets = [900.0, 840.0, 120.0, 60.0, 0.0];
    let scrapes: Vec<Value> = [s0, s1, s2, s3, s4]
        .iter()
        .zip(offsets)
        .map(|(s, before)| {
            json!({"t": end - before, "targets": [
                {"labels": {"namespace": "bangumi", "pod": "cache-invalidation-0"}, "text": s.worker},
                {"labels": {"namespace": "bangumi", "pod": "scheduler-0"}, "text": s.scheduler},
            ]})
        })
        .collect();
    let fired = evaluate(&json!({ "scrapes": scrapes }));

    let at = |alert: &str| -> Vec<u64> {
        fired[alert]
            .as_array()
            .unwrap_or_else(|| panic!("{alert} not evaluated: {fired}"))
            .iter()
            .map(|i| i.as_u64().expect("index"))
            .collect()
    };
    assert_eq!(at("CdcDeadLettersPending"), [0, 1, 2, 3, 4], "{fired}");
    assert_eq!(at("CdcDeadLettering"), [1], "{fired}");
    assert_eq!(at("CdcPartitionPaused"), [2, 3, 4], "{fired}");
    assert_eq!(at("CdcConsumerNoProgress"), [2, 3, 4], "{fired}");
    assert_eq!(at("CdcCommitErrors"), Vec::<u64>::new(), "{fired}");
    assert_eq!(at("SchedulerJobNotSucceeding"), [4], "{fired}");
    // Growing lag: at 4 for sure (the 1-minute subquery steps see 2 and 3 before it); never
    // while the lag is 0.
    let growing = at("CdcConsumerLagGrowing");
    assert!(
        growing.contains(&4) && !growing.contains(&0) && !growing.contains(&1),
        "{fired}"
    );
    assert!(at("CdcDeadLetterWaitingLong").contains(&4), "{fired}");
    db.drop_now().await.expect("drop db");
}

/// Runs scripts/alerts_eval.py (in the venv scripts/install-helm.sh sets up, with helm and
/// promql-parser) on `scrapes`; the scrape indexes at which each alert fires.
fn evaluate(scrapes: &Value) -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository");
    let install = Command::new("bash")
        .arg(root.join("scripts/install-helm.sh"))
        .status()
        .expect("scripts/install-helm.sh");
    assert!(install.success(), "scripts/install-helm.sh failed");
    let file = std::env::temp_dir().join(format!("{}.json", unique("cdc-alert-scrapes")));
    std::fs::write(&file, scrapes.to_string()).expect("write scrapes");
    let out = Command::new(state_dir().join("helm-venv/bin/python"))
        .arg(root.join("scripts/alerts_eval.py"))
        .arg(&file)
        // The letters are seconds old: the age alert's threshold at 1 s shows it firing.
        .args([
            "--set",
            "metrics.prometheusRule.dlqOldestPendingAgeSeconds=1",
        ])
        .args(["--absent", r#"cdc_commits_total{result="error"}"#])
        .output()
        .expect("scripts/alerts_eval.py");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "the alert rules do not hold on the scraped metrics:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("evaluator output");
    result["alerts"].clone()
}
