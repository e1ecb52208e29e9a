//! The command line: subcommands, filters and the help that teaches them.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  dlq ls                                   pending dead letters of every family
  dlq show --family timeline --limit 5     the next five, decoded, with their headers
  dlq show --family cache-invalidation --stage decode --json
  dlq replay --family timeline --dry-run   what a replay would do; changes nothing
  dlq replay --family timeline --rate 50   re-apply through the handler (default --direct)
  dlq replay --family cache-invalidation --to origin --since 2h
  dlq purge --family timeline --error 'unknown op'        shows what would be skipped
  dlq purge --family timeline --error 'unknown op' --yes  skips it, and writes the audit log
  dlq rewind --family cache-invalidation --to '2026-11-23 04:00:00' --yes

Progress: each family's DLQ has a replay consumer group (<group>.dlq-replay). Its committed
offset is the first dead letter not yet handled; `ls` counts from there, `replay` and `purge`
start there and move it only over records they handled, so an interrupted replay resumes
where it stopped, and filtered-out records are never skipped implicitly.

Connections: the workers' environment variables (KAFKA_BROKERS, KAFKA_TOPIC_PREFIX,
KAFKA_GROUP_ID, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_CONFIG__*, REDIS_URI,
REDIS_KEY_PREFIX, MYSQL_*, SCHEMA_REGISTRY_URL, LOG_FORMAT; see the README), set as in the
family's Deployment. Their flags are accepted but not listed here.

Exit codes: 0 ok, 1 failure, 2 usage, 3 some records failed again (back in the DLQ),
4 broker unreachable, 5 refused (needs --yes, or the group has active members).";

/// The on-call's dead-letter and replay tool for the Bangumi CDC fleet.
#[derive(Debug, Parser)]
#[command(name = "dlq", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Worker settings (brokers, Redis, MySQL, registry…), the same variables as the workers;
    /// hidden from `--help` ([`Cli::command_line`]).
    #[command(flatten)]
    pub config: cdc_runtime::WorkerConfig,
}

impl Cli {
    /// The command line, its help limited to the tool's own flags: the worker settings are
    /// what the family's Deployment already sets (environment), not what an on-call chooses,
    /// and their thirty flags buried the dozen that matter. They stay accepted, unlisted.
    pub fn command_line() -> clap::Command {
        <Self as clap::CommandFactory>::command().mut_args(|arg| arg.hide(true))
    }

    /// Parses the process's arguments with [`Cli::command_line`]; exits on a usage error.
    pub fn parse_args() -> Self {
        let matches = Self::command_line().get_matches();
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per DLQ partition: pending records, oldest and newest failure, error classes.
    Ls {
        /// Only this family.
        #[arg(long)]
        family: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters with their headers and decoded Debezium event.
    Show {
        /// Which records.
        #[command(flatten)]
        filter: Filter,
        /// Most records to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Include records already handled (replayed or purged).
        #[arg(long)]
        all: bool,
        /// Also print the key and value bytes.
        #[arg(long)]
        payload: bool,
        /// Machine-readable output (one JSON object per line).
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters right: re-apply them, or re-produce them to their original topic.
    Replay {
        /// Which records.
        #[command(flatten)]
        filter: Filter,
        /// Where to: `direct` applies them in-process through the family's handler (the worker's
        /// idempotency rules protect the state); `origin` re-produces them to their original
        /// topic and partition for the running workers.
        #[arg(long, value_enum, default_value_t = Target::Direct)]
        to: Target,
        /// Same as `--to direct`.
        #[arg(long, conflicts_with = "to")]
        direct: bool,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many records per second.
        #[arg(long, value_name = "N")]
        rate: Option<f64>,
        /// Where the audit trail goes (one JSON line per operation).
        #[arg(long, env = "DLQ_AUDIT_LOG", default_value = "dlq-audit.jsonl")]
        audit_log: PathBuf,
    },
    /// Skip dead letters (move the replay group past them), after showing what will be skipped.
    Purge {
        /// Which records.
        #[command(flatten)]
        filter: Filter,
        /// Really do it.
        #[arg(long)]
        yes: bool,
        /// Where the audit trail goes (one JSON line per operation).
        #[arg(long, env = "DLQ_AUDIT_LOG", default_value = "dlq-audit.jsonl")]
        audit_log: PathBuf,
    },
    /// Reset a family's consumer group to a point in time, to rebuild its caches.
    Rewind {
        /// The family.
        #[arg(long)]
        family: String,
        /// Time to rewind to: RFC 3339 (`2026-11-23T04:00:00Z`, `2026-11-23 04:00:00`, UTC) or
        /// an age (`2h`, `30m`).
        #[arg(long, value_parser = parse_time)]
        to: SystemTime,
        /// Really do it.
        #[arg(long)]
        yes: bool,
        /// Where the audit trail goes (one JSON line per operation).
        #[arg(long, env = "DLQ_AUDIT_LOG", default_value = "dlq-audit.jsonl")]
        audit_log: PathBuf,
    },
}

/// Where `replay` sends records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Apply in-process through the family's handler.
    Direct,
    /// Re-produce to the original topic and partition.
    Origin,
}

/// Which dead letters a command acts on. All given conditions must hold.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// The family (see `topics/families`).
    #[arg(long)]
    pub family: String,
    /// Only this DLQ partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only the record at this DLQ offset (needs --partition).
    #[arg(long, requires = "partition", conflicts_with_all = ["from_offset", "to_offset"])]
    pub offset: Option<i64>,
    /// From this DLQ offset (inclusive).
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Up to this DLQ offset (inclusive).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// Failed at or after this time (RFC 3339 UTC, or an age like `2h`).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<SystemTime>,
    /// Failed at or before this time (RFC 3339 UTC, or an age like `30m`).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<SystemTime>,
    /// Error class (`permanent`).
    #[arg(long)]
    pub error_class: Option<String>,
    /// Pipeline stage that failed (`decode`, `apply`).
    #[arg(long)]
    pub stage: Option<String>,
    /// Error message contains this text.
    #[arg(long)]
    pub error: Option<String>,
    /// Record key equals this text (e.g. `{"subject_id":1}`).
    #[arg(long)]
    pub key: Option<String>,
}

/// RFC 3339 (UTC; `T` or space; `Z` optional) or an age before now (`2h`, `90s`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(age) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| format!("{text:?} is before the epoch"));
    }
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).map_err(|e| {
        format!("{text:?} is neither RFC 3339 (2026-11-23T04:00:00Z) nor an age (2h): {e}")
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_age() {
        let t = parse_time("2026-11-23T04:00:00Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_406_400
        );
        assert_eq!(parse_time("2026-11-23 04:00:00").unwrap(), t);
        let before = SystemTime::now();
        let age = before
            .duration_since(parse_time("2h").unwrap())
            .unwrap_or_default();
        assert!(
            age <= Duration::from_secs(7_200) && age > Duration::from_secs(7_140),
            "{age:?}"
        );
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .contains("neither RFC 3339")
        );
    }

    #[test]
    fn offset_needs_a_partition() {
        let err =
            Cli::try_parse_from(["dlq", "show", "--family", "x", "--offset", "3"]).unwrap_err();
        assert!(err.to_string().contains("--partition"), "{err}");
    }
}
