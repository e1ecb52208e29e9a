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
//! - `decode_auto`: `Format::Auto` for JSON (wrapper or not).
//! - `cached_type`: a small per-thread cache of parsed embedded schemas, by schema text.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::DecodeErrorKind;
use crate::name::Name;
use crate::semantic::ConnectType;
use crate::value::{Columns, Row, Value};

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
        let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(NameKey(k)) = map.next_key()? {
            let Tree(v) = map.next_value()?;
            columns.push((k, v));
        }
        Ok(Value::Struct(Row::from_columns(columns)))
    }
}

/// The [`Visitor`] methods of a visitor that only treats objects specially: everything else is
/// read as [`TreeVisitor`] reads it.
macro_rules! other_kinds_as_tree {
    () => {
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
            TreeVisitor.visit_bool(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
            TreeVisitor.visit_i64(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
            TreeVisitor.visit_u64(v)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
            TreeVisitor.visit_f64(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
            TreeVisitor.visit_str(v)
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
            TreeVisitor.visit_string(v)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
            TreeVisitor.visit_seq(seq)
        }
    };
}

/// An envelope root whose `before`/`after` objects keep only the selected columns; the other
/// columns are skipped without building values.
struct EnvelopeRoot(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for EnvelopeRoot {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeRoot {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    other_kinds_as_tree!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Vec::with_capacity(8);
        while let Some(NameKey(k)) = map.next_key()? {
            let v = if matches!(k.as_bytes(), b"before" | b"after") {
                map.next_value_seed(SelectedColumns(self.0))?
            } else {
                map.next_value::<Tree>()?.0
            };
            fields.push((k, v));
        }
        Ok(Value::Struct(Row::from_columns(fields)))
    }
}

/// A row image of which only the named columns are kept.
struct SelectedColumns(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for SelectedColumns {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SelectedColumns {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row image")
    }
    other_kinds_as_tree!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut columns = Vec::with_capacity(self.0.len());
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.0.contains(&key.as_ref()) {
                columns.push((Name::new(&key), map.next_value::<Tree>()?.0));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Struct(Row::from_columns(columns)))
    }
}

/// An object key read straight into a [`Name`] (no allocation for short keys).
struct NameKey(Name);

impl<'de> Deserialize<'de> for NameKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Name, E> {
                Ok(Name::new(v))
            }
            fn visit_string<E>(self, v: String) -> Result<Name, E> {
                Ok(Name::from(v))
            }
        }
        d.deserialize_str(V).map(NameKey)
    }
}

/// Parses JSON bytes into a value tree.
pub(crate) fn parse_tree(bytes: &[u8]) -> Result<Value, DecodeErrorKind> {
    parse_envelope(bytes, Columns::All)
}

/// Parses JSON bytes into a value tree, keeping only the selected row-image columns of an
/// envelope root.
fn parse_envelope(bytes: &[u8], columns: Columns) -> Result<Value, DecodeErrorKind> {
    let text = utf8(bytes)?;
    let malformed = |e: serde_json::Error| DecodeErrorKind::MalformedJson {
        detail: e.to_string(),
    };
    match columns {
        Columns::All => serde_json::from_str::<Tree>(text).map(|t| t.0),
        Columns::Only(names) => {
            let mut de = serde_json::Deserializer::from_str(text);
            let root = EnvelopeRoot(names).deserialize(&mut de);
            root.and_then(|root| de.end().map(|()| root))
        }
    }
    .map_err(malformed)
}

/// JSON without schema: the tree as parsed.
pub(crate) fn decode_plain(bytes: &[u8], columns: Columns) -> Result<Value, DecodeErrorKind> {
    parse_envelope(bytes, columns)
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

/// `{"schema": …, "payload": …}` with the schema kept as raw text (for the cache).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapper<'a> {
    #[serde(borrow)]
    schema: &'a RawValue,
    payload: Tree,
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeErrorKind> {
    std::str::from_utf8(bytes).map_err(|e| DecodeErrorKind::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// JSON with schema: checks the wrapper, then retypes the payload by the schema.
pub(crate) fn decode_with_schema(bytes: &[u8]) -> Result<Value, DecodeErrorKind> {
    let text = utf8(bytes)?;
    match serde_json::from_str::<Wrapper>(text) {
        Ok(w) => apply_schema(w.schema.get(), w.payload.0),
        // Not the wrapper: report malformed JSON as such, else the shape found.
        Err(_) => unwrap_schema(parse_tree(bytes)?),
    }
}

/// `Format::Auto` on JSON: the wrapper when the text is one, else plain JSON.
pub(crate) fn decode_auto(bytes: &[u8], columns: Columns) -> Result<Value, DecodeErrorKind> {
    let text = utf8(bytes)?;
    if text.trim_start().starts_with("{\"schema\"")
        && let Ok(w) = serde_json::from_str::<Wrapper>(text)
    {
        return apply_schema(w.schema.get(), w.payload.0);
    }
    let root = parse_envelope(bytes, columns)?;
    if is_schema_wrapper(&root) {
        unwrap_schema(root)
    } else {
        Ok(root)
    }
}

fn apply_schema(schema: &str, mut payload: Value) -> Result<Value, DecodeErrorKind> {
    if schema == "null" {
        return Ok(payload);
    }
    cached_type(schema)?.apply(&mut payload, "")?;
    Ok(payload)
}

/// Schemas parsed recently on this thread, by their exact text. A topic's messages repeat
/// the same schema text, so parsing it once instead of per message is most of the cost of
/// this encoding. Bounded: the oldest entry goes when full.
const CACHE_SIZE: usize = 64;

thread_local! {
    static SCHEMA_CACHE: RefCell<Vec<(Box<str>, Rc<ConnectType>)>> = const { RefCell::new(Vec::new()) };
}

fn cached_type(text: &str) -> Result<Rc<ConnectType>, DecodeErrorKind> {
    let hit = SCHEMA_CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(t, _)| t.len() == text.len() && **t == *text)
            .map(|(_, ty)| ty.clone())
    });
    if let Some(ty) = hit {
        return Ok(ty);
    }
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeErrorKind::InvalidSchema {
            detail: e.to_string(),
        })?;
    let ty = Rc::new(ConnectType::from_connect(&json)?);
    SCHEMA_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_SIZE {
            c.remove(0);
        }
        c.push((text.into(), ty.clone()));
    });
    Ok(ty)
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
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        ),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        other => J::String(other.describe()),
    }
}
