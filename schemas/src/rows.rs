//! Serde structs for the `chii_*` tables the families use, read with [`Row::parse`].
//!
//! Each struct holds only the columns a family needs, all required: unknown columns are
//! ignored (schema evolution), a missing or mistyped one is a [`RowError`] naming table and
//! column. Ids are `u64` whatever their SQL width, so a widened column never breaks a family.
//! Key-only structs (`…Key`) read the message key; for single-id tables the row struct
//! reads the key as well, since the key column is also in the row.
//!
//! Not here: the side effects (see the family crates and `docs/bangumi-behaviour.md`).
//!
//! # Layout
//! - One struct per table, named after it; [`TimelineKey`] for `{"tml_id":N}`.
//! - [`primary_key`]: the key columns Debezium puts in each table's message key.
//!
//! [`Row::parse`]: crate::Row::parse
//! [`RowError`]: crate::RowError

use serde::Deserialize;

macro_rules! id_row {
    ($(#[$doc:meta] $name:ident { $field:ident })*) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
        pub struct $name {
            #[allow(missing_docs)]
            pub $field: u64,
        }
    )*};
}

id_row! {
    /// `chii_subjects` (key `subject_id`).
    Subject { subject_id }
    /// `chii_subject_fields` (key `field_sid`).
    SubjectField { field_sid }
    /// `chii_episodes` (key `ep_id`).
    Episode { ep_id }
    /// `chii_characters` (key `crt_id`).
    Character { crt_id }
    /// `chii_persons` (key `prsn_id`).
    Person { prsn_id }
    /// `chii_members` (key `uid`).
    Member { uid }
    /// `chii_memberfields` (key `uid`).
    MemberField { uid }
    /// `chii_groups` (key `grp_id`).
    Group { grp_id }
    /// `chii_group_topics` (key `grp_tpc_id`).
    GroupTopic { grp_tpc_id }
    /// `chii_subject_topics` (key `sbj_tpc_id`).
    SubjectTopic { sbj_tpc_id }
    /// `chii_index` (key `idx_id`).
    Index { idx_id }
    /// `chii_blog_entry` (key `entry_id`).
    BlogEntry { entry_id }
    /// The key of `chii_timeline`: `{"tml_id":N}`.
    TimelineKey { tml_id }
}

/// `chii_group_members`: the cache key uses `gmb_uid` from the row image.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
pub struct GroupMember {
    /// Member uid.
    pub gmb_uid: u64,
    /// Group id.
    pub gmb_gid: u64,
}

/// `chii_friends` (no primary key upstream, so the message key may be null or empty).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
pub struct Friend {
    /// The user who follows.
    pub frd_uid: u64,
    /// The user followed.
    pub frd_fid: u64,
}

/// `chii_timeline` row image: what the fan-out needs.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
pub struct Timeline {
    /// Timeline item id (also the key).
    pub tml_id: u64,
    /// Author uid.
    pub tml_uid: u64,
    /// Category.
    pub tml_cat: u32,
    /// Unix seconds.
    pub tml_dateline: u64,
}

/// `chii_subject_revisions`: key `{"rev_id":N}`; the subject is `rev_subject_id` in the row
/// (the current worker reads it from the key, where it never is: docs/bangumi-behaviour.md §5).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
pub struct SubjectRevision {
    /// Revision id (the key).
    pub rev_id: u64,
    /// The revised subject.
    pub rev_subject_id: u64,
}

/// The message-key columns of each table (its primary key), `None` for tables this crate
/// does not know. `chii_friends` has no primary key: its key is null unless the connector
/// sets `message.key.columns`.
pub fn primary_key(table: &str) -> Option<&'static [&'static str]> {
    Some(match table {
        "chii_subjects" => &["subject_id"],
        "chii_subject_fields" => &["field_sid"],
        "chii_episodes" => &["ep_id"],
        "chii_characters" => &["crt_id"],
        "chii_persons" => &["prsn_id"],
        "chii_members" | "chii_memberfields" => &["uid"],
        "chii_friends" => &[],
        "chii_groups" => &["grp_id"],
        "chii_group_members" => &["gmb_uid", "gmb_gid"],
        "chii_group_topics" => &["grp_tpc_id"],
        "chii_subject_topics" => &["sbj_tpc_id"],
        "chii_index" => &["idx_id"],
        "chii_blog_entry" => &["entry_id"],
        "chii_timeline" => &["tml_id"],
        "chii_subject_revisions" => &["rev_id"],
        _ => return None,
    })
}
