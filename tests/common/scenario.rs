//! The reliability suite's building blocks (`tests/reliability*.rs`): known event streams
//! ([`Stream`]), isolated runs of a family ([`Lane`]) with in-process or real-binary workers, the
//! fault-free reference run ([`fault_free_state`]) whose final state every scenario must
//! reproduce, and the per-scenario result line ([`report`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_invalidation::CacheInvalidation;
use cdc_topics::Family;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::events::{MemberUpdates, SubjectUpdates, TimelineItems, member_key};
use crate::mysql::{PrivateMariaDb, TestDatabase};
use crate::process::{KillOnDrop, signal, wait_exit, worker_command};
use crate::state::{State, dump_redis};
use crate::{
    Consumed, Out, committed, end_offsets, http_get, produce, producer, provisioned_family,
    read_all, redis_at, redis_uri, unique, wait_drained, worker_config,
};

pub const MEMBERS: &str = "debezium.chii.bangumi.chii_members";
pub const TIMELINE: &str = "debezium.chii.bangumi.chii_timeline";
pub const WRITER: &str = "timeline";
pub const SUBJECTS: &str = "debezium.chii.bangumi.chii_subjects";

/// Event counts are multiplied by this (`RELIABILITY_SCALE`, default 1).
pub fn scale() -> u64 {
    std::env::var("RELIABILITY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One scenario's result line, on stderr and appended to `RELIABILITY_REPORT`.
pub fn report(scenario: &str, events: usize, dead_letters: usize, started: Instant, detail: &str) {
    let line = format!(
        "RELIABILITY scenario={scenario} events={events} dead_letters={dead_letters} seconds={:.1} result=pass {detail}",
        started.elapsed().as_secs_f64()
    );
    eprintln!("{line}");
    if let Ok(path) = std::env::var("RELIABILITY_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// A known event stream: what to seed, then the records (topic without prefix, record).
#[derive(Default, Clone)]
pub struct Stream {
    /// Redis keys (without prefix) and values.
    pub redis: Vec<(String, String)>,
    /// `chii_friends` rows: (followed, follower).
    pub friends: Vec<(u64, u64)>,
    /// `chii_subjects` rows (each with an undated `chii_subject_fields` row).
    pub subjects: Vec<crate::subjects::Subject>,
    /// The records, in order.
    pub records: Vec<(&'static str, Out)>,
}

impl Stream {
    /// Member updates: each deletes `user:v2:slim:{uid}`. Keys for `n` uids plus 10 % that no
    /// event touches are seeded; every tenth uid is updated a second time later.
    pub fn members(n: u64) -> Self {
        let template = MemberUpdates::load().expect("template");
        let mut stream = Stream::default();
        for uid in 1..=n + n / 10 {
            stream.redis.push((member_key(uid), "cached".into()));
        }
        let mut pos = 1_000;
        for uid in 1..=n {
            pos += 1;
            stream.records.push((MEMBERS, template.event(uid, pos)));
            if uid % 10 == 0 && uid > 50 {
                pos += 1;
                stream
                    .records
                    .push((MEMBERS, template.event(uid - 50, pos)));
            }
        }
        stream
    }

    /// Timeline items 1..=n, item `i` by author `10_000 + i` (so most fan-outs look their
    /// followers up in MariaDB), followed by 3 of 300 users; inboxes of three users in four
    /// visited, authors' own timelines of every other author visited. Every fifth item is
    /// deleted 20 records later; one writer message (`statusSign`) per ten items.
    pub fn timeline(n: u64) -> Self {
        let items = TimelineItems::load().expect("templates");
        let mut stream = Stream::default();
        let visit = now() + 30 * 86_400;
        let author = |i: u64| 10_000 + i;
        for uid in (1..=300u64).filter(|u| u % 4 != 0) {
            stream
                .redis
                .push((format!("tml:visit:inbox:{uid}"), visit.to_string()));
        }
        for i in (1..=n).filter(|i| i % 2 == 0) {
            stream
                .redis
                .push((format!("tml:visit:user:{}", author(i)), visit.to_string()));
        }
        for i in 1..=n {
            let followers: BTreeSet<u64> = [7, 11, 13].iter().map(|m| (i * m) % 300 + 1).collect();
            stream
                .friends
                .extend(followers.into_iter().map(|f| (author(i), f)));
        }
        let mut pos = 10_000;
        let mut deletes = std::collections::VecDeque::new();
        for i in 1..=n {
            pos += 100;
            stream
                .records
                .push((TIMELINE, items.create(i, author(i), pos)));
            if i % 5 == 0 {
                deletes.push_back(i);
            }
            if deletes.len() > 4 || (i == n && !deletes.is_empty()) {
                while let Some(d) = deletes.pop_front() {
                    pos += 100;
                    stream
                        .records
                        .push((TIMELINE, items.delete(d, author(d), pos)));
                }
            }
            if i % 10 == 0 {
                let uid = i / 10;
                let message = serde_json::json!({
                    "op": "statusSign",
                    "message": {"uid": uid, "sign": format!("sign {i}"), "createdAt": 1_700_000_000 + i, "source": 5},
                });
                stream.records.push((
                    WRITER,
                    Out {
                        key: Some(uid.to_string().into_bytes()),
                        value: Some(message.to_string().into_bytes()),
                        ..Out::default()
                    },
                ));
            }
        }
        stream
    }
}

impl Stream {
    /// Subjects 1..=n, each dated by its infobox (`放送开始`, a different day each), updated
    /// once, and every third one again later.
    pub fn subjects(n: u64) -> Self {
        let updates = SubjectUpdates::load().expect("template");
        let mut stream = Stream::default();
        for i in 1..=n {
            stream.subjects.push(crate::subjects::Subject {
                id: u32::try_from(i).expect("subject id"),
                type_id: 2,
                platform: 1,
                infobox: format!(
                    "{{{{Infobox animanga/TVAnime\r\n|中文名= 作品{i}\r\n|放送开始= {}年{}月{}日\r\n}}}}",
                    1990 + i % 30,
                    1 + i % 12,
                    1 + i % 28
                ),
            });
        }
        let mut pos = 100_000;
        for i in 1..=n {
            pos += 1;
            stream.records.push((SUBJECTS, updates.event(i, pos)));
            if i % 3 == 0 && i > 30 {
                pos += 1;
                stream.records.push((SUBJECTS, updates.event(i - 30, pos)));
            }
        }
        stream
    }
}

/// One isolated run: its own topics, consumer group, Redis key prefix and (timeline) database.
pub struct Lane {
    pub family: Family,
    pub topic_prefix: String,
    pub key_prefix: String,
    pub group: String,
    pub redis_uri: String,
    pub db: Option<TestDatabase>,
    pub mysql_port: Option<u16>,
    /// The lane's Meilisearch (URL) and index-name prefix, for a family that uses one.
    pub meilisearch: Option<(String, String)>,
}

/// A worker running in this process.
pub struct Worker {
    pub running: cdc_runtime::Running,
    pub shutdown: CancellationToken,
}

impl Worker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.expect("clean shutdown");
    }

    pub async fn ready(&self) -> bool {
        http_get(&format!("http://{}/readyz", self.running.http_addr))
            .await
            .is_ok_and(|body| body.trim() == "ok")
    }
}

impl Lane {
    /// A lane of `family` on the Redis at `redis_uri`; a family that uses MySQL also gets a
    /// database (on `mariadb`, else the machine's MariaDB).
    pub async fn new(
        family: &str,
        name: &str,
        redis_uri: &str,
        mariadb: Option<&PrivateMariaDb>,
    ) -> Self {
        cdc_runtime::observe::init_tracing("text");
        let topic_prefix = format!("{}.", unique(&format!("it.rel.{name}")));
        let mut provisioned = provisioned_family(family, &topic_prefix)
            .await
            .expect("provision");
        if family == cache_invalidation::FAMILY {
            // Only the members topic: its three partitions are what the group splits.
            provisioned.topics.retain(|t| t.ends_with(MEMBERS));
        }
        let (db, mysql_port) = if provisioned.stores.contains(&cdc_topics::Store::Mysql) {
            match mariadb {
                Some(server) => (
                    Some(TestDatabase::create_on(server).await.expect("database")),
                    Some(server.port),
                ),
                None => (Some(TestDatabase::create().await.expect("database")), None),
            }
        } else {
            (None, None)
        };
        let meilisearch = provisioned
            .stores
            .contains(&cdc_topics::Store::Meilisearch)
            .then(|| {
                (
                    crate::meili::meili_url(),
                    crate::meili::unique_index_prefix(name),
                )
            });
        Self {
            family: provisioned,
            meilisearch,
            topic_prefix,
            key_prefix: format!("{}:", unique(&format!("it.rel.{name}"))),
            group: unique(&format!("it.rel.{name}.group")),
            redis_uri: redis_uri.to_owned(),
            db,
            mysql_port,
        }
    }

    /// The same lane with its Meilisearch at `url` (a test's own server).
    pub fn with_meilisearch_at(mut self, url: &str) -> Self {
        if let Some((at, _)) = &mut self.meilisearch {
            *at = url.to_owned();
        }
        self
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// The worker's settings as flags (Redis, database), plus `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["--redis-uri".into(), self.redis_uri.clone()];
        if let Some(db) = &self.db {
            args.extend(db.worker_args());
        }
        if let Some(port) = self.mysql_port {
            args.extend(["--mysql-port".into(), port.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn config(&self, group: &str, extra: &[&str]) -> cdc_runtime::WorkerConfig {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        worker_config(
            &self.family,
            &self.topic_prefix,
            &self.key_prefix,
            group,
            &args,
        )
        .expect("config")
    }

    /// A worker of the lane's family in consumer group `group`.
    pub async fn start_in(&self, group: &str, extra: &[&str]) -> Worker {
        let config = self.config(group, extra);
        let shutdown = CancellationToken::new();
        let running = if self.family.family == timeline::FAMILY {
            let handler =
                timeline::Timeline::connect(&config, &timeline::Settings::default(), group)
                    .expect("handler");
            cdc_runtime::start(&self.family, &config, handler, shutdown.clone()).await
        } else if self.family.family == search::FAMILY {
            let (url, index_prefix) = self
                .meilisearch
                .clone()
                .expect("a search lane's Meilisearch");
            let settings = search::Settings {
                meilisearch_url: url,
                meilisearch_key: crate::meili::meili_key(),
                meilisearch_index_prefix: index_prefix,
                meilisearch_timeout: Duration::from_secs(2),
            };
            let handler = search::Search::connect(config.clone(), settings)
                .await
                .expect("handler");
            cdc_runtime::start(&self.family, &config, handler, shutdown.clone()).await
        } else if self.family.family == notify::FAMILY {
            let handler = notify::Notify::connect(config.clone(), notify::Settings::default())
                .await
                .expect("handler");
            cdc_runtime::start(&self.family, &config, handler, shutdown.clone()).await
        } else if self.family.family == subject_date::FAMILY {
            let settings = subject_date::Settings {
                read_delay: Duration::ZERO,
            };
            let handler = subject_date::SubjectDate::connect(config.clone(), settings)
                .await
                .expect("handler");
            cdc_runtime::start(&self.family, &config, handler, shutdown.clone()).await
        } else {
            let handler = CacheInvalidation::connect(config.clone())
                .await
                .expect("handler");
            cdc_runtime::start(&self.family, &config, handler, shutdown.clone()).await
        }
        .expect("start");
        Worker { running, shutdown }
    }

    pub async fn start(&self, extra: &[&str]) -> Worker {
        self.start_in(&self.group, extra).await
    }

    /// Seeds Redis, `chii_friends` and `chii_subjects`.
    pub async fn prepare(&self, stream: &Stream) {
        let mut conn = redis_at(&self.redis_uri).await.expect("redis");
        for chunk in stream.redis.chunks(10_000) {
            let mut pipe = redis::pipe();
            for (k, v) in chunk {
                pipe.set(format!("{}{k}", self.key_prefix), v).ignore();
            }
            pipe.query_async::<()>(&mut conn).await.expect("seed");
        }
        if let Some(db) = &self.db {
            for chunk in stream.friends.chunks(5_000) {
                let values = vec!["(?, ?, 1, 0, '')"; chunk.len()].join(",");
                let sql = format!(
                    "INSERT INTO chii_friends (frd_uid, frd_fid, frd_grade, frd_dateline, frd_description) VALUES {values}"
                );
                let mut q = sqlx::query(&sql);
                for (followed, follower) in chunk {
                    q = q.bind(*follower).bind(*followed);
                }
                q.execute(&db.pool).await.expect("friends");
            }
            db.add_subjects(&stream.subjects).await.expect("subjects");
        }
    }

    /// Produces `records` in order; where each landed, as (topic, partition, offset).
    pub async fn produce(&self, records: &[(&'static str, Out)]) -> Vec<(String, i32, i64)> {
        let producer = producer().expect("producer");
        self.produce_with(&producer, records).await
    }

    pub async fn produce_with(
        &self,
        producer: &FutureProducer,
        records: &[(&'static str, Out)],
    ) -> Vec<(String, i32, i64)> {
        let mut landed = Vec::with_capacity(records.len());
        // Consecutive runs of one topic go together, keeping the stream's order per topic.
        let mut start = 0;
        while start < records.len() {
            let topic = records[start].0;
            let end = records[start..]
                .iter()
                .position(|(t, _)| *t != topic)
                .map_or(records.len(), |n| start + n);
            let outs: Vec<Out> = records[start..end].iter().map(|(_, o)| o.clone()).collect();
            for (p, o) in produce(producer, &self.topic(topic), &outs)
                .await
                .expect("produce")
            {
                landed.push((self.topic(topic), p, o));
            }
            start = end;
        }
        landed
    }

    /// Every topic the lane's workers consume (Debezium and service topics).
    pub fn topics(&self) -> Vec<String> {
        self.family.all_topics().map(str::to_owned).collect()
    }

    /// Waits until `group` has committed every topic of the lane to its end.
    pub async fn drained_in(&self, group: &str, within: Duration) {
        wait_drained(group, &self.topics(), self.family.partitions, within)
            .await
            .expect("drained");
    }

    pub async fn drained(&self) {
        self.drained_in(&self.group, Duration::from_secs(120)).await;
    }

    /// Everything the lane's run left: Redis under its prefix, its database's tables.
    pub async fn state(&self) -> State {
        let redis = dump_redis(&self.redis_uri, &self.key_prefix)
            .await
            .expect("dump redis");
        let mut tables = match &self.db {
            Some(db) => db.dump().await.expect("dump tables"),
            None => Default::default(),
        };
        if let Some((url, index_prefix)) = &self.meilisearch {
            let meili = crate::meili::Meili::new(url, &crate::meili::meili_key()).expect("client");
            for index in search::Index::ALL {
                let mut documents: Vec<String> = meili
                    .documents(&format!("{index_prefix}{}", index.name()))
                    .await
                    .expect("documents")
                    .iter()
                    .map(serde_json::Value::to_string)
                    .collect();
                documents.sort();
                tables.insert(format!("meilisearch {}", index.name()), documents);
            }
        }
        State { redis, tables }
    }

    pub fn dead_letters(&self) -> Vec<Consumed> {
        read_all(&self.family.dlq, self.family.partitions).expect("dlq")
    }

    pub fn dlq_depth(&self) -> i64 {
        end_offsets(&self.family.dlq, self.family.partitions)
            .expect("dlq")
            .iter()
            .sum()
    }

    /// The committed offsets of the lane's group, by topic (as [`Lane::topics`]) then partition.
    pub fn committed(&self) -> Vec<Vec<i64>> {
        self.topics()
            .iter()
            .map(|t| committed(&self.group, t, self.family.partitions).expect("committed"))
            .collect()
    }

    /// The true ends of the lane's topics, by topic then partition.
    pub fn ends(&self) -> Vec<Vec<i64>> {
        crate::ends_of(&self.topics(), self.family.partitions).expect("ends")
    }

    /// Deletes what a passing run left: its Redis keys and its database (a failing run keeps
    /// them for inspection). Its topics stay (the broker's storage is memory).
    pub async fn clean_up(self) {
        crate::delete_prefix_at(&self.redis_uri, &self.key_prefix)
            .await
            .expect("delete the lane's keys");
        if let Some(db) = self.db {
            db.drop_now().await.expect("drop database");
        }
        if let Some((url, index_prefix)) = &self.meilisearch {
            crate::meili::Meili::new(url, &crate::meili::meili_key())
                .expect("client")
                .delete_indexes_with_prefix(index_prefix)
                .await
                .expect("delete the lane's indexes");
        }
    }

    /// Runs the `dlq` tool on the lane with `args`; prints and returns its output.
    pub fn dlq(&self, args: &[&str]) -> std::process::Output {
        let audit = std::env::temp_dir().join(format!("{}.audit.jsonl", unique("rel-dlq")));
        let registry_url = crate::registry_url();
        let lane = crate::process::DlqLane {
            topic_prefix: &self.topic_prefix,
            group: &self.group,
            redis_uri: &self.redis_uri,
            key_prefix: &self.key_prefix,
            registry_url: &registry_url,
            audit: &audit,
        };
        let mut cmd = crate::process::dlq_command(args, &lane).expect("dlq binary");
        if let Some(db) = &self.db {
            cmd.env("MYSQL_DB", &db.name);
        }
        if let Some(port) = self.mysql_port {
            cmd.env("MYSQL_PORT", port.to_string());
        }
        let out = crate::process::dlq_output(cmd, args);
        let _ = std::fs::remove_file(&audit);
        out
    }

    /// Starts the real binary with `env`, waits for `first_effect` (or, checked every second,
    /// a commit past `previous`), then `kill -9`s it at a random point up to `max_delay`
    /// later. Checks that no committed offset went back; returns them, and the delay.
    pub async fn kill_9_after_first_effect(
        &self,
        env: &[(&str, &str)],
        max_delay: Duration,
        previous: &[Vec<i64>],
        mut first_effect: impl AsyncFnMut() -> bool,
    ) -> (Duration, Vec<Vec<i64>>) {
        let mut child = self.spawn(env);
        let mut checked = Instant::now();
        wait_for("a first effect", Duration::from_secs(60), async || {
            if first_effect().await {
                return true;
            }
            // No effect to see (only duplicates or deletes left): a commit shows progress
            // (slower to read).
            checked.elapsed() > Duration::from_secs(1) && {
                checked = Instant::now();
                self.committed().as_slice() > previous
            }
        })
        .await;
        let delay = rand::Rng::random_range(&mut rand::rng(), Duration::ZERO..max_delay);
        tokio::time::sleep(delay).await;
        signal(&child, "KILL").expect("kill -9");
        wait_exit(&mut child, Duration::from_secs(10))
            .await
            .expect("wait");
        let committed = self.committed();
        for (now, then) in committed.iter().flatten().zip(previous.iter().flatten()) {
            assert!(
                now >= then,
                "committed offsets went back: {previous:?} → {committed:?}"
            );
        }
        (delay, committed)
    }

    /// Runs the real binary until the lane is drained, stops it with SIGTERM and checks that
    /// it committed up to every partition's end.
    pub async fn finish_with_binary(&self) {
        let mut child = self.spawn(&[]);
        self.drained().await;
        signal(&child, "TERM").expect("term");
        wait_exit(&mut child, Duration::from_secs(20))
            .await
            .expect("wait");
        assert_eq!(
            self.committed(),
            self.ends(),
            "committed up to every partition's end"
        );
    }

    /// The real worker binary, as a child process.
    pub fn spawn(&self, extra_env: &[(&str, &str)]) -> KillOnDrop {
        let mut cmd = worker_command(
            &self.family.family,
            &self.topic_prefix,
            &self.group,
            &self.redis_uri,
            &self.key_prefix,
        )
        .expect("worker binary");
        if let Some(db) = &self.db {
            cmd.env("MYSQL_DB", &db.name);
        }
        if let Some(port) = self.mysql_port {
            cmd.env("MYSQL_PORT", port.to_string());
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        KillOnDrop(cmd.spawn().expect("spawn worker"))
    }
}

/// The state a fault-free, in-order run of `stream` leaves: a fresh lane on the machine's Redis
/// and MariaDB, one worker, no faults.
pub async fn fault_free_state(family: &str, name: &str, stream: &Stream) -> State {
    let lane = Lane::new(family, &format!("{name}.ref"), &redis_uri(), None).await;
    lane.prepare(stream).await;
    lane.produce(&stream.records).await;
    let worker = lane.start(&[]).await;
    lane.drained().await;
    worker.stop().await;
    assert_eq!(
        lane.dlq_depth(),
        0,
        "the fault-free run dead-lettered nothing"
    );
    let state = lane.state().await;
    lane.clean_up().await;
    state
}

pub async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 100 s) until `worker` is ready again after an outage ended; how long it took.
/// The retry backoff grows to the family's `retry.max` (30 s, jitter included) during a long
/// outage, and the Redis client adds its own reconnect backoff.
pub async fn recovery(worker: &Worker) -> Duration {
    let back = Instant::now();
    wait_for("ready again", Duration::from_secs(100), async || {
        worker.ready().await
    })
    .await;
    back.elapsed()
}

/// A dependency an outage scenario takes away and brings back.
pub trait Dependency {
    /// What it is, for messages.
    const NAME: &'static str;
    /// Takes it away.
    fn stop(&mut self) -> impl Future<Output = anyhow::Result<()>>;
    /// Brings it back, with its data.
    fn restart(&mut self) -> impl Future<Output = anyhow::Result<()>>;
}

impl Dependency for crate::process::PrivateRedis {
    const NAME: &'static str = "Redis";
    fn stop(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        crate::process::PrivateRedis::stop(self)
    }
    fn restart(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        crate::process::PrivateRedis::restart(self)
    }
}

impl Dependency for PrivateMariaDb {
    const NAME: &'static str = "MariaDB";
    fn stop(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        PrivateMariaDb::stop(self)
    }
    fn restart(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        PrivateMariaDb::restart(self)
    }
}

/// The faulty run of an outage scenario: a worker applies the first third of `stream`, then
/// `dependency` goes away for `length` while the rest arrives (the worker must turn not ready
/// and dead-letter nothing meanwhile), then it comes back and the worker drains the rest.
/// Returns how long the worker took to be ready again.
pub async fn run_through_outage<D: Dependency>(
    lane: &Lane,
    stream: &Stream,
    dependency: &mut D,
    length: Duration,
) -> Duration {
    lane.prepare(stream).await;
    let worker = lane.start(&[]).await;
    let third = stream.records.len() / 3;
    lane.produce(&stream.records[..third]).await;
    lane.drained().await;
    dependency
        .stop()
        .await
        .unwrap_or_else(|e| panic!("stop {}: {e:#}", D::NAME));
    let outage = Instant::now();
    lane.produce(&stream.records[third..]).await;
    wait_for(
        &format!("not ready while {} is down", D::NAME),
        Duration::from_secs(15),
        async || !worker.ready().await,
    )
    .await;
    hold_outage(lane, &worker, outage, length).await;
    dependency
        .restart()
        .await
        .unwrap_or_else(|e| panic!("restart {}: {e:#}", D::NAME));
    let recovered = recovery(&worker).await;
    lane.drained().await;
    worker.stop().await;
    recovered
}

/// Holds an outage for `length` from `since`, checking every second that the worker stays not
/// ready and dead-letters nothing.
async fn hold_outage(lane: &Lane, worker: &Worker, since: Instant, length: Duration) {
    // At least one check, even when setting up the outage took longer than `length` (a
    // loaded machine): the outage then simply lasts longer.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!worker.ready().await, "ready during the outage");
        if since.elapsed() >= length {
            break;
        }
    }
    assert_eq!(
        lane.dlq_depth(),
        0,
        "nothing dead-lettered during the outage"
    );
}
