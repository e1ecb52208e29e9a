//! ECMAScript's `String.prototype.trim`, which `@bgm38/wiki` applies to the whole text, to each
//! line, and to every key, value and type. Rust's [`str::trim`] differs: it trims U+0085 (NEXT
//! LINE), which JavaScript keeps, and keeps U+FEFF (BYTE ORDER MARK), which JavaScript trims.
//!
//! # Layout
//! - [`is_js_whitespace`]: the character set (ECMA-262 WhiteSpace and LineTerminator).
//! - [`js_trim`]: trims it from both ends.

/// Whether `c` is trimmed by JavaScript's `String.prototype.trim`: ECMA-262 *WhiteSpace* (TAB, VT,
/// FF, U+FEFF and every `Zs` space separator) or *LineTerminator* (LF, CR, U+2028, U+2029).
///
/// The `Zs` list is that of Unicode 15 (Node 20); U+180E left `Zs` in Unicode 6.3 and is not
/// whitespace to any current engine.
pub fn is_js_whitespace(c: char) -> bool {
    const SPACE_SEPARATORS: [char; 17] = [
        ' ', '\u{A0}', '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}',
        '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}', '\u{2009}', '\u{200A}', '\u{202F}',
        '\u{205F}', '\u{3000}',
    ];
    match c {
        // WhiteSpace besides the space separators
        '\t' | '\u{B}' | '\u{C}' | '\u{FEFF}' => true,
        // LineTerminator
        '\n' | '\r' | '\u{2028}' | '\u{2029}' => true,
        _ => SPACE_SEPARATORS.contains(&c),
    }
}

/// `text` without the leading and trailing characters JavaScript's `trim()` removes
/// ([`is_js_whitespace`]).
pub fn js_trim(text: &str) -> &str {
    text.trim_matches(is_js_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_what_javascript_trims() {
        assert_eq!(
            js_trim("\u{FEFF}\u{3000} a b\t\r\n\u{2028}\u{2029}\u{A0}"),
            "a b"
        );
        assert_eq!(
            js_trim("\u{B}\u{C}\u{1680}\u{2000}x\u{200A}\u{202F}\u{205F}"),
            "x"
        );
    }

    #[test]
    fn keeps_what_javascript_keeps() {
        assert_eq!(js_trim("\u{85}a\u{85}"), "\u{85}a\u{85}");
        assert_eq!(js_trim("\u{180E}a\u{200B}"), "\u{180E}a\u{200B}");
        assert_eq!(js_trim("\u{1C}a\u{1F}"), "\u{1C}a\u{1F}");
    }
}
