//! The `timeline` service-topic writer against the real broker and MariaDB (bangumi-behaviour §3.1):
//! each op's row (memo formats, type mappings, escapes), merges within 10 minutes (JSON and
//! PHP-serialised previous memos), rejects to the DLQ, and exactly-once effect: delivering
//! every message a second time (a new consumer group reads the topic from the start) leaves
//! the table unchanged. Also: a value the column cannot hold dead-letters its message alone
//! (strict mode, errors by server number); a recreated topic's messages at reused offsets are
//! applied (identity = coordinates + timestamp); two writers merging into one row lose no
//! update (row locks); the writer's table comes from `timeline migrate`, which adopts the table
//! earlier workers created. In shadow mode (`RUN_MODE=shadow`) the same messages are planned,
//! the rows and merges the live run writes, and nothing is written.

use std::time::Duration;

use cdc_runtime::dead_letter::header;
use cdc_runtime::{Coordinates, Event, HandlerError, Outcome, Record};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::{KillOnDrop, worker_command};
use fleet_harness::{
    Out, client_config, committed, create_topic, end_offsets, produce, producer,
    provisioned_family, read_all, unique, wait_drained, worker_config,
};
use serde_json::json;
use timeline::writer::Writer;
use timeline::{FAMILY, Settings, Timeline};
use tokio_util::sync::CancellationToken;

const T: i64 = 1_700_000_000;

fn message(uid: u64, op: &str, message: serde_json::Value) -> Out {
    Out {
        partition: Some(0),
        key: Some(uid.to_string().into_bytes()),
        value: Some(
            json!({ "op": op, "message": message })
                .to_string()
                .into_bytes(),
        ),
        ..Out::default()
    }
}

fn messages() -> Vec<Out> {
    let s = |id: u64, kind: u64| json!({ "id": id, "type": kind });
    vec![
        message(
            1,
            "daily",
            json!({"uid":1,"type":2,"mid":2,"createdAt":T,"source":5}),
        ),
        message(
            1,
            "daily",
            json!({"uid":1,"type":2,"mid":3,"createdAt":T + 60,"source":6}),
        ),
        message(
            1,
            "daily",
            json!({"uid":1,"type":2,"mid":4,"createdAt":T + 600,"source":5}),
        ),
        message(
            1,
            "wiki",
            json!({"uid":1,"subject":s(12, 2),"createdAt":T,"source":5}),
        ),
        message(
            1,
            "subject",
            json!({"uid":1,"subject":s(12, 2),"collect":{"id":99,"type":2,"rate":8,"comment":"<3 & 'x'"},"createdAt":T,"source":5}),
        ),
        message(
            1,
            "subject",
            json!({"uid":1,"subject":s(13, 2),"collect":{"id":100,"type":2,"rate":0,"comment":""},"createdAt":T + 30,"source":5}),
        ),
        message(
            1,
            "progressEpisode",
            json!({"uid":1,"subject":s(12, 2),"episode":{"id":34,"status":2},"createdAt":T,"source":5}),
        ),
        message(
            1,
            "progressEpisode",
            json!({"uid":1,"subject":s(12, 2),"episode":{"id":35,"status":2},"createdAt":T + 10,"source":5}),
        ),
        message(
            1,
            "progressSubject",
            json!({"uid":1,"subject":{"id":12,"type":2,"eps":12,"volumes":0},"collect":{"epsUpdate":5},"createdAt":T,"source":5}),
        ),
        message(
            1,
            "statusSign",
            json!({"uid":1,"sign":"sign <b>","createdAt":T,"source":5}),
        ),
        message(
            1,
            "statusTsukkomi",
            json!({"uid":1,"text":"吐槽 🥲","createdAt":T,"source":5}),
        ),
        message(
            1,
            "statusNickname",
            json!({"uid":1,"before":"a&b","after":"<c>","createdAt":T,"source":5}),
        ),
        message(
            1,
            "mono",
            json!({"uid":1,"cat":2,"type":1,"id":5,"name":"<Sai>","createdAt":T,"source":5}),
        ),
        message(
            1,
            "mono",
            json!({"uid":1,"cat":2,"type":1,"id":6,"name":"Ai","createdAt":T + 1,"source":5}),
        ),
        message(1, "nope", json!({"uid":1})),
        message(
            1,
            "daily",
            json!({"uid":1,"type":9,"mid":1,"createdAt":T,"source":5}),
        ),
        // Merges into the PHP-serialised batch seeded for uid 2.
        message(
            2,
            "daily",
            json!({"uid":2,"type":2,"mid":9,"createdAt":T + 5,"source":5}),
        ),
    ]
}

/// A `timeline` record as the runtime hands it to the writer, at `offset` of partition 0 of
/// `topic`, produced at `timestamp_ms`.
fn record(
    topic: &str,
    offset: i64,
    timestamp_ms: Option<i64>,
    op: &str,
    message: serde_json::Value,
) -> Record {
    Record {
        at: Coordinates {
            topic: topic.into(),
            partition: 0,
            offset,
            timestamp_ms,
        },
        origin: None,
        event: Event::Service {
            key: None,
            value: Some(
                json!({ "op": op, "message": message })
                    .to_string()
                    .into_bytes(),
            ),
        },
    }
}

/// `timeline migrate` on `db`, as the Helm hook runs it; its output.
fn timeline_migrate(db: &TestDatabase) -> String {
    let output = worker_command("timeline", "unused.", "unused", "redis://unused", "unused:")
        .expect("the timeline binary")
        .arg("migrate")
        .env("MYSQL_DB", &db.name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running timeline migrate");
    assert!(
        output.status.success(),
        "timeline migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

type Row = (
    u64,
    u64,
    u64,
    u64,
    String,
    String,
    String,
    u64,
    u64,
    u64,
    i64,
);

/// (id, uid, cat, type, related, memo, img, batch, source, replies, dateline)
fn expected() -> Vec<Row> {
    let r = |id: u64,
             uid: u64,
             cat: u64,
             kind: u64,
             related: &str,
             memo: &str,
             batch: u64,
             source: u64,
             at: i64| {
        (
            id,
            uid,
            cat,
            kind,
            related.to_owned(),
            memo.to_owned(),
            String::new(),
            batch,
            source,
            0,
            at,
        )
    };
    vec![
        r(
            1,
            2,
            1,
            2,
            "5",
            r#"a:1:{i:5;a:1:{s:3:"uid";i:5;}}"#,
            1,
            5,
            T,
        )
        .clone(),
        r(2, 1, 1, 2, "2", r#"{"2":{"uid":2},"3":{"uid":3}}"#, 1, 6, T),
        r(3, 1, 1, 2, "4", r#"{"uid":4}"#, 0, 5, T + 600),
        r(4, 1, 2, 2, "12", r#"{"subject_id":12}"#, 0, 0, T),
        r(
            5,
            1,
            3,
            6,
            "12",
            r#"{"12":{"subject_id":12,"collect_id":99,"collect_comment":"&lt;3 &amp; &#39;x&#39;","collect_rate":8},"13":{"subject_id":13,"collect_id":100,"collect_comment":"","collect_rate":0}}"#,
            1,
            5,
            T,
        ),
        r(
            6,
            1,
            4,
            2,
            "12",
            r#"{"subject_id":12,"subject_type_id":2,"ep_id":35}"#,
            0,
            5,
            T,
        ),
        r(
            7,
            1,
            4,
            0,
            "12",
            r#"{"subject_id":12,"subject_type_id":2,"eps_total":"12","eps_update":5,"vols_total":"??"}"#,
            0,
            5,
            T,
        ),
        r(8, 1, 5, 0, "", "sign <b>", 0, 5, T),
        r(9, 1, 5, 1, "", "吐槽 🥲", 0, 5, T),
        r(
            10,
            1,
            5,
            2,
            "",
            r#"{"before":"a&amp;b","after":"&lt;c&gt;"}"#,
            0,
            5,
            T,
        ),
        r(
            11,
            1,
            8,
            1,
            "5",
            r#"{"5":{"cat":2,"id":5,"name":"<Sai>"},"6":{"cat":2,"id":6,"name":"Ai"}}"#,
            1,
            5,
            T,
        ),
    ]
}

async fn rows(db: &TestDatabase) -> Vec<Row> {
    sqlx::query_as(
        "SELECT CAST(tml_id AS UNSIGNED), CAST(tml_uid AS UNSIGNED), CAST(tml_cat AS UNSIGNED), CAST(tml_type AS UNSIGNED), tml_related, tml_memo, tml_img, CAST(tml_batch AS UNSIGNED), CAST(tml_source AS UNSIGNED), CAST(tml_replies AS UNSIGNED), CAST(tml_dateline AS SIGNED) FROM chii_timeline ORDER BY tml_id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("rows")
}

async fn run_until_drained(
    family: &cdc_topics::Family,
    topic_prefix: &str,
    db: &TestDatabase,
    group: &str,
) {
    let args = db.worker_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = worker_config(family, topic_prefix, "unused:", group, &args).expect("config");
    let handler = Timeline::connect(&config, &Settings::default(), group).expect("connect");
    let shutdown = CancellationToken::new();
    let running = cdc_runtime::start(family, &config, handler, shutdown.clone())
        .await
        .expect("start");
    let topics: Vec<String> = family.service_topics.clone();
    wait_drained(group, &topics, family.partitions, Duration::from_secs(60))
        .await
        .expect("drained");
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

/// The writer tests' lane: a database with a batch row from the PHP site (uid 2, which the test
/// messages merge into) and the family's topics under a prefix from `name`, the test messages
/// produced to its `timeline` topic. Returns the prefix, the database, the family and the topic.
async fn seeded_lane(name: &str) -> (String, TestDatabase, cdc_topics::Family, String) {
    let topic_prefix = format!("{}.", unique(name));
    let db = TestDatabase::create().await.expect("database");
    sqlx::query("INSERT INTO chii_timeline (tml_uid, tml_cat, tml_type, tml_related, tml_memo, tml_img, tml_batch, tml_source, tml_replies, tml_dateline) VALUES (2, 1, 2, '5', ?, '', 1, 5, 0, ?)")
        .bind(r#"a:1:{i:5;a:1:{s:3:"uid";i:5;}}"#)
        .bind(T)
        .execute(&db.pool)
        .await
        .expect("seed");
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    let topic = format!("{topic_prefix}timeline");
    produce(&producer().expect("producer"), &topic, &messages())
        .await
        .expect("produce");
    (topic_prefix, db, family, topic)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_op_writes_its_row_merges_in_the_window_and_a_redelivery_changes_nothing() {
    let (topic_prefix, db, family, topic) = seeded_lane("it.tml.writer").await;

    run_until_drained(&family, &topic_prefix, &db, &unique("it.tml.writer.a")).await;
    let mut want = expected();
    want[0].5 = r#"{"5":{"uid":5},"9":{"uid":9}}"#.into();
    assert_eq!(rows(&db).await, want, "after one delivery");
    assert_eq!(
        end_offsets(&family.dlq, family.partitions)
            .expect("dlq")
            .iter()
            .sum::<i64>(),
        2,
        "the unknown op and the unsupported daily type are dead-lettered"
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM cdc_applied_messages WHERE topic = ? AND kafka_partition = 0",
    )
    .bind(&topic)
    .fetch_one(&db.pool)
    .await
    .expect("applied identities");
    assert_eq!(
        stored,
        messages().len() as i64 - 2,
        "every applied message is recorded; the two dead-lettered ones are not"
    );

    // Every message again: a new group starts from the earliest offset.
    run_until_drained(&family, &topic_prefix, &db, &unique("it.tml.writer.b")).await;
    assert_eq!(rows(&db).await, want, "after a second delivery");
    db.drop_now().await.expect("drop database");
}

/// Shadow mode (`RUN_MODE=shadow`, the binary): the live test's messages in one batch (so its
/// merges are within the batch, as live), each batch's transaction rolled back. Nothing is
/// written (no row, no applied identity, no dead letter), and the plans, applied in order to the
/// seeded row, give the live test's table: each message's `insert` or merge `update`, and the
/// two bad messages' dead letters.
#[tokio::test(flavor = "multi_thread")]
async fn shadow_plans_every_row_and_merge_and_writes_none() {
    let (topic_prefix, db, family, _) = seeded_lane("it.tml.writer.shadow").await;
    let before = rows(&db).await;

    let plans = std::env::temp_dir().join(unique("timeline-writer-shadow-plans"));
    let group = unique("it.tml.writer.shadow");
    let mut cmd = worker_command(
        "timeline",
        &topic_prefix,
        &group,
        &fleet_harness::redis_uri(),
        &format!("{}:", unique("it.tml.writer.shadow")),
    )
    .expect("the timeline binary");
    // One batch of every message: a batch ends at its size, else at its wait (never reached).
    cmd.env("MYSQL_DB", &db.name)
        .env("RUN_MODE", "shadow")
        .env("SHADOW_PLANS_DIR", &plans)
        .env("BATCH_MAX_MESSAGES", messages().len().to_string())
        .env("BATCH_MAX_WAIT", "10m");
    let mut child = KillOnDrop(cmd.spawn().expect("spawn timeline"));
    wait_drained(
        &format!("{group}.shadow"),
        &family.service_topics,
        family.partitions,
        Duration::from_secs(120),
    )
    .await
    .expect("drained");
    child.terminate().await.expect("stopped");

    assert_eq!(rows(&db).await, before, "no row written");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cdc_applied_messages")
        .fetch_one(&db.pool)
        .await
        .expect("applied identities");
    assert_eq!(stored, 0, "no applied identity recorded");
    assert_eq!(
        end_offsets(&family.dlq, family.partitions).expect("dlq"),
        vec![0; family.partitions as usize],
        "nothing dead-lettered"
    );

    let text = std::fs::read_to_string(plans.join("timeline.plans.jsonl")).expect("plans");
    let mut table: std::collections::BTreeMap<u64, Row> =
        before.into_iter().map(|r| (r.0, r)).collect();
    let mut kinds = Vec::new();
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            line["last_offset"].is_null(),
            "one line per message: {line}"
        );
        let offset = line["offset"].as_i64().expect("offset");
        for effect in line["effects"].as_array().expect("effects") {
            let kind = effect["kind"].as_str().expect("kind").to_owned();
            let v = &effect["value"];
            let n = |name: &str| {
                v[name]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}: {effect}"))
            };
            let text = |name: &str| v[name].as_str().expect(name).to_owned();
            match (kind.as_str(), effect["key"].as_str()) {
                (_, Some(key)) => assert_eq!(key, "chii_timeline", "{effect}"),
                ("dead_letter", None) => {}
                _ => panic!("unexpected effect {effect}"),
            }
            match kind.as_str() {
                "insert" => {
                    let row = (
                        n("tml_id"),
                        n("tml_uid"),
                        n("tml_cat"),
                        n("tml_type"),
                        text("tml_related"),
                        text("tml_memo"),
                        text("tml_img"),
                        n("tml_batch"),
                        n("tml_source"),
                        n("tml_replies"),
                        v["tml_dateline"].as_i64().expect("tml_dateline"),
                    );
                    assert!(table.insert(row.0, row).is_none(), "a new tml_id: {effect}");
                }
                "update" => {
                    let row = table.get_mut(&n("tml_id")).expect("an earlier row");
                    row.5 = text("tml_memo");
                    row.8 = n("tml_source");
                    if !v["tml_batch"].is_null() {
                        row.7 = n("tml_batch");
                    }
                }
                "dead_letter" => {}
                _ => panic!("unexpected effect {effect}"),
            }
            kinds.push((offset, kind));
        }
    }
    // By row, in id order: a retried batch's rolled-back inserts would use other ids.
    let unnumbered = |rows: Vec<Row>| -> Vec<Row> {
        rows.into_iter()
            .map(|mut row| {
                row.0 = 0;
                row
            })
            .collect()
    };
    let mut want = expected();
    want[0].5 = r#"{"5":{"uid":5},"9":{"uid":9}}"#.into();
    assert_eq!(
        unnumbered(table.into_values().collect()),
        unnumbered(want),
        "the plans give the live run's table"
    );
    let updates: Vec<i64> = kinds
        .iter()
        .filter(|(_, kind)| kind == "update")
        .map(|(offset, _)| *offset)
        .collect();
    assert_eq!(updates, [1, 5, 7, 13, 16], "the merges, planned as updates");
    let dead: Vec<i64> = kinds
        .iter()
        .filter(|(_, kind)| kind == "dead_letter")
        .map(|(offset, _)| *offset)
        .collect();
    assert_eq!(dead, [14, 15], "the bad messages' dead letters");
    assert_eq!(kinds.len(), messages().len(), "one effect per message");
    let _ = std::fs::remove_dir_all(&plans);
    db.drop_now().await.expect("drop database");
}

/// A value the column cannot hold (`tml_source` is a `TINYINT UNSIGNED`): on a strict-mode
/// session MariaDB refuses the row (error 1264, SQLSTATE 22003). That is the record's fault
/// alone: it is dead-lettered, the rest of its batch is written and every offset is committed
/// (not the batch retried for ever).
#[tokio::test(flavor = "multi_thread")]
async fn a_value_out_of_range_dead_letters_its_message_and_the_rest_of_the_batch_is_written() {
    let topic_prefix = format!("{}.", unique("it.tml.writer.range"));
    let db = TestDatabase::create().await.expect("database");
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    let topic = format!("{topic_prefix}timeline");
    let batch = [
        message(
            1,
            "statusSign",
            json!({"uid":1,"sign":"before","createdAt":T,"source":5}),
        ),
        message(
            1,
            "statusSign",
            json!({"uid":1,"sign":"out of range","createdAt":T,"source":300}),
        ),
        message(
            1,
            "statusSign",
            json!({"uid":1,"sign":"after","createdAt":T,"source":6}),
        ),
    ];
    produce(&producer().expect("producer"), &topic, &batch)
        .await
        .expect("produce");

    let group = unique("it.tml.writer.range");
    // The worker's sessions are strict whatever the server's default (a non-strict server
    // would store 255 in silence).
    let args = db.worker_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = worker_config(&family, &topic_prefix, "unused:", &group, &args).expect("config");
    let sql_mode: String = sqlx::query_scalar("SELECT @@SESSION.sql_mode")
        .fetch_one(&cdc_runtime::mysql::pool(&config))
        .await
        .expect("the worker's sql_mode");
    assert!(
        sql_mode.split(',').any(|m| m == "STRICT_ALL_TABLES"),
        "the worker's session is strict: {sql_mode}"
    );
    run_until_drained(&family, &topic_prefix, &db, &group).await;

    let written: Vec<(String, u64)> = sqlx::query_as(
        "SELECT tml_memo, CAST(tml_source AS UNSIGNED) FROM chii_timeline ORDER BY tml_id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    assert_eq!(
        written,
        [("before".to_owned(), 5), ("after".to_owned(), 6)],
        "the good messages of the batch are written, the bad one is not"
    );
    let letters = read_all(&family.dlq, family.partitions).expect("dlq");
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.value, batch[1].value, "the out-of-range message");
    assert_eq!(
        letter.header(header::ORIGINAL_TOPIC).as_deref(),
        Some(&*topic)
    );
    assert_eq!(letter.header(header::ORIGINAL_OFFSET).as_deref(), Some("1"));
    assert_eq!(
        letter.header(header::ERROR_CLASS).as_deref(),
        Some("permanent")
    );
    let error = letter.header(header::ERROR_MESSAGE).unwrap_or_default();
    assert!(
        error.contains("1264") && error.contains("tml_source"),
        "the letter names the server's error and the column: {error}"
    );
    assert_eq!(
        committed(&group, &topic, family.partitions).expect("committed")[0],
        3,
        "every offset of the batch is committed"
    );
    db.drop_now().await.expect("drop database");
}

/// The writer's table is made by `timeline migrate`, not by the worker: before it runs, a batch
/// fails transiently (the partition waits, nothing written) with an error naming the table and
/// the command; after it, the batch is applied. A second `migrate` changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn before_timeline_migrate_the_writer_waits_with_an_error_naming_the_table_and_the_command() {
    let db = TestDatabase::create_unmigrated().await.expect("database");
    let writer = Writer::new(
        db.pool.clone(),
        "it",
        Vec::new(),
        Duration::from_secs(86_400),
    );
    let batch = [record(
        &unique("it.tml.migrate"),
        0,
        Some(T * 1000),
        "statusSign",
        json!({"uid":1,"sign":"hi","createdAt":T,"source":5}),
    )];

    let error = writer
        .apply(&batch)
        .await
        .expect_err("no cdc_applied_messages before timeline migrate");
    let text = error.to_string();
    assert!(
        matches!(error, HandlerError::Transient(_)),
        "transient, so the partition waits: {text}"
    );
    assert!(
        text.contains("cdc_applied_messages") && text.contains("timeline migrate"),
        "the error names the table and the command: {text}"
    );
    assert!(rows(&db).await.is_empty(), "nothing written");

    let migrated = timeline_migrate(&db);
    assert!(
        migrated.contains("applied 0001"),
        "the first migrate applies the migrations: {migrated}"
    );
    assert_eq!(
        writer.apply(&batch).await.expect("apply after migrate"),
        [Outcome::Applied]
    );
    assert_eq!(rows(&db).await.len(), 1);
    let again = timeline_migrate(&db);
    assert!(
        again.contains("up to date"),
        "a second migrate changes nothing: {again}"
    );
    db.drop_now().await.expect("drop database");
}

/// Deletes `topic` from the broker.
async fn delete_topic(topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin");
    for result in admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .expect("delete topics")
    {
        if let Err((topic, error)) = result {
            panic!("deleting {topic}: {error}");
        }
    }
}

fn signs(texts: &[&str]) -> Vec<Out> {
    texts
        .iter()
        .map(|text| {
            message(
                1,
                "statusSign",
                json!({"uid":1,"sign":text,"createdAt":T,"source":5}),
            )
        })
        .collect()
}

/// A message's identity survives the topic being recreated: the messages of a new incarnation of
/// the `timeline` topic, at the offsets the deleted one used, are new messages, applied (not
/// counted stale as copies of the old ones).
#[tokio::test(flavor = "multi_thread")]
async fn messages_of_a_recreated_topic_at_reused_offsets_are_applied() {
    let topic_prefix = format!("{}.", unique("it.tml.writer.recreate"));
    let db = TestDatabase::create().await.expect("database");
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    let topic = format!("{topic_prefix}timeline");
    let first = produce(
        &producer().expect("producer"),
        &topic,
        &signs(&["a0", "a1"]),
    )
    .await
    .expect("produce");
    run_until_drained(
        &family,
        &topic_prefix,
        &db,
        &unique("it.tml.writer.recreate.a"),
    )
    .await;

    delete_topic(&topic).await;
    create_topic(&topic, family.partitions)
        .await
        .expect("the topic again");
    let second = produce(
        &producer().expect("producer"),
        &topic,
        &signs(&["b0", "b1"]),
    )
    .await
    .expect("produce");
    assert_eq!(first, second, "the new incarnation reuses the offsets");
    run_until_drained(
        &family,
        &topic_prefix,
        &db,
        &unique("it.tml.writer.recreate.b"),
    )
    .await;

    let memos: Vec<String> =
        sqlx::query_scalar("SELECT tml_memo FROM chii_timeline ORDER BY tml_id")
            .fetch_all(&db.pool)
            .await
            .expect("rows");
    assert_eq!(
        memos,
        ["a0", "a1", "b0", "b1"],
        "both incarnations' messages are written"
    );
    db.drop_now().await.expect("drop database");
}

/// Applies `records` one per transaction as the runtime would: a transient failure (deadlock,
/// lock wait) is retried; anything else fails the test.
async fn apply_each(writer: &Writer, records: &[Record]) {
    for record in records {
        let batch = std::slice::from_ref(record);
        let mut tries = 0;
        loop {
            tries += 1;
            match writer.apply(batch).await {
                Ok(outcomes) => {
                    assert_eq!(outcomes, [Outcome::Applied], "offset {}", record.at.offset);
                    break;
                }
                Err(HandlerError::Transient(error)) if tries < 100 => {
                    let _ = error;
                }
                Err(error) => panic!("offset {} after {tries} tries: {error}", record.at.offset),
            }
        }
    }
}

/// A `daily` "added a friend" message of `uid` (merges into the previous row of `(uid, 1)`).
fn friend(topic: &str, offset: u64, uid: u64, mid: u64) -> Record {
    record(
        topic,
        offset as i64,
        Some(T * 1000),
        "daily",
        json!({"uid":uid,"type":2,"mid":mid,"createdAt":T,"source":5}),
    )
}

/// The `daily` rows of `uid`: the mids of each row's memo.
async fn friend_rows(db: &TestDatabase, uid: u64) -> Vec<std::collections::BTreeSet<u64>> {
    let memos: Vec<String> = sqlx::query_scalar(
        "SELECT tml_memo FROM chii_timeline WHERE tml_uid = ? AND tml_cat = 1 ORDER BY tml_id",
    )
    .bind(uid)
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    memos
        .iter()
        .map(|memo| {
            let memo: serde_json::Value = serde_json::from_str(memo).expect("a JSON memo");
            match memo.get("uid") {
                // A row nothing merged into yet: `{"uid": mid}`.
                Some(mid) => mid.as_u64().into_iter().collect(),
                None => memo
                    .as_object()
                    .expect("a merged memo")
                    .keys()
                    .map(|k| k.parse().expect("a mid"))
                    .collect(),
            }
        })
        .collect()
}

/// Two writers merging into the same `(uid, cat)` row at the same time (a `dlq replay --direct`
/// beside the live worker; two consumers of one partition after a lost assignment) lose no
/// update: the previous row is read with a lock, so one merge waits for the other (or deadlocks
/// and is retried). Also when there is no previous row yet: the two first messages of a uid make
/// one row, not two.
#[tokio::test(flavor = "multi_thread")]
async fn two_writers_merging_into_one_row_at_once_lose_no_update() {
    const PER_WRITER: u64 = 40;
    let db = TestDatabase::create().await.expect("database");
    let (live, replay) = (unique("it.tml.race.live"), unique("it.tml.race.replay"));
    let (a, b) = (
        Writer::new(
            db.pool.clone(),
            "live",
            Vec::new(),
            Duration::from_secs(86_400),
        ),
        Writer::new(
            db.pool.clone(),
            "replay",
            Vec::new(),
            Duration::from_secs(86_400),
        ),
    );

    // Many merges into one row.
    let evens: Vec<Record> = (0..PER_WRITER)
        .map(|i| friend(&live, i, 1, 1000 + 2 * i))
        .collect();
    let odds: Vec<Record> = (0..PER_WRITER)
        .map(|i| friend(&replay, i, 1, 1001 + 2 * i))
        .collect();
    tokio::join!(apply_each(&a, &evens), apply_each(&b, &odds));
    assert_eq!(
        friend_rows(&db, 1).await,
        [(1000..1000 + 2 * PER_WRITER).collect()],
        "one row with every update"
    );

    // The first message of a uid, twice at once, for many uids.
    for uid in 2..22 {
        let offset = PER_WRITER + uid;
        let (first, second) = (
            [friend(&live, offset, uid, 1)],
            [friend(&replay, offset, uid, 2)],
        );
        tokio::join!(apply_each(&a, &first), apply_each(&b, &second));
        assert_eq!(
            friend_rows(&db, uid).await,
            [[1, 2].into()],
            "uid {uid}: one row with both updates"
        );
    }
    db.drop_now().await.expect("drop database");
}

/// An upgrade keeps what earlier workers recorded: `timeline migrate` adopts the table they
/// created at run time (identities without a timestamp), and those identities still make a
/// redelivery of their messages stale, while other messages are applied.
#[tokio::test(flavor = "multi_thread")]
async fn timeline_migrate_adopts_the_table_earlier_workers_created_and_keeps_its_identities() {
    let db = TestDatabase::create_unmigrated().await.expect("database");
    // What workers before `timeline migrate` created on their first batch, and recorded.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS cdc_applied_messages (
          topic VARCHAR(249) NOT NULL,
          kafka_partition INT NOT NULL,
          kafka_offset BIGINT NOT NULL,
          consumer_group VARCHAR(255) NOT NULL DEFAULT '' COMMENT 'who applied it, informational',
          applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
          PRIMARY KEY (topic, kafka_partition, kafka_offset),
          KEY applied_at (applied_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=ascii;
        INSERT INTO cdc_applied_messages (topic, kafka_partition, kafka_offset, consumer_group)
          VALUES ('timeline', 0, 7, 'cdc-timeline')",
    )
    .execute(&db.pool)
    .await
    .expect("the table of earlier workers");
    let db = db.migrated().await.expect("timeline migrate");

    let writer = Writer::new(
        db.pool.clone(),
        "it",
        Vec::new(),
        Duration::from_secs(86_400),
    );
    let sign = |offset, text: &str| {
        record(
            "timeline",
            offset,
            Some(T * 1000),
            "statusSign",
            json!({"uid":1,"sign":text,"createdAt":T,"source":5}),
        )
    };
    assert_eq!(
        writer
            .apply(&[sign(7, "applied before the upgrade"), sign(8, "new")])
            .await
            .expect("apply"),
        [Outcome::Stale, Outcome::Applied]
    );
    let memos: Vec<String> = sqlx::query_scalar("SELECT tml_memo FROM chii_timeline")
        .fetch_all(&db.pool)
        .await
        .expect("rows");
    assert_eq!(memos, ["new"]);
    db.drop_now().await.expect("drop database");
}
