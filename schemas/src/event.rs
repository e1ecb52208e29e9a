//! The typed events a Debezium topic can carry: one [`ChangeEvent`] enum, never a map.
//!
//! Not here: how bytes become these (see `json`, `avro`, `envelope`).
//!
//! # Layout
//! - [`ChangeEvent`]: row change, truncate, tombstone, schema change, heartbeat, transaction.
//! - [`RowChange`], [`Op`]: a `c`/`u`/`d`/`r` envelope, with routing helpers.
//! - [`Source`], [`Snapshot`]: the envelope's `source` block.
//! - [`Truncate`], [`SchemaChange`], [`TableChange`], [`Heartbeat`], [`Transaction`], [`TxStatus`].

use crate::position::SourcePosition;
use crate::value::Row;

/// Everything a Debezium (connector, heartbeat, schema-change or transaction) topic carries.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeEvent {
    /// A row was created, updated, deleted, or read by a snapshot.
    Row(RowChange),
    /// `op = t`: the table was truncated.
    Truncate(Truncate),
    /// A null value (after each delete, for log compaction).
    Tombstone {
        /// The key, decoded as a row when present.
        key: Option<Row>,
    },
    /// A message of the schema-change topic (DDL).
    SchemaChange(SchemaChange),
    /// A heartbeat (`__debezium-heartbeat.<prefix>`).
    Heartbeat(Heartbeat),
    /// Transaction metadata (`<prefix>.transaction`), BEGIN or END.
    Transaction(Transaction),
}

/// The kind of row change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Op {
    /// `c`
    Create,
    /// `u`
    Update,
    /// `d`
    Delete,
    /// `r`: a snapshot read; [`Source::snapshot`] tells which part of the snapshot.
    #[default]
    Read,
}

impl Op {
    /// The Debezium letter.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// A row-level change envelope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowChange {
    /// What happened.
    pub op: Op,
    /// The message key (primary-key columns); `None` for tables without a key.
    pub key: Option<Row>,
    /// Row image before the change (`u`, `d`).
    pub before: Option<Row>,
    /// Row image after the change (`c`, `u`, `r`).
    pub after: Option<Row>,
    /// Where the change came from.
    pub source: Source,
    /// When Debezium processed the event.
    pub ts_ms: Option<i64>,
}

impl RowChange {
    /// The table (`source.table`): the current workers route by it, not by topic name.
    pub fn table(&self) -> &str {
        self.source.table.as_deref().unwrap_or("")
    }

    /// The log position, for fencing (see [`SourcePosition`] for the ordering rules).
    pub fn position(&self) -> SourcePosition {
        SourcePosition::of(&self.source, self.op)
    }

    /// The row the change is about: `after`, or `before` for deletes.
    pub fn row(&self) -> Option<&Row> {
        self.after.as_ref().or(self.before.as_ref())
    }
}

/// `source.snapshot`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Snapshot {
    /// `false`, or absent: a streamed change.
    #[default]
    False,
    /// `true`: inside a snapshot.
    True,
    /// `first`: the first record of the snapshot.
    First,
    /// `first_in_data_collection`.
    FirstInDataCollection,
    /// `last_in_data_collection`.
    LastInDataCollection,
    /// `last`: the last record of the snapshot.
    Last,
    /// `incremental`: an incremental (signal-driven) snapshot chunk.
    Incremental,
}

impl Snapshot {
    /// Parses the Debezium enum text (`"true"`, `"last"`, …).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "false" => Snapshot::False,
            "true" => Snapshot::True,
            "first" => Snapshot::First,
            "first_in_data_collection" => Snapshot::FirstInDataCollection,
            "last_in_data_collection" => Snapshot::LastInDataCollection,
            "last" => Snapshot::Last,
            "incremental" => Snapshot::Incremental,
            _ => return None,
        })
    }

    /// The Debezium enum text.
    pub fn as_str(self) -> &'static str {
        match self {
            Snapshot::False => "false",
            Snapshot::True => "true",
            Snapshot::First => "first",
            Snapshot::FirstInDataCollection => "first_in_data_collection",
            Snapshot::LastInDataCollection => "last_in_data_collection",
            Snapshot::Last => "last",
            Snapshot::Incremental => "incremental",
        }
    }

    /// Whether the event belongs to a snapshot.
    pub fn is_snapshot(self) -> bool {
        self != Snapshot::False
    }
}

/// The envelope's `source` block (MySQL/MariaDB fields, plus the Postgres ones).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Source {
    /// Debezium version.
    pub version: String,
    /// `mysql`, `mariadb`, `postgresql`.
    pub connector: String,
    /// The logical name (`topic.prefix`).
    pub name: String,
    /// Database.
    pub db: String,
    /// Table, absent for database-level schema changes.
    pub table: Option<String>,
    /// When the change was made in the database (event time).
    pub ts_ms: i64,
    /// Snapshot marker.
    pub snapshot: Snapshot,
    /// Binlog file name.
    pub file: Option<String>,
    /// Binlog position of the rows event.
    pub pos: Option<u64>,
    /// Row within the rows event.
    pub row: Option<u32>,
    /// GTID of the transaction.
    pub gtid: Option<String>,
    /// MySQL server id.
    pub server_id: Option<i64>,
    /// MySQL thread id.
    pub thread: Option<i64>,
    /// The SQL statement (when `binlog_rows_query_log_events` is on).
    pub query: Option<String>,
    /// Postgres schema.
    pub schema: Option<String>,
    /// Postgres LSN of the change.
    pub lsn: Option<u64>,
    /// Postgres transaction id.
    pub tx_id: Option<i64>,
    /// Postgres `["<last commit lsn>","<lsn>"]` (JSON text).
    pub sequence: Option<String>,
}

/// `op = t`.
#[derive(Clone, Debug, PartialEq)]
pub struct Truncate {
    /// Where the truncate came from (`table` names the table).
    pub source: Source,
    /// When Debezium processed it.
    pub ts_ms: Option<i64>,
}

impl Truncate {
    /// The log position (ranked like a streamed update).
    pub fn position(&self) -> SourcePosition {
        SourcePosition::of(&self.source, Op::Update)
    }
}

/// One entry of a schema change's `tableChanges`.
#[derive(Clone, Debug, PartialEq)]
pub struct TableChange {
    /// `CREATE`, `ALTER`, `DROP`.
    pub kind: String,
    /// Quoted table id, e.g. `"chii"."chii_members"`.
    pub id: String,
}

/// A schema-change topic message.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemaChange {
    /// Where the DDL came from.
    pub source: Source,
    /// When Debezium processed it.
    pub ts_ms: Option<i64>,
    /// `databaseName`.
    pub database: Option<String>,
    /// `schemaName`.
    pub schema: Option<String>,
    /// The DDL text.
    pub ddl: Option<String>,
    /// The tables it changed.
    pub table_changes: Vec<TableChange>,
}

/// A heartbeat message.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    /// When it was emitted.
    pub ts_ms: i64,
    /// The key's `serverName` (the logical name).
    pub server_name: Option<String>,
}

/// BEGIN or END of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// `BEGIN`
    Begin,
    /// `END`
    End,
}

/// A transaction-metadata message.
#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    /// BEGIN / END.
    pub status: TxStatus,
    /// Transaction id (GTID or `file:pos` / Postgres txid).
    pub id: String,
    /// Number of events (END only).
    pub event_count: Option<u64>,
    /// Events per table (END only).
    pub data_collections: Vec<(String, u64)>,
    /// When it was emitted.
    pub ts_ms: Option<i64>,
}
