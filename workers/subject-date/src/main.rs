//! `subject-date`: the worker binary. Wiring only; see the library for the behaviour.

use std::process::ExitCode;

use subject_date::{FAMILY, SubjectDate};

fn main() -> ExitCode {
    cdc_runtime::cli::main_with(FAMILY, SubjectDate::connect)
}
