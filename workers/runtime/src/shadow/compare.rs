//! The comparison of a shadow's planned effects with what the legacy worker does (`SHADOW_COMPARE=on`).
//!
//! The shadow worker watches the Redis it would write to: keyspace events `del`, `zadd` and
//! `zrem` (`__keyevent@<db>__:<event>`, which Redis sends only with `notify-keyspace-events`
//! holding `E` and `g`, `z` or `A`: checked at start) of the keys its family's formats match,
//! after `REDIS_KEY_PREFIX`, and the channels it would publish on. Each effect, by kind and key,
//! waits `SHADOW_COMPARE_WINDOW` for the other side's; then it counts as made by both, by the
//! legacy worker only or by the fleet only ([`metric::SHADOW_EFFECTS`]). Repeats of a matched
//! effect within the window are the same effect (the fleet deletes a key once per batch, the
//! legacy worker once per record).
//!
//! Redis sends no event for a `DEL` of an absent key: a planned `del` of a key absent when
//! planned that no legacy event matches counts as `unobservable`, not as a divergence.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use metrics::{counter, gauge};
use redis::AsyncCommands;
use tokio::sync::mpsc;

use crate::config::{WorkerConfig, redact_uri};
use crate::observe::metric;
use crate::shadow::Effect;

/// What a family's effects may be compared on.
#[derive(Debug, Clone, Default)]
pub struct Compared {
    /// Key formats the family writes (placeholders in braces, `sbj:v2:item:{id}`), without
    /// `REDIS_KEY_PREFIX`: a legacy event of any other key is not the family's.
    pub key_formats: &'static [&'static str],
    /// Channels the family publishes on (without the prefix).
    pub channels: &'static [&'static str],
}

impl Compared {
    /// Whether nothing of the family can be compared (its effects are rows, documents or keys
    /// without a format the comparison watches).
    pub fn is_empty(&self) -> bool {
        self.key_formats.is_empty() && self.channels.is_empty()
    }
}

/// Keyspace events watched, as the effect kinds they are.
const EVENTS: &[&str] = &["del", "zadd", "zrem"];

/// The planned effects' way into the comparison.
#[derive(Clone)]
pub struct Feed(mpsc::UnboundedSender<Seen>);

impl Feed {
    /// `effects`, planned by a record of `table`.
    pub fn planned(&self, table: &str, effects: Vec<Effect>) {
        for effect in effects {
            let Some(key) = effect.key else { continue };
            let kind = if effect.kind == "unlink" {
                "del".to_owned()
            } else {
                effect.kind
            };
            if EVENTS.contains(&kind.as_str()) || kind == "publish" {
                let _ = self.0.send(Seen {
                    side: Side::Fleet,
                    kind,
                    key,
                    table: Some(table.to_owned()),
                });
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Fleet,
    Legacy,
}

struct Seen {
    side: Side,
    kind: String,
    key: String,
    table: Option<String>,
}

/// A key with every all-digit segment replaced by `{id}` (`sbj:v2:item:12` → `sbj:v2:item:{id}`),
/// after `prefix`.
pub fn pattern(prefix: &str, key: &str) -> String {
    key.strip_prefix(prefix)
        .unwrap_or(key)
        .split(':')
        .map(|segment| {
            if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// A key format with every placeholder written `{id}`: the [`pattern`] of its keys.
fn format_pattern(format: &str) -> String {
    format
        .split(':')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{id}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// Checks Redis's keyspace notifications, subscribes, and starts the comparison task.
pub async fn start(
    config: &WorkerConfig,
    family: &str,
    compared: Compared,
) -> anyhow::Result<Feed> {
    let at = redact_uri(&config.redis_uri);
    let client = redis::Client::open(config.redis_uri.as_str())
        .map_err(|e| anyhow::anyhow!("REDIS_URI {at}: {e}"))?;
    let db = client.get_connection_info().redis_settings().db();
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| anyhow::anyhow!("SHADOW_COMPARE=on: Redis {at}: {e}"))?;
    let (_, flags): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut redis)
        .await
        .map_err(|e| {
            anyhow::anyhow!("SHADOW_COMPARE=on: reading notify-keyspace-events of {at}: {e}")
        })?;
    let has = |c: char| flags.contains(c);
    if !(has('E') && (has('A') || (has('g') && has('z')))) {
        anyhow::bail!(
            "SHADOW_COMPARE=on needs Redis keyspace events: notify-keyspace-events of {at} is {flags:?}; \
             it must hold E (keyevent) and g and z (or A), e.g. `CONFIG SET notify-keyspace-events Egz`"
        );
    }
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| anyhow::anyhow!("SHADOW_COMPARE=on: Redis {at}: {e}"))?;
    let event_channels: Vec<String> = EVENTS
        .iter()
        .map(|e| format!("__keyevent@{db}__:{e}"))
        .collect();
    let published: Vec<String> = compared
        .channels
        .iter()
        .map(|c| format!("{}{c}", config.redis_key_prefix))
        .collect();
    for channel in event_channels.iter().chain(&published) {
        pubsub.subscribe(channel).await?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let legacy = tx.clone();
    let prefix = config.redis_key_prefix.clone();
    let mut comparison = Comparison {
        family: family.to_owned(),
        prefix: prefix.clone(),
        window: config.shadow_compare_window,
        entries: HashMap::new(),
        tables: compared
            .key_formats
            .iter()
            .map(|f| (format_pattern(f), "-".to_owned()))
            .collect(),
        totals: BTreeMap::new(),
        redis: redis.clone(),
    };
    let patterns: Vec<String> = comparison.tables.keys().cloned().collect();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let channel = message.get_channel_name();
            let seen = if let Some(event) = channel.strip_prefix(&format!("__keyevent@{db}__:")) {
                let Ok(key) = message.get_payload::<String>() else {
                    continue;
                };
                if !key.starts_with(&prefix) || !patterns.contains(&pattern(&prefix, &key)) {
                    continue;
                }
                Seen {
                    side: Side::Legacy,
                    kind: event.to_owned(),
                    key,
                    table: None,
                }
            } else {
                Seen {
                    side: Side::Legacy,
                    kind: "publish".into(),
                    key: channel.to_owned(),
                    table: None,
                }
            };
            if legacy.send(seen).is_err() {
                break;
            }
        }
        tracing::warn!(
            "shadow comparison: the Redis subscription ended; legacy effects are no longer seen"
        );
    });
    let summary_every = config.shadow_compare_summary;
    let tick_every = (config.shadow_compare_window / 4).min(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(tick_every);
        let mut summary = tokio::time::interval(summary_every);
        summary.tick().await;
        loop {
            tokio::select! {
                seen = rx.recv() => match seen {
                    Some(seen) => comparison.see(seen).await,
                    None => break,
                },
                _ = tick.tick() => comparison.expire(Instant::now()),
                _ = summary.tick() => comparison.summarize(),
            }
        }
    });
    tracing::info!(family, redis = %at, db, channels = %published.join(","), window = ?config.shadow_compare_window, "shadow comparison started");
    Ok(Feed(tx))
}

/// One effect (kind, key) being matched.
#[derive(Default)]
struct Entry {
    fleet: Option<Instant>,
    legacy: Option<Instant>,
    /// When both sides made it (later repeats within the window are the same effect).
    matched: Option<Instant>,
    /// The key was absent when the fleet planned its `del` (a legacy `DEL` would be silent).
    absent: bool,
}

struct Comparison {
    family: String,
    prefix: String,
    window: Duration,
    entries: HashMap<(String, String), Entry>,
    /// Pattern → the table whose records plan it (`-` until one did).
    tables: BTreeMap<String, String>,
    /// (side, pattern) → effects counted, for the summary.
    totals: BTreeMap<(&'static str, String), u64>,
    redis: redis::aio::MultiplexedConnection,
}

impl Comparison {
    async fn see(&mut self, seen: Seen) {
        let now = Instant::now();
        let pattern = pattern(&self.prefix, &seen.key);
        if let Some(table) = seen.table {
            self.tables.insert(pattern.clone(), table);
        }
        let id = (seen.kind, seen.key);
        let entry = self.entries.entry(id.clone()).or_default();
        if entry.matched.is_some_and(|at| now - at < self.window) {
            return;
        }
        let other = match seen.side {
            Side::Fleet => entry.legacy.take(),
            Side::Legacy => entry.fleet.take(),
        };
        if other.is_some() {
            entry.matched = Some(now);
            entry.absent = false;
            self.count("both", &id.0, &id.1);
            self.export_pending();
            return;
        }
        let absent_check = match seen.side {
            Side::Fleet if entry.fleet.is_none() => {
                entry.fleet = Some(now);
                id.0 == "del"
            }
            Side::Legacy if entry.legacy.is_none() => {
                entry.legacy = Some(now);
                false
            }
            _ => false,
        };
        self.export_pending();
        if absent_check {
            let exists: bool = self.redis.exists(&id.1).await.unwrap_or(true);
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.absent = !exists;
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let window = self.window;
        let mut ended = Vec::new();
        self.entries.retain(|id, entry| {
            if let Some(at) = entry.fleet
                && now - at >= window
            {
                ended.push((
                    if entry.absent {
                        "unobservable"
                    } else {
                        "fleet_only"
                    },
                    id.clone(),
                ));
                entry.fleet = None;
            }
            if let Some(at) = entry.legacy
                && now - at >= window
            {
                ended.push(("legacy_only", id.clone()));
                entry.legacy = None;
            }
            entry.fleet.is_some()
                || entry.legacy.is_some()
                || entry.matched.is_some_and(|at| now - at < window)
        });
        if ended.is_empty() {
            return;
        }
        for (side, (kind, key)) in ended {
            self.count(side, &kind, &key);
        }
        self.export_pending();
    }

    fn count(&mut self, side: &'static str, kind: &str, key: &str) {
        let pattern = pattern(&self.prefix, key);
        let table = self
            .tables
            .get(&pattern)
            .cloned()
            .unwrap_or_else(|| "-".into());
        counter!(metric::SHADOW_EFFECTS, "family" => self.family.clone(), "table" => table.clone(), "pattern" => pattern.clone(), "side" => side)
            .increment(1);
        if side == "legacy_only" || side == "fleet_only" {
            tracing::warn!(family = %self.family, side, kind, key, %pattern, %table, "shadow divergence");
        }
        *self.totals.entry((side, pattern)).or_default() += 1;
    }

    fn export_pending(&self) {
        let (mut fleet, mut legacy) = (0, 0);
        for entry in self.entries.values() {
            fleet += u32::from(entry.fleet.is_some());
            legacy += u32::from(entry.legacy.is_some());
        }
        for (side, n) in [("fleet", fleet), ("legacy", legacy)] {
            gauge!(metric::SHADOW_PENDING, "family" => self.family.clone(), "side" => side)
                .set(f64::from(n));
        }
    }

    fn summarize(&self) {
        let mut by_side: BTreeMap<&str, u64> = BTreeMap::new();
        let mut divergent = Vec::new();
        for ((side, pattern), n) in &self.totals {
            *by_side.entry(side).or_default() += n;
            if *side == "legacy_only" || *side == "fleet_only" {
                divergent.push(format!("{pattern} {side}={n}"));
            }
        }
        let get = |side| by_side.get(side).copied().unwrap_or(0);
        tracing::info!(
            family = %self.family,
            both = get("both"),
            legacy_only = get("legacy_only"),
            fleet_only = get("fleet_only"),
            unobservable = get("unobservable"),
            pending = self.entries.values().filter(|e| e.fleet.is_some() || e.legacy.is_some()).count(),
            divergent = %divergent.join(", "),
            "shadow comparison summary"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_replace_whole_numeric_segments_only() {
        assert_eq!(pattern("t:", "t:sbj:v2:item:12"), "sbj:v2:item:{id}");
        assert_eq!(pattern("", "user:stats:8:friend"), "user:stats:{id}:friend");
        assert_eq!(
            format_pattern("user:stats:{uid}:friend"),
            "user:stats:{id}:friend"
        );
    }
}
