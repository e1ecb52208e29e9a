//! The `timeline` service topic's messages, `{"op":…,"message":…}`, and what each op writes
//! (server-private `lib/timeline/writer.ts`, bangumi-behaviour §3.1): the row to insert, and how to
//! find and merge into the previous row inside the 10-minute window.
//!
//! Pure: no I/O. The memo formats, key orders and type mappings are server-private's; every
//! field a write needs is required and typed, and a message that lacks one is rejected with
//! its op and field named.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use bangumi_js::{Js, escape};

/// `chii_timeline.tml_cat` values (server-private `TimelineCat`).
pub mod cat {
    /// 日常行为.
    pub const DAILY: u32 = 1;
    /// 维基操作.
    pub const WIKI: u32 = 2;
    /// 收藏条目.
    pub const SUBJECT: u32 = 3;
    /// 收视进度.
    pub const PROGRESS: u32 = 4;
    /// 状态.
    pub const STATUS: u32 = 5;
    /// 人物.
    pub const MONO: u32 = 8;
}

/// Seconds within which a new event merges into the previous row.
pub const MERGE_WINDOW_SECONDS: i64 = 10 * 60;

/// A row to insert. `img` is always `''`, `batch` 0, `replies` 0.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRow {
    /// `tml_uid`.
    pub uid: u64,
    /// `tml_cat`.
    pub cat: u32,
    /// `tml_type`.
    pub kind: u32,
    /// `tml_related`.
    pub related: String,
    /// `tml_memo`.
    pub memo: String,
    /// `tml_source`.
    pub source: u64,
    /// `tml_dateline`.
    pub created_at: i64,
}

/// How the previous row is found and merged.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// Always insert.
    Never,
    /// daily, subject, mono: the previous row of the same uid, cat and type within the window
    /// becomes a batch: a map id → detail.
    Batch {
        /// This event's detail.
        detail: Js,
        /// Its key in the map.
        key: String,
        /// How the previous (non-batch) memo's key is derived.
        previous_key: PreviousKey,
    },
    /// progress: the previous row of the same uid and cat (and `kind`, if set) within the
    /// window, about the same subject (and of type `same_type`, if set), gets this memo.
    Replace {
        /// Filter on `tml_type`, if any.
        kind: Option<u32>,
        /// `Number(previous.related)` must equal this.
        subject_id: u64,
        /// `previous.type` must equal this, if set.
        same_type: Option<u32>,
    },
}

/// The key of a previous single memo in a batch map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousKey {
    /// `details[info.field]` (daily's `getID`).
    Field(&'static str),
    /// `details[Number(info.field)]` (subject, mono).
    NumberOf(&'static str),
}

/// What one message writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The op, for logs and errors.
    pub op: &'static str,
    /// The row if nothing merges.
    pub row: NewRow,
    /// The merge rule.
    pub merge: Merge,
}

#[derive(Deserialize)]
struct Envelope {
    op: String,
    message: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    uid: u64,
    created_at: i64,
    source: u64,
}

#[derive(Deserialize)]
struct SubjectRef {
    id: u64,
    #[serde(rename = "type")]
    kind: u32,
}

/// Parses a record value into its [`Write`]. Errors name the op and the field.
pub fn parse(value: &[u8]) -> Result<Write, String> {
    let envelope: Envelope = serde_json::from_slice(value)
        .map_err(|e| format!("timeline message is not {{\"op\",\"message\"}} JSON: {e}"))?;
    let op = OPS
        .iter()
        .find(|o| **o == envelope.op)
        .ok_or_else(|| format!("unknown timeline operation: {:?}", envelope.op))?;
    let m = &envelope.message;
    let common: Common = field(op, m, "")?;
    let row = |cat: u32, kind: u32, related: String, memo: String| NewRow {
        uid: common.uid,
        cat,
        kind,
        related,
        memo,
        source: common.source,
        created_at: common.created_at,
    };
    let write = |row: NewRow, merge: Merge| Ok(Write { op, row, merge });
    match *op {
        "daily" => {
            let kind: u32 = field(op, m, "type")?;
            let mid: u64 = field(op, m, "mid")?;
            let (name, key) = match kind {
                0 | 1 => {
                    return write(
                        row(cat::DAILY, kind, mid.to_string(), String::new()),
                        Merge::Never,
                    );
                }
                2 => ("uid", "uid"),
                3 | 4 => ("grp_id", "grp_id"),
                5 => ("eden_id", "eden_id"),
                other => return Err(format!("daily: unsupported type {other}")),
            };
            let detail = Js::object([(name, Js::uint(mid))]);
            let merge = Merge::Batch {
                detail: detail.clone(),
                key: mid.to_string(),
                previous_key: PreviousKey::Field(key),
            };
            write(
                row(cat::DAILY, kind, mid.to_string(), detail.to_json()),
                merge,
            )
        }
        "wiki" => {
            let subject: SubjectRef = field(op, m, "subject")?;
            let memo = Js::object([("subject_id", Js::uint(subject.id))]).to_json();
            // server-private sets no source here: the column default, 0.
            let mut new = row(cat::WIKI, subject.kind, subject.id.to_string(), memo);
            new.source = 0;
            write(new, Merge::Never)
        }
        "subject" => {
            let subject: SubjectRef = field(op, m, "subject")?;
            let ctype: u32 = field(op, m, "collect.type")?;
            let kind = subject_timeline_type(ctype, subject.kind)?;
            let detail = Js::object([
                ("subject_id", Js::uint(subject.id)),
                ("collect_id", Js::uint(field(op, m, "collect.id")?)),
                (
                    "collect_comment",
                    Js::String(escape(&field::<String>(op, m, "collect.comment")?)),
                ),
                ("collect_rate", Js::Number(field(op, m, "collect.rate")?)),
            ]);
            let merge = Merge::Batch {
                detail: detail.clone(),
                key: subject.id.to_string(),
                previous_key: PreviousKey::NumberOf("subject_id"),
            };
            write(
                row(cat::SUBJECT, kind, subject.id.to_string(), detail.to_json()),
                merge,
            )
        }
        "progressEpisode" => {
            let subject: SubjectRef = field(op, m, "subject")?;
            let status: u32 = field(op, m, "episode.status")?;
            if status == 0 {
                return Err("progressEpisode: episode.status is 0 (none)".into());
            }
            let memo = Js::object([
                ("subject_id", Js::uint(subject.id)),
                ("subject_type_id", Js::uint(subject.kind.into())),
                ("ep_id", Js::uint(field(op, m, "episode.id")?)),
            ])
            .to_json();
            let merge = Merge::Replace {
                kind: None,
                subject_id: subject.id,
                same_type: Some(status),
            };
            write(
                row(cat::PROGRESS, status, subject.id.to_string(), memo),
                merge,
            )
        }
        "progressSubject" => {
            let subject: SubjectRef = field(op, m, "subject")?;
            let total = |path: &str| -> Result<Js, String> {
                let n: serde_json::Number = field(op, m, path)?;
                Ok(Js::String(if n.as_f64() == Some(0.0) {
                    "??".into()
                } else {
                    n.to_string()
                }))
            };
            let collect: Js = field(op, m, "collect")?;
            let mut detail = vec![
                ("subject_id".to_owned(), Js::uint(subject.id)),
                ("subject_type_id".to_owned(), Js::uint(subject.kind.into())),
                ("eps_total".to_owned(), total("subject.eps")?),
            ];
            // `undefined` members vanish from JSON.stringify; `null` stays.
            if let Some(v) = collect.get("epsUpdate") {
                detail.push(("eps_update".to_owned(), v.clone()));
            }
            detail.push(("vols_total".to_owned(), total("subject.volumes")?));
            if let Some(v) = collect.get("volsUpdate") {
                detail.push(("vols_update".to_owned(), v.clone()));
            }
            let merge = Merge::Replace {
                kind: Some(0),
                subject_id: subject.id,
                same_type: None,
            };
            write(
                row(
                    cat::PROGRESS,
                    0,
                    subject.id.to_string(),
                    Js::Object(detail).to_json(),
                ),
                merge,
            )
        }
        "statusSign" => {
            let sign: String = field(op, m, "sign")?;
            write(row(cat::STATUS, 0, String::new(), sign), Merge::Never)
        }
        "statusTsukkomi" => {
            let text: String = field(op, m, "text")?;
            write(row(cat::STATUS, 1, String::new(), text), Merge::Never)
        }
        "statusNickname" => {
            let before: String = field(op, m, "before")?;
            let after: String = field(op, m, "after")?;
            let memo = Js::object([
                ("before", Js::String(escape(&before))),
                ("after", Js::String(escape(&after))),
            ])
            .to_json();
            write(row(cat::STATUS, 2, String::new(), memo), Merge::Never)
        }
        "mono" => {
            let kind: u32 = field(op, m, "type")?;
            let id: u64 = field(op, m, "id")?;
            let detail = Js::object([
                ("cat", Js::Number(field(op, m, "cat")?)),
                ("id", Js::uint(id)),
                ("name", Js::String(field(op, m, "name")?)),
            ]);
            let merge = Merge::Batch {
                detail: detail.clone(),
                key: id.to_string(),
                previous_key: PreviousKey::NumberOf("id"),
            };
            write(
                row(cat::MONO, kind, id.to_string(), detail.to_json()),
                merge,
            )
        }
        _ => Err(format!("unknown timeline operation: {op:?}")),
    }
}

/// Every op the writer knows.
pub const OPS: &[&str] = &[
    "daily",
    "wiki",
    "subject",
    "progressEpisode",
    "progressSubject",
    "statusSign",
    "statusTsukkomi",
    "statusNickname",
    "mono",
];

/// `message.<path>` (dotted; "" = the message itself) as `T`, or an error naming it.
fn field<T: DeserializeOwned>(
    op: &str,
    message: &serde_json::Value,
    path: &str,
) -> Result<T, String> {
    let mut value = message;
    if !path.is_empty() {
        for part in path.split('.') {
            value = value
                .get(part)
                .ok_or_else(|| format!("{op}: message.{path} is missing"))?;
        }
    }
    T::deserialize(value).map_err(|e| {
        if path.is_empty() {
            format!("{op}: message: {e}")
        } else {
            format!("{op}: message.{path}: {e}")
        }
    })
}

/// server-private `switchSubjectType`: (collection type, subject type) → `tml_type` of cat 3.
pub fn subject_timeline_type(collection: u32, subject: u32) -> Result<u32, String> {
    // Wish, Collect, Doing per subject family; OnHold 13 and Dropped 14 for all.
    let (wish, collect, doing) = match subject {
        1 => (1, 5, 9),      // Book
        2 | 6 => (2, 6, 10), // Anime, Real
        3 => (3, 7, 11),     // Music
        4 => (4, 8, 12),     // Game
        other => return Err(format!("subject: unexpected subject type {other}")),
    };
    match collection {
        1 => Ok(wish),
        2 => Ok(collect),
        3 => Ok(doing),
        4 => Ok(13),
        5 => Ok(14),
        other => Err(format!("subject: unexpected collection type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(op: &str, message: &str) -> Result<Write, String> {
        parse(format!(r#"{{"op":"{op}","message":{message}}}"#).as_bytes())
    }

    fn row(op: &str, message: &str) -> NewRow {
        parsed(op, message).unwrap_or_else(|e| panic!("{e}")).row
    }

    #[test]
    fn memos_and_types_per_op() {
        let r = row(
            "daily",
            r#"{"uid":1,"type":2,"mid":7,"createdAt":100,"source":5}"#,
        );
        assert_eq!(
            (r.cat, r.kind, r.related.as_str(), r.memo.as_str()),
            (1, 2, "7", r#"{"uid":7}"#)
        );
        let r = row(
            "daily",
            r#"{"uid":1,"type":4,"mid":7,"createdAt":100,"source":5}"#,
        );
        assert_eq!(r.memo, r#"{"grp_id":7}"#);
        let r = row(
            "daily",
            r#"{"uid":1,"type":5,"mid":7,"createdAt":100,"source":5}"#,
        );
        assert_eq!(r.memo, r#"{"eden_id":7}"#);
        let r = row(
            "daily",
            r#"{"uid":1,"type":1,"mid":0,"createdAt":100,"source":5}"#,
        );
        assert_eq!((r.memo.as_str(), r.related.as_str()), ("", "0"));

        let r = row(
            "wiki",
            r#"{"uid":1,"subject":{"id":12,"type":2},"createdAt":100,"source":5}"#,
        );
        assert_eq!(
            (r.cat, r.kind, r.source, r.memo.as_str()),
            (2, 2, 0, r#"{"subject_id":12}"#)
        );

        let r = row(
            "subject",
            r#"{"uid":1,"subject":{"id":12,"type":2},"collect":{"id":99,"type":2,"rate":8,"comment":"<3 & 'x'"},"createdAt":100,"source":5}"#,
        );
        assert_eq!((r.cat, r.kind), (3, 6));
        assert_eq!(
            r.memo,
            r#"{"subject_id":12,"collect_id":99,"collect_comment":"&lt;3 &amp; &#39;x&#39;","collect_rate":8}"#
        );

        let r = row(
            "progressSubject",
            r#"{"uid":1,"subject":{"id":12,"type":2,"eps":12,"volumes":0},"collect":{"epsUpdate":3},"createdAt":100,"source":5}"#,
        );
        assert_eq!((r.cat, r.kind), (4, 0));
        assert_eq!(
            r.memo,
            r#"{"subject_id":12,"subject_type_id":2,"eps_total":"12","eps_update":3,"vols_total":"??"}"#
        );

        let r = row(
            "statusSign",
            r#"{"uid":1,"sign":"<b>hi</b>","createdAt":100,"source":5}"#,
        );
        assert_eq!(
            (r.cat, r.kind, r.related.as_str(), r.memo.as_str()),
            (5, 0, "", "<b>hi</b>")
        );
        let r = row(
            "statusTsukkomi",
            r#"{"uid":1,"text":"吐槽","createdAt":100,"source":5}"#,
        );
        assert_eq!((r.kind, r.memo.as_str()), (1, "吐槽"));
        let r = row(
            "statusNickname",
            r#"{"uid":1,"before":"a<b","after":"\"c\"","createdAt":100,"source":5}"#,
        );
        assert_eq!(
            (r.kind, r.memo.as_str()),
            (2, r#"{"before":"a&lt;b","after":"&quot;c&quot;"}"#)
        );

        let r = row(
            "mono",
            r#"{"uid":1,"cat":2,"type":1,"id":5,"name":"<Sai>","createdAt":100,"source":5}"#,
        );
        assert_eq!((r.cat, r.kind, r.related.as_str()), (8, 1, "5"));
        assert_eq!(r.memo, r#"{"cat":2,"id":5,"name":"<Sai>"}"#);
    }

    #[test]
    fn subject_type_mapping() {
        assert_eq!(subject_timeline_type(1, 1), Ok(1));
        assert_eq!(subject_timeline_type(3, 6), Ok(10));
        assert_eq!(subject_timeline_type(2, 3), Ok(7));
        assert_eq!(subject_timeline_type(3, 4), Ok(12));
        assert_eq!(subject_timeline_type(5, 4), Ok(14));
        assert!(subject_timeline_type(1, 5).is_err());
        assert!(subject_timeline_type(6, 2).is_err());
    }

    #[test]
    fn errors_name_the_op_and_field() {
        let err = |op: &str, m: &str| parsed(op, m).map(|_| ()).unwrap_err();
        assert_eq!(err("nope", "{}"), r#"unknown timeline operation: "nope""#);
        assert!(
            err("daily", r#"{"uid":1,"type":2,"createdAt":1,"source":5}"#)
                .contains("daily: message.mid is missing")
        );
        assert!(
            err(
                "daily",
                r#"{"uid":1,"type":9,"mid":1,"createdAt":1,"source":5}"#
            )
            .contains("unsupported type 9")
        );
        assert!(
            err(
                "statusSign",
                r#"{"uid":1,"sign":3,"createdAt":1,"source":5}"#
            )
            .starts_with("statusSign: message.sign")
        );
        assert!(
            err(
                "wiki",
                r#"{"subject":{"id":1,"type":2},"createdAt":1,"source":5}"#
            )
            .contains("uid")
        );
        assert!(
            err(
                "progressEpisode",
                r#"{"uid":1,"subject":{"id":1,"type":2},"episode":{"id":3,"status":0},"createdAt":1,"source":5}"#
            )
            .contains("status is 0")
        );
        assert!(parse(b"not json").is_err());
    }
}
