//! Reading an Avro schema (as JSON text, the way a registry serves it) into a
//! [`ConnectType`], keeping the `connect.name` / `connect.parameters` attributes that
//! Confluent's AvroConverter writes on primitive types and that `apache_avro::Schema` drops.
//!
//! Not a general Avro schema parser: `apache_avro` validates and decodes; this only reads the
//! shape (records, unions with one non-null branch, arrays, maps, named references) and the
//! semantic names.
//!
//! # Layout
//! - `avro_type`: one schema node → `ConnectType`, registering named records for references.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::{ConnectType, Kind, Semantic, invalid, scale_param, semantic_of};
use crate::error::DecodeErrorKind;

pub(super) fn avro_type(
    s: &Json,
    ns: Option<&str>,
    names: &mut HashMap<String, ConnectType>,
) -> Result<ConnectType, DecodeErrorKind> {
    let prim = |kind| ConnectType {
        kind,
        semantic: Semantic::None,
    };
    match s {
        Json::String(name) => Ok(match name.as_str() {
            "int" | "long" => prim(Kind::Int),
            "float" | "double" => prim(Kind::Float),
            "boolean" => prim(Kind::Bool),
            "string" => prim(Kind::Str),
            "bytes" => prim(Kind::Bytes),
            "null" => ConnectType::ANY,
            other => {
                let full = match ns {
                    Some(ns) if !other.contains('.') => format!("{ns}.{other}"),
                    _ => other.to_owned(),
                };
                names
                    .get(&full)
                    .or_else(|| names.get(other))
                    .cloned()
                    .unwrap_or(ConnectType::ANY)
            }
        }),
        Json::Array(branches) => {
            let mut non_null = branches.iter().filter(|b| b.as_str() != Some("null"));
            match (non_null.next(), non_null.next()) {
                (Some(one), None) => avro_type(one, ns, names),
                _ => {
                    // Still register named types declared inside the union.
                    for b in branches {
                        avro_type(b, ns, names)?;
                    }
                    Ok(ConnectType::ANY)
                }
            }
        }
        Json::Object(obj) => {
            let ty = obj
                .get("type")
                .ok_or_else(|| invalid("Avro type without \"type\""))?;
            let semantic = semantic_of(
                obj.get("connect.name").and_then(Json::as_str),
                scale_param(obj.get("connect.parameters"))
                    .or_else(|| obj.get("scale").and_then(Json::as_u64).map(|s| s as u32)),
            );
            let semantic = match (semantic, obj.get("logicalType").and_then(Json::as_str)) {
                (Semantic::None, Some("decimal")) => {
                    Semantic::Decimal(obj.get("scale").and_then(Json::as_u64).unwrap_or(0) as u32)
                }
                (s, _) => s,
            };
            let kind = match ty.as_str() {
                Some("record") => {
                    let name = obj.get("name").and_then(Json::as_str).unwrap_or("");
                    let own_ns = obj.get("namespace").and_then(Json::as_str).or(ns);
                    let full = match (own_ns, name.contains('.')) {
                        (Some(n), false) => format!("{n}.{name}"),
                        _ => name.to_owned(),
                    };
                    let child_ns = full.rsplit_once('.').map(|(n, _)| n.to_owned());
                    let fields = obj
                        .get("fields")
                        .and_then(Json::as_array)
                        .ok_or_else(|| invalid("record without fields"))?;
                    let mut out = Vec::with_capacity(fields.len());
                    for f in fields {
                        let fname = f
                            .get("name")
                            .and_then(Json::as_str)
                            .ok_or_else(|| invalid("field without name"))?;
                        let ftype = f.get("type").ok_or_else(|| invalid("field without type"))?;
                        out.push((
                            fname.to_owned(),
                            avro_type(ftype, child_ns.as_deref(), names)?,
                        ));
                    }
                    let t = ConnectType {
                        kind: Kind::Struct(out),
                        semantic,
                    };
                    names.insert(full, t.clone());
                    return Ok(t);
                }
                Some("array") => Kind::Array(Box::new(match obj.get("items") {
                    Some(items) => avro_type(items, ns, names)?,
                    None => ConnectType::ANY,
                })),
                Some("map") => Kind::Map(Box::new(match obj.get("values") {
                    Some(values) => avro_type(values, ns, names)?,
                    None => ConnectType::ANY,
                })),
                Some("enum") => Kind::Str,
                Some("fixed") => Kind::Bytes,
                _ => avro_type(ty, ns, names)?.kind,
            };
            Ok(ConnectType { kind, semantic })
        }
        _ => Err(invalid("Avro type is neither name, union nor object")),
    }
}
