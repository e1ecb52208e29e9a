//! The timeline fan-out against the real broker, Redis and MariaDB, from the real Debezium
//! fixtures (bangumi-behaviour §2): follower inboxes with and without visit keys, the zero-follower
//! rule, deletes, updates, the `PUBLISH` payload seen by a subscriber; replays and
//! reorderings that must never resurrect a deleted item (docs/architecture.md, "Idempotency");
//! the same with the fences
//! in a state Redis of their own (`STATE_REDIS_URI`: a `PrivateRedis`), where an evicted cache
//! does not let an old create back and a claim left pending by a crash is applied on
//! redelivery; and an author with 100 000 followers. In shadow mode (`RUN_MODE=shadow`) the
//! golden scenario's effects are planned (they give the golden state) and none is applied;
//! fences (in either Redis) are read, never written: a stale event plans nothing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_runtime::{Coordinates, Event, Handler, Outcome, Record};
use cdc_schemas::{ChangeEvent, Format, RawRecord, SchemaSet};
use fleet_harness::fixtures::{self, Encoding, Fixture};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::{KillOnDrop, PrivateRedis, worker_command};
use fleet_harness::{
    Out, delete_prefix_at, end_offsets, keys_under, produce, producer, provisioned_family, redis,
    redis_at, redis_uri, unique, wait_drained, worker_config,
};
use futures::StreamExt;
use redis::AsyncCommands;
use timeline::{FAMILY, Settings, Timeline};
use tokio_util::sync::CancellationToken;

const TIMELINE_TOPIC: &str = "debezium.chii.bangumi.chii_timeline";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn timeline_fixtures(encoding: Encoding) -> Vec<Fixture> {
    fixtures::load(encoding)
        .expect("fixtures")
        .into_iter()
        .filter(|f| f.topic == TIMELINE_TOPIC)
        .collect()
}

async fn zset(prefix: &str, key: &str) -> Vec<u64> {
    let mut conn = redis().await.expect("redis");
    conn.zrange(format!("{prefix}{key}"), 0, -1)
        .await
        .expect("zrange")
}

async fn ttl(prefix: &str, key: &str) -> i64 {
    let mut conn = redis().await.expect("redis");
    conn.ttl(format!("{prefix}{key}")).await.expect("ttl")
}

/// Visit keys: user 1's timeline and inboxes 1 and 2 visited (future expiry), inbox 3's expiry
/// in the past, inbox 4 never visited; user 5 (no followers) visited both.
async fn seed_visits(prefix: &str) -> i64 {
    let t = now();
    let mut conn = redis().await.expect("redis");
    let mut pipe = redis::pipe();
    for (key, value) in [
        ("tml:visit:user:1", t + 1000),
        ("tml:visit:inbox:1", t + 2000),
        ("tml:visit:inbox:2", t + 3000),
        ("tml:visit:inbox:3", t - 10),
        ("tml:visit:user:5", t + 1000),
        ("tml:visit:inbox:5", t + 1000),
    ] {
        pipe.set(format!("{prefix}{key}"), value).ignore();
    }
    for item in [1, 3, 10, 11, 12] {
        pipe.set(format!("{prefix}tml:v4:item:{item}"), "cached")
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await.expect("seed");
    t
}

/// Everything the golden scenario leaves in Redis, checked key by key.
async fn assert_golden_state(prefix: &str, seeded_at: i64) {
    assert_eq!(
        zset(prefix, "tml:v3:inbox:0").await,
        vec![3, 4, 10, 11],
        "global inbox"
    );
    assert_eq!(
        zset(prefix, "tml:v3:user:1").await,
        vec![4, 10],
        "user 1 (visited)"
    );
    assert_eq!(
        zset(prefix, "tml:v3:user:5").await,
        vec![11],
        "user 5 (visited)"
    );
    assert_eq!(
        zset(prefix, "tml:v3:inbox:1").await,
        vec![4, 10],
        "author's own inbox"
    );
    assert_eq!(
        zset(prefix, "tml:v3:inbox:2").await,
        vec![4, 10],
        "visited follower"
    );
    let user_ttl = ttl(prefix, "tml:v3:user:1").await;
    let expected = seeded_at + 1000 - now();
    assert!(
        (expected - 5..=expected + 1).contains(&user_ttl),
        "user 1 TTL {user_ttl} ≈ {expected}"
    );
    let inbox_ttl = ttl(prefix, "tml:v3:inbox:2").await;
    let expected = seeded_at + 3000 - now();
    assert!(
        (expected - 5..=expected + 1).contains(&inbox_ttl),
        "inbox 2 TTL {inbox_ttl} ≈ {expected}"
    );
    let mut conn = redis().await.expect("redis");
    let followers: String = conn
        .get(format!("{prefix}user:followers:1"))
        .await
        .expect("followers");
    assert_eq!(followers, "[2,3,4]");
    let followers: String = conn
        .get(format!("{prefix}user:followers:5"))
        .await
        .expect("followers");
    assert_eq!(followers, "[]");
    // Cached for an hour at the first batch, which came after the seeding.
    let followers_ttl = ttl(prefix, "user:followers:1").await;
    let since_seeded = now() - seeded_at;
    assert!(
        (3600 - since_seeded - 1..=3600).contains(&followers_ttl),
        "followers TTL {followers_ttl}, {since_seeded} s after the seeding"
    );
    let fence_ttl = ttl(prefix, "tml:fence:10").await;
    assert!(fence_ttl > 29 * 86_400, "fence TTL {fence_ttl}");

    // Exactly these keys exist: inboxes 3 (past expiry), 4 (never visited) and 5 (no
    // followers: no own inbox) were not created; items 1, 3, 10 and 12 were invalidated.
    assert_eq!(keys_under(prefix).await.expect("keys"), golden_keys());
}

/// The keys the golden scenario leaves, sorted.
fn golden_keys() -> Vec<String> {
    let mut want: Vec<String> = [
        "tml:fence:1",
        "tml:fence:10",
        "tml:fence:11",
        "tml:fence:12",
        "tml:fence:3",
        "tml:fence:4",
        "tml:v3:inbox:0",
        "tml:v3:inbox:1",
        "tml:v3:inbox:2",
        "tml:v3:user:1",
        "tml:v3:user:5",
        "tml:v4:item:11",
        "tml:visit:inbox:1",
        "tml:visit:inbox:2",
        "tml:visit:inbox:3",
        "tml:visit:inbox:5",
        "tml:visit:user:1",
        "tml:visit:user:5",
        "user:followers:1",
        "user:followers:2",
        "user:followers:3",
        "user:followers:5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    want
}

async fn golden(encoding: Encoding) {
    let topic_prefix = format!("{}.", unique("it.tml"));
    let key_prefix = format!("{}:", unique("it.tml"));
    let group = unique("it.tml.group");
    let db = TestDatabase::create().await.expect("database");
    db.add_followers(1, &[2, 3, 4]).await.expect("friends");
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    let seeded_at = seed_visits(&key_prefix).await;

    let client = redis::Client::open(redis_uri()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(format!("{key_prefix}events:tml:create"))
        .await
        .expect("subscribe");
    let mut published = pubsub.into_on_message();

    let records: Vec<Out> = timeline_fixtures(encoding)
        .into_iter()
        .map(|f| f.record)
        .collect();
    let topic = format!("{topic_prefix}{TIMELINE_TOPIC}");
    let producer = producer().expect("producer");
    produce(&producer, &topic, &records).await.expect("produce");

    let args = db.worker_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = worker_config(&family, &topic_prefix, &key_prefix, &group, &args).expect("config");
    let handler = Timeline::connect(&config, &Settings::default(), &group).expect("connect");
    let shutdown = CancellationToken::new();
    let running = cdc_runtime::start(&family, &config, handler, shutdown.clone())
        .await
        .expect("start");
    let topics = vec![topic.clone()];
    wait_drained(&group, &topics, family.partitions, Duration::from_secs(60))
        .await
        .expect("drained");
    assert_golden_state(&key_prefix, seeded_at).await;
    let mut first_pass = Vec::new();
    for _ in 0..5 {
        let message = tokio::time::timeout(Duration::from_secs(5), published.next())
            .await
            .expect("a publication")
            .expect("stream open");
        first_pass.push(message.get_payload::<String>().expect("payload"));
    }
    first_pass.sort();
    assert_eq!(
        first_pass,
        vec![
            r#"{"tml_id":10,"cat":1,"uid":1}"#,
            r#"{"tml_id":11,"cat":5,"uid":5}"#,
            r#"{"tml_id":12,"cat":3,"uid":1}"#,
            r#"{"tml_id":3,"cat":5,"uid":2}"#,
            r#"{"tml_id":4,"cat":2,"uid":1}"#,
        ]
    );

    // A replay of the whole stream: every event comes again at its own position and has no
    // effect at all, no publication either (the create of 12 also comes after its delete).
    // A new item after it marks the end of the replay.
    produce(&producer, &topic, &records).await.expect("produce");
    let marker = created_item(99, 1);
    produce(&producer, &topic, &[marker])
        .await
        .expect("produce");
    wait_drained(&group, &topics, family.partitions, Duration::from_secs(60))
        .await
        .expect("drained");
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    let mut second_pass = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), published.next())
            .await
            .expect("the marker's publication")
            .expect("stream open");
        let payload = message.get_payload::<String>().expect("payload");
        if payload.contains("\"tml_id\":99,") {
            break;
        }
        second_pass.push(payload);
    }
    assert_eq!(second_pass, Vec::<String>::new(), "the replay published");
    // The golden state, once the marker is taken out again.
    let mut conn = redis().await.expect("redis");
    for set in [
        "inbox:0", "user:1", "inbox:1", "inbox:2", "inbox:3", "inbox:4",
    ] {
        let _: () = conn
            .zrem(format!("{key_prefix}tml:v3:{set}"), 99)
            .await
            .expect("zrem");
    }
    let _: () = conn
        .del(format!("{key_prefix}tml:fence:99"))
        .await
        .expect("del");
    assert_golden_state(&key_prefix, seeded_at).await;
    assert_eq!(
        end_offsets(&family.dlq, family.partitions).expect("dlq"),
        vec![0; family.partitions as usize],
        "nothing dead-lettered"
    );
    db.drop_now().await.expect("drop database");
}

/// The golden scenario in shadow mode (the binary, `RUN_MODE=shadow`): nothing written (the
/// seeded keys alone, no fence, set or follower cache), and the plans, applied in order to the
/// seeded keys, give the golden state (follower caches aside) and its publications.
#[tokio::test(flavor = "multi_thread")]
async fn golden_fanout_in_shadow_mode_plans_the_golden_state_and_writes_nothing() {
    let topic_prefix = format!("{}.", unique("it.tml.shadow"));
    let key_prefix = format!("{}:", unique("it.tml.shadow"));
    let group = unique("it.tml.shadow.group");
    let db = TestDatabase::create().await.expect("database");
    db.add_followers(1, &[2, 3, 4]).await.expect("friends");
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    seed_visits(&key_prefix).await;
    let seeded = keys_under(&key_prefix).await.expect("keys");
    let records: Vec<Out> = timeline_fixtures(Encoding::Json)
        .into_iter()
        .map(|f| f.record)
        .collect();
    let topic = format!("{topic_prefix}{TIMELINE_TOPIC}");
    produce(&producer().expect("producer"), &topic, &records)
        .await
        .expect("produce");

    let plans = std::env::temp_dir().join(unique("timeline-fanout-shadow-plans"));
    let mut cmd = worker_command("timeline", &topic_prefix, &group, &redis_uri(), &key_prefix)
        .expect("the timeline binary");
    cmd.env("MYSQL_DB", &db.name)
        .env("RUN_MODE", "shadow")
        .env("SHADOW_PLANS_DIR", &plans);
    let mut child = KillOnDrop(cmd.spawn().expect("spawn timeline"));
    wait_drained(
        &format!("{group}.shadow"),
        std::slice::from_ref(&topic),
        family.partitions,
        Duration::from_secs(120),
    )
    .await
    .expect("drained");
    child.terminate().await.expect("stopped");

    assert_eq!(
        keys_under(&key_prefix).await.expect("keys"),
        seeded,
        "nothing written"
    );
    assert_eq!(
        end_offsets(&family.dlq, family.partitions).expect("dlq"),
        vec![0; family.partitions as usize],
        "nothing dead-lettered"
    );

    // The plans, applied to a model of the seeded keyspace.
    let text = std::fs::read_to_string(plans.join("timeline.plans.jsonl")).expect("plans");
    let mut keys: BTreeMap<String, Vec<u64>> =
        seeded.iter().map(|k| (k.clone(), Vec::new())).collect();
    let mut published = Vec::new();
    let mut expired = Vec::new();
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        for effect in line["effects"].as_array().expect("effects") {
            let key = effect["key"].as_str().expect("key");
            let key = key.strip_prefix(&key_prefix).expect("a prefixed key");
            let args: Vec<&str> = effect["args"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().expect("arg")).collect())
                .unwrap_or_default();
            match effect["kind"].as_str().expect("kind") {
                "zadd" => {
                    assert_eq!(args[0], args[1], "score = member = tml_id: {effect}");
                    let set = keys.entry(key.to_owned()).or_default();
                    set.push(args[1].parse().expect("member"));
                    set.sort();
                    set.dedup();
                }
                "zrem" => {
                    if let Some(set) = keys.get_mut(key) {
                        set.retain(|m| m.to_string() != args[0]);
                        if set.is_empty() {
                            keys.remove(key);
                        }
                    }
                }
                "del" => {
                    keys.remove(key);
                }
                "set" => {
                    assert!(key.starts_with("tml:fence:"), "{effect}");
                    assert_eq!(args[1..], ["EX", "2592000"], "{effect}");
                    keys.insert(key.to_owned(), Vec::new());
                }
                "expire" => expired.push(key.to_owned()),
                "publish" => {
                    assert_eq!(key, "events:tml:create", "{effect}");
                    published.push(args[0].to_owned());
                }
                _ => panic!("unexpected effect {effect}"),
            }
        }
    }
    let want: Vec<String> = golden_keys()
        .into_iter()
        .filter(|k| !k.starts_with("user:followers:"))
        .collect();
    assert_eq!(keys.keys().cloned().collect::<Vec<_>>(), want, "the keys");
    let zsets: BTreeMap<&str, &[u64]> = [
        ("tml:v3:inbox:0", &[3, 4, 10, 11][..]),
        ("tml:v3:user:1", &[4, 10]),
        ("tml:v3:user:5", &[11]),
        ("tml:v3:inbox:1", &[4, 10]),
        ("tml:v3:inbox:2", &[4, 10]),
    ]
    .into();
    for (key, members) in zsets {
        assert_eq!(keys[key], members, "{key}");
    }
    // Every set but the global inbox expires with its visit key.
    expired.sort();
    expired.dedup();
    assert_eq!(
        expired,
        [
            "tml:v3:inbox:1",
            "tml:v3:inbox:2",
            "tml:v3:user:1",
            "tml:v3:user:5"
        ]
    );
    published.sort();
    assert_eq!(
        published,
        [
            r#"{"tml_id":10,"cat":1,"uid":1}"#,
            r#"{"tml_id":11,"cat":5,"uid":5}"#,
            r#"{"tml_id":12,"cat":3,"uid":1}"#,
            r#"{"tml_id":3,"cat":5,"uid":2}"#,
            r#"{"tml_id":4,"cat":2,"uid":1}"#,
        ]
    );
    let _ = std::fs::remove_dir_all(&plans);
    db.drop_now().await.expect("drop database");
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_fanout_json_without_schema() {
    golden(Encoding::Json).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_fanout_avro() {
    golden(Encoding::Avro).await;
}

/// The fixture records of item 12: its create and its delete, decoded.
fn create_and_delete_of_12() -> (Fixture, Fixture) {
    let all = timeline_fixtures(Encoding::Json);
    let find = |op: &str| {
        all.iter()
            .find(|f| {
                f.record.key.as_deref() == Some(br#"{"tml_id":12}"#.as_slice())
                    && f.record.value.as_deref().is_some_and(|v| {
                        String::from_utf8_lossy(v).contains(&format!("\"op\":\"{op}\""))
                    })
            })
            .cloned()
            .expect("fixture")
    };
    (find("c"), find("d"))
}

/// The real create of item 12, as item `id` by `author`.
fn created_item(id: u64, author: u64) -> Out {
    let (create, _) = create_and_delete_of_12();
    let mut value: serde_json::Value =
        serde_json::from_slice(create.record.value.as_deref().expect("value")).expect("json");
    value["after"]["tml_id"] = id.into();
    value["after"]["tml_uid"] = author.into();
    Out {
        key: Some(format!("{{\"tml_id\":{id}}}").into_bytes()),
        value: Some(value.to_string().into_bytes()),
        ..Out::default()
    }
}

fn record(f: &Fixture, offset: i64) -> Record {
    let raw = RawRecord {
        topic: &f.topic,
        key: f.record.key.as_deref(),
        value: f.record.value.as_deref(),
    };
    let event = cdc_schemas::decode(&raw, Format::Json, &SchemaSet::new()).expect("decode");
    Record {
        origin: None,
        at: Coordinates {
            topic: f.topic.as_str().into(),
            partition: 0,
            offset,
            timestamp_ms: None,
        },
        event: Event::Change(Box::new(event)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reorderings_and_replays_never_resurrect_a_deleted_item() {
    reorderings_and_replays(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_state_redis_reorderings_and_replays_never_resurrect_a_deleted_item() {
    let state = PrivateRedis::start().await.expect("state redis");
    reorderings_and_replays(Some(&state.uri())).await;
}

/// A handler over the machine's Redis (the cache) with `prefix`, its fences in the Redis at
/// `state` if given.
fn handler_with_state(prefix: &str, state: Option<&str>) -> Timeline {
    let family = cdc_topics::by_name(FAMILY)
        .expect("topics")
        .expect("family");
    let config = worker_config(&family, "", prefix, "g", &[]).expect("config");
    let settings = Settings {
        state_redis_uri: state.map(str::to_owned),
        ..Settings::default()
    };
    Timeline::connect(&config, &settings, "g").expect("connect")
}

/// Seeds `prefix` with the visits of [`seed_visits`] and user 1's followers 2, 3, 4.
async fn seed_visits_and_followers(prefix: &str) {
    seed_visits(prefix).await;
    let mut conn = redis().await.expect("redis");
    let _: () = conn
        .set(format!("{prefix}user:followers:1"), "[2,3,4]")
        .await
        .expect("followers");
}

/// The orders a replay or a redelivery can produce, each ending with item 12 deleted, applied
/// in one batch and one by one: 12 is nowhere, and every create after the delete is stale.
/// With a state Redis (`state`), the fence is there, done, and none is in the cache Redis.
async fn reorderings_and_replays(state: Option<&str>) {
    let (create, delete) = create_and_delete_of_12();
    // Orders a replay or a redelivery can produce; each ends with the item deleted.
    let orders: &[&[char]] = &[
        &['c', 'd', 'c'],
        &['d', 'c'],
        &['c', 'd', 'c', 'd'],
        &['d', 'c', 'c'],
        &['c', 'c', 'd', 'c'],
        &['d', 'd', 'c'],
    ];
    for order in orders {
        for one_by_one in [false, true] {
            let prefix = format!("{}:", unique("it.tml.order"));
            seed_visits_and_followers(&prefix).await;
            let mut conn = redis().await.expect("redis");
            let handler = handler_with_state(&prefix, state);
            let records: Vec<Record> = order
                .iter()
                .enumerate()
                .map(|(i, op)| record(if *op == 'c' { &create } else { &delete }, i as i64))
                .collect();
            let mut outcomes = Vec::new();
            if one_by_one {
                for r in records.chunks(1) {
                    outcomes.extend(handler.apply(r).await.expect("apply"));
                }
            } else {
                outcomes = handler.apply(&records).await.expect("apply");
            }
            for key in [
                "tml:v3:inbox:0",
                "tml:v3:user:1",
                "tml:v3:inbox:1",
                "tml:v3:inbox:2",
            ] {
                assert!(
                    !zset(&prefix, key).await.contains(&12),
                    "{order:?} (one by one: {one_by_one}): 12 still in {key}"
                );
            }
            let item: bool = conn
                .exists(format!("{prefix}tml:v4:item:12"))
                .await
                .expect("exists");
            assert!(!item, "{order:?}: item cache survived");
            // Every create delivered after the delete is stale, never applied.
            let first_delete = order.iter().position(|op| *op == 'd').unwrap_or(0);
            for (i, op) in order.iter().enumerate() {
                if *op == 'c' && i > first_delete {
                    assert_eq!(outcomes[i], Outcome::Stale, "{order:?} #{i}");
                }
            }
            // Item 12 is the only item: its fence is the only one there can be.
            let fence = format!("{prefix}tml:fence:12");
            let fence_in_cache: bool = conn.exists(&fence).await.expect("exists");
            if let Some(state) = state {
                assert!(!fence_in_cache, "{order:?}: a fence in the cache Redis");
                let value: Option<String> = redis_at(state)
                    .await
                    .expect("state redis")
                    .get(&fence)
                    .await
                    .expect("get fence");
                assert_eq!(
                    value,
                    Some(format!("{}#1", position_of(&delete))),
                    "{order:?}: the delete's only call, done"
                );
            } else {
                assert!(fence_in_cache, "{order:?}: no fence in the cache Redis");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_shadow_mode_fences_are_read_not_written() {
    shadow_reads_fences(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_state_redis_in_shadow_mode_fences_are_read_not_written() {
    let state = PrivateRedis::start().await.expect("state redis");
    shadow_reads_fences(Some(&state.uri())).await;
}

/// Item 12 created and deleted live; then, in shadow mode over the same keys: its create again
/// is stale against the fence (no plan); with the fence gone, a batch of its delete and its
/// create plans the delete's effects and finds the create stale behind the delete's planned
/// fence, as live would. Nothing is written: the keys (and the fence, in `state` if given) are
/// as the live run left them.
async fn shadow_reads_fences(state: Option<&str>) {
    let (create, delete) = create_and_delete_of_12();
    let prefix = format!("{}:", unique("it.tml.shadow.fence"));
    seed_visits_and_followers(&prefix).await;
    let live = handler_with_state(&prefix, state);
    live.apply(&[record(&create, 0), record(&delete, 1)])
        .await
        .expect("apply");
    let fences = redis_at(state.unwrap_or(&redis_uri()))
        .await
        .expect("fence redis");
    let fence = format!("{prefix}tml:fence:12");

    let plans = std::env::temp_dir().join(unique("timeline-shadow-fence-plans"));
    let family = cdc_topics::by_name(FAMILY)
        .expect("topics")
        .expect("family");
    let plans_dir = plans.to_string_lossy().into_owned();
    let config = worker_config(
        &family,
        "",
        &prefix,
        "g",
        &["--run-mode", "shadow", "--shadow-plans-dir", &plans_dir],
    )
    .expect("config");
    let settings = Settings {
        state_redis_uri: state.map(str::to_owned),
        ..Settings::default()
    };
    let shadow = Timeline::open(&config, &settings, "g").await.expect("open");
    let keys = keys_under(&prefix).await.expect("keys");

    let outcomes = shadow.apply(&[record(&create, 2)]).await.expect("apply");
    assert_eq!(outcomes, [Outcome::Stale], "the create, behind the fence");
    assert_eq!(
        keys_under(&prefix).await.expect("keys"),
        keys,
        "nothing written"
    );

    let _: () = fences.clone().del(&fence).await.expect("del fence");
    let keys = keys_under(&prefix).await.expect("keys");
    let outcomes = shadow
        .apply(&[record(&delete, 3), record(&create, 4)])
        .await
        .expect("apply");
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Stale]);
    let exists: bool = fences.clone().exists(&fence).await.expect("exists");
    assert!(!exists, "no fence written");
    let keys_after = keys_under(&prefix).await.expect("keys");
    assert_eq!(keys_after, keys, "nothing written");

    let text = std::fs::read_to_string(plans.join("timeline.plans.jsonl")).expect("plans");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "the delete's line alone: {text}");
    assert_eq!(lines[0]["offset"], 3);
    let effects: Vec<String> = lines[0]["effects"]
        .as_array()
        .expect("effects")
        .iter()
        .map(|e| {
            let args: Vec<&str> = e["args"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            format!(
                "{} {} {}",
                e["kind"].as_str().unwrap_or_default(),
                e["key"]
                    .as_str()
                    .unwrap_or_default()
                    .strip_prefix(&prefix)
                    .unwrap_or("unprefixed"),
                args.join(" ")
            )
            .trim_end()
            .to_owned()
        })
        .collect();
    assert_eq!(
        effects,
        [
            format!("set tml:fence:12 {}#1 EX 2592000", position_of(&delete)),
            "zrem tml:v3:inbox:0 12".to_owned(),
            "zrem tml:v3:user:1 12".to_owned(),
            "zrem tml:v3:inbox:2 12".to_owned(),
            "zrem tml:v3:inbox:3 12".to_owned(),
            "zrem tml:v3:inbox:4 12".to_owned(),
            "zrem tml:v3:inbox:1 12".to_owned(),
            "del tml:v4:item:12".to_owned(),
        ]
    );
    let _ = std::fs::remove_dir_all(&plans);
}

/// Where item 12 is, of the sets its create reaches.
async fn where_12_is(prefix: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    for key in [
        "tml:v3:inbox:0",
        "tml:v3:user:1",
        "tml:v3:inbox:1",
        "tml:v3:inbox:2",
    ] {
        if zset(prefix, key).await.contains(&12) {
            found.push(key);
        }
    }
    found
}

/// Item 12 created then deleted, then every key of the test in the cache Redis evicted (deleted,
/// as `allkeys-lru` might), visits and followers seeded again, then the create replayed:
/// outcomes of the three deliveries and where 12 ends up.
async fn replay_after_eviction(state: Option<&str>) -> (Vec<Outcome>, Vec<&'static str>) {
    let (create, delete) = create_and_delete_of_12();
    let prefix = format!("{}:", unique("it.tml.evict"));
    seed_visits_and_followers(&prefix).await;
    let handler = handler_with_state(&prefix, state);
    let mut outcomes = handler
        .apply(&[record(&create, 0), record(&delete, 1)])
        .await
        .expect("apply");
    assert_eq!(where_12_is(&prefix).await, Vec::<&str>::new(), "deleted");
    delete_prefix_at(&redis_uri(), &prefix)
        .await
        .expect("evict");
    seed_visits_and_followers(&prefix).await;
    outcomes.extend(handler.apply(&[record(&create, 0)]).await.expect("replay"));
    (outcomes, where_12_is(&prefix).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_state_redis_an_evicted_cache_does_not_let_an_old_create_back() {
    let state = PrivateRedis::start().await.expect("state redis");
    let (outcomes, found) = replay_after_eviction(Some(&state.uri())).await;
    assert_eq!(
        outcomes,
        vec![Outcome::Applied, Outcome::Applied, Outcome::Stale]
    );
    assert_eq!(found, Vec::<&str>::new(), "the replayed create came back");
    // The control: with the fences in the cache Redis, the same eviction takes the fence with
    // it and the replayed create comes back (the hazard `STATE_REDIS_URI` removes).
    let (outcomes, found) = replay_after_eviction(None).await;
    assert_eq!(
        outcomes,
        vec![Outcome::Applied, Outcome::Applied, Outcome::Applied]
    );
    assert!(found.contains(&"tml:v3:inbox:0"), "{found:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_state_redis_a_claim_left_pending_by_a_crash_is_applied_on_redelivery() {
    let state = PrivateRedis::start().await.expect("state redis");
    let (create, _) = create_and_delete_of_12();
    let prefix = format!("{}:", unique("it.tml.pending"));
    seed_visits_and_followers(&prefix).await;
    let client = redis::Client::open(redis_uri()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(format!("{prefix}events:tml:create"))
        .await
        .expect("subscribe");
    let mut published = pubsub.into_on_message();
    // What the claim script leaves when the process dies before the effects: call 0 of the
    // create pending.
    let fence = format!("{prefix}tml:fence:12");
    let position = position_of(&create);
    let mut state_conn = redis_at(&state.uri()).await.expect("state redis");
    let _: () = state_conn
        .set_ex(&fence, format!("{position}#0~"), 3600)
        .await
        .expect("pending claim");

    let handler = handler_with_state(&prefix, Some(&state.uri()));
    let outcomes = handler.apply(&[record(&create, 0)]).await.expect("apply");
    assert_eq!(outcomes, vec![Outcome::Applied]);
    assert_eq!(
        where_12_is(&prefix).await,
        vec![
            "tml:v3:inbox:0",
            "tml:v3:user:1",
            "tml:v3:inbox:1",
            "tml:v3:inbox:2"
        ],
        "the effects"
    );
    let message = tokio::time::timeout(Duration::from_secs(30), published.next())
        .await
        .expect("a publication")
        .expect("stream open");
    assert!(
        message
            .get_payload::<String>()
            .expect("payload")
            .contains("\"tml_id\":12,"),
        "published"
    );
    let value: String = state_conn.get(&fence).await.expect("fence");
    assert_eq!(value, format!("{position}#1"), "done");
    let ttl: i64 = state_conn.ttl(&fence).await.expect("ttl");
    assert!(ttl > 29 * 86_400, "fence TTL {ttl}");
    // Applied and done: one more redelivery is stale.
    let outcomes = handler.apply(&[record(&create, 0)]).await.expect("apply");
    assert_eq!(outcomes, vec![Outcome::Stale]);
}

/// The fence position (`SourcePosition::to_key()`) of a fixture's change.
fn position_of(f: &Fixture) -> String {
    let Event::Change(event) = record(f, 0).event else {
        panic!("not a change");
    };
    let ChangeEvent::Row(change) = *event else {
        panic!("not a row change");
    };
    change.position().to_key()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_author_with_100k_followers_reaches_every_visited_inbox() {
    const FOLLOWERS: u64 = 100_000;
    const AUTHOR: u64 = 7_000_000;
    let topic_prefix = format!("{}.", unique("it.tml.big"));
    let key_prefix = format!("{}:", unique("it.tml.big"));
    let group = unique("it.tml.big.group");
    let db = TestDatabase::create().await.expect("database");
    let followers: Vec<u64> = (1..=FOLLOWERS).collect();
    db.add_followers(AUTHOR, &followers).await.expect("friends");
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    let expiry = now() + 86_400;
    let mut conn = redis().await.expect("redis");
    for chunk in followers.chunks(10_000) {
        let mut pipe = redis::pipe();
        for uid in chunk {
            pipe.set(format!("{key_prefix}tml:visit:inbox:{uid}"), expiry)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.expect("visits");
    }
    let _: () = conn
        .set(format!("{key_prefix}tml:visit:inbox:{AUTHOR}"), expiry)
        .await
        .expect("visit");

    let out = created_item(900, AUTHOR);
    let topic = format!("{topic_prefix}{TIMELINE_TOPIC}");
    produce(&producer().expect("producer"), &topic, &[out])
        .await
        .expect("produce");

    let args = db.worker_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = worker_config(&family, &topic_prefix, &key_prefix, &group, &args).expect("config");
    let handler = Timeline::connect(&config, &Settings::default(), &group).expect("connect");
    let shutdown = CancellationToken::new();
    let running = cdc_runtime::start(&family, &config, handler, shutdown.clone())
        .await
        .expect("start");
    wait_drained(
        &group,
        &[topic],
        family.partitions,
        Duration::from_secs(120),
    )
    .await
    .expect("drained");
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");

    let mut reached = 0u64;
    let mut uids = followers.clone();
    uids.push(AUTHOR);
    for chunk in uids.chunks(10_000) {
        let mut pipe = redis::pipe();
        for uid in chunk {
            pipe.zscore(format!("{key_prefix}tml:v3:inbox:{uid}"), 900);
        }
        let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await.expect("scores");
        reached += scores.iter().filter(|s| **s == Some(900.0)).count() as u64;
    }
    assert_eq!(reached, FOLLOWERS + 1, "every follower and the author");
    let mut counts = BTreeMap::new();
    for k in keys_under(&key_prefix).await.expect("keys") {
        let kind = k.rsplit_once(':').map_or(k.clone(), |(p, _)| p.to_owned());
        *counts.entry(kind).or_insert(0u64) += 1;
    }
    assert_eq!(
        counts.get("tml:v3:inbox"),
        Some(&(FOLLOWERS + 2)),
        "{counts:?}"
    );
    db.drop_now().await.expect("drop database");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_mysql_is_transient_for_fan_out_and_writer() {
    let prefix = format!("{}:", unique("it.tml.down"));
    let family = cdc_topics::by_name(FAMILY)
        .expect("topics")
        .expect("family");
    // Nothing listens on port 1; followers are not cached, so the fan-out must ask MySQL.
    let config = worker_config(&family, "", &prefix, "g", &["--mysql-port", "1"]).expect("config");
    let handler = Timeline::connect(&config, &Settings::default(), "g").expect("connect");
    let (create, _) = create_and_delete_of_12();
    let result = handler.apply(&[record(&create, 0)]).await;
    assert!(
        matches!(result, Err(cdc_runtime::HandlerError::Transient(_))),
        "fan-out: {result:?}"
    );
    let service = Record {
        origin: None,
        at: Coordinates {
            topic: "timeline".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
        },
        event: Event::Service {
            key: Some(b"1".to_vec()),
            value: Some(
                br#"{"op":"statusSign","message":{"uid":1,"sign":"x","createdAt":1,"source":5}}"#
                    .to_vec(),
            ),
        },
    };
    let result = handler.apply(&[service]).await;
    assert!(
        matches!(result, Err(cdc_runtime::HandlerError::Transient(_))),
        "writer: {result:?}"
    );
}
