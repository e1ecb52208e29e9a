//! server-private's value semantics, for the families that must store exactly what its
//! TypeScript stores or decide exactly as it decides: Bangumi's columns hold JSON written by
//! `JSON.stringify` and PHP-serialised values written by the old PHP site, and server-private
//! reads both with one `decode()`.
//!
//! Sans-I/O; no family logic.
//!
//! # Layout
//! - [`Js`]: a JavaScript value, parsed keeping key order, written as `JSON.stringify` does;
//!   [`escape`] (lodash `_.escape`), [`number_of`] (JS `Number(string)`).
//! - [`php`]: PHP `unserialize` into a [`Js`].
//! - [`decode`]: server-private's `decode()` (empty, PHP or JSON).

pub mod php;
mod value;

pub use value::{Js, escape, number_of};

/// server-private `decode()` (`lib/utils/index.ts`): an empty text is `{}`, one starting with
/// `a:` PHP-serialised, anything else JSON.
///
/// # Errors
/// The text is neither, saying where it fails.
pub fn decode(text: &str) -> Result<Js, String> {
    if text.is_empty() {
        return Ok(Js::Object(Vec::new()));
    }
    if text.starts_with("a:") {
        return php::unserialize(text).map_err(|e| e.to_string());
    }
    serde_json::from_str(text).map_err(|e| format!("JSON: {e}"))
}
