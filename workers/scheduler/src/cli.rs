//! The `scheduler` command line: `daemon` (the default: every enabled job on its schedule,
//! with `/metrics`, `/healthz`, `/readyz`), `run <job> --once` (one run now, under a tick
//! claim of its own, exiting with the job's result), `list` (each job's schedule, next run,
//! last run, result and duration), `--print-config`. Settings: the runtime's
//! [`WorkerConfig`] (Redis, MySQL, HTTP address, logging) and the scheduler's [`Settings`].

use std::process::ExitCode;
use std::sync::Arc;

use cdc_runtime::cli::{EXIT_FAILURE, cancel_on_signal};
use cdc_runtime::observe::{self, Health};
use cdc_runtime::{Dependency, RuntimeError, WorkerConfig, sink};
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::daemon::{self, Attempt, Plan};
use crate::job::Job;
use crate::{Settings, Stores, probe, runlog};

/// Exit code of `run --once` when the tick was claimed by someone else.
pub const EXIT_TAKEN: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = "scheduler", about = "Bangumi's periodic jobs (server-private's cron), one run per tick across replicas", long_about = None)]
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
    /// Run every enabled job on its schedule until SIGTERM/SIGINT (the default).
    Daemon,
    /// Run one job now (enabled or not), then exit: 0 if it succeeded, 1 if it failed, 3 if
    /// another run claimed the same second.
    Run {
        /// The job.
        #[arg(value_enum)]
        job: Job,
        /// Run once (the only mode; the schedule runs in `daemon`).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Show each job: enabled, schedule, next run, last run, its result and duration.
    List,
}

/// Runs the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.config.log_format.clone();
    cdc_runtime::cli::run_to_exit(&log_format, run_cli(cli))
}

async fn run_cli(cli: Cli) -> Result<ExitCode, RuntimeError> {
    let config = cli.config.finish_without_family()?;
    let plans = Plan::all(&cli.settings)?;
    if cli.print_config {
        println!(
            "{}\nhttp_addr = {}\n{}",
            config.redacted_stores().join("\n"),
            config.http_addr,
            cli.settings.describe()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let stores = Stores {
        redis: sink::redis(&config.redis_uri).map_err(|source| RuntimeError::Sink {
            what: "the scheduler's Redis",
            source,
        })?,
        mysql: cdc_runtime::mysql::pool(&config),
        prefix: config.redis_key_prefix.clone(),
        cleanup_pause: cli.settings.cleanup_pause,
    };
    match cli.command.unwrap_or(Command::Daemon) {
        Command::Daemon => {
            tracing::info!(config = %config.redacted_stores().join("; "), "configuration");
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            let health = Arc::new(Health::default());
            let bound = observe::serve(
                "scheduler",
                config.http_addr,
                health.clone(),
                shutdown.clone(),
            )
            .await?;
            tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
            let probe = tokio::spawn(probe::watch(
                stores.clone(),
                Dependency::redis(&config.redis_uri),
                Dependency::mysql(&config.mysql_host, config.mysql_port),
                health,
                shutdown.clone(),
            ));
            daemon::run(stores, plans, shutdown).await;
            let _ = probe.await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { job, .. } => {
            let plan = Plan::of(&cli.settings, job)?;
            let tick = Timestamp::from_second(Timestamp::now().as_second())
                .unwrap_or_else(|_| Timestamp::now());
            match daemon::attempt(&stores, &plan, tick, &daemon::replica()).await {
                Ok(Attempt::Ran(run)) => {
                    println!(
                        "{}: {} in {} ms: {}",
                        job.name(),
                        run.result,
                        run.duration_ms,
                        run.summary
                    );
                    Ok(if run.result == runlog::OK {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_FAILURE)
                    })
                }
                Ok(Attempt::Taken) => {
                    println!(
                        "{}: tick {} claimed by another run; not run",
                        job.name(),
                        tick.as_second()
                    );
                    Ok(ExitCode::from(EXIT_TAKEN))
                }
                Err(error) => {
                    eprintln!("{}: failed: {}", job.name(), daemon::error_chain(&error));
                    Ok(ExitCode::from(EXIT_FAILURE))
                }
            }
        }
        Command::List => {
            let now = Timestamp::now();
            let mut redis = stores.redis.clone();
            println!(
                "{:<31} {:<8} {:<16} {:<26} {:<26} {:<6} {:>9}",
                "JOB", "ENABLED", "SCHEDULE", "NEXT RUN", "LAST RUN (TICK)", "RESULT", "DURATION"
            );
            for plan in &plans {
                let next = match plan.schedule.next_after(now) {
                    Some(t) if plan.enabled => wall_clock(&plan.schedule, t),
                    _ => "-".into(),
                };
                let last = runlog::last(&mut redis, &stores.prefix, plan.job)
                    .await
                    .map_err(|source| RuntimeError::Sink {
                        what: "reading the run log",
                        source,
                    })?;
                let (tick, result, duration) = match last {
                    Some(run) => (
                        Timestamp::from_second(run.tick)
                            .map_or(run.tick.to_string(), |t| wall_clock(&plan.schedule, t)),
                        run.result,
                        format!("{} ms", run.duration_ms),
                    ),
                    None => ("never".into(), "-".into(), "-".into()),
                };
                println!(
                    "{:<31} {:<8} {:<16} {:<26} {:<26} {:<6} {:>9}",
                    plan.job.name(),
                    if plan.enabled { "yes" } else { "no" },
                    plan.schedule.pattern(),
                    next,
                    tick,
                    result,
                    duration
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `at` on the schedule's wall clock, with its offset.
fn wall_clock(schedule: &crate::schedule::Schedule, at: Timestamp) -> String {
    schedule
        .zoned(at)
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}
