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
    Out, committed, end_offsets, keys_under, manual_consumer, produce, producer,
    provisioned_family, redis_uri, seed_keys, unique, wait_drained, worker_config,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
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

    /// [`Setup::dlq`] with environment variables changed (`None`: removed).
    fn dlq_with_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut cmd = self.command(args);
        for (name, value) in env {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        dlq_output(cmd, args)
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

    // ls: every dead letter pending, by error kind; by table, the same letters.
    assert_eq!(s.pending(), s.dead_lettered as u64);
    let table = stdout(&s.dlq(&["ls", "--family", FAMILY]));
    assert!(table.contains("permanent/decode"), "{table}");
    let by_table = s.dlq(&["ls", "--family", FAMILY, "--by", "table", "--json"]);
    let rows: Vec<Json> = stdout(&by_table)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| r["pending"].as_i64().expect("n"))
            .sum::<i64>(),
        s.dead_lettered
    );
    assert!(
        rows.iter().any(|r| r["table"] == "chii_members"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["replay_group"] == s.family.replay_group().as_str())
    );

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
    assert!(stdout(&out).contains(&format!("{} letter(s) would be replayed", s.dead_lettered)));
    let out = s.dlq(&["purge", "--family", FAMILY, "--error", "malformed"]);
    assert_eq!(out.status.code(), Some(5), "purge without --yes is refused");
    assert_eq!(s.replay_offsets(), vec![-1; 3], "no progress recorded");
    assert_eq!(s.redis().await, untouched, "Redis untouched");
    assert!(s.audit_lines().is_empty(), "nothing audited");

    // While the registry still lacks the schemas, every letter fails again: a replay stops after
    // the failures it is allowed.
    let out = s.dlq(&["replay", "--family", FAMILY, "--stop-after-failures", "2"]);
    assert_eq!(out.status.code(), Some(3), "partial: letters failed again");
    assert!(
        stdout(&out).contains("replayed 2 letter(s)") && stdout(&out).contains("2 failed again"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        s.pending(),
        s.dead_lettered as u64,
        "two handled, two new letters"
    );

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

    // The handled letters decode now: personal columns are redacted unless --payload.
    let all = |extra: &[&str]| -> Vec<Json> {
        let mut args = vec![
            "show", "--family", FAMILY, "--all", "--json", "--limit", "1000",
        ];
        args.extend(extra);
        stdout(&s.dlq(&args))
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    let emails = |letters: &[Json]| -> Vec<String> {
        letters
            .iter()
            .filter_map(|l| l["event"]["after"]["email"].as_str().map(str::to_owned))
            .collect()
    };
    let redacted = emails(&all(&[]));
    assert!(!redacted.is_empty(), "a members row with an email is shown");
    assert!(redacted.iter().all(|e| e == "<redacted>"), "{redacted:?}");
    assert!(
        emails(&all(&["--payload"]))
            .iter()
            .all(|e| e != "<redacted>")
    );

    // Replaying again is harmless; purge --yes marks the bad one handled, audited.
    let out = s.dlq(&["replay", "--family", FAMILY, "--stage", "apply"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("replayed 0 letter(s)"),
        "{}",
        stdout(&out)
    );
    let out = s.dlq(&["purge", "--family", FAMILY, "--stage", "decode", "--yes"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s.pending(), 0);
    let audit = s.audit_lines();
    let steps: Vec<(String, String)> = audit
        .iter()
        .map(|l| {
            (
                l["operation"].as_str().unwrap_or_default().to_owned(),
                l["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let step = |op: &str, phase: &str| (op.to_owned(), phase.to_owned());
    assert_eq!(
        steps,
        [
            step("replay", "intent"),
            step("replay", "outcome"),
            step("replay", "intent"),
            step("replay", "outcome"),
            step("replay", "intent"),
            step("replay", "outcome"),
            step("purge", "intent"),
            step("purge", "outcome"),
        ]
    );
    let (intent, outcome) = (&audit[6], &audit[7]);
    assert_eq!(intent["id"], outcome["id"]);
    assert_eq!(intent["reason"], "integration test");
    assert_eq!(intent["details"]["filter"], "--stage decode");
    assert_eq!(intent["details"]["selected"], 1);
    let letters = intent["details"]["letters"].as_str().expect("coordinates");
    assert!(
        letters.starts_with('p') && letters.contains('@'),
        "{letters}"
    );
    assert_eq!(outcome["details"]["result"], "done");
    assert!(intent["who"].is_string() && intent["at"].is_string());
}

/// The letters re-produced to the family's topics so far.
fn produced_to_origin(s: &Setup) -> i64 {
    s.family
        .topics
        .iter()
        .map(|t| end_offsets(t, 3).expect("end").iter().sum::<i64>())
        .sum()
}

/// [`produced_to_origin`] from the high watermarks the broker reports: quick, and exact while
/// the tool produces one record per request (as `dlq_command` sets it to).
fn reported_produced(s: &Setup, consumer: &BaseConsumer) -> i64 {
    s.family
        .topics
        .iter()
        .flat_map(|t| (0..3).map(move |p| (t, p)))
        .map(|(t, p)| {
            consumer
                .fetch_watermarks(t, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn filtered_replays_and_purges_handle_each_letter_exactly_once() {
    let s = dead_lettered_run("filtered").await;
    let total = s.dead_lettered;
    let ends = end_offsets(&s.family.dlq, 3).expect("dlq");
    let (p, letters) = ends
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .expect("partitions");
    assert!(*letters >= 3, "a partition with three letters: {ends:?}");
    let p = p.to_string();

    // Bad input is a usage error naming the problem, and changes nothing.
    let past_end = letters.to_string();
    for (args, says) in [
        (vec!["--partition", "99"], "--partition 99"),
        (vec!["--partition", &p, "--offset", &past_end], "--offset"),
        (
            vec!["--from-offset", "5", "--to-offset", "2"],
            "--from-offset 5 is after --to-offset 2",
        ),
        (vec!["--since", "1h", "--until", "2h"], "--since"),
    ] {
        let mut argv = vec!["replay", "--family", FAMILY, "--to", "origin"];
        argv.extend(&args);
        let out = s.dlq(&argv);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}"
        );
    }
    let out = s.dlq(&["show", "--family", FAMILY, "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "--limit 0");

    // No reason, or an audit trail that cannot be written: refused before anything changes.
    let out = s.dlq_with_env(
        &["purge", "--family", FAMILY, "--yes"],
        &[("DLQ_REASON", None)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reason is required"));
    let out = s.dlq_with_env(
        &["purge", "--family", FAMILY, "--yes"],
        &[("DLQ_AUDIT_LOG", Some("/proc/self/no-such-dir/audit.jsonl"))],
    );
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write the audit log"));
    assert_eq!(s.pending(), total as u64, "nothing purged");
    assert_eq!(s.replay_offsets(), vec![-1; 3], "the group did not move");

    // A filtered replay of letters 1..=2 of one partition, ahead of letter 0.
    let before = produced_to_origin(&s);
    let out = s.dlq(&[
        "replay",
        "--family",
        FAMILY,
        "--to",
        "origin",
        "--partition",
        &p,
        "--from-offset",
        "1",
        "--to-offset",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("re-produced 2 letter(s)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("decide the outcome"),
        "says who decides"
    );
    assert_eq!(s.pending(), total as u64 - 2, "exactly the two are handled");

    // Letter 0 purged on its own: the group moves past all three.
    let out = s.dlq(&[
        "purge",
        "--family",
        FAMILY,
        "--partition",
        &p,
        "--offset",
        "0",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s.pending(), total as u64 - 3);
    let group: i64 = s.replay_offsets()[p.parse::<usize>().expect("p")];
    assert!(
        group >= 3,
        "the group moved past the handled prefix: {group}"
    );

    // --max caps one replay.
    let out = s.dlq(&["replay", "--family", FAMILY, "--to", "origin", "--max", "5"]);
    assert!(
        stdout(&out).contains("re-produced 5 letter(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(s.pending(), total as u64 - 8);

    // A full replay takes exactly the rest; each letter reached its topic once, the purged one
    // never.
    let out = s.dlq(&["replay", "--family", FAMILY, "--to", "origin"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains(&format!("re-produced {} letter(s)", total - 8)),
        "{}",
        stdout(&out)
    );
    assert_eq!(s.pending(), 0);
    assert_eq!(produced_to_origin(&s) - before, total - 1);
    let out = s.dlq(&["replay", "--family", FAMILY, "--to", "origin"]);
    assert!(stdout(&out).contains("re-produced 0 letter(s)"));
    assert_eq!(produced_to_origin(&s) - before, total - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_replay_resumes_without_producing_anything_twice() {
    let s = dead_lettered_run("interrupt").await;
    let total = s.dead_lettered;
    let before = produced_to_origin(&s);
    let watermarks = manual_consumer(&unique("watermarks")).expect("consumer");
    let mut interrupts = 0;
    for round in 0..10 {
        let done = reported_produced(&s, &watermarks) - before;
        // Interrupt once 1 to 4 more letters went out (a random point of the run).
        let target = done + rand::random_range(1..=4);
        let mut child = KillOnDrop(
            s.command(&[
                "replay", "--family", FAMILY, "--to", "origin", "--rate", "20",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("replay"),
        );
        while reported_produced(&s, &watermarks) - before < target.min(total) {
            if let Ok(Some(_)) = child.0.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal(&child, if round % 2 == 0 { "INT" } else { "TERM" }).ok();
        let status = wait_exit(&mut child.0, Duration::from_secs(30))
            .await
            .expect("wait")
            .expect("exited");
        match status.code() {
            Some(130) => interrupts += 1,
            Some(0) => break,
            other => panic!("replay exited {other:?}"),
        }
    }
    assert!(interrupts > 0, "interrupted at least once");
    let out = s.dlq(&["replay", "--family", FAMILY, "--to", "origin"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(s.pending(), 0, "every letter handled");
    assert_eq!(
        produced_to_origin(&s) - before,
        total,
        "every letter re-produced exactly once across {interrupts} interrupts"
    );
    let interrupted = s
        .audit_lines()
        .iter()
        .filter(|l| l["phase"] == "outcome")
        .filter(|l| {
            l["details"]["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("interrupted"))
        })
        .count();
    assert_eq!(
        interrupted, interrupts,
        "each interrupt has its outcome line"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_with_redis_down_gives_up_after_its_timeout_naming_redis() {
    let mut s = dead_lettered_run("redis-down").await;
    s.registry
        .restart(true)
        .await
        .expect("registry with schemas");
    let port = free_port().expect("port");
    let out = s.dlq_with_env(
        &["replay", "--family", FAMILY, "--timeout", "2s"],
        &[(
            "REDIS_URI",
            Some(&format!("redis://cdc:hunter2@127.0.0.1:{port}/0")),
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("Redis at redis://"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "no credentials: {stderr}");
    // Letters that need no Redis (undecodable again, or nothing to do) went through; the one
    // it gave up on, and every one after it, is still pending.
    let outcome = s.audit_lines().pop().expect("outcome");
    assert_eq!(outcome["phase"], "outcome");
    let details = &outcome["details"];
    assert!(
        details["result"]
            .as_str()
            .expect("result")
            .starts_with("gave up")
    );
    let replayed = details["replayed"].as_u64().expect("replayed");
    let failed_again = details["failed_again"].as_u64().expect("failed again");
    assert!(
        replayed < s.dead_lettered as u64,
        "it stopped at the first letter needing Redis"
    );
    assert_eq!(
        s.pending(),
        s.dead_lettered as u64 - replayed + failed_again
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

    // With the worker gone, the group rewinds to the start of what was produced; it shows where
    // each partition is and goes.
    let out = s.dlq(&["rewind", "--family", FAMILY, "--to", "1h", "--yes"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(" → 0"), "{}", stdout(&out));
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

    // Forward (to now: past every record) is refused without --force.
    let out = s.dlq(&["rewind", "--family", FAMILY, "--to", "0s", "--yes"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forward"));
    let out = s.dlq(&[
        "rewind", "--family", FAMILY, "--to", "0s", "--yes", "--force",
    ]);
    assert_eq!(out.status.code(), Some(0));
    for topic in &s.family.topics {
        let ends = end_offsets(topic, 3).expect("end");
        let now = committed(&s.group, topic, 3).expect("committed");
        for (end, c) in ends.iter().zip(&now) {
            assert!(
                *end == 0 || *c > 0,
                "{topic} moved forward: committed {now:?}"
            );
        }
    }
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
    for command in [
        "ls", "show", "replay", "purge", "rewind", "cutover", "rollback",
    ] {
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
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}
