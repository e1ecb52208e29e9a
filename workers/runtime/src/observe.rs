//! Observability: metric names, the Prometheus recorder, the `/metrics` + `/healthz` + `/readyz`
//! server, worker health, and JSON logging.
//!
//! Every metric the runtime emits is named here, with its labels, so dashboards and alerts have
//! one place to look. Labels are bounded: family, topic, partition, outcome, stage, error class.
//!
//! # Layout
//! - [`metric`]: metric names.
//! - [`Health`]: liveness and readiness, shared by the engine and the HTTP server.
//! - [`install_recorder`], [`serve`]: the exporter and the HTTP server.
//! - [`init_tracing`]: JSON (or text) logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::PartitionKey;
use crate::error::RuntimeError;

/// Metric names (Prometheus conventions; labels in the doc of each).
pub mod metric {
    /// Counter `{family, topic, outcome}`; outcome ∈ applied, stale, skipped, dead_lettered.
    pub const MESSAGES: &str = "cdc_messages_total";
    /// Counter `{family, topic, reason}`: skipped records by reason (tombstone, snapshot, …).
    pub const SKIPPED: &str = "cdc_skipped_total";
    /// Histogram `{family}`: records per applied batch.
    pub const BATCH_SIZE: &str = "cdc_batch_size";
    /// Histogram `{family}`: seconds from a batch's first record to its offsets stored.
    pub const BATCH_SECONDS: &str = "cdc_batch_duration_seconds";
    /// Histogram `{family}`: seconds spent in one `Handler::apply` call.
    pub const APPLY_SECONDS: &str = "cdc_apply_duration_seconds";
    /// Histogram `{family, topic}`: seconds from the source change (`source.ts_ms`) to applied,
    /// of each batch's newest applied change (once per batch: the clock read is not free).
    pub const EVENT_AGE_SECONDS: &str = "cdc_event_age_seconds";
    /// Gauge `{family, topic, partition}`: consumer lag from librdkafka statistics, of the
    /// partitions the worker owns ([`super::PartitionGauge`]: removed with the partition).
    pub const CONSUMER_LAG: &str = "cdc_consumer_lag";
    /// Counter `{family, stage}`: transient failures retried.
    pub const RETRIES: &str = "cdc_retries_total";
    /// Counter `{family, stage, error_class}`: failures of any kind.
    pub const ERRORS: &str = "cdc_errors_total";
    /// Gauge `{family}`: partitions waiting on a transient failure.
    pub const PAUSED_PARTITIONS: &str = "cdc_paused_partitions";
    /// Gauge `{family}`: partitions with a running task.
    pub const ACTIVE_PARTITIONS: &str = "cdc_active_partitions";
    /// Counter `{family, kind}`: rebalances by kind (assign, revoke, error).
    pub const REBALANCES: &str = "cdc_rebalances_total";
    /// Counter `{family, result}`: offset commits (ok, error).
    pub const COMMITS: &str = "cdc_commits_total";
    /// Gauge `{family, partition}`: dead letters of the family's DLQ partition not yet handled
    /// by its replay group (what `dlq ls` counts), every `DLQ_METRICS_INTERVAL`.
    pub const DLQ_PENDING: &str = "cdc_dlq_pending";
    /// Gauge `{family, partition}`: seconds since the first pending dead letter of the DLQ
    /// partition was produced (0: none pending), every `DLQ_METRICS_INTERVAL`.
    pub const DLQ_OLDEST_PENDING_AGE_SECONDS: &str = "cdc_dlq_oldest_pending_age_seconds";
    /// Counter `{family, kind}`: effects a shadow worker planned and did not apply, by kind
    /// (`del`, `zadd`, `publish`, `insert`, `dead_letter`…).
    pub const SHADOW_PLANNED: &str = "cdc_shadow_planned_effects_total";
    /// Counter `{family, table, pattern, side}`: effects compared with the legacy worker's;
    /// side ∈ both, legacy_only, fleet_only, unobservable (a planned `DEL` of an absent key).
    pub const SHADOW_EFFECTS: &str = "cdc_shadow_effects_total";
    /// Gauge `{family, side}`: effects waiting for the other side's within the window; side ∈
    /// fleet, legacy.
    pub const SHADOW_PENDING: &str = "cdc_shadow_compare_pending";
}

/// Liveness and readiness of one worker.
///
/// Live while the poll thread runs. Ready while live, the broker answers, every topic of the
/// family exists, the group has assigned the worker its partitions (none is a valid share once
/// the group is joined), and no partition waits on a transient failure. Each cause of not being
/// ready carries a reason for `/readyz`, so the on-call reads what to fix rather than a bare 503.
#[derive(Debug, Default)]
pub struct Health {
    polling: AtomicBool,
    broker_down: AtomicBool,
    joined: AtomicBool,
    missing_topics: Mutex<Vec<String>>,
    /// Why each waiting retry waits, by [`PauseId`]: a partition may wait twice at once (its
    /// next batch's decoding beside the batch being applied).
    pauses: Mutex<BTreeMap<u64, String>>,
    next_pause: AtomicU64,
    /// Messages dispatched so far (for tests and the demo summary).
    pub dispatched: AtomicI64,
    /// Consumer lag of each partition the worker owns (`cdc_consumer_lag`).
    pub partition_lag: PartitionGauge,
}

/// One retry waiting on a transient failure, from [`Health::pause`] to [`Health::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseId(u64);

/// A per-partition gauge whose series leave `/metrics` with their partition: the `metrics`
/// facade cannot remove a series, so a revoked partition's lag would stay behind, frozen at its
/// last value. Rendered by [`serve`] after the recorder's metrics, with the worker's family.
#[derive(Debug, Default)]
pub struct PartitionGauge {
    values: Mutex<BTreeMap<PartitionKey, i64>>,
}

impl PartitionGauge {
    fn values(&self) -> MutexGuard<'_, BTreeMap<PartitionKey, i64>> {
        lock(&self.values)
    }

    /// Sets the value of a partition.
    pub fn set(&self, partition: PartitionKey, value: i64) {
        self.values().insert(partition, value);
    }

    /// Removes a partition's series.
    pub fn remove(&self, partition: &PartitionKey) {
        self.values().remove(partition);
    }

    /// The partitions with a value.
    pub fn partitions(&self) -> Vec<PartitionKey> {
        self.values().keys().cloned().collect()
    }

    /// Appends the series in Prometheus text format as `name`, labelled with `family`.
    fn render(&self, name: &str, family: &str, out: &mut String) {
        use std::fmt::Write;
        let values = self.values();
        if values.is_empty() {
            return;
        }
        let _ = writeln!(out, "# TYPE {name} gauge");
        for ((topic, partition), value) in values.iter() {
            let _ = writeln!(
                out,
                "{name}{{family=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {value}",
                label(family),
                label(topic)
            );
        }
    }
}

/// A Prometheus label value, escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Health {
    /// Marks the poll thread running or stopped.
    pub fn set_polling(&self, polling: bool) {
        self.polling.store(polling, Ordering::SeqCst);
    }

    /// Marks all brokers down (librdkafka `_ALL_BROKERS_DOWN`) or back.
    pub fn set_broker_down(&self, down: bool) {
        self.broker_down.store(down, Ordering::SeqCst);
    }

    /// The group has given the worker its share of the partitions (possibly none).
    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::SeqCst);
    }

    /// The family's topics the brokers do not know, as of the last look.
    pub fn set_missing_topics(&self, topics: Vec<String>) {
        *lock(&self.missing_topics) = topics;
    }

    /// A partition starts waiting on a transient failure, for `reason`.
    pub fn pause(&self, reason: String) -> PauseId {
        let id = PauseId(self.next_pause.fetch_add(1, Ordering::SeqCst));
        lock(&self.pauses).insert(id.0, reason);
        id
    }

    /// A waiting partition's latest reason (the failure may change while it waits).
    pub fn update_pause(&self, id: PauseId, reason: String) {
        if let Some(old) = lock(&self.pauses).get_mut(&id.0) {
            *old = reason;
        }
    }

    /// A partition's transient failure is over.
    pub fn resume(&self, id: PauseId) {
        lock(&self.pauses).remove(&id.0);
    }

    /// Retries currently waiting on a transient failure.
    pub fn paused(&self) -> usize {
        lock(&self.pauses).len()
    }

    /// The poll thread runs.
    pub fn is_live(&self) -> bool {
        self.polling.load(Ordering::SeqCst)
    }

    /// Why the worker is not ready, one reason a line; empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        if !self.is_live() {
            return vec!["the poll loop is not running".into()];
        }
        let mut reasons = Vec::new();
        if self.broker_down.load(Ordering::SeqCst) {
            reasons.push("no broker reachable (librdkafka: all brokers down)".into());
        }
        let missing = lock(&self.missing_topics);
        reasons.extend(missing.iter().map(|t| format!("topic {t} does not exist")));
        if !self.joined.load(Ordering::SeqCst) {
            reasons.push("no partitions assigned yet (joining the consumer group)".into());
        }
        reasons.extend(lock(&self.pauses).values().cloned());
        reasons
    }

    /// Live, broker reachable, topics there, group joined, nothing paused.
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_empty()
    }
}

/// `mutex`'s guard, poisoned or not: the values behind it stay consistent whatever panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ];
            let sizes = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(metric::BATCH_SIZE.into()), &sizes)
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                // Another recorder is installed (embedding program): render an empty registry.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
    family: Arc<str>,
}

impl HttpState {
    fn render(&self) -> String {
        let mut out = self.metrics.render();
        self.health
            .partition_lag
            .render(metric::CONSUMER_LAG, &self.family, &mut out);
        out
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz`, `/readyz` of `family`'s worker until
/// `shutdown`. Returns the bound address (useful with port 0).
pub async fn serve(
    family: &str,
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, RuntimeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Http { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| RuntimeError::Http { addr, source })?;
    let metrics = install_recorder();
    // Histogram samples wait in buckets until upkeep folds them in; without a scraper they
    // would pile up for the life of the process.
    let upkeep = metrics.clone();
    let upkeep_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        while tokio::select! {
            () = upkeep_stop.cancelled() => false,
            _ = every.tick() => true,
        } {
            upkeep.run_upkeep();
        }
    });
    let state = HttpState {
        metrics,
        health,
        family: family.into(),
    };
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { s.render() }),
        )
        .route(
            "/healthz",
            get(|State(s): State<HttpState>| async move { liveness(s.health.is_live()) }),
        )
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move { readiness(&s.health.not_ready()) }),
        )
        .with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(bound)
}

fn liveness(live: bool) -> (StatusCode, &'static str) {
    if live {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not running\n")
    }
}

/// `/readyz`: 200 `ok`, or 503 with every reason the worker is not ready, one a line.
fn readiness(reasons: &[String]) -> (StatusCode, String) {
    if reasons.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        let lines: String = reasons
            .iter()
            .map(|r| format!("not ready: {r}\n"))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, lines)
    }
}

/// Initialises logging: JSON lines (or text) on stderr, level from `RUST_LOG` (default `info`).
/// Text is coloured only on a terminal: a file or a pipe (`kubectl logs`, a log shipper) gets
/// no escape codes. Safe to call more than once; later calls do nothing.
pub fn init_tracing(format: &str) {
    init_tracing_with(format, &log_filter(WORKER_LOG_FILTER));
}

/// What workers log when `RUST_LOG` does not say.
pub const WORKER_LOG_FILTER: &str = "info,rdkafka=warn";

/// `RUST_LOG` if set, else `default`.
pub fn log_filter(default: &str) -> String {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// [`init_tracing`] with the `tracing_subscriber` filter `filter`.
pub fn init_tracing_with(format: &str, filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(WORKER_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
