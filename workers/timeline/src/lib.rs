//! The timeline family: Bangumi's timeline side effects, with server-private's behaviour
//! (bangumi-behaviour §2, §3.1, §6) and the ordering safety it lacks.
//!
//! - `debezium.chii.bangumi.chii_timeline` → [`fanout`]: the item into the global inbox, the
//!   author's timeline and the followers' inboxes (visit-key rules), `PUBLISH
//!   events:tml:create`; deletes and updates undo/invalidate. Fenced per item by
//!   `SourcePosition`, so replays never resurrect a deleted item.
//! - `timeline` (service topic) → [`writer`]: messages become `chii_timeline` rows, merged in
//!   10-minute windows, exactly once in effect (Kafka offsets stored in the same transaction).
//!
//! Both have a shadow mode (`RUN_MODE=shadow`, effects planned, none applied; see
//! [`Timeline::open`] and each module's "Shadow mode").
//!
//! The periodic cache trims are the `scheduler`'s (`workers/scheduler`).
//!
//! Not here: consumption, retries, dead letters (the runtime's).
//!
//! # Layout
//! - [`Timeline`]: the [`Handler`]; routes a batch to the fan-out or the writer.
//! - [`Settings`]: this family's own settings.
//! - [`keys`]: Redis key formats.

pub mod fanout;
pub mod keys;
pub mod writer;

use std::time::Duration;

use cdc_runtime::cli::FamilySettings;
use cdc_runtime::config::redact_uri;
use cdc_runtime::shadow::{Effects, compare::Compared};
use cdc_runtime::{Dependency, Event, Handler, HandlerError, Outcome, Record, WorkerConfig, sink};

use crate::fanout::{Dependencies, Fanout};
use crate::writer::Writer;

/// The family's name in `topics/`.
pub const FAMILY: &str = "timeline";

/// Most follower inboxes per fan-out script call: Lua's `unpack` of the call's visit keys into
/// one `MGET` must stay well inside its stack limit (8000).
const MAX_INBOXES_PER_CALL: usize = 4000;

/// Settings of this family, beside the runtime's [`WorkerConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// How long idempotency state lives: a timeline item's fence (`tml:fence:{id}`) and an
    /// applied writer message's identity (`cdc_applied_messages`). Keep it ≥ the retention of
    /// the family's topics, or a replay older than it could resurrect items or write twice.
    #[arg(long, env = "TIMELINE_FENCE_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub fence_ttl: Duration,

    /// Follower inboxes per fan-out script call (bounds a call's size for big authors), 1–4000.
    #[arg(long, env = "TIMELINE_INBOXES_PER_CALL", default_value_t = 1000)]
    pub inboxes_per_call: usize,

    /// The Redis holding the fan-out's fences (`tml:fence:{id}`), when it is not `REDIS_URI`:
    /// one with `noeviction` and persistence (AOF), so the cache Redis may evict freely. Unset
    /// or equal to `REDIS_URI`: fences in the cache Redis, claimed in the same script as the
    /// effects (see the `fanout` module).
    #[arg(long, env = "STATE_REDIS_URI")]
    pub state_redis_uri: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            fence_ttl: Duration::from_secs(30 * 86_400),
            inboxes_per_call: 1000,
            state_redis_uri: None,
        }
    }
}

impl FamilySettings for Settings {
    fn validate(&self) -> Result<(), cdc_runtime::config::ConfigError> {
        let invalid = |name: &str, reason: &str| cdc_runtime::config::ConfigError::Invalid {
            name: name.into(),
            reason: reason.into(),
        };
        if self.fence_ttl < Duration::from_secs(60) {
            return Err(invalid(
                "TIMELINE_FENCE_TTL",
                "must be at least 1m (use the topic retention)",
            ));
        }
        if !(1..=MAX_INBOXES_PER_CALL).contains(&self.inboxes_per_call) {
            return Err(invalid(
                "TIMELINE_INBOXES_PER_CALL",
                "must be between 1 and 4000 (a script call passes its visit keys to one MGET)",
            ));
        }
        if let Some(uri) = &self.state_redis_uri
            && let Err(e) = redis::Client::open(uri.as_str())
        {
            return Err(invalid(
                "STATE_REDIS_URI",
                &format!("{}: {e}", redact_uri(uri)),
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let state = match self
            .state_redis_uri
            .as_deref()
            .filter(|uri| !uri.is_empty())
        {
            Some(uri) => redact_uri(uri),
            None => "REDIS_URI (fences beside the cache)".to_owned(),
        };
        format!(
            "timeline.fence_ttl = {}\ntimeline.inboxes_per_call = {}\ntimeline.state_redis_uri = {state}",
            humantime::format_duration(self.fence_ttl),
            self.inboxes_per_call,
        )
    }
}

impl Settings {
    /// `STATE_REDIS_URI` if it names another Redis than `redis_uri` (`REDIS_URI`).
    pub fn separate_state_redis(&self, redis_uri: &str) -> Option<&str> {
        self.state_redis_uri
            .as_deref()
            .filter(|uri| !uri.is_empty() && *uri != redis_uri)
    }
}

/// The family's handler.
pub struct Timeline {
    fanout: Fanout,
    writer: Writer,
}

impl Timeline {
    /// Connects (lazily: Redis and MySQL may be down at start) with `config` and `settings`;
    /// `group` is recorded with the writer's offsets. Live effects: refuses a `config` in shadow
    /// mode (use [`Timeline::open`]).
    pub fn connect(
        config: &WorkerConfig,
        settings: &Settings,
        group: &str,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.is_shadow(),
            "RUN_MODE=shadow: the timeline's shadow effects need Timeline::open"
        );
        Self::build(config, settings, group)
    }

    fn build(config: &WorkerConfig, settings: &Settings, group: &str) -> anyhow::Result<Self> {
        let redis = sink::redis(&config.redis_uri)?;
        let state = match settings.separate_state_redis(&config.redis_uri) {
            Some(uri) => Some(
                sink::redis(uri)
                    .map_err(|e| anyhow::anyhow!("STATE_REDIS_URI {}: {e:#}", redact_uri(uri)))?,
            ),
            None => None,
        };
        let mysql = cdc_runtime::mysql::pool(config);
        let service_topics = cdc_topics::by_name(FAMILY)?
            .map(|f| {
                f.with_topic_prefix(&config.kafka_topic_prefix)
                    .service_topics
            })
            .unwrap_or_default();
        let at = Dependencies {
            redis: Dependency::redis(&config.redis_uri),
            state: settings
                .separate_state_redis(&config.redis_uri)
                .map(Dependency::redis),
            mysql: Dependency::mysql(&config.mysql_host, config.mysql_port),
        };
        Ok(Self {
            fanout: Fanout::new(
                redis,
                state,
                mysql.clone(),
                at,
                config.redis_key_prefix.clone(),
                settings.fence_ttl.as_secs(),
                settings.inboxes_per_call,
            ),
            writer: Writer::new(mysql, group, service_topics, settings.fence_ttl),
        })
    }

    /// [`Timeline::connect`], with the effects of `config`'s `RUN_MODE`: live, or shadow (the
    /// fan-out's Redis commands and the writer's rows planned, none applied; the fan-out's
    /// compared with the legacy worker's under `SHADOW_COMPARE=on`).
    pub async fn open(
        config: &WorkerConfig,
        settings: &Settings,
        group: &str,
    ) -> anyhow::Result<Self> {
        let Self { fanout, writer } = Self::build(config, settings, group)?;
        let effects = Effects::open(
            config,
            FAMILY,
            Compared {
                key_formats: keys::COMPARED,
                channels: &[keys::CREATE_CHANNEL],
            },
        )
        .await?;
        Ok(Self {
            fanout: fanout.with_effects(effects.clone()),
            writer: writer.with_effects(effects),
        })
    }
}

impl Handler for Timeline {
    const SHADOW: bool = true;

    async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        // A batch is one topic-partition: all service records or all Debezium changes.
        match batch.first().map(|r| &r.event) {
            // The writer's one dependency is MySQL.
            Some(Event::Service { .. }) => self
                .writer
                .apply(batch)
                .await
                .map_err(|e| e.at(&self.fanout.at.mysql)),
            Some(Event::Change(_)) => self.fanout.apply(batch).await,
            None => Ok(Vec::new()),
        }
    }
}
