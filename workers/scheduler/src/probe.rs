//! Readiness: the scheduler is ready while Redis and MySQL answer. Every few seconds each is
//! asked (`PING`, `SELECT 1`); one that does not answer is a `/readyz` reason naming it (never
//! its credentials), through the runtime's [`Health`] like a consumer's waiting retry.

use std::sync::Arc;
use std::time::Duration;

use cdc_runtime::Dependency;
use cdc_runtime::observe::{Health, PauseId};
use tokio_util::sync::CancellationToken;

use crate::Stores;

/// How often the stores are asked.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// A store's answer time limit.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Marks `health` live and keeps its readiness up to date with `stores` until `shutdown`.
pub async fn watch(
    stores: Stores,
    redis_at: Dependency,
    mysql_at: Dependency,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    // The scheduler polls nothing and joins no group: live while this runs.
    health.set_polling(true);
    health.set_joined();
    let mut down: [Option<PauseId>; 2] = [None, None];
    loop {
        let mut redis = stores.redis.clone();
        let redis_answer = tokio::time::timeout(TIMEOUT, async {
            redis::cmd("PING").query_async::<String>(&mut redis).await
        })
        .await;
        let redis_error = match redis_answer {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer".to_owned()),
        };
        let mysql_answer =
            tokio::time::timeout(TIMEOUT, sqlx::query("SELECT 1").execute(&stores.mysql)).await;
        let mysql_error = match mysql_answer {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer".to_owned()),
        };
        for (slot, (at, error)) in down
            .iter_mut()
            .zip([(&redis_at, redis_error), (&mysql_at, mysql_error)])
        {
            match (error, *slot) {
                (Some(error), None) => {
                    tracing::warn!(dependency = %at, %error, "unreachable; not ready");
                    *slot = Some(health.pause(format!("{at} unreachable: {error}")));
                }
                (Some(error), Some(id)) => {
                    health.update_pause(id, format!("{at} unreachable: {error}"))
                }
                (None, Some(id)) => {
                    tracing::info!(dependency = %at, "reachable again");
                    health.resume(id);
                    *slot = None;
                }
                (None, None) => {}
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                health.set_polling(false);
                return;
            }
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
