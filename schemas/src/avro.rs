//! Avro in the Confluent wire format: magic byte `0`, 4-byte big-endian schema id, then one
//! Avro datum written with that (registered) schema.
//!
//! Sans-I/O: schemas come from a [`SchemaLookup`] the runtime fills ahead of time (it reads
//! [`crate::schema_ids`], fetches missing ids from the registry, and treats "registry down"
//! as transient itself). [`SchemaSet`] is the ready-made lookup: it keeps, beside each parsed
//! `apache_avro::Schema`, the [`ConnectType`] read from the schema *text*, because the parsed
//! schema drops the `connect.name` attributes that mark `io.debezium.time.*` types.
//!
//! # Layout
//! - [`SchemaLookup`]: the trait at the edge (sync, id → schema).
//! - [`SchemaSet`]: a map of registered schemas implementing it.
//! - `frame_id`: reads the wire-format header.
//! - `decode`: frame → datum → `Value` tree, retyped by the Connect semantics. It caps
//!   apache-avro's per-allocation limit at 64 MiB (a process-wide setting, set once), so a
//!   forged length prefix cannot make it allocate the default 512 MiB.

use std::collections::HashMap;
use std::io;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;

use crate::error::DecodeErrorKind;
use crate::semantic::ConnectType;
use crate::value::{Decimal, Row, Value};

/// Registry schemas by id, as the decoder needs them. Implementations are filled ahead
/// of time; `None` at decode time means the id is unknown (a permanent error).
pub trait SchemaLookup {
    /// The parsed Avro schema registered under `id`.
    fn schema(&self, id: u32) -> Option<&Schema>;

    /// The Connect semantic types of `id`, read from the registered schema text (which keeps
    /// `connect.name`). Without it (the default), Avro logical types and decimal scales are
    /// still honoured, but Debezium time types stay raw integers, as in JSON without schema.
    fn connect_type(&self, id: u32) -> Option<&ConnectType> {
        let _ = id;
        None
    }
}

/// No schemas at all: for families that only read JSON.
impl SchemaLookup for () {
    fn schema(&self, _id: u32) -> Option<&Schema> {
        None
    }
}

impl SchemaLookup for HashMap<u32, Schema> {
    fn schema(&self, id: u32) -> Option<&Schema> {
        self.get(&id)
    }
}

/// Registered schemas by id, each with its Connect semantics.
#[derive(Debug, Default)]
pub struct SchemaSet {
    by_id: HashMap<u32, (Schema, ConnectType)>,
}

impl SchemaSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the schema text the registry returned for `id` (`GET /schemas/ids/{id}` → `schema`).
    pub fn insert(&mut self, id: u32, schema_text: &str) -> Result<(), DecodeErrorKind> {
        let invalid = |detail: String| DecodeErrorKind::InvalidSchema { detail };
        let json: serde_json::Value =
            serde_json::from_str(schema_text).map_err(|e| invalid(format!("schema {id}: {e}")))?;
        let schema = Schema::parse(&json).map_err(|e| invalid(format!("schema {id}: {e}")))?;
        let connect = ConnectType::from_avro_json(&json)?;
        self.by_id.insert(id, (schema, connect));
        Ok(())
    }

    /// Whether `id` is present.
    pub fn contains(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Number of schemas.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl SchemaLookup for SchemaSet {
    fn schema(&self, id: u32) -> Option<&Schema> {
        self.by_id.get(&id).map(|(s, _)| s)
    }

    fn connect_type(&self, id: u32) -> Option<&ConnectType> {
        self.by_id.get(&id).map(|(_, c)| c)
    }
}

/// Cap on one Avro allocation (see `decode`).
const MAX_ALLOCATION: usize = 64 << 20;

/// The schema id of a Confluent frame, if `bytes` is one.
pub(crate) fn frame_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Decodes one Confluent-framed Avro datum into a retyped value tree.
pub(crate) fn decode(bytes: &[u8], schemas: &dyn SchemaLookup) -> Result<Value, DecodeErrorKind> {
    match bytes.first() {
        None => {
            return Err(DecodeErrorKind::TruncatedAvro {
                detail: "empty frame".into(),
            });
        }
        Some(&b) if b != 0 => return Err(DecodeErrorKind::BadMagic { found: b }),
        _ => {}
    }
    let id = frame_id(bytes).ok_or_else(|| DecodeErrorKind::TruncatedAvro {
        detail: format!("{}-byte frame, header needs 5", bytes.len()),
    })?;
    // A length prefix can claim more than the frame holds; cap what apache-avro allocates for
    // one (process-wide, first setter wins; 64 MiB is far above any Kafka message).
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
    let schema = schemas
        .schema(id)
        .ok_or(DecodeErrorKind::UnknownSchemaId(id))?;
    let mut body = &bytes[5..];
    let datum = GenericDatumReader::builder(schema)
        .build()
        .and_then(|reader| reader.read_value(&mut body))
        .map_err(avro_error)?;
    if !body.is_empty() {
        return Err(DecodeErrorKind::InvalidAvro {
            detail: format!("{} trailing bytes after the datum", body.len()),
        });
    }
    let mut value = convert(datum);
    let derived;
    let connect = match schemas.connect_type(id) {
        Some(c) => c,
        None => {
            let json =
                serde_json::to_value(schema).map_err(|e| DecodeErrorKind::InvalidSchema {
                    detail: e.to_string(),
                })?;
            derived = ConnectType::from_avro_json(&json)?;
            &derived
        }
    };
    connect.apply(&mut value, "")?;
    Ok(value)
}

fn avro_error(e: apache_avro::Error) -> DecodeErrorKind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::UnexpectedEof
        {
            return DecodeErrorKind::TruncatedAvro {
                detail: e.to_string(),
            };
        }
        cause = c.source();
    }
    DecodeErrorKind::InvalidAvro {
        detail: e.to_string(),
    }
}

fn convert(v: AvroValue) -> Value {
    match v {
        AvroValue::Null => Value::Null,
        AvroValue::Boolean(b) => Value::Bool(b),
        AvroValue::Int(i) => Value::Int(i64::from(i)),
        AvroValue::Long(i) => Value::Int(i),
        AvroValue::Float(f) => Value::Float(f64::from(f)),
        AvroValue::Double(f) => Value::Float(f),
        AvroValue::Bytes(b) | AvroValue::Fixed(_, b) => Value::Bytes(b),
        AvroValue::String(s) | AvroValue::Enum(_, s) => Value::Text(s),
        AvroValue::Union(_, v) => convert(*v),
        AvroValue::Array(items) => Value::Array(items.into_iter().map(convert).collect()),
        AvroValue::Map(map) => {
            let mut columns: Vec<(String, Value)> =
                map.into_iter().map(|(k, v)| (k, convert(v))).collect();
            columns.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Struct(Row::new(columns))
        }
        AvroValue::Record(fields) => {
            Value::Struct(Row::new(fields.into_iter().map(|(k, v)| (k, convert(v)))))
        }
        AvroValue::Date(d) => Value::Date(d),
        // The scale lives in the schema; `ConnectType::apply` sets it.
        AvroValue::Decimal(d) => Value::Decimal(Decimal {
            unscaled: Vec::<u8>::try_from(&d).unwrap_or_default(),
            scale: 0,
        }),
        AvroValue::BigDecimal(d) => Value::Text(d.to_string()),
        AvroValue::TimeMillis(t) => Value::Time(i64::from(t) * 1000),
        AvroValue::TimeMicros(t) => Value::Time(t),
        AvroValue::TimestampMillis(t) | AvroValue::LocalTimestampMillis(t) => {
            Value::DateTime(t.saturating_mul(1000))
        }
        AvroValue::TimestampMicros(t) | AvroValue::LocalTimestampMicros(t) => Value::DateTime(t),
        AvroValue::TimestampNanos(t) | AvroValue::LocalTimestampNanos(t) => {
            Value::DateTime(t.div_euclid(1000))
        }
        AvroValue::Duration(d) => Value::Text(format!("{d:?}")),
        AvroValue::Uuid(u) => Value::Text(u.to_string()),
    }
}
