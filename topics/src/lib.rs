//! The fleet's topic families, read from `topics/families/*.toml`.
//!
//! A *family* is a set of topics consumed by one worker binary under one consumer group, with its
//! own dead-letter topic, batch limits and retry policy. The TOML files beside this crate are the
//! one place those facts live: they are embedded here at build time, so every binary, the
//! provisioning command and the Helm chart generator read the same data.
//!
//! This crate only describes; it does no I/O. `cdc-runtime` turns a [`Family`] into consumers,
//! producers and admin calls.
//!
//! # Layout
//! - [`Family`], [`Batch`], [`Retry`], [`Encoding`]: the parsed form of one file, validated.
//! - [`all`], [`by_name`]: the embedded families.

use std::time::Duration;

use serde::Deserialize;

/// The embedded family files, as `(file name, contents)`: every `families/*.toml`, in file-name
/// order (`build.rs`).
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/families.rs"));

/// One topic family, as declared in its `topics/families/<name>.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Family {
    /// Family name; also the worker binary's name and the Helm `families.<name>` key.
    pub family: String,
    /// One line for people.
    pub description: String,
    /// Default consumer group id (`KAFKA_GROUP_ID` overrides it).
    pub group: String,
    /// Dead-letter topic for records that fail permanently.
    pub dlq: String,
    /// Partitions each topic is provisioned with; the cap on replicas.
    pub partitions: i32,
    /// Encoding of the Debezium topics.
    #[serde(default)]
    pub encoding: Encoding,
    /// Debezium change topics (`debezium.chii.bangumi.<table>`).
    pub topics: Vec<String>,
    /// Non-Debezium topics of the family (service messages).
    #[serde(default)]
    pub service_topics: Vec<String>,
    /// The stores the family's workers talk to beside Kafka. The Helm chart gives the family's
    /// Deployment the secrets of these and of no other.
    pub stores: Vec<Store>,
    /// Whether the family's workers need the fleet's own tables (`cdc_applied_messages`):
    /// `<family> migrate` creates them, and the Helm chart runs it as a pre-install/pre-upgrade
    /// hook while such a family is enabled.
    #[serde(default)]
    pub migrate: bool,
    /// Per-partition batching.
    pub batch: Batch,
    /// Backoff for transient failures.
    pub retry: Retry,
}

/// How the values (and keys) of a family's Debezium topics are encoded.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// Detected per message: Confluent magic byte 0 → Avro; `{"schema":…,"payload":…}` → JSON
    /// with schema; otherwise JSON without schema.
    #[default]
    Auto,
    /// JSON converter with `schemas.enable=false` (what Bangumi runs).
    Json,
    /// JSON converter with `schemas.enable=true`.
    JsonSchema,
    /// Confluent Avro converter (wire format with a registry schema id).
    Avro,
}

/// A store a family's workers talk to beside Kafka.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Store {
    /// Redis (`REDIS_URI`).
    Redis,
    /// MySQL/MariaDB (`MYSQL_*`).
    Mysql,
    /// Meilisearch (`MEILISEARCH_*`).
    Meilisearch,
    /// An S3-compatible object store (`S3_*`).
    S3,
}

/// Per-partition batching limits: a batch closes at `max_messages` or after `max_wait`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Most records in one batch.
    pub max_messages: usize,
    /// Longest a partially filled batch waits for more records.
    #[serde(with = "humantime_serde_compat")]
    pub max_wait: Duration,
}

/// Exponential backoff with jitter for transient failures; retried until it succeeds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// First delay.
    #[serde(with = "humantime_serde_compat")]
    pub initial: Duration,
    /// Largest delay.
    #[serde(with = "humantime_serde_compat")]
    pub max: Duration,
}

/// A family file that is not valid; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    /// The TOML does not parse or has unknown/missing fields.
    #[error("topics/families/{file}: {source}")]
    Parse {
        /// File name.
        file: String,
        /// Parser error (names the field).
        source: Box<toml::de::Error>,
    },
    /// The file parses but a value is out of range or inconsistent.
    #[error("topics/families/{file}: {message}")]
    Invalid {
        /// File name.
        file: String,
        /// What is wrong.
        message: String,
    },
}

impl Family {
    /// Parses and validates one family file.
    pub fn parse(file: &str, text: &str) -> Result<Self, FamilyError> {
        let family: Family = toml::from_str(text).map_err(|source| FamilyError::Parse {
            file: file.to_owned(),
            source: Box::new(source),
        })?;
        family.validate().map_err(|message| FamilyError::Invalid {
            file: file.to_owned(),
            message,
        })?;
        Ok(family)
    }

    fn validate(&self) -> Result<(), String> {
        if self.partitions < 1 {
            return Err(format!("partitions must be ≥ 1, got {}", self.partitions));
        }
        if self.topics.is_empty() && self.service_topics.is_empty() {
            return Err("a family needs at least one topic".into());
        }
        if self.batch.max_messages == 0 {
            return Err("batch.max_messages must be ≥ 1".into());
        }
        if self.retry.initial.is_zero() || self.retry.max < self.retry.initial {
            return Err("retry needs 0 < initial ≤ max".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for topic in self.all_topics().chain([self.dlq.as_str()]) {
            if !seen.insert(topic) {
                return Err(format!("topic {topic:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// Every topic the family consumes: Debezium topics, then service topics.
    pub fn all_topics(&self) -> impl Iterator<Item = &str> {
        self.topics
            .iter()
            .chain(&self.service_topics)
            .map(String::as_str)
    }

    /// The consumer group whose committed offsets on the DLQ mark how far dead letters have been
    /// handled (replayed or purged) by the `dlq` tool.
    pub fn replay_group(&self) -> String {
        format!("{}.dlq-replay", self.group)
    }

    /// The compacted topic where the `dlq` tool records the dead letters it handled past the
    /// replay group's committed offset (a filtered replay, a purge of one letter), keyed by DLQ
    /// partition and offset. Together they say exactly which letters are pending.
    pub fn dlq_handled_topic(&self) -> String {
        format!("{}.handled", self.dlq)
    }

    /// Whether `topic` is one of the family's service (non-Debezium) topics.
    pub fn is_service_topic(&self, topic: &str) -> bool {
        self.service_topics.iter().any(|t| t == topic)
    }

    /// The same family with `prefix` prepended to every topic name, DLQ included. Used to run
    /// isolated copies of a family (tests, staging) on one broker.
    pub fn with_topic_prefix(mut self, prefix: &str) -> Self {
        if prefix.is_empty() {
            return self;
        }
        for topic in self
            .topics
            .iter_mut()
            .chain(&mut self.service_topics)
            .chain([&mut self.dlq])
        {
            *topic = format!("{prefix}{topic}");
        }
        self
    }
}

/// Every embedded family, in file-name order.
pub fn all() -> Result<Vec<Family>, FamilyError> {
    FILES
        .iter()
        .map(|(file, text)| Family::parse(file, text))
        .collect()
}

/// The embedded family called `name`.
pub fn by_name(name: &str) -> Result<Option<Family>, FamilyError> {
    Ok(all()?.into_iter().find(|f| f.family == name))
}

/// Names of every embedded family.
pub fn names() -> Vec<&'static str> {
    FILES
        .iter()
        .map(|(file, _)| file.trim_end_matches(".toml"))
        .collect()
}

/// `"5ms"`-style durations in TOML.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_family_parses_and_is_named_after_its_file() {
        let families = all().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(families.len(), FILES.len());
        for (family, name) in families.iter().zip(names()) {
            assert_eq!(family.family, name);
        }
    }

    #[test]
    fn groups_and_dlqs_are_distinct_across_families() {
        let families = all().unwrap_or_else(|e| panic!("{e}"));
        let groups: std::collections::BTreeSet<_> = families.iter().map(|f| &f.group).collect();
        let dlqs: std::collections::BTreeSet<_> = families.iter().map(|f| &f.dlq).collect();
        assert_eq!(groups.len(), families.len());
        assert_eq!(dlqs.len(), families.len());
    }

    #[test]
    fn a_topic_of_several_families_has_one_partition_count() {
        // chii_subjects feeds cache-invalidation and subject-date, each in its own group; the
        // topic is provisioned by both, so they must agree on its partitions.
        let families = all().unwrap_or_else(|e| panic!("{e}"));
        let mut seen = std::collections::BTreeMap::new();
        for f in &families {
            for t in f.all_topics() {
                if let Some(other) = seen.insert(t, f)
                    && other.partitions != f.partitions
                {
                    panic!(
                        "{t}: {} partitions in {}, {} in {}",
                        other.partitions, other.family, f.partitions, f.family
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_field_is_rejected_naming_it() {
        let text = FILES[0]
            .1
            .replace("partitions = 3", "partitions = 3\npartitons = 4");
        let err = Family::parse("x.toml", &text).expect_err("must fail");
        assert!(err.to_string().contains("partitons"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_file_name() {
        let text = FILES[0].1.replace("partitions = 3", "partitions = 0");
        let err = Family::parse("x.toml", &text).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "topics/families/x.toml: partitions must be ≥ 1, got 0"
        );
        let text = FILES[0]
            .1
            .replace("max_wait = \"5ms\"", "max_wait = \"soon\"");
        let err = Family::parse("x.toml", &text).expect_err("must fail");
        assert!(
            err.to_string().contains("invalid duration \"soon\""),
            "{err}"
        );
    }

    #[test]
    fn topic_prefix_applies_to_every_topic_and_the_dlq() {
        let family = by_name("timeline")
            .unwrap()
            .unwrap()
            .with_topic_prefix("t1.");
        assert!(family.all_topics().all(|t| t.starts_with("t1.")));
        assert_eq!(family.dlq, "t1.cdc.dlq.timeline");
        assert!(family.is_service_topic("t1.timeline"));
    }
}
