//! Shared test helpers: loading the Debezium fixtures (three encodings, line-aligned, plus
//! the schemas the Avro converter registered) and rendering decoded events compactly.
#![allow(dead_code, clippy::unwrap_used)] // test helpers: a broken fixture should fail loudly

use std::path::PathBuf;

use base64::Engine as _;
use cdc_schemas::{ChangeEvent, Format, RawRecord, SchemaSet, Value};
use serde_json::{Value as Json, json};

/// One fixture line, bytes already decoded.
pub struct Line {
    pub seq: u64,
    pub scenario: String,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Line {
    pub fn record(&self) -> RawRecord<'_> {
        RawRecord {
            topic: &self.topic,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
        }
    }
}

/// The project's fixtures when generated, else the development copies in `tests/data`.
pub fn fixture_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let project = root.join("../fixtures/debezium");
    if project.join("json.jsonl").is_file() {
        project
    } else {
        root.join("tests/data")
    }
}

/// The three encodings: file name and the configured format that decodes it.
pub const ENCODINGS: [(&str, Format); 3] = [
    ("json", Format::Json),
    ("json-schema", Format::JsonSchema),
    ("avro", Format::Avro),
];

pub fn load(encoding: &str) -> Vec<Line> {
    let path = fixture_dir().join(format!("{encoding}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let b64 = |v: &Json| {
        v.as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
    };
    let txt = |v: &Json| v.as_str().map(|s| s.as_bytes().to_vec());
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let d: Json = serde_json::from_str(l).unwrap();
            let (key, value) = if d.get("key_b64").is_some() || d.get("value_b64").is_some() {
                (b64(&d["key_b64"]), b64(&d["value_b64"]))
            } else {
                (txt(&d["key"]), txt(&d["value"]))
            };
            Line {
                seq: d["seq"].as_u64().unwrap(),
                scenario: d["scenario"].as_str().unwrap_or("").to_owned(),
                topic: d["topic"].as_str().unwrap().to_owned(),
                key,
                value,
            }
        })
        .collect()
}

/// The registry export as a schema set.
pub fn registry() -> SchemaSet {
    let path = fixture_dir().join("registry.json");
    let items: Vec<Json> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut set = SchemaSet::new();
    for item in items {
        let id = u32::try_from(item["id"].as_u64().unwrap()).unwrap();
        set.insert(id, item["schema"].as_str().unwrap()).unwrap();
    }
    set
}

/// A value with its type visible: scalars as JSON, typed values tagged.
pub fn render(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!({ "uint": u }),
        Value::Float(f) => json!({ "float": f }),
        Value::Decimal(d) => json!({ "decimal": d.to_string() }),
        Value::Text(s) => json!(s),
        Value::Bytes(b) => {
            json!({ "bytes": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
        }
        Value::Date(d) => json!({ "date": d }),
        Value::Time(t) => json!({ "time_us": t }),
        Value::DateTime(t) => json!({ "datetime_us": t }),
        Value::Timestamp(t) => json!({ "timestamp_us": t }),
        Value::Json(s) => json!({ "json": s }),
        Value::Struct(r) => render_row(r),
        Value::Array(a) => Json::Array(a.iter().map(render).collect()),
    }
}

pub fn render_row(r: &cdc_schemas::Row) -> Json {
    Json::Object(
        r.columns()
            .iter()
            .map(|(k, v)| (k.to_string(), render(v)))
            .collect(),
    )
}

/// A compact, deterministic summary of one decoded event.
pub fn summary(line: &Line, event: &ChangeEvent) -> Json {
    let head = json!({ "seq": line.seq, "scenario": line.scenario });
    let body = match event {
        ChangeEvent::Row(c) => json!({
            "kind": "row",
            "op": c.op.as_str(),
            "table": c.table(),
            "snapshot": c.source.snapshot.as_str(),
            "position": c.position().to_string(),
            "key": c.key.as_ref().map(render_row),
            "before": c.before.as_ref().map(render_row),
            "after": c.after.as_ref().map(render_row),
        }),
        ChangeEvent::Truncate(t) => json!({ "kind": "truncate", "table": t.source.table }),
        ChangeEvent::Tombstone { key } => {
            json!({ "kind": "tombstone", "key": key.as_ref().map(render_row),
            "table": key.as_ref().and_then(|k| k.table()) })
        }
        ChangeEvent::SchemaChange(s) => json!({
            "kind": "schema_change", "database": s.database, "table": s.source.table,
            "ddl": s.ddl.as_deref().map(|d| d.chars().take(60).collect::<String>()),
            "table_changes": s.table_changes.iter().map(|t| format!("{} {}", t.kind, t.id)).collect::<Vec<_>>(),
        }),
        ChangeEvent::Heartbeat(h) => json!({ "kind": "heartbeat", "server_name": h.server_name }),
        ChangeEvent::Transaction(t) => {
            json!({ "kind": "transaction", "status": format!("{:?}", t.status), "id": t.id })
        }
    };
    let mut out = head;
    if let (Json::Object(o), Json::Object(b)) = (&mut out, body) {
        o.extend(b);
    }
    out
}
