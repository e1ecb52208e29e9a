//! The MySQL/MariaDB side: a lazily connecting, strict-mode pool and the classification of its
//! errors by the server's error number.
//!
//! Errors are classified by the number the server sends (`ER_…`, e.g. 1264), not by the
//! SQLSTATE sqlx reports as `code()` (`22003`): a SQLSTATE class mixes the record's faults with
//! the server's. A statement the server refuses for the data's sake (out of range, truncated,
//! bad value, NULL into NOT NULL, too long, a foreign key or CHECK constraint failing on the
//! values): [`HandlerError::Permanent`], so the runtime applies the batch's records one by one
//! and dead-letters the bad record alone. Everything else — unreachable, timed out, deadlock
//! (1213), lock wait timeout (1205), server gone, a missing table or column (schema not
//! migrated): [`HandlerError::Transient`], the batch is retried and the partition waits.
//!
//! # Layout
//! - [`pool`]: the pool; every session is strict (`STRICT_ALL_TABLES`).
//! - [`classify`], [`transient`]: an error of a named step as a [`HandlerError`].
//! - [`end_transaction`]: a batch's transaction committed, or rolled back in shadow mode.
//! - [`server_error`]: the server's error number of an error, if it has one.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{Executor, MySql, MySqlPool, Transaction};

use crate::shadow::Effects;
use crate::{HandlerError, WorkerConfig};

/// Added to the server's `sql_mode` on every connection: a value a column cannot hold is an
/// error naming the column (and dead-lettered), never silently clamped or truncated as a
/// non-strict server would store it.
pub const STRICT_SQL_MODE: &str =
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')";

/// A pool for `MYSQL_*`; connects on first use, so the worker starts while MySQL is down.
/// Every session runs [`STRICT_SQL_MODE`].
pub fn pool(config: &WorkerConfig) -> MySqlPool {
    let options = MySqlConnectOptions::new()
        .host(&config.mysql_host)
        .port(config.mysql_port)
        .username(&config.mysql_user)
        .database(&config.mysql_db)
        .charset("utf8mb4");
    // An empty password means none (sqlx would otherwise authenticate with an empty one).
    let options = if config.mysql_pass.is_empty() {
        options
    } else {
        options.password(&config.mysql_pass)
    };
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(STRICT_SQL_MODE).await?;
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

/// Any error of `what` as transient (reads whose failure can only be the server's).
pub fn transient(what: &str, error: sqlx::Error) -> HandlerError {
    HandlerError::Transient(anyhow::anyhow!("{what}: {error}"))
}

/// Ends `tx`: committed (live), or rolled back when `effects` are a shadow's, whose statements
/// ran only to be checked and planned; failures classified as [`classify`] does.
pub async fn end_transaction(
    tx: Transaction<'_, MySql>,
    effects: &Effects,
) -> Result<(), HandlerError> {
    if effects.is_shadow() {
        tx.rollback().await.map_err(|e| classify("rolling back", e))
    } else {
        tx.commit().await.map_err(|e| classify("committing", e))
    }
}

/// Server error numbers that say a record's values cannot be stored as they are.
pub const DATA_ERRORS: &[u16] = &[
    1048, // ER_BAD_NULL_ERROR: column cannot be null
    1216, // ER_NO_REFERENCED_ROW: a foreign key fails (old servers)
    1217, // ER_ROW_IS_REFERENCED: a foreign key fails (old servers)
    1264, // ER_WARN_DATA_OUT_OF_RANGE: out of range value for column
    1265, // WARN_DATA_TRUNCATED: data truncated for column
    1292, // ER_TRUNCATED_WRONG_VALUE: incorrect (date, number…) value
    1300, // ER_INVALID_CHARACTER_STRING: invalid string for the character set
    1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: incorrect string value for column
    1367, // ER_ILLEGAL_VALUE_FOR_TYPE
    1406, // ER_DATA_TOO_LONG: data too long for column
    1411, // ER_WRONG_VALUE_FOR_TYPE: incorrect value for a function
    1451, // ER_ROW_IS_REFERENCED_2: a foreign key fails
    1452, // ER_NO_REFERENCED_ROW_2: a foreign key fails
    1690, // ER_DATA_OUT_OF_RANGE: value out of range in an expression
    3819, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    4025, // ER_CONSTRAINT_FAILED: a CHECK constraint fails (MariaDB)
];

/// The server's error number of `error`, if the server refused a statement.
pub fn server_error(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Classifies an error of `what`: the record's data errors ([`DATA_ERRORS`], and a value that
/// cannot be decoded) are permanent; everything else is transient.
pub fn classify(what: &str, error: sqlx::Error) -> HandlerError {
    let permanent = server_error(&error).is_some_and(|number| DATA_ERRORS.contains(&number))
        || matches!(
            error,
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)
        );
    let error = anyhow::anyhow!("{what}: {error}");
    if permanent {
        HandlerError::Permanent(error)
    } else {
        HandlerError::Transient(error)
    }
}
