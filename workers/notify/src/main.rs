//! `notify`: the worker binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

use notify::{FAMILY, Notify};

fn main() -> ExitCode {
    cdc_runtime::cli::main_with(FAMILY, Notify::connect)
}
