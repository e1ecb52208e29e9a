//! What a `chii_members` change asks for, decided from the record alone (no I/O): bangumi/server's
//! `canal/on_user.go` rules, with the differences the crate root lists.
//!
//! # Layout
//! - [`MemberChange`]: the effects of one update.
//! - [`decide`]: record → effects (or why none, or why the record is unusable).
//! - [`notify_channel`], [`notify_payload`]: the `PUBLISH` the Go worker sends, byte for byte.
//! - [`purge_prefix`]: the Go worker's S3 prefix of an avatar's resized copies.

use cdc_schemas::{Op, Row, RowChange};

/// The table the family reads.
pub const MEMBERS: &str = "chii_members";

/// The columns of a row image the family reads.
pub const COLUMNS: &[&str] = &["password_crypt", "new_notify", "avatar"];

/// The effects of one `chii_members` update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// The user (`uid` of the key).
    pub uid: u32,
    /// `password_crypt` changed: revoke the user's sessions created at or before this second
    /// (`source.ts_ms` of the change, in whole seconds; see [`crate::sessions`]).
    pub revoke_created_until: Option<i64>,
    /// `new_notify` changed: its new value, to publish.
    pub new_notify: Option<u16>,
    /// `avatar` changed: the S3 prefixes whose objects are the resized copies to delete (the old
    /// avatar's and the new one's, each once; an empty avatar has none).
    pub purge_prefixes: Vec<String>,
}

impl MemberChange {
    /// Whether the change asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.revoke_created_until.is_none()
            && self.new_notify.is_none()
            && self.purge_prefixes.is_empty()
    }
}

/// What a record asks for: effects, nothing (with the reason, a metric label), or a message
/// saying why the record cannot be used (dead-lettered).
pub fn decide(change: &RowChange) -> Result<Result<MemberChange, &'static str>, String> {
    if change.table() != MEMBERS {
        return Ok(Err("unknown_table"));
    }
    match change.op {
        Op::Update => {}
        // The Go worker ignores creates, snapshot reads and deletes.
        Op::Create | Op::Delete => return Ok(Err("op_without_effect")),
        Op::Read => return Ok(Err("snapshot")),
    }
    let uid = change
        .key
        .as_ref()
        .ok_or_else(|| format!("{MEMBERS}: the message has no key (needs uid)"))?
        .u64("uid")
        .map_err(|e| format!("{MEMBERS}: key: {e}"))?;
    let uid = u32::try_from(uid).map_err(|_| format!("{MEMBERS}: key: uid {uid} is not a uid"))?;
    let before = Member::of(change.before.as_ref(), "before", uid)?;
    let after = Member::of(change.after.as_ref(), "after", uid)?;
    let mut purge_prefixes = Vec::new();
    if before.avatar != after.avatar {
        for avatar in [before.avatar, after.avatar] {
            if let Some(prefix) = purge_prefix(avatar)
                && !purge_prefixes.contains(&prefix)
            {
                purge_prefixes.push(prefix);
            }
        }
    }
    let effects = MemberChange {
        uid,
        revoke_created_until: (before.password_crypt != after.password_crypt)
            .then(|| change.source.ts_ms.div_euclid(1000)),
        new_notify: (before.new_notify != after.new_notify).then_some(after.new_notify),
        purge_prefixes,
    };
    Ok(if effects.is_empty() {
        Err("nothing_changed")
    } else {
        Ok(effects)
    })
}

/// The three columns of one row image.
struct Member<'a> {
    password_crypt: &'a str,
    new_notify: u16,
    avatar: &'a str,
}

impl<'a> Member<'a> {
    /// The columns of image `part` of `uid`'s update.
    fn of(row: Option<&'a Row>, part: &str, uid: u32) -> Result<Self, String> {
        let row =
            row.ok_or_else(|| format!("{MEMBERS} update of uid {uid}: the message has no {part}"))?;
        let text = |column: &str| {
            let value = row
                .get(column)
                .ok_or_else(|| format!("{MEMBERS} {part}: no column {column}"))?;
            value.as_str().ok_or_else(|| {
                format!(
                    "{MEMBERS} {part}.{column}: expected text, found {}",
                    value.describe()
                )
            })
        };
        let new_notify = row
            .u64("new_notify")
            .map_err(|e| format!("{MEMBERS} {part}: {e}"))?;
        Ok(Self {
            password_crypt: text("password_crypt")?,
            new_notify: u16::try_from(new_notify).map_err(|_| {
                format!("{MEMBERS} {part}.new_notify: {new_notify} does not fit a uint16")
            })?,
            avatar: text("avatar")?,
        })
    }
}

/// The channel of a user's notification count: `event-user-notify-{uid}`.
pub fn notify_channel(key_prefix: &str, uid: u32) -> String {
    format!("{key_prefix}event-user-notify-{uid}")
}

/// The message the Go worker publishes (`json.Marshal` of `{UserID, NewNotify}`):
/// `{"user_id":1,"new_notify":3}`, in that order, no spaces.
pub fn notify_payload(uid: u32, new_notify: u16) -> String {
    format!(r#"{{"user_id":{uid},"new_notify":{new_notify}}}"#)
}

/// The S3 prefix of the resized copies of `avatar` (`000/00/00/1.jpg?r=…&hd=1`), as the Go
/// worker builds it: `/pic/user/l/` + the path before `?`, and `/hd` in front when the query
/// contains `hd=1`. `None` for an empty path: the Go worker would purge `/pic/user/l/`, every
/// user's copies.
pub fn purge_prefix(avatar: &str) -> Option<String> {
    let (path, query) = avatar.split_once('?').unwrap_or((avatar, ""));
    if path.is_empty() {
        return None;
    }
    let prefix = format!("/pic/user/l/{path}");
    Some(if query.contains("hd=1") {
        format!("/hd{prefix}")
    } else {
        prefix
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_go_worker() {
        assert_eq!(
            purge_prefix("000/00/00/1.jpg?r=1").as_deref(),
            Some("/pic/user/l/000/00/00/1.jpg")
        );
        assert_eq!(
            purge_prefix("000/00/00/1.jpg?r=1&hd=1").as_deref(),
            Some("/hd/pic/user/l/000/00/00/1.jpg")
        );
        assert_eq!(
            purge_prefix("000/00/00/1.jpg").as_deref(),
            Some("/pic/user/l/000/00/00/1.jpg")
        );
        // `strings.Contains(q, "hd=1")`: any occurrence counts, as in Go.
        assert_eq!(
            purge_prefix("a.jpg?xhd=10").as_deref(),
            Some("/hd/pic/user/l/a.jpg")
        );
        assert_eq!(purge_prefix(""), None);
        assert_eq!(purge_prefix("?r=1&hd=1"), None);
    }

    #[test]
    fn the_payload_is_the_go_workers_json() {
        assert_eq!(notify_payload(1, 3), r#"{"user_id":1,"new_notify":3}"#);
        assert_eq!(notify_channel("", 42), "event-user-notify-42");
    }
}
