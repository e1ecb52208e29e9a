//! The `dlq` tool end to end, on dead letters made by a real worker run: the cache-invalidation
//! worker reads the real Avro fixtures while the schema registry does not know their schemas
//! (404: permanent), so every record is dead-lettered; then the registry is fixed and the tool
//! puts things right. One malformed JSON record stays bad throughout.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cache_invalidation::{CacheInvalidation, FAMILY};
use cdc_topics::Family;
use fleet_harness::expected::CacheInvalidation as Expected;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::process::{
    DlqLane, KillOnDrop, PrivateRegistry, dlq_command, dlq_output, free_port, signal, wait_exit,
    worker_binary,
};
use fleet_harness::{
    Out, committed, end_offsets, keys_under, produce, producer, provisioned_family, redis_uri,
    seed_keys, unique, wait_drained, worker_config,
};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

struct Setup {
    family: Family,
    topic_prefix: String,
    key_prefix: String,
    group: String,
    registry: PrivateRegistry,
    audit: PathBuf,
    expected: Expected,
    dead_lettered: i64,
}

/// Provisions, seeds Redis, produces the Avro fixtures (+1 malformed record), and runs a worker
/// against an empty registry until everything is dead-lettered.
async fn dead_lettered_run(name: &str) -> Setup {
    let topic_prefix = format!("{}.", unique(&format!("it.dlq.{name}")));
    let key_prefix = format!("{}:", unique(&format!("it.dlq.{name}")));
    let group = unique(&format!("it.dlq.{name}.group"));
    let mut family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    family.group = group.clone();
    let expected = Expected::load().expect("expected");
    seed_keys(&key_prefix, &expected.seeded)
        .await
        .expect("seed");
    let registry = PrivateRegistry::start(false).await.expect("registry");

    let producer = producer().expect("producer");
    let mut produced = 0;
    for f in fixtures::load(Encoding::Avro).expect("fixtures") {
        let topic = format!("{topic_prefix}{}", f.topic);
        if family.topics.contains(&topic) {
            // Records with a registry schema id fail (404); a null-key tombstone has none.
            let raw = cdc_schemas::RawRecord {
                topic: &topic,
                key: f.record.key.as_deref(),
                value: f.record.value.as_deref(),
            };
            if !cdc_schemas::schema_ids(&raw).is_empty() {
                produced += 1;
            }
            produce(&producer, &topic, &[f.record])
                .await
                .expect("produce");
        }
    }
    let members = format!("{topic_prefix}debezium.chii.bangumi.chii_members");
    let malformed = Out {
        key: Some(br#"{"uid":424242}"#.to_vec()),
        value: Some(br#"{"op":"u","after":"#.to_vec()),
        ..Out::default()
    };
    produce(&producer, &members, &[malformed])
        .await
        .expect("produce");
    produced += 1;

    let config = worker_config(
        &family,
        &topic_prefix,
        &key_prefix,
        &group,
        &["--schema-registry-url", &registry.url()],
    )
    .expect("config");
    let handler = CacheInvalidation::connect(config.clone())
        .await
        .expect("handler");
    let shutdown = CancellationToken::new();
    let running = cdc_runtime::start(&family, &config, handler, shutdown.clone())
        .await
        .expect("start");
    wait_drained(
        &group,
        &family.topics,
        family.partitions,
        Duration::from_secs(60),
    )
    .await
    .expect("drained");
    shutdown.cancel();
    running.wait().await.expect("stop");

    let dead_lettered: i64 = end_offsets(&family.dlq, family.partitions)
        .expect("dlq")
        .iter()
        .sum();
    assert_eq!(
        dead_lettered, produced,
        "the worker dead-lettered every record it could not decode"
    );
    let audit = std::env::temp_dir().join(format!("{}.audit.jsonl", unique("dlq")));
    Setup {
        family,
        topic_prefix,
        key_prefix,
        group,
        registry,
        audit,
        expected,
        dead_lettered,
    }
}

impl Setup {
    fn command(&self, args: &[&str]) -> Command {
        let (redis_uri, registry_url) = (redis_uri(), self.registry.url());
        let lane = DlqLane {
            topic_prefix: &self.topic_prefix,
            group: &self.group,
            redis_uri: &redis_uri,
            key_prefix: &self.key_prefix,
            registry_url: &registry_url,
            audit: &self.audit,
        };
        dlq_command(args, &lane).expect("dlq binary")
    }

    fn dlq(&self, args: &[&str]) -> Output {
        dlq_output(self.command(args), args)
    }

    fn replay_offsets(&self) -> Vec<i64> {
        committed(
            &self.family.replay_group(),
            &self.family.dlq,
            self.family.partitions,
        )
        .expect("committed")
    }

    fn pending(&self) -> u64 {
        let out = self.dlq(&["ls", "--family", FAMILY, "--json"]);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Json>(l).expect("json")["pending"]
                    .as_u64()
                    .expect("pending")
            })
            .sum()
    }

    async fn redis(&self) -> BTreeSet<String> {
        keys_under(&self.key_prefix)
            .await
            .expect("keys")
            .into_iter()
            .collect()
    }

    fn audit_lines(&self) -> Vec<Json> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit json"))
            .collect()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_show_dry_run_purge_and_replay_put_things_right() {
    let mut s = dead_lettered_run("main").await;
    let untouched: BTreeSet<String> = s.expected.seeded.iter().cloned().collect();

    // ls: every dead letter pending, by error kind.
    assert_eq!(s.pending(), s.dead_lettered as u64);
    let table = stdout(&s.dlq(&["ls", "--family", FAMILY]));
    assert!(table.contains("permanent/decode"), "{table}");

    // show: headers and the decoding problem, as JSON.
    let out = s.dlq(&[
        "show",
        "--family",
        FAMILY,
        "--json",
        "--limit",
        "3",
        "--payload",
    ]);
    let shown: Vec<Json> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(shown.len(), 3);
    for letter in &shown {
        assert_eq!(letter["context"]["attempts"], "1");
        assert_eq!(letter["context"]["group"], s.group.as_str());
        assert!(
            letter["context"]["original.topic"]
                .as_str()
                .expect("topic")
                .starts_with(&s.topic_prefix)
        );
        assert!(
            letter["event"]["undecodable"]
                .as_str()
                .expect("why")
                .contains("schema"),
            "{letter}"
        );
        assert!(letter["payload"].is_object());
    }

    // Dry run and unconfirmed purge change nothing.
    let out = s.dlq(&["replay", "--family", FAMILY, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(&format!("{} record(s) would be replayed", s.dead_lettered)));
    let out = s.dlq(&["purge", "--family", FAMILY, "--error", "malformed"]);
    assert_eq!(out.status.code(), Some(5), "purge without --yes is refused");
    assert_eq!(s.replay_offsets(), vec![-1; 3], "no progress recorded");
    assert_eq!(s.redis().await, untouched, "Redis untouched");
    assert!(s.audit_lines().is_empty(), "nothing audited");

    // The registry is fixed; a direct replay applies everything but the malformed record,
    // which returns to the DLQ with one more attempt.
    s.registry
        .restart(true)
        .await
        .expect("registry with schemas");
    let out = s.dlq(&["replay", "--family", FAMILY, "--rate", "500"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial: one record failed again"
    );
    assert_eq!(
        s.redis().await,
        s.expected.remaining().into_iter().collect(),
        "state as after a clean run"
    );
    assert_eq!(s.pending(), 1, "only the re-dead-lettered copy is pending");
    let out = s.dlq(&["show", "--family", FAMILY, "--json"]);
    let again: Json = serde_json::from_str(stdout(&out).trim()).expect("one letter");
    assert_eq!(again["context"]["attempts"], "2");
    assert_eq!(again["context"]["error.stage"], "decode");

    // Replaying again is harmless; purge --yes skips the bad one, audited.
    let out = s.dlq(&["replay", "--family", FAMILY, "--stage", "apply"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("replayed 0 record(s)"),
        "{}",
        stdout(&out)
    );
    let out = s.dlq(&["purge", "--family", FAMILY, "--stage", "decode", "--yes"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s.pending(), 0);
    let operations: Vec<String> = s
        .audit_lines()
        .iter()
        .map(|l| l["operation"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        operations,
        ["replay-start", "replay", "replay-start", "replay", "purge"]
    );
    let purge = &s.audit_lines()[4];
    assert_eq!(purge["details"]["skipped"], 1);
    assert!(purge["who"].is_string() && purge["at"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_replay_resumes_without_reapplying_what_it_finished() {
    let mut s = dead_lettered_run("resume").await;
    s.registry
        .restart(true)
        .await
        .expect("registry with schemas");
    let mut child = KillOnDrop(
        s.command(&["replay", "--family", FAMILY, "--rate", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("replay"),
    );
    // Kill it as soon as it has committed some progress (at 30 records/s, seconds before the end).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.replay_offsets().iter().all(|o| *o <= 0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "KILL").expect("kill -9");
    wait_exit(&mut child, Duration::from_secs(5))
        .await
        .expect("wait");
    let done: i64 = s.replay_offsets().iter().map(|o| (*o).max(0)).sum();
    assert!(
        done > 0 && done < s.dead_lettered,
        "interrupted mid-way: {done} of {}",
        s.dead_lettered
    );

    // Pending now: what the first run did not commit, plus any record it sent back to the DLQ.
    let rest = end_offsets(&s.family.dlq, s.family.partitions)
        .expect("dlq")
        .iter()
        .sum::<i64>()
        - done;
    let out = s.dlq(&["replay", "--family", FAMILY]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the malformed record fails again"
    );
    assert!(
        stdout(&out).contains(&format!("replayed {rest} record(s)")),
        "the second run replays exactly what the first did not commit ({rest}): {}",
        stdout(&out)
    );
    assert_eq!(
        s.redis().await,
        s.expected.remaining().into_iter().collect()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_to_origin_feeds_the_running_worker() {
    let mut s = dead_lettered_run("origin").await;
    s.registry
        .restart(true)
        .await
        .expect("registry with schemas");
    let before: i64 = s
        .family
        .topics
        .iter()
        .map(|t| end_offsets(t, 3).expect("end").iter().sum::<i64>())
        .sum();
    let out = s.dlq(&["replay", "--family", FAMILY, "--to", "origin"]);
    assert_eq!(out.status.code(), Some(0));
    let after: i64 = s
        .family
        .topics
        .iter()
        .map(|t| end_offsets(t, 3).expect("end").iter().sum::<i64>())
        .sum();
    assert_eq!(
        after - before,
        s.dead_lettered,
        "every dead letter re-produced to its original topic"
    );

    let config = worker_config(
        &s.family,
        &s.topic_prefix,
        &s.key_prefix,
        &s.group,
        &["--schema-registry-url", &s.registry.url()],
    )
    .expect("config");
    let handler = CacheInvalidation::connect(config.clone())
        .await
        .expect("handler");
    let shutdown = CancellationToken::new();
    let running = cdc_runtime::start(&s.family, &config, handler, shutdown.clone())
        .await
        .expect("start");
    wait_drained(
        &s.group,
        &s.family.topics,
        s.family.partitions,
        Duration::from_secs(60),
    )
    .await
    .expect("drained");

    // While the worker runs, rewinding its group is refused.
    let out = s.dlq(&["rewind", "--family", FAMILY, "--to", "1h", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "rewind refused while the group is active"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("active member"));
    shutdown.cancel();
    running.wait().await.expect("stop");
    assert_eq!(
        s.redis().await,
        s.expected.remaining().into_iter().collect()
    );

    // With the worker gone, the group rewinds to the start of what was produced.
    let out = s.dlq(&["rewind", "--family", FAMILY, "--to", "1h", "--yes"]);
    assert_eq!(out.status.code(), Some(0));
    for topic in &s.family.topics {
        let ends = end_offsets(topic, 3).expect("end");
        let now = committed(&s.group, topic, 3).expect("committed");
        for (end, c) in ends.iter().zip(&now) {
            assert!(
                *end == 0 || *c == 0,
                "{topic} rewound to its first record: committed {now:?}"
            );
        }
    }
    assert_eq!(
        s.audit_lines().last().expect("audited")["operation"],
        "rewind"
    );
}

/// `dlq --help` and every subcommand's help list the tool's own flags, not the worker settings
/// (brokers, Redis, MySQL, prefetch…); those still work, from the environment or as unlisted
/// flags.
#[test]
fn help_lists_only_the_tools_own_flags() {
    let dlq = |args: &[&str]| {
        Command::new(worker_binary("dlq").expect("dlq binary"))
            .args(args)
            .env_remove("KAFKA_BROKERS")
            .output()
            .expect("run dlq")
    };
    let help = |args: &[&str]| {
        let out = dlq(args);
        assert_eq!(out.status.code(), Some(0), "dlq {args:?}");
        stdout(&out)
    };
    let top = help(&["--help"]);
    assert!(
        top.contains("replay") && top.contains("KAFKA_BROKERS") && top.contains("REDIS_URI"),
        "{top}"
    );
    assert!(help(&["replay", "--help"]).contains("--dry-run"));
    for command in ["ls", "show", "replay", "purge", "rewind"] {
        let text = help(&[command, "--help"]);
        for worker_flag in [
            "--kafka-brokers",
            "--redis-uri",
            "--mysql-pass",
            "--prefetch-budget",
            "--drain-timeout",
        ] {
            assert!(
                !text.contains(worker_flag) && !top.contains(worker_flag),
                "dlq {command} --help lists {worker_flag}:\n{text}"
            );
        }
    }

    let nowhere = format!("127.0.0.1:{}", free_port().expect("port"));
    let out = dlq(&["--kafka-brokers", &nowhere, "ls", "--family", FAMILY]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "broker unreachable: {stderr}");
    assert!(
        stderr.contains(&nowhere),
        "the hidden flag was used: {stderr}"
    );
}
