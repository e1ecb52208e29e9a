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
