//! The two JSON encodings: Kafka Connect's `JsonConverter` without (`schemas.enable=false`,
//! what Bangumi runs) and with an embedded schema (`{"schema":…,"payload":…}`).
//!
//! Bytes are checked for UTF-8, then parsed by serde_json straight into a [`Value`] tree
//! (no `serde_json::Value` in between: this is the hot path). With an embedded schema the
//! payload is then retyped by [`ConnectType`]; without one, values stay as JSON gives them.
//! Not here: deciding which Debezium event the tree is (see `event`).
//!
//! # Layout
//! - `parse_tree`: bytes → `Value` (errors: invalid UTF-8, malformed JSON).
//! - `decode_plain` / `decode_with_schema`: the two encodings.
//! - `is_schema_wrapper`: the `Format::Auto` test for `{"schema","payload"}`.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::DecodeErrorKind;
use crate::semantic::ConnectType;
use crate::value::{Row, Value};

struct Tree(Value);

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor).map(Tree)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Tree(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((k, Tree(v))) = map.next_entry::<String, Tree>()? {
            columns.push((k, v));
        }
        Ok(Value::Struct(Row::new(columns)))
    }
}

/// Parses JSON bytes into a value tree.
pub(crate) fn parse_tree(bytes: &[u8]) -> Result<Value, DecodeErrorKind> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeErrorKind::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    serde_json::from_str::<Tree>(text)
        .map(|t| t.0)
        .map_err(|e| DecodeErrorKind::MalformedJson {
            detail: e.to_string(),
        })
}

/// JSON without schema: the tree as parsed.
pub(crate) fn decode_plain(bytes: &[u8]) -> Result<Value, DecodeErrorKind> {
    parse_tree(bytes)
}

/// Whether a parsed root is exactly `{"schema": …, "payload": …}`.
pub(crate) fn is_schema_wrapper(root: &Value) -> bool {
    match root {
        Value::Struct(row) => {
            row.len() == 2 && row.get("schema").is_some() && row.get("payload").is_some()
        }
        _ => false,
    }
}

/// JSON with schema: checks the wrapper, then retypes the payload by the schema.
pub(crate) fn decode_with_schema(bytes: &[u8]) -> Result<Value, DecodeErrorKind> {
    unwrap_schema(parse_tree(bytes)?)
}

/// Applies the embedded schema of an already parsed `{"schema","payload"}` root.
pub(crate) fn unwrap_schema(root: Value) -> Result<Value, DecodeErrorKind> {
    if !is_schema_wrapper(&root) {
        return Err(DecodeErrorKind::NotAnEnvelope {
            found: format!(
                "{} where {{\"schema\",\"payload\"}} was expected",
                shape(&root)
            ),
        });
    }
    let Value::Struct(mut row) = root else {
        return Err(DecodeErrorKind::NotAnEnvelope {
            found: "non-object".into(),
        });
    };
    let schema = row.take("schema").unwrap_or(Value::Null);
    let mut payload = row.take("payload").unwrap_or(Value::Null);
    if matches!(schema, Value::Null) {
        return Ok(payload);
    }
    let ty = ConnectType::from_connect(&to_json(&schema))?;
    ty.apply(&mut payload, "")?;
    Ok(payload)
}

/// A short description of a root for error messages: its kind and first field names.
pub(crate) fn shape(v: &Value) -> String {
    match v {
        Value::Struct(row) => {
            let names: Vec<&str> = row.names().take(6).collect();
            format!("object {{{}}}", names.join(", "))
        }
        other => other.describe(),
    }
}

/// Converts a parsed tree back into `serde_json::Value` (only for the small embedded schemas).
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => J::from(*f),
        Value::Text(s) | Value::Json(s) => J::String(s.clone()),
        Value::Struct(r) => J::Object(
            r.columns()
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        other => J::String(other.describe()),
    }
}
