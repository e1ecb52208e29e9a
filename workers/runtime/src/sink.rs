//! Sinks shared by families: a Redis connection that survives outages, and the classification
//! of Redis errors into transient (retry) and permanent (dead-letter).
//!
//! Families own their mutations; this module only connects and classifies.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod};

use crate::family::HandlerError;

/// A Redis connection for `uri` that reconnects by itself. Connects lazily, so a worker starts
/// (and reports not-ready) while Redis is down rather than failing.
pub fn redis(uri: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(uri)
        .map_err(|e| anyhow::anyhow!("REDIS_URI {}: {e}", crate::config::redact_uri(uri)))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

/// Unreachable, timed out, loading, failing over: transient. A command Redis refuses
/// (`WRONGTYPE`, a script error): permanent.
pub fn redis_error(error: RedisError) -> HandlerError {
    match error.retry_method() {
        RetryMethod::NoRetry => HandlerError::Permanent(error.into()),
        _ => HandlerError::Transient(error.into()),
    }
}
