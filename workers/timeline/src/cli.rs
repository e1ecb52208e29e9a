//! The `timeline` command line: `run` (default: the consumer), `provision`, `migrate` (the
//! fleet's tables), `--print-config`. The shape of `cdc_runtime::cli::main`, with this family's
//! [`Settings`] (whose `--print-config` lines need the Redis URI).

use std::process::ExitCode;

use cdc_runtime::cli::cancel_on_signal;
use cdc_runtime::config::ConfigError;
use cdc_runtime::{RuntimeError, WorkerConfig};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{FAMILY, Settings, Timeline};

#[derive(Debug, Parser)]
#[command(name = "timeline", about = "Bangumi timeline: fan-out and the chii_timeline writer", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long, global = true)]
    print_config: bool,
    #[command(flatten)]
    config: WorkerConfig,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the family's topics until SIGTERM/SIGINT (the default).
    Run,
    /// Create the family's topics and DLQ on the broker (idempotent), then exit.
    Provision {
        /// Replication factor for new topics.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Create or change the fleet's own tables in MYSQL_DB (`cdc_applied_messages`, the
    /// writer's ledger), then exit.
    /// Run before the workers of a new version start (the Helm chart's pre-install/pre-upgrade
    /// hook); idempotent.
    Migrate,
}

/// Runs the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.config.log_format.clone();
    cdc_runtime::cli::run_to_exit(&log_format, run_cli(cli))
}

async fn run_cli(cli: Cli) -> Result<ExitCode, RuntimeError> {
    let family = cdc_topics::by_name(FAMILY)?.ok_or_else(|| ConfigError::Invalid {
        name: "family".into(),
        reason: format!("no topics/families/{FAMILY}.toml"),
    })?;
    let config = cli.config.finish(&family)?;
    cli.settings.validate()?;
    let family = family.with_topic_prefix(&config.kafka_topic_prefix);
    if cli.print_config {
        println!(
            "{}\n{}",
            config.redacted(&family),
            cli.settings.describe(&config.redis_uri)
        );
        return Ok(ExitCode::SUCCESS);
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Provision { replication } => {
            cdc_runtime::cli::provision_and_report(&config, &family, replication).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => cdc_runtime::cli::migrate_and_report(&config)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Run => {
            tracing::info!(config = %config.redacted(&family).replace('\n', "; "), "configuration");
            let group = config.group_id(&family).into_owned();
            let handler = Timeline::connect(&config, &cli.settings, &group).map_err(sink_error)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let result = cdc_runtime::run(&family, &config, handler, shutdown).await;
            result.map(|()| ExitCode::SUCCESS)
        }
    }
}

fn sink_error(source: anyhow::Error) -> RuntimeError {
    RuntimeError::Sink {
        what: "the timeline family's sinks",
        source,
    }
}
