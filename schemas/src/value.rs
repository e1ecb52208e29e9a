//! Typed column values and rows, the currency every decoder produces.
//!
//! A [`Row`] is an ordered list of `(column, Value)` pairs as Debezium emitted
//! them; a [`Value`] is one column typed as precisely as the encoding allows.
//! JSON without an embedded schema cannot tell an `io.debezium.time.Date` from
//! an integer, so there the raw value is kept (`Int`); JSON with a schema and
//! Avro interpret the Connect semantic names (see `semantic`).
//!
//! This is not a serde data model: families read rows through [`Row::get`],
//! the integer helpers, or [`Row::parse`] into the structs of [`crate::rows`].
//!
//! # Layout
//! - [`Value`]: the typed scalar (or nested struct/array) of one column.
//! - [`Decimal`]: an exact `DECIMAL` as unscaled big-endian two's complement + scale.
//! - [`Row`]: the columns of one row image or key, with the table it belongs to.

use std::fmt;
use std::sync::Arc;

use crate::error::RowError;
use crate::name::Name;

/// One column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// Connect `boolean` (MySQL `BIT(1)`, `BOOLEAN`; `TINYINT(1)` arrives as an integer).
    Bool(bool),
    /// Any integer that fits `i64` (`int8`…`int64`, `YEAR`, unsigned up to `BIGINT` in `long` mode).
    Int(i64),
    /// An integer above `i64::MAX` (only from JSON without schema).
    UInt(u64),
    /// `float`/`double` (also `DECIMAL` in `double` mode).
    Float(f64),
    /// `DECIMAL` in `precise` mode (`org.apache.kafka.connect.data.Decimal`).
    Decimal(Decimal),
    /// Strings: `CHAR`/`VARCHAR`/`TEXT`, `ENUM`, `SET`, `DECIMAL` in `string` mode.
    Text(String),
    /// Binary columns (`BLOB`, `BINARY`, `io.debezium.data.Bits`).
    Bytes(Vec<u8>),
    /// `DATE`: days since 1970-01-01 (`io.debezium.time.Date`, Connect `Date`).
    Date(i32),
    /// `TIME`: microseconds since midnight, may be negative or ≥ 24 h in MySQL
    /// (`io.debezium.time.MicroTime`, `Time`, `NanoTime`, Connect `Time`).
    Time(i64),
    /// `DATETIME(p)`: microseconds since 1970-01-01T00:00:00 in the server's wall clock, no zone
    /// (`io.debezium.time.Timestamp`, `MicroTimestamp`, `NanoTimestamp`, Connect `Timestamp`).
    DateTime(i64),
    /// `TIMESTAMP`: microseconds since the Unix epoch, UTC (`io.debezium.time.ZonedTimestamp`).
    Timestamp(i64),
    /// A `JSON` column, as its text (`io.debezium.data.Json`).
    Json(String),
    /// A nested struct (e.g. `source`, geometry values).
    Struct(Row),
    /// An array (e.g. transaction `data_collections`).
    Array(Vec<Value>),
}

impl Value {
    /// A short name of the variant, used in error messages ("found Text").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::DateTime(_) => "datetime",
            Value::Timestamp(_) => "timestamp",
            Value::Json(_) => "json",
            Value::Struct(_) => "struct",
            Value::Array(_) => "array",
        }
    }

    /// The value as `i64` when it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(v) => Some(v),
            Value::UInt(v) => i64::try_from(v).ok(),
            Value::Decimal(ref d) if d.scale == 0 => {
                d.to_i128().and_then(|v| i64::try_from(v).ok())
            }
            _ => None,
        }
    }

    /// The value as `u64` when it is a non-negative integer in range.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(v) => u64::try_from(v).ok(),
            Value::UInt(v) => Some(v),
            Value::Decimal(ref d) if d.scale == 0 => {
                d.to_i128().and_then(|v| u64::try_from(v).ok())
            }
            _ => None,
        }
    }

    /// The value as text when it is `Text` or `Json`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Json(s) => Some(s),
            _ => None,
        }
    }

    /// A compact rendering for error messages: kind and a value cut to 40 characters.
    pub fn describe(&self) -> String {
        let shown = match self {
            Value::Null => return "null".to_owned(),
            Value::Bool(v) => v.to_string(),
            Value::Int(v) => v.to_string(),
            Value::UInt(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Decimal(d) => d.to_string(),
            Value::Text(s) | Value::Json(s) => format!("{s:?}"),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Date(v) => v.to_string(),
            Value::Time(v) | Value::DateTime(v) | Value::Timestamp(v) => v.to_string(),
            Value::Struct(r) => format!("{} columns", r.len()),
            Value::Array(a) => format!("{} items", a.len()),
        };
        let mut cut: String = shown.chars().take(40).collect();
        if cut.len() < shown.len() {
            cut.push('…');
        }
        format!("{} {cut}", self.kind())
    }
}

/// An exact decimal: `unscaled × 10^-scale`, `unscaled` in big-endian two's complement
/// (the Connect `Decimal` byte form).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// Big-endian two's-complement unscaled value (empty means 0).
    pub unscaled: Vec<u8>,
    /// Digits after the decimal point.
    pub scale: u32,
}

impl Decimal {
    /// The unscaled value when it fits `i128` (always for MySQL `DECIMAL(p ≤ 38)`).
    pub fn to_i128(&self) -> Option<i128> {
        if self.unscaled.len() > 16 {
            return None;
        }
        let negative = self.unscaled.first().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
        buf[16 - self.unscaled.len()..].copy_from_slice(&self.unscaled);
        Some(i128::from_be_bytes(buf))
    }

    /// Builds a decimal from an unscaled `i128` (minimal two's-complement bytes).
    pub fn from_i128(unscaled: i128, scale: u32) -> Self {
        let bytes = unscaled.to_be_bytes();
        let mut start = 0;
        while start < 15 {
            let (b, next) = (bytes[start], bytes[start + 1]);
            if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
                start += 1;
            } else {
                break;
            }
        }
        Decimal {
            unscaled: bytes[start..].to_vec(),
            scale,
        }
    }

    /// The value as `f64` (lossy).
    pub fn to_f64(&self) -> f64 {
        let digits = self.to_string();
        digits.parse().unwrap_or(f64::NAN)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Magnitude in base 1e9 limbs by long division over the big-endian bytes.
        let negative = self.unscaled.first().is_some_and(|b| b & 0x80 != 0);
        let mut mag = self.unscaled.clone();
        if negative {
            // two's complement negate: invert and add one
            for b in mag.iter_mut() {
                *b = !*b;
            }
            for b in mag.iter_mut().rev() {
                let (v, carry) = b.overflowing_add(1);
                *b = v;
                if !carry {
                    break;
                }
            }
        }
        let mut digits = String::new();
        while mag.iter().any(|&b| b != 0) {
            let mut rem: u32 = 0;
            for b in mag.iter_mut() {
                let cur = (rem << 8) | u32::from(*b);
                *b = (cur / 10) as u8;
                rem = cur % 10;
            }
            digits.push(char::from(b'0' + rem as u8));
        }
        let scale = self.scale as usize;
        while digits.len() <= scale {
            digits.push('0');
        }
        let digits: String = digits.chars().rev().collect();
        let (int, frac) = digits.split_at(digits.len() - scale);
        if negative {
            f.write_str("-")?;
        }
        f.write_str(int)?;
        if scale > 0 {
            write!(f, ".{frac}")?;
        }
        Ok(())
    }
}

/// Which columns of the row images (`before`/`after`) decoding keeps. A family that reads a
/// few columns says which: the others are skipped unparsed (JSON) or dropped after decoding
/// (Avro, JSON with schema), so decoding costs little more than finding the envelope's fields.
/// Keys, `source` and the other envelope fields are always kept whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Columns {
    /// Every column (what typed rows and tools need).
    #[default]
    All,
    /// Only the columns of these names. With none, an image is skipped but for its presence
    /// (an empty row where Debezium sent one).
    Only(&'static [&'static str]),
}

impl Columns {
    /// Whether `column` is kept.
    pub fn keeps(&self, column: &str) -> bool {
        match self {
            Columns::All => true,
            Columns::Only(names) => names.contains(&column),
        }
    }
}

/// The columns of one row image (or key), in the order Debezium emitted them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    table: Option<Arc<str>>,
    columns: Vec<(Name, Value)>,
}

impl Row {
    /// A row of the given columns, belonging to no known table.
    pub fn new<N: Into<Name>>(columns: impl IntoIterator<Item = (N, Value)>) -> Self {
        Row {
            table: None,
            columns: columns.into_iter().map(|(n, v)| (n.into(), v)).collect(),
        }
    }

    /// A row from already built columns (no conversion).
    pub(crate) fn from_columns(columns: Vec<(Name, Value)>) -> Self {
        Row {
            table: None,
            columns,
        }
    }

    /// The same row, labelled with its table (used in [`RowError`] messages).
    pub fn with_table(mut self, table: Arc<str>) -> Self {
        self.table = Some(table);
        self
    }

    pub(crate) fn set_table(&mut self, table: Option<Arc<str>>) {
        self.table = table;
    }

    /// The table this row belongs to, when known.
    pub fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// The value of `column`, if present.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, v)| v)
    }

    /// Removes and returns `column` (used while building events from decoded trees).
    pub(crate) fn take(&mut self, column: &str) -> Option<Value> {
        let idx = self
            .columns
            .iter()
            .position(|(c, _)| c.as_bytes() == column.as_bytes())?;
        Some(self.columns.swap_remove(idx).1)
    }

    /// All columns, in emitted order.
    pub fn columns(&self) -> &[(Name, Value)] {
        &self.columns
    }

    /// Keeps only the columns `keep` selects.
    pub(crate) fn retain(&mut self, keep: &Columns) {
        if let Columns::Only(_) = keep {
            self.columns.retain(|(c, _)| keep.keeps(c));
        }
    }

    /// Mutable access to the columns (used by the semantic pass).
    pub(crate) fn columns_mut(&mut self) -> &mut Vec<(Name, Value)> {
        &mut self.columns
    }

    /// Column names, in emitted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(c, _)| c.as_str())
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the row has no columns (e.g. a key of a table without primary key).
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// A required non-negative integer column (ids, uids): missing, null, negative or
    /// non-integer values are a [`RowError`] naming table, column and what was found.
    pub fn u64(&self, column: &str) -> Result<u64, RowError> {
        match self.get(column) {
            None => Err(RowError::missing(self.table(), column)),
            Some(v) => v.as_u64().ok_or_else(|| {
                RowError::wrong_type(self.table(), column, "unsigned integer", v.describe())
            }),
        }
    }

    /// A required integer column.
    pub fn i64(&self, column: &str) -> Result<i64, RowError> {
        match self.get(column) {
            None => Err(RowError::missing(self.table(), column)),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| RowError::wrong_type(self.table(), column, "integer", v.describe())),
        }
    }
}
