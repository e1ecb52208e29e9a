//! The user-events family: what bangumi/server's Go canal (`canal/on_user.go`, bangumi-behaviour §4.3)
//! does when a `chii_members` row is updated, with the runtime's retries, dead letters and
//! metrics around it. Only op `u` has effects; `before` and `after` are compared:
//!
//! - `password_crypt` changed → the user's web sessions are revoked ([`sessions`]): expired in
//!   `chii_os_web_sessions`, their `chii:web:session:{key}` deleted from Redis. Bounded by the
//!   change's time: sessions created after it (a later login) are never revoked.
//! - `new_notify` changed → `PUBLISH event-user-notify-{uid} {"user_id":…,"new_notify":…}`
//!   ([`change::notify_payload`], byte for byte the Go worker's).
//! - `avatar` changed and S3 configured (`S3_ENDPOINT`) → the resized copies of the old and
//!   the new avatar are deleted from `S3_IMAGE_RESIZE_BUCKET` ([`purge`]).
//!
//! Where the Go worker logs and drops a failure (or runs the purge fire-and-forget), every effect
//! here is part of the record: a transient failure of MariaDB, Redis or S3 pauses the partition
//! and retries the batch; S3 refusing access (403) dead-letters the record, naming bucket and
//! prefix. Effects are applied record by record, in order: revoke, purge, publish.
//!
//! Redelivered or replayed, a record leaves the same state: the revocation only expires sessions
//! still valid and created before the change, the purge of a purged prefix finds nothing. The
//! publish is sent again (a count the subscriber sets, not adds).
//!
//! # Layout
//! - [`change`]: record → effects (pure).
//! - [`sessions`]: the revocation.
//! - [`purge`]: the S3 purge.
//! - [`Settings`]: S3 settings.
//! - [`UserEvents`]: the [`Handler`]; in shadow mode each record's effects are planned (the
//!   sessions' `update`, their `del`s, `delete_objects` per purged prefix, the `publish`) and none
//!   applied.

pub mod change;
pub mod purge;
pub mod sessions;

use std::time::Duration;

use cdc_runtime::cli::FamilySettings;
use cdc_runtime::config::ConfigError;
use cdc_runtime::shadow::{Effect, Effects, compare::Compared, redis_effects};
use cdc_runtime::sink::{self, redis_error};
use cdc_runtime::{Dependency, Event, Handler, HandlerError, Outcome, Record, WorkerConfig};
use cdc_schemas::{ChangeEvent, Columns};
use redis::aio::ConnectionManager;

use crate::change::{MemberChange, decide, notify_channel, notify_payload};
use crate::purge::{PurgeError, Purger, S3Target};
use crate::sessions::Sessions;

/// The family's name in `topics/`.
pub const FAMILY: &str = "user-events";

/// The gauge saying whether avatar purges run (1) or are off because `S3_ENDPOINT` is unset (0).
pub const PURGE_ENABLED_GAUGE: &str = "user_events_avatar_purge_enabled";
/// Sessions expired by password changes.
pub const SESSIONS_REVOKED: &str = "user_events_sessions_revoked_total";
/// Resized avatar copies deleted.
pub const OBJECTS_DELETED: &str = "user_events_avatar_objects_deleted_total";
/// Avatar changes not purged because the purge is off.
pub const PURGES_OFF: &str = "user_events_avatar_purges_skipped_total";

/// The largest page S3 lists (and `DeleteObjects` takes).
const MAX_PAGE_SIZE: usize = 1000;

/// Settings of this family, beside the runtime's [`WorkerConfig`]: the S3 store of the resized
/// avatars (the Go worker's `S3_ENTRY_POINT`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`,
/// `S3_IMAGE_RESIZE_BUCKET`).
#[derive(Clone, clap::Args)]
pub struct Settings {
    /// The S3-compatible endpoint (`https://s3.example.com`). Empty: avatar purges are off
    /// (counted, and the gauge `user_events_avatar_purge_enabled` is 0).
    #[arg(long, env = "S3_ENDPOINT", default_value = "")]
    pub s3_endpoint: String,
    /// Access key id.
    #[arg(
        long,
        env = "S3_ACCESS_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub s3_access_key: String,
    /// Secret access key.
    #[arg(
        long,
        env = "S3_SECRET_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub s3_secret_key: String,
    /// The bucket of the resized images.
    #[arg(long, env = "S3_IMAGE_RESIZE_BUCKET", default_value = "img-resize")]
    pub s3_image_resize_bucket: String,
    /// The region requests are signed for (the Go worker's fixed `us-east-1`).
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Path-style URLs (`endpoint/bucket/key`, as the Go worker); false: virtual-host style.
    #[arg(long, env = "S3_PATH_STYLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,
    /// Keys per listing page and per `DeleteObjects` request (1–1000).
    #[arg(long, env = "S3_LIST_PAGE_SIZE", default_value_t = MAX_PAGE_SIZE)]
    pub s3_list_page_size: usize,
    /// How long one S3 request may take before it counts as failed (and is retried).
    #[arg(long, env = "S3_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub s3_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Settings {
    /// The settings from the environment alone (`S3_*`, defaults for the rest), checked: for
    /// a tool that applies the family's records without its command line (`dlq replay --to
    /// direct`).
    pub fn from_env() -> Result<Self, ConfigError> {
        #[derive(clap::Parser)]
        struct FromEnv {
            #[command(flatten)]
            settings: Settings,
        }
        use clap::Parser as _;
        let settings = FromEnv::try_parse_from([FAMILY])
            .map_err(|e| ConfigError::Invalid {
                name: "S3_*".into(),
                reason: e.to_string(),
            })?
            .settings;
        settings.validate()?;
        Ok(settings)
    }

    /// Where the purge goes, without credentials (`S3 at host:port`), or that it is off.
    pub fn store(&self) -> String {
        if self.purge_enabled() {
            format!(
                "S3 at {}",
                cdc_runtime::dependency::address_of(&self.s3_endpoint)
            )
        } else {
            "S3 off".into()
        }
    }

    fn purge_enabled(&self) -> bool {
        !self.s3_endpoint.is_empty()
    }

    fn target(&self) -> S3Target<'_> {
        S3Target {
            endpoint: &self.s3_endpoint,
            region: &self.s3_region,
            path_style: self.s3_path_style,
            bucket: &self.s3_image_resize_bucket,
            access_key: &self.s3_access_key,
            secret_key: &self.s3_secret_key,
            page_size: self.s3_list_page_size,
            timeout: self.s3_timeout,
        }
    }
}

impl FamilySettings for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name: &str, reason: String| ConfigError::Invalid {
            name: name.into(),
            reason,
        };
        if !(1..=MAX_PAGE_SIZE).contains(&self.s3_list_page_size) {
            return Err(invalid(
                "S3_LIST_PAGE_SIZE",
                format!("{} is not within 1..=1000", self.s3_list_page_size),
            ));
        }
        if self.s3_timeout.is_zero() {
            return Err(invalid("S3_TIMEOUT", "must be longer than 0s".into()));
        }
        if self.purge_enabled() {
            if self.s3_image_resize_bucket.is_empty() {
                return Err(invalid("S3_IMAGE_RESIZE_BUCKET", "is empty".into()));
            }
            Purger::new(&self.target()).map_err(|e| {
                invalid(
                    "S3_ENDPOINT",
                    format!(
                        "{}: {e}",
                        cdc_runtime::config::redact_uri(&self.s3_endpoint)
                    ),
                )
            })?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        if !self.purge_enabled() {
            return "user_events.avatar_purge = off (S3_ENDPOINT is not set)".into();
        }
        let secret = |value: &str| if value.is_empty() { "" } else { "***" };
        [
            "user_events.avatar_purge = on".to_owned(),
            format!(
                "s3_endpoint = {}",
                cdc_runtime::config::redact_uri(&self.s3_endpoint)
            ),
            format!("s3_access_key = {}", secret(&self.s3_access_key)),
            format!("s3_secret_key = {}", secret(&self.s3_secret_key)),
            format!("s3_image_resize_bucket = {}", self.s3_image_resize_bucket),
            format!("s3_region = {}", self.s3_region),
            format!("s3_path_style = {}", self.s3_path_style),
            format!("s3_list_page_size = {}", self.s3_list_page_size),
            format!(
                "s3_timeout = {}",
                humantime::format_duration(self.s3_timeout)
            ),
        ]
        .join("\n")
    }
}

/// The family's handler.
pub struct UserEvents {
    sessions: Sessions,
    purger: Option<Purger>,
    effects: Effects,
}

impl UserEvents {
    /// Connects (lazily: MariaDB, Redis and S3 may be down at start) with `config` and
    /// `settings`.
    pub async fn connect(config: WorkerConfig, settings: Settings) -> anyhow::Result<Self> {
        // The gauge from the start, before any record (installing the recorder is idempotent).
        cdc_runtime::observe::install_recorder();
        metrics::gauge!(PURGE_ENABLED_GAUGE).set(if settings.purge_enabled() { 1.0 } else { 0.0 });
        let purger = if settings.purge_enabled() {
            Some(Purger::new(&settings.target())?)
        } else {
            tracing::warn!("avatar purge off: S3_ENDPOINT is not set");
            None
        };
        // Session keys and per-user channels have no pattern the comparison could watch.
        let effects = Effects::open(&config, FAMILY, Compared::default()).await?;
        Ok(Self {
            sessions: Sessions {
                pool: cdc_runtime::mysql::pool(&config),
                mysql: Dependency::mysql(&config.mysql_host, config.mysql_port),
                redis: sink::redis(&config.redis_uri)?,
                redis_dependency: Dependency::redis(&config.redis_uri),
                key_prefix: config.redis_key_prefix,
            },
            purger,
            effects,
        })
    }

    /// Applies one update's effects: revoke, purge, publish — the publish last, so a purge
    /// retried while S3 is down does not publish again each time. `Rejected` when S3 refuses
    /// access (the rest is applied: a replay of the letter re-applies it harmlessly). In shadow
    /// mode, plans them as `record`'s instead.
    async fn apply_change(
        &self,
        record: &Record,
        change: &MemberChange,
    ) -> Result<Outcome, HandlerError> {
        let shadow = self.effects.is_shadow();
        let mut planned = Vec::new();
        if let Some(created_until) = change.revoke_created_until {
            let (expired, effects) = self
                .sessions
                .revoke(change.uid, created_until, shadow)
                .await?;
            planned.extend(effects);
            if !shadow {
                metrics::counter!(SESSIONS_REVOKED).increment(expired);
            }
        }
        let outcome = if shadow {
            if self.purger.is_some() {
                planned.extend(
                    change
                        .purge_prefixes
                        .iter()
                        .map(|prefix| Effect::on("delete_objects", prefix.clone())),
                );
            }
            Outcome::Applied
        } else {
            self.purge(&change.purge_prefixes).await?
        };
        if let Some(new_notify) = change.new_notify {
            let mut pipe = redis::pipe();
            pipe.cmd("PUBLISH")
                .arg(notify_channel(&self.sessions.key_prefix, change.uid))
                .arg(notify_payload(change.uid, new_notify))
                .ignore();
            if shadow {
                planned.extend(redis_effects(&pipe));
            } else {
                let mut redis: ConnectionManager = self.sessions.redis.clone();
                pipe.query_async::<()>(&mut redis)
                    .await
                    .map_err(|e| redis_error(e).at(&self.sessions.redis_dependency))?;
            }
        }
        self.effects.plan(std::slice::from_ref(record), planned);
        Ok(outcome)
    }

    /// Purges `prefixes` (nothing when the purge is off, counted).
    async fn purge(&self, prefixes: &[String]) -> Result<Outcome, HandlerError> {
        if prefixes.is_empty() {
            return Ok(Outcome::Applied);
        }
        let Some(purger) = &self.purger else {
            metrics::counter!(PURGES_OFF).increment(1);
            return Ok(Outcome::Applied);
        };
        for prefix in prefixes {
            match purger.purge(prefix).await {
                Ok(deleted) => metrics::counter!(OBJECTS_DELETED).increment(deleted),
                Err(PurgeError::Transient(message)) => {
                    return Err(
                        HandlerError::Transient(anyhow::anyhow!(message)).at(&purger.dependency)
                    );
                }
                Err(PurgeError::Denied(message)) => return Ok(Outcome::Rejected(message)),
            }
        }
        Ok(Outcome::Applied)
    }
}

impl Handler for UserEvents {
    fn row_columns(table: &str) -> Columns {
        match table {
            change::MEMBERS => Columns::Only(change::COLUMNS),
            _ => Columns::Only(&[]),
        }
    }

    /// Effects are idempotent by their own conditions: which delivery a record is does not matter.
    const READS_IDENTITY: bool = false;

    const SHADOW: bool = true;

    async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in batch {
            let Event::Change(event) = &record.event else {
                outcomes.push(Outcome::Skipped("not_a_change"));
                continue;
            };
            let ChangeEvent::Row(row_change) = event.as_ref() else {
                outcomes.push(Outcome::Skipped("op_without_effect"));
                continue;
            };
            outcomes.push(match decide(row_change) {
                Err(message) => Outcome::Rejected(message),
                Ok(Err(reason)) => Outcome::Skipped(reason),
                Ok(Ok(change)) => self.apply_change(record, &change).await?,
            });
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn settings(args: &[&str]) -> Settings {
        Cli::parse_from(std::iter::once("user-events").chain(args.iter().copied())).settings
    }

    #[test]
    fn without_an_endpoint_the_purge_is_off_and_says_so() {
        let off = settings(&[]);
        assert!(off.validate().is_ok());
        assert_eq!(
            off.describe(),
            "user_events.avatar_purge = off (S3_ENDPOINT is not set)"
        );
    }

    #[test]
    fn secrets_are_masked() {
        let on = settings(&[
            "--s3-endpoint",
            "http://s3.local:9000",
            "--s3-access-key",
            "AKIAEXAMPLE",
            "--s3-secret-key",
            "hunter2",
        ]);
        assert!(on.validate().is_ok());
        let text = on.describe();
        assert!(text.contains("avatar_purge = on") && text.contains("s3_secret_key = ***"));
        assert!(
            !text.contains("hunter2") && !text.contains("AKIAEXAMPLE"),
            "{text}"
        );
        assert!(!format!("{on:?}").contains("hunter2"));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = settings(&["--s3-list-page-size", "1001"])
            .validate()
            .expect_err("too large");
        assert!(err.to_string().contains("S3_LIST_PAGE_SIZE"), "{err}");
        let err = settings(&["--s3-endpoint", "ftp://x"])
            .validate()
            .expect_err("not http");
        assert!(err.to_string().contains("S3_ENDPOINT"), "{err}");
    }
}
