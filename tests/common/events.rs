//! Generated change streams for fault and load scenarios, made from a real fixture record: the
//! `chii_members` update of `fixtures/debezium/json.jsonl` with its uid (key and row) and binlog
//! position replaced. Each event's effect in the cache-invalidation family is exactly
//! `DEL user:v2:slim:{uid}`, so "was it applied?" is "is that key gone?".

use anyhow::Context;
use serde_json::Value;

use crate::Out;
use crate::fixtures::{self, Encoding};

/// A record no decoder accepts (its value is not JSON): dead-lettered at the decode stage.
pub fn poison() -> Out {
    Out {
        key: Some(br#"{"uid":1}"#.to_vec()),
        value: Some(b"not json".to_vec()),
        ..Out::default()
    }
}

/// The template: a real `chii_members` op `u` record.
pub struct MemberUpdates {
    template: Value,
    headers: Vec<(String, Vec<u8>)>,
}

impl MemberUpdates {
    /// Loads the template from the fixtures.
    pub fn load() -> anyhow::Result<Self> {
        let f = fixtures::load(Encoding::Json)?
            .into_iter()
            .find(|f| f.topic.ends_with(".chii_members") && f.scenario == "update")
            .context("no chii_members update in the fixtures")?;
        let value = f.record.value.context("template has no value")?;
        Ok(Self {
            template: serde_json::from_slice(&value)?,
            headers: f.record.headers,
        })
    }

    /// The update of member `uid`, at binlog position `pos`.
    pub fn event(&self, uid: u64, pos: u64) -> Out {
        let mut v = self.template.clone();
        v["before"]["uid"] = uid.into();
        v["after"]["uid"] = uid.into();
        self.record(uid, pos, v)
    }

    /// [`MemberUpdates::event`] with row images of only the uid (≈ 0.6 KB instead of ≈ 3 KB):
    /// the same effect, for backlogs of a million records.
    pub fn slim_event(&self, uid: u64, pos: u64) -> Out {
        let mut v = self.template.clone();
        v["before"] = serde_json::json!({ "uid": uid });
        v["after"] = serde_json::json!({ "uid": uid });
        self.record(uid, pos, v)
    }

    fn record(&self, uid: u64, pos: u64, mut value: Value) -> Out {
        value["source"]["pos"] = pos.into();
        Out {
            partition: None,
            key: Some(format!("{{\"uid\":{uid}}}").into_bytes()),
            value: Some(value.to_string().into_bytes()),
            headers: self.headers.clone(),
            timestamp_ms: None,
        }
    }

    /// Updates of members `uids`, positions increasing.
    pub fn events(&self, uids: impl IntoIterator<Item = u64>) -> Vec<Out> {
        uids.into_iter()
            .enumerate()
            .map(|(i, uid)| self.event(uid, 1_000 + i as u64))
            .collect()
    }
}

/// The cache key an update of `uid` deletes.
pub fn member_key(uid: u64) -> String {
    format!("user:v2:slim:{uid}")
}

/// Generated timeline items, made from the real `chii_timeline` create and delete of item 12 of
/// `fixtures/debezium/json.jsonl` with the item id, author and binlog position replaced. Each
/// create fans out to the author's followers (from MariaDB's `chii_friends` unless
/// `user:followers:{author}` is cached); each delete takes the item out again.
pub struct TimelineItems {
    create: Value,
    delete: Value,
    headers: Vec<(String, Vec<u8>)>,
}

impl TimelineItems {
    /// Loads the templates from the fixtures.
    pub fn load() -> anyhow::Result<Self> {
        let all = fixtures::load(Encoding::Json)?;
        let find = |op: &str| {
            all.iter()
                .find(|f| {
                    f.topic.ends_with(".chii_timeline")
                        && f.record.key.as_deref() == Some(br#"{"tml_id":12}"#.as_slice())
                        && f.record.value.as_deref().is_some_and(|v| {
                            String::from_utf8_lossy(v).contains(&format!("\"op\":\"{op}\""))
                        })
                })
                .with_context(|| format!("no chii_timeline op {op} of item 12 in the fixtures"))
        };
        let create = find("c")?;
        let delete = find("d")?;
        Ok(Self {
            create: serde_json::from_slice(create.record.value.as_deref().context("value")?)?,
            delete: serde_json::from_slice(delete.record.value.as_deref().context("value")?)?,
            headers: create.record.headers.clone(),
        })
    }

    fn item(&self, template: &Value, row: &str, id: u64, author: u64, pos: u64) -> Out {
        let mut v = template.clone();
        v[row]["tml_id"] = id.into();
        v[row]["tml_uid"] = author.into();
        v["source"]["pos"] = pos.into();
        v["source"]["row"] = 0.into();
        Out {
            partition: None,
            key: Some(format!("{{\"tml_id\":{id}}}").into_bytes()),
            value: Some(v.to_string().into_bytes()),
            headers: self.headers.clone(),
            timestamp_ms: None,
        }
    }

    /// The create of item `id` by `author` at binlog position `pos`.
    pub fn create(&self, id: u64, author: u64, pos: u64) -> Out {
        self.item(&self.create, "after", id, author, pos)
    }

    /// The delete of item `id` by `author` at binlog position `pos`.
    pub fn delete(&self, id: u64, author: u64, pos: u64) -> Out {
        self.item(&self.delete, "before", id, author, pos)
    }
}

/// Generated subject changes, made from a real `chii_subjects` update of the fixtures'
/// `subject-date` scenario with the subject id (key and rows) and binlog position replaced. The
/// subject-date family dates the subject from its row in MariaDB, not from the event.
pub struct SubjectUpdates {
    template: Value,
    headers: Vec<(String, Vec<u8>)>,
}

impl SubjectUpdates {
    /// Loads the template from the fixtures.
    pub fn load() -> anyhow::Result<Self> {
        let f = fixtures::load(Encoding::Json)?
            .into_iter()
            .find(|f| {
                f.topic.ends_with(".chii_subjects")
                    && f.scenario == "subject-date"
                    && f.record
                        .value
                        .as_deref()
                        .is_some_and(|v| String::from_utf8_lossy(v).contains(r#""op":"u""#))
            })
            .context("no chii_subjects update in the fixtures' subject-date scenario")?;
        let value = f.record.value.context("template has no value")?;
        Ok(Self {
            template: serde_json::from_slice(&value)?,
            headers: f.record.headers,
        })
    }

    /// The update of subject `id`, at binlog position `pos`.
    pub fn event(&self, id: u64, pos: u64) -> Out {
        let mut v = self.template.clone();
        v["before"]["subject_id"] = id.into();
        v["after"]["subject_id"] = id.into();
        v["source"]["pos"] = pos.into();
        Out {
            partition: None,
            key: Some(format!("{{\"subject_id\":{id}}}").into_bytes()),
            value: Some(v.to_string().into_bytes()),
            headers: self.headers.clone(),
            timestamp_ms: None,
        }
    }
}
