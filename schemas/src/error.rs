//! Typed errors of this crate: [`DecodeError`] for bytes that are not a Debezium event,
//! [`RowError`] for a row that lacks a column a family needs or has it in the wrong type.
//!
//! Both are permanent by nature (the same bytes fail the same way on every retry): the
//! runtime sends such records to the DLQ. A registry that cannot be reached is not an
//! error of this crate: the runtime prefetches schemas (see [`crate::schema_ids`]) and
//! classifies that failure as transient before calling [`crate::decode`]; a schema id
//! still unknown at decode time is [`DecodeErrorKind::UnknownSchemaId`], permanent.
//!
//! # Layout
//! - [`DecodeError`]: kind + where (topic, key or value part, table when known).
//! - [`DecodeErrorKind`]: one variant per failing step.
//! - [`RowError`] / [`RowErrorKind`]: a missing or mistyped column of a typed row.

use std::fmt;

/// Which part of the Kafka record failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The record key.
    Key,
    /// The record value.
    Value,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Key => "key",
            Part::Value => "value",
        })
    }
}

/// What went wrong while decoding.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The bytes are not valid UTF-8 text (JSON encodings only).
    #[error("invalid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The text is not JSON.
    #[error("malformed JSON: {detail}")]
    MalformedJson {
        /// The parser's message (with line and column).
        detail: String,
    },
    /// Valid data, but no Debezium event shape (envelope, schema change, heartbeat, transaction).
    #[error("not a Debezium event: {found}")]
    NotAnEnvelope {
        /// What the root looked like.
        found: String,
    },
    /// A `{"schema","payload"}` message whose schema cannot be read.
    #[error("invalid embedded schema: {detail}")]
    InvalidSchema {
        /// What was wrong.
        detail: String,
    },
    /// `op` is not one of `c`, `u`, `d`, `r`, `t`.
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    /// A field the event kind requires is absent or null.
    #[error("missing field {field}")]
    MissingField {
        /// Dotted path of the field (`source.file`, `op`).
        field: String,
    },
    /// A field or column has a type its schema (or the envelope format) does not allow.
    #[error("column {column}: expected {expected}, found {found}")]
    WrongType {
        /// Dotted path of the column or field.
        column: String,
        /// What was expected.
        expected: &'static str,
        /// What was found (kind and a short rendering).
        found: String,
    },
    /// Avro expected (configured or detected) but the Confluent magic byte 0 is absent.
    #[error("not Confluent Avro: first byte {found:#04x}")]
    BadMagic {
        /// The first byte.
        found: u8,
    },
    /// The Avro frame or body ends early.
    #[error("truncated Avro: {detail}")]
    TruncatedAvro {
        /// What was being read.
        detail: String,
    },
    /// Any other Avro body error (bad union index, negative length, trailing bytes…).
    #[error("invalid Avro body: {detail}")]
    InvalidAvro {
        /// The Avro library's message.
        detail: String,
    },
    /// The frame names a schema id the lookup does not have.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
}

/// A record that could not be decoded into a [`crate::ChangeEvent`]. Always permanent.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeError {
    /// What failed.
    pub kind: DecodeErrorKind,
    /// The record's topic.
    pub topic: String,
    /// Key or value.
    pub part: Part,
    /// The table (`source.table`), when it was read before the failure.
    pub table: Option<String>,
}

impl DecodeError {
    pub(crate) fn new(kind: DecodeErrorKind, topic: &str, part: Part) -> Self {
        DecodeError {
            kind,
            topic: topic.to_owned(),
            part,
            table: None,
        }
    }

    /// A stable, bounded label for metrics and DLQ headers (`malformed_json`, …).
    pub fn label(&self) -> &'static str {
        match self.kind {
            DecodeErrorKind::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeErrorKind::MalformedJson { .. } => "malformed_json",
            DecodeErrorKind::NotAnEnvelope { .. } => "not_an_envelope",
            DecodeErrorKind::InvalidSchema { .. } => "invalid_schema",
            DecodeErrorKind::UnknownOp(_) => "unknown_op",
            DecodeErrorKind::MissingField { .. } => "missing_field",
            DecodeErrorKind::WrongType { .. } => "wrong_type",
            DecodeErrorKind::BadMagic { .. } => "bad_magic",
            DecodeErrorKind::TruncatedAvro { .. } => "truncated_avro",
            DecodeErrorKind::InvalidAvro { .. } => "invalid_avro",
            DecodeErrorKind::UnknownSchemaId(_) => "unknown_schema_id",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic {} {}", self.topic, self.part)?;
        if let Some(table) = &self.table {
            write!(f, " (table {table})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for DecodeError {}

/// Kind of a [`RowError`].
#[derive(Clone, Debug, PartialEq)]
pub enum RowErrorKind {
    /// The column is absent from the row.
    Missing,
    /// The column is present with a value the target type cannot take.
    WrongType {
        /// What the target wanted.
        expected: String,
        /// What was found.
        found: String,
    },
    /// Anything else serde reported (kept as its message).
    Other(String),
}

/// A typed row could not be read: names table, column and what was found.
#[derive(Clone, Debug, PartialEq)]
pub struct RowError {
    /// The table, when the row knows it.
    pub table: Option<String>,
    /// The column (empty when the failure is about the row as a whole).
    pub column: String,
    /// What was wrong.
    pub kind: RowErrorKind,
}

impl RowError {
    pub(crate) fn missing(table: Option<&str>, column: &str) -> Self {
        RowError {
            table: table.map(str::to_owned),
            column: column.to_owned(),
            kind: RowErrorKind::Missing,
        }
    }

    pub(crate) fn wrong_type(
        table: Option<&str>,
        column: &str,
        expected: &str,
        found: String,
    ) -> Self {
        RowError {
            table: table.map(str::to_owned),
            column: column.to_owned(),
            kind: RowErrorKind::WrongType {
                expected: expected.to_owned(),
                found,
            },
        }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.as_deref().unwrap_or("?");
        match &self.kind {
            RowErrorKind::Missing => write!(f, "table {table}: missing column {}", self.column),
            RowErrorKind::WrongType { expected, found } => {
                write!(
                    f,
                    "table {table}: column {}: expected {expected}, found {found}",
                    self.column
                )
            }
            RowErrorKind::Other(msg) => write!(f, "table {table}: column {}: {msg}", self.column),
        }
    }
}

impl std::error::Error for RowError {}
