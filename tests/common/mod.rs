//! The harness shared by the end-to-end tests and the demo: unique names, the real broker, Redis
//! Meilisearch ([`meili`]) and S3 with web sessions ([`users`]), and producing/consuming records. Every test gets its own topics,
//! consumer groups, Redis key prefix and Meilisearch index prefix, so tests run in parallel and
//! repeat.
//!
//! The services are the real ones `make up` starts (tansu on `KAFKA_BROKERS`, default
//! 127.0.0.1:9092; Redis on `REDIS_URI`). A missing service fails the test with a message saying
//! how to start it, never a hang.

pub mod bulk;
pub mod events;
pub mod expected;
pub mod fixtures;
pub mod meili;
pub mod mysql;
pub mod notify;
pub mod parity;
pub mod process;
pub mod proxy;
pub mod scenario;
pub mod scheduled;
pub mod search;
pub mod state;
pub mod subjects;
pub mod users;

use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The broker the tests use: [`use_brokers`]'s, else `KAFKA_BROKERS`, else 127.0.0.1:9092.
pub fn brokers() -> String {
    if let Some(b) = BROKERS_OVERRIDE.get() {
        return b.clone();
    }
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

static BROKERS_OVERRIDE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Points every harness function of this *process* at `brokers` (a private broker). Only for a
/// test binary whose tests all use that broker (nextest runs each test in its own process;
/// `cargo test` would share it between the binary's tests). Fails if already set elsewhere.
pub fn use_brokers(brokers: &str) -> anyhow::Result<()> {
    BROKERS_OVERRIDE
        .set(brokers.to_owned())
        .map_err(|_| anyhow::anyhow!("the harness already uses another broker"))
}

/// The Redis the tests use.
pub fn redis_uri() -> String {
    std::env::var("REDIS_URI").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// `name` with a random suffix: topics, groups and key prefixes of one test run.
pub fn unique(name: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{name}-{n:016x}")
}

/// Client settings for tests against tansu: short session timeouts (it answers JoinGroup only
/// after about half of it).
///
/// A tansu 0.6.0 quirk shapes how tests produce: its ListOffsets answers the *last batch's base
/// offset + 1*, so after a multi-record batch the high watermark it reports falls short of the
/// records it holds (a batch of 5 records at offsets 3–7 reported an end of 4). [`produce`]
/// therefore reads past the reported end, and workers under test get `batch.num.messages=1`
/// for their (low-volume) dead-letter producers, whose ends the `dlq` tool reads.
pub fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers())
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "50");
    c
}

/// Fails with a clear message unless the broker answers.
pub async fn require_broker() -> anyhow::Result<()> {
    let addr = brokers();
    let first = addr.split(',').next().unwrap_or_default().to_owned();
    tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&first),
    )
    .await
    .map_err(|_| anyhow::anyhow!("broker {first} did not answer in 3 s; run `make up`"))?
    .with_context(|| format!("no broker on {first}; run `make up`"))?;
    Ok(())
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(topic: &str, partitions: i32) -> anyhow::Result<()> {
    require_broker().await?;
    let admin: AdminClient<DefaultClientContext> = client_config().create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        if let Err((t, e)) = r {
            bail!("creating {t}: {e}");
        }
    }
    Ok(())
}

/// An idempotent producer.
pub fn producer() -> anyhow::Result<FutureProducer> {
    Ok(client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?)
}

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct Out {
    /// Partition (none: by key).
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (none: tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp, ms since the epoch (none: the producer's clock).
    pub timestamp_ms: Option<i64>,
}

/// Produces `records`, each to its topic, one at a time in order (a record is acknowledged
/// before the next is sent, so the order holds across topics too).
pub async fn produce_in_order(records: &[(String, Out)]) -> anyhow::Result<()> {
    let producer = producer()?;
    for (topic, record) in records {
        produce(&producer, topic, std::slice::from_ref(record)).await?;
    }
    Ok(())
}

/// Produces `records` in order, waits for every acknowledgement, and returns where each landed
/// as `(partition, offset)`.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[Out],
) -> anyhow::Result<Vec<(i32, i64)>> {
    let mut positions = Vec::with_capacity(records.len());
    // Send in windows so acknowledgements overlap, keeping order within a partition.
    for window in records.chunks(1_000) {
        let sends = window.iter().map(|r| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(rdkafka::message::Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(v) = &r.value {
                record = record.payload(v);
            }
            if let Some(ts) = r.timestamp_ms {
                record = record.timestamp(ts);
            }
            producer.send(record, Duration::from_secs(30))
        });
        for sent in futures::future::join_all(sends).await {
            let delivery = sent.map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
            positions.push((delivery.partition, delivery.offset));
        }
    }
    Ok(positions)
}

/// A consumer in `group` that stores offsets only when told and never auto-commits.
pub fn manual_consumer(group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()?)
}

/// The committed offset of each partition of `topic` for `group` (`-1`: none), by partition.
pub fn committed(group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let consumer = manual_consumer(group)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(
            |p| match offsets.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// The high watermark the broker reports for each partition of `topic` (see [`client_config`]
/// on why, with tansu, it can fall short).
fn reported_ends(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    (0..partitions)
        .map(|p| {
            Ok(consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))?
                .1)
        })
        .collect()
}

/// The true end (next offset) of each partition of each of `topics`: the reported high
/// watermark, then any records found past it.
pub fn ends_of(topics: &[String], partitions: i32) -> anyhow::Result<Vec<Vec<i64>>> {
    use rdkafka::message::Message;
    let consumer = manual_consumer(&unique("watermarks"))?;
    let mut ends = topics
        .iter()
        .map(|t| reported_ends(&consumer, t, partitions))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tpl = TopicPartitionList::new();
    for (topic, topic_ends) in topics.iter().zip(&ends) {
        for (p, end) in topic_ends.iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*end))?;
        }
    }
    consumer.assign(&tpl)?;
    let mut idle_since = std::time::Instant::now();
    while idle_since.elapsed() < Duration::from_secs(1) {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(50))
            && let Some(i) = topics.iter().position(|t| t == msg.topic())
        {
            let end = &mut ends[i][msg.partition() as usize];
            *end = (*end).max(msg.offset() + 1);
            idle_since = std::time::Instant::now();
        }
    }
    Ok(ends)
}

/// The true end (next offset) of each partition of `topic`.
pub fn end_offsets(topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    Ok(ends_of(&[topic.to_owned()], partitions)?.remove(0))
}

/// Waits until `group` has committed every partition of every topic up to its end, or fails
/// after `within` saying which partitions lag. The cheap reported ends are polled; the true
/// ends are probed once those are reached.
pub async fn wait_drained(
    group: &str,
    topics: &[String],
    partitions: i32,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let consumer = manual_consumer(&unique("watermarks"))?;
    loop {
        let committed: Vec<Vec<i64>> = topics
            .iter()
            .map(|t| committed(group, t, partitions))
            .collect::<anyhow::Result<_>>()?;
        let lagging = |ends: &[Vec<i64>]| -> Vec<String> {
            let mut lagging = Vec::new();
            for ((topic, ends), done) in topics.iter().zip(ends).zip(&committed) {
                for (p, (end, done)) in ends.iter().zip(done).enumerate() {
                    if *end > 0 && done < end {
                        lagging.push(format!("{topic}[{p}] committed {done} of {end}"));
                    }
                }
            }
            lagging
        };
        let reported: Vec<Vec<i64>> = topics
            .iter()
            .map(|t| reported_ends(&consumer, t, partitions))
            .collect::<anyhow::Result<_>>()?;
        let mut behind = lagging(&reported);
        if behind.is_empty() {
            behind = lagging(&ends_of(topics, partitions)?);
            if behind.is_empty() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "group {group} not drained after {within:?}: {}",
                behind.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Redis connection to the test Redis.
pub async fn redis() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    redis_at(&redis_uri()).await
}

/// A Redis connection to `uri`, with a generous response timeout (the crate's default is
/// 500 ms; tests pipeline 10k commands on a shared, busy machine).
pub async fn redis_at(uri: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(uri)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("no Redis at {uri}; run `make up`"))
}

/// Sets every key of `keys` (after `prefix`) to a marker value.
pub async fn seed_keys(prefix: &str, keys: &[String]) -> anyhow::Result<()> {
    seed_keys_at(&redis_uri(), prefix, keys).await
}

/// [`seed_keys`] in the Redis at `uri`.
pub async fn seed_keys_at(uri: &str, prefix: &str, keys: &[String]) -> anyhow::Result<()> {
    let mut conn = redis_at(uri).await?;
    for chunk in keys.chunks(10_000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set(format!("{prefix}{k}"), "cached").ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

/// Every key under `prefix` (matched literally: glob characters escaped), by `SCAN`.
pub async fn scan_prefix(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let pattern = format!("{}*", timeline::keys::glob_escape(prefix));
    let mut found: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await?;
        found.extend(batch);
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

/// Deletes every key under `prefix` in the Redis at `uri`; how many there were.
pub async fn delete_prefix_at(uri: &str, prefix: &str) -> anyhow::Result<u64> {
    let mut conn = redis_at(uri).await?;
    let keys = scan_prefix(&mut conn, prefix).await?;
    for chunk in keys.chunks(10_000) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(keys.len() as u64)
}

/// Every key under `prefix`, without the prefix, sorted.
pub async fn keys_under(prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut found = scan_prefix(&mut redis().await?, prefix).await?;
    for k in &mut found {
        k.drain(..prefix.len());
    }
    found.sort();
    Ok(found)
}

/// A worker configuration for tests: the test broker and Redis, isolated topics (`topic_prefix`)
/// and keys (`key_prefix`), fast group joins, metrics on any free port, plus `extra` arguments.
pub fn worker_config(
    family: &cdc_topics::Family,
    topic_prefix: &str,
    key_prefix: &str,
    group: &str,
    extra: &[&str],
) -> anyhow::Result<cdc_runtime::WorkerConfig> {
    let mut args: Vec<String> = [
        "--kafka-brokers",
        &brokers(),
        "--kafka-topic-prefix",
        topic_prefix,
        "--kafka-group-id",
        group,
        "--redis-uri",
        &redis_uri(),
        "--redis-key-prefix",
        key_prefix,
        "--schema-registry-url",
        &registry_url(),
        "--http-addr",
        "127.0.0.1:0",
        "--commit-interval",
        "200ms",
        "--kafka-config",
        "session.timeout.ms=2000",
        "--kafka-config",
        "heartbeat.interval.ms=500",
        "--kafka-config",
        "fetch.wait.max.ms=50",
        "--kafka-config",
        "batch.num.messages=1",
        "--log-format",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Ok(cdc_runtime::WorkerConfig::from_args(args)?.finish(family)?)
}

/// The schema-registry stand-in `make up` starts.
pub fn registry_url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

/// The family `name` from `topics/`, with every topic under `topic_prefix`, its topics created.
pub async fn provisioned_family(
    name: &str,
    topic_prefix: &str,
) -> anyhow::Result<cdc_topics::Family> {
    let family = family(name, topic_prefix)?;
    provision(&family).await?;
    Ok(family)
}

/// The family `name` from `topics/`, with every topic under `topic_prefix` (not created).
pub fn family(name: &str, topic_prefix: &str) -> anyhow::Result<cdc_topics::Family> {
    Ok(cdc_topics::by_name(name)?
        .with_context(|| format!("no family {name}"))?
        .with_topic_prefix(topic_prefix))
}

/// Creates `family`'s topics and DLQ.
pub async fn provision(family: &cdc_topics::Family) -> anyhow::Result<()> {
    require_broker().await?;
    cdc_runtime::provision::provision(&client_config(), family, 1).await?;
    Ok(())
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Consumed {
    /// The text value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record of `topic` (all partitions, from the beginning), ordered by partition and offset.
pub fn read_all(topic: &str, partitions: i32) -> anyhow::Result<Vec<Consumed>> {
    use rdkafka::message::{Headers, Message};
    let ends = end_offsets(topic, partitions)?;
    let total: i64 = ends.iter().sum();
    let consumer = manual_consumer(&unique("reader"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut found = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (found.len() as i64) < total {
        if std::time::Instant::now() > deadline {
            bail!("read {} of {total} records of {topic}", found.len());
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        found.push(Consumed {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers: msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    found.sort_by_key(|c| (c.partition, c.offset));
    Ok(found)
}

/// Sum of the samples of `name` in a `/metrics` body whose labels contain `labels`.
pub fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Where `scripts/lib.sh` keeps its tools and state: `$CDC_STATE_DIR`, else `/var/tmp/bangumi-cdc`.
pub fn state_dir() -> std::path::PathBuf {
    std::env::var_os("CDC_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/tmp/bangumi-cdc"))
}

/// `GET url` over plain HTTP/1.0; the body.
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    Ok(http_response(url).await?.1)
}

/// The samples of `metric` in a Prometheus text exposition, summed by the value of `label`.
pub fn metric_sums(
    text: &str,
    metric: &str,
    label: &str,
) -> std::collections::BTreeMap<String, f64> {
    let mut sums = std::collections::BTreeMap::new();
    let marker = format!("{label}=\"");
    for line in text
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(name) = labels
            .split(&marker)
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        *sums.entry(name.to_owned()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    sums
}

/// `GET url` over plain HTTP/1.0; the status code and the body.
pub async fn http_response(url: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or((response.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Which of `keys` (after `prefix`) exist, without scanning the keyspace.
pub async fn existing(
    prefix: &str,
    keys: &[String],
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut conn = redis().await?;
    let mut found = std::collections::BTreeSet::new();
    for chunk in keys.chunks(10_000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.exists(format!("{prefix}{k}"));
        }
        let flags: Vec<bool> = pipe.query_async(&mut conn).await?;
        found.extend(
            chunk
                .iter()
                .zip(flags)
                .filter(|(_, e)| *e)
                .map(|(k, _)| k.clone()),
        );
    }
    Ok(found)
}
