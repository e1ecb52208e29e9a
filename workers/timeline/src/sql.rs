//! The MySQL/MariaDB side: a lazily connecting pool and the classification of its errors.
//!
//! Unreachable, timed out, deadlocked, lock wait exceeded, server gone: transient (the runtime
//! retries the batch). A statement the server refuses for the data's sake (too long, out of
//! range, bad string): permanent (the record is dead-lettered on its own).

use std::time::Duration;

use cdc_runtime::{HandlerError, WorkerConfig};
use sqlx::MySqlPool;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

/// A pool for `MYSQL_*`; connects on first use, so the worker starts while MySQL is down.
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
        .connect_lazy_with(options)
}

/// Any error of `what` as transient (reads whose failure can only be the server's).
pub fn transient(what: &str, error: sqlx::Error) -> HandlerError {
    HandlerError::Transient(anyhow::anyhow!("{what}: {error}"))
}

/// MariaDB error codes that say the data cannot be stored as is.
const DATA_ERRORS: &[&str] = &[
    "1048", // column cannot be null
    "1264", // out of range
    "1265", // data truncated
    "1292", // incorrect value
    "1366", // incorrect string value
    "1406", // data too long
];

/// Classifies an error of `what`: data errors are permanent, everything else transient.
pub fn classify(what: &str, error: sqlx::Error) -> HandlerError {
    let permanent = matches!(&error, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| DATA_ERRORS.contains(&c.as_ref())))
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
