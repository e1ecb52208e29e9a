//! `make parity`: the offline parity harness ([`fleet_harness::parity`]) for an operator. Exit 0
//! on parity, 1 when a record's writes differ other than as the baseline documents, 2 when the
//! run could not be completed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::parity::{self, Options, REFERENCE_LEGACY_CMD};

/// Feeds a recorded event file to a legacy worker command and to a family's worker, each with
/// its own Redis and topics, and diffs the Redis writes of every record.
#[derive(Debug, Parser)]
#[command(name = "parity")]
struct Cli {
    /// The legacy worker, run with `sh -c` in the repository's root; it gets KAFKA_BROKERS,
    /// KAFKA_TOPIC_PREFIX, KAFKA_GROUP_ID, REDIS_URL (= REDIS_URI), REDIS_KEY_PREFIX (empty)
    /// and SCHEMA_REGISTRY_URL. Default: the reference script (scripts/legacy_reference.py).
    #[arg(long, env = "LEGACY_CMD", default_value = REFERENCE_LEGACY_CMD, hide_default_value = true)]
    legacy_cmd: String,
    /// The legacy side's topic prefix. Default: one of the run's own; '' for a legacy worker
    /// that reads fixed topic names (server-private's bin/mq.ts): the topics must then hold
    /// nothing else being written meanwhile.
    #[arg(long, env = "LEGACY_TOPIC_PREFIX")]
    legacy_topic_prefix: Option<String>,
    /// The family compared (topics/families/<family>.toml).
    #[arg(long, env = "FAMILY", default_value = "cache-invalidation")]
    family: String,
    /// The recorded events, in the fixtures' line format. Default: fixtures/debezium/json.jsonl.
    #[arg(long, env = "EVENTS")]
    events: Option<PathBuf>,
    /// Keys to seed and documented differences (`seeded`, `records[].differs` by seq); `none`
    /// for neither. Default: fixtures/expected/<family>.json when it exists.
    #[arg(long, env = "BASELINE")]
    baseline: Option<String>,
    /// How long each side may take to commit one record.
    #[arg(long, env = "RECORD_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    record_timeout: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let events = cli.events.unwrap_or_else(|| fixtures::path(Encoding::Json));
    let baseline = match cli.baseline.as_deref() {
        Some("none") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => Some(fixtures::dir().join(format!("expected/{}.json", cli.family)))
            .filter(|p| p.exists()),
    };
    let log_dir = PathBuf::from(
        std::env::var("CDC_STATE_DIR").unwrap_or_else(|_| "/var/tmp/bangumi-cdc".into()),
    )
    .join("log");
    let options = Options {
        legacy_cmd: cli.legacy_cmd,
        legacy_topic_prefix: cli.legacy_topic_prefix,
        family: cli.family,
        events,
        baseline,
        record_timeout: cli.record_timeout,
        log_dir,
    };
    if let Err(e) = std::fs::create_dir_all(&options.log_dir) {
        eprintln!("parity: creating {}: {e}", options.log_dir.display());
        return ExitCode::from(2);
    }
    match parity::run(&options).await {
        Ok(report) if report.unexpected == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("parity failed: {e:#}");
            ExitCode::from(2)
        }
    }
}
