//! Why and where [`parse`](crate::parse) rejected a text. A rejection is a property of the text
//! alone, so it is always permanent: parsing the same text again fails the same way.
//!
//! # Layout
//! - [`WikiError`]: the line, what was expected there, and the offending line.
//! - [`Expected`]: one variant per rule of the syntax that a text can break.

use std::fmt;

/// How many characters of the offending line a [`WikiError`] keeps.
const FOUND_MAX_CHARS: usize = 80;

/// A text that `@bgm38/wiki` rejects, with where and why.
///
/// Displays as e.g. ``line 4: expected `[` … `]` around an array item, found `a` ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: expected {expected}, found `{found}`")]
pub struct WikiError {
    line: usize,
    expected: Expected,
    found: String,
}

impl WikiError {
    pub(crate) fn new(line: usize, expected: Expected, found: &str) -> Self {
        let found = match found.char_indices().nth(FOUND_MAX_CHARS) {
            Some((cut, _)) => format!("{}…", &found[..cut]),
            None => found.to_owned(),
        };
        Self {
            line,
            expected,
            found,
        }
    }

    /// The 1-based line of the original text (before `\r\n` is normalised or blank lines are
    /// trimmed) where the text broke the syntax. Only `\n` starts a line; a lone `\r` does not.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The rule the text broke.
    pub fn expected(&self) -> Expected {
        self.expected
    }

    /// The offending line, trimmed, and cut to its first 80 characters followed by `…` when
    /// longer.
    pub fn found(&self) -> &str {
        &self.found
    }
}

/// What the parser expected where the text broke the syntax. Each displays as the thing that was
/// missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expected {
    /// The text (trimmed) does not start with `{{Infobox`.
    InfoboxStart,
    /// The text (trimmed) does not end with `}}`.
    InfoboxEnd,
    /// A line inside the body is neither blank nor a field starting with `|`.
    FieldStart,
    /// A field line has no `=` between its name and its value.
    EqualsSign,
    /// An open array is followed by a new field, or by the closing line with no `}` first.
    ArrayClose,
    /// A line inside an open array is not wrapped in `[` and `]`.
    ItemBrackets,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InfoboxStart => "`{{Infobox` at the start of the text",
            Self::InfoboxEnd => "`}}` at the end of the text",
            Self::FieldStart => "`|` to start a field",
            Self::EqualsSign => "`=` between the field name and its value",
            Self::ArrayClose => "`}` closing the open array",
            Self::ItemBrackets => "`[` … `]` around an array item",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_line_expectation_and_found_line() {
        let error = WikiError::new(4, Expected::ItemBrackets, "a");
        assert_eq!(
            error.to_string(),
            "line 4: expected `[` … `]` around an array item, found `a`"
        );
    }

    #[test]
    fn cuts_long_lines_on_a_character_boundary() {
        let long = "进".repeat(FOUND_MAX_CHARS + 5);
        let error = WikiError::new(1, Expected::FieldStart, &long);
        assert_eq!(error.found().chars().count(), FOUND_MAX_CHARS + 1);
        assert!(error.found().ends_with("进…"));
        let exact = "a".repeat(FOUND_MAX_CHARS);
        assert_eq!(
            WikiError::new(1, Expected::FieldStart, &exact).found(),
            exact
        );
    }
}
