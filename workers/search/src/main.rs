//! `search`: the worker binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

fn main() -> ExitCode {
    search::cli::main()
}
