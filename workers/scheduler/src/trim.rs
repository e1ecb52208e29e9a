//! The timeline cache trims (server-private `tasks/timeline.ts`, bangumi-behaviour §6): the global
//! inbox keeps its newest 1000 items; every inbox (the global one included, as upstream) and
//! every user timeline keeps 200. Keys are found with `SCAN … MATCH … TYPE zset` and trimmed
//! with `ZREMRANGEBYRANK key 0 -(N+1)`; nothing else is touched.

use redis::RedisResult;
use redis::aio::ConnectionManager;
use timeline::keys;

/// Which keys a trim visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// `tml:v3:inbox:0`, keep 1000.
    Global,
    /// `tml:v3:inbox:*`, keep 200.
    Inbox,
    /// `tml:v3:user:*`, keep 200.
    User,
}

impl Trim {
    /// Items kept per key.
    pub fn keep(self) -> i64 {
        match self {
            Trim::Global => 1000,
            Trim::Inbox | Trim::User => 200,
        }
    }
}

/// What a trim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Keys visited.
    pub keys: u64,
    /// Items removed.
    pub removed: u64,
}

/// Trims the keys of `trim` under `prefix`.
pub async fn trim(conn: &mut ConnectionManager, prefix: &str, trim: Trim) -> RedisResult<Trimmed> {
    let stop = -(trim.keep() + 1);
    let pattern = match trim {
        Trim::Global => {
            let removed: u64 = redis::cmd("ZREMRANGEBYRANK")
                .arg(keys::inbox(prefix, 0))
                .arg(0)
                .arg(stop)
                .query_async(conn)
                .await?;
            return Ok(Trimmed { keys: 1, removed });
        }
        Trim::Inbox => keys::inbox_pattern(prefix),
        Trim::User => keys::user_timeline_pattern(prefix),
    };
    let (mut cursor, mut visited, mut removed) = (0u64, 0u64, 0u64);
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("zset")
            .query_async(conn)
            .await?;
        if !found.is_empty() {
            let mut pipe = redis::pipe();
            for key in &found {
                pipe.cmd("ZREMRANGEBYRANK").arg(key).arg(0).arg(stop);
            }
            let counts: Vec<u64> = pipe.query_async(conn).await?;
            visited += found.len() as u64;
            removed += counts.iter().sum::<u64>();
        }
        if next == 0 {
            return Ok(Trimmed {
                keys: visited,
                removed,
            });
        }
        cursor = next;
    }
}
