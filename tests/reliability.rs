//! The reliability suite: fault injection against the real broker, Redis and MariaDB, proving
//! no loss and no duplicated effect. Each scenario drives a known event stream, and ends by
//! comparing the full state it left (every Redis key under its prefix with type, value, scores
//! and TTL presence; for the timeline, its MariaDB tables) with the state a fault-free,
//! in-order run of the same stream leaves (run alongside, in its own prefix, topics and
//! database), plus the DLQ content and the committed offsets.
//!
//! - `kill_9_at_random_points`: the cache-invalidation binary `kill -9`ed at random points of
//!   its batches, repeatedly, then restarted: committed offsets only grow, never pass an
//!   unapplied event, and end at every partition's end (no gaps); final state equal.
//! - `kill_9_the_timeline_at_random_points`: the same for the timeline binary: fan-out and
//!   writer neither lose nor repeat an effect (Redis and MariaDB compared).
//! - `redis_outage_of_20s`: a private Redis stopped for 20 s mid-stream: `/readyz` not ready
//!   meanwhile, zero dead letters, nothing lost.
//! - `mariadb_outage_of_20s_for_the_timeline`: a private MariaDB stopped (killed) for 20 s
//!   while the timeline fans out items whose followers are not cached: the same.
//! - `mariadb_outage_of_20s_for_subject_date`: the same for subject-date, which reads every
//!   subject back from MariaDB and writes its date there.
//! - `meilisearch_killed_for_20s_for_search`, `meilisearch_paused_for_20s_for_search`: a
//!   private Meilisearch killed (and restarted on its data), or paused with `SIGSTOP`, for 20 s
//!   while the search family indexes subjects: the same.
//! - `rebalance_1_3_1_under_load`: a group going 1 → 3 → 1 consumers while events flow.
//! - `rebalance_1_3_1_under_load_for_the_timeline`: the same for the timeline (fan-out and
//!   writer), whose records the rebalances deliver twice and out of their first order.
//! - `poison_interleaved_with_good_events`: malformed JSON, invalid UTF-8, a wrong column type,
//!   an unknown `op`, an oversize record and Avro with an unknown schema id, interleaved with
//!   good events: exactly those dead-lettered with every documented header, nothing else.
//! - `an_unavailable_dlq_topic_makes_the_partition_wait`: a poison record while the DLQ topic
//!   does not exist (tansu would create it on produce; the worker says
//!   `allow.auto.create.topics=false`, as against a broker that does not auto-create): its
//!   partition commits up to the poison and no further and the worker is not ready, the other
//!   partitions drain; once the topic is created, the poison is dead-lettered and the rest
//!   applied: one dead letter, state equal.
//! - `duplicates_redeliveries_and_an_old_dlq_replay_change_nothing`: the timeline with every
//!   Debezium event delivered twice, then every offset redelivered to a new group, then a DLQ
//!   replay of old creates (and writer messages) after their deletes: state as if each event
//!   came once, in order (the fan-out fences by `SourcePosition`, the writer by message
//!   identity).
//! - `secrets_and_payloads_stay_out_of_logs`: SASL/SSL settings accepted and passed through to
//!   librdkafka; secrets never in `--print-config` or the logs; payloads not logged by default
//!   (and logged with `LOG_PAYLOADS=true`, proving the check can see them).
//!
//! The broker restart is in `reliability_broker.rs` (its own binary: it points the harness at a
//! private broker). Event counts scale with `RELIABILITY_SCALE` (default 1; `make soak` uses
//! more). Each scenario prints a `RELIABILITY scenario=… events=… result=pass` line, also
//! appended to the file `RELIABILITY_REPORT` names, if set.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cdc_runtime::dead_letter::header;
use fleet_harness::events::{MemberUpdates, member_key};
use fleet_harness::meili::PrivateMeilisearch;
use fleet_harness::mysql::PrivateMariaDb;
use fleet_harness::process::{KillOnDrop, PrivateRedis, signal, wait_exit, worker_binary};
use fleet_harness::scenario::{
    Lane, MEMBERS, Stream, TIMELINE, WRITER, Worker, fault_free_state, now, report,
    run_through_outage, scale, wait_for,
};
use fleet_harness::state::assert_same_state;
use fleet_harness::{
    Consumed, Out, brokers, client_config, create_topic, existing, produce, producer, redis_uri,
    unique, worker_config,
};

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points() {
    let started = Instant::now();
    let stream = Stream::members(20_000 * scale());
    let lane = Lane::new(cache_invalidation::FAMILY, "kill", &redis_uri(), None).await;
    let (expected, ()) = tokio::join!(
        fault_free_state(cache_invalidation::FAMILY, "kill", &stream),
        lane.prepare(&stream)
    );
    let landed = lane.produce(&stream.records).await;
    let uids: Vec<u64> = stream
        .records
        .iter()
        .map(|(_, o)| {
            let key: serde_json::Value =
                serde_json::from_slice(o.key.as_deref().expect("key")).expect("json");
            key["uid"].as_u64().expect("uid")
        })
        .collect();
    let seeded: Vec<String> = stream.redis.iter().map(|(k, _)| k.clone()).collect();
    let remaining = async || existing(&lane.key_prefix, &seeded).await.expect("keys");

    let rounds = 6 * scale();
    let mut previous = lane.committed();
    let mut kills = 0;
    let untouched = seeded.len() - uids.iter().collect::<BTreeSet<_>>().len();
    let ends: i64 = lane.ends()[0].iter().sum();
    for round in 1..=rounds {
        let before = remaining().await.len();
        // A random point: a batch of 50 takes a few ms, so these land mid-batch.
        let (delay, committed) = lane
            .kill_9_after_first_effect(
                &[("BATCH_MAX_MESSAGES", "50")],
                Duration::from_millis(100),
                &previous,
                async || remaining().await.len() < before,
            )
            .await;
        kills += 1;
        let left = remaining().await;
        for (uid, (_, partition, offset)) in uids.iter().zip(&landed) {
            if *offset < committed[0][*partition as usize] {
                assert!(
                    !left.contains(&member_key(*uid)),
                    "round {round}: offset {offset} of partition {partition} is committed ({committed:?}) but uid {uid} was not applied"
                );
            }
        }
        eprintln!(
            "round {round}: killed {delay:?} after its first effect; committed {:?} of {ends}; {} of {} seeded keys left ({untouched} untouched by the stream)",
            committed[0],
            left.len(),
            seeded.len()
        );
        previous = committed;
        if previous[0].iter().sum::<i64>() >= ends {
            break;
        }
    }

    assert!(kills >= 3, "killed {kills} times");
    lane.finish_with_binary().await;
    assert_eq!(lane.dlq_depth(), 0);
    assert_same_state("kill -9", &lane.state().await, &expected);
    lane.clean_up().await;
    report(
        "kill_9_at_random_points",
        stream.records.len(),
        0,
        started,
        &format!("kills={kills}"),
    );
}

/// The timeline binary killed the same way: its fan-out (fenced Lua scripts) and its writer
/// (row and message identity in one transaction) must neither lose nor repeat an effect.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_the_timeline_at_random_points() {
    let started = Instant::now();
    let stream = Stream::timeline(4_000 * scale());
    let lane = Lane::new(timeline::FAMILY, "kill.tml", &redis_uri(), None).await;
    let (expected, ()) = tokio::join!(
        fault_free_state(timeline::FAMILY, "kill.tml", &stream),
        lane.prepare(&stream)
    );
    let landed = lane.produce(&stream.records).await;
    // Each create's effect includes its fence, `tml:fence:{id}`.
    let creates: Vec<(String, (String, i32, i64))> = stream
        .records
        .iter()
        .zip(&landed)
        .filter(|((t, o), _)| {
            *t == TIMELINE
                && o.value
                    .as_deref()
                    .is_some_and(|v| v.windows(8).any(|w| w == br#""op":"c""#))
        })
        .map(|((_, o), at)| {
            let key: serde_json::Value =
                serde_json::from_slice(o.key.as_deref().expect("key")).expect("json");
            (format!("tml:fence:{}", key["tml_id"]), at.clone())
        })
        .collect();
    let fences: Vec<String> = creates.iter().map(|(f, _)| f.clone()).collect();
    // Each writer message's effect is its row (`tml_memo` = its sign).
    let signs: Vec<(String, (String, i32, i64))> = stream
        .records
        .iter()
        .zip(&landed)
        .filter(|((t, _), _)| *t == WRITER)
        .map(|((_, o), at)| {
            let v: serde_json::Value =
                serde_json::from_slice(o.value.as_deref().expect("value")).expect("json");
            (
                v["message"]["sign"].as_str().expect("sign").to_owned(),
                at.clone(),
            )
        })
        .collect();
    let writer_topic = lane.topic(WRITER);
    let writer_index = lane
        .topics()
        .iter()
        .position(|t| *t == writer_topic)
        .expect("topic");
    let db = lane.db.as_ref().expect("database");
    let timeline_topic = lane.topic(TIMELINE);
    let topic_index = lane
        .topics()
        .iter()
        .position(|t| *t == timeline_topic)
        .expect("topic");
    let total: i64 = lane.ends().iter().flatten().sum();
    let mut previous = lane.committed();
    let mut kills = 0;
    for round in 1..=6 * scale() {
        let fenced = async || existing(&lane.key_prefix, &fences).await.expect("fences");
        let before = fenced().await.len();
        // A random point: a batch of 10 takes a few ms, so these land mid-batch; the window is
        // short so that the stream lasts several rounds (a round of 100 ms did half of it).
        let (delay, committed) = lane
            .kill_9_after_first_effect(
                &[("BATCH_MAX_MESSAGES", "10")],
                Duration::from_millis(25),
                &previous,
                async || fenced().await.len() > before,
            )
            .await;
        kills += 1;
        let fenced = fenced().await;
        for (fence, (_, partition, offset)) in &creates {
            if *offset < committed[topic_index][*partition as usize] {
                assert!(
                    fenced.contains(fence),
                    "round {round}: {timeline_topic}[{partition}]@{offset} is committed ({committed:?}) but {fence} is missing"
                );
            }
        }
        let written: BTreeSet<String> = sqlx::query_scalar("SELECT tml_memo FROM chii_timeline")
            .fetch_all(&db.pool)
            .await
            .expect("rows")
            .into_iter()
            .collect();
        for (sign, (_, partition, offset)) in &signs {
            if *offset < committed[writer_index][*partition as usize] {
                assert!(
                    written.contains(sign),
                    "round {round}: {writer_topic}[{partition}]@{offset} is committed ({committed:?}) but its row ({sign}) is missing"
                );
            }
        }
        let done: i64 = committed.iter().flatten().sum();
        eprintln!(
            "round {round}: killed {delay:?} after its first effect; committed {done} of {total}"
        );
        previous = committed;
        if done >= total {
            break;
        }
    }
    // Each kill lands mid-stream (the loop ends once everything is committed); the timeline
    // worker drains this stream in 3 rounds or so, so at least 2 kills are always mid-stream.
    assert!(kills >= 2, "killed {kills} times");
    lane.finish_with_binary().await;
    assert_eq!(lane.dlq_depth(), 0);
    let state = lane.state().await;
    assert_same_state("kill -9 of the timeline", &state, &expected);
    lane.clean_up().await;
    report(
        "kill_9_the_timeline_at_random_points",
        stream.records.len(),
        0,
        started,
        &format!("kills={kills} state: {}", state.summary()),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_of_20s() {
    let started = Instant::now();
    let stream = Stream::members(3_000 * scale());
    let mut redis = PrivateRedis::start().await.expect("private redis");
    let lane = Lane::new(cache_invalidation::FAMILY, "redis", &redis.uri(), None).await;
    let reference = fault_free_state(cache_invalidation::FAMILY, "redis", &stream);
    let faulty = run_through_outage(&lane, &stream, &mut redis, Duration::from_secs(20));
    let (expected, recovered) = tokio::join!(reference, faulty);
    assert_eq!(lane.dlq_depth(), 0, "zero dead letters");
    assert_same_state("Redis outage", &lane.state().await, &expected);
    lane.clean_up().await;
    report(
        "redis_outage_of_20s",
        stream.records.len(),
        0,
        started,
        &format!(
            "outage=20s ready_again_after={:.1}s",
            recovered.as_secs_f64()
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_outage_of_20s_for_the_timeline() {
    let started = Instant::now();
    let stream = Stream::timeline(1_000 * scale());
    let mut mariadb = PrivateMariaDb::start().await.expect("private MariaDB");
    let lane = Lane::new(timeline::FAMILY, "mariadb", &redis_uri(), Some(&mariadb)).await;
    let reference = fault_free_state(timeline::FAMILY, "mariadb", &stream);
    let faulty = run_through_outage(&lane, &stream, &mut mariadb, Duration::from_secs(20));
    let (expected, recovered) = tokio::join!(reference, faulty);
    assert_eq!(lane.dlq_depth(), 0, "zero dead letters");
    let state = lane.state().await;
    assert!(
        state
            .tables
            .get("chii_timeline")
            .is_some_and(|r| !r.is_empty()),
        "the writer wrote rows"
    );
    assert_same_state("MariaDB outage", &state, &expected);
    lane.clean_up().await;
    report_outage(
        "mariadb_outage_of_20s_for_the_timeline",
        &stream,
        started,
        recovered,
        &state,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_outage_of_20s_for_subject_date() {
    let started = Instant::now();
    let stream = Stream::subjects(1_000 * scale());
    let mut mariadb = PrivateMariaDb::start().await.expect("private MariaDB");
    let lane = Lane::new(
        subject_date::FAMILY,
        "sd-mariadb",
        &redis_uri(),
        Some(&mariadb),
    )
    .await;
    let reference = fault_free_state(subject_date::FAMILY, "sd-mariadb", &stream);
    let faulty = run_through_outage(&lane, &stream, &mut mariadb, Duration::from_secs(20));
    let (expected, recovered) = tokio::join!(reference, faulty);
    assert_eq!(lane.dlq_depth(), 0, "zero dead letters");
    let state = lane.state().await;
    let dated = state.tables.get("chii_subject_fields").map_or(0, |rows| {
        rows.iter()
            .filter(|row| !row.contains("0000-00-00"))
            .count()
    });
    assert_eq!(dated, stream.subjects.len(), "every subject dated");
    assert_same_state("MariaDB outage (subject-date)", &state, &expected);
    lane.clean_up().await;
    report_outage(
        "mariadb_outage_of_20s_for_subject_date",
        &stream,
        started,
        recovered,
        &state,
    );
}

/// An outage scenario's result line: no dead letters, how long the worker took to be ready again.
fn report_outage(
    scenario: &str,
    stream: &Stream,
    started: Instant,
    recovered: Duration,
    state: &fleet_harness::state::State,
) {
    report(
        scenario,
        stream.records.len(),
        0,
        started,
        &format!(
            "outage=20s ready_again_after={:.1}s state: {}",
            recovered.as_secs_f64(),
            state.summary()
        ),
    );
}

/// Meilisearch taken away for 20 s while the search family indexes subjects: killed (`-9`, then
/// restarted on its data) or paused (`SIGSTOP`, requests hang until they time out).
async fn meilisearch_outage_for_search(scenario: &str, pause: bool) {
    let started = Instant::now();
    let stream = Stream::subjects(1_000 * scale());
    let mut meilisearch = PrivateMeilisearch::start()
        .await
        .expect("private Meilisearch");
    let lane = Lane::new(search::FAMILY, scenario, &redis_uri(), None)
        .await
        .with_meilisearch_at(&meilisearch.url());
    let reference = fault_free_state(search::FAMILY, scenario, &stream);
    let faulty = async {
        if pause {
            run_through_outage(
                &lane,
                &stream,
                &mut Paused(&mut meilisearch),
                Duration::from_secs(20),
            )
            .await
        } else {
            run_through_outage(&lane, &stream, &mut meilisearch, Duration::from_secs(20)).await
        }
    };
    let (expected, recovered) = tokio::join!(reference, faulty);
    assert_eq!(lane.dlq_depth(), 0, "zero dead letters");
    let state = lane.state().await;
    assert_eq!(
        state.tables.get("meilisearch subjects").map_or(0, Vec::len),
        stream.subjects.len(),
        "every subject indexed"
    );
    assert_same_state(scenario, &state, &expected);
    lane.clean_up().await;
    report_outage(scenario, &stream, started, recovered, &state);
}

/// A paused server: taken away by `SIGSTOP`, back by `SIGCONT`.
struct Paused<'a>(&'a mut PrivateMeilisearch);

impl fleet_harness::scenario::Dependency for Paused<'_> {
    const NAME: &'static str = "Meilisearch (paused)";
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.0.pause()
    }
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.0.resume()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn meilisearch_killed_for_20s_for_search() {
    meilisearch_outage_for_search("meilisearch_killed_for_20s_for_search", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn meilisearch_paused_for_20s_for_search() {
    meilisearch_outage_for_search("meilisearch_paused_for_20s_for_search", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rebalance_1_3_1_under_load() {
    rebalance_1_3_1(
        "rebalance_1_3_1_under_load",
        cache_invalidation::FAMILY,
        Stream::members(9_000 * scale()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rebalance_1_3_1_under_load_for_the_timeline() {
    rebalance_1_3_1(
        "rebalance_1_3_1_under_load_for_the_timeline",
        timeline::FAMILY,
        Stream::timeline(1_500 * scale()),
    )
    .await;
}

/// `scenario`: a group of `family` going 1 → 3 → 1 consumers while `stream` flows (in about 90
/// chunks, a little apart): records move between consumers mid-batch, so some are delivered
/// twice and out of their first order; the consumers that joined take records; zero dead
/// letters, and the final state equals the fault-free run's.
async fn rebalance_1_3_1(scenario: &str, family: &str, stream: Stream) {
    let started = Instant::now();
    let lane = Lane::new(family, "rebalance", &redis_uri(), None).await;
    let reference = fault_free_state(family, "rebalance", &stream);
    let faulty = async {
        lane.prepare(&stream).await;
        let slow = ["--batch-max-messages", "20"];
        let flowing = Arc::new(AtomicBool::new(true));
        let a = lane.start(&slow).await;
        // Events flow the whole time: about 90 chunks, a little apart.
        let producing = async {
            let producer = producer().expect("producer");
            for chunk in stream.records.chunks((stream.records.len() / 90).max(1)) {
                lane.produce_with(&producer, chunk).await;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            flowing.store(false, Ordering::SeqCst);
        };
        let scaling = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let b = lane.start(&slow).await;
            let c = lane.start(&slow).await;
            let took = |w: &Worker| {
                w.running
                    .health
                    .dispatched
                    .load(std::sync::atomic::Ordering::Relaxed)
            };
            // Joining takes a rebalance (seconds on tansu, more on a loaded machine): scale
            // back once a joined consumer has taken records, and a little later.
            wait_for(
                "a joined consumer takes records",
                Duration::from_secs(60),
                async || took(&b) + took(&c) > 0,
            )
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let still_flowing = flowing.load(Ordering::SeqCst);
            let (b_took, c_took) = (took(&b), took(&c));
            b.stop().await;
            c.stop().await;
            (still_flowing, b_took, c_took)
        };
        let ((), (still_flowing, b_took, c_took)) = tokio::join!(producing, scaling);
        lane.drained().await;
        a.stop().await;
        (still_flowing, b_took, c_took)
    };
    let (expected, (still_flowing, b_took, c_took)) = tokio::join!(reference, faulty);
    assert!(
        b_took + c_took > 0,
        "the consumers that joined took part (b {b_took}, c {c_took})"
    );
    assert_eq!(lane.dlq_depth(), 0, "nothing dead-lettered");
    assert_eq!(
        lane.committed(),
        lane.ends(),
        "every partition committed to its end"
    );
    assert_same_state("rebalance 1 → 3 → 1", &lane.state().await, &expected);
    lane.clean_up().await;
    report(
        scenario,
        stream.records.len(),
        0,
        started,
        &format!(
            "joined_consumers_took={b_took}+{c_took} events_still_flowing_when_scaled_back={still_flowing} state: {}",
            expected.summary()
        ),
    );
}

/// The poison kinds, each a (name, key, value) maker; the stage each fails at.
fn poison_kinds(template: &str) -> Vec<(&'static str, Vec<u8>, Vec<u8>, &'static str)> {
    let oversize = {
        // Malformed JSON larger than the DLQ producer's message.max.bytes (1 MB).
        let mut v = br#"{"before":{"uid":7},"after":""#.to_vec();
        v.extend(std::iter::repeat_n(b'x', 1_200_000));
        v
    };
    vec![
        (
            "malformed json",
            br#"{"uid":7}"#.to_vec(),
            br#"{"before":{"uid":7},"after":"#.to_vec(),
            "decode",
        ),
        (
            "invalid utf-8",
            br#"{"uid":7}"#.to_vec(),
            b"{\"op\":\"u\",\"x\":\"\xff\xfe\"}".to_vec(),
            "decode",
        ),
        (
            "wrong column type",
            br#"{"uid":"seven"}"#.to_vec(),
            {
                let mut v: serde_json::Value = serde_json::from_str(template).expect("json");
                v["before"]["uid"] = "seven".into();
                v["after"]["uid"] = "seven".into();
                v.to_string().into_bytes()
            },
            "apply",
        ),
        (
            "unknown op",
            br#"{"uid":7}"#.to_vec(),
            template.replace(r#""op":"u""#, r#""op":"x""#).into_bytes(),
            "decode",
        ),
        ("oversize", br#"{"uid":7}"#.to_vec(), oversize, "decode"),
        (
            "avro with unknown schema id",
            br#"{"uid":7}"#.to_vec(),
            vec![0, 0, 0, 0x7f, 0x42, 2, 4, 6],
            "decode",
        ),
    ]
}

/// A real `chii_members` update as text, for poison records made from it.
fn member_update_text() -> String {
    String::from_utf8(
        MemberUpdates::load()
            .expect("template")
            .event(9, 1)
            .value
            .expect("value"),
    )
    .expect("utf8")
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_interleaved_with_good_events() {
    let started = Instant::now();
    let good = Stream::members(600 * scale());
    let template = member_update_text();
    let kinds = poison_kinds(&template);
    // Each kind three times, spread over the stream and over the partitions.
    let mut stream = good.clone();
    let every = good.records.len() / (kinds.len() * 3 + 1);
    let mut n = 0;
    for round in 0..3 {
        for (why, key, value, _) in &kinds {
            n += 1;
            let at = (n * every + n - 1).min(stream.records.len());
            stream.records.insert(
                at,
                (
                    MEMBERS,
                    Out {
                        partition: Some(((n + round) % 3) as i32),
                        key: Some(key.clone()),
                        value: Some(value.clone()),
                        headers: vec![("test.poison".into(), why.as_bytes().to_vec())],
                        timestamp_ms: None,
                    },
                ),
            );
        }
    }
    let lane = Lane::new(cache_invalidation::FAMILY, "poison", &redis_uri(), None).await;
    let reference = fault_free_state(cache_invalidation::FAMILY, "poison", &good);
    let faulty = async {
        lane.prepare(&stream).await;
        // The oversize record needs a producer allowing it (the worker's DLQ producer does not).
        let big = client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.max.bytes", "4000000")
            .create()
            .expect("producer");
        let landed = lane.produce_with(&big, &stream.records).await;
        let worker = lane.start(&[]).await;
        lane.drained().await;
        worker.stop().await;
        landed
    };
    let (expected, landed) = tokio::join!(reference, faulty);

    let mut letters = lane.dead_letters();
    let coordinates = |l: &Consumed| {
        (
            l.header(header::ORIGINAL_PARTITION)
                .and_then(|p| p.parse::<i32>().ok()),
            l.header(header::ORIGINAL_OFFSET)
                .and_then(|o| o.parse::<i64>().ok()),
        )
    };
    letters.sort_by_key(coordinates);
    let mut poisoned: Vec<(&Out, (i32, i64))> = stream
        .records
        .iter()
        .zip(&landed)
        .filter(|((_, r), _)| r.headers.iter().any(|(k, _)| k == "test.poison"))
        .map(|((_, r), (_, p, o))| (r, (*p, *o)))
        .collect();
    poisoned.sort_by_key(|(_, at)| *at);
    assert_eq!(
        letters.iter().map(coordinates).collect::<Vec<_>>(),
        poisoned
            .iter()
            .map(|(_, (p, o))| (Some(*p), Some(*o)))
            .collect::<Vec<_>>(),
        "exactly the poison is dead-lettered"
    );
    for (letter, (original, (partition, offset))) in letters.iter().zip(&poisoned) {
        let why = letter.header("test.poison").expect("original header kept");
        let stage = kinds
            .iter()
            .find(|k| k.0 == why)
            .map(|k| k.3)
            .expect("kind");
        assert_eq!(letter.key, original.key, "{why}: key byte-identical");
        if why == "oversize" {
            assert_eq!(letter.value, None, "{why}: body dropped");
            assert_eq!(letter.header(header::DROPPED).as_deref(), Some("value"));
            assert_eq!(
                letter.header(header::ORIGINAL_VALUE_SIZE),
                original.value.as_ref().map(|v| v.len().to_string()),
                "{why}"
            );
        } else {
            assert_eq!(letter.value, original.value, "{why}: value byte-identical");
            assert_eq!(letter.header(header::DROPPED), None, "{why}");
        }
        let expect = [
            (header::ORIGINAL_TOPIC, lane.topic(MEMBERS)),
            (header::ORIGINAL_PARTITION, partition.to_string()),
            (header::ORIGINAL_OFFSET, offset.to_string()),
            (header::ERROR_CLASS, "permanent".into()),
            (header::ERROR_STAGE, stage.into()),
            (header::ATTEMPTS, "1".into()),
            (header::WORKER, cache_invalidation::FAMILY.into()),
            (header::GROUP, lane.group.clone()),
        ];
        for (name, value) in expect {
            assert_eq!(letter.header(name), Some(value), "{why}: {name}");
        }
        for name in [header::ORIGINAL_TIMESTAMP, header::FAILED_AT] {
            assert!(
                letter
                    .header(name)
                    .is_some_and(|t| t.parse::<i64>().is_ok()),
                "{why}: {name}"
            );
        }
        let message = letter.header(header::ERROR_MESSAGE).unwrap_or_default();
        assert!(!message.is_empty(), "{why}");
        if why == "wrong column type" {
            assert!(message.contains("uid"), "{why} names the column: {message}");
        }
        if why == "avro with unknown schema id" {
            assert!(message.contains("32578"), "{why}: names the id: {message}");
        }
    }
    assert_eq!(
        lane.committed(),
        lane.ends(),
        "every partition moved past its poison"
    );
    assert_same_state("poison interleaved", &lane.state().await, &expected);
    // `show` prints a letter whose body was dropped as such, with the original's size.
    let shown = lane.dlq(&[
        "show",
        "--family",
        cache_invalidation::FAMILY,
        "--limit",
        "100",
    ]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    let oversize = poisoned
        .iter()
        .filter(|(o, _)| o.headers.iter().any(|(_, v)| v == b"oversize"))
        .map(|(o, _)| o.value.as_ref().map_or(0, Vec::len))
        .collect::<Vec<_>>();
    assert!(!oversize.is_empty(), "the stream has an oversize record");
    for size in &oversize {
        assert!(
            shown.contains(&format!(
                "body   dropped, too large for the DLQ (value, value {size} bytes)"
            )),
            "{shown}"
        );
    }
    // A replay puts the poison through the handler again, and it fails again; the letters whose
    // body was dropped are replayed from their source coordinates.
    let out = lane.dlq(&["replay", "--family", cache_invalidation::FAMILY]);
    assert_eq!(out.status.code(), Some(3), "the poison failed again");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("left pending"),
        "no letter left pending"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{} failed again", poisoned.len())),
        "every letter replayed, oversize ones from their source"
    );
    lane.clean_up().await;
    report(
        "poison_interleaved_with_good_events",
        stream.records.len(),
        letters.len(),
        started,
        &format!("poison={} kinds={}", poisoned.len(), kinds.len()),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_dlq_topic_makes_the_partition_wait() {
    const POISONED: i32 = 1;
    let started = Instant::now();
    let good = Stream::members(600 * scale());
    let template = member_update_text();
    let (why, key, value, _) = poison_kinds(&template)
        .into_iter()
        .find(|k| k.0 == "wrong column type")
        .expect("kind");
    let mut stream = good.clone();
    let poison_at = stream.records.len() / 2;
    stream.records.insert(
        poison_at,
        (
            MEMBERS,
            Out {
                partition: Some(POISONED),
                key: Some(key),
                value: Some(value),
                headers: vec![("test.poison".into(), why.as_bytes().to_vec())],
                timestamp_ms: None,
            },
        ),
    );
    let mut lane = Lane::new(cache_invalidation::FAMILY, "dlq.late", &redis_uri(), None).await;
    // tansu creates a missing topic on a producer's metadata request unless the client says
    // `allow.auto.create.topics=false` (then: UNKNOWN_TOPIC_OR_PART, and a produce times out).
    // So the worker gets that setting, and a DLQ name nothing has created yet.
    lane.family.dlq = format!("{}.late", lane.family.dlq);
    // One record per batch, so the poisoned partition commits exactly up to its poison.
    let no_auto_create = [
        "--kafka-config",
        "allow.auto.create.topics=false",
        "--batch-max-messages",
        "1",
    ];
    let reference = fault_free_state(cache_invalidation::FAMILY, "dlq.late", &good);
    let faulty = async {
        lane.prepare(&stream).await;
        let landed = lane.produce(&stream.records).await;
        let (_, _, poison_offset) = landed[poison_at].clone();
        let worker = lane.start(&no_auto_create).await;
        let members = lane
            .topics()
            .iter()
            .position(|t| t.ends_with(MEMBERS))
            .expect("members topic");
        let ends = lane.ends();
        // The other partitions drain; the poisoned one commits up to its poison, no further.
        wait_for(
            "the other partitions drained, the poisoned one committed up to its poison",
            Duration::from_secs(120),
            async || {
                let committed = lane.committed();
                (0..lane.family.partitions).all(|p| {
                    let p = p as usize;
                    if p == POISONED as usize {
                        committed[members][p] == poison_offset
                    } else {
                        committed[members][p] == ends[members][p]
                    }
                })
            },
        )
        .await;
        // Its dead letter failed (the produce timed out): the partition is paused, not ready.
        wait_for(
            "the worker not ready",
            Duration::from_secs(120),
            async || !worker.ready().await,
        )
        .await;
        let committed = lane.committed();
        let uids_at = |keep: &dyn Fn(i64) -> bool| -> BTreeSet<String> {
            stream
                .records
                .iter()
                .zip(&landed)
                .filter(|(_, (_, p, o))| *p == POISONED && keep(*o))
                .filter(|((_, r), _)| !r.headers.iter().any(|(k, _)| k == "test.poison"))
                .map(|((_, r), _)| {
                    let key: serde_json::Value =
                        serde_json::from_slice(r.key.as_deref().expect("key")).expect("json");
                    member_key(key["uid"].as_u64().expect("uid"))
                })
                .collect()
        };
        // Nothing after the poison applied: the keys only later records delete are all there.
        let later: Vec<String> = uids_at(&|o| o > poison_offset)
            .difference(&uids_at(&|o| o < poison_offset))
            .cloned()
            .collect();
        assert!(!later.is_empty(), "records after the poison");
        assert_eq!(
            existing(&lane.key_prefix, &later)
                .await
                .expect("keys")
                .len(),
            later.len(),
            "a record after the poison was applied while it waited"
        );
        // The DLQ appears: the poison is dead-lettered and the partition goes on.
        create_topic(&lane.family.dlq, lane.family.partitions)
            .await
            .expect("create the DLQ");
        lane.drained().await;
        wait_for(
            "the worker ready again",
            Duration::from_secs(60),
            async || worker.ready().await,
        )
        .await;
        worker.stop().await;
        (landed[poison_at].clone(), committed, ends)
    };
    let (expected, ((_, partition, offset), committed_while_waiting, ends)) =
        tokio::join!(reference, faulty);
    let letters = lane.dead_letters();
    assert_eq!(letters.len(), 1, "exactly the poison dead-lettered");
    let letter = &letters[0];
    for (name, value) in [
        (header::ORIGINAL_TOPIC, lane.topic(MEMBERS)),
        (header::ORIGINAL_PARTITION, partition.to_string()),
        (header::ORIGINAL_OFFSET, offset.to_string()),
        (header::ERROR_STAGE, "apply".into()),
    ] {
        assert_eq!(letter.header(name), Some(value), "{name}");
    }
    assert_eq!(lane.committed(), lane.ends(), "every partition at its end");
    assert_same_state(
        "unavailable DLQ, then created",
        &lane.state().await,
        &expected,
    );
    lane.clean_up().await;
    report(
        "an_unavailable_dlq_topic_makes_the_partition_wait",
        stream.records.len(),
        letters.len(),
        started,
        &format!(
            "poison_at={partition}/{offset} committed_while_waiting={committed_while_waiting:?} ends={ends:?}"
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_redeliveries_and_an_old_dlq_replay_change_nothing() {
    let started = Instant::now();
    let stream = Stream::timeline(1_000 * scale());
    let lane = Lane::new(timeline::FAMILY, "dup", &redis_uri(), None).await;
    let reference = fault_free_state(timeline::FAMILY, "dup", &stream);
    let faulty = async {
        lane.prepare(&stream).await;
        // Every Debezium event twice in a row (a connector restart redelivers this way); the
        // writer's messages once: a second copy is a new message to it (identity = coordinates).
        let doubled: Vec<(&'static str, Out)> = stream
            .records
            .iter()
            .flat_map(|r| {
                if r.0 == TIMELINE {
                    vec![r.clone(), r.clone()]
                } else {
                    vec![r.clone()]
                }
            })
            .collect();
        let landed = lane.produce(&doubled).await;
        let worker = lane.start(&[]).await;
        lane.drained().await;
        worker.stop().await;
        // Every offset again, to a new group (a rewind, or a group whose commits were lost).
        let again = unique("it.rel.dup.again");
        let worker = lane.start_in(&again, &[]).await;
        lane.drained_in(&again, Duration::from_secs(120)).await;
        worker.stop().await;
        (doubled, landed)
    };
    let (expected, (doubled, landed)) = tokio::join!(reference, faulty);
    let after_redelivery = lane.state().await;
    assert_same_state("duplicates and redelivery", &after_redelivery, &expected);

    // Old events back from the DLQ after newer ones were applied: the creates of every deleted
    // item and every writer message, as dead letters of their first delivery.
    let deleted: BTreeSet<Vec<u8>> = stream
        .records
        .iter()
        .filter(|(t, o)| {
            *t == TIMELINE
                && o.value
                    .as_deref()
                    .is_some_and(|v| v.windows(8).any(|w| w == br#""op":"d""#))
        })
        .filter_map(|(_, o)| o.key.clone())
        .collect();
    let mut seen = BTreeSet::new();
    let letters: Vec<Out> = doubled
        .iter()
        .zip(&landed)
        .filter(|((t, o), _)| {
            let is_old_create = *t == TIMELINE
                && o.key.as_ref().is_some_and(|k| deleted.contains(k))
                && o.value
                    .as_deref()
                    .is_some_and(|v| v.windows(8).any(|w| w == br#""op":"c""#));
            (is_old_create || *t == WRITER)
                && seen.insert((t.to_owned(), o.key.clone(), o.value.clone()))
        })
        .map(|((_, o), (topic, partition, offset))| {
            let mut headers = o.headers.clone();
            for (k, v) in [
                (header::ORIGINAL_TOPIC, topic.clone()),
                (header::ORIGINAL_PARTITION, partition.to_string()),
                (header::ORIGINAL_OFFSET, offset.to_string()),
                (header::ERROR_CLASS, "permanent".into()),
                (header::ERROR_STAGE, "apply".into()),
                (
                    header::ERROR_MESSAGE,
                    "injected by the reliability suite".into(),
                ),
                (header::ATTEMPTS, "1".into()),
                (header::WORKER, timeline::FAMILY.into()),
                (header::GROUP, lane.group.clone()),
                (header::FAILED_AT, (now() * 1000).to_string()),
            ] {
                headers.push((k.to_owned(), v.into_bytes()));
            }
            Out {
                partition: None,
                key: o.key.clone(),
                value: o.value.clone(),
                headers,
                timestamp_ms: None,
            }
        })
        .collect();
    // One record per batch: the dlq tool reads up to the end tansu reports (see client_config).
    let one_by_one = client_config()
        .set("enable.idempotence", "true")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    produce(&one_by_one, &lane.family.dlq, &letters)
        .await
        .expect("produce letters");
    let out = lane.dlq(&["replay", "--family", timeline::FAMILY]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "replay succeeded");
    assert!(
        stdout.contains(&format!("replayed {} letter(s)", letters.len()))
            && stdout.contains("0 failed again"),
        "every letter replayed, none failed again: {stdout}"
    );
    assert_eq!(
        lane.dlq_depth(),
        letters.len() as i64,
        "the replay added no dead letters"
    );
    assert_same_state("old DLQ replay", &lane.state().await, &expected);
    lane.clean_up().await;
    report(
        "duplicates_redeliveries_and_an_old_dlq_replay_change_nothing",
        doubled.len() * 2 + letters.len(),
        0,
        started,
        &format!(
            "stream={} delivered_twice_then_redelivered={} replayed_old={} state: {}",
            stream.records.len(),
            doubled.len(),
            letters.len(),
            expected.summary()
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_payloads_stay_out_of_logs() {
    let started = Instant::now();
    let secrets = [
        unique("sasl-password-secret"),
        unique("ssl-key-password-secret"),
        unique("mysql-password-secret"),
        unique("redis-password-secret"),
    ];
    let canary = unique("PAYLOAD-CANARY");
    let secure_env = |cmd: &mut Command| {
        cmd.env("KAFKA_SECURITY_PROTOCOL", "plaintext")
            .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
            .env("KAFKA_SASL_USERNAME", "fleet-user")
            .env("KAFKA_SASL_PASSWORD", &secrets[0])
            .env(
                "KAFKA_SSL_CA_LOCATION",
                "/etc/ssl/certs/ca-certificates.crt",
            )
            .env("KAFKA_CONFIG__SSL_KEY_PASSWORD", &secrets[1])
            .env("MYSQL_PASS", &secrets[2]);
    };

    // Accepted and passed through to librdkafka.
    let family = cdc_topics::by_name(cache_invalidation::FAMILY)
        .expect("topics")
        .expect("family");
    let config = worker_config(
        &family,
        "",
        "",
        "g",
        &[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            "fleet-user",
            "--kafka-sasl-password",
            &secrets[0],
            "--kafka-ssl-ca-location",
            "/etc/ssl/certs/ca-certificates.crt",
            "--kafka-config",
            &format!("ssl.key.password={}", secrets[1]),
        ],
    )
    .expect("SASL/SSL settings accepted");
    let properties = config.kafka_properties();
    for (name, value) in [
        ("security.protocol", "sasl_ssl"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "fleet-user"),
        ("sasl.password", secrets[0].as_str()),
        ("ssl.ca.location", "/etc/ssl/certs/ca-certificates.crt"),
        ("ssl.key.password", secrets[1].as_str()),
    ] {
        assert_eq!(
            properties.get(name).map(String::as_str),
            Some(value),
            "{name} passed through"
        );
    }

    // `--print-config`: accepted, secrets masked.
    let mut print = Command::new(worker_binary(cache_invalidation::FAMILY).expect("binary"));
    print.arg("--print-config").env(
        "REDIS_URI",
        format!("redis://fleet:{}@127.0.0.1:6379/0", secrets[3]),
    );
    secure_env(&mut print);
    let out = print.output().expect("--print-config");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        printed.contains("fleet-user"),
        "settings printed: {printed}"
    );
    for secret in &secrets {
        assert!(
            !printed.contains(secret.as_str()),
            "{secret} leaked:\n{printed}"
        );
    }

    // A run over poison with a distinctive payload: the logs name the failures, never the
    // payload or a secret; with LOG_PAYLOADS=true the payload is there (the check can see it).
    let lane = Lane::new(cache_invalidation::FAMILY, "secrets", &redis_uri(), None).await;
    let template = MemberUpdates::load().expect("template");
    let mut records = template.events(1..=20);
    for i in 0..5 {
        records.push(Out {
            key: Some(format!("{{\"uid\":{i}}}").into_bytes()),
            value: Some(format!("{{\"op\":\"u\",\"after\":\"{canary}").into_bytes()),
            ..Out::default()
        });
    }
    let records: Vec<(&'static str, Out)> = records.into_iter().map(|o| (MEMBERS, o)).collect();
    lane.produce(&records).await;
    let run = async |group: &str, log_payloads: bool| -> String {
        let log = std::env::temp_dir().join(format!("{}.log", unique("rel-secrets")));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(worker_binary(cache_invalidation::FAMILY).expect("binary"));
        cmd.env("KAFKA_BROKERS", brokers())
            .env("KAFKA_CONFIG__BATCH_NUM_MESSAGES", "1")
            .env("KAFKA_TOPIC_PREFIX", &lane.topic_prefix)
            .env("KAFKA_GROUP_ID", group)
            .env("REDIS_URI", redis_uri())
            .env("REDIS_KEY_PREFIX", &lane.key_prefix)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("COMMIT_INTERVAL", "100ms")
            .env("KAFKA_CONFIG__SESSION_TIMEOUT_MS", "2000")
            .env("KAFKA_CONFIG__HEARTBEAT_INTERVAL_MS", "500")
            .env("LOG_PAYLOADS", log_payloads.to_string())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        secure_env(&mut cmd);
        let mut child = KillOnDrop(cmd.spawn().expect("spawn"));
        lane.drained_in(group, Duration::from_secs(60)).await;
        signal(&child, "TERM").expect("term");
        let status = wait_exit(&mut child, Duration::from_secs(20))
            .await
            .expect("wait")
            .expect("exited");
        assert!(status.success(), "worker exit {status:?}");
        let text = std::fs::read_to_string(&log).expect("log");
        let _ = std::fs::remove_file(&log);
        text
    };
    let quiet = run(&unique("it.rel.secrets.quiet"), false).await;
    assert!(
        quiet.contains("dead-lettering record"),
        "the failures are logged:\n{quiet}"
    );
    assert!(
        !quiet.contains(&canary),
        "a payload was logged without LOG_PAYLOADS:\n{quiet}"
    );
    for secret in &secrets {
        assert!(
            !quiet.contains(secret.as_str()),
            "{secret} in the log:\n{quiet}"
        );
    }
    let verbose = run(&unique("it.rel.secrets.verbose"), true).await;
    assert!(
        verbose.contains(&canary),
        "LOG_PAYLOADS=true logs payloads:\n{verbose}"
    );
    for secret in &secrets {
        assert!(
            !verbose.contains(secret.as_str()),
            "{secret} in the log:\n{verbose}"
        );
    }
    lane.clean_up().await;
    report(
        "secrets_and_payloads_stay_out_of_logs",
        records.len(),
        2 * 5,
        started,
        &format!(
            "log_lines={}+{}",
            quiet.lines().count(),
            verbose.lines().count()
        ),
    );
}
