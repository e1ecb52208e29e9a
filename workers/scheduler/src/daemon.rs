//! The timers: one task per enabled job, each claiming its ticks ([`runlog::claim`]) and
//! running the job when it wins; metrics and error reporting of every run.
//!
//! Ticks a replica passes over — older than the catch-up window at start, or passed while the
//! job was still running — are counted as `missed` (another replica may have run them).

use std::time::{Duration, Instant};

use cdc_runtime::config::ConfigError;
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::job::Job;
use crate::runlog::{self, Run};
use crate::schedule::Schedule;
use crate::{Settings, Stores};

/// Metric names (labels in the doc of each). The job's label is `task`: Prometheus owns `job`.
pub mod metric {
    /// Counter `{task, result}`: runs by result (`ok`, `error`).
    pub const RUNS: &str = "scheduler_runs_total";
    /// Histogram `{task}`: seconds a run took.
    pub const RUN_SECONDS: &str = "scheduler_run_duration_seconds";
    /// Gauge `{task}`: unix time the job's latest successful run finished, on any replica
    /// (from the run log, every [`super::METRICS_INTERVAL`]; absent until one succeeded).
    pub const LAST_SUCCESS: &str = "scheduler_last_success_timestamp_seconds";
    /// Gauge `{task}`: seconds between the job's next two ticks (what an alert compares the
    /// age of the last success with).
    pub const PERIOD: &str = "scheduler_period_seconds";
    /// Counter `{task, outcome}`: ticks by what this replica did (`ran`, `taken`: another
    /// replica claimed it, `missed`: passed over).
    pub const TICKS: &str = "scheduler_ticks_total";
}

/// How often the fleet-wide gauges are read from the run log.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(15);

/// One job as scheduled.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job.
    pub job: Job,
    /// When.
    pub schedule: Schedule,
    /// How old a missed tick may be and still run on start.
    pub catch_up: Duration,
    /// Runs on schedule.
    pub enabled: bool,
}

impl Plan {
    /// `job`'s plan from `settings`.
    pub fn of(settings: &Settings, job: Job) -> Result<Plan, ConfigError> {
        Ok(Plan {
            job,
            schedule: settings.schedule(job)?,
            catch_up: settings.catch_up(job),
            enabled: settings.enabled(job),
        })
    }

    /// Every job's plan from `settings`, in [`Job::ALL`] order.
    pub fn all(settings: &Settings) -> Result<Vec<Plan>, ConfigError> {
        Job::ALL
            .into_iter()
            .map(|job| Plan::of(settings, job))
            .collect()
    }

    /// How long a tick's claim lasts: past the catch-up window (a replica starting within it
    /// must find the tick taken), and at least a minute and a period (late timers).
    fn hold(&self, tick: Timestamp) -> Duration {
        (self.catch_up + self.period(tick)).max(Duration::from_secs(60))
    }

    /// The time from `tick` to the tick after it.
    pub fn period(&self, tick: Timestamp) -> Duration {
        self.schedule
            .next_after(tick)
            .and_then(|next| Duration::try_from(next.duration_since(tick)).ok())
            .unwrap_or_default()
    }
}

/// What became of a claimed or lost tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica ran it.
    Ran(Run),
    /// Another replica (or run) claimed it first.
    Taken,
}

/// This replica's name in the run log: `HOSTNAME:pid` (the pod's name in Kubernetes).
pub fn replica() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Claims `tick` of `plan` and, if won, runs the job, records the run and its metrics.
pub async fn attempt(
    stores: &Stores,
    plan: &Plan,
    tick: Timestamp,
    replica: &str,
) -> anyhow::Result<Attempt> {
    let job = plan.job.name();
    let mut redis = stores.redis.clone();
    let claimed = runlog::claim(
        &mut redis,
        &stores.prefix,
        plan.job,
        tick.as_second(),
        replica,
        plan.hold(tick),
    )
    .await?;
    if !claimed {
        metrics::counter!(metric::TICKS, "task" => job, "outcome" => "taken").increment(1);
        return Ok(Attempt::Taken);
    }
    metrics::counter!(metric::TICKS, "task" => job, "outcome" => "ran").increment(1);
    let started = Instant::now();
    let outcome = stores.run(plan.job).await;
    let took = started.elapsed();
    let (result, summary) = match &outcome {
        Ok(summary) => (runlog::OK, summary.clone()),
        Err(error) => (runlog::ERROR, error_chain(error)),
    };
    metrics::counter!(metric::RUNS, "task" => job, "result" => result).increment(1);
    metrics::histogram!(metric::RUN_SECONDS, "task" => job).record(took.as_secs_f64());
    let finished = Timestamp::now();
    let run = Run {
        tick: tick.as_second(),
        result: result.into(),
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        finished_at_ms: finished.as_millisecond(),
        replica: replica.into(),
        summary,
    };
    runlog::record(&mut redis, &stores.prefix, plan.job, &run).await?;
    Ok(Attempt::Ran(run))
}

/// `error` and its causes in a line, each cause left out when the text before already says it
/// (sqlx's database errors repeat their source's message).
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

/// Runs every enabled plan's timer until `shutdown`.
pub async fn run(stores: Stores, plans: Vec<Plan>, shutdown: CancellationToken) {
    let replica = replica();
    let mut timers = tokio::task::JoinSet::new();
    timers.spawn(publish_gauges(
        stores.clone(),
        plans.iter().filter(|p| p.enabled).cloned().collect(),
        shutdown.clone(),
    ));
    for plan in plans.into_iter().filter(|p| p.enabled) {
        tracing::info!(
            job = plan.job.name(),
            schedule = plan.schedule.pattern(),
            "job scheduled"
        );
        timers.spawn(drive(
            stores.clone(),
            plan,
            replica.clone(),
            shutdown.clone(),
        ));
    }
    while timers.join_next().await.is_some() {}
}

/// Sets each plan's [`metric::PERIOD`] and, from the run log, [`metric::LAST_SUCCESS`], every
/// [`METRICS_INTERVAL`] until `shutdown`: the same fleet-wide values on every replica, whoever
/// ran the job and whenever a replica started.
async fn publish_gauges(stores: Stores, plans: Vec<Plan>, shutdown: CancellationToken) {
    let mut redis = stores.redis.clone();
    loop {
        let now = Timestamp::now();
        for plan in &plans {
            let task = plan.job.name();
            if let Some(next) = plan.schedule.next_after(now) {
                metrics::gauge!(metric::PERIOD, "task" => task)
                    .set(plan.period(next).as_secs_f64());
            }
            if let Ok(Some(ms)) =
                runlog::succeeded_at_ms(&mut redis, &stores.prefix, plan.job).await
            {
                metrics::gauge!(metric::LAST_SUCCESS, "task" => task).set(ms as f64 / 1000.0);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(METRICS_INTERVAL) => {}
        }
    }
}

/// One job's timer.
async fn drive(stores: Stores, plan: Plan, replica: String, shutdown: CancellationToken) {
    let job = plan.job.name();
    let mut report = Report::default();
    let started = Timestamp::now();
    // A job without a catch-up window (the heartbeat) just waits for its next tick.
    if !plan.catch_up.is_zero()
        && let Some(latest) = plan.schedule.latest_at_or_before(started)
    {
        let age = Duration::try_from(started.duration_since(latest)).unwrap_or_default();
        if age <= plan.catch_up {
            report.of(job, attempt(&stores, &plan, latest, &replica).await);
        } else if missed_since_last_run(&stores, plan.job, latest).await {
            tracing::warn!(
                job,
                tick = latest.as_second(),
                "missed tick too old to catch up; skipped"
            );
            metrics::counter!(metric::TICKS, "task" => job, "outcome" => "missed").increment(1);
        }
    }
    let mut after = started;
    loop {
        let Some(next) = plan.schedule.next_after(after) else {
            tracing::warn!(job, "the schedule has no next tick; the job stops");
            return;
        };
        let wait = Duration::try_from(next.duration_since(Timestamp::now())).unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if Timestamp::now() < next {
            continue; // woke early (the clock moved): wait again
        }
        report.of(job, attempt(&stores, &plan, next, &replica).await);
        let now = Timestamp::now();
        let mut passed = 0u64;
        let mut tick = next;
        while let Some(later) = plan.schedule.next_after(tick).filter(|t| *t <= now) {
            passed += 1;
            tick = later;
        }
        if passed > 0 {
            tracing::warn!(job, passed, "ticks passed while the job ran; skipped here");
            metrics::counter!(metric::TICKS, "task" => job, "outcome" => "missed")
                .increment(passed);
        }
        after = tick.max(next);
    }
}

/// Whether the run log's latest run of `job` is older than `tick` (or there is none).
async fn missed_since_last_run(stores: &Stores, job: Job, tick: Timestamp) -> bool {
    let mut redis = stores.redis.clone();
    match runlog::last(&mut redis, &stores.prefix, job).await {
        Ok(last) => last.is_none_or(|run| run.tick < tick.as_second()),
        Err(_) => true,
    }
}

/// A job's failures as logged: the first of a kind in full, repeats counted until the job
/// succeeds or fails otherwise.
#[derive(Debug, Default)]
struct Report {
    failing: Option<String>,
    repeats: u64,
}

/// What [`Report::of`] logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logged {
    /// Nothing: another replica had the tick.
    Nothing,
    /// The run (debug for the heartbeat).
    Ran,
    /// A new error, at error level.
    Failed,
    /// The same error again: counted, at debug level.
    Repeated,
    /// A success after failures, with how many repeats there were.
    Recovered,
}

impl Report {
    fn of(&mut self, job: &str, attempt: anyhow::Result<Attempt>) -> Logged {
        let error = match attempt {
            Ok(Attempt::Taken) => return Logged::Nothing,
            Ok(Attempt::Ran(run)) if run.result == runlog::OK => {
                let repeats = std::mem::take(&mut self.repeats);
                if self.failing.take().is_some() {
                    tracing::info!(job, repeats, "job recovered after failing");
                    return Logged::Recovered;
                }
                if job == Job::Heartbeat.name() {
                    // Every 10 s: not worth a line.
                    tracing::debug!(job, tick = run.tick, "job ran");
                } else {
                    tracing::info!(job, tick = run.tick, duration_ms = run.duration_ms, summary = %run.summary, "job ran");
                }
                return Logged::Ran;
            }
            Ok(Attempt::Ran(run)) => run.summary,
            Err(error) => format!("claiming or recording the tick: {}", error_chain(&error)),
        };
        if self.failing.as_deref() == Some(error.as_str()) {
            self.repeats += 1;
            tracing::debug!(job, repeats = self.repeats, "job failed again, same error");
            Logged::Repeated
        } else {
            tracing::error!(job, %error, "job failed; it runs again at its next tick");
            self.failing = Some(error);
            self.repeats = 0;
            Logged::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(result: &str, summary: &str) -> anyhow::Result<Attempt> {
        Ok(Attempt::Ran(Run {
            tick: 1,
            result: result.into(),
            duration_ms: 1,
            finished_at_ms: 1,
            replica: "r".into(),
            summary: summary.into(),
        }))
    }

    #[test]
    fn the_same_error_again_is_counted_not_logged_again() {
        let mut report = Report::default();
        let job = "truncate-global";
        assert_eq!(
            report.of(job, ran(runlog::ERROR, "redis down")),
            Logged::Failed
        );
        assert_eq!(
            report.of(job, ran(runlog::ERROR, "redis down")),
            Logged::Repeated
        );
        assert_eq!(
            report.of(job, ran(runlog::ERROR, "redis down")),
            Logged::Repeated
        );
        assert_eq!(report.repeats, 2);
        assert_eq!(report.of(job, Ok(Attempt::Taken)), Logged::Nothing);
        assert_eq!(report.of(job, ran(runlog::ERROR, "other")), Logged::Failed);
        assert_eq!(report.of(job, ran(runlog::OK, "fine")), Logged::Recovered);
        assert_eq!(report.of(job, ran(runlog::OK, "fine")), Logged::Ran);
        assert_eq!(
            report.of(job, ran(runlog::ERROR, "redis down")),
            Logged::Failed
        );
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        let error = anyhow::anyhow!("inner: detail").context("outer");
        assert_eq!(error_chain(&error), "outer: inner: detail");
        let repeated = anyhow::Error::new(std::io::Error::other("gone")).context("read: gone");
        assert_eq!(error_chain(&repeated), "read: gone");
    }
}
