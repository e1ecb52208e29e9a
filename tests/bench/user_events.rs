//! `make bench` section `user-events`: the release binary catching up on a 1-partition backlog of
//! mixed `chii_members` updates (made from the real fixture record), against MariaDB, Redis and
//! the local S3 server (moto). A part of `bench.rs`.

use super::*;
use fleet_harness::users::{Session, TestBucket, now, s3_endpoint};

/// What one `chii_members` update of the mix changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
enum Kind {
    /// `password_crypt`: one session revoked.
    Password,
    /// `new_notify`: one `PUBLISH`.
    Notify,
    /// `avatar`: one prefix listed and its copies deleted.
    Avatar,
    /// Another column: nothing to do.
    Other,
}

/// Out of every 20 updates: 1 password change, 10 notification counts, 1 avatar, 8 others
/// (`lastactivity` and the like, the bulk of Bangumi's member updates).
fn kind_of(i: u64) -> Kind {
    match mix(i) % 20 {
        0 => Kind::Password,
        1..=10 => Kind::Notify,
        11 => Kind::Avatar,
        _ => Kind::Other,
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct UserEventsRun {
    events: u64,
    users: u64,
    kinds: BTreeMap<String, u64>,
    copies_per_avatar: u64,
    fill: Fill,
    worker: Drain,
    sessions_revoked: u64,
    objects_left: u64,
}

pub(crate) async fn user_events_bench(o: &Options) -> anyhow::Result<UserEventsRun> {
    let events = o.user_events_events;
    let users = o.user_events_users;
    let copies: u64 = 2;
    let uid_of = move |i: u64| 1 + mix(i.wrapping_add(7)) % users;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut avatar_uids = HashSet::new();
    let mut password_uids = HashSet::new();
    for i in 0..events {
        let kind = kind_of(i);
        *kinds.entry(format!("{kind:?}")).or_default() += 1;
        match kind {
            Kind::Avatar => {
                avatar_uids.insert(uid_of(i));
            }
            Kind::Password => {
                password_uids.insert(uid_of(i));
            }
            _ => {}
        }
    }
    say(format!(
        "user-events: {users} users, one session each; {copies} resized copies of each of {} avatars",
        avatar_uids.len()
    ));
    let db = TestDatabase::create().await?;
    db.add_sessions_table().await?;
    let key_prefix = format!("{}:", unique("bench-ue"));
    let ts_s = (unix_now().saturating_sub(3_600)) as i64;
    let sessions: Vec<Session> = (1..=users)
        .map(|uid| Session {
            key: format!("bench-{uid}"),
            user_id: uid as u32,
            created_at: ts_s - 60,
            expired_at: now() + 86_400,
        })
        .collect();
    db.add_sessions(&key_prefix, &sessions).await?;
    let bucket = TestBucket::create(&s3_endpoint()).await?;
    let objects: Vec<String> = avatar_uids
        .iter()
        .flat_map(|uid| (0..copies).map(move |c| format!("/pic/user/l/bench/{uid}.jpg/{c}.jpg")))
        .collect();
    bucket.put(&objects).await?;

    let topic_prefix = format!("{}.", unique("bench"));
    let topic = format!("{topic_prefix}{MEMBERS_TOPIC}");
    create_topic(&topic, 1).await?;
    provisioned_family(user_events::FAMILY, &topic_prefix).await?;
    let template = MemberUpdates::load()?;
    say(format!(
        "filling {topic} with {events} mixed chii_members updates"
    ));
    let fill = tokio::task::spawn_blocking(move || {
        fill(&topic, 1, events, &|i| {
            let uid = uid_of(i);
            let mut out = template.event(uid, 900_000 + i);
            let mut v: Value = serde_json::from_slice(out.value.as_deref().unwrap_or_default())
                .unwrap_or_default();
            v["source"]["ts_ms"] = (ts_s * 1000).into();
            for image in ["before", "after"] {
                v[image]["password_crypt"] = "same".into();
                v[image]["new_notify"] = 0.into();
                v[image]["avatar"] = format!("bench/{uid}.jpg?r=1").into();
            }
            match kind_of(i) {
                Kind::Password => v["after"]["password_crypt"] = format!("new-{i}").into(),
                Kind::Notify => v["after"]["new_notify"] = (1 + i % 100).into(),
                Kind::Avatar => v["after"]["avatar"] = format!("bench/{uid}.jpg?r={i}").into(),
                Kind::Other => v["after"]["lastactivity"] = (ts_s + i as i64).into(),
            }
            out.value = Some(v.to_string().into_bytes());
            out
        })
    })
    .await??;

    let group = unique("bench-ue");
    let extra = [
        ("MYSQL_DB", db.name.clone()),
        ("S3_ENDPOINT", s3_endpoint()),
        ("S3_ACCESS_KEY", "bench".to_owned()),
        ("S3_SECRET_KEY", "bench".to_owned()),
        ("S3_IMAGE_RESIZE_BUCKET", bucket.name.clone()),
    ];
    let env = worker_env(&topic_prefix, &group, &key_prefix, &extra);
    let drain = catch_up("user-events", &group, &env, events).await?;
    let checked = now();
    let sessions_revoked = db
        .sessions()
        .await?
        .values()
        .filter(|s| s.expired_at <= checked)
        .count() as u64;
    let objects_left = bucket.keys().await?.len() as u64;
    if sessions_revoked != password_uids.len() as u64 || objects_left != 0 {
        say(format!(
            "  UNEXPECTED end state: {sessions_revoked} sessions revoked (want {}), {objects_left} copies left",
            password_uids.len()
        ));
    }
    let name = db.name.clone();
    if let Err(e) = db.drop_now().await {
        say(format!("  dropping database {name}: {e}"));
    }
    if let Err(e) = bucket.remove().await {
        say(format!("  removing bucket {}: {e}", bucket.name));
    }
    Ok(UserEventsRun {
        events,
        users,
        kinds,
        copies_per_avatar: copies,
        fill,
        worker: drain,
        sessions_revoked,
        objects_left,
    })
}

/// The section of BENCHMARKS.md.
pub(crate) fn markdown(m: &mut String, ue: &UserEventsRun) {
    let _ = writeln!(m, "\n## 3e. user-events catch-up (the release binary)\n");
    let _ = writeln!(
        m,
        "A 1-partition topic holds {} `chii_members` updates made from the real fixture record ({:.0} B per record), of \
         {} users, mixed: {}. Each user has one session (MariaDB + Redis); each avatar changed has {} resized copies in a \
         bucket of the local S3 server (moto, Python: every purge is a list and a delete request). Effects are applied \
         record by record. End state: {} sessions revoked, {} copies left.\n",
        ue.events,
        ue.fill.bytes as f64 / ue.events.max(1) as f64,
        ue.users,
        ue.kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        ue.copies_per_avatar,
        ue.sessions_revoked,
        ue.objects_left
    );
    let d = &ue.worker;
    let _ = writeln!(
        m,
        "| run | events/s (5–95%) | events/s (first→last) | RSS load / idle / peak | CPU µs/event |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|");
    let _ = writeln!(
        m,
        "| {} | {} | {} | {} | {} |",
        d.label,
        fmt_rate(d.per_s_mid),
        fmt_rate(d.per_s),
        d.rss.as_ref().map_or("–".into(), |r| format!(
            "{} / {} / {}",
            mib(r.loaded_kb),
            mib(r.idle_kb),
            mib(r.peak_kb)
        )),
        d.cpu_us_per_event.map_or("–".into(), |c| format!("{c:.1}"))
    );
}
