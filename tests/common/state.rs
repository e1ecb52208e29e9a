//! Full-state comparison for the fault scenarios: every Redis key under a test's prefix (its
//! type and value, sorted-set members with scores, whether a TTL is set) and the rows of its
//! MariaDB tables, dumped so that a faulty run can be compared with a fault-free, in-order run
//! of the same event stream. [`assert_same_state`] prints a readable diff on mismatch.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context;
use sqlx::{MySqlPool, Row};

/// One Redis value, in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// A string (lossy UTF-8).
    String(String),
    /// Sorted-set members with their scores (as text), in score order.
    ZSet(Vec<(String, String)>),
    /// A hash, by field.
    Hash(BTreeMap<String, String>),
    /// A set, sorted.
    Set(Vec<String>),
    /// A list, in order.
    List(Vec<String>),
}

/// One key: its value and whether it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Value,
    /// Whether a TTL is set (the remaining time differs between runs; its presence must not).
    pub expires: bool,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ttl = if self.expires { " (TTL)" } else { "" };
        match &self.value {
            Value::String(s) => write!(f, "string {s:?}{ttl}"),
            Value::ZSet(m) => {
                let m: Vec<String> = m.iter().map(|(k, s)| format!("{k}@{s}")).collect();
                write!(f, "zset [{}]{ttl}", m.join(", "))
            }
            Value::Hash(h) => write!(f, "hash {h:?}{ttl}"),
            Value::Set(s) => write!(f, "set {s:?}{ttl}"),
            Value::List(l) => write!(f, "list {l:?}{ttl}"),
        }
    }
}

/// Everything a run left behind: Redis keys (without the prefix) and table rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Redis, by key.
    pub redis: BTreeMap<String, Entry>,
    /// MariaDB, by table: rows rendered as text, sorted.
    pub tables: BTreeMap<String, Vec<String>>,
}

impl State {
    /// How many keys are of each kind (the key up to its last `:`), for reports.
    pub fn summary(&self) -> String {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for k in self.redis.keys() {
            let kind = k.rsplit_once(':').map_or(k.as_str(), |(p, _)| p);
            *kinds.entry(kind.to_owned()).or_default() += 1;
        }
        let mut parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}:* ×{n}")).collect();
        parts.extend(
            self.tables
                .iter()
                .map(|(t, rows)| format!("{t} {} rows", rows.len())),
        );
        parts.join(", ")
    }
}

/// Dumps every key under `prefix` in the Redis at `uri`.
pub async fn dump_redis(uri: &str, prefix: &str) -> anyhow::Result<BTreeMap<String, Entry>> {
    let mut conn = crate::redis_at(uri).await?;
    let mut keys = crate::scan_prefix(&mut conn, prefix).await?;
    keys.sort();
    keys.dedup();
    let mut dump = BTreeMap::new();
    for chunk in keys.chunks(1_000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        let meta: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut values = redis::pipe();
        let mut kinds = Vec::with_capacity(chunk.len());
        for (k, pair) in chunk.iter().zip(meta.chunks(2)) {
            let kind: String = redis::from_redis_value(pair[0].clone())?;
            let ttl: i64 = redis::from_redis_value(pair[1].clone())?;
            match kind.as_str() {
                "string" => values.cmd("GET").arg(k),
                "zset" => values.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                "hash" => values.cmd("HGETALL").arg(k),
                "set" => values.cmd("SMEMBERS").arg(k),
                "list" => values.cmd("LRANGE").arg(k).arg(0).arg(-1),
                // Gone between SCAN and TYPE ("none"), or a type the fleet never writes.
                _ => values.cmd("ECHO").arg(&kind),
            };
            kinds.push((k, kind, ttl));
        }
        let raw: Vec<redis::Value> = values.query_async(&mut conn).await?;
        for ((key, kind, ttl), raw) in kinds.into_iter().zip(raw) {
            let text = |v: redis::Value| -> anyhow::Result<String> {
                let bytes: Vec<u8> = redis::from_redis_value(v)?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            };
            let list = |v: redis::Value| -> anyhow::Result<Vec<String>> {
                let items: Vec<Vec<u8>> = redis::from_redis_value(v)?;
                Ok(items
                    .into_iter()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .collect())
            };
            let value = match kind.as_str() {
                "none" => continue,
                "string" => Value::String(text(raw)?),
                "zset" => Value::ZSet(
                    list(raw)?
                        .chunks(2)
                        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
                        .collect(),
                ),
                "hash" => {
                    let flat = list(raw)?;
                    Value::Hash(
                        flat.chunks(2)
                            .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
                            .collect(),
                    )
                }
                "set" => {
                    let mut members = list(raw)?;
                    members.sort();
                    Value::Set(members)
                }
                "list" => Value::List(list(raw)?),
                other => anyhow::bail!("key {key} has type {other}, which no worker writes"),
            };
            dump.insert(
                key[prefix.len()..].to_owned(),
                Entry {
                    value,
                    expires: ttl >= 0,
                },
            );
        }
    }
    Ok(dump)
}

/// Every row of `table`, minus `skip_columns` (e.g. an auto-increment id, or Kafka coordinates
/// that differ between two runs), each rendered as `column=value` text, sorted.
pub async fn dump_table(
    pool: &MySqlPool,
    table: &str,
    skip_columns: &[&str],
) -> anyhow::Result<Vec<String>> {
    let columns: Vec<String> = sqlx::query(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<Result<_, _>>()?;
    let kept: Vec<&String> = columns
        .iter()
        .filter(|c| !skip_columns.contains(&c.as_str()))
        .collect();
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let select = kept
        .iter()
        .map(|c| format!("CAST(`{c}` AS CHAR)"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!("SELECT {select} FROM `{table}`"))
        .fetch_all(pool)
        .await
        .with_context(|| format!("reading {table}"))?;
    let mut rendered: Vec<String> = rows
        .iter()
        .map(|row| {
            kept.iter()
                .enumerate()
                .map(|(i, c)| {
                    let v: Option<String> = row.try_get(i).unwrap_or(None);
                    format!("{c}={}", v.as_deref().unwrap_or("NULL"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    rendered.sort();
    Ok(rendered)
}

/// Fails with a readable diff (at most 40 lines of it) unless `actual` equals `expected`.
pub fn assert_same_state(scenario: &str, actual: &State, expected: &State) {
    let diff = diff(actual, expected);
    if !diff.is_empty() {
        let shown: Vec<&String> = diff.iter().take(40).collect();
        panic!(
            "{scenario}: final state differs from the fault-free run in {} place(s) \
             (- fault-free, + this run):\n{}\n  this run: {}\n  fault-free: {}",
            diff.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            actual.summary(),
            expected.summary(),
        );
    }
}

/// The differences, one line each.
pub fn diff(actual: &State, expected: &State) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, want) in &expected.redis {
        match actual.redis.get(key) {
            None => lines.push(format!("- {key}: {want}")),
            Some(got) if got != want => {
                lines.push(format!("- {key}: {want}"));
                lines.push(format!("+ {key}: {got}"));
            }
            Some(_) => {}
        }
    }
    for (key, got) in &actual.redis {
        if !expected.redis.contains_key(key) {
            lines.push(format!("+ {key}: {got}"));
        }
    }
    let tables: std::collections::BTreeSet<&String> =
        expected.tables.keys().chain(actual.tables.keys()).collect();
    for table in tables {
        let empty = Vec::new();
        let want = expected.tables.get(table).unwrap_or(&empty);
        let got = actual.tables.get(table).unwrap_or(&empty);
        let mut w = want.iter().peekable();
        let mut g = got.iter().peekable();
        // Both sorted: a merge walk.
        loop {
            match (w.peek(), g.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {
                    w.next();
                    g.next();
                }
                (Some(a), Some(b)) if a < b => {
                    lines.push(format!("- {table}: {a}"));
                    w.next();
                }
                (Some(a), None) => {
                    lines.push(format!("- {table}: {a}"));
                    w.next();
                }
                (_, Some(b)) => {
                    lines.push(format!("+ {table}: {b}"));
                    g.next();
                }
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_missing_extra_and_changed_keys_and_rows() {
        let entry = |s: &str, expires| Entry {
            value: Value::String(s.into()),
            expires,
        };
        let mut expected = State::default();
        expected.redis.insert("a".into(), entry("1", false));
        expected.redis.insert("b".into(), entry("2", true));
        expected
            .tables
            .insert("t".into(), vec!["x=1".into(), "x=2".into()]);
        let mut actual = expected.clone();
        assert!(diff(&actual, &expected).is_empty());
        actual.redis.remove("a");
        actual.redis.insert("b".into(), entry("2", false));
        actual.redis.insert("c".into(), entry("3", false));
        actual
            .tables
            .insert("t".into(), vec!["x=1".into(), "x=3".into()]);
        assert_eq!(
            diff(&actual, &expected),
            vec![
                "- a: string \"1\"",
                "- b: string \"2\" (TTL)",
                "+ b: string \"2\"",
                "+ c: string \"3\"",
                "- t: x=2",
                "+ t: x=3",
            ]
        );
    }
}
