//! Shadow mode (`RUN_MODE=shadow`) of the cache-invalidation family beside a legacy stand-in
//! (`scripts/legacy_reference.py`, server-private's rules) on the same real fixture events:
//! - the shadow applies nothing (every seeded key still there, nothing produced to the DLQ),
//!   writes its planned `DEL`s and the dead letter of an unreadable record as JSON lines, and its comparison with the legacy worker's `DEL`s
//!   (keyspace events) reports every effect as made by both, none by one side only;
//! - a deliberate divergence of the legacy stand-in (`--diverge KEY`) is reported, alone, with
//!   its key.
//!
//! That a family without a shadow mode refuses `RUN_MODE=shadow` rather than apply its effects
//! is the runtime's unit test (`worker::tests`, with a handler of its own), not a family's.
//!
//! The `chii_friends` records are left out: there the fleet deliberately differs (README, "Where
//! we deliberately differ from server-private"), which the golden tests cover.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use cache_invalidation::FAMILY;
use fleet_harness::expected::CacheInvalidation as Expected;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::process::{KillOnDrop, LogFile, free_port, worker_command};
use fleet_harness::scenario::wait_for;
use fleet_harness::{
    Out, brokers, end_offsets, keys_under, metric_sums, produce, producer, provisioned_family,
    redis, redis_uri, seed_keys, unique, wait_drained,
};

/// The table the fleet deliberately handles differently.
const DIFFERING_TOPIC: &str = "debezium.chii.bangumi.chii_friends";

/// A seeded key of a family pattern no fixture record deletes: the stand-in's divergence.
const DIVERGING_KEY: &str = "sbj:v3:slim:424242";

struct Lane {
    topic_prefix: String,
    key_prefix: String,
    group: String,
    family: cdc_topics::Family,
    plans_dir: std::path::PathBuf,
    expected: Expected,
}

impl Lane {
    /// A family of its own, its keys seeded, the fixture records (JSON) of its topics produced,
    /// and one unreadable record.
    async fn new(name: &str) -> Lane {
        let topic_prefix = format!("{}.", unique(name));
        let key_prefix = format!("{}:", unique(name));
        let family = provisioned_family(FAMILY, &topic_prefix)
            .await
            .expect("provision");
        let expected = Expected::load().expect("expectations");
        seed_keys(&key_prefix, &expected.seeded)
            .await
            .expect("seed");
        let producer = producer().expect("producer");
        for f in fixtures::load(Encoding::Json).expect("fixtures") {
            let topic = format!("{topic_prefix}{}", f.topic);
            if f.topic != DIFFERING_TOPIC && family.topics.contains(&topic) {
                produce(&producer, &topic, std::slice::from_ref(&f.record))
                    .await
                    .expect("produce");
            }
        }
        // A record live mode would dead-letter (its value is not JSON).
        let unreadable = Out {
            key: Some(br#"{"subject_id":1}"#.to_vec()),
            value: Some(b"not json".to_vec()),
            ..Out::default()
        };
        let subjects = format!("{topic_prefix}debezium.chii.bangumi.chii_subjects");
        produce(&producer, &subjects, &[unreadable])
            .await
            .expect("produce");
        enable_keyspace_events().await;
        Lane {
            plans_dir: std::env::temp_dir().join(unique("shadow-plans")),
            group: unique(&format!("{name}.group")),
            topic_prefix,
            key_prefix,
            family,
            expected,
        }
    }

    /// The keys the legacy rules delete for the records produced (every one seeded).
    fn deleted(&self) -> BTreeSet<String> {
        self.expected
            .records
            .iter()
            .filter(|r| r.table != "chii_friends")
            .flat_map(|r| r.keys.iter().map(|k| format!("{}{k}", self.key_prefix)))
            .collect()
    }

    /// The shadow worker, comparing within `window`; its `/metrics` URL and log.
    fn shadow(&self, window: &str) -> (KillOnDrop, String, LogFile) {
        let port = free_port().expect("port");
        let log = LogFile::new("shadow").expect("log");
        let mut cmd = worker_command(
            FAMILY,
            &self.topic_prefix,
            &self.group,
            &redis_uri(),
            &self.key_prefix,
        )
        .expect("worker");
        cmd.env("RUN_MODE", "shadow")
            .env("SHADOW_COMPARE", "on")
            .env("SHADOW_COMPARE_WINDOW", window)
            .env("SHADOW_COMPARE_SUMMARY", "1s")
            .env("SHADOW_PLANS_DIR", &self.plans_dir)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", "json")
            .stderr(log.stdio().expect("log"));
        let child = KillOnDrop(cmd.spawn().expect("spawn the shadow worker"));
        (child, format!("http://127.0.0.1:{port}/metrics"), log)
    }

    /// The legacy stand-in, under a group of its own (returned), deleting `diverge` too.
    fn legacy(&self, diverge: Option<&str>) -> (KillOnDrop, String) {
        let group = unique("legacy.group");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/legacy_reference.py"
        );
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--brokers", &brokers(), "--group", &group])
            .args(["--topic-prefix", &self.topic_prefix])
            .args([
                "--redis-url",
                &redis_uri(),
                "--key-prefix",
                &self.key_prefix,
            ]);
        if let Some(key) = diverge {
            cmd.args(["--diverge", key]);
        }
        (
            KillOnDrop(cmd.spawn().expect("spawn legacy_reference.py")),
            group,
        )
    }

    async fn drained(&self, group: &str) {
        wait_drained(
            group,
            &self.family.topics,
            self.family.partitions,
            Duration::from_secs(90),
        )
        .await
        .expect("drained");
    }

    /// The planned effects written, as (kind, key).
    fn planned(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.plans_dir.join(format!("{FAMILY}.plans.jsonl")))
            .unwrap_or_default();
        let mut planned = Vec::new();
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert!(
                line["offset"].is_i64() && line["topic"].is_string(),
                "{line}"
            );
            for effect in line["effects"].as_array().expect("effects") {
                planned.push((
                    effect["kind"].as_str().unwrap_or_default().to_owned(),
                    effect["key"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        planned
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.plans_dir);
    }
}

/// Turns on the keyspace events the comparison needs (`E`, `g`, `z`), keeping those already on.
async fn enable_keyspace_events() {
    let mut conn = redis().await.expect("redis");
    let (_, flags): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await
        .expect("config get");
    let mut wanted: BTreeSet<char> = flags.chars().collect();
    wanted.extend(['E', 'g', 'z']);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(wanted.into_iter().collect::<String>())
        .query_async(&mut conn)
        .await
        .expect("config set");
}

/// The comparison's counts by side, and its pending effects by side.
async fn comparison(metrics: &str) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let text = fleet_harness::http_get(metrics).await.unwrap_or_default();
    (
        metric_sums(&text, "cdc_shadow_effects_total", "side"),
        metric_sums(&text, "cdc_shadow_compare_pending", "side"),
    )
}

/// The comparison's counts by side once it has settled: at least `both` effects matched and
/// `legacy_only` counted, none still waiting for the other side (so none can be counted later).
async fn settled(metrics: &str, both: f64, legacy_only: f64) -> BTreeMap<String, f64> {
    let mut last = Default::default();
    wait_for(
        "the comparison settled",
        Duration::from_secs(90),
        async || {
            last = comparison(metrics).await;
            count(&last.0, "both") >= both
                && count(&last.0, "legacy_only") >= legacy_only
                && count(&last.1, "fleet") == 0.0
                && count(&last.1, "legacy") == 0.0
        },
    )
    .await;
    last.0
}

fn count(sums: &BTreeMap<String, f64>, side: &str) -> f64 {
    sums.get(side).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shadow_applies_nothing_and_agrees_with_the_legacy_rules() {
    let lane = Lane::new("it.shadow.agree").await;
    let (_shadow, metrics, _log) = lane.shadow("120s");
    lane.drained(&format!("{}.shadow", lane.group)).await;

    // Everything planned, nothing applied: every seeded key is still there, no dead letter.
    let mut seeded = lane.expected.seeded.clone();
    seeded.sort();
    assert_eq!(keys_under(&lane.key_prefix).await.expect("keys"), seeded);
    assert_eq!(
        end_offsets(&lane.family.dlq, lane.family.partitions).expect("dlq"),
        vec![0; lane.family.partitions as usize],
        "nothing dead-lettered"
    );
    // Planned: the legacy rules' deletions, and the unreadable record's dead letter (not sent).
    let (dels, others): (Vec<_>, Vec<_>) = lane
        .planned()
        .into_iter()
        .partition(|(kind, _)| kind == "del");
    assert_eq!(others, [("dead_letter".to_owned(), String::new())]);
    let deleted = lane.deleted();
    assert_eq!(
        dels.into_iter()
            .map(|(_, key)| key)
            .collect::<BTreeSet<_>>(),
        deleted
    );

    // The legacy stand-in deletes the same keys: all matched, nothing left waiting.
    let (_legacy, legacy_group) = lane.legacy(None);
    lane.drained(&legacy_group).await;
    let want = deleted.len() as f64;
    let sides = settled(&metrics, want, 0.0).await;
    assert_eq!(count(&sides, "both"), want, "{sides:?}");
    assert_eq!(count(&sides, "legacy_only"), 0.0, "{sides:?}");
    assert_eq!(count(&sides, "fleet_only"), 0.0, "{sides:?}");
    assert_eq!(count(&sides, "unobservable"), 0.0, "{sides:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deliberate_divergence_of_the_legacy_worker_is_reported_with_its_key() {
    let lane = Lane::new("it.shadow.diverge").await;
    let (_shadow, metrics, log) = lane.shadow("15s");
    log.wait_for_message("shadow comparison started", Duration::from_secs(30))
        .await;
    let (_legacy, legacy_group) = lane.legacy(Some(DIVERGING_KEY));
    lane.drained(&format!("{}.shadow", lane.group)).await;
    lane.drained(&legacy_group).await;

    let want = lane.deleted().len() as f64;
    let sides = settled(&metrics, want, 1.0).await;
    assert_eq!(count(&sides, "both"), want, "{sides:?}");
    assert_eq!(count(&sides, "legacy_only"), 1.0, "{sides:?}");
    assert_eq!(count(&sides, "fleet_only"), 0.0, "{sides:?}");
    let divergences: Vec<_> = log
        .json_lines()
        .into_iter()
        .filter(|line| line["message"] == "shadow divergence")
        .collect();
    assert_eq!(divergences.len(), 1, "{divergences:?}");
    let line = divergences[0].to_string();
    assert!(
        line.contains(&format!("{}{DIVERGING_KEY}", lane.key_prefix))
            && line.contains("legacy_only")
            && line.contains("sbj:v3:slim:{id}"),
        "{line}"
    );
}
