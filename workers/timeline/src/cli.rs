//! The `timeline` command line: `run` (default: consumer + trim scheduler), `provision`,
//! `migrate` (the fleet's tables), `trim --once [--job …]`, `--print-config`. The shape of `cdc_runtime::cli::main`, plus the
//! trim subcommand and this family's [`Settings`].

use std::process::ExitCode;

use cdc_runtime::cli::{EXIT_CONFIG, EXIT_FAILURE, cancel_on_signal};
use cdc_runtime::config::ConfigError;
use cdc_runtime::{RuntimeError, WorkerConfig, sink};
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::trim::{self, Job, Ran};
use crate::{FAMILY, Settings, Timeline};

#[derive(Debug, Parser)]
#[command(name = "timeline", about = "Bangumi timeline: fan-out, trims, and the chii_timeline writer", long_about = None)]
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
    /// Consume the family's topics and run the trims until SIGTERM/SIGINT (the default).
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
    /// Run cache trims now, then exit.
    Trim {
        /// Run once (the only mode; the schedule runs inside `run`).
        #[arg(long, required = true)]
        once: bool,
        /// Which trim.
        #[arg(long, value_enum, default_value_t = Which::All)]
        job: Which,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Global,
    Inbox,
    User,
    All,
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
        Command::Trim { job, .. } => trim_once(&config, job).await,
        Command::Run => {
            tracing::info!(config = %config.redacted(&family).replace('\n', "; "), "configuration");
            let group = config.group_id(&family).to_owned();
            let handler = Timeline::connect(&config, &cli.settings, &group).map_err(sink_error)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let trims = if cli.settings.trims {
                let redis = sink::redis(&config.redis_uri).map_err(sink_error)?;
                Some(tokio::spawn(trim::scheduler(
                    redis,
                    config.redis_key_prefix.clone(),
                    shutdown.child_token(),
                )))
            } else {
                None
            };
            let result = cdc_runtime::run(&family, &config, handler, shutdown.clone()).await;
            shutdown.cancel();
            if let Some(trims) = trims {
                let _ = trims.await;
            }
            result.map(|()| ExitCode::SUCCESS)
        }
    }
}

async fn trim_once(config: &WorkerConfig, which: Which) -> Result<ExitCode, RuntimeError> {
    let redis = sink::redis(&config.redis_uri).map_err(sink_error)?;
    let jobs: &[Job] = match which {
        Which::Global => &[Job::Global],
        Which::Inbox => &[Job::Inbox],
        Which::User => &[Job::User],
        Which::All => &Job::ALL,
    };
    let mut code = ExitCode::SUCCESS;
    for job in jobs {
        match trim::run_locked(&redis, &config.redis_key_prefix, *job).await {
            Ok(Ran::Trimmed { keys, removed }) => {
                println!(
                    "{}: trimmed {keys} keys, removed {removed} items",
                    job.name()
                )
            }
            Ok(Ran::Locked) => {
                println!("{}: skipped, another replica is trimming", job.name());
                code = ExitCode::from(EXIT_CONFIG + 1);
            }
            Err(error) => {
                eprintln!("{}: failed: {error}", job.name());
                code = ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    Ok(code)
}

fn sink_error(source: anyhow::Error) -> RuntimeError {
    RuntimeError::Sink {
        what: "the timeline family's sinks",
        source,
    }
}
