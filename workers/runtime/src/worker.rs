//! Starting and stopping one family's worker: wires config, the consumer engine, the pipeline,
//! the dead-letter producer and the HTTP server together.
//!
//! Shutdown is a parameter ([`CancellationToken`]): the binary cancels it on SIGTERM/SIGINT, a
//! test cancels it when it has seen enough.

use std::net::SocketAddr;
use std::sync::Arc;

use cdc_schemas::Format;
use cdc_topics::{Encoding, Family};
use rdkafka::consumer::Consumer;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::engine::{BatchLimits, EngineConsumer, EngineContext, poll_loop};
use crate::error::RuntimeError;
use crate::family::Handler;
use crate::kafka;
use crate::observe::{self, Health};
use crate::pipeline::Pipeline;

/// A started worker.
pub struct Running {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    stopped: oneshot::Receiver<()>,
}

impl Running {
    /// Waits until the worker has drained and committed after shutdown was requested.
    pub async fn wait(self) -> Result<(), RuntimeError> {
        self.stopped
            .await
            .map_err(|_| RuntimeError::PollThread("exited without reporting".into()))
    }
}

/// The family's `Format` for the schema crate.
pub fn format_of(encoding: Encoding) -> Format {
    match encoding {
        Encoding::Auto => Format::Auto,
        Encoding::Json => Format::Json,
        Encoding::JsonSchema => Format::JsonSchema,
        Encoding::Avro => Format::Avro,
    }
}

/// Starts consuming `family` (already topic-prefixed) with `handler` until `shutdown`.
///
/// Fails before consuming anything if a setting is invalid or a client cannot be created.
pub async fn start<H: Handler>(
    family: &Family,
    config: &WorkerConfig,
    handler: H,
    shutdown: CancellationToken,
) -> Result<Running, RuntimeError> {
    check_run_mode::<H>(config, family)?;
    let group = config.group_id(family).into_owned();
    let client_id = format!("{}@{}", family.family, hostname());
    let health = Arc::new(Health::default());
    let http_addr = observe::serve(
        &family.family,
        config.http_addr,
        health.clone(),
        shutdown.child_token(),
    )
    .await?;

    let pipeline = Arc::new(Pipeline::for_family(
        family,
        config,
        handler,
        health.clone(),
        &client_id,
    )?);
    let limits = BatchLimits {
        max_messages: config
            .batch_max_messages
            .unwrap_or(family.batch.max_messages),
        max_wait: config.batch_max_wait.unwrap_or(family.batch.max_wait),
    };

    let context = EngineContext::new(
        &family.family,
        health.clone(),
        tokio::runtime::Handle::current(),
        config.drain_timeout,
    );
    let topics: Vec<&str> = family.all_topics().collect();
    let partitions =
        kafka::subscribed_partitions(config, &client_id, &topics, family.partitions as usize);
    let prefetch = kafka::prefetch_limits(config.prefetch_budget, partitions);
    let held = prefetch.held(partitions);
    if held > config.prefetch_budget {
        tracing::warn!(family = %family.family, partitions, budget = config.prefetch_budget, held, "PREFETCH_BUDGET is too small for the partitions subscribed; each still gets the minimum");
    }
    let consumer: Arc<EngineConsumer> =
        kafka::consumer_config(config, &client_id, &group, &prefetch)
            .create_with_context(context)
            .map(Arc::new)
            .map_err(|source| RuntimeError::KafkaClient {
                client: "consumer",
                source,
            })?;
    consumer
        .subscribe(&topics)
        .map_err(|source| RuntimeError::Subscribe {
            topics: topics.join(","),
            source,
        })?;
    crate::watch::spawn(
        family,
        config,
        &client_id,
        health.clone(),
        shutdown.child_token(),
    )?;
    tracing::info!(family = %family.family, %group, topics = %topics.join(","), partitions, prefetch_queue_kbytes = prefetch.queue_kbytes, prefetch_fetch_bytes = prefetch.fetch_bytes, dlq = %family.dlq, %http_addr, "worker started");

    let (stopped_tx, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("poll-{}", family.family))
        .spawn(move || {
            poll_loop(consumer, pipeline, limits, shutdown);
            let _ = stopped_tx.send(());
        })
        .map_err(|e| RuntimeError::PollThread(e.to_string()))?;
    Ok(Running {
        http_addr,
        health,
        stopped,
    })
}

/// Refuses `RUN_MODE=shadow` for a family whose handler does not pass its effects through
/// [`crate::shadow::Effects`] ([`Handler::SHADOW`]): it would apply them.
pub fn check_run_mode<H: Handler>(
    config: &WorkerConfig,
    family: &Family,
) -> Result<(), crate::config::ConfigError> {
    if config.is_shadow() && !H::SHADOW {
        return Err(crate::config::ConfigError::Invalid {
            name: "RUN_MODE".into(),
            reason: format!(
                "family {} has no shadow mode yet (its handler applies effects directly)",
                family.family
            ),
        });
    }
    Ok(())
}

/// [`start`], then wait for shutdown to complete.
pub async fn run<H: Handler>(
    family: &Family,
    config: &WorkerConfig,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    start(family, config, handler, shutdown).await?.wait().await
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HandlerError, Outcome, Record};

    /// A handler without a shadow mode ([`Handler::SHADOW`] left false).
    struct Unshadowed;

    impl Handler for Unshadowed {
        async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
            Ok(vec![Outcome::Applied; batch.len()])
        }
    }

    #[test]
    fn a_family_without_a_shadow_mode_refuses_to_start_in_one() {
        let family = cdc_topics::by_name("cache-invalidation")
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("family missing"));
        let config = |mode: &str| {
            WorkerConfig::from_args(["--run-mode", mode])
                .unwrap_or_else(|e| panic!("{e}"))
                .finish(&family)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(check_run_mode::<Unshadowed>(&config("live"), &family).is_ok());
        let refused = check_run_mode::<Unshadowed>(&config("shadow"), &family)
            .err()
            .unwrap_or_else(|| panic!("must refuse"));
        assert!(
            refused
                .to_string()
                .contains("invalid setting RUN_MODE: family cache-invalidation has no shadow mode"),
            "{refused}"
        );
    }
}
