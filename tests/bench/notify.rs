//! The bench's `notify` section: the real `notify` binary catching up on a 1-partition
//! `notify.v1` topic, beside a bare sqlx loop doing server-private's work per message
//! (`Notify.create`: one transaction per message, its reads and writes one statement each),
//! and the tables checked to end the same after both.

use anyhow::Context;
use fleet_harness::mysql::TestDatabase;
use fleet_harness::notify::{Message, add_memberfields, add_members, state};
use fleet_harness::{create_topic, provisioned_family, unique};
use serde::Serialize;

use super::{Drain, LoopProgress, catch_up, fmt_rate, mix, ratio, say, worker_env};

/// The types the bench's messages have: replies, mentions, friend requests, patches.
const TYPES: [(i32, u8); 6] = [(1, 1), (2, 1), (8, 7), (23, 1), (14, 14), (35, 21)];

/// What the section measured.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyRun {
    pub messages: u64,
    pub recipients: u64,
    /// Messages that notify (the rest are to their own sender).
    pub notifications: u64,
    pub batch_max_messages: u64,
    pub worker: Drain,
    /// One transaction per message, as server-private's consumer.
    pub legacy: Drain,
    pub same_end_state: bool,
}

/// Message `i` of `n` to `recipients` users: from another user (rarely itself), one of
/// [`TYPES`], about one of n / 4 threads (so fields are found as often as inserted), one ms
/// apart.
fn message(i: u64, n: u64, recipients: u64) -> Message {
    let user_id = 1 + mix(i) % recipients;
    let from_user_id = 1 + mix(i ^ 0xF00D) % recipients;
    let (kind, _) = TYPES[(mix(i ^ 0xBEEF) % TYPES.len() as u64) as usize];
    let mid = 1 + mix(i ^ 0xCAFE) % (n / 4).max(1);
    Message {
        user_id: u32::try_from(user_id).unwrap_or(1),
        from_user_id: u32::try_from(from_user_id).unwrap_or(1),
        kind,
        mid: u32::try_from(mid).unwrap_or(1),
        title: format!("topic {mid}"),
        raw_hex: None,
        timestamp_ms: 1_700_000_000_000 + i64::try_from(i).unwrap_or(0),
        note: String::new(),
    }
}

/// Empties what the worker writes, and the counters.
async fn reset(db: &TestDatabase) -> anyhow::Result<()> {
    for sql in [
        "DELETE FROM chii_notify",
        "DELETE FROM chii_notify_field",
        "DELETE FROM cdc_applied_messages",
        "UPDATE chii_members SET new_notify = 0",
    ] {
        sqlx::query(sql).execute(&db.pool).await?;
    }
    Ok(())
}

/// server-private's work per message through sqlx, each message its own transaction: read the
/// recipient's settings, find the field, insert it if missing, insert the notification, raise
/// the counter, commit. (Every recipient has the default privacy: no friendship is read.)
async fn legacy_loop(db: &TestDatabase, messages: &[Message]) -> anyhow::Result<Drain> {
    let mut progress = LoopProgress::new(
        "legacy loop: Notify.create per message, one transaction each",
        messages.len() as u64,
    );
    for (i, m) in messages.iter().enumerate() {
        if m.user_id != m.from_user_id {
            let hash = TYPES
                .iter()
                .find(|(t, _)| *t == m.kind)
                .map(|(_, h)| *h)
                .context("type")?;
            let mut tx = db.pool.begin().await?;
            let _settings: Option<(String, String)> =
                sqlx::query_as("SELECT privacy, blocklist FROM chii_memberfields WHERE uid = ?")
                    .bind(m.user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let field: Option<u32> = sqlx::query_scalar(
                "SELECT ntf_id FROM chii_notify_field WHERE ntf_hash = ? AND ntf_rid = ? LIMIT 1",
            )
            .bind(hash)
            .bind(m.mid)
            .fetch_optional(&mut *tx)
            .await?;
            let field = match field {
                Some(id) => u64::from(id),
                None => sqlx::query(
                    "INSERT INTO chii_notify_field (ntf_hash, ntf_rid, ntf_title) VALUES (?, ?, ?)",
                )
                .bind(hash)
                .bind(m.mid)
                .bind(notify::rules::stored_title(&m.title))
                .execute(&mut *tx)
                .await?
                .last_insert_id(),
            };
            sqlx::query(
                "INSERT INTO chii_notify (nt_uid, nt_from_uid, nt_status, nt_type, nt_mid, nt_related_id, nt_dateline) VALUES (?, ?, 1, ?, ?, ?, ?)",
            )
            .bind(m.user_id)
            .bind(m.from_user_id)
            .bind(m.kind)
            .bind(field)
            .bind(m.mid)
            .bind(m.timestamp_ms / 1000)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE chii_members SET new_notify = new_notify + 1 WHERE uid = ?")
                .bind(m.user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        progress.done(i as u64 + 1);
    }
    Ok(progress.drain("messages"))
}

/// The section.
pub async fn run(n: u64, recipients: u64) -> anyhow::Result<NotifyRun> {
    say(format!("notify: {recipients} recipients, {n} messages"));
    let db = TestDatabase::create().await?;
    let users: Vec<u32> = (1..=u32::try_from(recipients)?).collect();
    add_members(&db, users.iter().map(|u| (*u, 0))).await?;
    add_memberfields(&db, users.iter().map(|u| (*u, "", ""))).await?;
    let messages: Vec<Message> = (0..n).map(|i| message(i, n, recipients)).collect();
    let notifications = messages
        .iter()
        .filter(|m| m.user_id != m.from_user_id)
        .count() as u64;

    let family = cdc_topics::by_name(notify::FAMILY)?.context("no notify family")?;
    let topic_prefix = format!("{}.", unique("bench"));
    let topic = format!("{topic_prefix}{}", family.service_topics[0]);
    create_topic(&topic, 1).await?;
    provisioned_family(notify::FAMILY, &topic_prefix).await?;
    let outs: Vec<_> = messages.iter().map(Message::out).collect();
    let t = topic.clone();
    let fill = tokio::task::spawn_blocking(move || {
        fleet_harness::bulk::fill(&t, 1, n, &|i| outs[i as usize].clone())
    })
    .await??;
    say(format!("  filled {topic} in {:.1} s", fill.seconds));

    let group = unique("bench-notify");
    let env = worker_env(
        &topic_prefix,
        &group,
        &format!("{group}:"),
        &[("MYSQL_DB", db.name.clone())],
    );
    let drain = catch_up("notify", &group, &env, n).await?;
    let by_worker = state(&db).await?;

    say("notify: the legacy's work per message (one transaction each)");
    reset(&db).await?;
    let legacy = legacy_loop(&db, &messages).await?;
    let by_loop = state(&db).await?;
    let same = by_worker == by_loop && by_worker.chii_notify.len() as u64 == notifications;
    if !same {
        say("  the worker and the loop left DIFFERENT tables");
    }
    let name = db.name.clone();
    if let Err(e) = db.drop_now().await {
        say(format!("  dropping database {name}: {e}"));
    }
    Ok(NotifyRun {
        messages: n,
        recipients,
        notifications,
        batch_max_messages: family.batch.max_messages as u64,
        worker: drain,
        legacy,
        same_end_state: same,
    })
}

/// The summary table's rows.
pub fn summary_rows(r: &NotifyRun) -> String {
    let mut rows = format!(
        "| notify catch-up, 1 partition | {} messages/s | one transaction per message (sqlx) {} messages/s | {} | ≥ 0.7× |\n",
        fmt_rate(r.worker.per_s_mid),
        fmt_rate(r.legacy.per_s_mid),
        ratio(r.worker.per_s_mid, r.legacy.per_s_mid)
    );
    if let Some(rss) = &r.worker.rss {
        rows.push_str(&format!(
            "| notify RSS, draining | {} under load, {} idle after, {} peak | – | – | ≤ 16 MB steady |\n",
            super::mib(rss.loaded_kb),
            super::mib(rss.idle_kb),
            super::mib(rss.peak_kb)
        ));
    }
    rows
}

/// The section of BENCHMARKS.md.
pub fn section(r: &NotifyRun) -> String {
    format!(
        "\n## 3d. notify catch-up (the release binary)\n\n\
         A fresh MariaDB database with {} recipients (default privacy, empty blocklists). A 1-partition \
         `notify.v1` topic holds {} protobuf messages ({} of them notify; the rest are to their own sender) \
         of six types about {} threads, so a field is found about as often as it is inserted. The worker drains \
         it in batches of up to {} messages, each one transaction of a fixed number of statements \
         (identities, settings, fields, one multi-row INSERT each for fields, notifications and identities, one \
         UPDATE of the counters). The baseline, on the same database after emptying the tables, is a bare sqlx \
         loop doing server-private's work per message in a transaction of its own (settings, field lookup, \
         field INSERT if missing, notification INSERT, counter UPDATE, COMMIT). The tables ended {}.\n\n\
         | run | messages/s (5–95%) | messages/s (first→last) | worker ÷ this | RSS load / idle / peak |\n\
         |---|---|---|---|---|\n\
         | {} | {} | {} | 1.00× | {} |\n\
         | {} | {} | {} | {} | – |\n",
        r.recipients,
        r.messages,
        r.notifications,
        (r.messages / 4).max(1),
        r.batch_max_messages,
        if r.same_end_state {
            "identical after both"
        } else {
            "DIFFERENT"
        },
        r.worker.label,
        fmt_rate(r.worker.per_s_mid),
        fmt_rate(r.worker.per_s),
        r.worker.rss.as_ref().map_or("–".into(), |rss| format!(
            "{} / {} / {}",
            super::mib(rss.loaded_kb),
            super::mib(rss.idle_kb),
            super::mib(rss.peak_kb)
        )),
        r.legacy.label,
        fmt_rate(r.legacy.per_s_mid),
        fmt_rate(r.legacy.per_s),
        ratio(r.worker.per_s_mid, r.legacy.per_s_mid),
    )
}
