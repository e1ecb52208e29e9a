//! The inverse of JSON-without-schema decoding: renders events as Debezium's JSON converter
//! (`schemas.enable=false`) would, for tests, fixtures and tools (e.g. `dlq` replays).
//!
//! Not a Debezium replacement: typed values are written in their raw Connect form (dates as
//! days, times/date-times as microseconds, `ZonedTimestamp` as ISO-8601 text, decimals and
//! bytes as base64), which JSON without schema decodes back to raw values, not typed ones.
//!
//! # Layout
//! - [`value_json`] / [`row_json`]: one value / row to `serde_json::Value`.
//! - [`row_change`]: a [`RowChange`] to its envelope text; [`key`]: a key row to its text.

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use crate::event::{RowChange, Source};
use crate::value::{Row, Value};

/// One value in its raw Connect JSON form.
pub fn value_json(v: &Value) -> Json {
    let b64 = |b: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(b));
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Decimal(d) => b64(&d.unscaled),
        Value::Text(s) | Value::Json(s) => Json::String(s.clone()),
        Value::Bytes(b) => b64(b),
        Value::Date(d) => json!(d),
        Value::Time(t) | Value::DateTime(t) => json!(t),
        Value::Timestamp(us) => Json::String(crate::time::iso_utc(*us)),
        Value::Struct(r) => row_json(r),
        Value::Array(items) => Json::Array(items.iter().map(value_json).collect()),
    }
}

/// A row as a JSON object, columns in order.
pub fn row_json(row: &Row) -> Json {
    Json::Object(
        row.columns()
            .iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// A key row as the JSON converter writes it (`{"subject_id":1}`).
pub fn key(row: &Row) -> String {
    row_json(row).to_string()
}

fn source_json(s: &Source) -> Json {
    json!({
        "version": s.version, "connector": s.connector, "name": s.name, "ts_ms": s.ts_ms,
        "snapshot": s.snapshot.as_str(), "db": s.db, "sequence": s.sequence, "table": s.table,
        "server_id": s.server_id, "gtid": s.gtid, "file": s.file, "pos": s.pos, "row": s.row,
        "thread": s.thread, "query": s.query,
    })
}

/// A row change as its envelope text.
pub fn row_change(change: &RowChange) -> String {
    let image = |r: &Option<Row>| r.as_ref().map_or(Json::Null, row_json);
    json!({
        "before": image(&change.before),
        "after": image(&change.after),
        "source": source_json(&change.source),
        "transaction": null,
        "op": change.op.as_str(),
        "ts_ms": change.ts_ms,
    })
    .to_string()
}
