//! Sinks shared by families: a Redis connection that survives outages, and the classification
//! of Redis errors into transient (retry) and permanent (dead-letter).
//!
//! Families own their mutations; this module only connects and classifies.

use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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

/// Messages of an `ERR` reply that reject a value the record carried (an argument no valid
/// record produces), as opposed to the server's state.
const VALUE_REFUSALS: &[&str] = &[
    "not an integer",
    "not a valid float",
    "out of range",
    "invalid expire time",
];

/// Permanent only when Redis refused the command because of what the record carries: the key
/// it touches holds another type (`WRONGTYPE`), or an argument made from it is invalid. Every
/// other failure is the server's state and passes: unreachable, timed out, and every refusal of
/// a healthy command — `OOM`, `MISCONF`, `NOAUTH`/`WRONGPASS`, `NOPERM`, `BUSY`, `LOADING`,
/// `READONLY`, `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`, `NOSCRIPT` after a flush, `ERR max
/// number of clients`, and codes this list does not know. Dead-lettering those would send every
/// record to the DLQ at full speed; retrying pauses the partition (readiness false) until the
/// operator fixes the server.
pub fn redis_error(error: RedisError) -> HandlerError {
    if refuses_the_record(&error) {
        HandlerError::Permanent(error.into())
    } else {
        HandlerError::Transient(error.into())
    }
}

fn refuses_the_record(error: &RedisError) -> bool {
    match error.code() {
        Some("WRONGTYPE") => true,
        Some("ERR") => error
            .detail()
            .is_some_and(|detail| VALUE_REFUSALS.iter().any(|m| detail.contains(m))),
        _ => false,
    }
}
