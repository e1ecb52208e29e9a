//! The search family against the real broker, MariaDB and Meilisearch:
//! - golden: every record of the real Debezium fixtures, in each encoding, leaves in Meilisearch
//!   the documents `fixtures/expected/search.json` states (derived independently, from the Go
//!   indexer's rules, by `fixtures/expected/search.py`), as `GET /indexes/…/documents/{id}`
//!   returns them, with redirected, banned and deleted entities absent; searches by an alias find
//!   their entity; the stream again changes nothing; the records reversed end the same;
//! - a row that cannot make a document dead-letters its record alone, with the reason;
//! - shadow mode (`RUN_MODE=shadow`), through the binary: every record's document planned (the
//!   golden ones), none written; `reindex` and `settings --apply` refuse it;
//! - `search settings` shows, then applies, the indexes' declared settings, idempotently.

use std::collections::BTreeMap;
use std::time::Duration;

use cdc_runtime::dead_letter::header;
use cdc_topics::Family;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::meili::{Meili, meili_key, meili_url, unique_index_prefix};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::{KillOnDrop, free_port, worker_command};
use fleet_harness::search::{Expected, TABLES, assert_documents, numbers_as_floats};
use fleet_harness::{
    Out, http_get, metric_sums, produce_in_order, provisioned_family, read_all, redis_uri, unique,
    wait_drained, worker_config,
};
use search::{FAMILY, Search, Settings};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const DRAINED_WITHIN: Duration = Duration::from_secs(90);

/// One run of the family on its own topics, indexes and database.
struct Lane {
    family: Family,
    topic_prefix: String,
    index_prefix: String,
    db: TestDatabase,
    meili: Meili,
}

impl Lane {
    async fn new(name: &str) -> Self {
        let topic_prefix = format!("{}.", unique(name));
        let family = provisioned_family(FAMILY, &topic_prefix)
            .await
            .expect("family");
        let db = TestDatabase::create().await.expect("database");
        db.add_rows_as_the_fixtures_leave_them(&TABLES)
            .await
            .expect("rows");
        let meili = Meili::local().expect("meilisearch client");
        meili.require().await.expect("Meilisearch (make up)");
        Self {
            family,
            topic_prefix,
            index_prefix: unique_index_prefix(name),
            db,
            meili,
        }
    }

    /// The fixtures' records of the family's topics, in capture order.
    fn records(&self, encoding: Encoding) -> Vec<(String, Out)> {
        fixtures::records_of(&self.family, &self.topic_prefix, encoding).expect("fixtures")
    }

    async fn produce(&self, records: &[(String, Out)]) {
        produce_in_order(records).await.expect("produce");
    }

    /// Runs a worker in `group` until it has committed everything.
    async fn drain(&self, group: &str) {
        let args = ["--mysql-db", self.db.name.as_str()];
        let config =
            worker_config(&self.family, &self.topic_prefix, "", group, &args).expect("config");
        let settings = Settings {
            meilisearch_url: meili_url(),
            meilisearch_key: meili_key(),
            meilisearch_index_prefix: self.index_prefix.clone(),
            meilisearch_timeout: Duration::from_secs(10),
        };
        let handler = Search::connect(config.clone(), settings)
            .await
            .expect("handler");
        let shutdown = CancellationToken::new();
        let running = cdc_runtime::start(&self.family, &config, handler, shutdown.clone())
            .await
            .expect("start");
        wait_drained(
            group,
            &self.family.topics,
            self.family.partitions,
            DRAINED_WITHIN,
        )
        .await
        .expect("drained");
        shutdown.cancel();
        running.wait().await.expect("clean shutdown");
    }

    /// Runs the worker binary in shadow mode (`RUN_MODE=shadow`, plans in `plans`) in `group`
    /// until `<group>.shadow` has committed everything; its `/metrics` then.
    async fn drain_shadow(&self, group: &str, plans: &std::path::Path) -> String {
        let port = free_port().expect("port");
        let mut cmd = worker_command(FAMILY, &self.topic_prefix, group, &redis_uri(), "unused:")
            .expect("the search binary");
        cmd.env("MYSQL_DB", &self.db.name)
            .env("MEILISEARCH_URL", meili_url())
            .env("MEILISEARCH_KEY", meili_key())
            .env("MEILISEARCH_INDEX_PREFIX", &self.index_prefix)
            .env("RUN_MODE", "shadow")
            .env("SHADOW_PLANS_DIR", plans)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"));
        let mut child = KillOnDrop(cmd.spawn().expect("spawn search"));
        wait_drained(
            &format!("{group}.shadow"),
            &self.family.topics,
            self.family.partitions,
            DRAINED_WITHIN,
        )
        .await
        .expect("drained");
        let metrics = http_get(&format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("metrics");
        child.terminate().await.expect("stopped");
        metrics
    }

    /// Every expected entity as Meilisearch returns it; panics naming the first difference.
    async fn assert_documents(&self, expected: &Expected, when: &str) {
        assert_documents(&self.meili, &self.index_prefix, expected, when).await;
    }

    async fn clean_up(self) {
        self.meili
            .delete_indexes_with_prefix(&self.index_prefix)
            .await
            .expect("delete indexes");
        self.db.drop_now().await.expect("drop database");
    }
}

async fn golden_run(encoding: Encoding) {
    let expected = Expected::load();
    let lane = Lane::new("search-golden").await;
    let records = lane.records(encoding);
    lane.produce(&records).await;
    let group = unique("search-golden");
    lane.drain(&group).await;
    lane.assert_documents(&expected, &format!("{encoding:?}, one pass"))
        .await;
    for search in &expected.searches {
        let uid = format!("{}{}", lane.index_prefix, search.index);
        let hits = lane.meili.search(&uid, &search.q).await.expect("search");
        assert!(
            hits.contains(&search.expect_id.to_string()),
            "searching {} for {:?} finds {} (hits {hits:?})",
            search.index,
            search.q,
            search.expect_id
        );
    }

    // The stream again (a replay): nothing changes.
    lane.produce(&records).await;
    lane.drain(&group).await;
    lane.assert_documents(&expected, &format!("{encoding:?}, after a replay"))
        .await;
    assert!(
        read_all(&lane.family.dlq, lane.family.partitions)
            .expect("dlq")
            .is_empty(),
        "nothing dead-lettered"
    );
    lane.clean_up().await;
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

/// The fixtures' records in reverse order, all on one partition of each topic: every document
/// is rebuilt from the rows as they are, so the order of the changes does not matter.
#[tokio::test(flavor = "multi_thread")]
async fn reversed_changes_end_the_same() {
    let expected = Expected::load();
    let lane = Lane::new("search-reverse").await;
    let mut records = lane.records(Encoding::Json);
    records.reverse();
    for (_, record) in &mut records {
        record.partition = Some(0);
    }
    lane.produce(&records).await;
    lane.drain(&unique("search-reverse")).await;
    lane.assert_documents(&expected, "reversed").await;
    lane.clean_up().await;
}

/// A subject whose `field_tags` cannot be read is dead-lettered with the reason; the rest of its
/// batch is indexed.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_row_dead_letters_its_record_alone() {
    let expected = Expected::load();
    let lane = Lane::new("search-reject").await;
    let broken = expected
        .subjects
        .iter()
        .find(|e| e.document.is_some())
        .expect("a subject with a document")
        .id;
    sqlx::query("UPDATE chii_subject_fields SET field_tags = 'a:1:{' WHERE field_sid = ?")
        .bind(broken)
        .execute(&lane.db.pool)
        .await
        .expect("break the tags");
    lane.produce(&lane.records(Encoding::Json)).await;
    lane.drain(&unique("search-reject")).await;
    let letters = read_all(&lane.family.dlq, lane.family.partitions).expect("dlq");
    assert!(
        !letters.is_empty(),
        "the broken subject's records are dead-lettered"
    );
    for letter in &letters {
        let error = letter.header(header::ERROR_MESSAGE).unwrap_or_default();
        assert!(
            error.contains(&format!("subjects {broken}")) && error.contains("field_tags"),
            "the reason names the subject and the column: {error}"
        );
    }
    let other = expected
        .subjects
        .iter()
        .find(|e| e.document.is_some() && e.id != broken)
        .expect("another subject");
    let uid = format!("{}subjects", lane.index_prefix);
    assert!(
        lane.meili
            .get_document(&uid, &other.id.to_string())
            .await
            .expect("get")
            .is_some(),
        "the other subjects are indexed"
    );
    lane.clean_up().await;
}

/// A document effect planned in shadow mode, as the tests compare them.
#[derive(Debug, PartialEq)]
enum Planned {
    /// `upsert_document`, with the document (its numbers as floats).
    Upsert(Value),
    /// `delete_document`.
    Delete,
}

/// In shadow mode the golden stream's documents are built from MariaDB as in live mode and
/// planned, none sent: each record plans its entity's `upsert_document` (the document the golden
/// run leaves in Meilisearch) or `delete_document` (a deleted, redirected or banned entity); no
/// index is created, nothing is dead-lettered, the metric counts the plans, and the shadow group
/// commits every record.
#[tokio::test(flavor = "multi_thread")]
async fn shadow_plans_the_golden_documents_and_writes_none() {
    let expected = Expected::load();
    let lane = Lane::new("search-shadow").await;
    lane.produce(&lane.records(Encoding::Json)).await;
    let plans = std::env::temp_dir().join(unique("search-shadow-plans"));
    let metrics = lane.drain_shadow(&unique("search-shadow"), &plans).await;

    let indexes = lane.meili.index_uids().await.expect("indexes");
    assert!(
        indexes
            .iter()
            .all(|uid| !uid.starts_with(&lane.index_prefix)),
        "no index written: {indexes:?}"
    );
    assert!(
        read_all(&lane.family.dlq, lane.family.partitions)
            .expect("dlq")
            .is_empty(),
        "nothing dead-lettered"
    );
    let text = std::fs::read_to_string(plans.join(format!("{FAMILY}.plans.jsonl"))).expect("plans");
    let mut planned: BTreeMap<(String, u64), Planned> = BTreeMap::new();
    let mut kinds: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            line.get("last_offset").is_none(),
            "one line per record: {line}"
        );
        for effect in line["effects"].as_array().expect("effects") {
            let kind = effect["kind"].as_str().expect("kind");
            *kinds.entry(kind.to_owned()).or_default() += 1.0;
            let index = effect["key"]
                .as_str()
                .and_then(|uid| uid.strip_prefix(&lane.index_prefix))
                .expect("an index of the lane")
                .to_owned();
            let (id, effect) = match kind {
                "upsert_document" => (
                    effect["value"]["id"].as_u64(),
                    Planned::Upsert(numbers_as_floats(&effect["value"])),
                ),
                "delete_document" => (effect["value"].as_u64(), Planned::Delete),
                _ => panic!("unexpected effect {effect}"),
            };
            let entity = (index, id.expect("the document's id"));
            // The rows are read as they are now: every record of an entity plans the same.
            if let Some(earlier) = planned.insert(entity.clone(), effect) {
                assert_eq!(Some(&earlier), planned.get(&entity), "{entity:?}");
            }
        }
    }
    let want: BTreeMap<(String, u64), Planned> = expected
        .by_index()
        .into_iter()
        .flat_map(|(index, entities)| {
            entities.iter().map(move |entity| {
                let effect = match &entity.document {
                    Some(document) => Planned::Upsert(numbers_as_floats(document)),
                    None => Planned::Delete,
                };
                ((index.to_owned(), u64::from(entity.id)), effect)
            })
        })
        .collect();
    assert_eq!(planned, want, "each entity's planned document");
    assert_eq!(
        metric_sums(&metrics, "cdc_shadow_planned_effects_total", "kind"),
        kinds,
        "the metric counts the plans by kind"
    );
    let _ = std::fs::remove_dir_all(&plans);
    lane.clean_up().await;
}

/// `search reindex` and `search settings --apply` write Meilisearch outside the worker: with
/// `RUN_MODE=shadow` they refuse, naming the setting, and create nothing.
#[tokio::test(flavor = "multi_thread")]
async fn writing_subcommands_refuse_shadow_mode() {
    let index_prefix = unique_index_prefix("search-shadow-refusal");
    let meili = Meili::local().expect("client");
    meili.require().await.expect("Meilisearch (make up)");
    for args in [
        &["reindex", "--index", "subjects"][..],
        &["settings", "--apply"][..],
    ] {
        let output = std::process::Command::new(
            fleet_harness::process::worker_binary("search").expect("search binary"),
        )
        .args(args)
        .env("RUN_MODE", "shadow")
        .env("MEILISEARCH_URL", meili_url())
        .env("MEILISEARCH_KEY", meili_key())
        .env("MEILISEARCH_INDEX_PREFIX", &index_prefix)
        .env("LOG_FORMAT", "text")
        .output()
        .expect("run search");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("RUN_MODE"),
            "search {args:?} with RUN_MODE=shadow: {:?} {stderr}",
            output.status
        );
    }
    let indexes = meili.index_uids().await.expect("indexes");
    assert!(
        indexes.iter().all(|uid| !uid.starts_with(&index_prefix)),
        "nothing created: {indexes:?}"
    );
}

/// `search settings` shows what it would change and changes nothing; `--apply` creates the
/// indexes with the settings the Go indexer gives them (as `search.json` states them); a second
/// `--apply` finds them up to date.
#[tokio::test(flavor = "multi_thread")]
async fn settings_are_shown_then_applied_idempotently() {
    let index_prefix = unique_index_prefix("search-settings");
    let meili = Meili::local().expect("client");
    meili.require().await.expect("Meilisearch (make up)");
    let settings = |args: &[&str]| {
        let output = std::process::Command::new(
            fleet_harness::process::worker_binary("search").expect("search binary"),
        )
        .arg("settings")
        .args(args)
        .env("MEILISEARCH_URL", meili_url())
        .env("MEILISEARCH_KEY", meili_key())
        .env("MEILISEARCH_INDEX_PREFIX", &index_prefix)
        .env("LOG_FORMAT", "text")
        .output()
        .expect("run search settings");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "search settings {args:?}: {stdout}"
        );
        stdout
    };

    let shown = settings(&[]);
    assert!(
        shown.contains(&format!("{index_prefix}subjects: missing")) && shown.contains("--apply"),
        "{shown}"
    );
    assert!(
        meili
            .index_uids()
            .await
            .expect("indexes")
            .iter()
            .all(|uid| !uid.starts_with(&index_prefix)),
        "nothing created without --apply"
    );

    let applied = settings(&["--apply"]);
    assert_eq!(applied.matches(": applied").count(), 3, "{applied}");
    let path = fixtures::dir().join("expected/search.json");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("search.json")).expect("json");
    for index in ["subjects", "characters", "persons"] {
        let want = &expected["settings"][index];
        let uid = format!("{index_prefix}{index}");
        let current =
            search::meili::Meilisearch::new(&meili_url(), &meili_key(), Duration::from_secs(10))
                .expect("client")
                .settings(&uid)
                .await
                .expect("settings")
                .expect("the index exists");
        for key in ["searchableAttributes", "rankingRules"] {
            assert_eq!(current[key], want[key], "{uid} {key}");
        }
        for key in ["filterableAttributes", "sortableAttributes"] {
            let sorted = |v: &Value| {
                let mut items: Vec<String> = v
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(Value::to_string)
                    .collect();
                items.sort();
                items
            };
            assert_eq!(sorted(&current[key]), sorted(&want[key]), "{uid} {key}");
        }
    }
    let again = settings(&["--apply"]);
    assert_eq!(again.matches(": up to date").count(), 3, "{again}");
    meili
        .delete_indexes_with_prefix(&index_prefix)
        .await
        .expect("clean up");
}
