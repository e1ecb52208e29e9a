//! Trending subjects and subject topics (server-private `lib/trending/*.ts`, bangumi-behaviour §6),
//! with upstream's keys, SQL and JSON:
//!
//! - `trending:subjects:{type}:month`: per subject type, the 1000 subjects (not banned) with
//!   the most collections touched in the last 30 days — by `interest_lasttouch` for books (1)
//!   and music (3), by `interest_doing_dateline` for the others — as `[{"id":…,"total":…}]`,
//!   most first.
//! - `trending:topics:subjects:week`: the 100 subject topics with the most posts in the last
//!   7 days, the same JSON.
//!
//! Each computation takes upstream's own lock first, `lock:{key}`: if it is set another run
//! is computing and this one returns; else it is set (`1`, 3600 s for subjects, 60 s for
//! topics, in one `SET NX EX` where upstream reads then sets), the result written with no expiry, and the lock deleted. As upstream, a failure
//! leaves the lock to expire.

use jiff::Timestamp;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::Serialize;
use sqlx::MySqlPool;

/// The subject types ranked (`SubjectTypeValues`): book, anime, music, game, real.
pub const SUBJECT_TYPES: [u8; 5] = [1, 2, 3, 4, 6];

const MONTH_SECONDS: i64 = 30 * 86_400;
const WEEK_SECONDS: i64 = 7 * 86_400;

/// One ranked item, serialised as upstream's `{id, total}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Item {
    /// Subject (or topic) id.
    pub id: u32,
    /// Collections (or posts) counted.
    pub total: i64,
}

/// What one computation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranked {
    /// Wrote this many items.
    Wrote(usize),
    /// Another run holds the lock.
    Locked,
}

/// `trending:subjects:{type}:month` (without the key prefix).
pub fn subjects_key(subject_type: u8) -> String {
    format!("trending:subjects:{subject_type}:month")
}

/// `trending:topics:subjects:week` (without the key prefix).
pub const TOPICS_KEY: &str = "trending:topics:subjects:week";

/// Ranks the subjects of `subject_type` as of `now`.
pub async fn update_subjects(
    redis: &mut ConnectionManager,
    mysql: &MySqlPool,
    prefix: &str,
    subject_type: u8,
    now: Timestamp,
) -> anyhow::Result<Ranked> {
    let since = now.as_second() - MONTH_SECONDS;
    // Books and music are ranked by any touch; the rest by "doing".
    let dateline = if matches!(subject_type, 1 | 3) {
        "i.interest_lasttouch"
    } else {
        "i.interest_doing_dateline"
    };
    let sql = format!(
        "SELECT s.subject_id, COUNT(s.subject_id) AS total FROM chii_subject_interests i \
         INNER JOIN chii_subjects s ON s.subject_id = i.interest_subject_id \
         WHERE s.subject_type_id = ? AND s.subject_ban != 1 AND {dateline} > ? \
         GROUP BY s.subject_id ORDER BY COUNT(s.subject_id) DESC LIMIT 1000"
    );
    locked_update(redis, prefix, &subjects_key(subject_type), 3600, async {
        sqlx::query_as(&sql)
            .bind(subject_type)
            .bind(since)
            .fetch_all(mysql)
            .await
    })
    .await
}

/// Ranks the subject topics as of `now`.
pub async fn update_topics(
    redis: &mut ConnectionManager,
    mysql: &MySqlPool,
    prefix: &str,
    now: Timestamp,
) -> anyhow::Result<Ranked> {
    let since = now.as_second() - WEEK_SECONDS;
    locked_update(redis, prefix, TOPICS_KEY, 60, async {
        sqlx::query_as(
            "SELECT sbj_pst_mid, COUNT(sbj_pst_id) AS total FROM chii_subject_posts \
             WHERE sbj_pst_dateline >= ? GROUP BY sbj_pst_mid ORDER BY COUNT(sbj_pst_id) DESC LIMIT 100",
        )
        .bind(since)
        .fetch_all(mysql)
        .await
    })
    .await
}

/// Upstream's lock protocol around `rank`, writing its rows to `key` as JSON; both keys
/// under `prefix`.
async fn locked_update(
    redis: &mut ConnectionManager,
    prefix: &str,
    key: &str,
    lock_seconds: u64,
    rank: impl Future<Output = Result<Vec<(u32, i64)>, sqlx::Error>>,
) -> anyhow::Result<Ranked> {
    let lock = format!("{prefix}lock:{key}");
    // Upstream reads the lock, then sets it: one `SET NX EX` does both without a gap.
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::EX(lock_seconds));
    let taken: Option<String> = redis.set_options(&lock, 1, options).await?;
    if taken.is_none() {
        tracing::info!(key, "trending: another run holds the lock");
        return Ok(Ranked::Locked);
    }
    let items: Vec<Item> = rank
        .await?
        .into_iter()
        .map(|(id, total)| Item { id, total })
        .collect();
    let () = redis
        .set(format!("{prefix}{key}"), serde_json::to_string(&items)?)
        .await?;
    let () = redis.del(&lock).await?;
    Ok(Ranked::Wrote(items.len()))
}
