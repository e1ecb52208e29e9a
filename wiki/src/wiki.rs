//! The parsed document and its canonical text.
//!
//! # Layout
//! - [`Wiki`]: the type and the fields in text order; [`Wiki::field`] looks one up.
//! - [`Field`], [`FieldValue`], [`Item`]: a `|key= value` or `|key={ … }` field and its items.
//! - `Display for Wiki`: the canonical text; [`Wiki::is_printable`] tells when it parses back to
//!   the same [`Wiki`].

use std::fmt;

use crate::js_trim::js_trim;

/// A parsed wiki text: `{{Infobox <type_name>`, its fields, `}}`.
///
/// Prints (`Display`) as canonical text, one line each, joined with `\n`:
///
/// ```text
/// {{Infobox animanga/TVAnime
/// |中文名= 进击的巨人
/// |放送开始=
/// |别名={
/// [進撃の巨人]
/// [英文名|Attack on Titan]
/// [|a|b]
/// }
/// }}
/// ```
///
/// The first line is `{{Infobox` alone when the type is empty. A scalar field prints as
/// `|key= value`, or `|key=` when the value is empty. An item prints as `[key|value]` or `[value]`,
/// and as `[|value]` when it has no key but its value contains `|`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wiki {
    /// What follows `{{Infobox` on the first line, e.g. `animanga/TVAnime`; may be empty.
    pub type_name: String,
    /// Every field in text order; a key that repeats has one field per occurrence.
    pub fields: Vec<Field>,
}

/// One `|key= value` or `|key={ … }` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name between `|` and `=`, trimmed; may be empty.
    pub key: String,
    pub value: FieldValue,
}

/// What a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// The text after `=`, trimmed; may be empty.
    Scalar(String),
    /// The items between `|key={` and `}`, in order.
    Array(Vec<Item>),
}

/// One `[key|value]` or `[value]` line of an array field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The text before the first `|`, trimmed; `None` when there is no `|` or nothing before it.
    pub key: Option<String>,
    /// The text after the first `|` (or all of it), trimmed; may be empty.
    pub value: String,
}

impl Wiki {
    /// The first field whose key is `key`.
    pub fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.key == key)
    }

    /// Whether the canonical text (`Display`) parses back to this very [`Wiki`]. Every [`Wiki`]
    /// that [`parse`](crate::parse) returns is printable; a hand-built one is not when one of its
    /// strings would be read differently:
    ///
    /// - no string has a `\n` or untrimmed ends ([`js_trim`]);
    /// - the type has no `}}`;
    /// - a field key has no `=`;
    /// - a scalar value is not `{` (that opens an array);
    /// - an item key is not empty (`Some("")`; use `None`) and has no `|`.
    pub fn is_printable(&self) -> bool {
        is_one_trimmed_line(&self.type_name)
            && !self.type_name.contains("}}")
            && self.fields.iter().all(Field::is_printable)
    }
}

impl Field {
    fn is_printable(&self) -> bool {
        is_one_trimmed_line(&self.key)
            && !self.key.contains('=')
            && match &self.value {
                FieldValue::Scalar(value) => is_one_trimmed_line(value) && value != "{",
                FieldValue::Array(items) => items.iter().all(Item::is_printable),
            }
    }
}

impl Item {
    fn is_printable(&self) -> bool {
        let key_is_printable = self
            .key
            .as_deref()
            .is_none_or(|key| !key.is_empty() && is_one_trimmed_line(key) && !key.contains('|'));
        key_is_printable && is_one_trimmed_line(&self.value)
    }
}

/// A string that a line of the syntax gives back unchanged: no line break, nothing to trim.
fn is_one_trimmed_line(text: &str) -> bool {
    !text.contains('\n') && js_trim(text) == text
}

impl fmt::Display for Wiki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{{Infobox")?;
        if !self.type_name.is_empty() {
            write!(f, " {}", self.type_name)?;
        }
        for field in &self.fields {
            write!(f, "\n|{}=", field.key)?;
            match &field.value {
                FieldValue::Scalar(value) if value.is_empty() => {}
                FieldValue::Scalar(value) => write!(f, " {value}")?,
                FieldValue::Array(items) => {
                    f.write_str("{")?;
                    for item in items {
                        match &item.key {
                            Some(key) => write!(f, "\n[{key}|{}]", item.value)?,
                            None if item.value.contains('|') => write!(f, "\n[|{}]", item.value)?,
                            None => write!(f, "\n[{}]", item.value)?,
                        }
                    }
                    f.write_str("\n}")?;
                }
            }
        }
        f.write_str("\n}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Wiki {
        Wiki {
            type_name: "animanga/TVAnime".to_owned(),
            fields: vec![
                Field {
                    key: "中文名".to_owned(),
                    value: FieldValue::Scalar("进击的巨人".to_owned()),
                },
                Field {
                    key: "放送开始".to_owned(),
                    value: FieldValue::Scalar(String::new()),
                },
                Field {
                    key: "别名".to_owned(),
                    value: FieldValue::Array(vec![
                        Item {
                            key: None,
                            value: "進撃の巨人".to_owned(),
                        },
                        Item {
                            key: Some("英文名".to_owned()),
                            value: "Attack on Titan".to_owned(),
                        },
                        Item {
                            key: None,
                            value: "a|b".to_owned(),
                        },
                    ]),
                },
                Field {
                    key: "中文名".to_owned(),
                    value: FieldValue::Scalar("第二个".to_owned()),
                },
            ],
        }
    }

    #[test]
    fn prints_canonical_text() {
        assert_eq!(
            sample().to_string(),
            "{{Infobox animanga/TVAnime\n|中文名= 进击的巨人\n|放送开始=\n|别名={\n\
             [進撃の巨人]\n[英文名|Attack on Titan]\n[|a|b]\n}\n|中文名= 第二个\n}}"
        );
        assert_eq!(Wiki::default().to_string(), "{{Infobox\n}}");
    }

    #[test]
    fn printed_text_parses_back() {
        let wiki = sample();
        assert!(wiki.is_printable());
        assert_eq!(crate::parse(&wiki.to_string()), Ok(wiki));
    }

    #[test]
    fn field_is_the_first_with_the_key() {
        let wiki = sample();
        let field = wiki.field("中文名").unwrap();
        assert_eq!(field.value, FieldValue::Scalar("进击的巨人".to_owned()));
        assert!(wiki.field("作者").is_none());
    }

    #[test]
    fn strings_the_syntax_cannot_carry_are_not_printable() {
        let with = |edit: fn(&mut Wiki)| {
            let mut wiki = sample();
            edit(&mut wiki);
            wiki.is_printable()
        };
        assert!(!with(|w| w.type_name = "a}}b".to_owned()));
        assert!(!with(|w| w.type_name = " a".to_owned()));
        assert!(!with(|w| w.fields[0].key = "a=b".to_owned()));
        assert!(!with(
            |w| w.fields[0].value = FieldValue::Scalar("{".to_owned())
        ));
        assert!(!with(
            |w| w.fields[0].value = FieldValue::Scalar("a\nb".to_owned())
        ));
        assert!(!with(
            |w| w.fields[0].value = FieldValue::Scalar("a\u{FEFF}".to_owned())
        ));
        let item = |key: Option<&str>, value: &str| {
            let mut wiki = sample();
            wiki.fields[2].value = FieldValue::Array(vec![Item {
                key: key.map(str::to_owned),
                value: value.to_owned(),
            }]);
            wiki.is_printable()
        };
        assert!(!item(Some(""), "a"));
        assert!(!item(Some("a|b"), "c"));
        assert!(item(Some("a"), "b|c]"));
        assert!(item(None, "\u{85}x"), "JavaScript does not trim U+0085");
        assert!(!item(None, "x\r"), "JavaScript trims a trailing \\r");
    }
}
