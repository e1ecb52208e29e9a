//! The scheduler: server-private's `bin/cron.ts` jobs (bangumi-behaviour §6) in the fleet, on
//! Bangumi's schedule in Asia/Shanghai, each scheduled tick run once across every replica.
//!
//! Every replica keeps each enabled job's timer; at a tick, each tries to claim
//! `lock:{job}:{tick}` in Redis and the one that does runs the job and records the run
//! ([`runlog`]). On start, a tick missed while no replica was up runs once if it is younger
//! than the job's catch-up window; an older one is skipped and counted. A failing job is logged
//! once with its name (the same error again is counted, not logged again) and runs again at its
//! next tick, as upstream.
//!
//! Not here: consumption (this binary reads no topic), and the timeline fan-out (the timeline
//! worker's).
//!
//! # Layout
//! - [`job`]: the jobs, their upstream schedules and defaults; [`Settings`]: what config
//!   changes (enabled jobs, schedules, catch-up windows).
//! - [`schedule`]: cron patterns in a time zone.
//! - [`Stores`]: what the jobs touch, and [`Stores::run`], one job's effect:
//!   [`trending`], [`trim`], [`oauth`], and the heartbeat here.
//! - [`runlog`]: tick locks and the run log.
//! - [`daemon`]: the timers, claims, metrics and error reporting; [`probe`]: `/readyz`.
//! - [`cli`]: the command line (`daemon`, `run <job> --once`, `list`).

pub mod cli;
pub mod daemon;
pub mod job;
pub mod oauth;
pub mod probe;
pub mod runlog;
pub mod schedule;
pub mod trending;
pub mod trim;

use std::time::Duration;

use cdc_runtime::config::ConfigError;
use jiff::Timestamp;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sqlx::MySqlPool;

pub use job::Job;

use crate::oauth::Tokens;
use crate::trending::Ranked;
use crate::trim::Trim;

/// `task:heartbeat`: the time of the last heartbeat, unix milliseconds.
pub const HEARTBEAT_KEY: &str = "task:heartbeat";

/// Settings of the scheduler, beside the runtime's [`cdc_runtime::WorkerConfig`] (of which it
/// uses Redis, MySQL, the HTTP address and logging).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Jobs to run that are off by default (the token cleanups), comma separated.
    #[arg(
        long = "enable",
        env = "SCHEDULER_ENABLE",
        value_delimiter = ',',
        value_enum
    )]
    pub enable: Vec<Job>,

    /// Jobs not to run, comma separated (wins over `--enable`).
    #[arg(
        long = "disable",
        env = "SCHEDULER_DISABLE",
        value_delimiter = ',',
        value_enum
    )]
    pub disable: Vec<Job>,

    /// A job's schedule instead of upstream's, `JOB=CRON` (5 fields, or 6 with seconds first);
    /// repeatable, `;`-separated in the variable. For tests and staging.
    #[arg(long = "schedule", env = "SCHEDULER_SCHEDULES", value_delimiter = ';', value_parser = parse_schedule)]
    pub schedules: Vec<(Job, String)>,

    /// A job's catch-up window instead of its default, `JOB=DURATION` (`truncate-inbox=2h`);
    /// repeatable, comma separated in the variable.
    #[arg(long = "catch-up", env = "SCHEDULER_CATCH_UP", value_delimiter = ',', value_parser = parse_catch_up)]
    pub catch_up: Vec<(Job, Duration)>,

    /// The IANA time zone the schedules are read in.
    #[arg(long, env = "SCHEDULER_TIME_ZONE", default_value = "Asia/Shanghai")]
    pub time_zone: String,

    /// The pause between two deleting statements of a token cleanup (upstream: 1 s).
    #[arg(long, env = "SCHEDULER_CLEANUP_PAUSE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub cleanup_pause: Duration,
}

fn parse_schedule(text: &str) -> Result<(Job, String), String> {
    let (job, pattern) = split_job(text)?;
    Ok((job, pattern.trim().to_owned()))
}

fn parse_catch_up(text: &str) -> Result<(Job, Duration), String> {
    let (job, window) = split_job(text)?;
    let window = humantime::parse_duration(window.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    Ok((job, window))
}

fn split_job(text: &str) -> Result<(Job, &str), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected JOB=VALUE, got {text:?}"))?;
    let job = Job::named(name.trim()).ok_or_else(|| {
        let names: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
        format!("unknown job {name:?} (jobs: {})", names.join(", "))
    })?;
    Ok((job, value))
}

/// The last value given for `job` in `overrides` (a later flag wins).
fn override_of<T>(overrides: &[(Job, T)], job: Job) -> Option<&T> {
    overrides
        .iter()
        .rev()
        .find(|(j, _)| *j == job)
        .map(|(_, v)| v)
}

impl Settings {
    /// Whether `job` runs on schedule.
    pub fn enabled(&self, job: Job) -> bool {
        !self.disable.contains(&job) && (job.enabled_by_default() || self.enable.contains(&job))
    }

    /// `job`'s cron pattern.
    pub fn pattern(&self, job: Job) -> &str {
        override_of(&self.schedules, job).map_or(job.upstream_pattern(), String::as_str)
    }

    /// `job`'s catch-up window.
    pub fn catch_up(&self, job: Job) -> Duration {
        override_of(&self.catch_up, job).map_or(job.default_catch_up(), |w| *w)
    }

    /// `job`'s schedule, checked; errors name the variable.
    pub fn schedule(&self, job: Job) -> Result<schedule::Schedule, ConfigError> {
        let invalid = |name: &str, reason: String| ConfigError::Invalid {
            name: name.into(),
            reason,
        };
        let zone =
            schedule::zone(&self.time_zone).map_err(|e| invalid("SCHEDULER_TIME_ZONE", e))?;
        schedule::Schedule::new(self.pattern(job), zone)
            .map_err(|e| invalid("SCHEDULER_SCHEDULES", format!("{}: {e}", job.name())))
    }

    /// The printable form, for `--print-config`.
    pub fn describe(&self) -> String {
        let mut lines = vec![
            format!("scheduler.time_zone = {}", self.time_zone),
            format!(
                "scheduler.cleanup_pause = {}",
                humantime::format_duration(self.cleanup_pause)
            ),
        ];
        for job in Job::ALL {
            lines.push(format!(
                "scheduler.{} = {:?}, catch-up {}, {}",
                job.name(),
                self.pattern(job),
                humantime::format_duration(self.catch_up(job)),
                if self.enabled(job) {
                    "enabled"
                } else {
                    "disabled"
                }
            ));
        }
        lines.join("\n")
    }
}

/// What the jobs touch: the cache Redis and Bangumi's database.
#[derive(Clone)]
pub struct Stores {
    /// The Redis of `REDIS_URI`.
    pub redis: ConnectionManager,
    /// The database of `MYSQL_*`.
    pub mysql: MySqlPool,
    /// `REDIS_KEY_PREFIX`.
    pub prefix: String,
    /// The pause between deleting statements of the cleanups.
    pub cleanup_pause: Duration,
}

impl Stores {
    /// Runs `job` once, now; what it did, in a line.
    pub async fn run(&self, job: Job) -> anyhow::Result<String> {
        let mut redis = self.redis.clone();
        let prefix = self.prefix.as_str();
        match job {
            Job::Heartbeat => {
                let now = Timestamp::now().as_millisecond();
                let () = redis.set(format!("{prefix}{HEARTBEAT_KEY}"), now).await?;
                Ok(format!("{HEARTBEAT_KEY} = {now}"))
            }
            Job::TrendingSubjects => {
                let now = Timestamp::now();
                let mut parts = Vec::new();
                for subject_type in trending::SUBJECT_TYPES {
                    let ranked = trending::update_subjects(
                        &mut redis,
                        &self.mysql,
                        prefix,
                        subject_type,
                        now,
                    )
                    .await?;
                    parts.push(format!("type {subject_type}: {}", describe(&ranked)));
                }
                Ok(parts.join(", "))
            }
            Job::TrendingSubjectTopics => {
                let ranked =
                    trending::update_topics(&mut redis, &self.mysql, prefix, Timestamp::now())
                        .await?;
                Ok(describe(&ranked))
            }
            Job::TruncateGlobal | Job::TruncateInbox | Job::TruncateUser => {
                let which = match job {
                    Job::TruncateGlobal => Trim::Global,
                    Job::TruncateInbox => Trim::Inbox,
                    _ => Trim::User,
                };
                let done = trim::trim(&mut redis, prefix, which).await?;
                Ok(format!(
                    "trimmed {} keys, removed {} items",
                    done.keys, done.removed
                ))
            }
            Job::CleanupExpiredAccessTokens | Job::CleanupExpiredRefreshTokens => {
                let tokens = if job == Job::CleanupExpiredAccessTokens {
                    Tokens::Access
                } else {
                    Tokens::Refresh
                };
                let batches = oauth::cleanup(&self.mysql, tokens, self.cleanup_pause).await?;
                Ok(format!(
                    "deleted {} rows in {} batches",
                    batches.iter().sum::<u64>(),
                    batches.len()
                ))
            }
        }
    }
}

fn describe(ranked: &Ranked) -> String {
    match ranked {
        Ranked::Wrote(n) => format!("{n} items"),
        Ranked::Locked => "skipped, lock held".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        settings: Settings,
    }

    fn settings(args: &[&str]) -> Result<Settings, clap::Error> {
        Args::try_parse_from(std::iter::once("scheduler").chain(args.iter().copied()))
            .map(|a| a.settings)
    }

    #[test]
    fn cleanups_are_off_until_enabled_and_disable_wins() {
        let s = settings(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.enabled(Job::Heartbeat));
        assert!(!s.enabled(Job::CleanupExpiredAccessTokens));
        let s = settings(&[
            "--enable",
            "cleanup-expired-access-tokens",
            "--disable",
            "heartbeat,cleanup-expired-refresh-tokens",
            "--enable",
            "cleanup-expired-refresh-tokens",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.enabled(Job::CleanupExpiredAccessTokens));
        assert!(!s.enabled(Job::CleanupExpiredRefreshTokens));
        assert!(!s.enabled(Job::Heartbeat));
    }

    #[test]
    fn schedules_and_windows_are_overridden_per_job() {
        let s = settings(&[
            "--schedule",
            "heartbeat=* * * * * *",
            "--catch-up",
            "truncate-inbox=2h",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.pattern(Job::Heartbeat), "* * * * * *");
        assert_eq!(s.pattern(Job::TruncateUser), "0 0 5 * * *");
        assert_eq!(s.catch_up(Job::TruncateInbox), Duration::from_secs(7200));
        assert_eq!(s.catch_up(Job::Heartbeat), Duration::ZERO);
        assert!(s.schedule(Job::Heartbeat).is_ok());
        let bad =
            settings(&["--schedule", "heartbeat=61 * * * *"]).unwrap_or_else(|e| panic!("{e}"));
        let error = bad
            .schedule(Job::Heartbeat)
            .expect_err("61 is no minute")
            .to_string();
        assert!(
            error.contains("SCHEDULER_SCHEDULES") && error.contains("heartbeat"),
            "{error}"
        );
        assert!(settings(&["--schedule", "nope=* * * * *"]).is_err());
        assert!(
            settings(&["--time-zone", "Mars/Olympus"])
                .is_ok_and(|s| s.schedule(Job::TruncateUser).is_err())
        );
    }
}
