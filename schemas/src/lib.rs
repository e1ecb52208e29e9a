//! Sans-I/O decoding of Debezium change events into typed `chii_*` rows.
//!
//! This crate is the only place that knows what a Debezium message looks like. Bytes (and,
//! for Avro, schemas looked up by id) go in; a typed [`ChangeEvent`] comes out. It does no
//! I/O: no broker, no registry client, no tokio. The runtime reads [`schema_ids`], fetches
//! what its [`SchemaLookup`] lacks, then calls [`decode`]; families read rows with
//! [`Row::get`], [`Row::u64`] or [`Row::parse`] into the structs of [`rows`], and fence
//! effects with [`RowChange::position`].
//!
//! Encodings ([`Format`]): JSON without schema (what Bangumi runs), JSON with an embedded
//! Connect schema, and Confluent-framed Avro; `Auto` tells them apart per key and value.
//!
//! # Layout
//! - [`event`]: [`ChangeEvent`] and its parts ([`RowChange`], [`Source`], …).
//! - [`value`]: [`Value`], [`Decimal`], [`Row`]; `row_de`: [`Row::parse`].
//! - [`position`]: [`SourcePosition`], its ordering rules and sortable encodings.
//! - [`rows`]: serde structs of the `chii_*` tables the families use.
//! - [`error`]: [`DecodeError`], [`RowError`].
//! - `json`, `avro`, `semantic`, `envelope`: the decoders and the event classifier.
//! - [`encode`]: the inverse of JSON-without-schema decoding, for tests and tools.

pub mod encode;
pub mod error;
pub mod event;
pub mod position;
pub mod rows;
pub mod value;

mod avro;
mod envelope;
mod json;
mod name;
mod row_de;
mod semantic;
mod time;

pub use avro::{SchemaLookup, SchemaSet};
pub use error::{DecodeError, DecodeErrorKind, Part, RowError, RowErrorKind};
pub use event::{
    ChangeEvent, Heartbeat, Op, RowChange, SchemaChange, Snapshot, Source, TableChange,
    Transaction, Truncate, TxStatus,
};
pub use name::Name;
pub use position::{LogKind, Phase, SourcePosition};
pub use semantic::ConnectType;
pub use value::{Columns, Decimal, Row, Value};

/// How a record's key and value are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Decide per key and per value: Confluent magic byte 0 ⇒ Avro; a JSON object with
    /// exactly `schema` and `payload` ⇒ JSON with schema; any other JSON ⇒ without schema.
    #[default]
    Auto,
    /// JSON converter, `schemas.enable=false`.
    Json,
    /// JSON converter, `schemas.enable=true`.
    JsonSchema,
    /// Confluent Avro converter.
    Avro,
}

/// One Kafka record, borrowed from the consumer.
#[derive(Clone, Copy, Debug)]
pub struct RawRecord<'a> {
    /// Topic name (used in errors and to name a tombstone's table).
    pub topic: &'a str,
    /// Key bytes, `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value bytes, `None` for a null value (tombstone).
    pub value: Option<&'a [u8]>,
}

/// The table a Debezium topic (`<prefix>.<db>.<table>`) is named after: its last segment.
pub fn topic_table(topic: &str) -> &str {
    topic.rsplit('.').next().unwrap_or(topic)
}

/// The registry schema ids a record references (key first, then value; deduplicated).
/// Empty for JSON: JSON text never starts with the Confluent magic byte 0.
pub fn schema_ids(record: &RawRecord) -> Vec<u32> {
    let mut ids = Vec::new();
    for id in [record.key, record.value]
        .into_iter()
        .flatten()
        .filter_map(avro::frame_id)
    {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Decodes one record, every column kept. Errors are permanent (the same bytes always fail).
pub fn decode(
    record: &RawRecord,
    format: Format,
    schemas: &dyn SchemaLookup,
) -> Result<ChangeEvent, DecodeError> {
    decode_columns(record, format, Columns::All, schemas)
}

/// Decodes one record, keeping only the row-image columns `columns` selects (see [`Columns`]).
/// Errors are permanent (the same bytes always fail).
pub fn decode_columns(
    record: &RawRecord,
    format: Format,
    columns: Columns,
    schemas: &dyn SchemaLookup,
) -> Result<ChangeEvent, DecodeError> {
    decode_with(record, format, columns, schemas, true)
}

/// [`decode_columns`] without the plain-JSON fast path, which must always agree with it (the
/// crate's tests and the fuzz targets check that it does).
#[doc(hidden)]
pub fn decode_columns_by_tree(
    record: &RawRecord,
    format: Format,
    columns: Columns,
    schemas: &dyn SchemaLookup,
) -> Result<ChangeEvent, DecodeError> {
    decode_with(record, format, columns, schemas, false)
}

fn decode_with(
    record: &RawRecord,
    format: Format,
    columns: Columns,
    schemas: &dyn SchemaLookup,
    fast_path: bool,
) -> Result<ChangeEvent, DecodeError> {
    let key = record
        .key
        .map(|k| decode_part(k, format, Columns::All, schemas))
        .transpose()
        .map_err(|kind| DecodeError::new(kind, record.topic, Part::Key))?;
    let value_error = |(kind, table): envelope::Failure| {
        let mut e = DecodeError::new(kind, record.topic, Part::Value);
        e.table = table;
        e
    };
    if let Some(fields) = record
        .value
        .filter(|v| fast_path && is_plain_json(v, format))
        .and_then(|v| json::plain_row_change(v, columns))
    {
        let key = key
            .map(|k| envelope::into_row(k, "key"))
            .transpose()
            .map_err(|kind| value_error((kind, None)))?;
        return envelope::assemble(key, fields, columns).map_err(value_error);
    }
    let value = record
        .value
        .map(|v| decode_part(v, format, columns, schemas))
        .transpose()
        .map_err(|kind| value_error((kind, None)))?;
    envelope::classify(record.topic, key, value, columns).map_err(value_error)
}

/// Whether `bytes` in `format` is JSON without an embedded schema (what the fast path reads).
fn is_plain_json(bytes: &[u8], format: Format) -> bool {
    match format {
        Format::Json => true,
        Format::Auto => bytes.first() != Some(&0) && !json::starts_schema_wrapper(bytes),
        Format::JsonSchema | Format::Avro => false,
    }
}

/// `columns` is a hint for the plain-JSON parser; [`envelope::classify`] applies it for all.
fn decode_part(
    bytes: &[u8],
    format: Format,
    columns: Columns,
    schemas: &dyn SchemaLookup,
) -> Result<Value, DecodeErrorKind> {
    match format {
        Format::Json => json::decode_plain(bytes, columns),
        Format::JsonSchema => json::decode_with_schema(bytes),
        Format::Avro => avro::decode(bytes, schemas),
        Format::Auto if bytes.first() == Some(&0) => avro::decode(bytes, schemas),
        Format::Auto => json::decode_auto(bytes, columns),
    }
}
