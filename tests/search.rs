//! The search family against the real broker, MariaDB and Meilisearch:
//! - golden: every record of the real Debezium fixtures, in each encoding, leaves in Meilisearch
//!   the documents `fixtures/expected/search.json` states (derived independently, from the Go
//!   indexer's rules, by `fixtures/expected/search.py`), as `GET /indexes/…/documents/{id}`
//!   returns them, with redirected, banned and deleted entities absent; searches by an alias find
//!   their entity; the stream again changes nothing; the records reversed end the same;
//! - a row that cannot make a document dead-letters its record alone, with the reason;
//! - `search settings` shows, then applies, the indexes' declared settings, idempotently.

use std::time::Duration;

use cdc_runtime::dead_letter::header;
use cdc_topics::Family;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::meili::{Meili, meili_key, meili_url, unique_index_prefix};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::search::{Expected, TABLES, assert_documents};
use fleet_harness::{
    Out, produce_in_order, provisioned_family, read_all, unique, wait_drained, worker_config,
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
