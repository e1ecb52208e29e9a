//! `dlq`: wiring only; see the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = dlq::cli::Cli::parse_args();
    // The tool reports a broker it cannot reach in one line of its own; librdkafka's log lines
    // (one per connection attempt) stay out unless RUST_LOG names them.
    let mut filter = cdc_runtime::observe::log_filter("warn");
    if !filter.contains("rdkafka") {
        filter.push_str(",librdkafka=off,rdkafka::client=off");
    }
    let format = if cli.config.log_format == "json" {
        "json"
    } else {
        "text"
    };
    cdc_runtime::observe::init_tracing_with(format, &filter);
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
