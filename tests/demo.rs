//! `make demo`: the fleet on its embedded default. Provisions every family's topics on the local
//! broker (under a fresh prefix), seeds Redis with the cache keys the fixtures will touch and
//! MariaDB with the subjects, characters and persons they leave (dates unset) and the users of
//! the notify golden input, publishes the real Debezium fixtures plus one malformed record and
//! `notify.v1` messages (the golden input's, from its privacy cases on), and, for user-events,
//! web sessions in MariaDB and Redis and resized avatars in a bucket of the local S3 server;
//! runs each family's real binary until its
//! consumer group has committed everything, prints what happened, runs each of the scheduler's
//! jobs once on rows seeded for them (`scheduler run <job> --once`, then `scheduler list`), and
//! stops the workers with SIGTERM.
//!
//! Last, a cutover from a legacy worker's consumer group ([`cutover`]); `demo cutover` (`make
//! cutover-demo`) runs only that step.
//!
//! Everything lives under a per-run prefix (topics `demo-….`, Redis keys `demo-…:`), so runs
//! never interfere with each other or with the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleet_harness::expected::CacheInvalidation as Expected;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::meili::{Meili, meili_key, meili_url, unique_index_prefix};
use fleet_harness::process::{KillOnDrop, free_port};
use fleet_harness::subjects::{self, Date};
use fleet_harness::users::{TestBucket, demo_seed, s3_endpoint};
use fleet_harness::{
    Out, brokers, end_offsets, http_get, keys_under, produce, producer, read_all, redis_uri,
    registry_url, require_broker, seed_keys, unique, wait_drained,
};

#[path = "demo_cutover.rs"]
mod cutover;

/// A family's worker process, started by the demo.
struct Worker {
    family: cdc_topics::Family,
    child: KillOnDrop,
    metrics: String,
    log: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match std::env::args().nth(1).as_deref() {
        None => run().await,
        Some("cutover") => cutover_step(1).await,
        Some(other) => Err(anyhow::anyhow!(
            "unknown argument {other:?}: `demo` runs everything, `demo cutover` the cutover only"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\ndemo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let run = unique("demo");
    let topic_prefix = format!("{run}.");
    let key_prefix = format!("{run}:");
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("demo binary has no directory")?
        .to_path_buf();
    let log_dir = log_dir()?;

    println!("Bangumi CDC fleet demo — run {run}");
    require_broker().await?;
    println!(
        "  broker {}, Redis {}, schema registry {}",
        brokers(),
        redis_uri(),
        registry_url()
    );

    // Each family under the run's prefix, with a consumer group of the run's own.
    let families: Vec<cdc_topics::Family> = cdc_topics::all()?
        .into_iter()
        .map(|mut f| {
            f.group = format!("{}.{run}", f.group);
            f.with_topic_prefix(&topic_prefix)
        })
        .collect();
    let runnable: Vec<&cdc_topics::Family> = families
        .iter()
        .filter(|f| bin_dir.join(&f.family).exists())
        .collect();
    for f in &families {
        if !runnable.iter().any(|r| r.family == f.family) {
            println!("  family {} — binary not built yet, skipped", f.family);
        }
    }

    step(1, "provisioning topics from topics/");
    for family in &runnable {
        let out = Command::new(bin_dir.join(&family.family))
            .arg("provision")
            .env("KAFKA_BROKERS", brokers())
            .env("KAFKA_CONFIG__BATCH_NUM_MESSAGES", "1")
            .env("KAFKA_TOPIC_PREFIX", &topic_prefix)
            .env("LOG_FORMAT", "text")
            .output()?;
        if !out.status.success() {
            bail!(
                "{} provision: {}",
                family.family,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let created = String::from_utf8_lossy(&out.stdout).lines().count();
        println!(
            "    {:<20} {created} topics ({} partitions each), DLQ {}",
            family.family, family.partitions, family.dlq
        );
    }

    step(2, "seeding Redis with the cache keys the fixtures touch");
    // The cache keys (the timeline's own `tml:*` bystanders of the golden tests would collide
    // with the timeline worker's sorted sets here, so they are left out).
    let mut expected = Expected::load()?;
    expected.seeded.retain(|k| !k.starts_with("tml:"));
    seed_keys(&key_prefix, &expected.seeded).await?;
    println!("    {} keys under {key_prefix}", expected.seeded.len());
    // Users 1–4 have visited their timelines recently (visit keys hold an absolute expiry), so
    // the timeline worker fans new items out to their caches.
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 86_400;
    let visits: Vec<String> = (1..=4)
        .flat_map(|uid| {
            [
                format!("tml:visit:inbox:{uid}"),
                format!("tml:visit:user:{uid}"),
            ]
        })
        .collect();
    let mut conn = fleet_harness::redis().await?;
    let mut pipe = redis::pipe();
    for key in &visits {
        pipe.set(format!("{key_prefix}{key}"), expiry).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    println!(
        "    {} visit keys (users 1–4 visited their timelines)",
        visits.len()
    );
    // The timeline worker looks followers up in MariaDB: a database of the run's own, with the
    // follow graph of the fixtures' timeline scenario (users 2, 3 and 4 follow user 1).
    let db = fleet_harness::mysql::TestDatabase::create().await?;
    db.add_followers(1, &[2, 3, 4]).await?;
    println!(
        "    MariaDB database {} (chii_friends: 2, 3, 4 follow 1)",
        db.name
    );
    // The subject-date and search workers read entities back from MariaDB: the rows the
    // fixtures leave, with every subject's date unset so subject-date's work shows.
    let tables = [
        "chii_subjects",
        "chii_subject_fields",
        "chii_characters",
        "chii_persons",
    ];
    db.add_rows_as_the_fixtures_leave_them(&tables).await?;
    sqlx::query(
        "UPDATE chii_subject_fields SET field_year = 0, field_mon = 0, field_date = '0000-00-00'",
    )
    .execute(&db.pool)
    .await?;
    let subjects = subjects::as_the_fixtures_leave_them()?;
    println!(
        "    {}: the rows the fixtures leave ({} subjects, their dates unset)",
        tables.join(", "),
        subjects.len()
    );
    // The notify worker's recipients: the golden input's users, privacy settings, friendships
    // and fields.
    let notify_input = fleet_harness::notify::Input::load()?;
    notify_input.seed(&db).await?;
    println!(
        "    chii_members, chii_memberfields: {} users of fixtures/expected/notify-input.json",
        notify_input.memberfields.len()
    );
    // The user-events worker revokes sessions and purges resized avatars: a session before each
    // password change and a login after it, and resized copies under every purged prefix in a
    // bucket of the run's own.
    db.add_sessions_table().await?;
    let (sessions, objects) = demo_seed(&fleet_harness::expected::UserEvents::load()?);
    db.add_sessions(&key_prefix, &sessions).await?;
    let bucket = TestBucket::create(&s3_endpoint()).await?;
    bucket.put(&objects).await?;
    println!(
        "    chii_os_web_sessions: {} sessions (cached in Redis); S3 {} bucket {}: {} resized avatars",
        sessions.len(),
        s3_endpoint(),
        bucket.name,
        objects.len()
    );
    // The search worker's indexes, under the run's own prefix.
    let meili = Meili::local()?;
    meili.require().await?;
    let index_prefix = unique_index_prefix(&run);
    println!("    Meilisearch {} (indexes {index_prefix}*)", meili.url());

    step(
        3,
        "publishing real Debezium records (fixtures/debezium/json.jsonl)",
    );
    let producer = producer()?;
    let mut published: BTreeMap<&str, usize> = BTreeMap::new();
    for f in fixtures::load(Encoding::Json)? {
        let topic = format!("{topic_prefix}{}", f.topic);
        // A topic may feed several families (chii_subjects: cache-invalidation, subject-date).
        let consumers: Vec<&str> = runnable
            .iter()
            .filter(|fam| fam.all_topics().any(|t| t == topic))
            .map(|fam| fam.family.as_str())
            .collect();
        if !consumers.is_empty() {
            produce(&producer, &topic, &[f.record]).await?;
        }
        for family in consumers {
            *published.entry(family).or_default() += 1;
        }
    }
    if let Some(family) = runnable.iter().find(|f| f.family == "cache-invalidation") {
        let poison = Out {
            key: Some(br#"{"subject_id":1}"#.to_vec()),
            value: Some(br#"{"before":null,"after":{"subject_id":1},"op":"#.to_vec()),
            ..Out::default()
        };
        produce(&producer, &family.topics[0], &[poison]).await?;
        *published.entry(family.family.as_str()).or_default() += 1;
        println!(
            "    + 1 truncated JSON record on {} (to show the DLQ path)",
            family.topics[0]
        );
    }
    if let Some(family) = runnable.iter().find(|f| f.family == notify::FAMILY) {
        // The golden input's messages but its sweep of every type (49 to one user).
        let messages: Vec<Out> = notify_input
            .messages
            .iter()
            .filter(|m| !m.note.starts_with("each type's hash"))
            .map(|m| m.out())
            .collect();
        produce(&producer, &family.service_topics[0], &messages).await?;
        *published.entry(family.family.as_str()).or_default() += messages.len();
    }
    for (family, n) in &published {
        println!("    {family:<20} {n} records");
    }

    step(4, "starting the workers");
    let mut workers = Vec::new();
    for family in &runnable {
        let port = free_port()?;
        let log = log_dir.join(format!("{run}-{}.log", family.family));
        let child = Command::new(bin_dir.join(&family.family))
            .env("KAFKA_BROKERS", brokers())
            .env("KAFKA_CONFIG__BATCH_NUM_MESSAGES", "1")
            .env("KAFKA_TOPIC_PREFIX", &topic_prefix)
            .env("KAFKA_GROUP_ID", &family.group)
            .env("REDIS_URI", redis_uri())
            .env("REDIS_KEY_PREFIX", &key_prefix)
            .env("MYSQL_DB", &db.name)
            .env("MEILISEARCH_URL", meili_url())
            .env("MEILISEARCH_KEY", meili_key())
            .env("MEILISEARCH_INDEX_PREFIX", &index_prefix)
            .env("SCHEMA_REGISTRY_URL", registry_url())
            .env("S3_ENDPOINT", s3_endpoint())
            .env("S3_ACCESS_KEY", "demo")
            .env("S3_SECRET_KEY", "demo")
            .env("S3_IMAGE_RESIZE_BUCKET", &bucket.name)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("KAFKA_CONFIG__SESSION_TIMEOUT_MS", "2000")
            .env("KAFKA_CONFIG__HEARTBEAT_INTERVAL_MS", "500")
            .env("COMMIT_INTERVAL", "200ms")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map(KillOnDrop)
            .with_context(|| format!("starting {}", family.family))?;
        let metrics = format!("http://127.0.0.1:{port}/metrics");
        println!(
            "    {:<20} pid {:<7} metrics {metrics}",
            family.family,
            child.id()
        );
        workers.push(Worker {
            family: (*family).clone(),
            child,
            metrics,
            log,
        });
    }

    step(
        5,
        "waiting until every consumer group has committed everything",
    );
    let started = Instant::now();
    for w in &workers {
        let topics: Vec<String> = w.family.all_topics().map(str::to_owned).collect();
        wait_drained(
            &w.family.group,
            &topics,
            w.family.partitions,
            Duration::from_secs(90),
        )
        .await
        .with_context(|| {
            format!(
                "{} did not drain; log: {}",
                w.family.family,
                w.log.display()
            )
        })?;
    }
    println!("    drained in {:.1} s", started.elapsed().as_secs_f64());

    println!("\nSummary");
    println!(
        "  {:<20} {:>9} {:>9} {:>9} {:>7} {:>14}",
        "family", "published", "applied", "skipped", "stale", "dead-lettered"
    );
    for w in &workers {
        let outcomes = scrape_outcomes(&w.metrics).await?;
        let get = |o: &str| outcomes.get(o).copied().unwrap_or(0.0);
        println!(
            "  {:<20} {:>9} {:>9} {:>9} {:>7} {:>14}",
            w.family.family,
            published
                .get(w.family.family.as_str())
                .copied()
                .unwrap_or(0),
            get("applied"),
            get("skipped"),
            get("stale"),
            get("dead_lettered")
        );
    }
    let left = keys_under(&key_prefix).await?;
    let timeline_keys: Vec<&String> = left.iter().filter(|k| k.starts_with("tml:v3:")).collect();
    println!(
        "  Redis: {} timeline sorted sets written: {}",
        timeline_keys.len(),
        timeline_keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let deleted: Vec<&String> = expected
        .seeded
        .iter()
        .filter(|k| !left.contains(k))
        .collect();
    println!(
        "  Redis: {} of {} seeded cache keys deleted, e.g. {}",
        deleted.len(),
        expected.seeded.len(),
        deleted
            .iter()
            .take(4)
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The timeline worker caches followers it read from MariaDB under `user:followers:{uid}`,
    // so such a key may be back after cache-invalidation deleted it.
    let refilled: BTreeSet<&String> = expected
        .records
        .iter()
        .flat_map(|r| &r.keys)
        .filter(|k| k.starts_with("user:followers:") && left.contains(*k))
        .collect();
    if !refilled.is_empty() {
        println!(
            "  Redis: refilled by the timeline fan-out from MariaDB since: {}",
            refilled
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let dated: Vec<(u32, Date)> = db
        .subject_dates()
        .await?
        .into_iter()
        .filter(|(_, date)| *date != Date::unset())
        .collect();
    println!(
        "  MariaDB: {} of {} subjects dated from their infobox, e.g. {}",
        dated.len(),
        subjects.len(),
        dated
            .iter()
            .filter(|(id, _)| *id > 100)
            .take(4)
            .map(|(id, d)| format!("{id} → {}/{}/{}", d.year, d.month, d.date))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let notifications = fleet_harness::notify::state(&db).await?;
    println!(
        "  MariaDB: {} notifications in chii_notify ({} fields), e.g.",
        notifications.chii_notify.len(),
        notifications.chii_notify_field.len()
    );
    for (uid, from, _, kind, hash, rid, title, _, _) in notifications.chii_notify.iter().take(5) {
        println!("    user {uid} ← user {from}: type {kind}, field {hash}/{rid} {title:?}");
    }
    let counters: Vec<String> = notifications
        .chii_members
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(uid, n)| format!("{uid}: {n}"))
        .collect();
    println!("    new_notify by user: {}", counters.join(", "));
    let now = fleet_harness::users::now();
    let rows = db.sessions().await?;
    let revoked: Vec<&str> = rows
        .values()
        .filter(|s| s.expired_at <= now)
        .map(|s| s.key.as_str())
        .collect();
    println!(
        "  MariaDB: {} of {} sessions revoked by password changes: {}; kept (logins after the change): {}",
        revoked.len(),
        rows.len(),
        revoked.join(", "),
        rows.values()
            .filter(|s| s.expired_at > now)
            .map(|s| s.key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let session_keys: Vec<String> = sessions
        .iter()
        .map(|s| format!("chii:web:session:{}", s.key))
        .collect();
    println!(
        "  Redis: {} of {} cached sessions left",
        fleet_harness::existing(&key_prefix, &session_keys)
            .await?
            .len(),
        session_keys.len()
    );
    let left_objects = bucket.keys().await?;
    println!(
        "  S3: {} of {} resized avatars purged from {} (left: {})",
        objects.len() - left_objects.len(),
        objects.len(),
        bucket.name,
        if left_objects.is_empty() {
            "none".to_owned()
        } else {
            left_objects.join(", ")
        }
    );
    let subjects_index = format!("{index_prefix}subjects");
    let query = "BOCCHI THE ROCK!";
    let found = meili
        .search_raw(
            &subjects_index,
            &serde_json::json!({ "q": query, "limit": 1 }),
        )
        .await?;
    match found["hits"].get(0) {
        Some(hit) => println!(
            "  Meilisearch: {} documents in {subjects_index}; searching {query:?} finds subject {} {} (aliases {})",
            meili.documents(&subjects_index).await?.len(),
            hit["id"],
            hit["name"],
            hit["aliases"]
        ),
        None => println!("  Meilisearch: searching {query:?} in {subjects_index} finds nothing"),
    }
    for w in &workers {
        let dlq = end_offsets(&w.family.dlq, w.family.partitions)?
            .iter()
            .sum::<i64>();
        println!("  DLQ {}: {dlq} record(s)", w.family.dlq);
        if dlq > 0 {
            for letter in read_all(&w.family.dlq, w.family.partitions)? {
                println!(
                    "    {}: {}",
                    letter.header("cdc.dlq.error.class").unwrap_or_default(),
                    letter.header("cdc.dlq.error.message").unwrap_or_default()
                );
            }
        }
        println!("  metrics: {} (log {})", w.metrics, w.log.display());
    }

    step(
        6,
        "the scheduler: each job once (`scheduler run <job> --once`), then `scheduler list`",
    );
    let db = db.with_scheduled_tables().await?;
    scheduler_jobs(&bin_dir, &db, &key_prefix).await?;

    step(7, "stopping the workers with SIGTERM");
    let db_name = db.name.clone();
    db.drop_now().await?;
    bucket.remove().await?;
    println!("    dropped database {db_name}");
    meili.delete_indexes_with_prefix(&index_prefix).await?;
    println!("    deleted indexes {index_prefix}*");
    for mut w in workers {
        let stopping = Instant::now();
        Command::new("kill")
            .arg("-TERM")
            .arg(w.child.id().to_string())
            .status()?;
        let status = w.child.wait()?;
        println!(
            "    {:<20} exited {} after {:.1} s",
            w.family.family,
            status.code().map_or("by signal".into(), |c| c.to_string()),
            stopping.elapsed().as_secs_f64()
        );
    }
    cutover_step(8).await
}

/// `$CDC_STATE_DIR/log`, created.
fn log_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("CDC_STATE_DIR").unwrap_or_else(|_| "/var/tmp/bangumi-cdc".into()),
    )
    .join("log");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn cutover_step(n: u32) -> anyhow::Result<()> {
    step(
        n,
        "cutover: a legacy worker's group hands the rest of the stream to cache-invalidation",
    );
    require_broker().await?;
    cutover::run(&log_dir()?).await
}

/// Seeds what the scheduler's jobs read (collections of two anime, posts in two subject
/// topics, expired and live OAuth tokens, a global inbox over its 1000), runs each job once
/// with the binary as the on-call would, and prints each result, `scheduler list`, and the
/// trending keys written.
async fn scheduler_jobs(
    bin_dir: &Path,
    db: &fleet_harness::mysql::TestDatabase,
    key_prefix: &str,
) -> anyhow::Result<()> {
    let binary = bin_dir.join("scheduler");
    if !binary.exists() {
        println!("    scheduler binary not built yet, skipped");
        return Ok(());
    }
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let (yesterday, last_month) = (now - 86_400, now - 40 * 86_400);
    let mut uid = 1_000_000;
    db.add_ranked_subject(9_000_001, 2, 0).await?;
    db.add_interests(&mut uid, 9_000_001, 3, yesterday, yesterday)
        .await?;
    db.add_ranked_subject(9_000_002, 2, 0).await?;
    db.add_interests(&mut uid, 9_000_002, 1, yesterday, yesterday)
        .await?;
    db.add_interests(&mut uid, 9_000_002, 5, last_month, last_month)
        .await?;
    db.add_posts(1, 2, yesterday).await?;
    db.add_posts(2, 4, yesterday).await?;
    db.add_access_tokens("demo-expired-", 1500, 8).await?;
    db.add_access_tokens("demo-live-", 2, -30).await?;
    db.add_refresh_token("demo-expired", 8).await?;
    let mut conn = fleet_harness::redis().await?;
    let inbox = format!("{key_prefix}tml:v3:inbox:0");
    let items: Vec<(i64, String)> = (0..1200).map(|i| (i, format!("demo-{i}"))).collect();
    redis::cmd("ZADD")
        .arg(&inbox)
        .arg(&items)
        .query_async::<()>(&mut conn)
        .await?;
    println!(
        "    seeded: 2 anime with collections, 6 topic posts, 1500 expired + 2 live access tokens, \
         1 expired refresh token, {} items in tml:v3:inbox:0",
        items.len()
    );
    let scheduler = |args: &[&str]| {
        let mut cmd = Command::new(&binary);
        cmd.args(args)
            .env("REDIS_URI", redis_uri())
            .env("REDIS_KEY_PREFIX", key_prefix)
            .env("MYSQL_DB", &db.name)
            .env("SCHEDULER_CLEANUP_PAUSE", "100ms")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn");
        cmd
    };
    for job in scheduler::Job::ALL {
        let out = scheduler(&["run", job.name(), "--once"]).output()?;
        if !out.status.success() {
            bail!(
                "scheduler run {} --once: {}{}",
                job.name(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        print!("    {}", String::from_utf8_lossy(&out.stdout));
    }
    let out = scheduler(&["list"]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    for key in [
        scheduler::trending::subjects_key(2),
        scheduler::trending::TOPICS_KEY.to_owned(),
    ] {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("{key_prefix}{key}"))
            .query_async(&mut conn)
            .await?;
        println!("    {key} = {}", value.unwrap_or_else(|| "(none)".into()));
    }
    Ok(())
}

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

/// `cdc_messages_total` summed by outcome, from a worker's `/metrics`.
async fn scrape_outcomes(url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(fleet_harness::metric_sums(
        &http_get(url).await?,
        "cdc_messages_total",
        "outcome",
    ))
}
