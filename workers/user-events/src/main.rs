//! `user-events`: the worker binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

use user_events::{FAMILY, UserEvents};

fn main() -> ExitCode {
    cdc_runtime::cli::main_with(FAMILY, UserEvents::connect)
}
