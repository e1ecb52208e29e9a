//! Fuzz target: `decode` with `Format::Json` never panics.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::run(data, cdc_schemas::Format::Json));
