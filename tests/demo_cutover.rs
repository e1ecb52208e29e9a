//! The demo's cutover step (`make cutover-demo`, also the last step of `make demo`): a legacy
//! worker (the reference script, `scripts/legacy_reference.py`, standing in for server-private's
//! `bin/mq.ts`) consumes part of the real fixture stream of the cache-invalidation family under
//! a legacy consumer group, commits and stops; `dlq cutover --dry-run` prints the plan, `--yes`
//! applies it, and the family's real worker applies exactly the rest. README "Cutover from the
//! legacy workers" is the runbook this walks through.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleet_harness::expected::CacheInvalidation as Expected;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::parity::REFERENCE_LEGACY_CMD;
use fleet_harness::process::{
    DlqLane, KillOnDrop, dlq_command, free_port, signal, wait_exit, worker_command,
};
use fleet_harness::{
    brokers, delete_prefix_at, existing, produce_in_order, provisioned_family, redis_uri,
    registry_url, seed_keys, unique, wait_drained,
};

/// How many records the legacy worker applies before it stops.
const LEGACY_RECORDS: usize = 100;

/// Runs the step; `log_dir` gets the logs and the audit trail.
pub async fn run(log_dir: &Path) -> anyhow::Result<()> {
    let run = unique("cutover-demo");
    let topic_prefix = format!("{run}.");
    let key_prefix = format!("{run}:");
    let legacy_group = format!("server-private.{run}");
    let family_group = format!("cdc-cache-invalidation.{run}");
    let family = provisioned_family(cache_invalidation::FAMILY, &topic_prefix).await?;
    let records = fixtures::records_of(&family, &topic_prefix, Encoding::Json)?;
    let expected = Expected::load()?;
    seed_keys(&key_prefix, &expected.seeded).await?;
    produce_in_order(&records).await?;
    println!(
        "    {} records of fixtures/debezium/json.jsonl on the family's {} topics ({topic_prefix}*); \
         {} cache keys seeded under {key_prefix}",
        records.len(),
        family.topics.len(),
        expected.seeded.len()
    );

    println!(
        "\n    the legacy worker (scripts/legacy_reference.py, group {legacy_group}) applies {LEGACY_RECORDS} records, commits, stops"
    );
    let legacy_log = log_dir.join(format!("{run}-legacy.log"));
    let legacy = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {REFERENCE_LEGACY_CMD} --max-records {LEGACY_RECORDS}"
        ))
        .current_dir(fixtures::dir().join(".."))
        .env("KAFKA_BROKERS", brokers())
        .env("KAFKA_TOPIC_PREFIX", &topic_prefix)
        .env("KAFKA_GROUP_ID", &legacy_group)
        .env("REDIS_URL", redis_uri())
        .env("REDIS_KEY_PREFIX", &key_prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&legacy_log)?)
        .spawn()
        .context("starting scripts/legacy_reference.py")?;
    let mut legacy = KillOnDrop(legacy);
    match wait_exit(&mut legacy, Duration::from_secs(60)).await? {
        Some(status) if status.success() => {}
        Some(status) => bail!(
            "the legacy worker exited {status}; log {}",
            legacy_log.display()
        ),
        None => bail!(
            "the legacy worker did not finish in 60 s; log {}",
            legacy_log.display()
        ),
    }
    let deleted_by_legacy =
        expected.seeded.len() - existing(&key_prefix, &expected.seeded).await?.len();
    println!("    it deleted {deleted_by_legacy} cache keys");

    let audit = log_dir.join(format!("{run}-audit.jsonl"));
    let (redis, registry) = (redis_uri(), registry_url());
    let lane = DlqLane {
        topic_prefix: &topic_prefix,
        group: &family_group,
        redis_uri: &redis,
        key_prefix: &key_prefix,
        registry_url: &registry,
        audit: &audit,
    };
    // Partitions the legacy worker received nothing on (it stopped early, or the topic had no
    // record there) were never committed: the family starts them at the beginning.
    let cutover = [
        "cutover",
        "--family",
        cache_invalidation::FAMILY,
        "--from-group",
        &legacy_group,
        "--missing",
        "earliest",
    ];
    // The plan in full once (the dry run); applying prints it again, then its result (shown).
    for (extra, shown_lines) in [
        (&["--dry-run"][..], usize::MAX),
        (&["--yes", "--reason", "CHG-demo"][..], 1),
    ] {
        let args: Vec<&str> = cutover.iter().chain(extra).copied().collect();
        println!("\n    $ dlq {}", args.join(" "));
        let out = dlq_command(&args, &lane)?.output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        if shown_lines < lines.len() {
            println!("      (the plan again)");
        }
        for line in &lines[lines.len().saturating_sub(shown_lines)..] {
            println!("      {line}");
        }
        if !out.status.success() {
            bail!(
                "dlq {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!("    audit trail: {}", audit.display());

    let port = free_port()?;
    let family_log = log_dir.join(format!("{run}-cache-invalidation.log"));
    let mut worker = worker_command(
        cache_invalidation::FAMILY,
        &topic_prefix,
        &family_group,
        &redis,
        &key_prefix,
    )?;
    worker
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stderr(std::fs::File::create(&family_log)?);
    let mut worker = KillOnDrop(worker.spawn().context("starting cache-invalidation")?);
    let started = Instant::now();
    let topics: Vec<String> = family.all_topics().map(str::to_owned).collect();
    wait_drained(
        &family_group,
        &topics,
        family.partitions,
        Duration::from_secs(90),
    )
    .await
    .with_context(|| {
        format!(
            "cache-invalidation did not drain; log {}",
            family_log.display()
        )
    })?;
    let outcomes = crate::scrape_outcomes(&format!("http://127.0.0.1:{port}/metrics")).await?;
    let handled: f64 = outcomes.values().sum();
    signal(&worker, "TERM")?;
    wait_exit(&mut worker, Duration::from_secs(30)).await?;
    let left = existing(&key_prefix, &expected.seeded).await?.len();
    println!(
        "\n    cache-invalidation (group {family_group}) handled {handled} records in {:.1} s: \
         legacy {LEGACY_RECORDS} + family {handled} = {} of {} published",
        started.elapsed().as_secs_f64(),
        LEGACY_RECORDS as f64 + handled,
        records.len()
    );
    println!(
        "    cache keys deleted: {deleted_by_legacy} by the legacy worker, {} by the family after the cutover; {left} of {} left",
        expected.seeded.len() - left - deleted_by_legacy,
        expected.seeded.len()
    );
    if LEGACY_RECORDS as f64 + handled != records.len() as f64 {
        bail!(
            "the family handled {handled} records, not the {} the legacy worker left",
            records.len() - LEGACY_RECORDS
        );
    }
    delete_prefix_at(&redis, &key_prefix).await?;
    Ok(())
}
