//! `dlq`: wiring only; see the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = dlq::cli::Cli::parse_args();
    cdc_runtime::observe::init_tracing(if cli.config.log_format == "json" {
        "json"
    } else {
        "text"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dlq::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}
