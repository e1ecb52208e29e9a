//! Shared by the integration tests: the result shape of `@bgm38/wiki` (used by the conformance
//! YAML files and by the differential test's Node script) and the conformance-suite runner.
//!
//! # Layout
//! - [`UpstreamWiki`], [`UpstreamField`], [`UpstreamItem`]: `@bgm38/wiki`'s `{type, data}` shape,
//!   with the conversion from our [`Wiki`].
//! - [`run_suite`]: runs a `{valid,invalid}/*.wiki` directory (ours or the upstream spec's).
//! - [`wiki_files`]: the `.wiki` inputs of such a directory.
//! - [`TOKENS`]: pieces of syntax the generated texts are made of.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use bangumi_wiki::{Expected, FieldValue, Wiki, parse};
use serde::{Deserialize, Serialize};

/// A parse result as `@bgm38/wiki` returns it: `{type, data}`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamWiki {
    #[serde(rename = "type")]
    pub type_name: String,
    pub data: Vec<UpstreamField>,
}

/// `{key, value}` for a scalar field, `{key, array: true, values}` for an array field.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamField {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<UpstreamItem>>,
}

/// `{k, v}`, `k` absent when the item has no key.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    pub v: String,
}

impl From<&Wiki> for UpstreamWiki {
    fn from(wiki: &Wiki) -> Self {
        let data = wiki
            .fields
            .iter()
            .map(|field| match &field.value {
                FieldValue::Scalar(value) => UpstreamField {
                    key: field.key.clone(),
                    value: Some(value.clone()),
                    array: None,
                    values: None,
                },
                FieldValue::Array(items) => UpstreamField {
                    key: field.key.clone(),
                    value: None,
                    array: Some(true),
                    values: Some(
                        items
                            .iter()
                            .map(|item| UpstreamItem {
                                k: item.key.clone(),
                                v: item.value.clone(),
                            })
                            .collect(),
                    ),
                },
            })
            .collect();
        Self {
            type_name: wiki.type_name.clone(),
            data,
        }
    }
}

/// Where our own invalid cases say the error is (`invalid/<name>.yaml`; upstream has none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    line: usize,
    expected: String,
}

/// The snake_case name an `invalid/<name>.yaml` file uses for an [`Expected`].
pub fn expected_name(expected: Expected) -> &'static str {
    match expected {
        Expected::InfoboxStart => "infobox_start",
        Expected::InfoboxEnd => "infobox_end",
        Expected::FieldStart => "field_start",
        Expected::EqualsSign => "equals_sign",
        Expected::ArrayClose => "array_close",
        Expected::ItemBrackets => "item_brackets",
    }
}

/// How many cases of each kind a suite ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuiteCounts {
    pub valid: usize,
    pub invalid: usize,
}

/// The `.wiki` files of `dir`, sorted by name.
pub fn wiki_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|error| panic!("reading {dir:?}: {error}"));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wiki"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {path:?}: {error}"))
}

/// Runs a suite laid out like `bangumi/wiki-syntax-spec`'s `tests/`: every `valid/<name>.wiki`
/// must parse to what `valid/<name>.yaml` says; every `invalid/<name>.wiki` must be rejected, at
/// the line and with the expectation `invalid/<name>.yaml` gives when that file exists. Panics
/// listing every failing case.
pub fn run_suite(dir: &Path) -> SuiteCounts {
    let mut failures = Vec::new();
    let valid = wiki_files(&dir.join("valid"));
    for path in &valid {
        let expected: UpstreamWiki = serde_norway::from_str(&read(&path.with_extension("yaml")))
            .unwrap_or_else(|error| panic!("{path:?}: its .yaml does not parse: {error}"));
        match parse(&read(path)) {
            Ok(wiki) if UpstreamWiki::from(&wiki) == expected => {}
            Ok(wiki) => failures.push(format!("{path:?}: got {wiki:?}, expected {expected:?}")),
            Err(error) => failures.push(format!("{path:?}: rejected: {error}")),
        }
    }
    let invalid = wiki_files(&dir.join("invalid"));
    for path in &invalid {
        let error = match parse(&read(path)) {
            Ok(wiki) => {
                failures.push(format!("{path:?}: accepted as {wiki:?}"));
                continue;
            }
            Err(error) => error,
        };
        let sidecar = path.with_extension("yaml");
        if sidecar.exists() {
            let expected: ExpectedError = serde_norway::from_str(&read(&sidecar))
                .unwrap_or_else(|error| panic!("{sidecar:?} does not parse: {error}"));
            let got = (error.line(), expected_name(error.expected()));
            if got != (expected.line, expected.expected.as_str()) {
                failures.push(format!("{path:?}: got `{error}`, expected {expected:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) of {dir:?} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    SuiteCounts {
        valid: valid.len(),
        invalid: invalid.len(),
    }
}

/// Our own conformance suite: `tests/conformance/`.
pub fn own_suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// The environment variable naming an upstream `bangumi/wiki-syntax-spec` checkout's `tests/`.
pub const UPSTREAM_SUITE_ENV: &str = "WIKI_SYNTAX_SPEC_DIR";

/// Pieces of wiki syntax, line breaks included.
pub const TOKENS: &[&str] = &[
    "{{Infobox",
    "}}",
    "{",
    "}",
    "[",
    "]",
    "|",
    "=",
    "\n",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\u{3000}",
    "\u{85}",
    "\u{FEFF}",
    "a",
    "中文名",
    "[a|b]",
];
