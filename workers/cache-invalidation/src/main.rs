//! `cache-invalidation`: the worker binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

use cache_invalidation::{CacheInvalidation, FAMILY};

fn main() -> ExitCode {
    cdc_runtime::cli::main(FAMILY, CacheInvalidation::connect)
}
