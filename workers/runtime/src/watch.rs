//! What a worker watches on the brokers beside consuming: whether the family's topics exist
//! (readiness: a worker subscribed to topics that do not exist consumes nothing) and how many
//! dead letters its DLQ holds pending, and since when (metrics, for alerts).
//!
//! One background task with a client of its own (of the replay group, whose offsets say what
//! is pending; it never joins it), its broker round trips on tokio's blocking pool: a slow
//! answer holds neither the poll thread nor a partition.
//!
//! # Layout
//! - [`spawn`]: starts the task.
//! - `missing_topics`: the readiness look.
//! - `export_dlq_depth`: the DLQ metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_topics::Family;
use metrics::gauge;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::backlog;
use crate::config::WorkerConfig;
use crate::error::RuntimeError;
use crate::observe::{Health, metric};

/// How often the family's topics are looked for: a topic created after the worker started
/// makes it ready within this.
const TOPICS_INTERVAL: Duration = Duration::from_secs(5);

/// How long a metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts watching `family` (topic-prefixed) for `health` and the DLQ metrics, every
/// `DLQ_METRICS_INTERVAL` for the latter, until `shutdown`.
pub fn spawn(
    family: &Family,
    config: &WorkerConfig,
    client_id: &str,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let client: BaseConsumer = backlog::replay_group_config(config, family, client_id)
        // One letter at a time is all it reads: keep its prefetch small.
        .set("queued.max.messages.kbytes", "64")
        .set("max.partition.fetch.bytes", "65536")
        .create()
        .map_err(|source| RuntimeError::KafkaClient {
            client: "DLQ metrics consumer",
            source,
        })?;
    let watcher = Arc::new(Watcher {
        client,
        family: family.clone(),
        health,
    });
    let dlq_interval = config.dlq_metrics_interval;
    tokio::spawn(async move {
        let mut topics = tokio::time::interval(TOPICS_INTERVAL);
        let mut dlq = tokio::time::interval(dlq_interval);
        // A look that took long is not made up for with a burst of them.
        topics.set_missed_tick_behavior(MissedTickBehavior::Delay);
        dlq.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let look: fn(&Watcher) = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = topics.tick() => Watcher::missing_topics,
                _ = dlq.tick() => Watcher::export_dlq_depth,
            };
            let watcher = watcher.clone();
            let _ = tokio::task::spawn_blocking(move || look(&watcher)).await;
        }
    });
    Ok(())
}

struct Watcher {
    client: BaseConsumer,
    family: Family,
    health: Arc<Health>,
}

impl Watcher {
    /// Tells `health` which of the family's topics the brokers do not know. Unchanged if no
    /// broker answers (readiness says so already).
    fn missing_topics(&self) {
        let metadata = match self.client.fetch_metadata(None, METADATA_TIMEOUT) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::debug!(family = %self.family.family, %error, "looking for the family's topics");
                return;
            }
        };
        let missing =
            self.family
                .all_topics()
                .filter(|name| {
                    !metadata.topics().iter().any(|t| {
                        t.name() == *name && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
                .map(str::to_owned)
                .collect();
        self.health.set_missing_topics(missing);
    }

    /// Sets `cdc_dlq_pending` and `cdc_dlq_oldest_pending_age_seconds` of each DLQ partition
    /// (age 0 when nothing is pending). A failure leaves the last values and is logged.
    fn export_dlq_depth(&self) {
        if let Err(error) = self.dlq_depth() {
            tracing::warn!(family = %self.family.family, dlq = %self.family.dlq, %error, "measuring the DLQ's pending letters");
        }
    }

    fn dlq_depth(&self) -> rdkafka::error::KafkaResult<()> {
        let topic = &self.family.dlq;
        let partitions = backlog::partitions(&self.client, topic, METADATA_TIMEOUT)?;
        let handled = backlog::handled(&self.client, &self.family.dlq_handled_topic())?;
        let backlogs: BTreeMap<i32, (backlog::Backlog, i64)> =
            backlog::pending(&self.client, topic, &partitions)?
                .into_iter()
                .map(|(p, range)| (p, (backlog::Backlog::of(range, handled.get(&p)), range.1)))
                .collect();
        let firsts: backlog::Ranges = backlogs
            .iter()
            .map(|(&p, &(b, end))| (p, (b.first, end)))
            .collect();
        let first = backlog::first_timestamps(&self.client, topic, &firsts)?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (partition, (backlog, _)) in backlogs {
            let labels = [
                ("family", self.family.family.clone()),
                ("partition", partition.to_string()),
            ];
            gauge!(metric::DLQ_PENDING, &labels).set(backlog.count as f64);
            let age_ms = first.get(&partition).map_or(0, |&ms| (now_ms - ms).max(0));
            gauge!(metric::DLQ_OLDEST_PENDING_AGE_SECONDS, &labels).set(age_ms as f64 / 1000.0);
        }
        Ok(())
    }
}
