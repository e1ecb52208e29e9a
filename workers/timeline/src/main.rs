//! `timeline`: the worker binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

fn main() -> ExitCode {
    timeline::cli::main()
}
