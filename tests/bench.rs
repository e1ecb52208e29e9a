//! `make bench`: throughput, memory and latency of the fleet against the ceiling, every figure
//! beside its baseline measured in the same run (these machines are shared and noisy). Nothing
//! here is a pass/fail test.
//!
//! Sections (all by default; name some as arguments to run only those):
//! - `ceiling`: a fresh topic pre-filled with N `chii_members` updates (~1.5 KB, varied uids),
//!   drained by a do-nothing rdkafka consumer with the worker's consumer settings and by `kcat`;
//!   `redis-benchmark` pipelined `DEL` and `ZADD`.
//! - `cache`: the real `cache-invalidation` binary draining the same topic: events/s, ratio to
//!   the ceiling, RSS (peak, under load, idle), CPU per event.
//! - `timeline`: the real `timeline` binary fanning out `chii_timeline` creates over a generated
//!   follower graph in MariaDB (≈100 followers per author, a few authors with 100k).
//! - `subject-date`: the real `subject-date` binary catching up on a 1-partition topic of
//!   `chii_subjects` updates (`BENCH_SUBJECT_DATE_EVENTS`, default 200 000, over 20 000
//!   generated subjects with realistic infoboxes in MariaDB, `SUBJECT_DATE_READ_DELAY=0s`),
//!   beside the legacy's work done one event at a time by a bare sqlx loop (`SELECT` the subject,
//!   parse, `UPDATE` in autocommit) and the `UPDATE`s alone; `chii_subject_fields` is checked to
//!   end the same after each.
//! - `search`: the real `search` binary catching up on a 1-partition topic of `chii_subjects`
//!   updates over generated subjects (100 000; names, tags, votes, dates, aliases) into a real
//!   Meilisearch, beside the same documents written straight to Meilisearch in batches of the
//!   same size; then `search reindex` of every subject (`bench/search.rs`).
//! - `notify`: the real `notify` binary catching up on a 1-partition `notify.v1` topic of
//!   protobuf messages (`BENCH_NOTIFY_EVENTS`, default 100 000, to 10 000 recipients), beside a
//!   bare sqlx loop doing server-private's `Notify.create` per message in a transaction of its
//!   own; the tables are checked to end the same (`bench/notify.rs`).
//! - `latency`: produce → effect visible in Redis (keyspace notifications) at a fixed rate,
//!   beside a do-nothing consumer's produce → receive latency with the same fetch settings.
//! - `scaling`: drain rate with 1, 2, 4 partitions (one process; and one process per
//!   partition), and cost vs `BATCH_MAX_MESSAGES`.
//! - `prefetch`: one worker catching up on all 42 partitions of its family at once (every topic
//!   filled from its real fixture record), and on one partition of them: peak RSS and drain
//!   rate with the default `PREFETCH_BUDGET`, beside the unbounded per-partition prefetch the
//!   workers had before (8 MiB queue + 4 MiB fetch per partition).
//! - decode figures come from the schema crate's criterion bench (`scripts/bench.sh` runs it
//!   first; this binary reads `$CARGO_TARGET_DIR/criterion/decode`).
//!
//! Environment: `BENCH_EVENTS` (default 1 000 000), `BENCH_QUICK=1` (a smoke run),
//! `BENCH_LATENCY_SECONDS` (default 60), `BENCH_OUT` (default `bench/`), `BENCH_MD` (default
//! `BENCHMARKS.md`; a run of named sections writes both under `.local/bench/<sections>/`), `BENCH_PERF_OUT` (attach `perf record` to the cache-invalidation drain),
//! `KCAT`/`KCAT_LD_LIBRARY_PATH` (kcat and the librdkafka it should load), plus the harness's
//! `KAFKA_BROKERS`, `REDIS_URI`, `MYSQL_*`.
//!
//! tansu's ListOffsets reports the last batch's base offset + 1, so the expected end of every
//! topic here comes from the producer's delivery reports, never from the broker.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fleet_harness::bulk::{DEBEZIUM_BATCH_BYTES, FILL_BATCH_BYTES, Fill, fill, fill_in_batches};
use fleet_harness::events::{MemberUpdates, member_key};
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::free_port;
use fleet_harness::subjects::{Date, Subject};
use fleet_harness::{Out, brokers, create_topic, provisioned_family, redis, redis_uri, unique};
use futures::StreamExt;
use rand::Rng;
use rand::seq::index::sample;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{Value, json};

#[path = "bench/notify.rs"]
mod notify_section;
#[path = "bench/search.rs"]
mod search_section;
#[path = "bench/user_events.rs"]
mod user_events_section;

const MEMBERS_TOPIC: &str = "debezium.chii.bangumi.chii_members";
const TIMELINE_TOPIC: &str = "debezium.chii.bangumi.chii_timeline";
const SUBJECTS_TOPIC: &str = "debezium.chii.bangumi.chii_subjects";

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Serialize)]
struct Options {
    quick: bool,
    events: u64,
    scaling_events: u64,
    timeline_events: u64,
    timeline_authors: u64,
    /// Subjects in the subject-date database, and `chii_subjects` updates drained.
    subject_date_subjects: u64,
    subject_date_events: u64,
    /// Subjects in the search database (all reindexed), and `chii_subjects` updates drained.
    search_subjects: u64,
    search_events: u64,
    /// `notify.v1` messages drained, and their recipients.
    notify_events: u64,
    notify_recipients: u64,
    /// Users and mixed `chii_members` updates of the user-events catch-up.
    user_events_users: u64,
    user_events_events: u64,
    timeline_pool: u64,
    big_authors: u64,
    big_followers: u64,
    latency_seconds: u64,
    latency_rate: u64,
    /// The workers' default `fetch.wait.max.ms` (from the runtime's consumer settings).
    fetch_wait_default_ms: u64,
    /// Rounds of the ceiling and cache-invalidation drains (each consumer once per round).
    rounds: u64,
    #[serde(skip)]
    sections: HashSet<String>,
    #[serde(skip)]
    out: PathBuf,
    #[serde(skip)]
    markdown: PathBuf,
}

fn env_u64(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(
            v.trim()
                .replace('_', "")
                .parse()
                .with_context(|| format!("{name}={v}: not a number"))?,
        )),
        _ => Ok(None),
    }
}

impl Options {
    fn from_env() -> anyhow::Result<Self> {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let events = env_u64("BENCH_EVENTS")?.unwrap_or(if quick { 50_000 } else { 1_000_000 });
        let all = [
            "ceiling",
            "cache",
            "timeline",
            "subject-date",
            "search",
            "notify",
            "user-events",
            "latency",
            "scaling",
            "prefetch",
        ];
        let named: Vec<String> = std::env::args().skip(1).collect();
        for s in &named {
            if !all.contains(&s.as_str()) {
                bail!("unknown section {s}; known: {}", all.join(", "));
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // A run of some sections leaves the whole run's committed report alone.
        let (sections, report_dir): (HashSet<String>, PathBuf) = if named.is_empty() {
            (all.iter().map(|s| s.to_string()).collect(), root.clone())
        } else {
            let dir = root.join(".local/bench").join(named.join("+"));
            (named.into_iter().collect(), dir)
        };
        Ok(Self {
            quick,
            events,
            scaling_events: (events / 5).clamp(1_000, 200_000),
            timeline_events: if quick { 2_000 } else { 10_000 },
            timeline_authors: if quick { 200 } else { 1_000 },
            subject_date_subjects: if quick { 2_000 } else { 20_000 },
            subject_date_events: env_u64("BENCH_SUBJECT_DATE_EVENTS")?.unwrap_or(if quick {
                20_000
            } else {
                200_000
            }),
            search_subjects: if quick { 5_000 } else { 100_000 },
            search_events: if quick { 10_000 } else { 100_000 },
            notify_events: env_u64("BENCH_NOTIFY_EVENTS")?.unwrap_or(if quick {
                5_000
            } else {
                100_000
            }),
            notify_recipients: if quick { 1_000 } else { 10_000 },
            user_events_users: if quick { 1_000 } else { 10_000 },
            user_events_events: env_u64("BENCH_USER_EVENTS_EVENTS")?.unwrap_or(if quick {
                5_000
            } else {
                50_000
            }),
            timeline_pool: if quick { 20_000 } else { 100_000 },
            big_authors: if quick { 1 } else { 3 },
            big_followers: if quick { 20_000 } else { 100_000 },
            latency_seconds: env_u64("BENCH_LATENCY_SECONDS")?.unwrap_or(if quick {
                8
            } else {
                60
            }),
            latency_rate: 1_000,
            fetch_wait_default_ms: worker_consumer_config(
                "bench-options",
                cache_family_partitions(),
                &[],
            )?
            .get("fetch.wait.max.ms")
            .context("the runtime sets no fetch.wait.max.ms")?
            .parse()?,
            rounds: env_u64("BENCH_ROUNDS")?
                .unwrap_or(if quick { 1 } else { 3 })
                .max(1),
            sections,
            out: std::env::var("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|_| report_dir.join("bench")),
            markdown: std::env::var("BENCH_MD")
                .map(PathBuf::from)
                .unwrap_or_else(|_| report_dir.join("BENCHMARKS.md")),
        })
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.contains(section)
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("\x1b[1m==>\x1b[0m {}", msg.as_ref());
}

/// Varied uids: a permutation of a large range, so keys (and partitions) spread.
fn member_uid(i: u64) -> u64 {
    (i.wrapping_mul(2_654_435_761) % 50_000_000) + 1
}

/// Creates a members topic of `partitions` under a fresh prefix, fills it with `n` updates and
/// provisions the rest of the family; returns (topic prefix, fill).
async fn members_topic(
    updates: &Arc<MemberUpdates>,
    partitions: i32,
    n: u64,
) -> anyhow::Result<(String, Fill)> {
    let prefix = format!("{}.", unique("bench"));
    let topic = format!("{prefix}{MEMBERS_TOPIC}");
    create_topic(&topic, partitions).await?;
    provisioned_family(cache_invalidation::FAMILY, &prefix).await?;
    say(format!(
        "filling {topic} ({partitions} partitions) with {n} events"
    ));
    let u = updates.clone();
    let t = topic.clone();
    let filled = tokio::task::spawn_blocking(move || {
        fill(&t, partitions, n, &|i| u.event(member_uid(i), 1_000 + i))
    })
    .await??;
    say(format!(
        "  filled in {:.1} s ({:.0} msg/s, {:.0} B/msg)",
        filled.seconds,
        filled.per_s,
        filled.bytes as f64 / n as f64
    ));
    Ok((prefix, filled))
}

// ---------------------------------------------------------------------------------------------
// Drains: what they measured

#[derive(Debug, Clone, Serialize, Default)]
struct Rss {
    /// Highest VmHWM of any process, KiB.
    peak_kb: u64,
    /// Median VmRSS (largest process) over the second half of the drain, KiB.
    loaded_kb: u64,
    /// VmRSS (largest process) after 2 s idle at the end, KiB.
    idle_kb: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
struct Drain {
    label: String,
    events: u64,
    /// Seconds from start (process spawn, consumer creation) to the first event.
    first_event_s: f64,
    /// Seconds from the first event to the last.
    seconds: f64,
    /// events / seconds.
    per_s: f64,
    /// 90% of the events / the time from the 5% mark to the 95% mark (the headline figure:
    /// no group join, no tail).
    per_s_mid: f64,
    /// Worker CPU (user + system) per event, µs.
    cpu_us_per_event: Option<f64>,
    rss: Option<Rss>,
    processes: usize,
}

/// The time `count` first reached `threshold`, interpolated between samples.
fn crossing(samples: &[(f64, u64)], threshold: u64) -> Option<f64> {
    let mut prev = (0.0, 0u64);
    for &(t, c) in samples {
        if c >= threshold {
            if c == prev.1 || prev.0 == 0.0 {
                return Some(t);
            }
            let frac = (threshold - prev.1) as f64 / (c - prev.1) as f64;
            return Some(prev.0 + frac * (t - prev.0));
        }
        prev = (t, c);
    }
    None
}

fn drain_from_samples(label: &str, samples: &[(f64, u64)], events: u64) -> Drain {
    let first = samples
        .iter()
        .find(|(_, c)| *c > 0)
        .map_or(0.0, |(t, _)| *t);
    let done = crossing(samples, events).unwrap_or(first);
    let t5 = crossing(samples, events / 20).unwrap_or(first);
    let t95 = crossing(samples, events - events / 20).unwrap_or(done);
    let seconds = (done - first).max(1e-9);
    Drain {
        label: label.to_owned(),
        events,
        first_event_s: first,
        seconds,
        per_s: events as f64 / seconds,
        per_s_mid: (events - events / 20 - events / 20) as f64 / (t95 - t5).max(1e-9),
        ..Drain::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The do-nothing consumer (the ceiling), with the worker's own consumer settings (its prefetch
// budget split as the cache-invalidation worker's is)

/// The partitions a cache-invalidation worker subscribes to, which its prefetch budget is
/// split over: the do-nothing consumers take the same share.
fn cache_family_partitions() -> usize {
    cdc_topics::by_name(cache_invalidation::FAMILY)
        .ok()
        .flatten()
        .map_or(1, |f| f.all_topics().count() * f.partitions as usize)
}

fn worker_consumer_config(
    group: &str,
    partitions: usize,
    kafka_config: &[(&str, String)],
) -> anyhow::Result<ClientConfig> {
    let mut args = vec!["--kafka-brokers".to_owned(), brokers()];
    for (k, v) in kafka_config {
        args.push("--kafka-config".into());
        args.push(format!("{k}={v}"));
    }
    let config = cdc_runtime::WorkerConfig::from_args(args)?;
    let prefetch = cdc_runtime::kafka::prefetch_limits(config.prefetch_budget, partitions);
    Ok(cdc_runtime::kafka::consumer_config(
        &config,
        "bench-do-nothing",
        group,
        &prefetch,
    ))
}

/// Subscribes a do-nothing consumer to `topics` and polls until `events` records arrived.
fn do_nothing_drain(
    label: &str,
    topics: &[&str],
    events: u64,
    kafka_config: &[(&str, String)],
    timeout: Duration,
) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let consumer: BaseConsumer = worker_consumer_config(
        &unique("bench-ceiling"),
        cache_family_partitions(),
        kafka_config,
    )?
    .create()?;
    consumer.subscribe(topics)?;
    let mut count = 0u64;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut last_sample = Instant::now();
    let mut bytes = 0u64;
    while count < events {
        if started.elapsed() > timeout {
            bail!("{label}: {count} of {events} records after {timeout:?}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                bytes += m.payload_len() as u64;
                count += 1;
                if count == 1
                    || count == events
                    || last_sample.elapsed() > Duration::from_millis(20)
                {
                    samples.push((started.elapsed().as_secs_f64(), count));
                    last_sample = Instant::now();
                }
            }
            Some(Err(e)) => say(format!("  {label}: consume error {e}")),
            None => {}
        }
    }
    std::hint::black_box(bytes);
    Ok(drain_from_samples(label, &samples, events))
}

/// `kcat -C` from the beginning until `events` records; None if kcat is unavailable.
fn kcat_drain(topic: &str, events: u64) -> anyhow::Result<Option<Drain>> {
    let kcat = std::env::var("KCAT").unwrap_or_else(|_| "kcat".into());
    let mut cmd = Command::new(&kcat);
    if let Ok(lib) = std::env::var("KCAT_LD_LIBRARY_PATH") {
        cmd.env("LD_LIBRARY_PATH", lib);
    }
    let started = Instant::now();
    let out = match cmd
        .args(["-C", "-b", &brokers(), "-t", topic, "-o", "beginning", "-q"])
        .args(["-c", &events.to_string(), "-f", "%o\\n"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            say(format!("  kcat unavailable ({kcat}: {e}); skipped"));
            return Ok(None);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        say(format!(
            "  kcat failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return Ok(None);
    }
    Ok(Some(Drain {
        label: "kcat -C (process wall time, startup included)".into(),
        events,
        seconds,
        per_s: events as f64 / seconds,
        per_s_mid: events as f64 / seconds,
        processes: 1,
        ..Drain::default()
    }))
}

#[derive(Debug, Clone, Serialize)]
struct RedisBench {
    command: String,
    pipeline: u32,
    requests: u64,
    per_s: f64,
}

fn redis_benchmark(requests: u64, command: &[&str]) -> anyhow::Result<Option<RedisBench>> {
    let uri = redis_uri();
    let hostport = uri
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let (host, port) = hostport.split_once(':').unwrap_or((&hostport, "6379"));
    let out = match Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-P", "16", "-q", "-c", "50"])
        .args(["-n", &requests.to_string(), "-r", "1000000"])
        .args(command)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            say(format!("  redis-benchmark unavailable: {e}"));
            return Ok(None);
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "DEL bench:…: 123456.79 requests per second, p50=…" (the last \r-separated update)
    let line = text
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))
        .context("redis-benchmark printed no rate")?;
    let per_s: f64 = line
        .split("requests per second")
        .next()
        .and_then(|s| s.rsplit(' ').find(|w| !w.is_empty()))
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("parsing redis-benchmark output: {line}"))?;
    Ok(Some(RedisBench {
        command: command.join(" "),
        pipeline: 16,
        requests,
        per_s,
    }))
}

// ---------------------------------------------------------------------------------------------
// Worker processes: spawn, watch (metrics, RSS, CPU), stop

fn target_dir() -> PathBuf {
    // This binary is target/release/bench.
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

struct Worker {
    child: Child,
    pid: u32,
    metrics_url: String,
}

impl Worker {
    fn spawn(binary: &str, name: &str, env: &[(String, String)]) -> anyhow::Result<Self> {
        Self::spawn_with_args(binary, &[], name, env)
    }

    /// [`Worker::spawn`] with command-line arguments (a subcommand).
    fn spawn_with_args(
        binary: &str,
        args: &[&str],
        name: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let path = target_dir().join(binary);
        if !path.exists() {
            bail!(
                "{} not built; run `cargo build --release --workspace --bins`",
                path.display()
            );
        }
        let port = free_port()?;
        let logs = log_dir();
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let mut cmd = Command::new(path);
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("KAFKA_CONFIG__") || k.starts_with("BATCH_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("KAFKA_BROKERS", brokers())
            .env("REDIS_URI", redis_uri())
            .env("SCHEMA_REGISTRY_URL", fleet_harness::registry_url())
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        Ok(Self {
            pid: child.id(),
            child,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        })
    }

    /// Records processed so far (`cdc_messages_total`, every outcome).
    async fn processed(&self) -> u64 {
        let Ok(Ok(body)) = tokio::time::timeout(
            Duration::from_secs(2),
            fleet_harness::http_get(&self.metrics_url),
        )
        .await
        else {
            return 0;
        };
        body.lines()
            .filter(|l| l.starts_with("cdc_messages_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    fn status(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        text.lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn rss_kb(&self) -> Option<u64> {
        self.status("VmRSS:")
    }

    fn hwm_kb(&self) -> Option<u64> {
        self.status("VmHWM:")
    }

    /// utime + stime, seconds.
    fn cpu_seconds(&self) -> Option<f64> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let rest = text.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }

    /// SIGTERM, wait up to 15 s, then SIGKILL.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = fleet_harness::process::signal(&self.child, "TERM");
        if fleet_harness::process::wait_exit(&mut self.child, Duration::from_secs(15))
            .await?
            .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn log_dir() -> PathBuf {
    std::env::var("CDC_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/bangumi-cdc"))
        .join("log/bench")
}

/// Watches `workers` until together they processed `events` records; samples their counters
/// every 50 ms and their RSS, then idles 2 s for the idle RSS.
/// With a `budget`, stops that long after the first event and rates what was processed.
async fn watch(
    label: &str,
    workers: &[Worker],
    events: u64,
    started: Instant,
    timeout: Duration,
    budget: Option<Duration>,
) -> anyhow::Result<Drain> {
    let mut events = events;
    let mut first: Option<Instant> = None;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let cpu0: f64 = workers.iter().filter_map(Worker::cpu_seconds).sum();
    let mut last_report = Instant::now();
    loop {
        let mut count = 0;
        for w in workers {
            count += w.processed().await;
        }
        let t = started.elapsed().as_secs_f64();
        samples.push((t, count));
        if let Some(max) = workers.iter().filter_map(Worker::rss_kb).max() {
            rss.push((t, max));
        }
        if count >= events {
            break;
        }
        if count > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if let (Some(budget), Some(first)) = (budget, first)
            && first.elapsed() > budget
        {
            say(format!(
                "  {label}: time budget {budget:?} spent at {count} of {events}; rating what was processed"
            ));
            events = count;
            break;
        }
        if let Some(dead) = workers.iter().find(|w| w.rss_kb().is_none()) {
            bail!(
                "{label}: worker {} exited early ({count} of {events} processed); see {}",
                dead.pid,
                log_dir().display()
            );
        }
        if started.elapsed() > timeout {
            bail!("{label}: {count} of {events} processed after {timeout:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            say(format!("  {label}: {count} of {events}"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu1: f64 = workers.iter().filter_map(Worker::cpu_seconds).sum();
    let mut drain = drain_from_samples(label, &samples, events);
    drain.processes = workers.len();
    drain.cpu_us_per_event = Some((cpu1 - cpu0) * 1e6 / events as f64);
    // Under load: the second half of the drain.
    let half = drain.first_event_s + drain.seconds / 2.0;
    let mut loaded: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= half)
        .map(|(_, r)| *r)
        .collect();
    loaded.sort_unstable();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drain.rss = Some(Rss {
        peak_kb: workers.iter().filter_map(Worker::hwm_kb).max().unwrap_or(0),
        loaded_kb: loaded.get(loaded.len() / 2).copied().unwrap_or(0),
        idle_kb: workers.iter().filter_map(Worker::rss_kb).max().unwrap_or(0),
    });
    Ok(drain)
}

/// Runs the release binary `binary` (one process in `group`, with `env`) until it has processed
/// `events` records, stops it, and reports its drain (timing out after 300 s + 20 ms per event).
async fn catch_up(
    binary: &str,
    group: &str,
    env: &[(String, String)],
    events: u64,
) -> anyhow::Result<Drain> {
    let label = format!("{binary} worker");
    say(format!("{binary}: the worker draining the topic"));
    let started = Instant::now();
    let worker = Worker::spawn(binary, group, env)?;
    let timeout = Duration::from_secs(300 + events / 50);
    let drain = watch(
        &label,
        std::slice::from_ref(&worker),
        events,
        started,
        timeout,
        None,
    )
    .await;
    worker.stop().await?;
    let drain = drain?;
    say(format!(
        "  {label}: {:.0} events/s (5–95%), {:.0} overall, {:.1} µs CPU/event, RSS peak {} KiB",
        drain.per_s_mid,
        drain.per_s,
        drain.cpu_us_per_event.unwrap_or(0.0),
        drain.rss.as_ref().map_or(0, |r| r.peak_kb)
    ));
    Ok(drain)
}

/// A worker's environment: isolated topics, group and keys, plus `extra`.
fn worker_env(
    topic_prefix: &str,
    group: &str,
    key_prefix: &str,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env = vec![
        ("KAFKA_TOPIC_PREFIX".to_owned(), topic_prefix.to_owned()),
        ("KAFKA_GROUP_ID".to_owned(), group.to_owned()),
        ("REDIS_KEY_PREFIX".to_owned(), key_prefix.to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// Runs `processes` cache-invalidation workers in one group over the members topic under
/// `topic_prefix` until `events` are processed.
async fn cache_drain(
    label: &str,
    topic_prefix: &str,
    events: u64,
    processes: usize,
    extra: &[(&str, String)],
    perf_out: Option<&str>,
    budget: Option<Duration>,
) -> anyhow::Result<Drain> {
    let group = unique("bench-ci");
    let key_prefix = format!("{}:", unique("bench"));
    let env = worker_env(topic_prefix, &group, &key_prefix, extra);
    let started = Instant::now();
    let mut workers = Vec::new();
    for n in 0..processes {
        workers.push(Worker::spawn(
            "cache-invalidation",
            &format!("{}-{n}", group),
            &env,
        )?);
    }
    let perf = match perf_out {
        Some(path) => Some(
            Command::new("perf")
                .args(["record", "-F", "999", "-e", "cpu-clock", "-g", "-o", path])
                .args(["-p", &workers[0].pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("perf record")?,
        ),
        None => None,
    };
    let timeout = Duration::from_secs(120 + events / 5_000);
    let drain = watch(label, &workers, events, started, timeout, budget).await;
    if let Some(perf) = perf {
        let _ = fleet_harness::process::signal(&perf, "INT");
        let mut perf = perf;
        let _ = fleet_harness::process::wait_exit(&mut perf, Duration::from_secs(30)).await;
    }
    for w in workers {
        w.stop().await?;
    }
    let drain = drain?;
    say(format!(
        "  {label}: {:.0} events/s (5–95%), {:.0} overall, first event after {:.2} s, {:.1} µs CPU/event, RSS peak {} KiB",
        drain.per_s_mid,
        drain.per_s,
        drain.first_event_s,
        drain.cpu_us_per_event.unwrap_or(0.0),
        drain.rss.as_ref().map_or(0, |r| r.peak_kb)
    ));
    Ok(drain)
}

/// The pre-filled members topic and what each drain round runs on it.
struct Drains {
    topic: String,
    /// Every topic of the cache-invalidation family under the run's prefix (the worker's
    /// subscription).
    family_topics: Vec<String>,
    prefix: String,
    events: u64,
    timeout: Duration,
}

/// One round of drains of the same topic, one consumer after the other.
#[derive(Debug, Clone, Serialize, Default)]
struct DrainRound {
    ceiling: Option<Drain>,
    /// The do-nothing consumer subscribed to every topic of the family, as the worker is.
    ceiling_subscription: Option<Drain>,
    kcat: Option<Drain>,
    cache_invalidation: Option<Drain>,
}

impl Drains {
    /// The baselines (section "ceiling") then the worker (section "cache"); `perf` records the
    /// worker.
    async fn round(&self, o: &Options, perf: Option<&str>) -> anyhow::Result<DrainRound> {
        let mut round = DrainRound::default();
        if o.wants("ceiling") {
            say("ceiling: do-nothing rdkafka consumer (the worker's consumer settings)");
            round.ceiling = Some(self.do_nothing(vec![self.topic.clone()]).await?);
            say(
                "ceiling: the same consumer subscribed like the worker (every topic of its family)",
            );
            round.ceiling_subscription = Some(self.do_nothing(self.family_topics.clone()).await?);
            say("ceiling: kcat");
            let (t, n) = (self.topic.clone(), self.events);
            round.kcat = tokio::task::spawn_blocking(move || kcat_drain(&t, n)).await??;
            if let Some(k) = &round.kcat {
                say(format!("  {:.0} msg/s", k.per_s));
            }
        }
        if o.wants("cache") {
            say("cache-invalidation: draining the same topic");
            round.cache_invalidation = Some(
                cache_drain(
                    "cache-invalidation worker",
                    &self.prefix,
                    self.events,
                    1,
                    &[],
                    perf,
                    None,
                )
                .await?,
            );
        }
        Ok(round)
    }

    async fn do_nothing(&self, topics: Vec<String>) -> anyhow::Result<Drain> {
        let label = match topics.len() {
            1 => "do-nothing rdkafka consumer (worker settings)".to_owned(),
            n => format!("do-nothing rdkafka consumer (worker settings), the worker's {n} topics"),
        };
        let (n, timeout) = (self.events, self.timeout);
        let d = tokio::task::spawn_blocking(move || {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            do_nothing_drain(&label, &topics, n, &[], timeout)
        })
        .await??;
        say(format!(
            "  {:.0} msg/s (5–95%), {:.0} overall",
            d.per_s_mid, d.per_s
        ));
        Ok(d)
    }
}

// ---------------------------------------------------------------------------------------------
// Redis helpers

async fn delete_prefix(prefix: &str) -> anyhow::Result<u64> {
    fleet_harness::delete_prefix_at(&redis_uri(), prefix).await
}

async fn command_stats() -> anyhow::Result<BTreeMap<String, u64>> {
    let mut conn = redis().await?;
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Timeline fan-out

/// `chii_timeline` creates made from the real fixture (`tml_id` 10's create).
struct TimelineCreates {
    template: Value,
    key: Value,
    headers: Vec<(String, Vec<u8>)>,
}

impl TimelineCreates {
    fn load() -> anyhow::Result<Self> {
        let f = fixtures::load(Encoding::Json)?
            .into_iter()
            .find(|f| {
                f.topic == TIMELINE_TOPIC
                    && f.record
                        .value
                        .as_ref()
                        .is_some_and(|v| String::from_utf8_lossy(v).contains("\"op\":\"c\""))
            })
            .context("no chii_timeline create in the fixtures")?;
        Ok(Self {
            template: serde_json::from_slice(f.record.value.as_deref().unwrap_or_default())?,
            key: f
                .record
                .key
                .as_deref()
                .map(serde_json::from_slice)
                .transpose()?
                .unwrap_or_else(|| json!({})),
            headers: f.record.headers,
        })
    }

    fn event(&self, tml_id: u64, uid: u64, pos: u64) -> Out {
        let mut v = self.template.clone();
        v["after"]["tml_id"] = tml_id.into();
        v["after"]["tml_uid"] = uid.into();
        v["source"]["pos"] = pos.into();
        let mut k = self.key.clone();
        k["tml_id"] = tml_id.into();
        Out {
            partition: None,
            key: Some(k.to_string().into_bytes()),
            value: Some(v.to_string().into_bytes()),
            headers: self.headers.clone(),
            timestamp_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Graph {
    authors: u64,
    big_authors: u64,
    big_followers: u64,
    follower_pool: u64,
    rows: u64,
    average_followers_regular: f64,
    seconds: f64,
}

struct FollowerGraph {
    db: TestDatabase,
    regular: Vec<(u64, u64)>, // (author, followers)
    big: Vec<u64>,
    info: Graph,
}

const POOL_BASE: u64 = 1_000_000;
const BIG_BASE: u64 = 900_000;

async fn follower_graph(o: &Options) -> anyhow::Result<FollowerGraph> {
    let started = Instant::now();
    let db = TestDatabase::create().await?;
    let mut rng = rand::rng();
    let mut rows: Vec<(u64, u64)> = Vec::new(); // (follower frd_uid, followed frd_fid)
    let mut regular = Vec::new();
    for author in 1..=o.timeline_authors {
        let k = rng.random_range(50..=150u64).min(o.timeline_pool);
        for idx in sample(&mut rng, o.timeline_pool as usize, k as usize) {
            rows.push((POOL_BASE + idx as u64, author));
        }
        regular.push((author, k));
    }
    let big: Vec<u64> = (1..=o.big_authors).map(|i| BIG_BASE + i).collect();
    for author in &big {
        for f in 0..o.big_followers.min(o.timeline_pool) {
            rows.push((POOL_BASE + f, *author));
        }
    }
    for chunk in rows.chunks(5_000) {
        let values = vec!["(?, ?, 1, 0, '')"; chunk.len()].join(",");
        let sql = format!(
            "INSERT INTO chii_friends (frd_uid, frd_fid, frd_grade, frd_dateline, frd_description) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for (uid, fid) in chunk {
            q = q.bind(*uid).bind(*fid);
        }
        q.execute(&db.pool).await?;
    }
    let total_regular: u64 = regular.iter().map(|(_, k)| k).sum();
    let info = Graph {
        authors: o.timeline_authors,
        big_authors: o.big_authors,
        big_followers: o.big_followers.min(o.timeline_pool),
        follower_pool: o.timeline_pool,
        rows: rows.len() as u64,
        average_followers_regular: total_regular as f64 / regular.len().max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(FollowerGraph {
        db,
        regular,
        big,
        info,
    })
}

/// Every inbox and author visited, expiring in a day.
async fn seed_visits(key_prefix: &str, g: &FollowerGraph, pool: u64) -> anyhow::Result<()> {
    let mut conn = redis().await?;
    let expiry = unix_now() + 86_400;
    let mut keys: Vec<String> = (0..pool)
        .map(|i| timeline::keys::inbox_visit(key_prefix, POOL_BASE + i))
        .collect();
    for author in g
        .regular
        .iter()
        .map(|(a, _)| *a)
        .chain(g.big.iter().copied())
    {
        keys.push(timeline::keys::inbox_visit(key_prefix, author));
        keys.push(timeline::keys::user_visit(key_prefix, author));
    }
    for chunk in keys.chunks(10_000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set_ex(k, expiry, 86_400).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
struct TimelineRun {
    label: String,
    drain: Drain,
    /// Share of events by 100k-follower authors.
    big_share: f64,
    /// Inbox ZADDs the events ask for (followers + the author, all visited).
    inbox_writes: u64,
    inbox_writes_per_s: f64,
    /// Redis commands (in-script calls included, from INFO commandstats) per second.
    redis_commands_per_s: f64,
    redis_commands_per_event: f64,
    redis_top_commands: BTreeMap<String, u64>,
}

/// One fan-out drain of `events` creates, `tml_id`s from `first_tml_id` (runs sharing a key
/// prefix take ids of their own: a create of an item another run applied is stale at its fence).
async fn timeline_run(
    label: &str,
    g: &FollowerGraph,
    key_prefix: &str,
    first_tml_id: u64,
    events: u64,
    big_every: Option<u64>,
) -> anyhow::Result<TimelineRun> {
    let topic_prefix = format!("{}.", unique("bench"));
    let topic = format!("{topic_prefix}{TIMELINE_TOPIC}");
    create_topic(&topic, 1).await?;
    provisioned_family(timeline::FAMILY, &topic_prefix).await?;
    let creates = Arc::new(TimelineCreates::load()?);
    let mut authors = Vec::with_capacity(events as usize);
    let mut inbox_writes = 0u64;
    let mut big_events = 0u64;
    let mut rng = rand::rng();
    for i in 0..events {
        let (author, followers) = match big_every {
            Some(n) if i % n == n / 2 && !g.big.is_empty() => {
                big_events += 1;
                (g.big[(i / n) as usize % g.big.len()], g.info.big_followers)
            }
            _ => g.regular[rng.random_range(0..g.regular.len())],
        };
        authors.push(author);
        // followers' inboxes + the author's (all visited) + the global inbox + user timeline
        inbox_writes += followers + 3;
    }
    let authors = Arc::new(authors);
    say(format!("filling {topic} with {events} creates"));
    let (c, a, t) = (creates.clone(), authors.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        fill(&t, 1, events, &|i| {
            c.event(first_tml_id + i, a[i as usize], 300_000 + i)
        })
    })
    .await??;
    let group = unique("bench-tml");
    let extra = [("MYSQL_DB", g.db.name.clone())];
    let env = worker_env(&topic_prefix, &group, key_prefix, &extra);
    let before = command_stats().await?;
    let started = Instant::now();
    let worker = Worker::spawn("timeline", &group, &env)?;
    let timeout = Duration::from_secs(300 + events / 100);
    let drain = watch(
        label,
        std::slice::from_ref(&worker),
        events,
        started,
        timeout,
        None,
    )
    .await;
    let after = command_stats().await?;
    worker.stop().await?;
    let drain = drain?;
    let mut delta: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in &after {
        let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
        if d > 0 && k != "info" {
            delta.insert(k.clone(), d);
        }
    }
    let total: u64 = delta.values().sum();
    let mut top: Vec<(String, u64)> = delta.into_iter().collect();
    top.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
    top.truncate(8);
    // The drain's whole window (first → last event), as commandstats are cumulative.
    let window = drain.seconds.max(1e-9);
    let run = TimelineRun {
        label: label.to_owned(),
        big_share: big_events as f64 / events as f64,
        inbox_writes,
        inbox_writes_per_s: inbox_writes as f64 / window,
        redis_commands_per_s: total as f64 / window,
        redis_commands_per_event: total as f64 / events as f64,
        redis_top_commands: top.into_iter().collect(),
        drain,
    };
    say(format!(
        "  {label}: {:.0} events/s (5–95%), {:.0} overall, {:.0} Redis commands/s ({:.0}/event), RSS peak {} KiB",
        run.drain.per_s_mid,
        run.drain.per_s,
        run.redis_commands_per_s,
        run.redis_commands_per_event,
        run.drain.rss.as_ref().map_or(0, |r| r.peak_kb)
    ));
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// subject-date: a catch-up of chii_subjects updates, beside the legacy's one-event-at-a-time loop

/// splitmix64: the bench's subjects and event order are the same in every run.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The subject of the `i`th event: uniform over `1..=subjects`, so a subject changes
/// events / subjects times on average and batches hold a few repeats.
fn subject_of_event(i: u64, subjects: u64) -> u32 {
    u32::try_from(1 + mix(i ^ 0x5EED_0000_0000_0000) % subjects).unwrap_or(1)
}

/// Subject `id` of the bench, modelled on the fixtures' real infoboxes: anime (TV, OVA, movie,
/// web), books (manga, novels, artbooks), music, games and live action in Bangumi's proportions
/// (roughly), several fields each, aliases and platforms as arrays, editions as arrays of dates,
/// and the date written the ways the wiki writes it, some the legacy finds no date in.
fn bench_subject(id: u32) -> Subject {
    let r = |salt: u64| mix((u64::from(id) << 8) | salt);
    let year = 1960 + r(1) % 66;
    let month = 1 + r(2) % 12;
    let day = 1 + r(3) % 28;
    let later = |d: u64| format!("{year}-{:02}-{:02}", month, (day + d).min(28));
    let date = match r(4) % 100 {
        0..=29 => format!("{year}年{month}月{day}日"),
        30..=54 => format!("{year}-{month:02}-{day:02}"),
        55..=63 => format!("{year}-{month:02}-{day:02} (日本)"),
        64..=70 => format!("{year}年{month}月"),
        71..=75 => format!("{year}年"),
        76..=80 => format!("初回限定盤 ({year}-{month:02}-{day:02})"),
        81..=84 => format!("({year}/{month:02}/{day:02})"),
        // No date by the legacy's rules.
        85..=89 => format!("{year}/{month:02}/{day:02}"),
        90..=95 => "未定".to_owned(),
        _ => String::new(),
    };
    let array = r(5).is_multiple_of(5);
    let n = r(6);
    let aliases = match n % 3 {
        0 => String::new(),
        1 => format!("|别名={{\r\n[Subject {id}]\r\n}}\r\n"),
        _ => format!("|别名={{\r\n[Subject {id}]\r\n[サブジェクト{id}]\r\n[条目{id}号]\r\n}}\r\n"),
    };
    let (type_id, platform, infobox) = match r(7) % 20 {
        // Anime: TV, OVA, movie, web.
        0..=5 => {
            let platform = [1, 1, 1, 2, 3, 5][(n % 6) as usize];
            let (kind, date_key) = match platform {
                2 => ("OVA", "发售日"),
                3 => ("Movie", "上映年度"),
                _ => ("TVAnime", "放送开始"),
            };
            (
                2,
                platform,
                format!(
                    "{{{{Infobox animanga/{kind}\r\n|中文名= 动画{id}\r\n{aliases}|话数= {eps}\r\n\
                     |{date_key}= {date}\r\n|放送星期= 星期{wd}\r\n|官方网站= https://anime-{id}.example.jp/\r\n\
                     |播放电视台= TOKYO MX\r\n|播放结束= {end}年{month}月\r\n|原作= 原作者{a}\r\n\
                     |导演= 监督{b}\r\n|脚本= 脚本家{c}\r\n|音乐= 作曲家{a}\r\n|人物设定= 设计师{b}\r\n\
                     |动画制作= 工作室{c}\r\n}}}}",
                    eps = 1 + n % 26,
                    wd = ["一", "二", "三", "四", "五", "六", "日"][(n % 7) as usize],
                    end = year + 1,
                    a = n % 997,
                    b = n % 991,
                    c = n % 983,
                ),
            )
        }
        // Books: manga, novels, artbooks; some with a date per edition.
        6..=11 => {
            let platform = [1001, 1001, 1002, 1003][(n % 4) as usize];
            let kind = match platform {
                1001 => "Manga",
                1002 => "Novel",
                _ => "Book",
            };
            let released = if array {
                format!(
                    "{{\r\n[特装版|]\r\n[初回限定版|{}]\r\n[通常版|{}]\r\n}}",
                    later(0),
                    later(14)
                )
            } else {
                date
            };
            (
                1,
                platform,
                format!(
                    "{{{{Infobox animanga/{kind}\r\n|中文名= 书籍{id}\r\n{aliases}|作者= 作家{a}\r\n\
                     |出版社= 出版社{b}\r\n|连载杂志= 杂志{c}\r\n|发售日= {released}\r\n|页数= {pages}\r\n\
                     |ISBN= 978408{isbn:07}\r\n|册数= {vols}\r\n}}}}",
                    a = n % 997,
                    b = n % 89,
                    c = n % 53,
                    pages = 100 + n % 300,
                    isbn = n % 10_000_000,
                    vols = 1 + n % 30,
                ),
            )
        }
        // Music.
        12..=14 => (
            3,
            0,
            format!(
                "{{{{Infobox Album\r\n|中文名= 专辑{id}\r\n{aliases}|版本特性= 通常盤\r\n|发售日期= {date}\r\n\
                 |价格= ¥{price}\r\n|播放时长= {min}:{sec:02}\r\n|碟片数量= {discs}\r\n|艺术家= 歌手{a}\r\n\
                 |作曲= 作曲家{b}\r\n|作词= 作词家{b}\r\n}}}}",
                price = 1_000 + n % 3_000,
                min = 4 + n % 60,
                sec = n % 60,
                discs = 1 + n % 3,
                a = n % 997,
                b = n % 991,
            ),
        ),
        // Games: platforms as an array, some with a date per platform.
        15..=17 => {
            let released = if array {
                format!("{{\r\n[PC|{}]\r\n[PS4|{}]\r\n}}", later(0), later(21))
            } else {
                date
            };
            (
                4,
                4001,
                format!(
                    "{{{{Infobox Game\r\n|中文名= 游戏{id}\r\n{aliases}|平台={{\r\n[PC]\r\n[PS4]\r\n[Nintendo Switch]\r\n}}\r\n\
                     |游戏类型= {genre}\r\n|游玩人数= {players}\r\n|发行日期= {released}\r\n|售价= {price}円\r\n\
                     |开发= 开发商{a}\r\n|发行= 发行商{b}\r\n}}}}",
                    genre = ["ACT", "RPG", "SRPG", "AVG", "STG"][(n % 5) as usize],
                    players = 1 + n % 4,
                    price = 2_000 + n % 8_000,
                    a = n % 997,
                    b = n % 89,
                ),
            )
        }
        // Live action: TV series and movies.
        _ => {
            if n.is_multiple_of(2) {
                (
                    6,
                    1,
                    format!(
                        "{{{{Infobox real/Television\r\n|中文名= 日剧{id}\r\n{aliases}|集数= {eps}\r\n|上映日= \r\n\
                         |开始= {date}\r\n|结束= {end}年{month}月\r\n|电视台= TBS\r\n|主演= 演员{a}\r\n}}}}",
                        eps = 8 + n % 5,
                        end = year + 1,
                        a = n % 997,
                    ),
                )
            } else {
                (
                    6,
                    6002,
                    format!(
                        "{{{{Infobox real/Movie\r\n|中文名= 电影{id}\r\n{aliases}|上映日= {date}\r\n\
                         |片长= {len}分钟\r\n|导演= 导演{a}\r\n|主演= 演员{b}\r\n}}}}",
                        len = 80 + n % 80,
                        a = n % 997,
                        b = n % 991,
                    ),
                )
            }
        }
    };
    Subject {
        id,
        type_id,
        platform,
        infobox,
    }
}

/// What the legacy computes for `subject`: the fields it writes, or `None` when it writes
/// nothing (the worker's `decide`).
fn legacy_fields(type_id: u16, platform: u16, infobox: &str) -> Option<subject_date::date::Fields> {
    let wiki = bangumi_wiki::parse(infobox).ok()?;
    subject_date::date::extract(&wiki, type_id, platform)
        .fields()
        .ok()
}

/// `chii_subjects` updates made from the real fixture (the first update of the `subject-date`
/// scenario): `subject_id` substituted in the key and both row images, the after image made the
/// bench subject's, and an hour-old `source.ts_ms` (a catch-up after an outage).
struct SubjectUpdates {
    template: Value,
    key: Value,
    headers: Vec<(String, Vec<u8>)>,
}

impl SubjectUpdates {
    fn load() -> anyhow::Result<Self> {
        let f = fixtures::load(Encoding::Json)?
            .into_iter()
            .find(|f| {
                f.scenario == "subject-date"
                    && f.topic == SUBJECTS_TOPIC
                    && f.record
                        .value
                        .as_ref()
                        .is_some_and(|v| String::from_utf8_lossy(v).contains("\"op\":\"u\""))
            })
            .context("no chii_subjects update in the subject-date fixtures")?;
        Ok(Self {
            template: serde_json::from_slice(f.record.value.as_deref().unwrap_or_default())?,
            key: f
                .record
                .key
                .as_deref()
                .map(serde_json::from_slice)
                .transpose()?
                .unwrap_or_else(|| json!({})),
            headers: f.record.headers,
        })
    }

    fn event(&self, s: &Subject, ts_ms: u64, pos: u64) -> Out {
        let mut v = self.template.clone();
        for image in ["before", "after"] {
            v[image]["subject_id"] = s.id.into();
            v[image]["subject_type_id"] = s.type_id.into();
            v[image]["subject_platform"] = s.platform.into();
        }
        v["after"]["field_infobox"] = s.infobox.as_str().into();
        v["source"]["ts_ms"] = ts_ms.into();
        v["source"]["ts_us"] = (ts_ms * 1_000).into();
        v["source"]["ts_ns"] = (ts_ms * 1_000_000).into();
        v["source"]["pos"] = pos.into();
        let mut k = self.key.clone();
        k["subject_id"] = s.id.into();
        Out {
            partition: None,
            key: Some(k.to_string().into_bytes()),
            value: Some(v.to_string().into_bytes()),
            headers: self.headers.clone(),
            timestamp_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct SubjectDateRun {
    subjects: u64,
    /// Subjects whose infobox gives a date the legacy stores.
    dated_subjects: u64,
    /// Subjects by type id.
    subject_types: BTreeMap<u16, u64>,
    /// Mean bytes of the generated infoboxes.
    infobox_bytes: f64,
    events: u64,
    /// The family's `batch.max_messages`.
    batch_max_messages: u64,
    /// Mean distinct subjects in consecutive windows of `batch_max_messages` events.
    distinct_per_batch: f64,
    /// Seconds to create and seed the database.
    setup_seconds: f64,
    fill: Fill,
    /// MariaDB's `innodb_flush_log_at_trx_commit` (1: each commit waits for its log flush).
    innodb_flush_log_at_trx_commit: Option<i64>,
    worker: Drain,
    /// The legacy's work per event through sqlx: SELECT the subject, parse, UPDATE (autocommit).
    legacy: Drain,
    /// The UPDATEs alone, per event, autocommit (the date known beforehand).
    update_floor: Option<Drain>,
    /// `chii_subject_fields` ended the same after every run, and as computed here.
    same_end_state: bool,
    end_state: Vec<String>,
}

/// Sets every date of `db` back to unset.
async fn reset_subject_dates(db: &TestDatabase) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE chii_subject_fields SET field_year = 0, field_mon = 0, field_date = '0000-00-00'",
    )
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A bare loop on one connection: per event, `SELECT` the subject (with `select`; else the
/// fields come from `known`), compute its date, `UPDATE` its fields in autocommit.
async fn legacy_loop(
    label: &str,
    db: &TestDatabase,
    order: &[u32],
    known: Option<&BTreeMap<u32, subject_date::date::Fields>>,
) -> anyhow::Result<Drain> {
    let mut conn = db.pool.acquire().await?;
    let mut progress = LoopProgress::new(label, order.len() as u64);
    for (i, id) in order.iter().enumerate() {
        let fields = match known {
            Some(known) => known.get(id).cloned(),
            None => {
                let row: Option<(u32, u16, u16, String)> = sqlx::query_as(
                    "SELECT subject_id, subject_type_id, subject_platform, field_infobox \
                     FROM chii_subjects WHERE subject_id = ? LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                row.and_then(|(_, type_id, platform, infobox)| {
                    legacy_fields(type_id, platform, &infobox)
                })
            }
        };
        if let Some(f) = fields {
            sqlx::query(
                "UPDATE chii_subject_fields SET field_year = ?, field_mon = ?, field_date = ? WHERE field_sid = ?",
            )
            .bind(f.year)
            .bind(f.month)
            .bind(&f.date)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        progress.done(i as u64 + 1);
    }
    Ok(progress.drain("events"))
}

/// The progress of a bare loop of the bench (a baseline): samples every 20 ms for
/// [`drain_from_samples`], a line every 10 s.
struct LoopProgress<'a> {
    label: &'a str,
    total: u64,
    started: Instant,
    samples: Vec<(f64, u64)>,
    last_sample: Instant,
    last_report: Instant,
}

impl<'a> LoopProgress<'a> {
    fn new(label: &'a str, total: u64) -> Self {
        Self {
            label,
            total,
            started: Instant::now(),
            samples: Vec::new(),
            last_sample: Instant::now(),
            last_report: Instant::now(),
        }
    }

    /// `count` items are done.
    fn done(&mut self, count: u64) {
        if count == 1
            || count == self.total
            || self.last_sample.elapsed() > Duration::from_millis(20)
        {
            self.samples
                .push((self.started.elapsed().as_secs_f64(), count));
            self.last_sample = Instant::now();
        }
        if self.last_report.elapsed() > Duration::from_secs(10) {
            say(format!("  {}: {count} of {}", self.label, self.total));
            self.last_report = Instant::now();
        }
    }

    /// The loop's drain (one process), said with its rate in `unit`s.
    fn drain(&self, unit: &str) -> Drain {
        let drain = drain_from_samples(self.label, &self.samples, self.total);
        say(format!(
            "  {}: {:.0} {unit}/s (5–95%), {:.0} overall",
            self.label, drain.per_s_mid, drain.per_s
        ));
        Drain {
            processes: 1,
            ..drain
        }
    }
}

/// Compares `db`'s dates with `want`; returns a line for the report and whether they matched.
async fn check_subject_dates(
    label: &str,
    db: &TestDatabase,
    want: &BTreeMap<u32, Date>,
) -> anyhow::Result<(BTreeMap<u32, Date>, String)> {
    let got = db.subject_dates().await?;
    let mismatches: Vec<String> = want
        .iter()
        .filter(|(id, d)| got.get(id) != Some(d))
        .map(|(id, d)| format!("{id}: {:?}, expected {d:?}", got.get(id)))
        .collect();
    let differ = mismatches.len() + got.keys().filter(|id| !want.contains_key(id)).count();
    let dated = got.values().filter(|d| **d != Date::unset()).count();
    let line = if differ == 0 {
        format!(
            "{label}: all {} rows as expected ({dated} dated)",
            got.len()
        )
    } else {
        format!(
            "{label}: {differ} of {} rows differ from the expected dates (first: {})",
            want.len(),
            mismatches.first().map_or("", String::as_str)
        )
    };
    say(format!("  {line}"));
    Ok((got, line))
}

/// A fresh 1-partition `chii_subjects` topic under a fresh prefix (the rest of `family`
/// provisioned there) filled with an update of `subjects[id - 1]` for each id of `order`, all
/// written an hour ago (a catch-up after an outage). Returns the prefix and the fill.
async fn subject_updates_topic(
    family: &str,
    subjects: Vec<Subject>,
    order: Arc<Vec<u32>>,
) -> anyhow::Result<(String, Fill)> {
    let topic_prefix = format!("{}.", unique("bench"));
    let topic = format!("{topic_prefix}{SUBJECTS_TOPIC}");
    create_topic(&topic, 1).await?;
    provisioned_family(family, &topic_prefix).await?;
    let events = order.len() as u64;
    say(format!("filling {topic} with {events} updates"));
    let updates = SubjectUpdates::load()?;
    let ts_ms = unix_now().saturating_sub(3_600) * 1_000;
    let fill = tokio::task::spawn_blocking(move || {
        fill(&topic, 1, events, &|i| {
            let id = order[i as usize];
            updates.event(&subjects[id as usize - 1], ts_ms, 500_000 + i)
        })
    })
    .await??;
    say(format!(
        "  filled in {:.1} s ({:.0} B/msg)",
        fill.seconds,
        fill.bytes as f64 / events.max(1) as f64
    ));
    Ok((topic_prefix, fill))
}

/// A fresh database of the bench subjects `1..=n` ([`bench_subject`]), each with an undated
/// `chii_subject_fields` row.
async fn bench_subjects_database(
    section: &str,
    n: u64,
) -> anyhow::Result<(Vec<Subject>, TestDatabase)> {
    say(format!(
        "{section}: a database of {n} subjects with their chii_subject_fields rows"
    ));
    let subjects: Vec<_> = (1..=n)
        .map(|id| bench_subject(u32::try_from(id).unwrap_or(u32::MAX)))
        .collect();
    let db = TestDatabase::create().await?;
    db.add_subjects_in_bulk(&subjects).await?;
    Ok((subjects, db))
}

async fn subject_date_bench(o: &Options) -> anyhow::Result<SubjectDateRun> {
    let setup = Instant::now();
    let n = o.subject_date_subjects;
    let events = o.subject_date_events;
    let (subjects, db) = bench_subjects_database("subject-date", n).await?;
    let setup_seconds = setup.elapsed().as_secs_f64();
    let known: BTreeMap<u32, subject_date::date::Fields> = subjects
        .iter()
        .filter_map(|s| legacy_fields(s.type_id, s.platform, &s.infobox).map(|f| (s.id, f)))
        .collect();
    let order: Vec<u32> = (0..events).map(|i| subject_of_event(i, n)).collect();
    // What chii_subject_fields must end as: the date of every subject some event is about.
    let touched: HashSet<u32> = order.iter().copied().collect();
    let want: BTreeMap<u32, Date> = subjects
        .iter()
        .map(|s| {
            let known = known.get(&s.id).filter(|_| touched.contains(&s.id));
            let date = known.map_or_else(Date::unset, |f| Date {
                year: u32::from(f.year),
                month: i32::from(f.month),
                date: f.date.clone(),
            });
            (s.id, date)
        })
        .collect();
    let mut subject_types = BTreeMap::new();
    for s in &subjects {
        *subject_types.entry(s.type_id).or_insert(0u64) += 1;
    }
    let infobox_bytes =
        subjects.iter().map(|s| s.infobox.len()).sum::<usize>() as f64 / n.max(1) as f64;
    say(format!(
        "  {} of them dated, {infobox_bytes:.0} B per infobox, in {setup_seconds:.1} s",
        known.len()
    ));
    let flush: Option<i64> =
        sqlx::query_scalar("SELECT CAST(@@innodb_flush_log_at_trx_commit AS SIGNED)")
            .fetch_optional(&db.pool)
            .await
            .ok()
            .flatten();

    let family = cdc_topics::by_name(subject_date::FAMILY)?.context("no subject-date family")?;
    let batch = family.batch.max_messages.max(1);
    let windows: Vec<usize> = order
        .chunks(batch)
        .map(|w| w.iter().collect::<HashSet<_>>().len())
        .collect();
    let distinct_per_batch = windows.iter().sum::<usize>() as f64 / windows.len().max(1) as f64;

    say(format!(
        "subject-date: {events} updates of {n} subjects ({distinct_per_batch:.1} distinct per {batch} events)"
    ));
    let ord = Arc::new(order);
    let (topic_prefix, fill) =
        subject_updates_topic(subject_date::FAMILY, subjects, ord.clone()).await?;

    // The worker.
    let mut end_state = Vec::new();
    let group = unique("bench-sd");
    let extra = [
        ("MYSQL_DB", db.name.clone()),
        ("SUBJECT_DATE_READ_DELAY", "0s".to_owned()),
    ];
    let env = worker_env(&topic_prefix, &group, &format!("{group}:"), &extra);
    let drain = catch_up("subject-date", &group, &env, events).await?;
    let (worker_state, line) = check_subject_dates("worker", &db, &want).await?;
    end_state.push(line);

    // The legacy's loop, then the UPDATEs alone, each from unset dates.
    say("subject-date: the legacy's loop (SELECT + UPDATE per event, autocommit)");
    reset_subject_dates(&db).await?;
    let legacy = legacy_loop("legacy loop: SELECT + UPDATE per event", &db, &ord, None).await?;
    let (state, line) = check_subject_dates("legacy loop", &db, &want).await?;
    let mut same = state == worker_state;
    end_state.push(line);

    say("subject-date: the UPDATEs alone (per event, autocommit)");
    reset_subject_dates(&db).await?;
    let floor = legacy_loop("UPDATE per event only", &db, &ord, Some(&known)).await?;
    let (state, line) = check_subject_dates("UPDATE loop", &db, &want).await?;
    same &= state == worker_state;
    end_state.push(line);
    end_state.push(if same {
        "the worker, the legacy loop and the UPDATE loop left identical chii_subject_fields"
            .to_owned()
    } else {
        "the runs left DIFFERENT chii_subject_fields".to_owned()
    });
    same &= worker_state == want;

    let name = db.name.clone();
    if let Err(e) = db.drop_now().await {
        say(format!("  dropping database {name}: {e}"));
    }
    Ok(SubjectDateRun {
        subjects: n,
        dated_subjects: known.len() as u64,
        subject_types,
        infobox_bytes,
        events,
        batch_max_messages: batch as u64,
        distinct_per_batch,
        setup_seconds,
        fill,
        innodb_flush_log_at_trx_commit: flush,
        worker: drain,
        legacy,
        update_floor: Some(floor),
        same_end_state: same,
        end_state,
    })
}

// ---------------------------------------------------------------------------------------------
// Latency

#[derive(Debug, Clone, Serialize, Default)]
struct Percentiles {
    samples: usize,
    missing: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// (percentile, ms) for the plot.
    curve: Vec<(f64, f64)>,
}

fn percentiles(mut v: Vec<f64>, expected: usize) -> Percentiles {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    };
    let qs = [
        1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0,
    ];
    Percentiles {
        samples: v.len(),
        missing: expected.saturating_sub(v.len()),
        p50_ms: at(50.0),
        p90_ms: at(90.0),
        p99_ms: at(99.0),
        p999_ms: at(99.9),
        max_ms: at(100.0),
        curve: qs.iter().map(|q| (*q, at(*q))).collect(),
    }
}

#[derive(Debug, Clone, Serialize)]
struct LatencyRun {
    label: String,
    fetch_wait_max_ms: u64,
    seconds: u64,
    target_rate: u64,
    achieved_rate: f64,
    worker: Percentiles,
    do_nothing: Percentiles,
    worker_rss: Option<Rss>,
}

fn nanos_since(t0: Instant) -> u64 {
    (t0.elapsed().as_nanos() as u64).max(1)
}

async fn latency_run(
    updates: &Arc<MemberUpdates>,
    fetch_wait_max_ms: u64,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<LatencyRun> {
    let label = format!("fetch.wait.max.ms={fetch_wait_max_ms}");
    say(format!("latency, {label}: {rate} events/s for {seconds} s"));
    let topic_prefix = format!("{}.", unique("bench"));
    let topic = format!("{topic_prefix}{MEMBERS_TOPIC}");
    create_topic(&topic, 1).await?;
    provisioned_family(cache_invalidation::FAMILY, &topic_prefix).await?;
    let key_prefix = format!("{}:", unique("bench-lat"));
    let n = seconds * rate;
    let warm = 1_000u64;
    let total = n + warm; // uids 1..=n measured; n+1..=n+warm warm-up
    {
        let keys: Vec<String> = (1..=total)
            .map(|u| format!("{key_prefix}{}", member_key(u)))
            .collect();
        let mut conn = redis().await?;
        for chunk in keys.chunks(10_000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.set(k, "cached").ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
    }
    let t0 = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..=total).map(|_| AtomicU64::new(0)).collect());
    let effect: Arc<Vec<AtomicU64>> = Arc::new((0..=total).map(|_| AtomicU64::new(0)).collect());
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..=total).map(|_| AtomicU64::new(0)).collect());

    // Effects: keyevent notifications of DEL.
    let mut conn = redis().await?;
    let old: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await?;
    let old = old.get(1).cloned().unwrap_or_default();
    let mut flags: String = old.clone();
    if !flags.contains('E') {
        flags.push('E');
    }
    if !flags.contains('g') && !flags.contains('A') {
        flags.push('g');
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&flags)
        .query_async::<()>(&mut conn)
        .await?;
    let result = latency_measure(
        updates,
        &topic,
        &topic_prefix,
        &key_prefix,
        fetch_wait_max_ms,
        n,
        total,
        rate,
        t0,
        &sent,
        &effect,
        &received,
    )
    .await;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&old)
        .query_async::<()>(&mut conn)
        .await?;
    let _ = delete_prefix(&key_prefix).await;
    let (achieved_rate, worker_rss) = result?;
    let lat = |v: &Arc<Vec<AtomicU64>>| -> Vec<f64> {
        (1..=n as usize)
            .filter_map(|u| {
                let s = sent[u].load(Ordering::Relaxed);
                let e = v[u].load(Ordering::Relaxed);
                (s > 0 && e > 0).then(|| (e.saturating_sub(s)) as f64 / 1e6)
            })
            .collect()
    };
    let run = LatencyRun {
        label,
        fetch_wait_max_ms,
        seconds,
        target_rate: rate,
        achieved_rate,
        worker: percentiles(lat(&effect), n as usize),
        do_nothing: percentiles(lat(&received), n as usize),
        worker_rss,
    };
    say(format!(
        "  worker p50 {:.1} p99 {:.1} max {:.1} ms ({} missing); do-nothing p50 {:.1} p99 {:.1} max {:.1} ms",
        run.worker.p50_ms,
        run.worker.p99_ms,
        run.worker.max_ms,
        run.worker.missing,
        run.do_nothing.p50_ms,
        run.do_nothing.p99_ms,
        run.do_nothing.max_ms
    ));
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
async fn latency_measure(
    updates: &Arc<MemberUpdates>,
    topic: &str,
    topic_prefix: &str,
    key_prefix: &str,
    fetch_wait_max_ms: u64,
    n: u64,
    total: u64,
    rate: u64,
    t0: Instant,
    sent: &Arc<Vec<AtomicU64>>,
    effect: &Arc<Vec<AtomicU64>>,
    received: &Arc<Vec<AtomicU64>>,
) -> anyhow::Result<(f64, Option<Rss>)> {
    let client = redis::Client::open(redis_uri())?;
    let db = redis_uri()
        .rsplit('/')
        .next()
        .and_then(|d| d.parse::<u32>().ok())
        .unwrap_or(0);
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(format!("__keyevent@{db}__:del")).await?;
    let key_head = format!("{key_prefix}{}", member_key(0).trim_end_matches('0'));
    let listener = {
        let effect = effect.clone();
        let key_head = key_head.clone();
        tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let now = nanos_since(t0);
                let Ok(key) = msg.get_payload::<String>() else {
                    continue;
                };
                if let Some(uid) = key
                    .strip_prefix(&key_head)
                    .and_then(|u| u.parse::<usize>().ok())
                    && let Some(slot) = effect.get(uid)
                {
                    let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                }
            }
        })
    };

    // The do-nothing consumer, same fetch settings.
    let stop = Arc::new(AtomicBool::new(false));
    let kafka_config = vec![("fetch.wait.max.ms", fetch_wait_max_ms.to_string())];
    let consumer_thread = {
        let stop = stop.clone();
        let received = received.clone();
        let consumer: BaseConsumer = worker_consumer_config(
            &unique("bench-lat-noop"),
            cache_family_partitions(),
            &kafka_config,
        )?
        .create()?;
        consumer.subscribe(&[topic])?;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    let now = nanos_since(t0);
                    let uid = m
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| {
                            k.trim_start_matches("{\"uid\":")
                                .trim_end_matches('}')
                                .parse::<usize>()
                                .ok()
                        });
                    if let Some(slot) = uid.and_then(|u| received.get(u)) {
                        let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let group = unique("bench-lat");
    let env = worker_env(
        topic_prefix,
        &group,
        key_prefix,
        &[(
            "KAFKA_CONFIG__FETCH_WAIT_MAX_MS",
            fetch_wait_max_ms.to_string(),
        )],
    );
    let worker = Worker::spawn("cache-invalidation", &group, &env)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "0")
        .set("enable.idempotence", "true")
        .create()?;
    let send = |uid: u64, pos: u64| -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
        let out = updates.event(uid, pos);
        let mut headers = OwnedHeaders::new();
        for (k, v) in &out.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .headers(headers)
            .key(out.key.as_deref().unwrap_or_default())
            .payload(out.value.as_deref().unwrap_or_default());
        sent[uid as usize].store(nanos_since(t0), Ordering::Relaxed);
        producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))
    };

    // Warm up until both the worker and the consumer have seen a record.
    let warm_deadline = Instant::now() + Duration::from_secs(90);
    let mut uid = n + 1;
    let mut pending = Vec::new();
    loop {
        let seen = |v: &Arc<Vec<AtomicU64>>| {
            (n as usize + 1..=total as usize).any(|u| v[u].load(Ordering::Relaxed) > 0)
        };
        if seen(effect) && seen(received) {
            break;
        }
        if Instant::now() > warm_deadline {
            stop.store(true, Ordering::Relaxed);
            bail!("latency warm-up: worker or consumer saw nothing in 90 s");
        }
        if uid < total {
            pending.push(send(uid, uid)?);
            uid += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let start = tokio::time::Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    for i in 0..n {
        tokio::time::sleep_until(start + interval * i as u32).await;
        pending.push(send(i + 1, 1_000_000 + i)?);
    }
    let produce_seconds = start.elapsed().as_secs_f64();
    for d in futures::future::join_all(pending).await {
        match d {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("latency producer: {e}"),
            Err(_) => bail!("latency producer: delivery canceled"),
        }
    }
    // Wait for the stragglers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let done =
            |v: &Arc<Vec<AtomicU64>>| (1..=n as usize).all(|u| v[u].load(Ordering::Relaxed) > 0);
        if done(effect) && done(received) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = Some(Rss {
        peak_kb: worker.hwm_kb().unwrap_or(0),
        loaded_kb: worker.rss_kb().unwrap_or(0),
        idle_kb: worker.rss_kb().unwrap_or(0),
    });
    stop.store(true, Ordering::Relaxed);
    worker.stop().await?;
    let _ = consumer_thread.join();
    listener.abort();
    Ok((n as f64 / produce_seconds, rss))
}

// ---------------------------------------------------------------------------------------------
// Decode figures (criterion's JSON)

#[derive(Debug, Clone, Serialize)]
struct DecodeFigure {
    name: String,
    mean_ns: f64,
    per_s: f64,
    bytes: Option<u64>,
    mb_per_s: Option<f64>,
}

fn decode_figures() -> Vec<DecodeFigure> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir().join(".."))
        .join("criterion/decode");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let base = entry.path().join("new");
        let read = |f: &str| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(base.join(f)).ok()?).ok()
        };
        let (Some(b), Some(e)) = (read("benchmark.json"), read("estimates.json")) else {
            continue;
        };
        let mean_ns = e["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
        let bytes = b["throughput"]["Bytes"].as_u64();
        out.push(DecodeFigure {
            name: b["function_id"]
                .as_str()
                .or(b["full_id"].as_str())
                .unwrap_or("?")
                .to_owned(),
            mean_ns,
            per_s: 1e9 / mean_ns,
            bytes,
            mb_per_s: bytes.map(|b| b as f64 / mean_ns * 1e9 / 1e6),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

// ---------------------------------------------------------------------------------------------
// Results, report, plots

#[derive(Debug, Clone, Serialize, Default)]
struct Results {
    date: String,
    commit: String,
    machine: Value,
    options: Value,
    fill: Option<Fill>,
    ceiling: Option<Drain>,
    /// The do-nothing consumer subscribed to every topic of the family, as the worker is.
    ceiling_subscription: Option<Drain>,
    kcat: Option<Drain>,
    /// Every round of the drains above; each of those is its consumer's median round.
    drain_rounds: Vec<DrainRound>,
    redis_del: Option<RedisBench>,
    redis_zadd: Option<RedisBench>,
    cache_invalidation: Option<Drain>,
    timeline_graph: Option<Graph>,
    timeline: Vec<TimelineRun>,
    subject_date: Option<SubjectDateRun>,
    search: Option<search_section::SearchRun>,
    notify: Option<notify_section::NotifyRun>,
    user_events: Option<user_events_section::UserEventsRun>,
    latency: Vec<LatencyRun>,
    scaling_partitions: Vec<ScalingRow>,
    scaling_batch: Vec<BatchRow>,
    prefetch: Vec<PrefetchRow>,
    decode: Vec<DecodeFigure>,
    notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct ScalingRow {
    partitions: i32,
    ceiling: Drain,
    one_process: Drain,
    per_partition_processes: Option<Drain>,
}

#[derive(Debug, Clone, Serialize)]
struct PrefetchRow {
    /// Which partitions have a backlog.
    catch_up: String,
    /// The size of the record batches the backlog was produced in.
    batches: String,
    /// Which prefetch settings.
    settings: String,
    drain: Drain,
}

/// The prefetch the workers had before `PREFETCH_BUDGET`: per partition, and librdkafka's
/// default for a whole fetch response.
const UNBOUNDED_PREFETCH: [(&str, &str); 3] = [
    ("KAFKA_CONFIG__QUEUED_MAX_MESSAGES_KBYTES", "8192"),
    ("KAFKA_CONFIG__MAX_PARTITION_FETCH_BYTES", "4194304"),
    ("KAFKA_CONFIG__FETCH_MAX_BYTES", "52428800"),
];

/// The cache-invalidation family under a fresh prefix, with `per_partition` copies of each
/// topic's real fixture record in each of its partitions (`everywhere`), or in partition 0 of
/// the members topic only, in record batches of `batch_bytes`; returns the prefix and the
/// events produced.
async fn cache_family_backlog(
    per_partition: u64,
    everywhere: bool,
    batch_bytes: u64,
) -> anyhow::Result<(String, u64)> {
    let prefix = format!("{}.", unique("bench-prefetch"));
    let family = provisioned_family(cache_invalidation::FAMILY, &prefix).await?;
    let records = fixtures::load(Encoding::Json)?;
    let mut events = 0;
    for topic in family.all_topics() {
        let table = cdc_schemas::topic_table(topic);
        if !everywhere && table != "chii_members" {
            continue;
        }
        let fixture = records
            .iter()
            .find(|f| {
                cdc_schemas::topic_table(&f.topic) == table
                    && f.record
                        .value
                        .as_deref()
                        .is_some_and(|v| String::from_utf8_lossy(v).contains("\"op\":\"u\""))
            })
            .with_context(|| format!("no update fixture for {topic}"))?;
        let partitions = if everywhere { family.partitions } else { 1 };
        let n = per_partition * partitions as u64;
        fill_in_batches(topic, family.partitions, n, batch_bytes, &|i| Out {
            partition: Some((i % partitions as u64) as i32),
            ..fixture.record.clone()
        })?;
        events += n;
    }
    Ok((prefix, events))
}

#[derive(Debug, Clone, Serialize)]
struct BatchRow {
    batch_max_messages: u64,
    drain: Drain,
    ceiling_per_s: f64,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let free = sh("free", &["-m"]);
    let total_mb = free
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    json!({
        "cpu": field("model name"),
        "cores": cores,
        "mhz": field("cpu MHz"),
        "cache": field("cache size"),
        "memory_mb": total_mb,
        "free_m": free,
        "kernel": sh("uname", &["-r"]),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "rustc": sh("rustc", &["--version"]),
    })
}

fn fmt_rate(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x >= 100_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn markdown(r: &Results, o: &Options, plots: &[(String, String)]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Benchmarks\n");
    let _ = writeln!(
        m,
        "Written by `make bench` (`scripts/bench.sh`, harness `tests/bench.rs`); raw numbers in \
         [`bench/results.json`](bench/results.json). Every figure sits beside its baseline \
         measured **in the same run** on the same machine; these machines are shared and noisy, \
         so compare ratios, not absolute numbers across runs. Nothing here is a pass/fail test.\n"
    );
    let _ = writeln!(m, "- date: {}", r.date);
    let _ = writeln!(m, "- commit: `{}`", r.commit);
    let _ = writeln!(
        m,
        "- machine: {} × {} ({} MHz, cache {}), {} MiB RAM, kernel {}, load before the run {}",
        r.machine["cores"],
        r.machine["cpu"].as_str().unwrap_or("?"),
        r.machine["mhz"].as_str().unwrap_or("?"),
        r.machine["cache"].as_str().unwrap_or("?"),
        r.machine["memory_mb"].as_str().unwrap_or("?"),
        r.machine["kernel"].as_str().unwrap_or("?"),
        r.machine["loadavg"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        m,
        "- broker: local tansu (in-memory storage); Redis and MariaDB: the machine's services; {}",
        r.machine["rustc"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        m,
        "- run: {} events{}; latency {} s at {}/s; scaling {} events per drain; timeline {} events per run; \
         subject-date {} events over {} subjects",
        o.events,
        if o.quick { " (BENCH_QUICK)" } else { "" },
        o.latency_seconds,
        o.latency_rate,
        o.scaling_events,
        o.timeline_events,
        o.subject_date_events,
        o.subject_date_subjects
    );
    let _ = writeln!(
        m,
        "\n<details><summary>free -m</summary>\n\n```\n{}\n```\n</details>\n",
        r.machine["free_m"].as_str().unwrap_or("")
    );

    // Summary
    let _ = writeln!(
        m,
        "## Summary (targets: docs/architecture.md, Performance targets)\n"
    );
    let _ = writeln!(
        m,
        "| what | measured | same-run baseline | ratio | target |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|");
    if let (Some(ci), Some(c)) = (&r.cache_invalidation, &r.ceiling) {
        let _ = writeln!(
            m,
            "| cache-invalidation drain, 1 partition | {} events/s | do-nothing consumer {} msg/s | {} | ≥ 0.7× |",
            fmt_rate(ci.per_s_mid),
            fmt_rate(c.per_s_mid),
            ratio(ci.per_s_mid, c.per_s_mid)
        );
        if let Some(k) = &r.kcat {
            let _ = writeln!(
                m,
                "| | | kcat {} msg/s | {} | ≥ 0.7× kcat |",
                fmt_rate(k.per_s),
                ratio(ci.per_s_mid, k.per_s)
            );
        }
        if let Some(c) = &r.ceiling_subscription {
            let _ = writeln!(
                m,
                "| | | do-nothing consumer on the worker's topics {} msg/s | {} | – |",
                fmt_rate(c.per_s_mid),
                ratio(ci.per_s_mid, c.per_s_mid)
            );
        }
        if let Some(rss) = &ci.rss {
            let _ = writeln!(
                m,
                "| cache-invalidation RSS, draining | {} under load, {} idle after, {} peak | – | – | – |",
                mib(rss.loaded_kb),
                mib(rss.idle_kb),
                mib(rss.peak_kb)
            );
        }
        for l in &r.latency {
            if let Some(rss) = &l.worker_rss {
                let _ = writeln!(
                    m,
                    "| cache-invalidation RSS, steady at {}/s for {} s, fetch.wait.max.ms={} | {} peak (VmHWM, start included), {} at the end | – | – | ≤ 20 MB steady |",
                    l.target_rate,
                    l.seconds,
                    l.fetch_wait_max_ms,
                    mib(rss.peak_kb),
                    mib(rss.loaded_kb)
                );
            }
        }
        let _ = writeln!(
            m,
            "| cache-invalidation first event applied | {:.2} s after start | do-nothing consumer {:.2} s | – | ≤ 2 s |",
            ci.first_event_s, c.first_event_s
        );
    }
    for t in &r.timeline {
        let zadd = r.redis_zadd.as_ref().map_or(f64::NAN, |z| z.per_s);
        let _ = writeln!(
            m,
            "| timeline fan-out, {} | {} events/s, {} Redis commands/s | redis-benchmark ZADD -P 16: {} ops/s | {} of it | ≥ 1.9k events/s |",
            t.label,
            fmt_rate(t.drain.per_s_mid),
            fmt_rate(t.redis_commands_per_s),
            fmt_rate(zadd),
            ratio(t.redis_commands_per_s, zadd)
        );
    }
    if let Some(sd) = &r.subject_date {
        let _ = writeln!(
            m,
            "| subject-date catch-up, 1 partition | {} events/s | legacy loop (SELECT + UPDATE per event) {} events/s | {} | – |",
            fmt_rate(sd.worker.per_s_mid),
            fmt_rate(sd.legacy.per_s_mid),
            ratio(sd.worker.per_s_mid, sd.legacy.per_s_mid)
        );
        if let Some(f) = &sd.update_floor {
            let _ = writeln!(
                m,
                "| | | UPDATE per event alone {} events/s | {} | – |",
                fmt_rate(f.per_s_mid),
                ratio(sd.worker.per_s_mid, f.per_s_mid)
            );
        }
        if let Some(rss) = &sd.worker.rss {
            let _ = writeln!(
                m,
                "| subject-date RSS, draining | {} under load, {} idle after, {} peak | – | – | – |",
                mib(rss.loaded_kb),
                mib(rss.idle_kb),
                mib(rss.peak_kb)
            );
        }
    }
    if let Some(search) = &r.search {
        search_section::summary_rows(&mut m, search);
    }
    if let Some(n) = &r.notify {
        m.push_str(&notify_section::summary_rows(n));
    }
    for l in &r.latency {
        let _ = writeln!(
            m,
            "| latency produce → Redis, {} | p50 {:.1} / p99 {:.1} / max {:.1} ms | do-nothing consumer p50 {:.1} / p99 {:.1} / max {:.1} ms | p99 +{:.1} ms | p99 ≤ baseline p99 + 10 ms |",
            l.label,
            l.worker.p50_ms,
            l.worker.p99_ms,
            l.worker.max_ms,
            l.do_nothing.p50_ms,
            l.do_nothing.p99_ms,
            l.do_nothing.max_ms,
            l.worker.p99_ms - l.do_nothing.p99_ms
        );
    }
    if let Some(d) = r.decode.iter().find(|d| d.name.starts_with("Json ")) {
        let _ = writeln!(
            m,
            "| decode, JSON without schema | {} envelopes/s ({:.0} MB/s) | – | – | ≥ 200k/s per core |",
            fmt_rate(d.per_s),
            d.mb_per_s.unwrap_or(f64::NAN)
        );
    }

    // Ceiling
    let _ = writeln!(m, "\n## 1. Ceiling\n");
    if let Some(f) = &r.fill {
        let _ = writeln!(
            m,
            "Pre-filled `{}` (1 partition) with {} Debezium `chii_members` updates made from the real fixture \
             (varied uids and keys, {:.0} B per record on average) in {:.1} s ({} msg/s, large producer batches); \
             the expected end comes from the producer's delivery reports (tansu's ListOffsets under-reports).\n",
            f.topic,
            f.events,
            f.bytes as f64 / f.events as f64,
            f.seconds,
            fmt_rate(f.per_s)
        );
    }
    let _ = writeln!(
        m,
        "| consumer | events/s (5–95%) | events/s (first→last) | first record after |"
    );
    let _ = writeln!(m, "|---|---|---|---|");
    for d in [
        &r.ceiling,
        &r.ceiling_subscription,
        &r.kcat,
        &r.cache_invalidation,
    ]
    .into_iter()
    .flatten()
    {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {:.2} s |",
            d.label,
            fmt_rate(d.per_s_mid),
            fmt_rate(d.per_s),
            d.first_event_s
        );
    }
    if r.drain_rounds.len() > 1 {
        let _ = writeln!(
            m,
            "\nEach row above is its consumer's median of {} rounds; a round drains the topic with each \
             consumer in turn (events/s, 5–95%):\n",
            r.drain_rounds.len()
        );
        let _ = writeln!(
            m,
            "| round | do-nothing | do-nothing, the worker's topics | kcat | worker | worker ÷ kcat |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|");
        let rate =
            |d: &Option<Drain>| d.as_ref().map_or("–".to_owned(), |d| fmt_rate(d.per_s_mid));
        for (i, d) in r.drain_rounds.iter().enumerate() {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                rate(&d.ceiling),
                rate(&d.ceiling_subscription),
                rate(&d.kcat),
                rate(&d.cache_invalidation),
                match (&d.cache_invalidation, &d.kcat) {
                    (Some(w), Some(k)) => ratio(w.per_s_mid, k.per_s_mid),
                    _ => "–".to_owned(),
                }
            );
        }
    }
    for b in [&r.redis_del, &r.redis_zadd].into_iter().flatten() {
        let _ = writeln!(
            m,
            "\n`redis-benchmark -P {} -c 50 -n {} -r 1000000 {}`: **{} requests/s**",
            b.pipeline,
            b.requests,
            b.command,
            fmt_rate(b.per_s)
        );
    }

    // Cache invalidation
    if let (Some(ci), Some(c)) = (&r.cache_invalidation, &r.ceiling) {
        let _ = writeln!(m, "\n## 2. cache-invalidation (the release binary)\n");
        let _ = writeln!(
            m,
            "Drained the same {} events with the family's defaults (batch 500 / 5 ms, `fetch.wait.max.ms={}`): \
             **{} events/s** (5–95% of the drain; {} first→last), **{}** the do-nothing consumer's {} in the same run. \
             Worker CPU: {:.1} µs per event.\n",
            ci.events,
            o.fetch_wait_default_ms,
            fmt_rate(ci.per_s_mid),
            fmt_rate(ci.per_s),
            ratio(ci.per_s_mid, c.per_s_mid),
            fmt_rate(c.per_s_mid),
            ci.cpu_us_per_event.unwrap_or(f64::NAN)
        );
        if let Some(rss) = &ci.rss {
            let _ = writeln!(
                m,
                "Memory (`/proc/<pid>/status`): VmHWM peak {}, VmRSS median over the second half of the drain {}, \
                 after 2 s idle {}.",
                mib(rss.peak_kb),
                mib(rss.loaded_kb),
                mib(rss.idle_kb)
            );
        }
    }

    // Timeline
    if let Some(g) = &r.timeline_graph {
        let _ = writeln!(m, "\n## 3. timeline fan-out (the release binary)\n");
        let _ = writeln!(
            m,
            "Follower graph in a fresh MariaDB database: {} authors with {:.1} followers on average (50–150, from a pool of {} users) \
             and {} author(s) with {} followers; {} `chii_friends` rows (built in {:.1} s). Every follower inbox and author has a \
             `tml:visit:*` key expiring in a day, so every inbox is written. Redis commands are counted with `INFO commandstats` \
             (calls made inside the Lua scripts included; other tenants of the shared Redis add a little noise).\n",
            g.authors,
            g.average_followers_regular,
            g.follower_pool,
            g.big_authors,
            g.big_followers,
            g.rows,
            g.seconds
        );
        let _ = writeln!(
            m,
            "| run | events | events/s (5–95%) | events/s (first→last) | inbox writes/s | Redis commands/s | commands/event | RSS load / peak | CPU µs/event |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|");
        for t in &r.timeline {
            let rss = t.drain.rss.clone().unwrap_or_default();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {} / {} | {:.0} |",
                t.label,
                t.drain.events,
                fmt_rate(t.drain.per_s_mid),
                fmt_rate(t.drain.per_s),
                fmt_rate(t.inbox_writes_per_s),
                fmt_rate(t.redis_commands_per_s),
                t.redis_commands_per_event,
                mib(rss.loaded_kb),
                mib(rss.peak_kb),
                t.drain.cpu_us_per_event.unwrap_or(f64::NAN)
            );
        }
        for t in &r.timeline {
            let top: Vec<String> = t
                .redis_top_commands
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(m, "\n{}: Redis calls {}", t.label, top.join(", "));
        }
    }

    // subject-date
    if let Some(sd) = &r.subject_date {
        let _ = writeln!(m, "\n## 3b. subject-date catch-up (the release binary)\n");
        let types: Vec<String> = sd
            .subject_types
            .iter()
            .map(|(t, n)| format!("type {t}: {n}"))
            .collect();
        let _ = writeln!(
            m,
            "A fresh MariaDB database with {} generated subjects ({}) whose infoboxes are modelled on the fixtures' real ones \
             ({:.0} B on average: several fields, aliases and platforms as arrays, some dates per edition as arrays, the date \
             written the ways the wiki writes it; {} of them have a date the legacy stores), each with an undated \
             `chii_subject_fields` row (set up in {:.1} s). A 1-partition topic holds {} `chii_subjects` updates made from the \
             real fixture record (`subject_id` substituted, `source.ts_ms` an hour old: a catch-up after an outage; {:.0} B per \
             record), spread uniformly over the subjects ({:.1} distinct subjects per {} consecutive events, the family's \
             `batch.max_messages`). The worker drains it with `SUBJECT_DATE_READ_DELAY=0s` (one `SELECT … IN` and one \
             multi-row `UPDATE` per batch). The baselines, run on the same database after resetting the dates, are \
             bare sqlx loops on one connection over the same events in the same order: the legacy's work per event \
             (`SELECT … WHERE subject_id = ? LIMIT 1`, `bangumi_wiki::parse` + `subject_date::date::extract`, \
             `UPDATE chii_subject_fields … WHERE field_sid = ?` in autocommit), and the `UPDATE`s alone with the dates known \
             beforehand (what MariaDB takes per row write). MariaDB's `innodb_flush_log_at_trx_commit` = {}.\n",
            sd.subjects,
            types.join(", "),
            sd.infobox_bytes,
            sd.dated_subjects,
            sd.setup_seconds,
            sd.events,
            sd.fill.bytes as f64 / sd.events.max(1) as f64,
            sd.distinct_per_batch,
            sd.batch_max_messages,
            sd.innodb_flush_log_at_trx_commit
                .map_or("?".to_owned(), |v| v.to_string())
        );
        let _ = writeln!(
            m,
            "| run | events/s (5–95%) | events/s (first→last) | worker ÷ this | RSS load / idle / peak | CPU µs/event |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|");
        for d in [Some(&sd.worker), Some(&sd.legacy), sd.update_floor.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} |",
                d.label,
                fmt_rate(d.per_s_mid),
                fmt_rate(d.per_s),
                ratio(sd.worker.per_s_mid, d.per_s_mid),
                d.rss.as_ref().map_or("–".into(), |r| format!(
                    "{} / {} / {}",
                    mib(r.loaded_kb),
                    mib(r.idle_kb),
                    mib(r.peak_kb)
                )),
                d.cpu_us_per_event.map_or("–".into(), |c| format!("{c:.1}"))
            );
        }
        let _ = writeln!(
            m,
            "\nEnd state of `chii_subject_fields` (checked after each run against the dates computed in the harness): {}.",
            sd.end_state.join("; ")
        );
    }
    if let Some(search) = &r.search {
        search_section::section(&mut m, search);
    }

    if let Some(n) = &r.notify {
        m.push_str(&notify_section::section(n));
    }

    if let Some(ue) = &r.user_events {
        user_events_section::markdown(&mut m, ue);
    }

    // Latency
    if !r.latency.is_empty() {
        let _ = writeln!(m, "\n## 4. Latency: produce → effect visible in Redis\n");
        let _ = writeln!(
            m,
            "A fresh 1-partition topic, keys pre-set in Redis; the producer (`linger.ms=0`) sends at a fixed rate; the effect time \
             is when Redis publishes the `del` keyevent notification for the key (subscribed in this process, \
             `notify-keyspace-events` set for the run and restored). The baseline is a do-nothing consumer on the same topic with \
             the worker's consumer settings and the same `fetch.wait.max.ms`, running at the same time (produce → `poll` returns).\n"
        );
        let _ = writeln!(
            m,
            "| settings | rate | who | p50 | p90 | p99 | p99.9 | max | missing |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|");
        for l in &r.latency {
            for (who, p) in [
                ("worker → Redis", &l.worker),
                ("do-nothing consumer", &l.do_nothing),
            ] {
                let _ = writeln!(
                    m,
                    "| {} | {:.0}/s × {} s | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
                    l.label,
                    l.achieved_rate,
                    l.seconds,
                    who,
                    p.p50_ms,
                    p.p90_ms,
                    p.p99_ms,
                    p.p999_ms,
                    p.max_ms,
                    p.missing
                );
            }
        }
    }

    // Scaling
    if !r.scaling_partitions.is_empty() {
        let _ = writeln!(
            m,
            "\n## 5. Scaling ({} events per drain)\n",
            o.scaling_events
        );
        let _ = writeln!(
            m,
            "Drain rate (events/s, 5–95%) of topics with 1, 2 and 4 partitions: the do-nothing consumer, one worker process, and one \
             worker process per partition in one consumer group (on a 2-core machine that also runs the broker and Redis).\n"
        );
        let _ = writeln!(
            m,
            "| partitions | do-nothing consumer | 1 process | ratio | 1 process per partition | ratio | CPU µs/event (1 process) |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|");
        for s in &r.scaling_partitions {
            let per = s.per_partition_processes.as_ref();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {:.1} |",
                s.partitions,
                fmt_rate(s.ceiling.per_s_mid),
                fmt_rate(s.one_process.per_s_mid),
                ratio(s.one_process.per_s_mid, s.ceiling.per_s_mid),
                per.map_or("(same)".into(), |d| fmt_rate(d.per_s_mid)),
                per.map_or("".into(), |d| ratio(d.per_s_mid, s.ceiling.per_s_mid)),
                s.one_process.cpu_us_per_event.unwrap_or(f64::NAN)
            );
        }
    }
    if !r.scaling_batch.is_empty() {
        let _ = writeln!(
            m,
            "\nCost vs `BATCH_MAX_MESSAGES` (1 partition, one process):\n"
        );
        let _ = writeln!(
            m,
            "| BATCH_MAX_MESSAGES | events/s (5–95%) | ratio to the do-nothing consumer | worker CPU µs/event | RSS peak |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|");
        for b in &r.scaling_batch {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:.1} | {} |",
                b.batch_max_messages,
                fmt_rate(b.drain.per_s_mid),
                ratio(b.drain.per_s_mid, b.ceiling_per_s),
                b.drain.cpu_us_per_event.unwrap_or(f64::NAN),
                b.drain.rss.as_ref().map_or("–".into(), |r| mib(r.peak_kb))
            );
        }
    }

    if !r.prefetch.is_empty() {
        let _ = writeln!(
            m,
            "\n## Prefetch budget (one cache-invalidation worker catching up from `earliest`)\n"
        );
        let _ = writeln!(
            m,
            "| backlog on | record batches | prefetch | events/s (5–95%) | RSS peak (VmHWM) | RSS under load | CPU µs/event |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|");
        for p in &r.prefetch {
            let rss = p.drain.rss.as_ref();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {:.1} |",
                p.catch_up,
                p.batches,
                p.settings,
                fmt_rate(p.drain.per_s_mid),
                rss.map_or("–".into(), |r| mib(r.peak_kb)),
                rss.map_or("–".into(), |r| mib(r.loaded_kb)),
                p.drain.cpu_us_per_event.unwrap_or(f64::NAN)
            );
        }
    }

    // Decode
    let _ = writeln!(
        m,
        "\n## 6. Decode (criterion, `cargo bench -p cdc-schemas --bench decode`)\n"
    );
    if r.decode.is_empty() {
        let _ = writeln!(m, "No criterion results found (the bench did not run).");
    } else {
        let _ = writeln!(
            m,
            "| benchmark | time per envelope | envelopes/s (one core) | MB/s |"
        );
        let _ = writeln!(m, "|---|---|---|---|");
        for d in &r.decode {
            let _ = writeln!(
                m,
                "| {} | {:.2} µs | {} | {} |",
                d.name,
                d.mean_ns / 1000.0,
                fmt_rate(d.per_s),
                d.mb_per_s.map_or("–".into(), |x| format!("{x:.0}"))
            );
        }
    }

    // Plots
    if !plots.is_empty() {
        let _ = writeln!(m, "\n## Plots\n");
        for (title, file) in plots {
            let _ = writeln!(m, "![{title}]({file})\n");
        }
    }
    if let Ok(profile) = std::fs::read_to_string(o.out.join("profile.md")) {
        let _ = writeln!(m, "\n{}", profile.trim_end());
    }
    if !r.notes.is_empty() {
        let _ = writeln!(m, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(m, "- {n}");
        }
    }
    m
}

/// Writes the plot data and renders PNGs with gnuplot; returns (title, path relative to the
/// repository) of each plot made.
fn plots(r: &Results, o: &Options) -> Vec<(String, String)> {
    let mut made = Vec::new();
    if Command::new("gnuplot").arg("--version").output().is_err() {
        return made;
    }
    let out = &o.out;
    let rel = |f: &str| format!("bench/{f}");
    if !r.scaling_batch.is_empty() {
        let mut data = String::from("# batch events_per_s cpu_us_per_event\n");
        for b in &r.scaling_batch {
            let _ = writeln!(
                data,
                "{} {:.1} {:.3}",
                b.batch_max_messages,
                b.drain.per_s_mid,
                b.drain.cpu_us_per_event.unwrap_or(f64::NAN)
            );
        }
        let ceiling = r.scaling_batch.first().map_or(0.0, |b| b.ceiling_per_s);
        let script = format!(
            "set terminal pngcairo size 900,500 noenhanced\n\
             set output '{png}'\n\
             set title 'cache-invalidation: throughput vs BATCH_MAX_MESSAGES (1 partition)'\n\
             set logscale x\n set xlabel 'BATCH_MAX_MESSAGES'\n set ylabel 'events/s'\n\
             set y2label 'worker CPU µs/event'\n set ytics nomirror\n set y2tics\n set logscale y\n set logscale y2\n\
             set key top left\n set grid\n\
             plot '{dat}' using 1:2 with linespoints lw 2 pt 7 title 'events/s', \
             '{dat}' using 1:3 axes x1y2 with linespoints lw 2 pt 5 title 'CPU µs/event', \
             {ceiling} with lines dt 2 lw 2 title 'do-nothing consumer (same run)'\n",
            png = out.join("throughput-vs-batch.png").display(),
            dat = out.join("throughput-vs-batch.dat").display(),
        );
        if std::fs::write(out.join("throughput-vs-batch.dat"), data).is_ok()
            && run_gnuplot(&out.join("throughput-vs-batch.gp"), &script)
        {
            made.push((
                "throughput vs batch size".to_owned(),
                rel("throughput-vs-batch.png"),
            ));
        }
    }
    if !r.latency.is_empty() {
        let mut data = String::from("# percentile then ms per series\n");
        let mut names = Vec::new();
        for l in &r.latency {
            names.push(format!("worker, {}", l.label));
            names.push(format!("do-nothing, {}", l.label));
        }
        let curves: Vec<&Vec<(f64, f64)>> = r
            .latency
            .iter()
            .flat_map(|l| [&l.worker.curve, &l.do_nothing.curve])
            .collect();
        let len = curves.first().map_or(0, |c| c.len());
        for i in 0..len {
            let q = curves[0][i].0;
            let _ = write!(data, "\"p{q}\"");
            for c in &curves {
                let _ = write!(data, " {:.3}", c.get(i).map_or(f64::NAN, |x| x.1));
            }
            data.push('\n');
        }
        let series: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let dash = if i % 2 == 1 { "dt 2" } else { "dt 1" };
                format!(
                    "'{}' using 0:{}:xtic(1) with linespoints {dash} lw 2 title '{n}'",
                    out.join("latency.dat").display(),
                    i + 2
                )
            })
            .collect();
        let script = format!(
            "set terminal pngcairo size 900,500 noenhanced\n\
             set output '{png}'\n\
             set title 'produce → effect latency percentiles ({rate}/s)'\n\
             set ylabel 'ms'\n set logscale y\n set grid\n set key top left\n\
             plot {series}\n",
            png = out.join("latency.png").display(),
            rate = o.latency_rate,
            series = series.join(", "),
        );
        if std::fs::write(out.join("latency.dat"), data).is_ok()
            && run_gnuplot(&out.join("latency.gp"), &script)
        {
            made.push(("latency percentiles".to_owned(), rel("latency.png")));
        }
    }
    made
}

fn run_gnuplot(path: &Path, script: &str) -> bool {
    if std::fs::write(path, script).is_err() {
        return false;
    }
    match Command::new("gnuplot").arg(path).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            say(format!(
                "gnuplot {}: {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            false
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::from_env()?;
    std::fs::create_dir_all(&o.out)?;
    fleet_harness::require_broker().await?;
    let _ = redis().await?;
    let bench_started = Instant::now();
    let mut r = Results {
        date: sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        commit: {
            let head = sh("git", &["rev-parse", "--short=12", "HEAD"]);
            let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
            if dirty {
                format!("{head} (+ uncommitted changes)")
            } else {
                head
            }
        },
        machine: machine(),
        options: serde_json::to_value(&o)?,
        ..Results::default()
    };
    let updates = Arc::new(MemberUpdates::load()?);

    // 1 + 2: ceiling and cache-invalidation on one pre-filled topic, in interleaved rounds.
    if o.wants("ceiling") || o.wants("cache") {
        let (prefix, filled) = members_topic(&updates, 1, o.events).await?;
        let drains = Drains {
            topic: filled.topic.clone(),
            family_topics: cdc_topics::by_name(cache_invalidation::FAMILY)?
                .context("no cache-invalidation family")?
                .with_topic_prefix(&prefix)
                .all_topics()
                .map(str::to_owned)
                .collect(),
            prefix,
            events: o.events,
            timeout: Duration::from_secs(120 + o.events / 2_000),
        };
        r.fill = Some(filled);
        let perf = std::env::var("BENCH_PERF_OUT").ok();
        for round in 0..o.rounds {
            say(format!("drain round {} of {}", round + 1, o.rounds));
            let perf = perf.as_deref().filter(|_| round == 0);
            r.drain_rounds.push(drains.round(&o, perf).await?);
        }
        let median = |pick: fn(&DrainRound) -> &Option<Drain>| {
            let mut all: Vec<&Drain> = r
                .drain_rounds
                .iter()
                .filter_map(|d| pick(d).as_ref())
                .collect();
            all.sort_by(|a, b| a.per_s_mid.total_cmp(&b.per_s_mid));
            all.get(all.len().saturating_sub(1) / 2)
                .map(|d| (*d).clone())
        };
        r.ceiling = median(|d| &d.ceiling);
        r.ceiling_subscription = median(|d| &d.ceiling_subscription);
        r.kcat = median(|d| &d.kcat);
        r.cache_invalidation = median(|d| &d.cache_invalidation);
        if o.wants("ceiling") {
            if r.kcat.is_none() {
                r.notes
                    .push("kcat was not available or failed; see the run's output".into());
            }
            say("ceiling: redis-benchmark");
            let n = if o.quick { 200_000 } else { 1_000_000 };
            let p = unique("bench-rb");
            r.redis_del = redis_benchmark(n, &["DEL", &format!("{p}:k:__rand_int__")])?;
            r.redis_zadd = redis_benchmark(
                n,
                &["ZADD", &format!("{p}:z:__rand_int__"), "1", "__rand_int__"],
            )?;
            let _ = delete_prefix(&p).await;
            for b in [&r.redis_del, &r.redis_zadd].into_iter().flatten() {
                say(format!("  {}: {:.0}/s", b.command, b.per_s));
            }
        }
    }

    // 3: timeline fan-out.
    if o.wants("timeline") {
        say("timeline: generating the follower graph");
        let g = follower_graph(&o).await?;
        say(format!(
            "  {} chii_friends rows in {:.1} s",
            g.info.rows, g.info.seconds
        ));
        let key_prefix = format!("{}:", unique("bench-tml"));
        seed_visits(&key_prefix, &g, o.timeline_pool).await?;
        r.timeline_graph = Some(g.info.clone());
        let regular = timeline_run(
            &format!(
                "≈{:.0} followers per author",
                g.info.average_followers_regular
            ),
            &g,
            &key_prefix,
            10_000_000,
            o.timeline_events,
            None,
        )
        .await;
        let mixed = match &regular {
            Ok(_) => {
                timeline_run(
                    &format!(
                        "with 1 in 500 events by a {}-follower author",
                        g.info.big_followers
                    ),
                    &g,
                    &key_prefix,
                    20_000_000,
                    o.timeline_events / 2,
                    Some(500),
                )
                .await
            }
            Err(_) => Err(anyhow::anyhow!("skipped")),
        };
        let deleted = delete_prefix(&key_prefix).await.unwrap_or(0);
        say(format!("  cleaned up {deleted} Redis keys"));
        let name = g.db.name.clone();
        if let Err(e) = g.db.drop_now().await {
            say(format!("  dropping database {name}: {e}"));
        }
        r.timeline.push(regular?);
        match mixed {
            Ok(m) => r.timeline.push(m),
            Err(e) => r.notes.push(format!("timeline with big authors: {e:#}")),
        }
    }

    // 3b: subject-date catch-up.
    if o.wants("subject-date") {
        r.subject_date = Some(subject_date_bench(&o).await?);
    }

    // 3c: search catch-up and reindex.
    if o.wants("search") {
        r.search = Some(search_section::search_bench(&o).await?);
    }

    // 3d: notify catch-up.
    if o.wants("notify") {
        r.notify = Some(notify_section::run(o.notify_events, o.notify_recipients).await?);
    }

    // 3e: user-events catch-up.
    if o.wants("user-events") {
        r.user_events = Some(user_events_section::user_events_bench(&o).await?);
    }

    // 4: latency.
    if o.wants("latency") {
        // The default, then the earlier default for comparison.
        let mut waits = vec![o.fetch_wait_default_ms];
        if o.fetch_wait_default_ms != 100 {
            waits.push(100);
        }
        for fetch_wait in waits {
            r.latency
                .push(latency_run(&updates, fetch_wait, o.latency_seconds, o.latency_rate).await?);
        }
    }

    // 5: scaling.
    if o.wants("scaling") {
        let n = o.scaling_events;
        let budget = Some(Duration::from_secs(if o.quick { 4 } else { 25 }));
        for partitions in [1, 2, 4] {
            say(format!("scaling: {partitions} partition(s)"));
            let (prefix, filled) = members_topic(&updates, partitions, n).await?;
            let t = filled.topic.clone();
            let timeout = Duration::from_secs(120 + n / 2_000);
            let ceiling = tokio::task::spawn_blocking(move || {
                do_nothing_drain("do-nothing consumer", &[&t], n, &[], timeout)
            })
            .await??;
            say(format!(
                "  do-nothing consumer: {:.0} msg/s (5–95%)",
                ceiling.per_s_mid
            ));
            let one = cache_drain(
                &format!("{partitions} partition(s), 1 process"),
                &prefix,
                n,
                1,
                &[],
                None,
                budget,
            )
            .await?;
            // BENCH_QUICK: one process per partition only at 2 partitions.
            let per = if partitions > 1 && !(o.quick && partitions == 4) {
                Some(
                    cache_drain(
                        &format!("{partitions} partitions, {partitions} processes"),
                        &prefix,
                        n,
                        partitions as usize,
                        &[],
                        None,
                        budget,
                    )
                    .await?,
                )
            } else {
                None
            };
            if partitions == 1 {
                for batch in [1u64, 10, 100, 500] {
                    let d = cache_drain(
                        &format!("BATCH_MAX_MESSAGES={batch}"),
                        &prefix,
                        n,
                        1,
                        &[("BATCH_MAX_MESSAGES", batch.to_string())],
                        None,
                        budget,
                    )
                    .await?;
                    r.scaling_batch.push(BatchRow {
                        batch_max_messages: batch,
                        drain: d,
                        ceiling_per_s: ceiling.per_s_mid,
                    });
                }
            }
            r.scaling_partitions.push(ScalingRow {
                partitions,
                ceiling,
                one_process: one,
                per_partition_processes: per,
            });
        }
    }

    // 6: prefetch budget.
    if o.wants("prefetch") {
        // Backlogs past what the unbounded prefetch holds per partition (12 MiB), so that the
        // baseline shows what the budget prevents. tansu serves a partition of many small
        // batches slowly (about one batch per partition per fetch), so the single busy
        // partition is filled in 1 MB batches only.
        let per_partition = if o.quick { 2_000 } else { 30_000 };
        for (catch_up, everywhere, n, batch_bytes) in [
            (
                "all 42 partitions",
                true,
                per_partition,
                DEBEZIUM_BATCH_BYTES,
            ),
            ("all 42 partitions", true, per_partition, FILL_BATCH_BYTES),
            (
                "1 partition of 42",
                false,
                per_partition * 14,
                FILL_BATCH_BYTES,
            ),
        ] {
            let batches = if batch_bytes == DEBEZIUM_BATCH_BYTES {
                "16 KiB (Debezium's)"
            } else {
                "1 MB"
            };
            say(format!(
                "prefetch: catching up on {catch_up}, {batches} batches"
            ));
            let (prefix, events) = cache_family_backlog(n, everywhere, batch_bytes).await?;
            let label = format!("{catch_up}, {batches} batches");
            for (settings, env) in [
                ("PREFETCH_BUDGET default (32 MiB)", vec![]),
                (
                    "before: 8 MiB queue + 4 MiB fetch per partition",
                    UNBOUNDED_PREFETCH
                        .iter()
                        .map(|(k, v)| (*k, v.to_string()))
                        .collect(),
                ),
            ] {
                let drain = cache_drain(
                    &format!("{label}, {settings}"),
                    &prefix,
                    events,
                    1,
                    &env,
                    None,
                    None,
                )
                .await?;
                r.prefetch.push(PrefetchRow {
                    catch_up: catch_up.into(),
                    batches: batches.into(),
                    settings: settings.into(),
                    drain,
                });
            }
        }
    }

    // 7: decode.
    r.decode = decode_figures();
    for d in &r.decode {
        say(format!(
            "decode {}: {:.2} µs → {:.0}/s",
            d.name,
            d.mean_ns / 1000.0,
            d.per_s
        ));
    }

    r.notes.push(format!(
        "harness wall time {:.0} s",
        bench_started.elapsed().as_secs_f64()
    ));
    std::fs::write(
        o.out.join("results.json"),
        serde_json::to_string_pretty(&r)? + "\n",
    )?;
    let made = plots(&r, &o);
    std::fs::write(&o.markdown, markdown(&r, &o, &made))?;
    say(format!(
        "wrote {}, {} and {} plot(s) in {:.0} s",
        o.markdown.display(),
        o.out.join("results.json").display(),
        made.len(),
        bench_started.elapsed().as_secs_f64()
    ));
    Ok(())
}
