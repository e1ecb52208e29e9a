//! The scheduler against real Redis and MariaDB (bangumi-behaviour §6): each job's effect on golden
//! data whose expected values are worked out here from server-private's rules (comments say
//! which), the tick claims with several replicas, catch-up on start, and readiness.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::{free_port, worker_binary};
use fleet_harness::scenario::wait_for;
use fleet_harness::{http_response, redis, redis_uri, unique};
use redis::AsyncCommands;
use scheduler::daemon::{self, Attempt, Plan};
use scheduler::runlog::{self, Run};
use scheduler::schedule::{Schedule, zone};
use scheduler::trending::{self, Item};
use scheduler::{Job, Stores, oauth};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

fn stores(prefix: &str, mysql: &MySqlPool) -> Stores {
    Stores {
        redis: cdc_runtime::sink::redis(&redis_uri()).expect("redis"),
        mysql: mysql.clone(),
        prefix: prefix.to_owned(),
        cleanup_pause: Duration::ZERO,
    }
}

/// A pool that never connects, for jobs that touch only Redis.
fn no_mysql() -> MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .connect_lazy("mysql://root@127.0.0.1:1/none")
        .expect("lazy pool")
}

fn shanghai(pattern: &str) -> Schedule {
    Schedule::new(pattern, zone("Asia/Shanghai").expect("zone")).expect("pattern")
}

fn plan(job: Job, pattern: &str, catch_up: Duration) -> Plan {
    Plan {
        job,
        schedule: shanghai(pattern),
        catch_up,
        enabled: true,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// Trims (`tasks/timeline.ts`)

async fn fill(prefix: &str, key: &str, items: u64) {
    let mut conn = redis().await.expect("redis");
    let members: Vec<(u64, u64)> = (1..=items).map(|i| (i, i)).collect();
    for chunk in members.chunks(1000) {
        let _: () = conn
            .zadd_multiple(format!("{prefix}{key}"), chunk)
            .await
            .expect("zadd");
    }
}

async fn members(prefix: &str, key: &str) -> Vec<u64> {
    let mut conn = redis().await.expect("redis");
    conn.zrange(format!("{prefix}{key}"), 0, -1)
        .await
        .expect("zrange")
}

/// The newest `keep` of `1..=n` (scores = members).
fn newest(n: u64, keep: u64) -> Vec<u64> {
    (n.saturating_sub(keep) + 1..=n).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn trims_keep_exactly_the_newest_and_touch_nothing_else() {
    let prefix = format!("{}:", unique("it.sched.trim"));
    let stores = stores(&prefix, &no_mysql());
    let mut conn = redis().await.expect("redis");
    fill(&prefix, "tml:v3:inbox:0", 1500).await;
    fill(&prefix, "tml:v3:inbox:7", 350).await;
    fill(&prefix, "tml:v3:inbox:8", 150).await;
    fill(&prefix, "tml:v3:user:7", 300).await;
    // Bystanders: other patterns and a non-zset under the pattern.
    fill(&prefix, "tml:v3:other:7", 500).await;
    fill(&prefix, "tml:v2:inbox:7", 500).await;
    let _: () = conn
        .set(format!("{prefix}tml:v3:inbox:string"), "x")
        .await
        .expect("set");
    // Another prefix's keys are not ours to trim.
    let other = format!("{}:", unique("it.sched.trim.other"));
    fill(&other, "tml:v3:inbox:0", 1500).await;

    // ZREMRANGEBYRANK tml:v3:inbox:0 0 -1001: 1500 − 1000 removed.
    let done = stores.run(Job::TruncateGlobal).await.expect("global");
    assert_eq!(done, "trimmed 1 keys, removed 500 items");
    assert_eq!(members(&prefix, "tml:v3:inbox:0").await, newest(1500, 1000));
    assert_eq!(
        members(&prefix, "tml:v3:inbox:7").await.len(),
        350,
        "global touches only inbox:0"
    );

    // Every zset tml:v3:inbox:* keeps 200, inbox:0 included: (1000 − 200) + (350 − 200) + 0.
    let done = stores.run(Job::TruncateInbox).await.expect("inbox");
    assert_eq!(done, "trimmed 3 keys, removed 950 items");
    assert_eq!(
        members(&prefix, "tml:v3:inbox:0").await,
        newest(1500, 200),
        "upstream: inbox:* includes 0"
    );
    assert_eq!(members(&prefix, "tml:v3:inbox:7").await, newest(350, 200));
    assert_eq!(members(&prefix, "tml:v3:inbox:8").await, newest(150, 200));
    assert_eq!(
        members(&prefix, "tml:v3:user:7").await.len(),
        300,
        "inbox job spares user timelines"
    );

    // Every zset tml:v3:user:* keeps 200: 300 − 200.
    let done = stores.run(Job::TruncateUser).await.expect("user");
    assert_eq!(done, "trimmed 1 keys, removed 100 items");
    assert_eq!(members(&prefix, "tml:v3:user:7").await, newest(300, 200));

    assert_eq!(members(&prefix, "tml:v3:other:7").await.len(), 500);
    assert_eq!(members(&prefix, "tml:v2:inbox:7").await.len(), 500);
    let s: String = conn
        .get(format!("{prefix}tml:v3:inbox:string"))
        .await
        .expect("get");
    assert_eq!(s, "x");
    assert_eq!(members(&other, "tml:v3:inbox:0").await.len(), 1500);
    fleet_harness::delete_prefix_at(&redis_uri(), &prefix)
        .await
        .expect("clean");
    fleet_harness::delete_prefix_at(&redis_uri(), &other)
        .await
        .expect("clean");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tick_claimed_by_another_replica_is_not_run_here() {
    let prefix = format!("{}:", unique("it.sched.lock"));
    let stores = stores(&prefix, &no_mysql());
    fill(&prefix, "tml:v3:inbox:0", 1100).await;
    let mut conn = redis().await.expect("redis");
    let plan = plan(Job::TruncateGlobal, "*/10 * * * *", Duration::ZERO);
    let tick = plan
        .schedule
        .latest_at_or_before(jiff::Timestamp::now())
        .expect("tick");
    let lock = format!("{prefix}lock:truncate-global:{}", tick.as_second());
    let _: () = conn
        .set_ex(&lock, "another-replica", 60)
        .await
        .expect("lock");
    let attempt = daemon::attempt(&stores, &plan, tick, "this-replica")
        .await
        .expect("attempt");
    assert_eq!(attempt, Attempt::Taken);
    assert_eq!(
        members(&prefix, "tml:v3:inbox:0").await.len(),
        1100,
        "nothing trimmed"
    );
    let holder: String = conn.get(&lock).await.expect("get");
    assert_eq!(
        holder, "another-replica",
        "someone else's claim is left alone"
    );
    let mut manager = stores.redis.clone();
    assert_eq!(
        runlog::last(&mut manager, &prefix, Job::TruncateGlobal)
            .await
            .expect("run log"),
        None,
        "no run recorded"
    );
    fleet_harness::delete_prefix_at(&redis_uri(), &prefix)
        .await
        .expect("clean");
}

// ---------------------------------------------------------------------------------------------
// Trending (`lib/trending/subject.ts`, `lib/trending/topic.ts`)

const DAY: i64 = 86_400;

async fn get(prefix: &str, key: &str) -> Option<String> {
    let mut conn = redis().await.expect("redis");
    conn.get(format!("{prefix}{key}")).await.expect("get")
}

fn items(pairs: &[(u32, i64)]) -> Vec<Item> {
    pairs
        .iter()
        .map(|&(id, total)| Item { id, total })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn trending_ranks_as_server_private_and_respects_its_locks() {
    let db = TestDatabase::create_unmigrated()
        .await
        .expect("db")
        .with_scheduled_tables()
        .await
        .expect("tables");
    let prefix = format!("{}:", unique("it.sched.trending"));
    let stores = stores(&prefix, &db.pool);
    let now = unix_now();
    // Well inside and well outside the month (30 days) and the week (7 days): the job reads
    // its own clock a moment later.
    let (recent, old) = (now - 29 * DAY, now - 31 * DAY);
    let mut uid = 0;

    // Anime (2): counted by interest_doing_dateline > now − 30 days.
    db.add_ranked_subject(101, 2, 0).await.expect("rows");
    db.add_interests(&mut uid, 101, 3, recent, 0)
        .await
        .expect("rows");
    db.add_interests(&mut uid, 101, 4, old, recent)
        .await
        .expect("rows"); // touched lately, but not "doing": 0
    db.add_ranked_subject(102, 2, 0).await.expect("rows");
    db.add_interests(&mut uid, 102, 5, recent, recent)
        .await
        .expect("rows");
    db.add_ranked_subject(103, 2, 1).await.expect("rows"); // subject_ban = 1: left out
    db.add_interests(&mut uid, 103, 9, recent, recent)
        .await
        .expect("rows");
    db.add_ranked_subject(104, 2, 2).await.expect("rows"); // ban 2 is not 1: counted
    db.add_interests(&mut uid, 104, 1, recent, recent)
        .await
        .expect("rows");
    // Book (1): counted by interest_lasttouch.
    db.add_ranked_subject(201, 1, 0).await.expect("rows");
    db.add_interests(&mut uid, 201, 2, 0, recent)
        .await
        .expect("rows");
    db.add_ranked_subject(202, 1, 0).await.expect("rows");
    db.add_interests(&mut uid, 202, 4, recent, old)
        .await
        .expect("rows"); // "doing" lately, untouched: 0
    db.add_interests(&mut uid, 202, 1, 0, recent)
        .await
        .expect("rows");
    // Music (3): by interest_lasttouch too.
    db.add_ranked_subject(301, 3, 0).await.expect("rows");
    db.add_interests(&mut uid, 301, 1, 0, recent)
        .await
        .expect("rows");
    // Game (4): nothing recent, so an empty list.
    db.add_ranked_subject(401, 4, 0).await.expect("rows");
    db.add_interests(&mut uid, 401, 3, old, old)
        .await
        .expect("rows");
    // Real (6): ranked, but another run holds its lock.
    db.add_ranked_subject(601, 6, 0).await.expect("rows");
    db.add_interests(&mut uid, 601, 2, recent, recent)
        .await
        .expect("rows");
    // Type 5 is not ranked at all.
    db.add_ranked_subject(501, 5, 0).await.expect("rows");
    db.add_interests(&mut uid, 501, 2, recent, recent)
        .await
        .expect("rows");

    let mut conn = redis().await.expect("redis");
    let real_lock = format!("{prefix}lock:trending:subjects:6:month");
    let _: () = conn.set_ex(&real_lock, "1", 600).await.expect("lock");

    let done = stores.run(Job::TrendingSubjects).await.expect("trending");
    assert_eq!(
        done,
        "type 1: 2 items, type 2: 3 items, type 3: 1 items, type 4: 0 items, type 6: skipped, lock held"
    );
    // Upstream's JSON: `JSON.stringify([{id, total}, …])`, most collections first.
    let expected = [
        (1, r#"[{"id":201,"total":2},{"id":202,"total":1}]"#),
        (
            2,
            r#"[{"id":102,"total":5},{"id":101,"total":3},{"id":104,"total":1}]"#,
        ),
        (3, r#"[{"id":301,"total":1}]"#),
        (4, "[]"),
    ];
    for (subject_type, json) in expected {
        let key = trending::subjects_key(subject_type);
        assert_eq!(get(&prefix, &key).await.as_deref(), Some(json), "{key}");
        assert_eq!(
            get(&prefix, &format!("lock:{key}")).await,
            None,
            "lock:{key} released"
        );
    }
    assert_eq!(
        get(&prefix, "trending:subjects:6:month").await,
        None,
        "locked: not written"
    );
    let held: String = conn.get(&real_lock).await.expect("get");
    assert_eq!(held, "1", "another run's lock is left alone");
    assert_eq!(get(&prefix, "trending:subjects:5:month").await, None);
    let parsed: Vec<Item> = serde_json::from_str(
        &get(&prefix, &trending::subjects_key(2))
            .await
            .expect("type 2"),
    )
    .expect("json");
    assert_eq!(parsed, items(&[(102, 5), (101, 3), (104, 1)]));

    // Topics: posts with sbj_pst_dateline >= now − 7 days, per topic.
    db.add_posts(11, 3, now - 6 * DAY).await.expect("rows");
    db.add_posts(12, 2, now - 6 * DAY).await.expect("rows");
    db.add_posts(12, 5, now - 8 * DAY).await.expect("rows"); // older than a week
    db.add_posts(13, 1, now).await.expect("rows");
    let done = stores
        .run(Job::TrendingSubjectTopics)
        .await
        .expect("topics");
    assert_eq!(done, "3 items");
    assert_eq!(
        get(&prefix, trending::TOPICS_KEY).await.as_deref(),
        Some(r#"[{"id":11,"total":3},{"id":12,"total":2},{"id":13,"total":1}]"#)
    );
    assert_eq!(
        get(&prefix, "lock:trending:topics:subjects:week").await,
        None
    );

    fleet_harness::delete_prefix_at(&redis_uri(), &prefix)
        .await
        .expect("clean");
    db.drop_now().await.expect("drop");
}

// ---------------------------------------------------------------------------------------------
// Token cleanups (`tasks/oauth.ts`)

#[tokio::test(flavor = "multi_thread")]
async fn cleanups_delete_only_tokens_expired_over_a_week_ago_in_batches_of_1000() {
    let db = TestDatabase::create_unmigrated()
        .await
        .expect("db")
        .with_scheduled_tables()
        .await
        .expect("tables");
    // 2345 expired 8 days ago: deleted as 1000 + 1000 + 345. Kept: expired 6 days ago (within
    // the week's grace), and not expired yet.
    db.add_access_tokens("old", 2345, 8).await.expect("rows");
    db.add_access_tokens("grace", 5, 6).await.expect("rows");
    db.add_access_tokens("live", 3, -30).await.expect("rows");
    db.add_refresh_token("r-old-1", 8).await.expect("rows");
    db.add_refresh_token("r-old-2", 400).await.expect("rows");
    db.add_refresh_token("r-grace", 6).await.expect("rows");
    db.add_refresh_token("r-live", -1).await.expect("rows");

    let batches = oauth::cleanup(&db.pool, oauth::Tokens::Access, Duration::ZERO)
        .await
        .expect("cleanup");
    assert_eq!(batches, vec![1000, 1000, 345]);
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT access_token FROM chii_oauth_access_tokens ORDER BY access_token",
    )
    .fetch_all(&db.pool)
    .await
    .expect("left");
    assert_eq!(
        left,
        [
            "grace0", "grace1", "grace2", "grace3", "grace4", "live0", "live1", "live2"
        ]
    );

    let prefix = format!("{}:", unique("it.sched.oauth"));
    let stores = stores(&prefix, &db.pool);
    let done = stores
        .run(Job::CleanupExpiredRefreshTokens)
        .await
        .expect("refresh cleanup");
    assert_eq!(done, "deleted 2 rows in 1 batches");
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT refresh_token FROM chii_oauth_refresh_tokens ORDER BY refresh_token",
    )
    .fetch_all(&db.pool)
    .await
    .expect("left");
    assert_eq!(left, ["r-grace", "r-live"]);
    db.drop_now().await.expect("drop");
}

// ---------------------------------------------------------------------------------------------
// Ticks: once across replicas, catch-up on start

/// Scheduler processes, killed when dropped.
struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn scheduler_command(prefix: &str, db: &str) -> Command {
    let mut cmd = Command::new(worker_binary("scheduler").expect("scheduler binary"));
    cmd.env("REDIS_URI", redis_uri())
        .env("REDIS_KEY_PREFIX", prefix)
        .env("MYSQL_DB", db)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn history(stores: &Stores, job: Job) -> Vec<Run> {
    let mut redis = stores.redis.clone();
    let mut runs = runlog::history(&mut redis, &stores.prefix, job)
        .await
        .expect("history");
    runs.reverse();
    runs
}

/// Every tick from the first run's to the last, `period` seconds apart, ran exactly once, by
/// the replica holding its claim.
async fn assert_each_tick_once(stores: &Stores, job: Job, runs: &[Run], period: i64) {
    let ticks: Vec<i64> = runs.iter().map(|r| r.tick).collect();
    let first = ticks[0];
    let expected: Vec<i64> = (0..ticks.len() as i64)
        .map(|i| first + i * period)
        .collect();
    assert_eq!(
        ticks,
        expected,
        "{}: each tick once, none missing",
        job.name()
    );
    let mut conn = redis().await.expect("redis");
    for run in runs {
        assert_eq!(run.result, "ok", "{run:?}");
        let holder: String = conn
            .get(runlog::lock_key(&stores.prefix, job, run.tick))
            .await
            .expect("claim");
        assert_eq!(
            holder, run.replica,
            "the claim's holder ran tick {}",
            run.tick
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_run_each_tick_exactly_once() {
    let db = TestDatabase::create_unmigrated().await.expect("db");
    let prefix = format!("{}:", unique("it.sched.fleet"));
    let stores = stores(&prefix, &db.pool);
    let port = free_port().expect("port");
    let replicas = Replicas(
        (0..3)
            .map(|i| {
                let mut cmd = scheduler_command(&prefix, &db.name);
                cmd.env(
                    "SCHEDULER_SCHEDULES",
                    "heartbeat=* * * * * *;truncate-global=*/2 * * * * *",
                )
                .env(
                    "SCHEDULER_DISABLE",
                    "trending-subjects,trending-subject-topics,truncate-inbox,truncate-user",
                )
                .env("HOSTNAME", format!("replica-{i}"));
                if i == 0 {
                    cmd.env("HTTP_ADDR", format!("127.0.0.1:{port}"));
                }
                cmd.spawn().expect("spawn scheduler")
            })
            .collect(),
    );
    wait_for(
        "8 heartbeats and 4 global trims",
        Duration::from_secs(60),
        async || {
            history(&stores, Job::Heartbeat).await.len() >= 8
                && history(&stores, Job::TruncateGlobal).await.len() >= 4
        },
    )
    .await;
    let ready = http_response(&format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.0, 200, "{}", ready.1);
    let metrics = http_response(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("scheduler_period_seconds{task=\"truncate-global\"} 2\n"),
        "{metrics}"
    );
    drop(replicas);

    let heartbeats = history(&stores, Job::Heartbeat).await;
    assert_each_tick_once(&stores, Job::Heartbeat, &heartbeats, 1).await;
    let trims = history(&stores, Job::TruncateGlobal).await;
    assert_each_tick_once(&stores, Job::TruncateGlobal, &trims, 2).await;
    let beat: String = redis()
        .await
        .expect("redis")
        .get(format!("{prefix}task:heartbeat"))
        .await
        .expect("heartbeat");
    assert!(beat.parse::<i64>().expect("ms") > heartbeats[0].tick * 1000);
    fleet_harness::delete_prefix_at(&redis_uri(), &prefix)
        .await
        .expect("clean");
    db.drop_now().await.expect("drop");
}

/// The latest 04:00 in Shanghai (UTC+8, no daylight saving) at or before `now`, unix seconds.
fn latest_4am_shanghai(now: i64) -> i64 {
    let local = now + 8 * 3600;
    let mut at = local - local.rem_euclid(DAY) + 4 * 3600;
    if at > local {
        at -= DAY;
    }
    at - 8 * 3600
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_tick_runs_once_on_start_within_its_catch_up_window_only() {
    let prefix = format!("{}:", unique("it.sched.catchup"));
    let stores = stores(&prefix, &no_mysql());
    let expected_tick = latest_4am_shanghai(unix_now());
    let plans = vec![
        // Daily at 04:00, missed (nothing ran), within 48 hours: runs on start.
        plan(
            Job::TruncateInbox,
            "0 0 4 * * *",
            Duration::from_secs(48 * 3600),
        ),
        // Daily at 05:00 with a 1-second window: too old, skipped.
        plan(Job::TruncateUser, "0 0 5 * * *", Duration::from_secs(1)),
        // The marker that start-up is over.
        plan(Job::Heartbeat, "* * * * * *", Duration::ZERO),
    ];
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(daemon::run(stores.clone(), plans, shutdown.clone()));
    wait_for(
        "the catch-up run and two heartbeats",
        Duration::from_secs(30),
        async || {
            !history(&stores, Job::TruncateInbox).await.is_empty()
                && history(&stores, Job::Heartbeat).await.len() >= 2
        },
    )
    .await;
    shutdown.cancel();
    running.await.expect("daemon");

    let inbox = history(&stores, Job::TruncateInbox).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0].tick, expected_tick);
    assert!(
        history(&stores, Job::TruncateUser).await.is_empty(),
        "a tick older than the window is skipped"
    );
    // Another replica starting now finds the tick taken.
    let again = plan(
        Job::TruncateInbox,
        "0 0 4 * * *",
        Duration::from_secs(48 * 3600),
    );
    let tick = jiff::Timestamp::from_second(expected_tick).expect("tick");
    assert_eq!(
        daemon::attempt(&stores, &again, tick, "late-replica")
            .await
            .expect("attempt"),
        Attempt::Taken
    );
    fleet_harness::delete_prefix_at(&redis_uri(), &prefix)
        .await
        .expect("clean");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_names_an_unreachable_redis_and_mysql() {
    let port = free_port().expect("port");
    let dead = free_port().expect("dead port");
    let mut cmd = scheduler_command("unused:", "none");
    cmd.env("REDIS_URI", format!("redis://127.0.0.1:{dead}/0"))
        .env("MYSQL_PORT", dead.to_string())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "SCHEDULER_DISABLE",
            "heartbeat,truncate-global,trending-subject-topics",
        );
    let _replica = Replicas(vec![cmd.spawn().expect("spawn scheduler")]);
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut last = (0, String::new());
    wait_for(
        "/readyz naming both stores",
        Duration::from_secs(30),
        async || {
            if let Ok(response) = http_response(&url).await {
                last = response;
            }
            last.1.contains("redis 127.0.0.1") && last.1.contains("mysql 127.0.0.1")
        },
    )
    .await;
    assert_eq!(last.0, 503, "{}", last.1);
    let live = http_response(&format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(live.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_exits_with_the_jobs_result_and_records_it() {
    let prefix = format!("{}:", unique("it.sched.once"));
    let ok = scheduler_command(&prefix, "none")
        .args(["run", "heartbeat", "--once"])
        .stdout(Stdio::piped())
        .output()
        .expect("run");
    assert!(ok.status.success(), "{ok:?}");
    let printed = String::from_utf8_lossy(&ok.stdout);
    assert!(printed.starts_with("heartbeat: ok in "), "{printed}");
    // No such database: the job fails, exit 1, the error named with the job.
    let failed = scheduler_command(&prefix, "it_no_such_database")
        .args(["run", "trending-subject-topics", "--once"])
        .stdout(Stdio::piped())
        .output()
        .expect("run");
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let printed = String::from_utf8_lossy(&failed.stdout);
    assert!(
        printed.starts_with("trending-subject-topics: error in ")
            && printed.contains("Unknown database"),
        "{printed}"
    );
    let stores = stores(&prefix, &no_mysql());
    let mut redis = stores.redis.clone();
    let last = runlog::last(&mut redis, &prefix, Job::TrendingSubjectTopics)
        .await
        .expect("run log")
        .expect("a run");
    assert_eq!(last.result, runlog::ERROR);
    let listed = scheduler_command(&prefix, "none")
        .arg("list")
        .stdout(Stdio::piped())
        .output()
        .expect("list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let row = listed
        .lines()
        .find(|l| l.starts_with("trending-subject-topics "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains(" error "), "{row}");
    let row = listed
        .lines()
        .find(|l| l.starts_with("cleanup-expired-access-tokens "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains(" no ") && row.contains(" never "), "{row}");
    fleet_harness::delete_prefix_at(&redis_uri(), &prefix)
        .await
        .expect("clean");
}
