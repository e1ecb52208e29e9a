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
        Value::Timestamp(us) => Json::String(iso_utc(*us)),
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

/// Microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
fn iso_utc(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:06}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::iso_utc;
    use crate::semantic::parse_zoned;

    #[test]
    fn iso_round_trip() {
        for us in [
            0,
            1,
            1_704_164_645_678_000,
            -86_400_000_001,
            253_402_300_799_999_999,
        ] {
            assert_eq!(parse_zoned(&iso_utc(us)), Some(us), "{}", iso_utc(us));
        }
    }
}
