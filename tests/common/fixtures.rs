//! Reading the committed Debezium fixtures (`fixtures/debezium/*.jsonl`, format in
//! `fixtures/README.md`) as records ready to produce.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use serde::Deserialize;

use crate::Out;

/// The three encodings the fixtures come in, line-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `json.jsonl`: JsonConverter, `schemas.enable=false` (Bangumi's setting).
    Json,
    /// `json-schema.jsonl`: JsonConverter, `schemas.enable=true`.
    JsonSchema,
    /// `avro.jsonl`: Confluent AvroConverter wire format.
    Avro,
}

impl Encoding {
    /// All three.
    pub const ALL: [Encoding; 3] = [Encoding::Json, Encoding::JsonSchema, Encoding::Avro];

    fn file(self) -> &'static str {
        match self {
            Encoding::Json => "json.jsonl",
            Encoding::JsonSchema => "json-schema.jsonl",
            Encoding::Avro => "avro.jsonl",
        }
    }
}

/// One captured record.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Line number (1-based), the same in every encoding.
    pub seq: u64,
    /// Workload step that produced it.
    pub scenario: String,
    /// Debezium topic (without any test prefix).
    pub topic: String,
    /// The record as bytes.
    pub record: Out,
}

#[derive(Deserialize)]
struct Line {
    seq: u64,
    scenario: String,
    topic: String,
    headers: Vec<(String, String)>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    key_b64: Option<String>,
    #[serde(default)]
    value_b64: Option<String>,
}

/// The repository's `fixtures/` directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The file of one encoding.
pub fn path(encoding: Encoding) -> PathBuf {
    dir().join("debezium").join(encoding.file())
}

/// Every record of one encoding, in capture order.
pub fn load(encoding: Encoding) -> anyhow::Result<Vec<Fixture>> {
    load_file(&path(encoding))
}

/// Every record of a file in the fixtures' line format (`fixtures/README.md`), in file order.
pub fn load_file(path: &Path) -> anyhow::Result<Vec<Fixture>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let l: Line = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a fixture line", path.display(), n + 1))?;
            let decode = |b: Option<String>| -> anyhow::Result<Option<Vec<u8>>> {
                b.map(|s| b64.decode(s)).transpose().map_err(Into::into)
            };
            let key = match l.key {
                Some(k) => Some(k.into_bytes()),
                None => decode(l.key_b64)?,
            };
            let value = match l.value {
                Some(v) => Some(v.into_bytes()),
                None => decode(l.value_b64)?,
            };
            Ok(Fixture {
                seq: l.seq,
                scenario: l.scenario,
                topic: l.topic,
                record: Out {
                    partition: None,
                    key,
                    value,
                    headers: l
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect(),
                    timestamp_ms: None,
                },
            })
        })
        .collect()
}

/// `fixtures/debezium/registry.json`: every schema the Avro converter registered, as
/// `(id, schema text)`.
pub fn registry() -> anyhow::Result<Vec<(u32, String)>> {
    #[derive(Deserialize)]
    struct Entry {
        id: u32,
        schema: String,
    }
    let path = dir().join("debezium/registry.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let entries: Vec<Entry> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(entries.into_iter().map(|e| (e.id, e.schema)).collect())
}

/// The rows the fixtures leave in `table`: for each message key, the last row image of
/// `json.jsonl`'s records of the table, unless its last change deletes it; in key order.
pub fn rows_as_left(
    table: &str,
) -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut rows = std::collections::BTreeMap::new();
    let suffix = format!(".{table}");
    for f in load(Encoding::Json)? {
        let (true, Some(key), Some(value)) =
            (f.topic.ends_with(&suffix), &f.record.key, &f.record.value)
        else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_slice(value)
            .with_context(|| format!("fixture line {}: value is not JSON", f.seq))?;
        let key = String::from_utf8_lossy(key).into_owned();
        match event.get("after") {
            Some(serde_json::Value::Object(after)) => {
                rows.insert(key, after.clone());
            }
            _ => {
                rows.remove(&key);
            }
        }
    }
    Ok(rows.into_values().collect())
}

/// The records of `encoding` on the topics of `family` (already under `topic_prefix`), in capture
/// order, as `(topic, record)`.
pub fn records_of(
    family: &cdc_topics::Family,
    topic_prefix: &str,
    encoding: Encoding,
) -> anyhow::Result<Vec<(String, Out)>> {
    Ok(load(encoding)?
        .into_iter()
        .map(|f| (format!("{topic_prefix}{}", f.topic), f.record))
        .filter(|(topic, _)| family.topics.contains(topic))
        .collect())
}
