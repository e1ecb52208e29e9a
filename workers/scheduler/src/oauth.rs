//! The OAuth token cleanups (server-private `tasks/oauth.ts`): delete tokens whose `expires`
//! is more than 7 days past, 1000 rows a statement, pausing between statements, until a
//! statement deletes nothing.

use std::time::Duration;

use sqlx::MySqlPool;

/// Rows per `DELETE` (`CLEANUP_BATCH_LIMIT`).
pub const BATCH: u64 = 1000;

/// A table of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// `chii_oauth_access_tokens`.
    Access,
    /// `chii_oauth_refresh_tokens`.
    Refresh,
}

impl Tokens {
    fn table(self) -> &'static str {
        match self {
            Tokens::Access => "chii_oauth_access_tokens",
            Tokens::Refresh => "chii_oauth_refresh_tokens",
        }
    }
}

/// Deletes the expired `tokens`, `pause` between deleting statements; the rows each statement
/// deleted, in order (the last statement, which deleted none, left out).
pub async fn cleanup(
    mysql: &MySqlPool,
    tokens: Tokens,
    pause: Duration,
) -> Result<Vec<u64>, sqlx::Error> {
    // The cut-off is fixed once, as upstream's `notAfter`; the server's clock, in the session's
    // time zone like the TIMESTAMP column.
    let (not_after,): (i64,) =
        sqlx::query_as("SELECT CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP - INTERVAL 7 DAY) AS SIGNED)")
            .fetch_one(mysql)
            .await?;
    let sql = format!(
        "DELETE FROM {} WHERE expires < FROM_UNIXTIME(?) LIMIT {BATCH}",
        tokens.table()
    );
    let mut batches = Vec::new();
    loop {
        let deleted = sqlx::query(&sql)
            .bind(not_after)
            .execute(mysql)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(batches);
        }
        tracing::info!(table = tokens.table(), deleted, "deleted expired tokens");
        batches.push(deleted);
        tokio::time::sleep(pause).await;
    }
}
