//! The notify family's SQL: reads of a batch's recipients, friendships and fields, and the
//! batch's writes, each one statement (a few for very large batches).
//!
//! Reads run in the batch's transaction; none locks (as server-private's do not): two workers
//! that insert the first field of the same hash and id at once may both insert one, as two
//! server-private processes may. Each notification points at a field of its hash and id
//! either way.
//!
//! # Layout
//! - [`recipients`], [`friendships`]: what decides.
//! - [`write`]: fields, notifications, counters.
//! - [`non_transactional`]: written tables a rollback would not undo.

use std::collections::{BTreeMap, BTreeSet};

use cdc_runtime::HandlerError;
use cdc_runtime::mysql::classify;
use sqlx::{MySql, MySqlConnection, QueryBuilder};

/// Ids per `IN (…)` list.
const PER_STATEMENT: usize = 1000;

/// A `chii_notify_field` row's identity: the type's hash and the related id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldKey {
    /// `ntf_hash`.
    pub hash: u8,
    /// `ntf_rid`.
    pub rid: u32,
}

/// One notification to write.
#[derive(Debug, Clone)]
pub struct Row {
    /// `nt_uid`.
    pub recipient: u32,
    /// `nt_from_uid`.
    pub sender: u32,
    /// `nt_type`.
    pub kind: i32,
    /// Its field.
    pub field: FieldKey,
    /// `ntf_title` if the field is new (as stored).
    pub title: String,
    /// `nt_related_id`.
    pub related: u32,
    /// `nt_dateline`.
    pub dateline: u32,
}

/// `(privacy, blocklist)` of each of `uids` that has a `chii_memberfields` row.
pub async fn recipients(
    conn: &mut MySqlConnection,
    uids: &BTreeSet<u32>,
) -> Result<BTreeMap<u32, (String, String)>, HandlerError> {
    let uids: Vec<u32> = uids.iter().copied().collect();
    let mut found = BTreeMap::new();
    for chunk in uids.chunks(PER_STATEMENT) {
        let mut query = QueryBuilder::<MySql>::new(
            "SELECT uid, privacy, blocklist FROM chii_memberfields WHERE uid IN (",
        );
        let mut list = query.separated(", ");
        for uid in chunk {
            list.push_bind(*uid);
        }
        query.push(")");
        let rows: Vec<(u32, String, String)> =
            query
                .build_query_as()
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| classify("reading chii_memberfields", e))?;
        found.extend(rows.into_iter().map(|(uid, p, b)| (uid, (p, b))));
    }
    Ok(found)
}

/// Which of `pairs` `(user, other)` are friendships: `user` follows `other` (a `chii_friends`
/// row `frd_uid = user, frd_fid = other`, server-private's `isFriends(user, other)`).
pub async fn friendships(
    conn: &mut MySqlConnection,
    pairs: &BTreeSet<(u32, u32)>,
) -> Result<BTreeSet<(u32, u32)>, HandlerError> {
    let pairs: Vec<(u32, u32)> = pairs.iter().copied().collect();
    let mut found = BTreeSet::new();
    for chunk in pairs.chunks(PER_STATEMENT) {
        // By the frd_uid index; the pairs are picked out here.
        let mut query = QueryBuilder::<MySql>::new(
            "SELECT frd_uid, frd_fid FROM chii_friends WHERE frd_uid IN (",
        );
        let mut list = query.separated(", ");
        for uid in chunk.iter().map(|(user, _)| *user).collect::<BTreeSet<_>>() {
            list.push_bind(uid);
        }
        query.push(") AND frd_fid IN (");
        let mut list = query.separated(", ");
        for fid in chunk
            .iter()
            .map(|(_, other)| *other)
            .collect::<BTreeSet<_>>()
        {
            list.push_bind(fid);
        }
        query.push(")");
        let rows: Vec<(u32, u32)> = query
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| classify("reading chii_friends", e))?;
        found.extend(rows.into_iter().filter(|pair| chunk.contains(pair)));
    }
    Ok(found)
}

/// The `ntf_id` of each of `keys` that has a field (the lowest, if several).
async fn fields(
    conn: &mut MySqlConnection,
    keys: &BTreeSet<FieldKey>,
) -> Result<BTreeMap<FieldKey, u32>, HandlerError> {
    let keys: Vec<FieldKey> = keys.iter().copied().collect();
    let mut found: BTreeMap<FieldKey, u32> = BTreeMap::new();
    for chunk in keys.chunks(PER_STATEMENT) {
        // By the ntf_rid index; the hashes are picked out here.
        let mut query = QueryBuilder::<MySql>::new(
            "SELECT ntf_id, ntf_hash, ntf_rid FROM chii_notify_field WHERE ntf_rid IN (",
        );
        let mut list = query.separated(", ");
        for rid in chunk.iter().map(|k| k.rid).collect::<BTreeSet<_>>() {
            list.push_bind(rid);
        }
        query.push(")");
        let rows: Vec<(u32, u8, u32)> = query
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| classify("reading chii_notify_field", e))?;
        for (id, hash, rid) in rows {
            let key = FieldKey { hash, rid };
            if chunk.contains(&key) {
                let slot = found.entry(key).or_insert(id);
                *slot = (*slot).min(id);
            }
        }
    }
    Ok(found)
}

/// Writes `rows` in order: the fields they lack (the title of the first row of each), the
/// notifications (unread), and each recipient's `new_notify` raised by its count.
pub async fn write(conn: &mut MySqlConnection, rows: &[Row]) -> Result<(), HandlerError> {
    let keys: BTreeSet<FieldKey> = rows.iter().map(|r| r.field).collect();
    let mut ids = fields(conn, &keys).await?;
    let mut new: Vec<&Row> = Vec::new();
    for row in rows {
        if !ids.contains_key(&row.field) && !new.iter().any(|n| n.field == row.field) {
            new.push(row);
        }
    }
    if !new.is_empty() {
        for chunk in new.chunks(PER_STATEMENT) {
            let mut query = QueryBuilder::<MySql>::new(
                "INSERT INTO chii_notify_field (ntf_hash, ntf_rid, ntf_title) ",
            );
            query.push_values(chunk, |mut b, row| {
                b.push_bind(row.field.hash)
                    .push_bind(row.field.rid)
                    .push_bind(&row.title);
            });
            query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(|e| classify("inserting into chii_notify_field", e))?;
        }
        let inserted: BTreeSet<FieldKey> = new.iter().map(|r| r.field).collect();
        ids.extend(fields(conn, &inserted).await?);
    }
    for chunk in rows.chunks(PER_STATEMENT) {
        let mut query = QueryBuilder::<MySql>::new(
            "INSERT INTO chii_notify (nt_uid, nt_from_uid, nt_status, nt_type, nt_mid, nt_related_id, nt_dateline) ",
        );
        let mut missing = None;
        query.push_values(chunk, |mut b, row| {
            let field = ids.get(&row.field).copied();
            if field.is_none() {
                missing = Some(row.field);
            }
            b.push_bind(row.recipient)
                .push_bind(row.sender)
                .push_bind(1_u8)
                .push_bind(row.kind)
                .push_bind(field.unwrap_or(0))
                .push_bind(row.related)
                .push_bind(row.dateline);
        });
        if let Some(key) = missing {
            // Inserted in this transaction, so only a concurrent delete can hide it.
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "chii_notify_field of hash {} and id {} is gone right after it was inserted",
                key.hash,
                key.rid
            )));
        }
        query
            .build()
            .execute(&mut *conn)
            .await
            .map_err(|e| classify("inserting into chii_notify", e))?;
    }
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for row in rows {
        *counts.entry(row.recipient).or_default() += 1;
    }
    let counts: Vec<(u32, u32)> = counts.into_iter().collect();
    for chunk in counts.chunks(PER_STATEMENT) {
        // `new_notify + n`, held at the column's maximum (SMALLINT UNSIGNED) as Bangumi's
        // non-strict MySQL stores an overflowing `new_notify + 1`.
        let mut query = QueryBuilder::<MySql>::new("UPDATE chii_members m JOIN (");
        for (n, (uid, count)) in chunk.iter().enumerate() {
            query.push(if n == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            query
                .push_bind(*uid)
                .push(" AS uid, ")
                .push_bind(*count)
                .push(" AS n");
        }
        query.push(") v ON m.uid = v.uid SET m.new_notify = LEAST(m.new_notify + v.n, 65535)");
        query
            .build()
            .execute(&mut *conn)
            .await
            .map_err(|e| classify("updating chii_members.new_notify", e))?;
    }
    Ok(())
}

/// The tables this family writes whose engine has no transactions (MyISAM, as in Bangumi's
/// dev-env dump of `chii_notify` and `chii_notify_field`), with their engine: a rollback does
/// not undo their rows, so exactly-once does not hold for them.
pub async fn non_transactional(
    conn: &mut MySqlConnection,
) -> Result<Vec<(String, String)>, HandlerError> {
    sqlx::query_as(
        "SELECT CAST(TABLE_NAME AS CHAR), CAST(ENGINE AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME IN ('chii_notify', 'chii_notify_field', 'chii_members') \
         AND ENGINE <> 'InnoDB'",
    )
    .fetch_all(conn)
    .await
    .map_err(|e| classify("reading the tables' engines", e))
}
