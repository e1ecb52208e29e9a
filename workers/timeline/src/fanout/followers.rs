//! Who follows an author: `user:followers:{uid}` (a JSON array of uids), else
//! `SELECT frd_uid FROM chii_friends WHERE frd_fid = ?`, then cached for an hour with `SETEX`,
//! as server-private's `fetchFollowers`. One `MGET` for a whole batch's authors, one query per
//! group of missing authors.
//!
//! Not here: what is done with the followers (see [`super::apply`]).

use std::collections::HashMap;

use cdc_runtime::HandlerError;
use cdc_runtime::sink::redis_error;
use redis::aio::ConnectionManager;
use sqlx::MySqlPool;

use super::Dependencies;
use crate::keys;
use cdc_runtime::mysql::transient;

/// Authors per `IN (…)` query.
const AUTHORS_PER_QUERY: usize = 500;

/// The followers of each of `uids` (distinct, non-zero), in `chii_friends` order; the lists
/// read from `chii_friends` are cached if `fill` (not in shadow mode: it writes nothing).
pub async fn lookup(
    redis: &mut ConnectionManager,
    mysql: &MySqlPool,
    at: &Dependencies,
    prefix: &str,
    uids: &[u64],
    fill: bool,
) -> Result<HashMap<u64, Vec<u64>>, HandlerError> {
    let mut found = HashMap::with_capacity(uids.len());
    if uids.is_empty() {
        return Ok(found);
    }
    let cache_keys: Vec<String> = uids.iter().map(|u| keys::followers(prefix, *u)).collect();
    let cached: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&cache_keys)
        .query_async(redis)
        .await
        .map_err(|e| redis_error(e).at(&at.redis))?;
    let mut missing = Vec::new();
    for (uid, value) in uids.iter().zip(cached) {
        // server-private: `if (cached)`, so an empty string is a miss too.
        match value.filter(|v| !v.is_empty()).map(|v| parse(&v)) {
            Some(Some(list)) => {
                found.insert(*uid, list);
            }
            Some(None) => {
                tracing::warn!(
                    uid,
                    "user:followers cache is not a JSON array of uids; reloading"
                );
                missing.push(*uid);
            }
            None => missing.push(*uid),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    for group in missing.chunks(AUTHORS_PER_QUERY) {
        let placeholders = vec!["?"; group.len()].join(",");
        let sql = format!(
            "SELECT CAST(frd_fid AS UNSIGNED), CAST(frd_uid AS UNSIGNED) FROM chii_friends WHERE frd_fid IN ({placeholders})"
        );
        let mut query = sqlx::query_as::<_, (u64, u64)>(&sql);
        for uid in group {
            query = query.bind(*uid);
        }
        let rows = query
            .fetch_all(mysql)
            .await
            .map_err(|e| transient("reading chii_friends", e).at(&at.mysql))?;
        for uid in group {
            found.insert(*uid, Vec::new());
        }
        for (fid, follower) in rows {
            found.entry(fid).or_default().push(follower);
        }
    }
    if !fill {
        return Ok(found);
    }
    let mut pipe = redis::pipe();
    for uid in &missing {
        let list = found.get(uid).map(Vec::as_slice).unwrap_or_default();
        pipe.set_ex(
            keys::followers(prefix, *uid),
            to_json(list),
            keys::FOLLOWERS_TTL_SECONDS,
        )
        .ignore();
    }
    pipe.query_async::<()>(redis)
        .await
        .map_err(|e| redis_error(e).at(&at.redis))?;
    Ok(found)
}

/// `[1,2,3]`, as `JSON.stringify` writes an array of integers.
pub fn to_json(uids: &[u64]) -> String {
    let mut out = String::with_capacity(uids.len() * 8 + 2);
    out.push('[');
    for (i, uid) in uids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&uid.to_string());
    }
    out.push(']');
    out
}

/// A cached list, or `None` if it is not a JSON array of non-negative integers.
pub fn parse(text: &str) -> Option<Vec<u64>> {
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_like_json_stringify() {
        assert_eq!(to_json(&[]), "[]");
        assert_eq!(to_json(&[2, 3, 4]), "[2,3,4]");
        assert_eq!(parse("[2,3,4]"), Some(vec![2, 3, 4]));
        assert_eq!(parse("[]"), Some(vec![]));
        assert_eq!(parse("{}"), None);
        assert_eq!(parse("[1.5]"), None);
    }
}
