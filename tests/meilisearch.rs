//! The Meilisearch harness (`fleet_harness::meili`) against real servers: the shared one
//! `make up` starts, and private ones a test kills and freezes.
//!
//! - `put_documents_update_partially_and_get_returns_them`: `PUT …/documents` adds documents and
//!   updates only the fields it carries; the index is listed and cleaned up by prefix.
//! - `a_chinese_alias_is_found_by_search`: the server tokenizes Chinese.
//! - `a_private_server_killed_and_restarted_keeps_its_data`: `kill -9`, restart, same documents.
//! - `a_paused_private_server_times_out_then_answers_after_resume`: SIGSTOP / SIGCONT.
//!
//! Nothing waits by sleeping: writes are awaited on their task's status, servers on `/health`.

use std::time::Duration;

use fleet_harness::meili::{Meili, PrivateMeilisearch, is_timeout, unique_index_prefix};
use fleet_harness::scenario::Dependency;
use serde_json::{Value, json};

const TASK: Duration = Duration::from_secs(30);

/// Two Bangumi subjects, as the search family might index them.
fn subjects() -> Vec<Value> {
    vec![
        json!({ "id": 1, "name": "ONE PIECE", "name_cn": "海贼王", "aliases": ["航海王", "ワンピース"], "type": 2 }),
        json!({ "id": 2, "name": "カウボーイビバップ", "name_cn": "星际牛仔", "aliases": ["赏金猎人"], "type": 2 }),
    ]
}

/// The shared server, checked to answer.
async fn shared() -> Meili {
    let meili = Meili::local().expect("client");
    meili.require().await.expect("shared Meilisearch");
    meili
}

#[tokio::test(flavor = "multi_thread")]
async fn put_documents_update_partially_and_get_returns_them() {
    let meili = shared().await;
    let prefix = unique_index_prefix("meili-put");
    let index = format!("{prefix}subjects");
    meili.create_index(&index, "id").await.expect("create");
    assert!(meili.index_uids().await.expect("list").contains(&index));
    assert_eq!(meili.get_document(&index, "1").await.expect("get"), None);

    let task = meili
        .put_documents(&index, "id", &subjects())
        .await
        .expect("put");
    meili.wait_task(task, TASK).await.expect("added");
    let task = meili
        .put_documents(
            &index,
            "id",
            &[json!({ "id": 1, "name_cn": "航海王", "rank": 5 })],
        )
        .await
        .expect("put");
    meili.wait_task(task, TASK).await.expect("updated");

    assert_eq!(
        meili.get_document(&index, "1").await.expect("get"),
        Some(
            json!({ "id": 1, "name": "ONE PIECE", "name_cn": "航海王", "aliases": ["航海王", "ワンピース"], "type": 2, "rank": 5 })
        ),
        "fields the update lacks are kept, the others replaced or added"
    );
    assert_eq!(
        meili.get_document(&index, "2").await.expect("get"),
        Some(subjects()[1].clone())
    );
    assert_eq!(meili.get_document(&index, "3").await.expect("get"), None);
    assert_eq!(
        meili
            .get_document(&format!("{prefix}nothing"), "1")
            .await
            .expect("get"),
        None,
        "a missing index reads as a missing document"
    );

    assert_eq!(
        meili
            .delete_indexes_with_prefix(&prefix)
            .await
            .expect("clean up"),
        1
    );
    assert!(!meili.index_uids().await.expect("list").contains(&index));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chinese_alias_is_found_by_search() {
    let meili = shared().await;
    let prefix = unique_index_prefix("meili-search");
    let index = format!("{prefix}subjects");
    let task = meili
        .put_documents(&index, "id", &subjects())
        .await
        .expect("put");
    meili.wait_task(task, TASK).await.expect("added");

    assert_eq!(meili.search(&index, "航海王").await.expect("search"), ["1"]);
    assert_eq!(
        meili.search(&index, "赏金猎人").await.expect("search"),
        ["2"]
    );
    assert_eq!(
        meili.search(&index, "星际牛仔").await.expect("search"),
        ["2"]
    );
    assert!(
        meili
            .search(&index, "進撃の巨人")
            .await
            .expect("search")
            .is_empty()
    );

    meili
        .delete_indexes_with_prefix(&prefix)
        .await
        .expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_server_killed_and_restarted_keeps_its_data() {
    let mut server = PrivateMeilisearch::start().await.expect("private server");
    let meili = server.client().expect("client");
    let index = "subjects";
    let task = meili
        .put_documents(index, "id", &subjects())
        .await
        .expect("put");
    meili.wait_task(task, TASK).await.expect("added");

    // Through the scenario trait, as `run_through_outage` takes it away and back.
    Dependency::stop(&mut server).await.expect("kill -9");
    let down = meili.with_timeout(Duration::from_secs(2)).expect("client");
    assert!(
        down.require().await.is_err(),
        "nothing answers while it is down"
    );
    Dependency::restart(&mut server).await.expect("restart");

    assert_eq!(
        meili.get_document(index, "1").await.expect("get"),
        Some(subjects()[0].clone())
    );
    assert_eq!(meili.search(index, "海贼王").await.expect("search"), ["1"]);
    assert_eq!(meili.index_uids().await.expect("list"), [index]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_private_server_times_out_then_answers_after_resume() {
    let mut server = PrivateMeilisearch::start().await.expect("private server");
    let meili = server.client().expect("client");
    let task = meili
        .put_documents("subjects", "id", &subjects())
        .await
        .expect("put");
    meili.wait_task(task, TASK).await.expect("added");

    server.pause().expect("SIGSTOP");
    let impatient = meili.with_timeout(Duration::from_secs(1)).expect("client");
    let err = impatient
        .get_document("subjects", "2")
        .await
        .expect_err("a paused server answers nothing");
    assert!(is_timeout(&err), "not a timeout: {err:#}");

    server.resume().expect("SIGCONT");
    assert_eq!(
        meili.get_document("subjects", "2").await.expect("get"),
        Some(subjects()[1].clone())
    );
}
