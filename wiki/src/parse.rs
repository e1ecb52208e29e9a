//! The parser: text in, [`Wiki`] or [`WikiError`] out, accepting exactly what `@bgm38/wiki` 0.3.3
//! accepts. The rules are listed once, on [`parse`].
//!
//! # Layout
//! - [`parse`]: normalises and trims the text, checks its frame, reads the type.
//! - `Body`: the state machine over the lines between the first and the last, building fields.
//! - `parse_field`, `parse_item`, `parse_type`: one line each.

use std::borrow::Cow;

use crate::error::{Expected, WikiError};
use crate::js_trim::{is_js_whitespace, js_trim};
use crate::wiki::{Field, FieldValue, Item, Wiki};

/// What a wiki text starts with (after trimming).
const OPENING: &str = "{{Infobox";
/// What a wiki text ends with (after trimming); also ends the type on the first line.
const CLOSING: &str = "}}";

/// Parses a wiki text the way `@bgm38/wiki` 0.3.3 does.
///
/// 1. Every `\r\n` becomes `\n` (a lone `\r` stays), then the text is trimmed ([`js_trim`]). A
///    text that is then empty is a [`Wiki`] with an empty type and no fields.
/// 2. It must start with `{{Infobox` and end with `}}`. Lines are split at `\n`.
/// 3. The first line gives the type: what follows `{{Infobox`, up to the first `}}` on that line
///    if any, trimmed (`{{InfoboxAnime` has type `Anime`).
/// 4. The last line closes the text and is not read further: `|话数= 12}}` as the last line
///    contributes no field. A one-line `{{Infobox Album}}` has no fields.
/// 5. Each line between is trimmed; blank lines are skipped, also inside arrays.
/// 6. Outside an array, a line must start with `|`: the key is what lies between `|` and the first
///    `=` (there must be one), the value what follows it, both trimmed. A value of exactly `{`
///    opens an array field; anything else, `""` included, is a scalar field.
/// 7. Inside an array, a line starting with `|` is an error, and one starting with `}` closes the
///    array (the rest of it is ignored). Any other line is an item, except that an array must be
///    closed before the closing line: an item on the last line before it is an error. An item is
///    wrapped in `[` and `]`; the text inside splits at its first `|` into a key and a value, both
///    trimmed, and an empty key is no key. Without `|` it is a value alone.
/// 8. An array still open at the closing line is kept as it is when rule 7 did not fire (a blank
///    line before `}}`), as `@bgm38/wiki` does.
/// 9. A key may repeat: each occurrence is its own field, in order.
///
/// # Errors
/// A [`WikiError`] with the 1-based line of `text` where a rule was broken; lines are counted in
/// the original text, leading blank lines and `\r\n` included.
pub fn parse(text: &str) -> Result<Wiki, WikiError> {
    let normalized = if text.contains("\r\n") {
        Cow::Owned(text.replace("\r\n", "\n"))
    } else {
        Cow::Borrowed(text)
    };
    let trimmed = js_trim(&normalized);
    if trimmed.is_empty() {
        return Ok(Wiki::default());
    }
    // `\r\n` → `\n` keeps every `\n`, so line numbers in `normalized` are those of `text`.
    let leading = normalized.len() - normalized.trim_start_matches(is_js_whitespace).len();
    let first_line = 1 + count_newlines(&normalized[..leading]);

    let (opening, rest) = match trimmed.split_once('\n') {
        Some((opening, rest)) => (opening, Some(rest)),
        None => (trimmed, None),
    };
    if !trimmed.starts_with(OPENING) {
        return Err(WikiError::new(first_line, Expected::InfoboxStart, opening));
    }
    if !trimmed.ends_with(CLOSING) {
        let (last_line, closing) = match trimmed.rsplit_once('\n') {
            Some((_, closing)) => (first_line + count_newlines(trimmed), closing),
            None => (first_line, trimmed),
        };
        return Err(WikiError::new(last_line, Expected::InfoboxEnd, closing));
    }

    let mut body = Body::default();
    // The lines strictly between the opening and the closing line.
    if let Some((inner, _closing)) = rest.and_then(|rest| rest.rsplit_once('\n')) {
        let mut lines = inner.split('\n').enumerate().peekable();
        while let Some((index, line)) = lines.next() {
            let is_last = lines.peek().is_none();
            body.read_line(first_line + 1 + index, js_trim(line), is_last)?;
        }
    }
    Ok(Wiki {
        type_name: parse_type(opening).to_owned(),
        fields: body.finish(),
    })
}

fn count_newlines(text: &str) -> usize {
    text.bytes().filter(|&byte| byte == b'\n').count()
}

/// Rule 3: the type on the opening line (which starts with [`OPENING`]).
fn parse_type(opening: &str) -> &str {
    let after = opening.get(OPENING.len()..).unwrap_or_default();
    let before_closing = after.find(CLOSING).map_or(after, |end| &after[..end]);
    js_trim(before_closing)
}

/// The fields read so far, and the array field still open if any.
#[derive(Default)]
struct Body {
    fields: Vec<Field>,
    open_array: Option<(String, Vec<Item>)>,
}

impl Body {
    /// Rules 5–7 for one trimmed line; `is_last` says it is the last before the closing line.
    fn read_line(&mut self, number: usize, line: &str, is_last: bool) -> Result<(), WikiError> {
        if line.is_empty() {
            return Ok(());
        }
        if let Some(after_bar) = line.strip_prefix('|') {
            if self.open_array.is_some() {
                return Err(WikiError::new(number, Expected::ArrayClose, line));
            }
            let (key, value) = after_bar
                .split_once('=')
                .ok_or_else(|| WikiError::new(number, Expected::EqualsSign, line))?;
            let (key, value) = (js_trim(key).to_owned(), js_trim(value));
            if value == "{" {
                self.open_array = Some((key, Vec::new()));
            } else {
                self.fields.push(Field {
                    key,
                    value: FieldValue::Scalar(value.to_owned()),
                });
            }
            return Ok(());
        }
        let Some((_, items)) = &mut self.open_array else {
            return Err(WikiError::new(number, Expected::FieldStart, line));
        };
        if line.starts_with('}') {
            self.close_array();
        } else if is_last {
            return Err(WikiError::new(number, Expected::ArrayClose, line));
        } else {
            let item = parse_item(line)
                .ok_or_else(|| WikiError::new(number, Expected::ItemBrackets, line))?;
            items.push(item);
        }
        Ok(())
    }

    fn close_array(&mut self) {
        if let Some((key, items)) = self.open_array.take() {
            self.fields.push(Field {
                key,
                value: FieldValue::Array(items),
            });
        }
    }

    /// Rule 8: an array still open is kept.
    fn finish(mut self) -> Vec<Field> {
        self.close_array();
        self.fields
    }
}

/// Rule 7: `[key|value]` or `[value]`; `None` when the line is not wrapped in `[` … `]`.
fn parse_item(line: &str) -> Option<Item> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    Some(match inner.split_once('|') {
        Some((key, value)) => {
            let key = js_trim(key);
            Item {
                key: (!key.is_empty()).then(|| key.to_owned()),
                value: js_trim(value).to_owned(),
            }
        }
        None => Item {
            key: None,
            value: js_trim(inner).to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(key: &str, value: &str) -> Field {
        Field {
            key: key.to_owned(),
            value: FieldValue::Scalar(value.to_owned()),
        }
    }

    fn error_of(text: &str) -> (usize, Expected) {
        let error = parse(text).expect_err("the text is invalid");
        (error.line(), error.expected())
    }

    #[test]
    fn reads_type_and_fields() {
        let wiki = parse("{{Infobox animanga/TVAnime\n|中文名= 进击的巨人\n|话数=25\n}}").unwrap();
        assert_eq!(wiki.type_name, "animanga/TVAnime");
        assert_eq!(
            wiki.fields,
            [scalar("中文名", "进击的巨人"), scalar("话数", "25")]
        );
    }

    #[test]
    fn single_line_item_parse_is_not_an_item() {
        // `[` alone starts with `[` but does not end with `]`.
        assert_eq!(parse_item("["), None);
        assert_eq!(parse_item("]"), None);
        assert_eq!(
            parse_item("[]"),
            Some(Item {
                key: None,
                value: String::new()
            })
        );
    }

    #[test]
    fn counts_lines_of_the_original_text() {
        assert_eq!(
            error_of("\r\n \r\n{{Infobox\r\n|别名={\r\n进击\r\n}\r\n}}"),
            (5, Expected::ItemBrackets)
        );
        assert_eq!(
            error_of("\n\u{3000}\n{{Infobix\n}}"),
            (3, Expected::InfoboxStart)
        );
        assert_eq!(error_of("{{Infobox\n|a=b\n\n\n"), (2, Expected::InfoboxEnd));
        // A lone `\r` does not start a line.
        assert_eq!(
            error_of("{{Infobox\r\n|a\rb\n}}\r"),
            (2, Expected::EqualsSign)
        );
    }
}
