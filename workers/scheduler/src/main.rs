//! `scheduler`: the periodic jobs' binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

fn main() -> ExitCode {
    scheduler::cli::main()
}
