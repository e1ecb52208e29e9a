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

use crate::envelope::RowChangeFields;
use crate::error::DecodeErrorKind;
use crate::event::{Snapshot, Source};
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
        if !self.0.is_empty() {
            return d.deserialize_any(self);
        }
        // Nothing selected: serde_json skips the image in one tight loop (keys included, which
        // a map visitor would parse one by one). Only an image that is neither an object nor
        // null (an error further up) is parsed after all, as the visitor would.
        let raw = <&serde_json::value::RawValue>::deserialize(d)?;
        match raw.get().as_bytes().first() {
            Some(b'{') => Ok(Value::Struct(Row::default())),
            Some(b'n') => Ok(Value::Null),
            _ => serde_json::from_str::<Tree>(raw.get())
                .map(|tree| tree.0)
                .map_err(serde::de::Error::custom),
        }
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
        while let Some(Text(key)) = map.next_key()? {
            if self.0.contains(&key.as_ref()) {
                columns.push((Name::new(&key), map.next_value::<Tree>()?.0));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Struct(Row::from_columns(columns)))
    }
}

/// A plain-JSON row change read straight into its fields: no value tree for the envelope or
/// `source`, the row images as [`SelectedColumns`] keeps them. `None` for anything else and for
/// anything unexpected (another event kind, a wrong type, a repeated or unknown `source` field,
/// bad bytes): the tree path then decodes the record, with its precise errors. So whenever this
/// returns, it returns what the tree path would (checked by `tests/fixtures.rs` and the fuzz
/// targets).
pub(crate) fn plain_row_change(bytes: &[u8], columns: Columns) -> Option<RowChangeFields> {
    let text = utf8(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = RowChangeRoot(columns).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(fields)
}

struct RowChangeRoot(Columns);

impl<'de> DeserializeSeed<'de> for RowChangeRoot {
    type Value = RowChangeFields;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RowChangeFields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowChangeRoot {
    type Value = RowChangeFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a row change envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowChangeFields, A::Error> {
        use serde::de::Error;
        let (mut op, mut source, mut before, mut after, mut ts_ms) = (None, None, None, None, None);
        let mut seen = 0u8;
        while let Some(Text(key)) = map.next_key()? {
            let field = match key.as_ref() {
                "before" => 1,
                "after" => 2,
                "source" => 4,
                "op" => 8,
                "ts_ms" => 16,
                _ => 0,
            };
            if seen & field != 0 {
                return Err(A::Error::custom("repeated field"));
            }
            seen |= field;
            match field {
                1 => before = map.next_value_seed(Image(self.0))?,
                2 => after = map.next_value_seed(Image(self.0))?,
                4 => source = Some(map.next_value::<SourceFields<'de>>()?.into_source()),
                8 => op = Some(map.next_value::<Text<'de>>()?.0.into_owned()),
                16 => ts_ms = map.next_value::<Option<i64>>()?,
                // Read whole, as the tree path reads it (a bad escape fails here too).
                _ => drop(map.next_value::<Tree>()?),
            }
        }
        match (op, source) {
            (Some(op), Some(source)) => Ok(RowChangeFields {
                op,
                source,
                before,
                after,
                ts_ms,
            }),
            _ => Err(A::Error::custom("not a row change")),
        }
    }
}

/// A row image: an object (its selected columns) or null.
struct Image(Columns);

impl<'de> DeserializeSeed<'de> for Image {
    type Value = Option<Row>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Row>, D::Error> {
        let value = match self.0 {
            Columns::All => Tree::deserialize(d)?.0,
            Columns::Only(names) => SelectedColumns(names).deserialize(d)?,
        };
        match value {
            Value::Null => Ok(None),
            Value::Struct(row) => Ok(Some(row)),
            _ => Err(serde::de::Error::custom("row image is not an object")),
        }
    }
}

/// The `source` block as [`crate::envelope`]'s `source` reads it from a tree. Unknown fields
/// are refused (the tree path, which keeps them, decodes such a record).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFields<'a> {
    #[serde(borrow, default)]
    version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    connector: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    db: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    table: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    /// Debezium ≥ 2.6; not kept.
    #[serde(default, rename = "ts_us")]
    _ts_us: Option<i64>,
    /// Debezium ≥ 2.6; not kept.
    #[serde(default, rename = "ts_ns")]
    _ts_ns: Option<i64>,
    #[serde(default)]
    snapshot: Option<SnapshotMarker>,
    #[serde(borrow, default)]
    file: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pos: Option<u64>,
    #[serde(default)]
    row: Option<u64>,
    #[serde(borrow, default)]
    gtid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    server_id: Option<i64>,
    #[serde(default)]
    thread: Option<i64>,
    #[serde(borrow, default)]
    query: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    schema: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    lsn: Option<u64>,
    #[serde(default, rename = "txId")]
    tx_id: Option<i64>,
    #[serde(borrow, default)]
    sequence: Option<std::borrow::Cow<'a, str>>,
}

impl SourceFields<'_> {
    fn into_source(self) -> Source {
        let owned = |s: Option<std::borrow::Cow<'_, str>>| s.map(std::borrow::Cow::into_owned);
        Source {
            version: owned(self.version).unwrap_or_default(),
            connector: owned(self.connector).unwrap_or_default(),
            name: owned(self.name).unwrap_or_default(),
            db: owned(self.db).unwrap_or_default(),
            table: owned(self.table),
            ts_ms: self.ts_ms.unwrap_or(0),
            snapshot: self.snapshot.map_or(Snapshot::False, |s| s.0),
            file: owned(self.file),
            pos: self.pos,
            row: self.row.map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
            gtid: owned(self.gtid),
            server_id: self.server_id,
            thread: self.thread,
            query: owned(self.query),
            schema: owned(self.schema),
            lsn: self.lsn,
            tx_id: self.tx_id,
            sequence: owned(self.sequence),
        }
    }
}

/// `source.snapshot`: a boolean or Debezium's enum text.
struct SnapshotMarker(Snapshot);

impl<'de> Deserialize<'de> for SnapshotMarker {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Snapshot;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a snapshot marker")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Snapshot, E> {
                Ok(if v { Snapshot::True } else { Snapshot::False })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Snapshot, E> {
                Snapshot::parse(v).ok_or_else(|| E::custom("unknown snapshot marker"))
            }
        }
        d.deserialize_any(V).map(SnapshotMarker)
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

/// A string borrowed from the input where it can be (serde's own `Cow<str>` always copies).
struct Text<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(v.to_owned().into()))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(v.into()))
            }
        }
        d.deserialize_str(V)
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
    if starts_schema_wrapper(bytes)
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

/// Whether JSON text begins like Kafka Connect's `{"schema": …, "payload": …}` wrapper.
pub(crate) fn starts_schema_wrapper(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"{\"schema\"")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row change (or truncate) among the fixtures takes the fast path (the agreement with the tree
    /// path is `tests/fixtures.rs`).
    #[test]
    fn fixture_row_changes_take_the_fast_path() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/debezium/json.jsonl"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut fast = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
            let Some(value) = record["value"].as_str() else {
                continue;
            };
            let is_row_change = value.contains(r#""op":"#);
            let took = plain_row_change(value.as_bytes(), Columns::Only(&[])).is_some();
            assert_eq!(took, is_row_change, "{value}");
            fast += usize::from(took);
        }
        assert!(fast > 100, "{fast} row changes");
    }
}
