//! The command line every family binary shares: `run` (default), `provision`, `migrate` (the
//! fleet's own tables, for families that write SQL exactly once), `--print-config`.
//!
//! A family's `main` is one call to [`main`] (or [`main_with`], for a family with settings of
//! its own, or [`main_with_commands`], for one with subcommands of its own too) with its name and
//! a function that connects its handler's sinks; everything else (config, logging, signals, exit
//! codes) happens here.

use std::future::Future;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, WorkerConfig};
use crate::error::RuntimeError;
use crate::family::Handler;
use crate::provision::{Provisioned, provision};
use crate::{kafka, observe, worker};

/// Exit code for an invalid setting or usage.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for any other failure that stops the worker.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(about, long_about = None)]
struct Cli<S: FamilySettings, C: FamilyCommands<S>> {
    #[command(subcommand)]
    command: Option<Command<C>>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long, global = true)]
    print_config: bool,
    #[command(flatten)]
    config: WorkerConfig,
    #[command(flatten)]
    settings: S,
}

/// A family's own settings beside [`WorkerConfig`]: flags and environment variables of its
/// binary, checked before anything starts and shown by `--print-config`.
pub trait FamilySettings: clap::Args + std::fmt::Debug + Send + 'static {
    /// Checks the settings; an error names the variable.
    fn validate(&self) -> Result<(), ConfigError>;
    /// `--print-config` lines (nothing secret).
    fn describe(&self) -> String;
}

/// A family's subcommands beside `run`, `provision` and `migrate` (`search reindex`, say).
pub trait FamilyCommands<S>: clap::Subcommand + std::fmt::Debug + Send + 'static {
    /// Runs the subcommand with the worker's checked configuration and the family's settings;
    /// the exit code is the process's.
    fn run(
        self,
        config: WorkerConfig,
        settings: S,
    ) -> impl Future<Output = Result<ExitCode, RuntimeError>> + Send;
}

/// The subcommands of a family that has none of its own.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum NoCommands {}

impl<S: Send + 'static> FamilyCommands<S> for NoCommands {
    async fn run(self, _: WorkerConfig, _: S) -> Result<ExitCode, RuntimeError> {
        match self {}
    }
}

/// The settings of a family that has none of its own.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct NoSettings {}

impl FamilySettings for NoSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    fn describe(&self) -> String {
        String::new()
    }
}

#[derive(Debug, Subcommand)]
enum Command<C: clap::Subcommand> {
    /// Consume the family's topics until SIGTERM/SIGINT (the default).
    Run,
    /// Create the family's topics and DLQ on the broker (idempotent), then exit.
    Provision {
        /// Replication factor for new topics.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Create or change the fleet's own tables in MYSQL_DB (`cdc_applied_messages`), then exit.
    /// Run before the workers of a new version start (the Helm chart's pre-install/pre-upgrade
    /// hook); idempotent. Only for a family that needs them (`migrate = true` in `topics/`).
    Migrate,
    #[command(flatten)]
    Family(C),
}

/// Runs a family binary named `family`; `connect` builds its handler from the configuration.
pub fn main<H, F, Fut>(family: &str, connect: F) -> ExitCode
where
    H: Handler,
    F: FnOnce(WorkerConfig) -> Fut,
    Fut: Future<Output = anyhow::Result<H>>,
{
    main_with(family, |config, NoSettings {}| connect(config))
}

/// Runs a family binary named `family` with settings `S` of its own; `connect` builds its
/// handler from the configuration and the settings.
pub fn main_with<S, H, F, Fut>(family: &str, connect: F) -> ExitCode
where
    S: FamilySettings,
    H: Handler,
    F: FnOnce(WorkerConfig, S) -> Fut,
    Fut: Future<Output = anyhow::Result<H>>,
{
    main_with_commands::<S, NoCommands, H, F, Fut>(family, connect)
}

/// Runs a family binary named `family` with settings `S` and subcommands `C` of its own;
/// `connect` builds its handler from the configuration and the settings.
pub fn main_with_commands<S, C, H, F, Fut>(family: &str, connect: F) -> ExitCode
where
    S: FamilySettings,
    C: FamilyCommands<S>,
    H: Handler,
    F: FnOnce(WorkerConfig, S) -> Fut,
    Fut: Future<Output = anyhow::Result<H>>,
{
    let family = match family_named(family) {
        Ok(family) => family,
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code(&error);
        }
    };
    let matches = Cli::<S, C>::command()
        .name(family.family.clone())
        .about(family.description.clone())
        .get_matches();
    let cli = Cli::<S, C>::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let log_format = cli.config.log_format.clone();
    run_to_exit(&log_format, run_cli(family, cli, connect))
}

/// The family `topics/families/<name>.toml` declares.
fn family_named(name: &str) -> Result<cdc_topics::Family, RuntimeError> {
    let missing = || ConfigError::Invalid {
        name: "family".into(),
        reason: format!("no topics/families/{name}.toml"),
    };
    Ok(cdc_topics::by_name(name)?.ok_or_else(missing)?)
}

/// Starts logging and the async runtime, runs `work`, and turns its outcome into the process
/// exit code (a failure is logged and printed first). Every worker binary's `main` ends here.
pub fn run_to_exit<F>(log_format: &str, work: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, RuntimeError>>,
{
    observe::init_tracing(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(%error, class = %error.class(), "worker stopped");
            eprintln!("error: {error}");
            exit_code(&error)
        }
    }
}

/// The process exit code for a worker that stopped with `error`.
pub fn exit_code(error: &RuntimeError) -> ExitCode {
    ExitCode::from(match error {
        RuntimeError::Config(_) | RuntimeError::Family(_) => EXIT_CONFIG,
        _ => EXIT_FAILURE,
    })
}

async fn run_cli<S, C, H, F, Fut>(
    family: cdc_topics::Family,
    cli: Cli<S, C>,
    connect: F,
) -> Result<ExitCode, RuntimeError>
where
    S: FamilySettings,
    C: FamilyCommands<S>,
    H: Handler,
    F: FnOnce(WorkerConfig, S) -> Fut,
    Fut: Future<Output = anyhow::Result<H>>,
{
    let config = cli.config.finish(&family)?;
    cli.settings.validate()?;
    let family = family.with_topic_prefix(&config.kafka_topic_prefix);
    if cli.print_config {
        let settings = cli.settings.describe();
        println!("{}", config.redacted(&family));
        if !settings.is_empty() {
            println!("{settings}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = match cli.command.unwrap_or(Command::Run) {
        Command::Family(command) => return command.run(config, cli.settings).await,
        Command::Provision { replication } => {
            provision_and_report(&config, &family, replication).await
        }
        Command::Migrate if !family.migrate => Err(ConfigError::Invalid {
            name: "migrate".into(),
            reason: format!(
                "family {0} keeps no tables of its own (no `migrate = true` in topics/families/{0}.toml)",
                family.family
            ),
        }
        .into()),
        Command::Migrate => migrate_and_report(&config).await,
        Command::Run => {
            worker::check_run_mode::<H>(&config, &family)?;
            tracing::info!(config = %config.redacted(&family).replace('\n', "; "), "configuration");
            let handler = connect(config.clone(), cli.settings)
                .await
                .map_err(|source| RuntimeError::Sink {
                    what: "the family's sinks",
                    source,
                })?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            worker::run(&family, &config, handler, shutdown).await
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// The `provision` subcommand: creates `family`'s topics, DLQ and DLQ handled topic, one line
/// per topic.
pub async fn provision_and_report(
    config: &WorkerConfig,
    family: &cdc_topics::Family,
    replication: i32,
) -> Result<(), RuntimeError> {
    let kafka = kafka::base_config(config, "provision");
    for result in provision(&kafka, family, replication).await? {
        match result {
            Provisioned::Created(t) if t == family.dlq_handled_topic() => {
                println!("created {t} (1 partition, compacted)")
            }
            Provisioned::Created(t) => println!("created {t} ({} partitions)", family.partitions),
            Provisioned::Existed(t) => println!("exists  {t}"),
        }
    }
    Ok(())
}

/// The `migrate` subcommand: applies the pending migrations of the fleet's own tables
/// ([`crate::applied::MIGRATOR`]) on `MYSQL_DB`, one line per migration applied.
pub async fn migrate_and_report(config: &WorkerConfig) -> Result<(), RuntimeError> {
    let pool = crate::mysql::pool(config);
    let applied = crate::applied::migrate(&pool).await;
    pool.close().await;
    let applied = applied.map_err(|e| RuntimeError::Sink {
        what: "migrating the fleet's tables",
        source: anyhow::anyhow!(
            "database {} on {}:{} as {}: {e}",
            config.mysql_db,
            config.mysql_host,
            config.mysql_port,
            config.mysql_user
        ),
    })?;
    if applied.is_empty() {
        println!("migrate: {}: up to date", config.mysql_db);
    }
    for migration in applied {
        println!("migrate: {}: applied {migration}", config.mysql_db);
    }
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("signal received; draining");
    shutdown.cancel();
}
