//! `dlq`: the on-call's dead-letter and replay tool.
//!
//! It reads `topics/` (through `cdc-topics`) to know each family's DLQ and groups, decodes dead
//! letters through `cdc-schemas` (via the runtime's decoder, registry included), and replays
//! them through the runtime's own pipeline, so a replayed record meets exactly the decoding,
//! idempotency rules and dead-letter handling of a consumed one.
//!
//! # Layout
//! - [`cli`]: arguments, filters, help and examples.
//! - [`letter`]: one dead letter and its context headers.
//! - [`reader`]: reading a DLQ and moving its replay group.
//! - [`handled`]: which letters are handled, letter by letter.
//! - [`inspect`]: `ls`, `show`.
//! - [`repair`]: `replay`, `purge`, `rewind`.
//! - [`handover`]: `cutover`, `rollback`: offsets between a legacy group and the family's.
//! - [`audit`]: the audit trail.
//! - [`error`]: failures and exit codes.

pub mod audit;
pub mod cli;
pub mod error;
pub mod handled;
pub mod handover;
pub mod inspect;
pub mod letter;
pub mod reader;
pub mod repair;

use std::process::ExitCode;

use cdc_topics::Family;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, Target};
use crate::error::{DlqError, exit};

/// Runs one command; the exit code says how it went.
pub async fn run(cli: Cli) -> Result<ExitCode, DlqError> {
    // The family as this deployment runs it: topic prefix and group override applied.
    let deployed = |mut family: Family| -> Family {
        if let Some(group) = &cli.config.kafka_group_id {
            family.group = group.clone();
        }
        family.with_topic_prefix(&cli.config.kafka_topic_prefix)
    };
    let family = |name: &str| -> Result<Family, DlqError> {
        let family = cdc_topics::by_name(name)
            .map_err(|e| DlqError::Other(e.into()))?
            .ok_or_else(|| {
                DlqError::Usage(format!(
                    "no family {name:?}; families: {}",
                    cdc_topics::names().join(", ")
                ))
            })?;
        Ok(deployed(family))
    };
    let config = &cli.config;
    match &cli.command {
        Command::Ls {
            family: name,
            by,
            json,
        } => {
            let families = match name {
                Some(name) => vec![family(name)?],
                None => cdc_topics::all()
                    .map_err(|e| DlqError::Other(e.into()))?
                    .into_iter()
                    .map(deployed)
                    .collect(),
            };
            inspect::ls(config, &families, *by, *json)?;
        }
        Command::Show {
            filter,
            limit,
            all,
            payload,
            json,
        } => {
            inspect::show(
                config,
                &family(&filter.family)?,
                filter,
                *limit as usize,
                *all,
                *payload,
                *json,
            )
            .await?;
        }
        Command::Replay {
            filter,
            to,
            direct,
            dry_run,
            rate,
            max,
            stop_after_failures,
            timeout,
            audit,
        } => {
            let options = repair::ReplayOptions {
                target: if *direct { Target::Direct } else { *to },
                dry_run: *dry_run,
                rate: *rate,
                max: *max,
                stop_after_failures: *stop_after_failures,
                timeout: *timeout,
            };
            let stop = stop_on_signals();
            let report = repair::replay(
                config,
                &family(&filter.family)?,
                filter,
                &options,
                audit,
                &stop,
            )
            .await?;
            if report.failed_again > 0 {
                return Ok(ExitCode::from(exit::PARTIAL));
            }
        }
        Command::Purge {
            filter,
            max,
            yes,
            audit,
        } => {
            repair::purge(config, &family(&filter.family)?, filter, *max, *yes, audit).await?;
        }
        Command::Rewind {
            family: name,
            to,
            yes,
            force,
            audit,
        } => {
            repair::rewind(config, &family(name)?, *to, *yes, *force, audit).await?;
        }
        Command::Cutover {
            family: name,
            from_group,
            hand_over,
        } => {
            let request = handover::HandOver {
                direction: handover::Direction::Cutover,
                legacy_group: from_group,
                args: hand_over,
            };
            handover::hand_over(config, &family(name)?, &request)?;
        }
        Command::Rollback {
            family: name,
            to_group,
            hand_over,
        } => {
            let request = handover::HandOver {
                direction: handover::Direction::Rollback,
                legacy_group: to_group,
                args: hand_over,
            };
            handover::hand_over(config, &family(name)?, &request)?;
        }
    }
    Ok(ExitCode::from(exit::OK))
}

/// A token cancelled by the first SIGINT or SIGTERM: the command finishes the letters in hand,
/// saves its progress and writes its audit outcome. A second signal exits at once.
fn stop_on_signals() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = CancellationToken::new();
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("warning: cannot catch SIGINT/SIGTERM; an interrupt stops at once");
        return stop;
    };
    let token = stop.clone();
    tokio::spawn(async move {
        tokio::select! { _ = interrupt.recv() => {}, _ = terminate.recv() => {} }
        eprintln!("stopping after the letters in hand (signal again to quit at once)");
        token.cancel();
        tokio::select! { _ = interrupt.recv() => {}, _ = terminate.recv() => {} }
        eprintln!("quitting at once");
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
    stop
}
