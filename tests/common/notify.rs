//! The notify family's test data: the golden input (`fixtures/expected/notify-input.json`) and
//! its expected end (`notify.json`, written by `notify.py`), the rows a recipient needs, the
//! `notify.v1` records, and the tables as a comparable state (without auto-increment ids).
//! Shared by `tests/notify.rs`, the demo and the bench.

use anyhow::Context;
use serde::Deserialize;

use crate::Out;
use crate::mysql::TestDatabase;

/// `fixtures/expected/notify-input.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// `chii_members` rows: uid and `new_notify`.
    pub members: Vec<Member>,
    /// `chii_memberfields` rows.
    pub memberfields: Vec<MemberFields>,
    /// `chii_friends` rows.
    pub friends: Vec<Friend>,
    /// `chii_notify_field` rows.
    pub fields: Vec<Field>,
    /// The messages, in order.
    pub messages: Vec<Message>,
}

/// A `chii_members` row.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub uid: u32,
    pub new_notify: u32,
}

/// A `chii_memberfields` row.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberFields {
    pub uid: u32,
    pub privacy: String,
    pub blocklist: String,
}

/// A `chii_friends` row: `frd_uid` follows `frd_fid`.
#[derive(Debug, Clone, Deserialize)]
pub struct Friend {
    pub frd_uid: u32,
    pub frd_fid: u32,
}

/// A `chii_notify_field` row.
#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    pub ntf_id: u32,
    pub ntf_hash: u8,
    pub ntf_rid: u32,
    pub ntf_title: String,
}

/// A `notify.v1` message: its fields, or raw bytes that are not one.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub user_id: u32,
    #[serde(default)]
    pub from_user_id: u32,
    #[serde(default, rename = "type")]
    pub kind: i32,
    #[serde(default)]
    pub mid: u32,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub raw_hex: Option<String>,
    pub timestamp_ms: i64,
    pub note: String,
}

impl Message {
    /// The record: on partition 0, keyed by the recipient, with the message's timestamp.
    pub fn out(&self) -> Out {
        let value = match &self.raw_hex {
            Some(hex) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect(),
            None => notify::message::Notify {
                mid: self.mid,
                user_id: self.user_id,
                from_user_id: self.from_user_id,
                r#type: self.kind,
                title: self.title.clone(),
            }
            .to_bytes(),
        };
        Out {
            partition: Some(0),
            key: Some(self.user_id.to_string().into_bytes()),
            value: Some(value),
            timestamp_ms: Some(self.timestamp_ms),
            ..Out::default()
        }
    }
}

/// `fixtures/expected/notify.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Expected {
    /// What becomes of each message, by index.
    pub outcomes: Vec<Decided>,
    /// The tables.
    #[serde(flatten)]
    pub state: State,
}

/// What becomes of one message.
#[derive(Debug, Clone, Deserialize)]
pub struct Decided {
    pub index: usize,
    /// `applied`, `skipped` or `dead_lettered`.
    pub outcome: String,
    pub reason: Option<String>,
    pub note: String,
}

/// A notification: uid, from_uid, status, type, its field's hash, id and title, related id,
/// dateline.
pub type Notification = (u64, u64, u64, u64, u64, u64, String, u64, u64);

/// The notify family's tables, without auto-increment ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct State {
    /// By dateline, then the rest.
    pub chii_notify: Vec<Notification>,
    /// `(hash, rid, title)`, sorted.
    pub chii_notify_field: Vec<(u64, u64, String)>,
    /// `(uid, new_notify)` by uid.
    pub chii_members: Vec<(u64, u64)>,
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> anyhow::Result<T> {
    let path = crate::fixtures::dir().join("expected").join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl Input {
    /// Loads `notify-input.json`.
    pub fn load() -> anyhow::Result<Self> {
        load("notify-input.json")
    }

    /// Writes the initial rows into `db`.
    pub async fn seed(&self, db: &TestDatabase) -> anyhow::Result<()> {
        add_members(db, self.members.iter().map(|m| (m.uid, m.new_notify))).await?;
        add_memberfields(
            db,
            self.memberfields
                .iter()
                .map(|m| (m.uid, m.privacy.as_str(), m.blocklist.as_str())),
        )
        .await?;
        for f in &self.friends {
            sqlx::query(
                "INSERT INTO chii_friends (frd_uid, frd_fid, frd_grade, frd_dateline, frd_description) VALUES (?, ?, 1, 0, '')",
            )
            .bind(f.frd_uid)
            .bind(f.frd_fid)
            .execute(&db.pool)
            .await?;
        }
        for f in &self.fields {
            sqlx::query(
                "INSERT INTO chii_notify_field (ntf_id, ntf_hash, ntf_rid, ntf_title) VALUES (?, ?, ?, ?)",
            )
            .bind(f.ntf_id)
            .bind(f.ntf_hash)
            .bind(f.ntf_rid)
            .bind(&f.ntf_title)
            .execute(&db.pool)
            .await?;
        }
        Ok(())
    }
}

impl Expected {
    /// Loads `notify.json`.
    pub fn load() -> anyhow::Result<Self> {
        load("notify.json")
    }

    /// The indexes of the messages that are dead-lettered.
    pub fn dead_lettered(&self) -> Vec<usize> {
        self.outcomes
            .iter()
            .filter(|o| o.outcome == "dead_lettered")
            .map(|o| o.index)
            .collect()
    }
}

/// Inserts `chii_members` rows `(uid, new_notify)`, in multi-row inserts.
pub async fn add_members(
    db: &TestDatabase,
    rows: impl IntoIterator<Item = (u32, u32)>,
) -> anyhow::Result<()> {
    let rows: Vec<(u32, u32)> = rows.into_iter().collect();
    for chunk in rows.chunks(2_000) {
        let values = vec!["(?, ?, ?, '', '', '', '', '')"; chunk.len()].join(",");
        let sql = format!(
            "INSERT INTO chii_members (uid, new_notify, username, nickname, avatar, sign, password_crypt, acl) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for (uid, n) in chunk {
            // username is UNIQUE: each the uid.
            q = q.bind(*uid).bind(*n).bind(uid.to_string());
        }
        q.execute(&db.pool)
            .await
            .context("inserting chii_members")?;
    }
    Ok(())
}

/// Inserts `chii_memberfields` rows `(uid, privacy, blocklist)`, the other columns empty.
pub async fn add_memberfields<'a>(
    db: &TestDatabase,
    rows: impl IntoIterator<Item = (u32, &'a str, &'a str)>,
) -> anyhow::Result<()> {
    let rows: Vec<(u32, &str, &str)> = rows.into_iter().collect();
    for chunk in rows.chunks(2_000) {
        let values =
            vec!["(?, '', '', '', '', '', '', '', ?, ?, 0, '', 0, 0, 0, '', 0)"; chunk.len()]
                .join(",");
        let sql = format!(
            "INSERT INTO chii_memberfields (uid, bio, homepage, index_sort, user_agent, ignorepm, groupterms, authstr, \
             privacy, blocklist, reg_source, email_verify_token, email_verify_score, email_verify_dateline, \
             reset_password_force, reset_password_token, reset_password_dateline) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for (uid, privacy, blocklist) in chunk {
            q = q.bind(*uid).bind(*privacy).bind(*blocklist);
        }
        q.execute(&db.pool)
            .await
            .context("inserting chii_memberfields")?;
    }
    Ok(())
}

/// The notify family's tables in `db`.
pub async fn state(db: &TestDatabase) -> anyhow::Result<State> {
    let mut chii_notify: Vec<Notification> = sqlx::query_as(
        "SELECT CAST(n.nt_uid AS UNSIGNED), CAST(n.nt_from_uid AS UNSIGNED), CAST(n.nt_status AS UNSIGNED), \
         CAST(n.nt_type AS UNSIGNED), CAST(f.ntf_hash AS UNSIGNED), CAST(f.ntf_rid AS UNSIGNED), f.ntf_title, \
         CAST(n.nt_related_id AS UNSIGNED), CAST(n.nt_dateline AS UNSIGNED) \
         FROM chii_notify n JOIN chii_notify_field f ON f.ntf_id = n.nt_mid",
    )
    .fetch_all(&db.pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chii_notify")
        .fetch_one(&db.pool)
        .await?;
    anyhow::ensure!(
        total == chii_notify.len() as i64,
        "{} of {total} chii_notify rows point at no chii_notify_field",
        total - chii_notify.len() as i64
    );
    chii_notify.sort_by(|a, b| (a.8, a).cmp(&(b.8, b)));
    let mut chii_notify_field: Vec<(u64, u64, String)> = sqlx::query_as(
        "SELECT CAST(ntf_hash AS UNSIGNED), CAST(ntf_rid AS UNSIGNED), ntf_title FROM chii_notify_field",
    )
            .fetch_all(&db.pool)
            .await?;
    chii_notify_field.sort();
    let chii_members: Vec<(u64, u64)> = sqlx::query_as(
        "SELECT CAST(uid AS UNSIGNED), CAST(new_notify AS UNSIGNED) FROM chii_members ORDER BY uid",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(State {
        chii_notify,
        chii_notify_field,
        chii_members,
    })
}
