//! `dlq cutover` and `dlq rollback` end to end, against real consumer groups on the broker: a
//! legacy consumer (a plain rdkafka consumer standing in for server-private's worker) applies
//! part of a stream, commits and stops; the hand-over moves its offsets into the family's group,
//! and the family's real worker binary applies exactly the rest. Rolled back, the legacy
//! consumer resumes exactly where the fleet stopped. Then every refusal: live members, a group
//! ahead (and `--force`), partitions never committed (`--missing`), and a dry run changes
//! nothing.
//!
//! The stream is member updates (see [`MemberUpdates`]): each one's whole effect is
//! `DEL user:v2:slim:{uid}`, so "was it applied, and by whom" is visible in Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use cdc_topics::Family;
use fleet_harness::events::{MemberUpdates, member_key};
use fleet_harness::process::{
    DlqLane, KillOnDrop, dlq_command, dlq_output, signal, wait_exit, worker_command,
};
use fleet_harness::{
    Out, client_config, ends_of, keys_under, manual_consumer, produce_in_order, provisioned_family,
    redis, redis_uri, registry_url, seed_keys, unique, wait_drained,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;

/// One test's isolated lane: a family's topics under a prefix of its own, its group, the
/// legacy group, a Redis key prefix and an audit log.
struct Lane {
    family: Family,
    topic_prefix: String,
    group: String,
    legacy: String,
    key_prefix: String,
    audit: PathBuf,
}

impl Lane {
    async fn new(family: &str) -> Self {
        let topic_prefix = format!("{}.", unique("cutover"));
        Self {
            family: provisioned_family(family, &topic_prefix)
                .await
                .expect("provision"),
            topic_prefix,
            group: unique("cdc-family"),
            legacy: unique("server-private"),
            key_prefix: format!("{}:", unique("cutover")),
            audit: std::env::temp_dir().join(format!("{}.jsonl", unique("cutover-audit"))),
        }
    }

    fn dlq(&self, args: &[&str]) -> Output {
        let (redis_uri, registry_url) = (redis_uri(), registry_url());
        let lane = DlqLane {
            topic_prefix: &self.topic_prefix,
            group: &self.group,
            redis_uri: &redis_uri,
            key_prefix: &self.key_prefix,
            registry_url: &registry_url,
            audit: &self.audit,
        };
        dlq_output(dlq_command(args, &lane).expect("dlq binary"), args)
    }

    /// `dlq cutover` (`from`: `--from-group`) or `dlq rollback` (`to`: `--to-group`) of the
    /// lane's family and legacy group, with `extra` arguments.
    fn hand_over(&self, command: &str, extra: &[&str]) -> Output {
        let legacy_flag = if command == "cutover" {
            "--from-group"
        } else {
            "--to-group"
        };
        let mut args = vec![
            command,
            "--family",
            &self.family.family,
            legacy_flag,
            &self.legacy,
        ];
        args.extend(extra);
        self.dlq(&args)
    }

    /// `group`'s committed offsets on every partition of every family topic (`-1`: none), read
    /// in one request.
    fn committed(&self, group: &str) -> BTreeMap<String, Vec<i64>> {
        let mut list = TopicPartitionList::new();
        for topic in self.family.all_topics() {
            for p in 0..self.family.partitions {
                list.add_partition(topic, p);
            }
        }
        let offsets = manual_consumer(group)
            .expect("consumer")
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed");
        let mut by_topic: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for e in offsets.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            by_topic
                .entry(e.topic().to_owned())
                .or_default()
                .push(offset);
        }
        by_topic
    }

    /// The true end of every partition of every family topic.
    fn ends(&self) -> BTreeMap<String, Vec<i64>> {
        let topics: Vec<String> = self.family.all_topics().map(str::to_owned).collect();
        let ends = ends_of(&topics, self.family.partitions).expect("ends");
        topics.into_iter().zip(ends).collect()
    }

    fn audit_operations(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let line: Json = serde_json::from_str(l).expect("audit json");
                let field = |name: &str| line[name].as_str().unwrap_or_default().to_owned();
                (field("operation"), field("phase"))
            })
            .collect()
    }

    fn members_topic(&self) -> String {
        format!("{}debezium.chii.bangumi.chii_members", self.topic_prefix)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` is a refusal (exit 5) whose message contains `why`.
fn assert_refused(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(5), "{}", stderr(out));
    assert!(stderr(out).contains(why), "{}", stderr(out));
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits `offsets` (topic → offset per partition; `-1` left out) in `group`, as a consumer
/// that stopped there would have.
fn commit(group: &str, offsets: &BTreeMap<String, Vec<i64>>) {
    let mut list = TopicPartitionList::new();
    for (topic, partitions) in offsets {
        for (p, offset) in partitions.iter().enumerate() {
            if *offset >= 0 {
                list.add_partition_offset(topic, p as i32, Offset::Offset(*offset))
                    .expect("partition");
            }
        }
    }
    manual_consumer(group)
        .expect("consumer")
        .commit(&list, CommitMode::Sync)
        .expect("commit");
}

/// The legacy worker: reads `topic` from `from` (offset per partition) up to `to`, applies each
/// member update as the legacy worker would (`DEL` of its key) and returns the uids it applied.
async fn legacy_apply(lane: &Lane, topic: &str, from: &[i64], to: &[i64]) -> BTreeSet<u64> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", &lane.legacy)
        .set("enable.auto.commit", "false")
        .create()
        .expect("legacy consumer");
    let mut list = TopicPartitionList::new();
    for (p, offset) in from.iter().enumerate() {
        list.add_partition_offset(topic, p as i32, Offset::Offset(*offset))
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut left: i64 = from.iter().zip(to).map(|(f, t)| t - f).sum();
    let mut applied = BTreeSet::new();
    let mut conn = redis().await.expect("redis");
    while left > 0 {
        let message = match consumer.poll(Duration::from_secs(10)) {
            Some(message) => message.expect("legacy poll"),
            None => panic!("legacy consumer: {left} records never came"),
        };
        let p = message.partition() as usize;
        if message.offset() >= to[p] {
            continue;
        }
        let key: Json = serde_json::from_slice(message.key().expect("key")).expect("key json");
        let uid = key["uid"].as_u64().expect("uid");
        redis::cmd("DEL")
            .arg(format!("{}{}", lane.key_prefix, member_key(uid)))
            .query_async::<()>(&mut conn)
            .await
            .expect("DEL");
        assert!(applied.insert(uid), "uid {uid} delivered twice");
        left -= 1;
    }
    applied
}

/// Updates of members `uids`, uid `u` to partition `u % 3`, produced one by one; their keys
/// seeded first. Returns each partition's uids in offset order.
async fn produce_updates(lane: &Lane, uids: std::ops::Range<u64>) -> Vec<Vec<u64>> {
    let updates = MemberUpdates::load().expect("template");
    let keys: Vec<String> = uids.clone().map(member_key).collect();
    seed_keys(&lane.key_prefix, &keys).await.expect("seed");
    let records: Vec<(String, Out)> = uids
        .clone()
        .map(|uid| {
            let mut out = updates.event(uid, 1_000 + uid);
            out.partition = Some((uid % 3) as i32);
            (lane.members_topic(), out)
        })
        .collect();
    produce_in_order(&records).await.expect("produce");
    let mut by_partition = vec![Vec::new(); 3];
    for uid in uids {
        by_partition[(uid % 3) as usize].push(uid);
    }
    by_partition
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_hands_exactly_the_rest_to_the_family_and_rollback_hands_it_back() {
    let lane = Lane::new("cache-invalidation").await;
    let members = lane.members_topic();
    // 30 updates, 10 per partition. The legacy worker applies the first 4 of partition 0, none
    // of partition 1, all of partition 2, commits where it stopped on every partition it
    // consumes (0 on the empty topics), and stops.
    let first = produce_updates(&lane, 0..30).await;
    let cut = [4i64, 0, 10];
    let by_legacy = legacy_apply(&lane, &members, &[0, 0, 0], &cut).await;
    let mut legacy_offsets: BTreeMap<String, Vec<i64>> = lane
        .family
        .all_topics()
        .map(|t| (t.to_owned(), vec![0; 3]))
        .collect();
    legacy_offsets.insert(members.clone(), cut.to_vec());
    commit(&lane.legacy, &legacy_offsets);
    let expected_legacy: BTreeSet<u64> = (0..3)
        .flat_map(|p| first[p][..cut[p] as usize].to_vec())
        .collect();
    assert_eq!(by_legacy, expected_legacy);
    // The cache fills again after the legacy worker's deletes (reads re-cache): were the
    // family to re-apply anything before the hand-over point, those keys would go.
    let recached: Vec<String> = by_legacy.iter().copied().map(member_key).collect();
    seed_keys(&lane.key_prefix, &recached).await.expect("seed");

    // The plan first; a dry run changes nothing.
    let out = lane.hand_over("cutover", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(
        plan.contains(&format!(
            "{members}[0]: {} 4, {} none → 4; end 10, lag 6",
            lane.legacy, lane.group
        )),
        "{plan}"
    );
    assert!(plan.contains("dry run: nothing changed"), "{plan}");
    assert!(!plan.contains("would refuse"), "{plan}");
    assert!(
        lane.committed(&lane.group)
            .values()
            .flatten()
            .all(|o| *o == -1),
        "a dry run commits nothing"
    );
    assert!(
        lane.audit_operations().is_empty(),
        "a dry run audits nothing"
    );

    // Without --yes: the plan, then a refusal.
    let out = lane.hand_over("cutover", &[]);
    assert_refused(&out, "--yes");

    let out = lane.hand_over("cutover", &["--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lane.committed(&lane.group), legacy_offsets);
    assert_eq!(
        lane.audit_operations(),
        [
            ("cutover".into(), "intent".into()),
            ("cutover".into(), "outcome".into())
        ]
    );

    // The family's real worker applies exactly the rest.
    let mut worker = KillOnDrop(
        worker_command(
            "cache-invalidation",
            &lane.topic_prefix,
            &lane.group,
            &redis_uri(),
            &lane.key_prefix,
        )
        .expect("worker")
        .spawn()
        .expect("spawn worker"),
    );
    let topics: Vec<String> = lane.family.all_topics().map(str::to_owned).collect();
    wait_drained(&lane.group, &topics, 3, Duration::from_secs(60))
        .await
        .expect("drained");
    signal(&worker, "TERM").expect("TERM");
    let status = wait_exit(&mut worker, Duration::from_secs(30))
        .await
        .expect("wait");
    assert!(status.is_some_and(|s| s.success()), "worker exits cleanly");
    let left: Vec<String> = keys_under(&lane.key_prefix).await.expect("keys");
    let mut expected_left = recached.clone();
    expected_left.sort();
    assert_eq!(
        left, expected_left,
        "the family deleted exactly the keys of the records after the hand-over point"
    );
    assert_eq!(lane.committed(&lane.group), lane.ends());

    // Rollback: the fleet stops, more changes arrive, the legacy worker resumes exactly where
    // the fleet stopped.
    let second = produce_updates(&lane, 30..45).await;
    let out = lane.hand_over("rollback", &["--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fleet_stopped_at = lane.committed(&lane.group);
    assert_eq!(lane.committed(&lane.legacy), fleet_stopped_at);
    let resume_from = lane.committed(&lane.legacy)[&members].clone();
    assert_eq!(resume_from, [10, 10, 10]);
    let by_legacy_again = legacy_apply(&lane, &members, &resume_from, &[15, 15, 15]).await;
    let expected_again: BTreeSet<u64> = second.into_iter().flatten().collect();
    assert_eq!(
        by_legacy_again, expected_again,
        "exactly the records after the fleet's"
    );
    assert_eq!(
        keys_under(&lane.key_prefix).await.expect("keys"),
        expected_left,
        "every update applied once, by one side: the state of a single pass plus the re-cached keys"
    );
    assert_eq!(
        lane.audit_operations().last(),
        Some(&("rollback".into(), "outcome".into()))
    );
}

/// A consumer subscribed in `group` to `topic`, polled until the group has assigned it a
/// partition: a live member.
fn live_member(group: &str, topic: &str) -> BaseConsumer {
    let consumer = manual_consumer(group).expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while consumer.assignment().expect("assignment").count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no assignment in {group}"
        );
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_refuses_live_members_groups_ahead_and_partitions_never_committed() {
    let lane = Lane::new("timeline").await;
    let [changes, service]: [String; 2] = lane
        .family
        .all_topics()
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .try_into()
        .expect("two topics");
    let record = |topic: &String, partition: i32| {
        let out = Out {
            partition: Some(partition),
            value: Some(b"{}".to_vec()),
            ..Out::default()
        };
        (topic.clone(), out)
    };
    produce_in_order(&[
        record(&changes, 0),
        record(&changes, 0),
        record(&changes, 2),
        record(&service, 0),
        record(&service, 0),
    ])
    .await
    .expect("produce");
    // The legacy group committed the change topic only; the service topic never.
    commit(
        &lane.legacy,
        &BTreeMap::from([(changes.clone(), vec![1, 0, 1])]),
    );
    let cutover = |extra: &[&str]| lane.hand_over("cutover", extra);
    let at = |on_changes: [i64; 3], on_service: [i64; 3]| -> BTreeMap<String, Vec<i64>> {
        BTreeMap::from([
            (changes.clone(), on_changes.to_vec()),
            (service.clone(), on_service.to_vec()),
        ])
    };
    let none = || at([-1; 3], [-1; 3]);

    // A dry run shows the plan and what would be refused, and changes nothing.
    let out = cutover(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "would refuse: the giving group never committed 3 partition(s): {service}[0], {service}[1], {service}[2]"
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(lane.committed(&lane.group), none());

    // --missing fail (the default) names the partitions.
    let out = cutover(&["--yes"]);
    assert_refused(
        &out,
        &format!(
            "{service}[0], {service}[1], {service}[2]; say what they get with --missing earliest"
        ),
    );
    assert_eq!(lane.committed(&lane.group), none());
    assert!(lane.audit_operations().is_empty());

    // --missing earliest: the service topic from its first record.
    let out = cutover(&["--yes", "--missing", "earliest"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lane.committed(&lane.group), at([1, 0, 1], [0, 0, 0]));

    // The family group ahead on one partition: refused, then forced. --missing latest: the
    // service topic from its end.
    commit(
        &lane.group,
        &BTreeMap::from([(changes.clone(), vec![1, 0, 2])]),
    );
    let out = cutover(&["--yes", "--missing", "latest"]);
    assert_refused(&out, &format!("ahead on 1 partition(s): {changes}[2]"));
    assert_eq!(lane.committed(&lane.group)[&changes], [1, 0, 2]);
    let out = cutover(&["--yes", "--missing", "latest", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lane.committed(&lane.group), at([1, 0, 1], [2, 0, 0]));

    // A live member in the legacy group, then in the family group: refused, named, nothing
    // changed.
    let before = lane.committed(&lane.group);
    let legacy_member = live_member(&lane.legacy, &changes);
    let out = cutover(&["--yes", "--missing", "earliest"]);
    assert_refused(
        &out,
        &format!("group {} has 1 active member(s)", lane.legacy),
    );
    assert_eq!(lane.committed(&lane.group), before);
    drop(legacy_member);
    let family_member = live_member(&lane.group, &changes);
    let before_legacy = lane.committed(&lane.legacy);
    let out = lane.hand_over("rollback", &["--yes"]);
    assert_refused(
        &out,
        &format!("group {} has 1 active member(s)", lane.group),
    );
    assert_eq!(lane.committed(&lane.legacy), before_legacy);
    drop(family_member);
    assert_eq!(
        lane.audit_operations().len(),
        4,
        "the two cutovers done, each an intent and an outcome; nothing refused was audited"
    );
}
