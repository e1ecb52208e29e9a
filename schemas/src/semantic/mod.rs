//! Connect semantic types: reading `io.debezium.time.*`, `org.apache.kafka.connect.data.*`
//! and `io.debezium.data.*` names from a schema, and retyping raw values with them.
//!
//! Both schema-carrying encodings end here: the embedded Connect schema of
//! `{"schema","payload"}` JSON ([`ConnectType::from_connect`]) and the Avro schema text a
//! registry serves, which keeps `connect.name` on primitive types where the parsed
//! `apache_avro::Schema` drops it ([`ConnectType::from_avro_json`]). JSON without a schema
//! never comes here: its values stay raw.
//!
//! # Layout
//! - [`ConnectType`]: a schema tree (struct fields, array items, primitive + semantic name).
//! - `Semantic`: the semantic names this crate interprets.
//! - `ConnectType::apply`: retypes a decoded value tree in place, checking primitive types.
//! - `avro_json`: the Avro-schema-JSON reader behind [`ConnectType::from_avro_json`].

use base64::Engine as _;
use serde_json::Value as Json;

mod avro_json;

use crate::error::DecodeErrorKind;
use crate::value::{Decimal, Row, Value};

/// A schema tree with Connect semantic names, for one key or value schema.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectType {
    kind: Kind,
    semantic: Semantic,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Int,
    Float,
    Bool,
    Str,
    Bytes,
    Struct(Vec<(String, ConnectType)>),
    Array(Box<ConnectType>),
    Map(Box<ConnectType>),
    /// Unknown or unconstrained (unions of several types, `null`): values kept as decoded.
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Semantic {
    None,
    /// Days since epoch (`io.debezium.time.Date`, Connect `Date`).
    Date,
    /// Time of day: factor to microseconds is 1000 (ms), 1 (µs); nanos divide by 1000.
    TimeMillis,
    TimeMicros,
    TimeNanos,
    /// Local date-time since epoch.
    StampMillis,
    StampMicros,
    StampNanos,
    /// ISO-8601 text with zone.
    Zoned,
    /// Connect `Decimal` with the scale parameter.
    Decimal(u32),
    /// `io.debezium.data.VariableScaleDecimal` struct `{scale, value}`.
    VariableDecimal,
    /// `io.debezium.data.Json`.
    Json,
}

fn semantic_of(name: Option<&str>, scale: Option<u32>) -> Semantic {
    match name {
        Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => Semantic::Date,
        Some("org.apache.kafka.connect.data.Time") => Semantic::TimeMillis,
        Some("io.debezium.time.Time") => Semantic::TimeMillis,
        Some("io.debezium.time.MicroTime") => Semantic::TimeMicros,
        Some("io.debezium.time.NanoTime") => Semantic::TimeNanos,
        Some("io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => {
            Semantic::StampMillis
        }
        Some("io.debezium.time.MicroTimestamp") => Semantic::StampMicros,
        Some("io.debezium.time.NanoTimestamp") => Semantic::StampNanos,
        Some("io.debezium.time.ZonedTimestamp") => Semantic::Zoned,
        Some("org.apache.kafka.connect.data.Decimal") => Semantic::Decimal(scale.unwrap_or(0)),
        Some("io.debezium.data.VariableScaleDecimal") => Semantic::VariableDecimal,
        Some("io.debezium.data.Json") => Semantic::Json,
        _ => Semantic::None,
    }
}

fn invalid(detail: impl Into<String>) -> DecodeErrorKind {
    DecodeErrorKind::InvalidSchema {
        detail: detail.into(),
    }
}

fn scale_param(params: Option<&Json>) -> Option<u32> {
    params?.get("scale")?.as_str()?.parse().ok()
}

impl ConnectType {
    const ANY: ConnectType = ConnectType {
        kind: Kind::Any,
        semantic: Semantic::None,
    };

    /// Reads an embedded Kafka Connect JSON schema (`{"type":"struct","fields":[…]}`).
    pub fn from_connect(schema: &Json) -> Result<Self, DecodeErrorKind> {
        let obj = schema
            .as_object()
            .ok_or_else(|| invalid("schema is not an object"))?;
        let ty = obj
            .get("type")
            .and_then(Json::as_str)
            .ok_or_else(|| invalid("schema without type"))?;
        let kind = match ty {
            "int8" | "int16" | "int32" | "int64" => Kind::Int,
            "float" | "float32" | "double" | "float64" => Kind::Float,
            "boolean" => Kind::Bool,
            "string" => Kind::Str,
            "bytes" => Kind::Bytes,
            "struct" => {
                let fields = obj
                    .get("fields")
                    .and_then(Json::as_array)
                    .ok_or_else(|| invalid("struct without fields"))?;
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    let name = f
                        .get("field")
                        .and_then(Json::as_str)
                        .ok_or_else(|| invalid("field without name"))?;
                    out.push((name.to_owned(), ConnectType::from_connect(f)?));
                }
                Kind::Struct(out)
            }
            "array" => Kind::Array(Box::new(match obj.get("items") {
                Some(items) => ConnectType::from_connect(items)?,
                None => ConnectType::ANY,
            })),
            "map" => Kind::Map(Box::new(match obj.get("values") {
                Some(values) => ConnectType::from_connect(values)?,
                None => ConnectType::ANY,
            })),
            other => return Err(invalid(format!("unknown Connect type {other:?}"))),
        };
        let name = obj.get("name").and_then(Json::as_str);
        Ok(ConnectType {
            kind,
            semantic: semantic_of(name, scale_param(obj.get("parameters"))),
        })
    }

    /// Reads an Avro schema as JSON, keeping the `connect.name` / `connect.parameters`
    /// attributes AvroConverter writes on primitive types.
    pub fn from_avro_json(schema: &Json) -> Result<Self, DecodeErrorKind> {
        let mut names = std::collections::HashMap::new();
        avro_json::avro_type(schema, None, &mut names)
    }

    /// The field types of a struct type.
    pub(crate) fn field(&self, name: &str, hint: usize) -> Option<&ConnectType> {
        let Kind::Struct(fields) = &self.kind else {
            return None;
        };
        match fields.get(hint) {
            Some((n, t)) if n == name => Some(t),
            _ => fields.iter().find(|(n, _)| n == name).map(|(_, t)| t),
        }
    }

    /// Retypes `value` in place by this schema; `path` names the column in errors.
    pub(crate) fn apply(&self, value: &mut Value, path: &str) -> Result<(), DecodeErrorKind> {
        // Null, and values an Avro logical type already typed, stay as they are.
        if matches!(
            value,
            Value::Null
                | Value::Date(_)
                | Value::Time(_)
                | Value::DateTime(_)
                | Value::Timestamp(_)
        ) {
            return Ok(());
        }
        let wrong = |expected: &'static str, v: &Value| DecodeErrorKind::WrongType {
            column: path.to_owned(),
            expected,
            found: v.describe(),
        };
        match self.semantic {
            Semantic::None => {}
            Semantic::Date => {
                return match int(value).and_then(|i| i32::try_from(i).ok()) {
                    Some(days) => {
                        *value = Value::Date(days);
                        Ok(())
                    }
                    None => Err(wrong("days since epoch", value)),
                };
            }
            Semantic::TimeMillis => {
                return retype_int(value, |i| Value::Time(i.saturating_mul(1000)), wrong);
            }
            Semantic::TimeMicros => return retype_int(value, Value::Time, wrong),
            Semantic::TimeNanos => return retype_int(value, |i| Value::Time(i / 1000), wrong),
            Semantic::StampMillis => {
                return retype_int(value, |i| Value::DateTime(i.saturating_mul(1000)), wrong);
            }
            Semantic::StampMicros => return retype_int(value, Value::DateTime, wrong),
            Semantic::StampNanos => {
                return retype_int(value, |i| Value::DateTime(i.div_euclid(1000)), wrong);
            }
            Semantic::Zoned => {
                let parsed = value.as_str().and_then(crate::time::parse_zoned);
                return match parsed {
                    Some(us) => {
                        *value = Value::Timestamp(us);
                        Ok(())
                    }
                    None => Err(wrong("ISO-8601 timestamp", value)),
                };
            }
            Semantic::Json => {
                if let Value::Text(s) = value {
                    *value = Value::Json(std::mem::take(s));
                    return Ok(());
                }
                return Err(wrong("JSON text", value));
            }
            Semantic::Decimal(scale) => {
                let bytes = match value {
                    Value::Decimal(d) => std::mem::take(&mut d.unscaled),
                    Value::Bytes(b) => std::mem::take(b),
                    Value::Text(s) => {
                        match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                            Ok(b) => b,
                            Err(_) => return Err(wrong("base64 decimal", value)),
                        }
                    }
                    _ => return Err(wrong("decimal bytes", value)),
                };
                *value = Value::Decimal(Decimal {
                    unscaled: bytes,
                    scale,
                });
                return Ok(());
            }
            Semantic::VariableDecimal => {
                if let Value::Struct(row) = value {
                    let scale = row
                        .get("scale")
                        .and_then(Value::as_i64)
                        .and_then(|s| u32::try_from(s).ok());
                    let bytes = match row.get("value") {
                        Some(Value::Bytes(b)) => Some(b.clone()),
                        Some(Value::Text(s)) => base64::engine::general_purpose::STANDARD
                            .decode(s.as_bytes())
                            .ok(),
                        _ => None,
                    };
                    if let (Some(scale), Some(unscaled)) = (scale, bytes) {
                        *value = Value::Decimal(Decimal { unscaled, scale });
                        return Ok(());
                    }
                }
                return Err(wrong("variable-scale decimal", value));
            }
        }
        match (&self.kind, &mut *value) {
            (Kind::Any, _) => Ok(()),
            (Kind::Int, Value::Int(_) | Value::UInt(_) | Value::Date(_)) => Ok(()),
            (Kind::Int, v) => Err(wrong("integer", v)),
            (Kind::Float, Value::Float(_)) => Ok(()),
            (Kind::Float, Value::Int(i)) => {
                *value = Value::Float(*i as f64);
                Ok(())
            }
            (Kind::Float, v) => Err(wrong("float", v)),
            (Kind::Bool, Value::Bool(_)) => Ok(()),
            (Kind::Bool, v) => Err(wrong("boolean", v)),
            (Kind::Str, Value::Text(_)) => Ok(()),
            (Kind::Str, v) => Err(wrong("string", v)),
            (Kind::Bytes, Value::Bytes(_) | Value::Decimal(_)) => Ok(()),
            (Kind::Bytes, Value::Text(s)) => {
                match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                    Ok(b) => {
                        *value = Value::Bytes(b);
                        Ok(())
                    }
                    Err(_) => Err(wrong("base64 bytes", value)),
                }
            }
            (Kind::Bytes, v) => Err(wrong("bytes", v)),
            (Kind::Struct(_), Value::Struct(row)) => self.apply_row(row, path),
            (Kind::Struct(_), v) => Err(wrong("struct", v)),
            (Kind::Array(item), Value::Array(items)) => {
                items.iter_mut().try_for_each(|v| item.apply(v, path))
            }
            (Kind::Array(_), v) => Err(wrong("array", v)),
            (Kind::Map(item), Value::Struct(row)) => row
                .columns_mut()
                .iter_mut()
                .try_for_each(|(_, v)| item.apply(v, path)),
            (Kind::Map(_), v) => Err(wrong("map", v)),
        }
    }

    /// Retypes every column of `row` by this struct type (unknown columns kept as decoded).
    pub(crate) fn apply_row(&self, row: &mut Row, path: &str) -> Result<(), DecodeErrorKind> {
        for (i, (name, v)) in row.columns_mut().iter_mut().enumerate() {
            if let Some(t) = self.field(name, i) {
                if t.kind == Kind::Any && t.semantic == Semantic::None {
                    continue;
                }
                let child = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                t.apply(v, &child)?;
            }
        }
        Ok(())
    }
}

fn int(v: &Value) -> Option<i64> {
    match *v {
        Value::Int(i) => Some(i),
        Value::Date(d) => Some(i64::from(d)),
        _ => None,
    }
}

fn retype_int(
    value: &mut Value,
    f: impl FnOnce(i64) -> Value,
    wrong: impl FnOnce(&'static str, &Value) -> DecodeErrorKind,
) -> Result<(), DecodeErrorKind> {
    match int(value) {
        Some(i) => {
            *value = f(i);
            Ok(())
        }
        None => Err(wrong("integer time value", value)),
    }
}
