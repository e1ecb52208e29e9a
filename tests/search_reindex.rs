//! `search reindex` against the real MariaDB and Meilisearch, through the binary:
//! - the fixtures' rows rebuilt into fresh indexes hold exactly `fixtures/expected/search.json`'s
//!   documents, and no `__reindex` index or state is left;
//! - killed (SIGKILL) mid-run, a rerun says it resumes after the id recorded, and ends with every
//!   subject's document exactly once;
//! - a search of the live index by an alias answers, and finds its entity, all through a reindex
//!   and its swap; the live index's own settings are kept;
//! - `--dry-run` counts and writes nothing.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fleet_harness::meili::{Meili, meili_key, meili_url, unique_index_prefix};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::{KillOnDrop, LogFile, worker_binary};
use fleet_harness::scenario::wait_for;
use fleet_harness::search::{Expected, TABLES, assert_documents};
use fleet_harness::subjects::Subject;
use serde_json::json;

/// A test's database and index prefix.
struct Lane {
    db: TestDatabase,
    index_prefix: String,
    meili: Meili,
}

impl Lane {
    /// A database with the fixtures' rows (`with_fixtures`) and `generated` subjects more.
    async fn new(name: &str, with_fixtures: bool, generated: u32) -> Self {
        let meili = Meili::local().expect("meilisearch client");
        meili.require().await.expect("Meilisearch (make up)");
        let db = TestDatabase::create().await.expect("database");
        if with_fixtures {
            db.add_rows_as_the_fixtures_leave_them(&TABLES)
                .await
                .expect("rows");
        }
        db.add_subjects_in_bulk(&generated_subjects(generated))
            .await
            .expect("generated subjects");
        Self {
            db,
            index_prefix: unique_index_prefix(name),
            meili,
        }
    }

    /// `search reindex` with `args`, on this lane's database and indexes.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(worker_binary("search").expect("search binary"));
        cmd.arg("reindex")
            .args(args)
            .env("MYSQL_DB", &self.db.name)
            .env("MEILISEARCH_URL", meili_url())
            .env("MEILISEARCH_KEY", meili_key())
            .env("MEILISEARCH_INDEX_PREFIX", &self.index_prefix)
            .env("LOG_FORMAT", "text");
        cmd
    }

    /// Runs `search reindex` with `args` to its end; its output, echoed for the test's log.
    fn run(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().expect("run search reindex");
        eprintln!(
            "$ search reindex {}\n{}{}exit {:?}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            output.status.code()
        );
        output
    }

    /// Runs `search reindex` with `args`, which must succeed; what it printed.
    fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "search reindex {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn uid(&self, index: &str) -> String {
        format!("{}{index}", self.index_prefix)
    }

    /// The uids of this lane's indexes.
    async fn indexes(&self) -> Vec<String> {
        self.meili
            .index_uids()
            .await
            .expect("indexes")
            .into_iter()
            .filter(|uid| uid.starts_with(&self.index_prefix))
            .collect()
    }

    /// No `__reindex` index and no state document is left.
    async fn assert_nothing_left(&self) {
        let indexes = self.indexes().await;
        assert!(
            indexes.iter().all(|uid| !uid.ends_with("__reindex")),
            "a __reindex index is left: {indexes:?}"
        );
        let state = self
            .meili
            .documents(&self.uid("search_reindex_state"))
            .await
            .expect("state");
        assert!(state.is_empty(), "state left: {state:?}");
    }

    /// The ids of the documents of `index`, each once, panicking on a duplicate.
    async fn ids(&self, index: &str) -> BTreeSet<u64> {
        let documents = self.meili.documents(&self.uid(index)).await.expect("docs");
        let mut ids = BTreeSet::new();
        for doc in &documents {
            let id = doc["id"].as_u64().expect("numeric id");
            assert!(ids.insert(id), "{index}: document {id} twice");
        }
        ids
    }

    async fn clean_up(self) {
        self.meili
            .delete_indexes_with_prefix(&self.index_prefix)
            .await
            .expect("delete indexes");
        self.db.drop_now().await.expect("drop database");
    }
}

/// Subjects 100001…100000+n, each with a Chinese name in its infobox.
fn generated_subjects(n: u32) -> Vec<Subject> {
    (1..=n)
        .map(|i| Subject {
            id: 100_000 + i,
            type_id: 2,
            platform: 1,
            infobox: format!("{{{{Infobox animanga/TVAnime\r\n|中文名= 作品{i}\r\n}}}}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reindex_of_the_fixtures_rows_holds_exactly_the_expected_documents() {
    let expected = Expected::load();
    let lane = Lane::new("search-reindex-golden", true, 0).await;
    let out = lane.run_ok(&["--index", "all", "--page-size", "7"]);
    assert_eq!(out.matches("; swapped in").count(), 3, "{out}");
    assert_documents(&lane.meili, &lane.index_prefix, &expected, "reindexed").await;
    for (index, entities) in expected.by_index() {
        let want: BTreeSet<u64> = entities
            .iter()
            .filter(|e| e.document.is_some())
            .map(|e| u64::from(e.id))
            .collect();
        assert_eq!(lane.ids(index).await, want, "{index}: exactly these");
    }
    for search in &expected.searches {
        let hits = lane
            .meili
            .search(&lane.uid(&search.index), &search.q)
            .await
            .expect("search");
        assert!(
            hits.contains(&search.expect_id.to_string()),
            "{:?} finds {}",
            search.q,
            search.expect_id
        );
    }
    let client =
        search::meili::Meilisearch::new(&meili_url(), &meili_key(), Duration::from_secs(10))
            .expect("client");
    for index in search::Index::ALL {
        let current = client
            .settings(&lane.uid(index.name()))
            .await
            .expect("settings")
            .expect("the index exists");
        let differences = search::settings::differences(&current, &index.settings());
        assert!(
            differences.is_empty(),
            "{}: the declared settings: {differences:?}",
            index.name()
        );
    }
    lane.assert_nothing_left().await;
    // Again, over the indexes it made: the same documents.
    lane.run_ok(&["--index", "subjects"]);
    assert_documents(
        &lane.meili,
        &lane.index_prefix,
        &expected,
        "reindexed twice",
    )
    .await;
    lane.assert_nothing_left().await;
    lane.clean_up().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_reindex_resumes_where_it_was() {
    const SUBJECTS: u32 = 3000;
    let lane = Lane::new("search-reindex-resume", false, SUBJECTS).await;
    let log = LogFile::new("search-reindex-resume").expect("log");
    let mut child = KillOnDrop(
        lane.command(&[
            "--index",
            "subjects",
            "--page-size",
            "50",
            "--rate",
            "500",
            "--record-every",
            "0s",
        ])
        .stdout(log.stdio().expect("stdout"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn"),
    );
    let state_index = lane.uid("search_reindex_state");
    wait_for(
        "the state to record progress",
        Duration::from_secs(60),
        async || {
            lane.meili
                .get_document(&state_index, "subjects")
                .await
                .expect("state")
                .is_some_and(|state| state["after_id"].as_u64().unwrap_or(0) > 0)
        },
    )
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(
        !log.text().contains("swapped in"),
        "killed before the end: {}",
        log.text()
    );
    let recorded = lane
        .meili
        .get_document(&state_index, "subjects")
        .await
        .expect("state")
        .expect("state left by the killed run");
    let recorded = recorded["after_id"].as_u64().expect("after_id");

    let out = lane.run_ok(&["--index", "subjects", "--page-size", "500"]);
    let resumed: u64 = out
        .split("after id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the rerun says it resumes: {out}"));
    assert!(resumed > 0, "{out}");
    assert!(
        resumed >= recorded,
        "resumed after {resumed}, the state said {recorded}"
    );
    let want: BTreeSet<u64> = (1..=SUBJECTS).map(|i| u64::from(100_000 + i)).collect();
    assert_eq!(lane.ids("subjects").await, want, "every subject once");
    lane.assert_nothing_left().await;
    lane.clean_up().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn search_keeps_answering_through_the_swap() {
    let expected = Expected::load();
    let lane = Lane::new("search-reindex-live", true, 1500).await;
    lane.run_ok(&["--index", "all"]);
    let live = lane.uid("subjects");
    // An operator's setting on the live index: the rebuilt index gets it too.
    let client =
        search::meili::Meilisearch::new(&meili_url(), &meili_key(), Duration::from_secs(10))
            .expect("client");
    let synonyms = json!({ "bocchi": ["ぼっち"] });
    client
        .update_settings(&live, &json!({ "synonyms": synonyms }))
        .await
        .expect("settings");
    let search = expected
        .searches
        .iter()
        .find(|s| s.index == "subjects")
        .expect("a subject search");

    let mut child = KillOnDrop(
        lane.command(&["--index", "subjects", "--page-size", "50", "--rate", "400"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let mut searches = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("child") {
            break status;
        }
        let hits = lane.meili.search(&live, &search.q).await;
        let hits = hits.unwrap_or_else(|e| panic!("search {searches} failed: {e:#}"));
        assert!(
            hits.contains(&search.expect_id.to_string()),
            "search {searches} for {:?} finds {} (hits {hits:?})",
            search.q,
            search.expect_id
        );
        searches += 1;
    };
    assert!(status.success(), "the reindex succeeded");
    eprintln!(
        "{searches} searches during the reindex, every one found {}",
        search.expect_id
    );
    assert!(searches > 10, "searched during the reindex ({searches})");
    let hits = lane.meili.search(&live, &search.q).await.expect("search");
    assert!(hits.contains(&search.expect_id.to_string()), "after it");
    let settings = client
        .settings(&live)
        .await
        .expect("settings")
        .expect("live");
    assert_eq!(settings["synonyms"], synonyms, "the live settings are kept");
    assert_documents(&lane.meili, &lane.index_prefix, &expected, "after the swap").await;
    lane.assert_nothing_left().await;
    lane.clean_up().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_counts_and_writes_nothing() {
    let expected = Expected::load();
    let lane = Lane::new("search-reindex-dry", true, 0).await;
    let out = lane.run_ok(&["--index", "all", "--dry-run"]);
    for (index, entities) in expected.by_index() {
        let documents = entities.iter().filter(|e| e.document.is_some()).count();
        let line = format!(
            "{}: dry run: would write {documents} documents",
            lane.uid(index)
        );
        assert!(out.contains(&line), "{line:?} in {out}");
    }
    assert!(out.contains("nothing written"), "{out}");
    assert_eq!(lane.indexes().await, Vec::<String>::new(), "no index made");
    lane.clean_up().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_is_named() {
    let lane = Lane::new("search-reindex-down", false, 10).await;
    let port = fleet_harness::process::free_port().expect("port");
    let output = lane
        .command(&["--index", "subjects"])
        .env("MYSQL_PORT", port.to_string())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MariaDB"), "names MariaDB: {stderr}");
    assert_eq!(
        lane.indexes().await,
        Vec::<String>::new(),
        "nothing created while MariaDB is down"
    );

    let output = lane
        .command(&["--index", "subjects"])
        .env("MEILISEARCH_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Meilisearch"),
        "names Meilisearch: {stderr}"
    );
    lane.clean_up().await;
}
