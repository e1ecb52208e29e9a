//! librdkafka client settings for the consumer, the dead-letter producer and the admin client,
//! in one place.
//!
//! Order of precedence: runtime defaults < deployment settings ([`WorkerConfig`], passthrough
//! included) < properties the runtime owns (group, offset storage), which nothing overrides.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::WorkerConfig;

/// Defaults a deployment may override through `KAFKA_CONFIG__*`.
///
/// - `session.timeout.ms`/`heartbeat.interval.ms`: short enough that a replaced pod's partitions
///   move within seconds (and that tansu, which answers JoinGroup after half the session
///   timeout, assigns quickly); long enough for production brokers' minimum (6 s).
/// - `fetch.wait.max.ms`: the broker may hold a fetch this long when none of its partitions has
///   data. librdkafka keeps one fetch in flight per broker, and leaves out a partition whose
///   queue is full; so while a worker catches up on one busy partition, a fetch of only its idle
///   partitions goes out and is held this long, and the busy partition waits behind it. At
///   librdkafka's 500 ms (or our earlier 100 ms) a catch-up drain stalls again and again; 25 ms
///   keeps it at full speed (tansu, 1.2M records: 100 ms 208–240k/s, 50 ms 282k, 25 ms and 10 ms
///   320k) at the cost of 40 empty fetches a second per idle worker (tansu: 10 % of a core for
///   42 partitions; 100 ms: 3 %). It also bounds latency on brokers that always wait it out.
/// - `max.partition.fetch.bytes`: the most one fetch returns per partition. A family subscribes
///   to many topics (cache-invalidation: 14 × 3 partitions), and a broker's work per fetch grows
///   with the partitions it lists, empty ones included; fewer, larger fetches spend less of it
///   per record. On tansu, draining one partition of 14 topics: 1 MiB (librdkafka's default)
///   ≈ 230k records/s, 4 MiB ≈ 300k, 8 MiB no better (`bench/profile.md`, session 5).
/// - `queued.max.messages.kbytes`: records prefetched per partition (each partition has its own
///   queue, see `engine`), so a catching-up worker holds at most this much (plus one fetch) per
///   assigned partition. Two fetches' worth keeps a partition's next fetch in flight while its
///   task works through the last one; librdkafka's 64 MiB default is far more than batches need.
/// - `fetch.queue.backoff.ms`: how long librdkafka waits to fetch again after a partition's
///   queue was full. Its 1 s default stalls a partition whose task just took a batch.
/// - `statistics.interval.ms`: consumer lag metrics.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1500"),
    ("fetch.wait.max.ms", "25"),
    ("max.partition.fetch.bytes", "4194304"),
    ("queued.max.messages.kbytes", "8192"),
    ("fetch.queue.backoff.ms", "1"),
    ("statistics.interval.ms", "5000"),
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("enable.partition.eof", "false"),
];

/// Brokers, security settings and passthrough properties shared by every client.
pub fn base_config(config: &WorkerConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("client.id", client_id);
    for (name, value) in config.kafka_properties() {
        c.set(name, value);
    }
    c
}

/// Consumer settings for `group`: defaults, then the deployment's, then what at-least-once needs.
pub fn consumer_config(config: &WorkerConfig, client_id: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (name, value) in CONSUMER_DEFAULTS {
        c.set(*name, *value);
    }
    for (name, value) in base_config(config, client_id).config_map() {
        c.set(name, value);
    }
    c.set("group.id", group)
        // librdkafka commits *stored* offsets on this interval; the runtime stores an offset
        // only after the record's effects are applied.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            duration_ms(config.commit_interval).to_string(),
        );
    c
}

fn duration_ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_overrides_defaults_but_never_offset_storage() {
        let config = WorkerConfig::from_args([
            "--kafka-config",
            "session.timeout.ms=2000",
            "--commit-interval",
            "250ms",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let c = consumer_config(&config, "id", "g");
        assert_eq!(c.get("session.timeout.ms"), Some("2000"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("auto.commit.interval.ms"), Some("250"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
    }
}
