//! The user-events family against the real broker, Redis, MariaDB and S3 server (moto):
//! - golden: every `chii_members` record of the real Debezium fixtures (JSON and Avro) leaves
//!   sessions, Redis, the bucket and the published messages as
//!   `fixtures/expected/user-events.json` (derived independently, by
//!   `fixtures/expected/user_events.py`) says: password changes with 0, 1 and many sessions,
//!   `new_notify` up and down, avatars with and without `hd=1` over several listing pages, an
//!   update touching none of the three, all three at once; then the whole stream again (a
//!   replay) changes no state, and a session created after a password change (a later login)
//!   survives both;
//! - Redis, MariaDB or S3 unreachable: readiness false, nothing lost, resumes when it is back;
//! - S3 refusing the deletes (`AccessDenied`): the record is dead-lettered naming bucket and
//!   prefix, the partition moves on; once deletes are allowed, `dlq replay --to direct` purges.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cdc_runtime::dead_letter::header;
use cdc_topics::Family;
use fleet_harness::expected::{UserEffects, UserEvents as Expected};
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::mysql::TestDatabase;
use fleet_harness::process::{DlqLane, dlq_command, dlq_output};
use fleet_harness::proxy::BrokerProxy;
use fleet_harness::users::{NotifySubscriber, Session, TestBucket, now, s3_endpoint};
use fleet_harness::{
    Out, existing, http_get, produce_in_order, provisioned_family, read_all, redis_uri, unique,
    wait_drained, worker_config,
};
use tokio_util::sync::CancellationToken;
use user_events::{FAMILY, Settings, UserEvents};

const WITHIN: Duration = Duration::from_secs(60);
/// Keys per listing page: every purged prefix holds more, so each is listed over several pages.
const PAGE_SIZE: usize = 2;
/// Resized copies seeded under each purged prefix.
const COPIES: [&str; 3] = ["100x100.jpg", "200x200.jpg", "300x300.webp"];

/// Where the worker reaches its stores.
struct Stores {
    redis_uri: String,
    mysql_port: u16,
    s3_endpoint: String,
}

impl Stores {
    fn direct() -> Self {
        Self {
            redis_uri: redis_uri(),
            mysql_port: std::env::var("MYSQL_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(3306),
            s3_endpoint: s3_endpoint(),
        }
    }
}

/// One test's family, database, bucket and key prefix.
struct Setup {
    prefix: String,
    family: Family,
    db: TestDatabase,
    bucket: TestBucket,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let prefix = unique(name);
        let family = provisioned_family(FAMILY, &prefix).await.expect("family");
        let db = TestDatabase::create().await.expect("database");
        db.add_sessions_table().await.expect("sessions table");
        let bucket = TestBucket::create(&s3_endpoint()).await.expect("bucket");
        Self {
            prefix,
            family,
            db,
            bucket,
        }
    }

    /// A worker of the family in `group`, reaching its stores at `stores`.
    async fn start(
        &self,
        group: &str,
        stores: &Stores,
        bucket: &str,
    ) -> (CancellationToken, cdc_runtime::Running) {
        self.start_with(group, stores, bucket, &[]).await
    }

    /// [`Setup::start`] with `extra` flags.
    async fn start_with(
        &self,
        group: &str,
        stores: &Stores,
        bucket: &str,
        extra: &[&str],
    ) -> (CancellationToken, cdc_runtime::Running) {
        let port = stores.mysql_port.to_string();
        let mut args = vec![
            "--mysql-db",
            self.db.name.as_str(),
            "--mysql-port",
            &port,
            "--redis-uri",
            &stores.redis_uri,
        ];
        args.extend(extra);
        let config =
            worker_config(&self.family, &self.prefix, &self.prefix, group, &args).expect("config");
        let settings = Settings {
            s3_endpoint: stores.s3_endpoint.clone(),
            s3_access_key: "test".into(),
            s3_secret_key: "test".into(),
            s3_image_resize_bucket: bucket.to_owned(),
            s3_region: "us-east-1".into(),
            s3_path_style: true,
            s3_list_page_size: PAGE_SIZE,
            s3_timeout: Duration::from_secs(2),
        };
        let handler = UserEvents::connect(config.clone(), settings)
            .await
            .expect("handler");
        let shutdown = CancellationToken::new();
        let running = cdc_runtime::start(&self.family, &config, handler, shutdown.clone())
            .await
            .expect("start");
        (shutdown, running)
    }

    /// The fixtures' `chii_members` records in `encoding`, with their fixture line.
    fn records(&self, encoding: Encoding) -> Vec<(u64, String, Out)> {
        fixtures::load(encoding)
            .expect("fixtures")
            .into_iter()
            .map(|f| (f.seq, format!("{}{}", self.prefix, f.topic), f.record))
            .filter(|(_, topic, _)| self.family.topics.contains(topic))
            .collect()
    }

    async fn drained(&self, group: &str) {
        wait_drained(group, &self.family.topics, self.family.partitions, WITHIN)
            .await
            .expect("drained");
    }

    fn dead_letters(&self) -> Vec<fleet_harness::Consumed> {
        read_all(&self.family.dlq, self.family.partitions).expect("dlq")
    }
}

async fn produce(records: &[(u64, String, Out)]) {
    let records: Vec<(String, Out)> = records
        .iter()
        .map(|(_, topic, out)| (topic.clone(), out.clone()))
        .collect();
    produce_in_order(&records).await.expect("produce");
}

/// What a golden run starts from and must end at.
struct World {
    /// Every session seeded.
    sessions: Vec<Session>,
    /// The keys of those the fixtures revoke.
    revoked: BTreeSet<String>,
    /// Every object seeded.
    objects: Vec<String>,
    /// Those left after the purges.
    remaining: Vec<String>,
    /// Per channel, the messages in order.
    published: BTreeMap<String, Vec<String>>,
    /// How many messages in all.
    publish_count: usize,
}

/// The sessions and objects a golden run seeds and what the expectations leave of them.
fn world(expected: &Expected) -> World {
    let effects: Vec<(u32, &UserEffects)> = expected
        .records
        .iter()
        .filter_map(|r| r.effects.as_ref().map(|e| (r.uid, e)))
        .collect();
    let mut revoke_until: BTreeMap<u32, i64> = BTreeMap::new();
    for (uid, e) in &effects {
        if let Some(t) = e.revoke_created_until {
            let until = revoke_until.entry(*uid).or_insert(t);
            *until = (*until).max(t);
        }
    }
    assert_eq!(
        revoke_until.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "the fixtures change the passwords of users 1–5"
    );
    // Sessions before each user's password change: user 3 none, user 4 one, user 5 many.
    let before_counts = BTreeMap::from([(1, 2), (2, 1), (3, 0), (4, 1), (5, 4)]);
    let valid_until = now() + 7 * 86_400;
    let mut sessions = Vec::new();
    let mut revoked = BTreeSet::new();
    for (uid, until) in &revoke_until {
        for n in 0..before_counts[uid] {
            let key = format!("u{uid}-old-{n}");
            revoked.insert(key.clone());
            sessions.push(Session {
                key,
                user_id: *uid,
                // The last one in the very second of the change: revoked too.
                created_at: until - n,
                expired_at: valid_until,
            });
        }
        // A login after the change (with the new password): never revoked.
        sessions.push(Session {
            key: format!("u{uid}-new"),
            user_id: *uid,
            created_at: until + 1,
            expired_at: valid_until,
        });
    }
    // A user whose password does not change.
    sessions.push(Session {
        key: "u9-bystander".into(),
        user_id: 9,
        created_at: 1_600_000_000,
        expired_at: valid_until,
    });

    let prefixes: BTreeSet<&String> = effects
        .iter()
        .flat_map(|(_, e)| &e.purge_prefixes)
        .collect();
    assert!(
        prefixes.iter().any(|p| p.starts_with("/hd/"))
            && prefixes.iter().any(|p| !p.starts_with("/hd/")),
        "the fixtures purge avatars with and without hd=1"
    );
    let mut objects: Vec<String> = prefixes
        .iter()
        .flat_map(|p| COPIES.iter().map(move |c| format!("{p}/{c}")))
        .collect();
    // Bystanders: another user's copies, a key without the leading `/`, the hd copies of an
    // avatar purged without hd only.
    objects.extend([
        "/pic/user/l/000/00/00/4.jpg/100x100.jpg".to_owned(),
        "pic/user/l/000/00/00/3.jpg/100x100.jpg".to_owned(),
        "/hd/pic/user/l/000/00/00/3.jpg/100x100.jpg".to_owned(),
    ]);
    objects.sort();
    let remaining = objects
        .iter()
        .filter(|o| !prefixes.iter().any(|p| o.starts_with(p.as_str())))
        .cloned()
        .collect();

    let mut published: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut publish_count = 0;
    for (_, e) in &effects {
        if let Some(p) = &e.publish {
            published
                .entry(p.channel.clone())
                .or_default()
                .push(p.message.clone());
            publish_count += 1;
        }
    }
    assert!(publish_count >= 3, "new_notify up and down");
    World {
        sessions,
        revoked,
        objects,
        remaining,
        published,
        publish_count,
    }
}

fn by_channel(messages: Vec<(String, String)>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (channel, message) in messages {
        out.entry(channel).or_default().push(message);
    }
    out
}

/// Checks every effect against `world`: sessions and their Redis copies, the objects left in
/// the bucket, and the next messages published (byte for byte).
async fn assert_effects(
    s: &Setup,
    world: &World,
    notifications: &mut NotifySubscriber,
    when: &str,
) {
    assert_sessions(s, world, when).await;
    assert_eq!(
        s.bucket.keys().await.expect("keys"),
        world.remaining,
        "objects {when}"
    );
    let published = notifications
        .next(world.publish_count, WITHIN)
        .await
        .expect("published");
    assert_eq!(
        by_channel(published),
        world.published,
        "published {when}, byte for byte"
    );
}

/// Checks sessions and their Redis copies against `world`.
async fn assert_sessions(s: &Setup, world: &World, when: &str) {
    let rows = s.db.sessions().await.expect("sessions");
    let checked_at = now();
    for seeded in &world.sessions {
        let row = &rows[&seeded.key];
        if world.revoked.contains(&seeded.key) {
            assert!(
                row.expired_at <= checked_at,
                "{when}: {} (created {}) must be expired: {row:?}",
                seeded.key,
                seeded.created_at
            );
        } else {
            assert_eq!(row, seeded, "{when}: {} must be untouched", seeded.key);
        }
    }
    let keys: Vec<String> = world
        .sessions
        .iter()
        .map(|s| format!("chii:web:session:{}", s.key))
        .collect();
    let cached = existing(&s.prefix, &keys).await.expect("redis");
    let want: BTreeSet<String> = world
        .sessions
        .iter()
        .filter(|x| !world.revoked.contains(&x.key))
        .map(|x| format!("chii:web:session:{}", x.key))
        .collect();
    assert_eq!(cached, want, "{when}: cached sessions");
}

async fn golden_run(encoding: Encoding) {
    let s = Setup::new("ue-golden").await;
    let expected = Expected::load().expect("expected");
    let world = world(&expected);
    s.db.add_sessions(&s.prefix, &world.sessions)
        .await
        .expect("sessions");
    s.bucket.put(&world.objects).await.expect("objects");
    let mut notifications = NotifySubscriber::start(&s.prefix).await.expect("subscribe");

    let records = s.records(encoding);
    let seqs: Vec<u64> = records
        .iter()
        .filter(|(_, _, out)| out.value.is_some())
        .map(|(seq, ..)| *seq)
        .collect();
    let want_seqs: Vec<u64> = expected.records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs, want_seqs,
        "the expectations cover every chii_members record"
    );
    produce(&records).await;
    let group = unique("ue-golden");
    let (shutdown, running) = s.start(&group, &Stores::direct(), &s.bucket.name).await;
    s.drained(&group).await;

    let metrics = http_get(&format!("http://{}/metrics", running.http_addr))
        .await
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("user_events_avatar_purge_enabled") && l.ends_with(" 1")),
        "the purge is on: {metrics}"
    );
    assert_effects(&s, &world, &mut notifications, "after one pass").await;
    let after_one_pass = s.db.sessions().await.expect("sessions");

    // The whole stream again (a replay): no state changes, a later login is not revoked, the
    // messages are published again.
    produce(&records).await;
    s.drained(&group).await;
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    assert_eq!(
        s.db.sessions().await.expect("sessions"),
        after_one_pass,
        "a replay changes no session"
    );
    assert_effects(&s, &world, &mut notifications, "after a replay").await;
    assert!(s.dead_letters().is_empty(), "nothing dead-lettered");
    s.db.drop_now().await.expect("drop");
    s.bucket.remove().await.expect("bucket removed");
}

/// In shadow mode (`RUN_MODE=shadow`) every effect of the golden stream is planned — the
/// sessions' update (its transaction rolled back) and `DEL`s, the purges, the publishes — and
/// none applied: sessions, their Redis copies and the bucket stay as seeded.
#[tokio::test(flavor = "multi_thread")]
async fn shadow_plans_every_effect_and_applies_none() {
    let s = Setup::new("ue-shadow").await;
    let world = world(&Expected::load().expect("expected"));
    s.db.add_sessions(&s.prefix, &world.sessions)
        .await
        .expect("sessions");
    s.bucket.put(&world.objects).await.expect("objects");
    let sessions_before = s.db.sessions().await.expect("sessions");
    produce(&s.records(Encoding::Json)).await;
    let group = unique("ue-shadow");
    let plans = std::env::temp_dir().join(unique("ue-shadow-plans"));
    let plans_arg = plans.to_string_lossy().into_owned();
    let (shutdown, running) = s
        .start_with(
            &group,
            &Stores::direct(),
            &s.bucket.name,
            &["--run-mode", "shadow", "--shadow-plans-dir", &plans_arg],
        )
        .await;
    s.drained(&format!("{group}.shadow")).await;
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");

    assert_eq!(s.db.sessions().await.expect("sessions"), sessions_before);
    assert_eq!(s.bucket.keys().await.expect("keys"), world.objects);
    let session_keys: Vec<String> = world
        .sessions
        .iter()
        .map(|x| format!("chii:web:session:{}", x.key))
        .collect();
    assert_eq!(
        existing(&s.prefix, &session_keys).await.expect("redis"),
        session_keys.iter().cloned().collect::<BTreeSet<_>>(),
        "every cached session is still there"
    );
    assert!(s.dead_letters().is_empty(), "nothing dead-lettered");

    let text = std::fs::read_to_string(plans.join(format!("{FAMILY}.plans.jsonl"))).expect("plans");
    let mut deleted = BTreeSet::new();
    let mut published = Vec::new();
    let mut purged = 0;
    let mut updates = 0;
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        for effect in line["effects"].as_array().expect("effects") {
            let key = effect["key"].as_str().unwrap_or_default();
            match effect["kind"].as_str().unwrap_or_default() {
                "del" => {
                    deleted.insert(
                        key.trim_start_matches(&format!("{}chii:web:session:", s.prefix))
                            .to_owned(),
                    );
                }
                "update" => updates += 1,
                "delete_objects" => purged += 1,
                "publish" => published.push((
                    key.trim_start_matches(&s.prefix).to_owned(),
                    effect["args"][0].as_str().unwrap_or_default().to_owned(),
                )),
                other => panic!("unexpected effect {other}: {effect}"),
            }
        }
    }
    assert_eq!(deleted, world.revoked, "the revoked sessions' keys");
    assert!(updates >= 5, "the sessions of users 1–5 expired: {updates}");
    assert!(purged > 0, "avatar purges planned");
    assert_eq!(
        by_channel(published),
        world.published,
        "the messages, byte for byte"
    );
    let _ = std::fs::remove_dir_all(&plans);
    s.db.drop_now().await.expect("drop");
    s.bucket.remove().await.expect("bucket removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_json_and_a_replay() {
    golden_run(Encoding::Json).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_avro_and_a_replay() {
    golden_run(Encoding::Avro).await;
}

/// The fixture record of user 1 changing password, `new_notify` and avatar at once.
const ALL_THREE: u64 = 295;

/// `dependency` (`redis`, `mysql` or `s3`) unreachable while a record changing all three
/// arrives: `/readyz` false naming it, nothing applied, nothing dead-lettered; once it is back
/// the record is applied whole.
async fn outage(dependency: &str) {
    let s = Setup::new(&format!("ue-{dependency}-down")).await;
    let expected = Expected::load().expect("expected");
    let effects = expected
        .records
        .iter()
        .find(|r| r.seq == ALL_THREE)
        .and_then(|r| r.effects.clone())
        .expect("record 295 changes all three");
    let until = effects.revoke_created_until.expect("a password change");
    let sessions = vec![Session {
        key: "u1-old".into(),
        user_id: 1,
        created_at: until - 60,
        expired_at: now() + 86_400,
    }];
    s.db.add_sessions(&s.prefix, &sessions)
        .await
        .expect("sessions");
    let objects: Vec<String> = effects
        .purge_prefixes
        .iter()
        .map(|p| format!("{p}/100x100.jpg"))
        .collect();
    s.bucket.put(&objects).await.expect("objects");
    let mut notifications = NotifySubscriber::start(&s.prefix).await.expect("subscribe");

    let mut stores = Stores::direct();
    let target = match dependency {
        "redis" => "127.0.0.1:6379".to_owned(),
        "mysql" => format!("127.0.0.1:{}", stores.mysql_port),
        _ => s3_endpoint().trim_start_matches("http://").to_owned(),
    };
    let mut proxy = BrokerProxy::start(0, &target).await.expect("proxy");
    match dependency {
        "redis" => stores.redis_uri = format!("redis://{}/0", proxy.addr()),
        "mysql" => stores.mysql_port = proxy.port,
        _ => stores.s3_endpoint = format!("http://{}", proxy.addr()),
    }
    proxy.down().await;

    let record: Vec<(u64, String, Out)> = s
        .records(Encoding::Json)
        .into_iter()
        .filter(|(seq, ..)| *seq == ALL_THREE)
        .collect();
    let group = unique("ue-outage");
    let (shutdown, running) = s.start(&group, &stores, &s.bucket.name).await;
    produce(&record).await;
    fleet_harness::scenario::wait_for(
        &format!("/readyz to name {dependency}"),
        WITHIN,
        async || {
            running
                .health
                .not_ready()
                .iter()
                .any(|r| r.contains(dependency))
        },
    )
    .await;
    assert!(
        !running.health.is_ready(),
        "not ready while {dependency} is down"
    );

    proxy.up().await.expect("proxy up");
    s.drained(&group).await;
    let rows = s.db.sessions().await.expect("sessions");
    assert!(rows["u1-old"].expired_at <= now(), "the session is revoked");
    assert!(
        existing(&s.prefix, &["chii:web:session:u1-old".to_owned()])
            .await
            .expect("redis")
            .is_empty(),
        "its cached copy is gone"
    );
    assert!(
        s.bucket.keys().await.expect("keys").is_empty(),
        "the copies are purged"
    );
    let publish = effects.publish.expect("a new_notify change");
    assert!(
        notifications
            .next(1, WITHIN)
            .await
            .expect("published")
            .contains(&(publish.channel, publish.message)),
        "the count is published"
    );
    assert!(running.health.is_ready(), "ready again");
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    assert!(s.dead_letters().is_empty(), "nothing dead-lettered");
    s.db.drop_now().await.expect("drop");
    s.bucket.remove().await.expect("bucket removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_loses_nothing() {
    outage("redis").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_down_loses_nothing() {
    outage("mysql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_down_loses_nothing() {
    outage("s3").await;
}

/// S3 refusing to delete (a bucket policy denying `s3:DeleteObject`: `AccessDenied` for each
/// key): the avatar change is dead-lettered as permanent, its message naming bucket and prefix;
/// the partition moves on (the next record is applied).
#[tokio::test(flavor = "multi_thread")]
async fn s3_access_denied_is_dead_lettered_naming_bucket_and_prefix() {
    let s = Setup::new("ue-denied").await;
    let mut notifications = NotifySubscriber::start(&s.prefix).await.expect("subscribe");
    let expected = Expected::load().expect("expected");
    let effects_of = |seq: u64| {
        expected
            .records
            .iter()
            .find(|r| r.seq == seq)
            .and_then(|r| r.effects.clone())
            .expect("effects")
    };
    // User 5's avatar gets hd=1, then user 4's new_notify changes, both on partition 0.
    let (avatar, notify) = (292, 288);
    let prefix = effects_of(avatar).purge_prefixes[0].clone();
    let publish = effects_of(notify).publish.expect("publish");
    s.bucket
        .put(&[format!("{prefix}/100x100.jpg")])
        .await
        .expect("objects");
    s.bucket.deny_deletes().await.expect("policy");
    let records = s.records(Encoding::Json);
    let pick = |seq: u64| {
        let (seq, topic, out) = records
            .iter()
            .find(|(n, ..)| *n == seq)
            .cloned()
            .expect("record");
        (
            seq,
            topic,
            Out {
                partition: Some(0),
                ..out
            },
        )
    };
    let group = unique("ue-denied");
    let (shutdown, running) = s.start(&group, &Stores::direct(), &s.bucket.name).await;
    produce(&[pick(avatar), pick(notify)]).await;
    assert_eq!(
        notifications.next(1, WITHIN).await.expect("published"),
        [(publish.channel, publish.message)],
        "the record after the refused one is applied"
    );
    s.drained(&group).await;
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    let letters = s.dead_letters();
    assert_eq!(letters.len(), 1, "one dead letter");
    let message = letters[0].header(header::ERROR_MESSAGE).expect("message");
    assert_eq!(
        letters[0].header(header::ERROR_CLASS).as_deref(),
        Some("permanent")
    );
    assert!(
        message.contains(&format!("{:?}", s.bucket.name))
            && message.contains(&format!("{prefix:?}"))
            && message.contains("AccessDenied"),
        "the message names bucket, prefix and the refusal: {message}"
    );
    assert_eq!(
        s.bucket.keys().await.expect("keys").len(),
        1,
        "the copy is still there"
    );

    // The rights fixed, the letter replayed through the family's handler: the copy is purged.
    s.bucket.allow_deletes().await.expect("policy removed");
    let audit = std::env::temp_dir().join(format!("{}.jsonl", unique("ue-audit")));
    let lane = DlqLane {
        topic_prefix: &s.prefix,
        group: &group,
        redis_uri: &redis_uri(),
        key_prefix: &s.prefix,
        registry_url: &fleet_harness::registry_url(),
        audit: &audit,
    };
    let args = ["replay", "--family", FAMILY, "--to", "direct"];
    let mut dlq = dlq_command(&args, &lane).expect("dlq binary");
    dlq.env("MYSQL_DB", &s.db.name)
        .env("S3_ENDPOINT", s3_endpoint())
        .env("S3_ACCESS_KEY", "test")
        .env("S3_SECRET_KEY", "test")
        .env("S3_IMAGE_RESIZE_BUCKET", &s.bucket.name);
    let out = dlq_output(dlq, &args);
    assert_eq!(out.status.code(), Some(0), "dlq replay --to direct");
    assert!(
        s.bucket.keys().await.expect("keys").is_empty(),
        "the replayed letter purged the copy"
    );
    let _ = std::fs::remove_file(&audit);
    s.db.drop_now().await.expect("drop");
    s.bucket.remove().await.expect("bucket removed");
}
