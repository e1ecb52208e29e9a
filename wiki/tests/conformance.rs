//! The conformance suites: ours (`tests/conformance/`, written for this crate in the layout of
//! `bangumi/wiki-syntax-spec`), and the upstream one when `WIKI_SYNTAX_SPEC_DIR` names its
//! `tests/` directory (it has no licence, so it is not vendored; see the crate README).

mod common;

use std::path::PathBuf;

use common::{UPSTREAM_SUITE_ENV, own_suite_dir, run_suite};

#[test]
fn own_suite_passes() {
    let counts = run_suite(&own_suite_dir());
    println!("own conformance suite: {counts:?}");
    assert!(
        counts.valid >= 30 && counts.invalid >= 20,
        "cases went missing: {counts:?}"
    );
}

#[test]
fn upstream_suite_passes_when_given() {
    let Some(dir) = std::env::var_os(UPSTREAM_SUITE_ENV) else {
        eprintln!(
            "note: {UPSTREAM_SUITE_ENV} is unset, so the upstream wiki-syntax-spec suite is \
             skipped; set it to a checkout's tests/ directory to run it"
        );
        return;
    };
    let counts = run_suite(&PathBuf::from(dir));
    println!("upstream conformance suite: {counts:?}");
    assert!(
        counts.valid > 0 && counts.invalid > 0,
        "{UPSTREAM_SUITE_ENV} holds no cases: {counts:?}"
    );
}
