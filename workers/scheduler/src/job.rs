//! The jobs: server-private's `bin/cron.ts` list (bangumi-behaviour §6), each with its upstream
//! schedule, its catch-up window and whether it runs by default.

use std::time::Duration;

use clap::ValueEnum;

/// One periodic job. Its name (kebab-case) is used in settings, keys, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Job {
    /// `SET task:heartbeat <ms>` (`tasks/heartbeat.ts`).
    Heartbeat,
    /// `trending:subjects:{type}:month` for types 1, 2, 3, 4, 6 (`lib/trending/subject.ts`).
    TrendingSubjects,
    /// `trending:topics:subjects:week` (`lib/trending/topic.ts`).
    TrendingSubjectTopics,
    /// `tml:v3:inbox:0` keeps its newest 1000 (`tasks/timeline.ts`).
    TruncateGlobal,
    /// Every `tml:v3:inbox:*` keeps its newest 200.
    TruncateInbox,
    /// Every `tml:v3:user:*` keeps its newest 200.
    TruncateUser,
    /// Deletes access tokens expired over 7 days ago (`tasks/oauth.ts`).
    CleanupExpiredAccessTokens,
    /// Deletes refresh tokens expired over 7 days ago.
    CleanupExpiredRefreshTokens,
}

impl Job {
    /// Every job, in `bin/cron.ts` order.
    pub const ALL: [Job; 8] = [
        Job::Heartbeat,
        Job::TrendingSubjects,
        Job::TrendingSubjectTopics,
        Job::TruncateGlobal,
        Job::TruncateInbox,
        Job::TruncateUser,
        Job::CleanupExpiredAccessTokens,
        Job::CleanupExpiredRefreshTokens,
    ];

    /// Its name: `heartbeat`, `trending-subjects`, …
    pub fn name(self) -> &'static str {
        match self {
            Job::Heartbeat => "heartbeat",
            Job::TrendingSubjects => "trending-subjects",
            Job::TrendingSubjectTopics => "trending-subject-topics",
            Job::TruncateGlobal => "truncate-global",
            Job::TruncateInbox => "truncate-inbox",
            Job::TruncateUser => "truncate-user",
            Job::CleanupExpiredAccessTokens => "cleanup-expired-access-tokens",
            Job::CleanupExpiredRefreshTokens => "cleanup-expired-refresh-tokens",
        }
    }

    /// The job named `name`.
    pub fn named(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }

    /// Its `bin/cron.ts` `cronTime`, read in Asia/Shanghai.
    pub fn upstream_pattern(self) -> &'static str {
        match self {
            Job::Heartbeat => "*/10 * * * * *",
            Job::TrendingSubjects => "0 0 3 * * *",
            Job::TrendingSubjectTopics => "0 */10 * * * *",
            Job::TruncateGlobal => "*/10 * * * *",
            Job::TruncateInbox => "0 0 4 * * *",
            Job::TruncateUser => "0 0 5 * * *",
            Job::CleanupExpiredAccessTokens => "0 0 6 * * *",
            Job::CleanupExpiredRefreshTokens => "0 0 7 * * *",
        }
    }

    /// How old a tick missed while no replica was up may be and still run on start. The
    /// heartbeat never catches up (the next one is seconds away); the 10-minute jobs catch up
    /// within half their period; the daily ones within 6 hours.
    pub fn default_catch_up(self) -> Duration {
        match self {
            Job::Heartbeat => Duration::ZERO,
            Job::TrendingSubjectTopics | Job::TruncateGlobal => Duration::from_secs(5 * 60),
            _ => Duration::from_secs(6 * 3600),
        }
    }

    /// Runs unless disabled. The token cleanups are off by default (the migration plan: they
    /// move when server-private's cron stops running them).
    pub fn enabled_by_default(self) -> bool {
        !matches!(
            self,
            Job::CleanupExpiredAccessTokens | Job::CleanupExpiredRefreshTokens
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_value_enum_names() {
        for job in Job::ALL {
            let parsed = Job::from_str(job.name(), false).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed, job);
            assert_eq!(Job::named(job.name()), Some(job));
        }
    }
}
