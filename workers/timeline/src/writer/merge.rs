//! Whether a new timeline event merges into the previous row, and the merged memo (pure).
//!
//! server-private's rules: the previous row (same uid and cat, and type where the op filters
//! by it) merges if `previous.tml_dateline > createdAt − 600`. Batch ops (daily, subject,
//! mono) turn it into a map id → detail (integer keys ascending, as a JS object writes them)
//! and set `tml_batch = 1`; progress ops replace the memo when the subject (and, for
//! episodes, the type) is the same. Previous memos are decoded like server-private's
//! `decode()`: empty ⇒ `{}`, `a:` ⇒ PHP serialisation, else JSON.

use super::message::{MERGE_WINDOW_SECONDS, Merge, PreviousKey, Write};
use bangumi_js::{Js, decode};

/// The previous row, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// `tml_id`.
    pub tml_id: u64,
    /// `tml_type`.
    pub kind: u64,
    /// `tml_related`.
    pub related: String,
    /// `tml_memo`.
    pub memo: String,
    /// `tml_batch`.
    pub batch: bool,
    /// `tml_dateline`.
    pub dateline: i64,
}

/// An update of the previous row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The row.
    pub tml_id: u64,
    /// The new memo.
    pub memo: String,
    /// Also set `tml_batch = 1`.
    pub batch: bool,
}

/// `Some(update)` if `write` merges into `previous`, `None` to insert. An `Err` means the
/// previous memo cannot be decoded (server-private throws and drops the message).
pub fn decide(write: &Write, previous: &Previous) -> Result<Option<Update>, String> {
    if previous.dateline <= write.row.created_at - MERGE_WINDOW_SECONDS {
        return Ok(None);
    }
    match &write.merge {
        Merge::Never => Ok(None),
        Merge::Replace {
            subject_id,
            same_type,
            ..
        } => {
            let same_subject = bangumi_js::number_of(&previous.related) == Some(*subject_id as f64);
            let same_type = same_type.is_none_or(|t| u64::from(t) == previous.kind);
            Ok((same_subject && same_type).then(|| Update {
                tml_id: previous.tml_id,
                memo: write.row.memo.clone(),
                batch: false,
            }))
        }
        Merge::Batch {
            detail,
            key,
            previous_key,
        } => {
            let info = decode(&previous.memo).map_err(|e| {
                format!(
                    "{}: previous chii_timeline row {}: undecodable memo: {e}",
                    write.op, previous.tml_id
                )
            })?;
            let mut details: Vec<(String, Js)> = Vec::new();
            if previous.batch {
                let entries = match info {
                    Js::Object(entries) => entries,
                    Js::Array(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (i.to_string(), v))
                        .collect(),
                    _ => Vec::new(),
                };
                for (id, item) in entries {
                    let id = Js::numeric_key_of(Some(&Js::String(id)));
                    Js::set(&mut details, id, item);
                }
            } else {
                let id = match previous_key {
                    PreviousKey::Field(name) => Js::key_of(info.get(name)),
                    PreviousKey::NumberOf(name) => Js::numeric_key_of(info.get(name)),
                };
                Js::set(&mut details, id, info);
            }
            Js::set(&mut details, key.clone(), detail.clone());
            Ok(Some(Update {
                tml_id: previous.tml_id,
                memo: Js::Object(details).to_json(),
                batch: true,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::parse;
    use super::*;

    fn write(op: &str, message: &str) -> Write {
        parse(format!(r#"{{"op":"{op}","message":{message}}}"#).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn previous(memo: &str, batch: bool, dateline: i64) -> Previous {
        Previous {
            tml_id: 7,
            kind: 2,
            related: "12".into(),
            memo: memo.into(),
            batch,
            dateline,
        }
    }

    #[test]
    fn daily_friends_merge_into_a_batch_within_ten_minutes() {
        let w = write(
            "daily",
            r#"{"uid":1,"type":2,"mid":3,"createdAt":1000,"source":5}"#,
        );
        let merged =
            decide(&w, &previous(r#"{"uid":12}"#, false, 401)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            merged,
            Some(Update {
                tml_id: 7,
                memo: r#"{"3":{"uid":3},"12":{"uid":12}}"#.into(),
                batch: true
            })
        );
        // Exactly 600 s earlier is outside the window.
        assert_eq!(decide(&w, &previous(r#"{"uid":12}"#, false, 400)), Ok(None));
        // An existing batch, PHP-serialised, keeps its entries.
        let php = r#"a:1:{i:9;a:1:{s:3:"uid";i:9;}}"#;
        let merged = decide(&w, &previous(php, true, 999)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            merged.map(|u| u.memo),
            Some(r#"{"3":{"uid":3},"9":{"uid":9}}"#.into())
        );
    }

    #[test]
    fn progress_replaces_only_for_the_same_subject_and_status() {
        let w = write(
            "progressEpisode",
            r#"{"uid":1,"subject":{"id":12,"type":2},"episode":{"id":34,"status":2},"createdAt":1000,"source":5}"#,
        );
        let p = previous("{}", false, 900);
        assert_eq!(
            decide(&w, &p).map(|u| u.map(|u| u.memo)),
            Ok(Some(
                r#"{"subject_id":12,"subject_type_id":2,"ep_id":34}"#.into()
            ))
        );
        assert_eq!(
            decide(
                &w,
                &Previous {
                    kind: 1,
                    ..p.clone()
                }
            ),
            Ok(None)
        );
        assert_eq!(
            decide(
                &w,
                &Previous {
                    related: "13".into(),
                    ..p
                }
            ),
            Ok(None)
        );
    }

    #[test]
    fn an_undecodable_previous_memo_is_an_error() {
        let w = write(
            "mono",
            r#"{"uid":1,"cat":1,"type":1,"id":5,"name":"x","createdAt":1000,"source":5}"#,
        );
        assert!(decide(&w, &previous("{not json", false, 999)).is_err());
    }
}
