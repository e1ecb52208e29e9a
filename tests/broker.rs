//! The real broker does what the fleet relies on: keyed records with headers on a
//! multi-partition topic, consumer groups, offset commits, and resuming from the committed
//! offset after a consumer restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleet_harness::{Out, committed, create_topic, manual_consumer, produce, producer, unique};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};

/// Polls until `want` records arrived or `within` passed; returns (partition, offset, key, header).
fn consume(
    consumer: &BaseConsumer,
    want: usize,
    within: Duration,
) -> Vec<(i32, i64, String, String)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while got.len() < want && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = result.expect("consume error");
        let header = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "seq"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        got.push((msg.partition(), msg.offset(), key, header));
    }
    got
}

fn records(partitions: i32, per_partition: usize, round: &str) -> Vec<Out> {
    (0..partitions)
        .flat_map(|p| {
            (0..per_partition).map(move |i| Out {
                partition: Some(p),
                key: Some(format!("{round}-k{p}-{i}").into_bytes()),
                value: Some(format!("{{\"p\":{p},\"i\":{i}}}").into_bytes()),
                headers: vec![("seq".into(), format!("{round}-{p}-{i}").into_bytes())],
                timestamp_ms: None,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_group_commits_and_resumes_from_the_committed_offset() {
    let topic = unique("it.broker");
    let group = unique("it.group");
    create_topic(&topic, 3).await.expect("create topic");
    let producer = producer().expect("producer");
    produce(&producer, &topic, &records(3, 10, "first"))
        .await
        .expect("produce");

    // First consumer: everything, with keys and headers intact, then a synchronous commit.
    let consumer = manual_consumer(&group).expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let first = consume(&consumer, 30, Duration::from_secs(30));
    assert_eq!(first.len(), 30, "first consumer got {first:?}");
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, offset, key, header) in &first {
        let i = key.rsplit('-').next().expect("index");
        assert_eq!(key, &format!("first-k{p}-{i}"));
        assert_eq!(header, &format!("first-{p}-{i}"));
        assert_eq!(offset.to_string(), *i, "key {key} at offset {offset}");
        by_partition.entry(*p).or_default().push(*offset);
    }
    assert_eq!(by_partition.len(), 3, "all three partitions delivered");
    assert!(
        by_partition
            .values()
            .all(|o| *o == (0..10).collect::<Vec<_>>()),
        "{by_partition:?}"
    );
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    drop(consumer);
    assert_eq!(
        committed(&group, &topic, 3).expect("committed"),
        [10, 10, 10]
    );

    // More records; a restarted consumer in the same group starts exactly at the commit.
    produce(&producer, &topic, &records(3, 5, "second"))
        .await
        .expect("produce");
    let consumer = manual_consumer(&group).expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let second = consume(&consumer, 15, Duration::from_secs(30));
    assert_eq!(second.len(), 15, "restarted consumer got {second:?}");
    for (p, offset, key, _) in &second {
        assert!(
            key.starts_with(&format!("second-k{p}-")),
            "re-delivered {key} at {p}/{offset}"
        );
        assert!(
            (10..15).contains(offset),
            "offset {offset} outside the second round"
        );
    }
    // Nothing more arrives: no record before the committed offset is redelivered.
    assert!(consume(&consumer, 1, Duration::from_secs(2)).is_empty());
}
