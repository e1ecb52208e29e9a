//! Which tables invalidate which keys, on which operations: the data that decides this family's
//! behaviour, one row per table, as in server-private's `event/*.ts` handlers.
//!
//! To support a new table, add a [`Rule`]; nothing else changes.

use cdc_schemas::Op;

use crate::keys::*;

/// Where a rule takes its ids from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFrom {
    /// A column of the message key (the primary key), as server-private reads it.
    Key(&'static str),
    /// A column of `before`, else of `after`; a zero or null id means nothing to do.
    Row(&'static str),
    /// Two columns of `before`, else of `after` (user, friend); if either is zero or null,
    /// nothing to do.
    RowPair([&'static str; 2]),
}

impl IdFrom {
    /// The row-image columns read: all decoding keeps of the table's rows.
    pub fn row_columns(&'static self) -> &'static [&'static str] {
        match self {
            IdFrom::Key(_) => &[],
            IdFrom::Row(column) => std::slice::from_ref(column),
            IdFrom::RowPair(columns) => columns,
        }
    }
}

/// How one table's changes invalidate cache keys.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// `source.table`.
    pub table: &'static str,
    /// Operations that invalidate; others (always including snapshot reads) do nothing.
    pub ops: &'static [Op],
    /// Where the ids come from.
    pub ids: IdFrom,
    /// Keys deleted, as formats from [`crate::keys`].
    pub keys: &'static [&'static str],
}

const UPDATE_DELETE: &[Op] = &[Op::Update, Op::Delete];
const ALL_CHANGES: &[Op] = &[Op::Create, Op::Update, Op::Delete];

/// Every table this family handles.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    Rule { table: "chii_blog_entry", ops: UPDATE_DELETE, ids: IdFrom::Key("entry_id"), keys: &[BLOG_SLIM] },
    Rule { table: "chii_characters", ops: UPDATE_DELETE, ids: IdFrom::Key("crt_id"), keys: &[CHARACTER_SLIM] },
    Rule { table: "chii_persons", ops: UPDATE_DELETE, ids: IdFrom::Key("prsn_id"), keys: &[PERSON_SLIM] },
    Rule { table: "chii_index", ops: UPDATE_DELETE, ids: IdFrom::Key("idx_id"), keys: &[INDEX_SLIM] },
    Rule { table: "chii_groups", ops: UPDATE_DELETE, ids: IdFrom::Key("grp_id"), keys: &[GROUP_SLIM] },
    Rule { table: "chii_group_topics", ops: UPDATE_DELETE, ids: IdFrom::Key("grp_tpc_id"), keys: &[GROUP_TOPIC] },
    Rule { table: "chii_group_members", ops: ALL_CHANGES, ids: IdFrom::Row("gmb_uid"), keys: &[USER_GROUPS] },
    Rule { table: "chii_subjects", ops: UPDATE_DELETE, ids: IdFrom::Key("subject_id"), keys: &[SUBJECT_ITEM, SUBJECT_SLIM] },
    Rule { table: "chii_subject_fields", ops: UPDATE_DELETE, ids: IdFrom::Key("field_sid"), keys: &[SUBJECT_ITEM, SUBJECT_SLIM] },
    Rule { table: "chii_subject_topics", ops: UPDATE_DELETE, ids: IdFrom::Key("sbj_tpc_id"), keys: &[SUBJECT_TOPIC] },
    Rule { table: "chii_episodes", ops: UPDATE_DELETE, ids: IdFrom::Key("ep_id"), keys: &[EPISODE] },
    Rule { table: "chii_members", ops: UPDATE_DELETE, ids: IdFrom::Key("uid"), keys: &[USER_SLIM] },
    Rule { table: "chii_memberfields", ops: ALL_CHANGES, ids: IdFrom::Key("uid"), keys: &[USER_PRIVACY] },
    Rule {
        table: "chii_friends",
        ops: ALL_CHANGES,
        ids: IdFrom::RowPair(["frd_uid", "frd_fid"]),
        keys: &[USER_FRIENDS, USER_FOLLOWERS, USER_FRIEND_STATS],
    },
];

/// The rule for `table`, if this family handles it.
pub fn rule(table: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.table == table)
}
