//! `Row::parse`: a serde `Deserializer` over a decoded [`Row`], so families read typed
//! structs (see [`crate::rows`]) without a detour through `serde_json::Value`.
//!
//! Not a general serde format: it only reads rows this crate built. Unknown columns are
//! ignored by the target structs (schema evolution); a missing required column or a
//! value the target type cannot take becomes a [`RowError`] naming table and column.
//!
//! # Layout
//! - `Row::parse`: the entry point.
//! - `RowMap` / `ValueDe`: map access over columns and the per-value deserializer.
//! - `DeError`: serde's error type, turned into a [`RowError`] at the end.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use crate::error::{RowError, RowErrorKind};
use crate::name::Name;
use crate::value::{Row, Value};

impl Row {
    /// Reads the row into `T` (a serde struct; unknown columns ignored).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, RowError> {
        T::deserialize(RowDe(self)).map_err(|e| RowError {
            table: self.table().map(str::to_owned),
            column: e.column,
            kind: e.kind,
        })
    }
}

#[derive(Debug)]
struct DeError {
    column: String,
    kind: RowErrorKind,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {:?}", self.column, self.kind)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            column: String::new(),
            kind: RowErrorKind::Other(msg.to_string()),
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError {
            column: String::new(),
            kind: RowErrorKind::WrongType {
                expected: exp.to_string(),
                found: unexp.to_string(),
            },
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            column: field.to_owned(),
            kind: RowErrorKind::Missing,
        }
    }
}

struct RowDe<'a>(&'a Row);

impl<'de> de::Deserializer<'de> for RowDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(RowMap {
            iter: self.0.columns().iter(),
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct RowMap<'a> {
    iter: std::slice::Iter<'a, (Name, Value)>,
    current: Option<&'a (Name, Value)>,
}

impl<'de> MapAccess<'de> for RowMap<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some(entry) => {
                self.current = Some(entry);
                seed.deserialize(entry.0.as_str().into_deserializer())
                    .map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((column, value)) = self.current.take() else {
            return Err(de::Error::custom("value requested before key"));
        };
        seed.deserialize(ValueDe(value)).map_err(|mut e| {
            if e.column.is_empty() {
                e.column = column.to_string();
                if let RowErrorKind::WrongType { found, .. } = &mut e.kind {
                    *found = value.describe();
                }
            } else {
                e.column = format!("{column}.{}", e.column);
            }
            e
        })
    }
}

struct ValueDe<'a>(&'a Value);

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(v) => visitor.visit_i64(*v),
            Value::UInt(v) => visitor.visit_u64(*v),
            Value::Float(v) => visitor.visit_f64(*v),
            Value::Decimal(d) => match (d.scale, d.to_i128()) {
                (0, Some(v)) => visitor.visit_i128(v),
                _ => visitor.visit_string(d.to_string()),
            },
            Value::Text(s) | Value::Json(s) => visitor.visit_borrowed_str(s),
            Value::Bytes(b) => visitor.visit_borrowed_bytes(b),
            Value::Date(v) => visitor.visit_i32(*v),
            Value::Time(v) | Value::DateTime(v) | Value::Timestamp(v) => visitor.visit_i64(*v),
            Value::Struct(r) => visitor.visit_map(RowMap {
                iter: r.columns().iter(),
                current: None,
            }),
            Value::Array(items) => visitor.visit_seq(Items(items.iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// `TINYINT(1)` arrives as an integer: 0 is false, anything else true.
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Int(v) => visitor.visit_bool(*v != 0),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct Items<'a>(std::slice::Iter<'a, Value>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.0.next() {
            None => Ok(None),
            Some(v) => seed.deserialize(ValueDe(v)).map(Some),
        }
    }
}
