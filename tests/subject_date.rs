//! The subject-date family against the real broker and MariaDB:
//! - golden: every record of the real Debezium fixtures, in each encoding, leaves
//!   `chii_subject_fields` as `fixtures/expected/subject-date.json` (derived independently, by
//!   `fixtures/expected/subject_date.py`) says; the stream again changes nothing; the same
//!   records reversed and each delivered twice end the same;
//! - the read delay holds only its own partition, and a batch abandoned while it waits is
//!   redelivered, not lost;
//! - a batch with many changes of one subject updates its row once;
//! - a record without the subject it is about is dead-lettered with the reason, and the
//!   partition moves on.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_runtime::dead_letter::header;
use cdc_topics::Family;
use fleet_harness::expected::SubjectDate as Expected;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::subjects::{self, Date, Subject};
use fleet_harness::{
    Out, committed, produce, produce_in_order, producer, provisioned_family, read_all, unique,
    wait_drained, worker_config,
};
use serde_json::json;
use subject_date::{FAMILY, Settings, SubjectDate};
use tokio_util::sync::CancellationToken;

const DRAINED_WITHIN: Duration = Duration::from_secs(60);

/// A worker of the family on `db`, in `group`, with `read_delay`.
async fn start(
    family: &Family,
    db: &TestDatabase,
    group: &str,
    read_delay: Duration,
    extra: &[&str],
) -> (CancellationToken, cdc_runtime::Running) {
    let prefix = family.dlq.trim_end_matches("cdc.dlq.subject-date");
    let mut args = vec!["--mysql-db", db.name.as_str()];
    args.extend(extra);
    let config = worker_config(family, prefix, "", group, &args).expect("config");
    let handler = SubjectDate::connect(config.clone(), Settings { read_delay })
        .await
        .expect("handler");
    let shutdown = CancellationToken::new();
    let running = cdc_runtime::start(family, &config, handler, shutdown.clone())
        .await
        .expect("start");
    (shutdown, running)
}

/// Runs a worker of the family on `db` in `group`, with `read_delay`, until it has committed
/// everything.
async fn drain(
    family: &Family,
    db: &TestDatabase,
    group: &str,
    read_delay: Duration,
    extra: &[&str],
) {
    let (shutdown, running) = start(family, db, group, read_delay, extra).await;
    wait_drained(group, &family.topics, family.partitions, DRAINED_WITHIN)
        .await
        .expect("drained");
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

/// The fixtures' records of the family's topics, in capture order, as (topic, record).
fn family_records(family: &Family, prefix: &str, encoding: Encoding) -> Vec<(String, Out)> {
    fixtures::records_of(family, prefix, encoding).expect("fixtures")
}

async fn produce_all(records: &[(String, Out)]) {
    produce_in_order(records).await.expect("produce");
}

/// What `chii_subject_fields` must hold for the fixtures: the expected date of each dated
/// subject, no date for every other row.
fn expected_dates(expected: &Expected, rows: impl Iterator<Item = u32>) -> BTreeMap<u32, Date> {
    let dated: BTreeMap<u32, Date> = expected
        .subjects
        .iter()
        .filter_map(|e| e.fields.clone().map(|f| (e.subject_id, f)))
        .collect();
    rows.map(|id| (id, dated.get(&id).cloned().unwrap_or_else(Date::unset)))
        .collect()
}

/// A database with the subjects the fixtures leave, and an undated `chii_subject_fields` row
/// for each and for every subject the expectations name (a missing subject's row must stay
/// undated).
async fn seeded_database(expected: &Expected) -> TestDatabase {
    let db = TestDatabase::create().await.expect("database");
    let subjects = subjects::as_the_fixtures_leave_them().expect("subjects");
    db.add_subjects(&subjects).await.expect("subjects");
    let without_row = expected
        .subjects
        .iter()
        .map(|e| e.subject_id)
        .filter(|id| !subjects.iter().any(|s| s.id == *id));
    db.add_subject_fields(without_row.collect::<Vec<_>>())
        .await
        .expect("fields");
    db
}

async fn golden_run(encoding: Encoding) {
    let prefix = unique("sd-golden");
    let family = provisioned_family(FAMILY, &prefix).await.expect("family");
    let expected = Expected::load().expect("expected");
    let db = seeded_database(&expected).await;
    let want = expected_dates(
        &expected,
        db.subject_dates().await.expect("dates").into_keys(),
    );
    assert!(
        want.values().filter(|d| **d != Date::unset()).count() >= 10,
        "the fixtures date at least ten subjects"
    );

    let records = family_records(&family, &prefix, encoding);
    produce_all(&records).await;
    let group = unique("sd-golden");
    drain(&family, &db, &group, Duration::ZERO, &[]).await;
    assert_eq!(
        db.subject_dates().await.expect("dates"),
        want,
        "{encoding:?}: chii_subject_fields after one pass"
    );

    // The whole stream again (a replay): nothing changes.
    produce_all(&records).await;
    drain(&family, &db, &group, Duration::ZERO, &[]).await;
    assert_eq!(
        db.subject_dates().await.expect("dates"),
        want,
        "{encoding:?}: chii_subject_fields after a replay"
    );
    assert!(
        read_all(&family.dlq, family.partitions)
            .expect("dlq")
            .is_empty(),
        "nothing dead-lettered"
    );
    db.drop_now().await.expect("drop");
}

/// In shadow mode (`RUN_MODE=shadow`) the golden stream's dates are planned, each as the
/// `chii_subject_fields` row its record would write, and none written (the statement runs in a
/// transaction rolled back).
#[tokio::test(flavor = "multi_thread")]
async fn shadow_plans_the_golden_dates_and_writes_none() {
    let prefix = unique("sd-shadow");
    let family = provisioned_family(FAMILY, &prefix).await.expect("family");
    let expected = Expected::load().expect("expected");
    let db = seeded_database(&expected).await;
    let before = db.subject_dates().await.expect("dates");
    let want = expected_dates(&expected, before.keys().copied());
    produce_all(&family_records(&family, &prefix, Encoding::Json)).await;
    let group = unique("sd-shadow");
    let plans = std::env::temp_dir().join(unique("sd-shadow-plans"));
    let plans_arg = plans.to_string_lossy().into_owned();
    // SHADOW_COMPARE on, as the chart sets it: subject-date has nothing to compare, and plans.
    let shadow = [
        "--run-mode",
        "shadow",
        "--shadow-plans-dir",
        &plans_arg,
        "--shadow-compare",
        "on",
    ];
    let (shutdown, running) = start(&family, &db, &group, Duration::ZERO, &shadow).await;
    let shadow_group = format!("{group}.shadow");
    wait_drained(
        &shadow_group,
        &family.topics,
        family.partitions,
        DRAINED_WITHIN,
    )
    .await
    .expect("drained");
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");

    assert_eq!(
        db.subject_dates().await.expect("dates"),
        before,
        "nothing written"
    );
    let text = std::fs::read_to_string(plans.join(format!("{FAMILY}.plans.jsonl"))).expect("plans");
    let mut planned: BTreeMap<u32, Date> = BTreeMap::new();
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        for effect in line["effects"].as_array().expect("effects") {
            assert_eq!(
                (effect["kind"].as_str(), effect["key"].as_str()),
                (Some("update"), Some("chii_subject_fields")),
                "{effect}"
            );
            let sid = effect["value"]["field_sid"].as_u64().expect("field_sid");
            let date: Date = serde_json::from_value(effect["value"].clone()).expect("a row");
            planned.insert(u32::try_from(sid).expect("a subject id"), date);
        }
    }
    for (sid, date) in &want {
        match planned.get(sid) {
            Some(got) => assert_eq!(got, date, "subject {sid}'s planned date"),
            None => assert_eq!(*date, Date::unset(), "subject {sid} dated but not planned"),
        }
    }
    assert!(
        read_all(&family.dlq, family.partitions)
            .expect("dlq")
            .is_empty(),
        "nothing dead-lettered"
    );
    let _ = std::fs::remove_dir_all(&plans);
    db.drop_now().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_json_without_schema() {
    golden_run(Encoding::Json).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_json_with_schema() {
    golden_run(Encoding::JsonSchema).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_avro_through_the_registry() {
    golden_run(Encoding::Avro).await;
}

/// The fixtures' records in reverse order, each twice, all on one partition: the dates are
/// recomputed from the rows as they are, so the order of the changes does not matter.
#[tokio::test(flavor = "multi_thread")]
async fn reversed_and_duplicated_changes_end_the_same() {
    let prefix = unique("sd-reorder");
    let family = provisioned_family(FAMILY, &prefix).await.expect("family");
    let expected = Expected::load().expect("expected");
    let db = seeded_database(&expected).await;
    let want = expected_dates(
        &expected,
        db.subject_dates().await.expect("dates").into_keys(),
    );

    let mut records = family_records(&family, &prefix, Encoding::Json);
    records.reverse();
    let twice: Vec<(String, Out)> = records
        .into_iter()
        .flat_map(|(topic, record)| {
            let record = Out {
                partition: Some(0),
                ..record
            };
            [(topic.clone(), record.clone()), (topic, record)]
        })
        .collect();
    produce_all(&twice).await;
    drain(&family, &db, &unique("sd-reorder"), Duration::ZERO, &[]).await;
    assert_eq!(db.subject_dates().await.expect("dates"), want);
    db.drop_now().await.expect("drop");
}

/// A change of `table` as Debezium's JSON converter writes it (`source` as the fixtures'),
/// written at `ts_ms`, on `partition`.
fn change(
    table: &str,
    key: serde_json::Value,
    after: serde_json::Value,
    ts_ms: i64,
    partition: i32,
) -> Out {
    Out {
        partition: Some(partition),
        key: Some(key.to_string().into_bytes()),
        value: Some(
            json!({
                "before": after, "after": after, "op": "u", "ts_ms": ts_ms,
                "source": {
                    "version": "3.6.3.Final", "connector": "mysql", "name": "debezium.chii",
                    "ts_ms": ts_ms, "snapshot": "false", "db": "bangumi", "table": table,
                    "server_id": 1, "file": "mysql-bin.000001", "pos": 4, "row": 0,
                },
            })
            .to_string()
            .into_bytes(),
        ),
        ..Out::default()
    }
}

/// An update of subject `subject_id`, written at `ts_ms`, on `partition`.
fn subject_update(subject_id: u32, ts_ms: i64, partition: i32) -> Out {
    let row = json!({ "subject_id": subject_id });
    change("chii_subjects", row.clone(), row, ts_ms, partition)
}

/// The topic of `table` in `family`.
fn topic_of(family: &Family, table: &str) -> String {
    family
        .topics
        .iter()
        .find(|t| t.ends_with(&format!(".{table}")))
        .unwrap_or_else(|| panic!("{} has no topic of {table}", family.family))
        .clone()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn subject(id: u32, released: &str) -> Subject {
    Subject {
        id,
        type_id: 2,
        platform: 1,
        infobox: format!("{{{{Infobox animanga/TVAnime\r\n|放送开始= {released}\r\n}}}}"),
    }
}

fn dated(year: u32, month: i32, date: &str) -> Date {
    Date {
        year,
        month,
        date: date.into(),
    }
}

/// A change younger than the read delay waits on its partition only: a change of another
/// partition is applied meanwhile. Stopping the worker abandons the waiting batch without
/// committing it; the next worker applies it.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_delay_holds_only_its_partition_and_loses_nothing() {
    let prefix = unique("sd-delay");
    let family = provisioned_family(FAMILY, &prefix).await.expect("family");
    let subjects_topic = topic_of(&family, "chii_subjects");
    let db = TestDatabase::create().await.expect("database");
    db.add_subjects(&[subject(1, "2001年4月3日"), subject(2, "2002-05-06")])
        .await
        .expect("subjects");

    // Subject 1 changed just now (partition 0), subject 2 long ago (partition 1).
    let group = unique("sd-delay");
    let (shutdown, running) = start(
        &family,
        &db,
        &group,
        Duration::from_secs(60),
        &["--drain-timeout", "1s"],
    )
    .await;
    let producer = producer().expect("producer");
    produce(
        &producer,
        &subjects_topic,
        &[subject_update(1, now_ms(), 0)],
    )
    .await
    .expect("produce");
    produce(&producer, &subjects_topic, &[subject_update(2, 0, 1)])
        .await
        .expect("produce");
    fleet_harness::scenario::wait_for("subject 2 dated", DRAINED_WITHIN, async || {
        db.subject_dates().await.expect("dates")[&2] != Date::unset()
    })
    .await;
    assert_eq!(
        db.subject_dates().await.expect("dates")[&1],
        Date::unset(),
        "subject 1 waits for its read delay"
    );
    shutdown.cancel();
    running.wait().await.expect("shutdown");
    assert_eq!(
        committed(&group, &subjects_topic, family.partitions).expect("committed")[0],
        -1,
        "the waiting batch is not committed"
    );

    // The next worker (the default 2 s delay) applies it.
    drain(&family, &db, &group, Duration::from_secs(2), &[]).await;
    let dates = db.subject_dates().await.expect("dates");
    assert_eq!(dates[&1], dated(2001, 4, "2001-04-03"));
    assert_eq!(dates[&2], dated(2002, 5, "2002-05-06"));
    db.drop_now().await.expect("drop");
}

/// Fifty changes of three subjects in one partition: each subject's row is updated once per
/// batch, counted by a trigger on `chii_subject_fields`.
#[tokio::test(flavor = "multi_thread")]
async fn many_changes_of_a_subject_update_its_row_once_per_batch() {
    let prefix = unique("sd-batch");
    let family = provisioned_family(FAMILY, &prefix).await.expect("family");
    let subjects_topic = topic_of(&family, "chii_subjects");
    let db = TestDatabase::create().await.expect("database");
    db.add_subjects(&[
        subject(1, "2001年4月3日"),
        subject(2, "2002-05-06"),
        subject(3, "2003年"),
    ])
    .await
    .expect("subjects");
    sqlx::raw_sql(
        "CREATE TABLE updates (field_sid INT NOT NULL); \
         CREATE TRIGGER count_updates AFTER UPDATE ON chii_subject_fields FOR EACH ROW \
         INSERT INTO updates VALUES (NEW.field_sid);",
    )
    .execute(&db.pool)
    .await
    .expect("trigger");

    let changes: Vec<Out> = (0..50).map(|i| subject_update(1 + i % 3, 0, 0)).collect();
    produce(&producer().expect("producer"), &subjects_topic, &changes)
        .await
        .expect("produce");
    // One batch: all fifty are in the broker before the worker starts, and a batch holds 200.
    drain(
        &family,
        &db,
        &unique("sd-batch"),
        Duration::ZERO,
        &["--kafka-config", "batch.num.messages=1000"],
    )
    .await;
    let updates: Vec<(i32, i64)> =
        sqlx::query_as("SELECT field_sid, COUNT(*) FROM updates GROUP BY field_sid")
            .fetch_all(&db.pool)
            .await
            .expect("updates");
    let batches = updates.iter().map(|(_, n)| *n).max().unwrap_or(0);
    assert_eq!(updates.len(), 3, "every subject updated: {updates:?}");
    assert!(
        updates.iter().all(|(_, n)| *n == batches) && batches < 17,
        "each subject once per batch, not once per change: {updates:?}"
    );
    assert_eq!(
        db.subject_dates().await.expect("dates")[&3],
        dated(2003, 0, "0000-00-00")
    );
    db.drop_now().await.expect("drop");
}

/// A change whose subject cannot be told goes to the DLQ with the reason; the next change of
/// the partition is applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_without_its_subject_is_dead_lettered_and_the_partition_moves_on() {
    let prefix = unique("sd-reject");
    let family = provisioned_family(FAMILY, &prefix).await.expect("family");
    let revisions_topic = topic_of(&family, "chii_subject_revisions");
    let db = TestDatabase::create().await.expect("database");
    db.add_subjects(&[subject(7, "2007-07-07")])
        .await
        .expect("subjects");
    let revision = |row| change("chii_subject_revisions", json!({ "rev_id": 1 }), row, 0, 0);
    produce(
        &producer().expect("producer"),
        &revisions_topic,
        &[
            revision(json!({ "rev_id": 1 })),
            revision(json!({ "rev_id": 2, "rev_subject_id": 7 })),
        ],
    )
    .await
    .expect("produce");
    drain(&family, &db, &unique("sd-reject"), Duration::ZERO, &[]).await;
    let letters = read_all(&family.dlq, family.partitions).expect("dlq");
    assert_eq!(letters.len(), 1, "one dead letter");
    let error = letters[0].header(header::ERROR_MESSAGE).unwrap_or_default();
    assert!(
        error.contains("chii_subject_revisions") && error.contains("rev_subject_id"),
        "the reason names the table and the column: {error}"
    );
    assert_eq!(
        db.subject_dates().await.expect("dates")[&7],
        dated(2007, 7, "2007-07-07")
    );
    db.drop_now().await.expect("drop");
}
