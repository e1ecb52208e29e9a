//! The expected effects of the fixtures (`fixtures/expected/*.json`): an independent statement
//! of Bangumi's current behaviour that the golden tests compare the fleet against.

use anyhow::Context;
use serde::Deserialize;

/// `fixtures/expected/cache-invalidation.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct CacheInvalidation {
    /// Keys a golden test seeds before the run (all candidates, plus bystanders).
    pub seeded: Vec<String>,
    /// Per Debezium data record: the keys its event deletes.
    pub records: Vec<Invalidation>,
}

/// The keys one fixture record deletes.
#[derive(Debug, Clone, Deserialize)]
pub struct Invalidation {
    /// Fixture line.
    pub seq: u64,
    /// `source.table`.
    pub table: String,
    /// Debezium op.
    pub op: String,
    /// Keys deleted (empty: none).
    pub keys: Vec<String>,
    /// Why the fleet deliberately differs from server-private here, if it does.
    #[serde(default)]
    pub differs: Option<String>,
}

impl CacheInvalidation {
    /// Loads the file.
    pub fn load() -> anyhow::Result<Self> {
        let path = crate::fixtures::dir().join("expected/cache-invalidation.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// `seeded` minus every key some record deletes, sorted: what must remain.
    pub fn remaining(&self) -> Vec<String> {
        let deleted: std::collections::BTreeSet<&str> = self
            .records
            .iter()
            .flat_map(|r| r.keys.iter().map(String::as_str))
            .collect();
        let mut left: Vec<String> = self
            .seeded
            .iter()
            .filter(|k| !deleted.contains(k.as_str()))
            .cloned()
            .collect();
        left.sort();
        left
    }
}

/// `fixtures/expected/subject-date.json`: per subject a change of the fixtures asks to date,
/// the date it ends with, or why it keeps none.
#[derive(Debug, Clone, Deserialize)]
pub struct SubjectDate {
    /// One entry per subject.
    pub subjects: Vec<SubjectDateEntry>,
}

/// One subject's expected end.
#[derive(Debug, Clone, Deserialize)]
pub struct SubjectDateEntry {
    /// `subject_id`.
    pub subject_id: u32,
    /// The date columns written, when it is dated.
    #[serde(default)]
    pub fields: Option<crate::subjects::Date>,
    /// Why it is not (the worker's skip reason), otherwise.
    #[serde(default)]
    pub skip: Option<String>,
}

impl SubjectDate {
    /// Reads the file.
    pub fn load() -> anyhow::Result<Self> {
        let path = crate::fixtures::dir().join("expected/subject-date.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// `fixtures/expected/user-events.json`: per `chii_members` record, what bangumi/server's Go
/// canal does for it (with the fleet's documented differences).
#[derive(Debug, Clone, Deserialize)]
pub struct UserEvents {
    /// Every `chii_members` data record of the fixtures.
    pub records: Vec<UserEvent>,
}

/// The effects of one `chii_members` record.
#[derive(Debug, Clone, Deserialize)]
pub struct UserEvent {
    /// Fixture line.
    pub seq: u64,
    /// Workload step.
    pub scenario: String,
    /// The user.
    pub uid: u32,
    /// None: the record has no effect.
    pub effects: Option<UserEffects>,
}

/// What one update does.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserEffects {
    /// Sessions created at or before this second are revoked.
    #[serde(default)]
    pub revoke_created_until: Option<i64>,
    /// The message published.
    #[serde(default)]
    pub publish: Option<Publish>,
    /// S3 prefixes purged.
    #[serde(default)]
    pub purge_prefixes: Vec<String>,
}

/// A `PUBLISH`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Publish {
    /// The channel (without a test's key prefix).
    pub channel: String,
    /// The message, byte for byte.
    pub message: String,
}

impl UserEvents {
    /// Loads the file.
    pub fn load() -> anyhow::Result<Self> {
        let path = crate::fixtures::dir().join("expected/user-events.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
