//! Revoking a user's web sessions after a password change: bangumi/server's
//! `session.Manager.RevokeUser` (`web/session/manager.go`, `mysql_repo.go`), bounded by the
//! change's time.
//!
//! The rule: a password change whose binlog event was written at second `T` (Debezium's
//! `source.ts_ms`, in whole seconds) revokes the user's sessions created at or before `T`
//! (`created_at <= T`). A session created in the same second as the change is revoked too (the
//! safe side: the user logs in again); one created later — a login with the new password —
//! never is, however late the event is applied or replayed.
//!
//! Steps, each idempotent, in the Go worker's order:
//! 1. `UPDATE chii_os_web_sessions SET expired_at = now WHERE user_id = ? AND created_at <= T
//!    AND expired_at > now`: only sessions still valid, so a redelivery or replay changes no row
//!    (the Go worker rewrites `expired_at` of every session of the user, already expired or not).
//! 2. `SELECT key … WHERE user_id = ? AND created_at <= T`: every such session, revoked now or
//!    before, so a retry after a Redis failure still deletes their cached copies.
//! 3. `DEL chii:web:session:{key}` for each (one command).
//!
//! A failure of any step fails the batch (transient: retried; the steps before it are
//! re-applied harmlessly).

use cdc_runtime::mysql::{classify, transient};
use cdc_runtime::sink::redis_error;
use cdc_runtime::{Dependency, HandlerError};
use redis::aio::ConnectionManager;
use sqlx::MySqlPool;

/// The Redis key of a cached session (`redisKeyPrefix` of `web/session/manager.go`).
pub fn session_key(key_prefix: &str, key: &str) -> String {
    format!("{key_prefix}chii:web:session:{key}")
}

/// Where sessions live.
pub struct Sessions {
    pub(crate) pool: MySqlPool,
    pub(crate) mysql: Dependency,
    pub(crate) redis: ConnectionManager,
    pub(crate) redis_dependency: Dependency,
    pub(crate) key_prefix: String,
}

impl Sessions {
    /// Revokes `uid`'s sessions created at or before `created_until` (unix seconds); returns
    /// how many were still valid and are now expired.
    pub async fn revoke(&self, uid: u32, created_until: i64) -> Result<u64, HandlerError> {
        let expired = sqlx::query(
            "UPDATE chii_os_web_sessions SET expired_at = UNIX_TIMESTAMP() \
             WHERE user_id = ? AND created_at <= ? AND expired_at > UNIX_TIMESTAMP()",
        )
        .bind(uid)
        .bind(created_until)
        .execute(&self.pool)
        .await
        .map_err(|e| classify("expiring chii_os_web_sessions", e).at(&self.mysql))?
        .rows_affected();
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT `key` FROM chii_os_web_sessions WHERE user_id = ? AND created_at <= ?",
        )
        .bind(uid)
        .bind(created_until)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| transient("reading chii_os_web_sessions", e).at(&self.mysql))?;
        if !keys.is_empty() {
            let keys: Vec<String> = keys
                .iter()
                .map(|key| session_key(&self.key_prefix, key))
                .collect();
            let mut redis = self.redis.clone();
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut redis)
                .await
                .map_err(|e| redis_error(e).at(&self.redis_dependency))?;
        }
        Ok(expired)
    }
}
