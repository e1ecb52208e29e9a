//! Bangumi's infobox ("wiki") syntax: the text every subject, character and person carries in
//! its `field_infobox`, parsed into typed fields and printed back.
//!
//! ```text
//! {{Infobox animanga/TVAnime
//! |中文名= 进击的巨人
//! |别名={
//! [進撃の巨人]
//! [英文名|Attack on Titan]
//! }
//! }}
//! ```
//!
//! The reference is the npm package `@bgm38/wiki` 0.3.3, which Bangumi's TypeScript services
//! use: [`parse`] accepts exactly the texts it accepts and returns the same type and fields, so a
//! worker built on this crate acts on exactly the subjects the TypeScript one acted on. That
//! includes one quirk kept on purpose: the last line is the closing `}}` line and is never read as
//! a field, so `|话数= 12}}` on the last line contributes nothing.
//!
//! This crate does no I/O, keeps no state and does not interpret values (dates, names, links):
//! text in, [`Wiki`] out.
//!
//! # Layout
//! - [`parse`] (`parse.rs`): the line-by-line parser, the only way from text to [`Wiki`].
//! - [`Wiki`], [`Field`], [`FieldValue`], [`Item`] (`wiki.rs`): the parsed document, field lookup,
//!   and the canonical printer ([`Wiki`]'s `Display`) with [`Wiki::is_printable`].
//! - [`WikiError`], [`Expected`] (`error.rs`): why and where a text was rejected.
//! - [`go`]: the same syntax as Bangumi's Go services read it (`wiki-parser-go`), for workers
//!   replacing them.
//! - [`js_trim`], [`is_js_whitespace`] (`js_trim.rs`): ECMAScript's `String.prototype.trim`,
//!   which decides what counts as blank everywhere in the syntax.

mod error;
pub mod go;
mod js_trim;
mod parse;
mod wiki;

pub use error::{Expected, WikiError};
pub use js_trim::{is_js_whitespace, js_trim};
pub use parse::parse;
pub use wiki::{Field, FieldValue, Item, Wiki};
