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
//! Steps 1 and 2 run in one transaction (rolled back in shadow mode).
//!
//! A failure of any step fails the batch (transient: retried; the steps before it are
//! re-applied harmlessly).

use cdc_runtime::mysql::{classify, transient};
use cdc_runtime::shadow::Effect;
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
    /// how many were still valid and are now expired. With `shadow`, the two statements run in
    /// a transaction rolled back, nothing is deleted, and the effects are returned instead: the
    /// `update` of `chii_os_web_sessions` (user, bound, rows it would change) and each `del`.
    pub async fn revoke(
        &self,
        uid: u32,
        created_until: i64,
        shadow: bool,
    ) -> Result<(u64, Vec<Effect>), HandlerError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| transient("starting a transaction", e).at(&self.mysql))?;
        let expired = sqlx::query(
            "UPDATE chii_os_web_sessions SET expired_at = UNIX_TIMESTAMP() \
             WHERE user_id = ? AND created_at <= ? AND expired_at > UNIX_TIMESTAMP()",
        )
        .bind(uid)
        .bind(created_until)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify("expiring chii_os_web_sessions", e).at(&self.mysql))?
        .rows_affected();
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT `key` FROM chii_os_web_sessions WHERE user_id = ? AND created_at <= ?",
        )
        .bind(uid)
        .bind(created_until)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| transient("reading chii_os_web_sessions", e).at(&self.mysql))?;
        let keys: Vec<String> = keys
            .iter()
            .map(|key| session_key(&self.key_prefix, key))
            .collect();
        if shadow {
            tx.rollback()
                .await
                .map_err(|e| transient("rolling back", e).at(&self.mysql))?;
            let update = Effect::on("update", "chii_os_web_sessions").with_value(
                serde_json::json!({"user_id": uid, "created_at_until": created_until, "rows": expired}),
            );
            let dels = keys.into_iter().map(|key| Effect::on("del", key));
            return Ok((expired, std::iter::once(update).chain(dels).collect()));
        }
        tx.commit()
            .await
            .map_err(|e| transient("committing", e).at(&self.mysql))?;
        if !keys.is_empty() {
            let mut redis = self.redis.clone();
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut redis)
                .await
                .map_err(|e| redis_error(e).at(&self.redis_dependency))?;
        }
        Ok((expired, Vec::new()))
    }
}
