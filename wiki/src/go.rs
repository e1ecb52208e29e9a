//! The other reference parser: `github.com/bangumi/wiki-parser-go` v0.0.2, which Bangumi's Go
//! services (the search indexer among them) parse infoboxes with. It reads the same syntax with
//! different edges than `@bgm38/wiki` ([`crate::parse`]); a worker replacing a Go service parses
//! with [`parse`] here to build exactly what the Go service built.
//!
//! The differences from [`crate::parse`]:
//! - the text is trimmed of Unicode white space (Go's `strings.TrimSpace`: U+0085 yes, U+FEFF
//!   no), but each line only of spaces and tabs, so a trailing U+3000 stays in a value;
//! - a field with an empty value (`|别名=`) is Go's *null* field, which has no value at all; it is
//!   returned as an empty [`FieldValue::Scalar`], which this parser produces for nothing else;
//! - an array closes only on a line that is exactly `}`, and must be closed before the last line;
//! - a text of one or two lines has no fields.
//!
//! Go's `ParseOmitError` is `parse(text).unwrap_or_default()`: any error gives an empty wiki.

use crate::error::{Expected, WikiError};
use crate::wiki::{Field, FieldValue, Item, Wiki};

const OPENING: &str = "{{Infobox";
const CLOSING: &str = "}}";

/// Parses a wiki text the way wiki-parser-go v0.0.2 does.
///
/// 1. `\r\n` becomes `\n`, then the text is trimmed of white space ([`str::trim`], which is
///    Go's `strings.TrimSpace`). An empty text is a wiki without type or fields.
/// 2. It must start with `{{Infobox` and end with `}}`. With fewer than two `\n`, it has no
///    fields.
/// 3. The type is the rest of the first line, up to a `}}` on it, trimmed.
/// 4. Only the lines strictly between the first and the last `\n` are read, each trimmed of
///    spaces and tabs; blank ones are skipped.
/// 5. A line starting with `|` is a field (an error while an array is open): the key is what
///    lies before the first `=` (there must be one), trimmed; the value what follows it. An
///    empty value is a null field (an empty scalar here), `{` opens an array, anything else is a
///    scalar.
/// 6. In an array, a line that is exactly `}` closes it; any other must be `[…]`, whose inside
///    splits at its first `|` into key and value, both trimmed (no `|`: a value alone). An
///    array still open after the last line is an error.
/// 7. Any other line is an error. Keys may repeat.
///
/// # Errors
/// A [`WikiError`] naming the 1-based line of `text` and the rule broken.
pub fn parse(text: &str) -> Result<Wiki, WikiError> {
    let normalized = text.replace("\r\n", "\n");
    let trimmed = normalized.trim();
    if trimmed.is_empty() {
        return Ok(Wiki::default());
    }
    let leading = normalized.len() - normalized.trim_start().len();
    let first_line = 1 + count_newlines(&normalized[..leading]);
    let opening = trimmed.split('\n').next().unwrap_or_default();
    if !trimmed.starts_with(OPENING) {
        return Err(WikiError::new(first_line, Expected::InfoboxStart, opening));
    }
    if !trimmed.ends_with(CLOSING) {
        let last = trimmed.rsplit('\n').next().unwrap_or_default();
        return Err(WikiError::new(
            first_line + count_newlines(trimmed),
            Expected::InfoboxEnd,
            last,
        ));
    }
    let type_name = {
        let after = &opening[OPENING.len()..];
        after
            .find(CLOSING)
            .map_or(after, |end| &after[..end])
            .trim()
    };
    let mut fields = Vec::new();
    let body = trimmed
        .split_once('\n')
        .and_then(|(_, rest)| rest.rsplit_once('\n'))
        .map(|(inner, _closing)| inner);
    let mut open_array: Option<(String, Vec<Item>, usize)> = None;
    for (index, line) in body.into_iter().flat_map(|b| b.split('\n')).enumerate() {
        let number = first_line + 1 + index;
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        if let Some((key, items, _)) = &mut open_array {
            if line == "}" {
                fields.push(Field {
                    key: std::mem::take(key),
                    value: FieldValue::Array(std::mem::take(items)),
                });
                open_array = None;
                continue;
            }
            if line.starts_with('|') {
                return Err(WikiError::new(number, Expected::ArrayClose, line));
            }
            let item = parse_item(line)
                .ok_or_else(|| WikiError::new(number, Expected::ItemBrackets, line))?;
            items.push(item);
            continue;
        }
        let after_bar = line
            .strip_prefix('|')
            .ok_or_else(|| WikiError::new(number, Expected::FieldStart, line))?;
        let (key, value) = after_bar
            .split_once('=')
            .ok_or_else(|| WikiError::new(number, Expected::EqualsSign, line))?;
        let key = key.trim_matches([' ', '\t']).to_owned();
        let value = value.trim_start_matches([' ', '\t']);
        if value == "{" {
            open_array = Some((key, Vec::new(), number));
        } else {
            fields.push(Field {
                key,
                value: FieldValue::Scalar(value.to_owned()),
            });
        }
    }
    if let Some((key, _, number)) = open_array {
        return Err(WikiError::new(
            number,
            Expected::ArrayClose,
            &format!("|{key}={{"),
        ));
    }
    Ok(Wiki {
        type_name: type_name.to_owned(),
        fields,
    })
}

fn count_newlines(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count()
}

/// `[key|value]` or `[value]`, trimmed of spaces and tabs; `None` when not wrapped in brackets.
fn parse_item(line: &str) -> Option<Item> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let trim = |s: &str| s.trim_matches([' ', '\t']).to_owned();
    Some(match inner.split_once('|') {
        Some((key, value)) => {
            let key = trim(key);
            Item {
                key: (!key.is_empty()).then_some(key),
                value: trim(value),
            }
        }
        None => Item {
            key: None,
            value: trim(inner),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str, key: &str) -> Option<Vec<String>> {
        let wiki = parse(text).ok()?;
        Some(
            wiki.fields
                .iter()
                .filter(|f| f.key == key)
                .flat_map(|f| match &f.value {
                    FieldValue::Scalar(v) if v.is_empty() => Vec::new(),
                    FieldValue::Scalar(v) => vec![v.clone()],
                    FieldValue::Array(items) => items.iter().map(|i| i.value.clone()).collect(),
                })
                .collect(),
        )
    }

    #[test]
    fn reads_what_go_reads() {
        let text = "{{Infobox Crt\r\n|别名= \r\n| 别名 ={\r\n[喜多郁代\u{3000}]\r\n[愛称|喜多ちゃん]\r\n[]\r\n}\r\n}}";
        assert_eq!(
            values(text, "别名"),
            Some(vec![
                "喜多郁代\u{3000}".into(),
                "喜多ちゃん".into(),
                String::new()
            ])
        );
        assert_eq!(parse(text).map(|w| w.type_name), Ok("Crt".into()));
    }

    #[test]
    fn errors_where_go_errors() {
        // `}}` does not close an array in Go; it is not an item either.
        let (line, expected) = parse("{{Infobox\n|别名={\n[a]\n}}\n}}")
            .map(|_| (0, Expected::FieldStart))
            .unwrap_or_else(|e| (e.line(), e.expected()));
        assert_eq!((line, expected), (4, Expected::ItemBrackets));
        assert_eq!(
            parse("{{Infobox\n|a={\n[x]\n}}").map_err(|e| e.expected()),
            Err(Expected::ArrayClose)
        );
        assert_eq!(
            parse("{{Infobox\n中文名\n}}").map_err(|e| (e.line(), e.expected())),
            Err((2, Expected::FieldStart))
        );
        assert_eq!(
            parse("{{Infobox\n|a=b\n").map_err(|e| e.expected()),
            Err(Expected::InfoboxEnd)
        );
    }

    #[test]
    fn short_texts_have_no_fields() {
        assert_eq!(parse("{{Infobox Album}}").map(|w| w.fields.len()), Ok(0));
        assert_eq!(parse("{{Infobox\n|a=b}}").map(|w| w.fields.len()), Ok(0));
        assert_eq!(parse(" \u{85}\n").map(|w| w.fields.len()), Ok(0));
        // U+FEFF is not white space to Go.
        assert!(parse("\u{FEFF}{{Infobox\n}}").is_err());
    }
}
