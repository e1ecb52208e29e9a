//! A JSON value that serialises exactly as JavaScript's `JSON.stringify` does, because
//! server-private builds the memos that way and readers compare them byte for byte.
//!
//! The differences from `serde_json::Value` that matter: object keys keep their insertion
//! order, except that integer-like keys ("array indexes": `0`…`4294967294` without leading
//! zeros) come first in ascending numeric order, as in every JS object; parsing keeps the
//! document's order (a duplicate key keeps its first place and its last value).
//!
//! Also here: [`escape`] (lodash's `_.escape`) and [`number_of`] (JS `Number(string)`).

use std::fmt::Write as _;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JavaScript value as `JSON.parse` produces it.
#[derive(Debug, Clone, PartialEq)]
pub enum Js {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number, as JSON text.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Js>),
    /// An object, in insertion order (integer-like keys are ordered when written).
    Object(Vec<(String, Js)>),
}

impl Js {
    /// An unsigned integer.
    pub fn uint(n: u64) -> Js {
        Js::Number(n.into())
    }

    /// An object from `(key, value)` pairs in literal order.
    pub fn object<const N: usize>(pairs: [(&str, Js); N]) -> Js {
        Js::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// `obj[key] = value`: replaces in place, else appends.
    pub fn set(entries: &mut Vec<(String, Js)>, key: String, value: Js) {
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => entries.push((key, value)),
        }
    }

    /// `obj.key`, for objects.
    pub fn get(&self, key: &str) -> Option<&Js> {
        match self {
            Js::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `String(value)` as an object key would render it (`undefined` for `None`).
    pub fn key_of(value: Option<&Js>) -> String {
        match value {
            None => "undefined".into(),
            Some(Js::Null) => "null".into(),
            Some(Js::Bool(b)) => b.to_string(),
            Some(Js::Number(n)) => n.to_string(),
            Some(Js::String(s)) => s.clone(),
            Some(Js::Array(_)) | Some(Js::Object(_)) => "[object Object]".into(),
        }
    }

    /// `String(Number(value))` as an object key: `details[Number(x)]`.
    pub fn numeric_key_of(value: Option<&Js>) -> String {
        let n = match value {
            Some(Js::Number(n)) => return n.to_string(),
            Some(Js::String(s)) => number_of(s),
            Some(Js::Bool(b)) => Some(f64::from(u8::from(*b))),
            Some(Js::Null) => Some(0.0),
            _ => None,
        };
        match n {
            Some(n) if n.fract() == 0.0 && n.abs() < 1e21 => format!("{n:.0}"),
            Some(n) => n.to_string(),
            None => "NaN".into(),
        }
    }

    /// `JSON.stringify(self)`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Js::Null => out.push_str("null"),
            Js::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Js::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Js::String(s) => write_string(s, out),
            Js::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Js::Object(entries) => {
                let mut ordered: Vec<&(String, Js)> = entries.iter().collect();
                // Stable: string keys keep insertion order after the index keys.
                ordered.sort_by_key(|(k, _)| match array_index(k) {
                    Some(i) => (0, i),
                    None => (1, 0),
                });
                out.push('{');
                for (i, (k, v)) in ordered.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `Some(i)` if `key` is a JS array index (canonical decimal, < 2³²−1).
fn array_index(key: &str) -> Option<u64> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) || key.len() > 10 {
        return None;
    }
    key.parse::<u64>().ok().filter(|i| *i < 4_294_967_295)
}

fn write_string(s: &str, out: &mut String) {
    // serde_json escapes exactly as JSON.stringify does for well-formed strings:
    // `"`, `\`, \b \f \n \r \t, other controls as \u00xx; everything else raw.
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}

/// lodash `_.escape`: `&`, `<`, `>`, `"`, `'` to HTML entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JavaScript `Number(s)` for decimal text: trimmed, empty ⇒ 0, not a number ⇒ `None` (NaN).
pub fn number_of(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0.0);
    }
    if t.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        t.parse::<f64>().ok()
    } else {
        None
    }
}

impl<'de> serde::Deserialize<'de> for Js {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsVisitor)
    }
}

struct JsVisitor;

impl<'de> Visitor<'de> for JsVisitor {
    type Value = Js;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Js, E> {
        Ok(Js::Null)
    }
    fn visit_none<E>(self) -> Result<Js, E> {
        Ok(Js::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Js, E> {
        Ok(Js::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Js, E> {
        Ok(Js::Number(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Js, E> {
        Ok(Js::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Js, E> {
        serde_json::Number::from_f64(v)
            .map(Js::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Js, E> {
        Ok(Js::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Js, E> {
        Ok(Js::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Js, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Js::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Js, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Js>()? {
            Js::set(&mut entries, k, v);
        }
        Ok(Js::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Js {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn objects_keep_insertion_order_with_index_keys_first() {
        let v = parse(r#"{"b":1,"10":2,"a":3,"2":4,"01":5,"4294967295":6}"#);
        assert_eq!(
            v.to_json(),
            r#"{"2":4,"10":2,"b":1,"a":3,"01":5,"4294967295":6}"#
        );
    }

    #[test]
    fn duplicate_keys_keep_first_place_and_last_value() {
        assert_eq!(
            parse(r#"{"a":1,"b":2,"a":3}"#).to_json(),
            r#"{"a":3,"b":2}"#
        );
    }

    #[test]
    fn strings_escape_like_json_stringify() {
        let v = Js::String("a\"b\\c\n\u{1f}é🥲\u{7f}".into());
        assert_eq!(v.to_json(), "\"a\\\"b\\\\c\\n\\u001fé🥲\u{7f}\"");
    }

    #[test]
    fn lodash_escape() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain 中文"), "plain 中文");
    }

    #[test]
    fn number_and_keys_follow_javascript() {
        assert_eq!(number_of(""), Some(0.0));
        assert_eq!(number_of(" 12 "), Some(12.0));
        assert_eq!(number_of("12abc"), None);
        assert_eq!(Js::numeric_key_of(Some(&Js::String("7".into()))), "7");
        assert_eq!(Js::numeric_key_of(Some(&Js::String("x".into()))), "NaN");
        assert_eq!(Js::numeric_key_of(None), "NaN");
        assert_eq!(Js::key_of(None), "undefined");
        assert_eq!(Js::key_of(Some(&Js::uint(3))), "3");
    }
}
