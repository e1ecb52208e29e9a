//! The notify family against the real broker and MariaDB, through its binary (bangumi-behaviour §3.2):
//!
//! - golden: the messages of `fixtures/expected/notify-input.json` end as `notify.json` says
//!   (written by `notify.py` from server-private's sources, not from this code): every privacy
//!   value, the blocklist, self-notifications, a new field against an existing one of the same
//!   hash and id, each type's hash, the counter, and exactly the bad messages dead-lettered
//!   (one of them by MariaDB, refusing a value out of its column's range: alone, the rest of
//!   its batch written);
//! - exactly once: every message delivered a second time (a new consumer group reads the topic
//!   from the start) changes nothing; a dead letter whose cause is fixed is applied by `dlq
//!   replay` once, though the DLQ holds it twice, and its original record, delivered again,
//!   stays applied once (the replay recorded its first identity);
//! - `kill -9` at random points mid-stream: no notification lost or repeated, no counter
//!   raised twice;
//! - shadow mode: the golden notifications planned, nothing written.

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_harness::notify::{
    Expected, Input, Message, State, add_memberfields, add_members, state,
};
use fleet_harness::process::{KillOnDrop, worker_command};
use fleet_harness::scenario::Lane;
use fleet_harness::{Out, redis_uri, unique, wait_drained};

const TOPIC: &str = "notify.v1";

/// The lane's binary in consumer group `group`, until it committed every partition's end (of
/// those holding records: the topic uses partition 0 only);
/// then stopped with SIGTERM.
async fn run_in_group(lane: &Lane, group: &str) {
    run(lane, group, None).await;
}

/// [`run_in_group`]; with `shadow_plans`, in shadow mode writing its plans there (and drained
/// in the group `<group>.shadow`).
async fn run(lane: &Lane, group: &str, shadow_plans: Option<&std::path::Path>) {
    let db = lane.db.as_ref().expect("database");
    let mut cmd = worker_command(
        "notify",
        &lane.topic_prefix,
        group,
        "redis://unused",
        "unused:",
    )
    .expect("the notify binary");
    cmd.env("MYSQL_DB", &db.name);
    let mut drained_group = group.to_owned();
    if let Some(plans) = shadow_plans {
        cmd.env("RUN_MODE", "shadow").env("SHADOW_PLANS_DIR", plans);
        drained_group = format!("{group}.shadow");
    }
    let mut child = KillOnDrop(cmd.spawn().expect("spawn notify"));
    wait_drained(
        &drained_group,
        &lane.topics(),
        lane.family.partitions,
        Duration::from_secs(120),
    )
    .await
    .expect("drained");
    child.terminate().await.expect("stopped");
}

/// The original offsets of the lane's dead letters (partition 0 of the topic), sorted.
fn dead_lettered_offsets(lane: &Lane) -> Vec<i64> {
    let mut offsets: Vec<i64> = lane
        .dead_letters()
        .iter()
        .map(|l| {
            l.header("cdc.dlq.original.offset")
                .expect("original offset")
                .parse()
                .expect("offset")
        })
        .collect();
    offsets.sort();
    offsets
}

/// In shadow mode (`RUN_MODE=shadow`) the golden messages' notifications are planned, each
/// batch's transaction rolled back: no table changes, nothing goes to the DLQ, and the plans
/// hold exactly the golden notifications and the bad messages' dead letters.
#[tokio::test(flavor = "multi_thread")]
async fn shadow_plans_the_golden_notifications_and_writes_none() {
    let input = Input::load().expect("input");
    let expected = Expected::load().expect("expected");
    let lane = Lane::new(notify::FAMILY, "notify.shadow", &redis_uri(), None).await;
    let db = lane.db.as_ref().expect("database");
    input.seed(db).await.expect("seed");
    let before = state(db).await.expect("state");
    let records: Vec<(&'static str, Out)> =
        input.messages.iter().map(|m| (TOPIC, m.out())).collect();
    lane.produce(&records).await;
    let plans = std::env::temp_dir().join(unique("notify-shadow-plans"));
    run(&lane, &lane.group, Some(&plans)).await;

    assert_eq!(state(db).await.expect("state"), before, "nothing written");
    assert!(
        lane.dead_letters().is_empty(),
        "nothing produced to the DLQ"
    );
    let text = std::fs::read_to_string(plans.join("notify.plans.jsonl")).expect("plans");
    let mut planned = Vec::new();
    let mut dead_letters = Vec::new();
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        for effect in line["effects"].as_array().expect("effects") {
            let row = &effect["value"];
            let n = |name: &str| row[name].as_u64().expect(name);
            match (effect["kind"].as_str(), effect["key"].as_str()) {
                (Some("insert"), Some("chii_notify")) => planned.push((
                    n("nt_uid"),
                    n("nt_from_uid"),
                    1,
                    n("nt_type"),
                    n("ntf_hash"),
                    n("ntf_rid"),
                    n("nt_related_id"),
                    n("nt_dateline"),
                )),
                (Some("update"), Some("chii_members")) => {}
                (Some("dead_letter"), _) => {
                    dead_letters.push(line["offset"].as_u64().expect("offset") as usize)
                }
                _ => panic!("unexpected effect {effect}"),
            }
        }
    }
    // The rows as stored, without their field's title (the field's, not the message's).
    let untitled =
        |n: &fleet_harness::notify::Notification| (n.0, n.1, n.2, n.3, n.4, n.5, n.7, n.8);
    let mut want: Vec<_> = expected.state.chii_notify.iter().map(untitled).collect();
    for existing in before.chii_notify.iter().map(untitled) {
        if let Some(at) = want.iter().position(|n| *n == existing) {
            want.remove(at);
        }
    }
    want.sort();
    planned.sort();
    assert_eq!(planned, want, "the golden notifications, planned");
    dead_letters.sort();
    assert_eq!(
        dead_letters,
        expected.dead_lettered(),
        "the bad messages' dead letters, planned"
    );
    let _ = std::fs::remove_dir_all(&plans);
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_then_a_redelivery_and_a_dlq_replay_apply_each_message_once() {
    let input = Input::load().expect("input");
    let expected = Expected::load().expect("expected");
    let lane = Lane::new(notify::FAMILY, "notify.golden", &redis_uri(), None).await;
    let db = lane.db.as_ref().expect("database");
    input.seed(db).await.expect("seed");
    let records: Vec<(&'static str, Out)> =
        input.messages.iter().map(|m| (TOPIC, m.out())).collect();
    let landed = lane.produce(&records).await;
    assert!(
        landed
            .iter()
            .enumerate()
            .all(|(i, (_, p, o))| *p == 0 && *o == i as i64),
        "message i at offset i of partition 0"
    );

    run_in_group(&lane, &lane.group).await;
    assert_eq!(
        state(db).await.expect("state"),
        expected.state,
        "after one delivery"
    );
    let bad: Vec<i64> = expected.dead_lettered().iter().map(|i| *i as i64).collect();
    assert_eq!(
        dead_lettered_offsets(&lane),
        bad,
        "exactly the bad messages are dead-lettered"
    );
    for letter in lane.dead_letters() {
        let offset: usize = letter
            .header("cdc.dlq.original.offset")
            .and_then(|o| o.parse().ok())
            .expect("offset");
        let error = letter
            .header("cdc.dlq.error.message")
            .expect("error message");
        let m: &Message = &input.messages[offset];
        let names = if m.raw_hex.is_some() {
            "not a protobuf mq.v1.Notify".to_owned()
        } else if m.from_user_id > 16_777_215 {
            "nt_from_uid".to_owned()
        } else if notify::rules::hash_of(m.kind).is_none() {
            format!("notify type {} has no settings entry", m.kind)
        } else {
            format!("user {}", m.user_id)
        };
        assert!(
            error.contains(&names),
            "message {offset} ({}): {error}",
            m.note
        );
    }
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cdc_applied_messages")
        .fetch_one(&db.pool)
        .await
        .expect("identities");
    assert_eq!(
        recorded as usize,
        expected
            .outcomes
            .iter()
            .filter(|o| o.outcome == "applied")
            .count(),
        "each applied message's identity is recorded"
    );

    // Every message again, in a new consumer group: nothing changes; the bad ones are
    // dead-lettered again.
    run_in_group(&lane, &unique("it.notify.again")).await;
    assert_eq!(
        state(db).await.expect("state"),
        expected.state,
        "after a redelivery"
    );
    let twice: Vec<i64> = bad.iter().flat_map(|o| [*o, *o]).collect();
    assert_eq!(dead_lettered_offsets(&lane), twice);

    // The recipient without a chii_memberfields row gets one; replaying the DLQ applies its
    // message once, though both of its letters are replayed. The others fail again.
    let fixed = expected
        .outcomes
        .iter()
        .find(|o| o.reason.as_deref() == Some("no chii_memberfields row"))
        .expect("a message to a user without chii_memberfields")
        .index;
    let m = &input.messages[fixed];
    add_memberfields(db, [(m.user_id, "", "")])
        .await
        .expect("memberfields");
    let out = lane.dlq(&["replay", "--family", notify::FAMILY, "--reason", "it"]);
    assert_eq!(out.status.code(), Some(3), "some letters failed again");
    let mut want = expected.state.clone();
    want.chii_notify.push((
        m.user_id.into(),
        m.from_user_id.into(),
        1,
        u64::try_from(m.kind).expect("type"),
        notify::rules::hash_of(m.kind).expect("hash").into(),
        m.mid.into(),
        m.title.clone(),
        m.mid.into(),
        u64::try_from(m.timestamp_ms / 1000).expect("dateline"),
    ));
    want.chii_notify.sort_by(|a, b| (a.8, a).cmp(&(b.8, b)));
    want.chii_notify_field.push((
        notify::rules::hash_of(m.kind).expect("hash").into(),
        m.mid.into(),
        m.title.clone(),
    ));
    want.chii_notify_field.sort();
    for (uid, count) in &mut want.chii_members {
        if *uid == u64::from(m.user_id) {
            *count += 1;
        }
    }
    assert_eq!(state(db).await.expect("state"), want, "after the replay");

    // Its original record, delivered again, is the replayed message: stale.
    run_in_group(&lane, &unique("it.notify.third")).await;
    assert_eq!(
        state(db).await.expect("state"),
        want,
        "after a third delivery"
    );
    lane.clean_up().await;
}

/// Recipients of the kill stream: default privacy, no blocklist.
const RECIPIENTS: u32 = 50;

/// The kill stream's message `i`: to one of [`RECIPIENTS`] from user 2, a reply (type 1, hash
/// 1) or a patch notice (type 35, hash 21) about one of 300 threads, one second apart.
fn kill_message(i: u32) -> (Message, u64) {
    let (kind, hash) = if i.is_multiple_of(3) {
        (35, 21)
    } else {
        (1, 1)
    };
    let mid = i % 300;
    (
        Message {
            user_id: 1_000 + i % RECIPIENTS,
            from_user_id: 2,
            kind,
            mid,
            title: format!("thread {mid}"),
            raw_hex: None,
            timestamp_ms: 1_700_000_000_000 + i64::from(i) * 1_000,
            note: String::new(),
        },
        hash,
    )
}

/// The state one delivery of each kill-stream message leaves.
fn kill_expected(n: u32) -> State {
    let mut state = State::default();
    let mut fields = BTreeSet::new();
    let mut counts = vec![0_u64; RECIPIENTS as usize];
    for i in 0..n {
        let (m, hash) = kill_message(i);
        state.chii_notify.push((
            m.user_id.into(),
            2,
            1,
            u64::try_from(m.kind).expect("type"),
            hash,
            m.mid.into(),
            m.title.clone(),
            m.mid.into(),
            u64::try_from(m.timestamp_ms / 1000).expect("dateline"),
        ));
        fields.insert((hash, u64::from(m.mid), m.title));
        counts[(i % RECIPIENTS) as usize] += 1;
    }
    state.chii_notify_field = fields.into_iter().collect();
    state.chii_members = counts
        .into_iter()
        .enumerate()
        .map(|(u, c)| (1_000 + u as u64, c))
        .collect();
    state
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_loses_and_repeats_no_notification() {
    const N: u32 = 3_000;
    let lane = Lane::new(notify::FAMILY, "notify.kill", &redis_uri(), None).await;
    let db = lane.db.as_ref().expect("database");
    let recipients: Vec<u32> = (0..RECIPIENTS).map(|u| 1_000 + u).collect();
    add_members(db, recipients.iter().map(|u| (*u, 0)))
        .await
        .expect("members");
    add_memberfields(db, recipients.iter().map(|u| (*u, "", "")))
        .await
        .expect("fields");
    let records: Vec<(&'static str, Out)> =
        (0..N).map(|i| (TOPIC, kill_message(i).0.out())).collect();
    lane.produce(&records).await;

    let notifications = async || -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM chii_notify")
            .fetch_one(&db.pool)
            .await
            .expect("count")
    };
    let mut previous = lane.committed();
    let mut kills = 0;
    for round in 1..=4 {
        let before = notifications().await;
        if before == i64::from(N) {
            break;
        }
        let (delay, committed) = lane
            .kill_9_after_first_effect(
                &[("BATCH_MAX_MESSAGES", "10")],
                Duration::from_millis(50),
                &previous,
                async || notifications().await > before,
            )
            .await;
        kills += 1;
        let written = notifications().await;
        let done: i64 = committed.iter().flatten().filter(|o| **o > 0).sum();
        eprintln!(
            "round {round}: killed {delay:?} after a first effect; {done} committed, {written} notifications"
        );
        assert!(
            written >= done,
            "round {round}: {done} messages committed but {written} notifications ({delay:?} after a first effect)"
        );
        previous = committed;
    }
    assert!(kills >= 2, "killed {kills} times before the stream ended");
    run_in_group(&lane, &lane.group).await;
    assert_eq!(
        state(db).await.expect("state"),
        kill_expected(N),
        "one notification per message"
    );
    assert_eq!(lane.dlq_depth(), 0, "nothing dead-lettered");
    lane.clean_up().await;
}

/// The ledger's table is made by `notify migrate` (or `timeline migrate`: one set of
/// migrations), not by the worker: before it runs, a batch fails transiently (the partition
/// waits, nothing written) with an error naming the table and the command; after it, the batch
/// is applied, and the other family's `migrate` finds nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn before_notify_migrate_the_worker_waits_with_an_error_naming_the_table_and_the_command() {
    use cdc_runtime::{Coordinates, Event, Handler, HandlerError, Outcome, Record};

    let db = fleet_harness::mysql::TestDatabase::create_unmigrated()
        .await
        .expect("database");
    add_members(&db, [(7, 0)]).await.expect("members");
    add_memberfields(&db, [(7, "", "")]).await.expect("fields");
    let handler = notify::Notify::new(
        db.pool.clone(),
        cdc_runtime::Dependency::mysql("127.0.0.1", 3306),
        cdc_runtime::applied::Ledger::new(
            "it",
            Vec::new(),
            Duration::from_secs(86_400),
            "notify migrate",
        ),
    );
    let message = Message {
        user_id: 7,
        from_user_id: 8,
        kind: 1,
        mid: 9,
        title: "t".into(),
        raw_hex: None,
        timestamp_ms: 1_700_000_000_000,
        note: String::new(),
    };
    let batch = [Record {
        at: Coordinates {
            topic: unique("it.notify.migrate").into(),
            partition: 0,
            offset: 0,
            timestamp_ms: Some(message.timestamp_ms),
        },
        origin: None,
        event: Event::Service {
            key: None,
            value: message.out().value,
        },
    }];
    let error = handler
        .apply(&batch)
        .await
        .expect_err("no cdc_applied_messages before notify migrate");
    let text = error.to_string();
    assert!(
        matches!(error, HandlerError::Transient(_)),
        "transient: {text}"
    );
    assert!(
        text.contains("cdc_applied_messages") && text.contains("notify migrate"),
        "the error names the table and the command: {text}"
    );
    assert!(
        state(&db).await.expect("state").chii_notify.is_empty(),
        "nothing written"
    );

    let migrate = |family: &str| {
        let out = worker_command(family, "unused.", "unused", "redis://unused", "unused:")
            .expect("binary")
            .arg("migrate")
            .env("MYSQL_DB", &db.name)
            .stdout(std::process::Stdio::piped())
            .output()
            .expect("migrate");
        assert!(out.status.success(), "{family} migrate failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = migrate("notify");
    assert!(first.contains("applied 0001"), "{first}");
    assert_eq!(
        handler.apply(&batch).await.expect("apply"),
        [Outcome::Applied]
    );
    assert_eq!(
        handler.apply(&batch).await.expect("again"),
        [Outcome::Stale]
    );
    assert_eq!(state(&db).await.expect("state").chii_notify.len(), 1);
    let other = migrate("timeline");
    assert!(other.contains("up to date"), "the same migrations: {other}");
    db.drop_now().await.expect("drop database");
}
