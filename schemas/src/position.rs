//! `SourcePosition`: where in the source database's log a change happened, totally ordered,
//! for idempotency fencing (docs/architecture.md, "Idempotency"): an event whose position is not
//! greater than the entity's stored fence is stale.
//!
//! # Ordering rules
//! Positions compare field by field, in this order:
//! 1. `log`: which kind of log (`Unknown` < `MySql` < `Postgres`). Positions from different
//!    kinds never meet in practice; the rank only makes the order total.
//! 2. `segment`: MySQL/MariaDB binlog file *sequence number*, the numeric suffix of
//!    `mysql-bin.000010` (so `.000009` < `.000010` and `.999999` < `.1000000`: compared as
//!    numbers, not text; the base name is ignored). Postgres: the commit LSN
//!    (`source.sequence[0]`, else the change LSN).
//! 3. `offset`: binlog position of the rows event (`source.pos`); Postgres: the change LSN.
//! 4. `row`: the row's index within its rows event (`source.row`); 0 for Postgres.
//! 5. `phase`: `Snapshot` < `Delete` < `Streaming`.
//!    - A snapshot read (`op = r`, incl. incremental snapshots) carries the binlog position
//!      the snapshot started at; every change streamed after it has a position ≥ that, and
//!      at an equal position the read ranks lower. So a snapshot read never overtakes a
//!      streamed change of the same entity made after the snapshot started, while a
//!      snapshot taken later (a re-snapshot) does rank above changes streamed before it.
//!    - When an `UPDATE` changes the primary key, Debezium emits a `d` of the old key and a
//!      `c` of the new key from the *same* binlog row, so both carry the same
//!      (file, pos, row) (seen in the fixtures' `pk-change` scenario). The delete happened
//!      first, so a streamed `d` ranks below any other streamed op at the same position;
//!      elsewhere a position holds only one event, and the rank changes nothing.
//!
//! GTIDs are not part of the order: MariaDB/MySQL GTID sets are not totally ordered across
//! domains/servers. A failover to a server with a different binlog numbering needs the
//! fences to expire (they do, after the configured retention).
//!
//! # Encoding
//! [`SourcePosition::to_key`] renders a position as a fixed-width string of 52 ASCII digits
//! (`L` + 20-digit segment + 20-digit offset + 10-digit row + `P`), whose plain string order
//! is the position order. Store it in Redis and compare inside a Lua script with `<`/`>`:
//! Lua compares strings with `strcoll`, and Redis sets `LC_COLLATE` from the environment,
//! but equal-length strings made only of ASCII digits collate the same in the C locale and
//! every glibc locale, so the comparison is safe. [`SourcePosition::to_bytes`] is a 22-byte
//! big-endian form for byte-wise (memcmp) stores. Both round-trip with `from_key`/`from_bytes`.
//!
//! # Layout
//! - [`SourcePosition`], [`LogKind`], [`Phase`].
//! - `SourcePosition::of`: builds one from a [`Source`] and the event's [`Op`].

use std::fmt;

use crate::event::{Op, Source};

/// Which database log a position is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogKind {
    /// No log coordinates (e.g. a hand-made event): sorts first.
    #[default]
    Unknown = 0,
    /// MySQL / MariaDB binlog.
    MySql = 1,
    /// Postgres WAL.
    Postgres = 2,
}

/// The tie-breaker at equal log coordinates: snapshot reads, then streamed deletes, then
/// other streamed changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// `op = r` (initial, blocking or incremental snapshot).
    #[default]
    Snapshot = 0,
    /// A streamed `d` (the first half of a primary-key change shares its position).
    Delete = 1,
    /// Any other change streamed from the log (`c`, `u`, `t`).
    Streaming = 2,
}

/// A totally ordered log position; see the module docs for the rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePosition {
    /// The kind of log.
    pub log: LogKind,
    /// Binlog file sequence number; Postgres commit LSN.
    pub segment: u64,
    /// Binlog position; Postgres change LSN.
    pub offset: u64,
    /// Row within the binlog rows event.
    pub row: u32,
    /// Snapshot read or streamed change.
    pub phase: Phase,
}

/// Length of [`SourcePosition::to_key`].
pub const KEY_LEN: usize = 52;

impl SourcePosition {
    /// The position of an event with this `source` and `op` (truncates: [`Op::Update`]'s rank).
    pub fn of(source: &Source, op: Op) -> Self {
        let phase = match op {
            Op::Read => Phase::Snapshot,
            Op::Delete => Phase::Delete,
            Op::Create | Op::Update => Phase::Streaming,
        };
        if source.connector == "postgresql" || source.lsn.is_some() {
            let lsn = source.lsn.unwrap_or(0);
            let commit = source
                .sequence
                .as_deref()
                .and_then(pg_commit_lsn)
                .unwrap_or(lsn);
            return SourcePosition {
                log: LogKind::Postgres,
                segment: commit,
                offset: lsn,
                row: 0,
                phase,
            };
        }
        match (&source.file, source.pos) {
            (Some(file), Some(pos)) => SourcePosition {
                log: LogKind::MySql,
                segment: binlog_sequence(file),
                offset: pos,
                row: source.row.unwrap_or(0),
                phase,
            },
            _ => SourcePosition {
                phase,
                ..SourcePosition::default()
            },
        }
    }

    /// The 52-digit sortable string form (see module docs).
    pub fn to_key(&self) -> String {
        format!(
            "{}{:020}{:020}{:010}{}",
            self.log as u8, self.segment, self.offset, self.row, self.phase as u8
        )
    }

    /// Parses [`to_key`](Self::to_key) output.
    pub fn from_key(key: &str) -> Option<Self> {
        let b = key.as_bytes();
        if b.len() != KEY_LEN || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let log = match b[0] {
            b'0' => LogKind::Unknown,
            b'1' => LogKind::MySql,
            b'2' => LogKind::Postgres,
            _ => return None,
        };
        let phase = match b[51] {
            b'0' => Phase::Snapshot,
            b'1' => Phase::Delete,
            b'2' => Phase::Streaming,
            _ => return None,
        };
        Some(SourcePosition {
            log,
            segment: key.get(1..21)?.parse().ok()?,
            offset: key.get(21..41)?.parse().ok()?,
            row: key.get(41..51)?.parse().ok()?,
            phase,
        })
    }

    /// The 22-byte big-endian form, ordered byte-wise like the position.
    pub fn to_bytes(&self) -> [u8; 22] {
        let mut out = [0u8; 22];
        out[0] = self.log as u8;
        out[1..9].copy_from_slice(&self.segment.to_be_bytes());
        out[9..17].copy_from_slice(&self.offset.to_be_bytes());
        out[17..21].copy_from_slice(&self.row.to_be_bytes());
        out[21] = self.phase as u8;
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(b: &[u8; 22]) -> Option<Self> {
        let log = match b[0] {
            0 => LogKind::Unknown,
            1 => LogKind::MySql,
            2 => LogKind::Postgres,
            _ => return None,
        };
        let phase = match b[21] {
            0 => Phase::Snapshot,
            1 => Phase::Delete,
            2 => Phase::Streaming,
            _ => return None,
        };
        let u64_at = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let row = b
            .get(17..21)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_be_bytes)?;
        Some(SourcePosition {
            log,
            segment: u64_at(1)?,
            offset: u64_at(9)?,
            row,
            phase,
        })
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Snapshot => "snapshot",
            Phase::Delete => "stream-delete",
            Phase::Streaming => "stream",
        };
        match self.log {
            LogKind::MySql => write!(
                f,
                "binlog {}:{}#{} {phase}",
                self.segment, self.offset, self.row
            ),
            LogKind::Postgres => write!(f, "lsn {}/{} {phase}", self.segment, self.offset),
            LogKind::Unknown => write!(f, "unknown {phase}"),
        }
    }
}

/// The numeric suffix of a binlog file name (`mysql-bin.000010` → 10); 0 when there is none.
pub fn binlog_sequence(file: &str) -> u64 {
    let digits = file.rsplit('.').next().unwrap_or("");
    digits.parse().unwrap_or(0)
}

/// `["<last commit lsn>","<lsn>"]` → the commit LSN.
fn pg_commit_lsn(sequence: &str) -> Option<u64> {
    let inner = sequence.trim().strip_prefix('[')?.strip_suffix(']')?;
    let first = inner.split(',').next()?.trim().trim_matches('"');
    first.parse().ok()
}
