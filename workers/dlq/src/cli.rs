//! The command line: subcommands, filters and the help that teaches them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::DlqError;

const EXAMPLES: &str = "\
Examples:
  dlq ls                                   pending dead letters of every family
  dlq ls --family timeline --by error      grouped by error message (or --by table, --by stage)
  dlq show --family timeline --limit 5     the next five, decoded (personal data redacted)
  dlq show --family cache-invalidation --stage decode --json
  dlq replay --family timeline --dry-run   what a replay would do; changes nothing
  dlq replay --family timeline --rate 50 --reason 'INC-42: Redis was full'
  dlq replay --family cache-invalidation --to origin --since 2h --max 500 --reason 'INC-42'
  dlq purge --family timeline --error 'unknown op'                     shows what --yes would do
  dlq purge --family timeline --error 'unknown op' --yes --reason 'INC-42: bad rows fixed'
  dlq rewind --family cache-invalidation --to 2026-11-23T12:00:00+08:00 --yes --reason 'INC-43'
  dlq cutover --family timeline --from-group server-private --dry-run      the hand-over plan
  dlq cutover --family timeline --from-group server-private --yes --reason 'CHG-7: timeline to the fleet'
  dlq rollback --family timeline --to-group server-private --yes --reason 'CHG-7: back to the TS writer'

Which letters are pending: each DLQ has a replay consumer group (<group>.dlq-replay) and a
compacted handled topic (<dlq>.handled). Letters before the group's committed offset are handled;
so are letters after it that the handled topic lists (replayed or purged on their own, by a
filtered replay or purge). Every other letter is pending: `ls` counts exactly those, and any of
them can be replayed or purged whatever its neighbours, once. An interrupted replay (SIGINT,
SIGTERM) finishes the letter in hand, saves its progress and resumes where it stopped.

Hand-over: cutover and rollback copy committed offsets between a legacy group and the family's
group (KAFKA_GROUP_ID, else the family's), for every partition of the family's topics. Both
groups must have no active members. A partition the giving group never committed needs
--missing earliest|latest; moving the receiving group backwards needs --force.

Audit: replay, purge, rewind, cutover and rollback need --reason, write their intent to the audit trail before acting
and their outcome after, and refuse to start if the trail cannot be written.

Times: RFC 3339 with any UTC offset (2026-11-23T04:00:00Z, 2026-11-23T12:00:00+08:00), epoch
milliseconds (as `show --json` prints them), or an age (2h, 30m).

Connections: the workers' environment variables (KAFKA_BROKERS, KAFKA_TOPIC_PREFIX,
KAFKA_GROUP_ID, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_CONFIG__*, REDIS_URI,
REDIS_KEY_PREFIX, MYSQL_*, SCHEMA_REGISTRY_URL, LOG_FORMAT; see the README), set as in the
family's Deployment. Their flags are accepted but not listed here.

Exit codes: 0 ok, 1 failure, 2 usage, 3 some letters failed again (back in the DLQ),
4 broker unreachable, 5 refused (needs --yes, --force or --missing, a group has active members,
or the audit trail is not writable), 6 a dependency stayed unavailable past --timeout,
130 interrupted (progress saved; run the same command to resume).";

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
        /// Count pending letters by this instead of by partition.
        #[arg(long, value_enum)]
        by: Option<GroupBy>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters with their headers and decoded Debezium event.
    Show {
        /// Which records.
        #[command(flatten)]
        filter: Filter,
        /// Most records to show (at least 1).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
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
        /// Replay at most N letters (the first N matching, in partition and offset order).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max: Option<u64>,
        /// Stop once N replayed letters have failed again.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        stop_after_failures: Option<u64>,
        /// Give up when one letter waits this long on an unavailable dependency (Redis, MySQL,
        /// the broker) and exit with code 6; the letter stays pending.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        timeout: Duration,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Skip dead letters (move the replay group past them), after showing what will be skipped.
    Purge {
        /// Which records.
        #[command(flatten)]
        filter: Filter,
        /// Purge at most N letters (the first N matching, in partition and offset order).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max: Option<u64>,
        /// Really do it.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        audit: AuditArgs,
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
        /// Also move the group forward (skipping records it has not consumed yet).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Hand a family's topics over from a legacy consumer group: copy the legacy group's
    /// committed offsets into the family's group, so the family resumes exactly where the legacy
    /// worker stopped. Shows the plan first; both groups must be idle.
    Cutover {
        /// The family.
        #[arg(long)]
        family: String,
        /// The legacy group (`server-private`, `go-canal`; the README says which family takes
        /// over from which).
        #[arg(long)]
        from_group: String,
        #[command(flatten)]
        hand_over: HandOverArgs,
    },
    /// Hand a family's topics back: copy the family's committed offsets into the legacy group,
    /// so the legacy worker resumes exactly where the fleet stopped. Shows the plan first; both
    /// groups must be idle.
    Rollback {
        /// The family.
        #[arg(long)]
        family: String,
        /// The legacy group to resume (`server-private`, `go-canal`).
        #[arg(long)]
        to_group: String,
        #[command(flatten)]
        hand_over: HandOverArgs,
    },
}

/// The policies and confirmation of `cutover` and `rollback`.
#[derive(Debug, Clone, Args)]
pub struct HandOverArgs {
    /// What a partition gets that the giving group never committed: its first record
    /// (`earliest`), its end (`latest`), or a refusal naming the partitions (`fail`).
    #[arg(long, value_enum, default_value_t = Missing::Fail)]
    pub missing: Missing,
    /// Print the plan and what would be refused; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Really do it.
    #[arg(long)]
    pub yes: bool,
    /// Also move the receiving group backwards (re-applying records it has applied).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// What a hand-over writes for a partition the giving group never committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Missing {
    /// The partition's first record.
    Earliest,
    /// The partition's end (only records produced from now on).
    Latest,
    /// Refuse, naming the partitions.
    Fail,
}

impl Missing {
    /// The value as typed.
    pub fn name(self) -> &'static str {
        match self {
            Missing::Earliest => "earliest",
            Missing::Latest => "latest",
            Missing::Fail => "fail",
        }
    }
}

/// What every state-changing command records in the audit trail.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Why (an incident, a ticket): required to change anything, written to the audit trail.
    #[arg(long, env = "DLQ_REASON")]
    pub reason: Option<String>,
    /// The audit trail: an intent line before acting, an outcome line after. Defaults to
    /// `$XDG_STATE_HOME/bangumi-cdc/dlq-audit.jsonl` (else under `~/.local/state`).
    #[arg(long, env = "DLQ_AUDIT_LOG", default_value_os_t = crate::audit::default_path())]
    pub audit_log: PathBuf,
}

impl AuditArgs {
    /// The reason, required before anything changes.
    pub fn reason(&self) -> Result<&str, DlqError> {
        self.reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                DlqError::Usage(
                    "--reason is required to change anything: say why (an incident, a ticket); it goes to the audit trail".into(),
                )
            })
    }
}

/// How `ls --by` groups pending letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum GroupBy {
    /// The error message.
    Error,
    /// The source table (from the original topic).
    Table,
    /// The pipeline stage that failed.
    Stage,
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

impl Filter {
    /// Rejects conditions no letter can meet.
    pub fn validate(&self) -> Result<(), DlqError> {
        if let (Some(from), Some(to)) = (self.from_offset, self.to_offset)
            && from > to
        {
            return Err(DlqError::Usage(format!(
                "--from-offset {from} is after --to-offset {to}"
            )));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return Err(DlqError::Usage(format!(
                "--since {} is after --until {}",
                humantime::format_rfc3339_millis(since),
                humantime::format_rfc3339_millis(until)
            )));
        }
        Ok(())
    }

    /// The conditions as an on-call would type them, for messages and the audit trail.
    pub fn describe(&self) -> String {
        let time = |t: &SystemTime| humantime::format_rfc3339_millis(*t).to_string();
        let conditions: Vec<String> = [
            ("--partition", self.partition.map(|p| p.to_string())),
            ("--offset", self.offset.map(|o| o.to_string())),
            ("--from-offset", self.from_offset.map(|o| o.to_string())),
            ("--to-offset", self.to_offset.map(|o| o.to_string())),
            ("--since", self.since.as_ref().map(time)),
            ("--until", self.until.as_ref().map(time)),
            ("--error-class", self.error_class.clone()),
            ("--stage", self.stage.clone()),
            ("--error", self.error.as_ref().map(|e| format!("{e:?}"))),
            ("--key", self.key.as_ref().map(|k| format!("{k:?}"))),
        ]
        .into_iter()
        .filter_map(|(flag, value)| Some(format!("{flag} {}", value?)))
        .collect();
        if conditions.is_empty() {
            "every pending letter".into()
        } else {
            conditions.join(" ")
        }
    }
}

/// A time: RFC 3339 with any UTC offset (`2026-11-23T12:00:00+08:00`; `Z`, `T` or a space,
/// fractions of a second optional; no offset means UTC), epoch milliseconds (as `show --json`
/// prints failure times), or an age before now (`2h`, `90s`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = text
            .parse()
            .map_err(|e| format!("{text:?} as epoch milliseconds: {e}"))?;
        return Ok(UNIX_EPOCH + Duration::from_millis(ms));
    }
    if let Ok(age) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| format!("{text:?} is before the epoch"));
    }
    let (local, offset_s) = split_utc_offset(text);
    let wrong = |e: &dyn std::fmt::Display| {
        format!(
            "{text:?} is neither RFC 3339 (2026-11-23T04:00:00Z, 2026-11-23T12:00:00+08:00), epoch milliseconds, nor an age (2h): {e}"
        )
    };
    let local = humantime::parse_rfc3339_weak(local).map_err(|e| wrong(&e))?;
    let shifted = if offset_s >= 0 {
        local.checked_sub(Duration::from_secs(offset_s.unsigned_abs()))
    } else {
        local.checked_add(Duration::from_secs(offset_s.unsigned_abs()))
    };
    shifted.ok_or_else(|| wrong(&"out of range"))
}

/// Splits `2026-11-23T12:00:00+08:00` into the local time and its offset east of UTC in
/// seconds; `Z` or no offset is UTC.
fn split_utc_offset(text: &str) -> (&str, i64) {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return (local, 0);
    }
    let Some((local, offset)) = text.len().checked_sub(6).map(|at| text.split_at(at)) else {
        return (text, 0);
    };
    let b = offset.as_bytes();
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return (text, 0),
    };
    let number = |s: &str| s.parse::<i64>().ok();
    match (b[3], number(&offset[1..3]), number(&offset[4..6])) {
        (b':', Some(h), Some(m)) if local.len() > 10 => (local, sign * (h * 3600 + m * 60)),
        _ => (text, 0),
    }
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
    fn times_take_any_utc_offset_and_epoch_millis() {
        let t = parse_time("2026-11-23T04:00:00Z").unwrap();
        assert_eq!(parse_time("2026-11-23T12:00:00+08:00").unwrap(), t);
        assert_eq!(parse_time("2026-11-22T23:30:00-04:30").unwrap(), t);
        assert_eq!(parse_time("1795406400000").unwrap(), t);
        assert_eq!(
            parse_time("2026-11-23T04:00:00.250Z").unwrap(),
            t + Duration::from_millis(250)
        );
    }

    #[test]
    fn impossible_filters_are_usage_errors() {
        let filter = |args: &[&str]| match Cli::try_parse_from(
            ["dlq", "show", "--family", "x"].iter().chain(args),
        )
        .unwrap()
        .command
        {
            Command::Show { filter, .. } => filter,
            other => panic!("{other:?}"),
        };
        let err = filter(&["--from-offset", "9", "--to-offset", "3"])
            .validate()
            .unwrap_err();
        assert_eq!(err.to_string(), "--from-offset 9 is after --to-offset 3");
        let err = filter(&["--since", "1h", "--until", "2h"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("--since "), "{err}");
        let err =
            Cli::try_parse_from(["dlq", "show", "--family", "x", "--limit", "0"]).unwrap_err();
        assert!(err.to_string().contains("--limit"), "{err}");
    }

    #[test]
    fn offset_needs_a_partition() {
        let err =
            Cli::try_parse_from(["dlq", "show", "--family", "x", "--offset", "3"]).unwrap_err();
        assert!(err.to_string().contains("--partition"), "{err}");
    }
}
