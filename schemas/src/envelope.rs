//! From decoded key/value trees to a typed [`ChangeEvent`]: the one place that knows the
//! shapes of Debezium's messages, whatever the encoding was.
//!
//! The value decides the kind: a null value is a tombstone; `op` makes a row change or a
//! truncate; `ddl`/`tableChanges`/`databaseName` a schema change; `status`+`id` transaction
//! metadata; a lone `ts_ms` a heartbeat. Anything else is `NotAnEnvelope`.
//! A row change must carry the image its op implies (`after` for `c`/`u`/`r`, `before`
//! for `d`): Debezium always sends it, and families rely on [`RowChange::row`].
//!
//! # Layout
//! - `classify`: the dispatcher.
//! - `row_change`, `source`, `schema_change`, `transaction`: one builder per kind.
//! - `Fields`: typed reads of envelope fields with `WrongType`/`MissingField` errors.

use std::sync::Arc;

use crate::error::DecodeErrorKind;
use crate::event::{
    ChangeEvent, Heartbeat, Op, RowChange, SchemaChange, Snapshot, Source, TableChange,
    Transaction, Truncate, TxStatus,
};
use crate::json::shape;
use crate::value::{Columns, Row, Value};

/// A failure with the table, when it had been read.
pub(crate) type Failure = (DecodeErrorKind, Option<String>);

/// Builds the event of a record whose key and value are decoded trees, keeping the row-image
/// columns `columns` selects.
pub(crate) fn classify(
    topic: &str,
    key: Option<Value>,
    value: Option<Value>,
    columns: Columns,
) -> Result<ChangeEvent, Failure> {
    let key = key
        .map(|k| into_row(k, "key"))
        .transpose()
        .map_err(|e| (e, None))?;
    let Some(value) = value else {
        let table = Some(Arc::from(crate::topic_table(topic)));
        let key = key.map(|mut k| {
            k.set_table(table);
            k
        });
        return Ok(ChangeEvent::Tombstone { key });
    };
    let Value::Struct(mut root) = value else {
        return Err((
            DecodeErrorKind::NotAnEnvelope {
                found: shape(&value),
            },
            None,
        ));
    };
    if root.get("op").is_some() {
        return row_change(key, root, columns);
    }
    let fail = |e| (e, None);
    if ["ddl", "tableChanges", "databaseName"]
        .iter()
        .any(|f| root.get(f).is_some())
    {
        return schema_change(&mut root)
            .map(ChangeEvent::SchemaChange)
            .map_err(fail);
    }
    if root.get("status").is_some() && root.get("id").is_some() {
        return transaction(&mut root)
            .map(ChangeEvent::Transaction)
            .map_err(fail);
    }
    if root.len() == 1 && root.get("ts_ms").is_some() {
        let ts_ms = Fields(&mut root)
            .int("ts_ms")?
            .ok_or_else(|| missing("ts_ms"))
            .map_err(fail)?;
        let server_name = key
            .as_ref()
            .and_then(|k| k.get("serverName"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Ok(ChangeEvent::Heartbeat(Heartbeat { ts_ms, server_name }));
    }
    Err((
        DecodeErrorKind::NotAnEnvelope {
            found: shape(&Value::Struct(root)),
        },
        None,
    ))
}

fn missing(field: &str) -> DecodeErrorKind {
    DecodeErrorKind::MissingField {
        field: field.to_owned(),
    }
}

fn wrong(column: &str, expected: &'static str, found: &Value) -> DecodeErrorKind {
    DecodeErrorKind::WrongType {
        column: column.to_owned(),
        expected,
        found: found.describe(),
    }
}

pub(crate) fn into_row(v: Value, what: &str) -> Result<Row, DecodeErrorKind> {
    match v {
        Value::Struct(row) => Ok(row),
        other => Err(wrong(what, "object", &other)),
    }
}

fn row_change(key: Option<Row>, mut root: Row, columns: Columns) -> Result<ChangeEvent, Failure> {
    let op = match root.take("op") {
        Some(Value::Text(op)) => op,
        Some(other) => return Err((wrong("op", "string", &other), None)),
        None => return Err((missing("op"), None)),
    };
    let source = match root.take("source") {
        Some(Value::Struct(row)) => source(row).map_err(|e| (e, None))?,
        Some(Value::Null) | None => return Err((missing("source"), None)),
        Some(other) => return Err((wrong("source", "object", &other), None)),
    };
    let image = |v: Option<Value>, name: &str| -> Result<Option<Row>, Failure> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Struct(row)) => Ok(Some(row)),
            Some(other) => Err((wrong(name, "object", &other), source.table.clone())),
        }
    };
    let before = image(root.take("before"), "before")?;
    let after = image(root.take("after"), "after")?;
    let ts_ms = Fields(&mut root).int("ts_ms")?;
    assemble(
        key,
        RowChangeFields {
            op,
            source,
            before,
            after,
            ts_ms,
        },
        columns,
    )
}

/// A row change's envelope fields as read, before the checks [`assemble`] makes.
pub(crate) struct RowChangeFields {
    pub op: String,
    pub source: Source,
    pub before: Option<Row>,
    pub after: Option<Row>,
    pub ts_ms: Option<i64>,
}

/// The row change (or truncate) of read envelope fields: the images keep the selected columns
/// and learn their table; the op must be known and come with the image it implies.
pub(crate) fn assemble(
    key: Option<Row>,
    fields: RowChangeFields,
    columns: Columns,
) -> Result<ChangeEvent, Failure> {
    let RowChangeFields {
        op,
        source,
        before,
        after,
        ts_ms,
    } = fields;
    let fail = |e| (e, source.table.clone());
    let table: Option<Arc<str>> = source.table.as_deref().map(Arc::from);
    let image = |row: Option<Row>| {
        row.map(|mut row| {
            row.retain(&columns);
            row.set_table(table.clone());
            row
        })
    };
    let (before, after) = (image(before), image(after));
    let key = key.map(|mut k| {
        k.set_table(table.clone());
        k
    });
    let op = match op.as_str() {
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        "t" => return Ok(ChangeEvent::Truncate(Truncate { source, ts_ms })),
        _ => return Err(fail(DecodeErrorKind::UnknownOp(op))),
    };
    match op {
        Op::Delete if before.is_none() => return Err(fail(missing("before"))),
        Op::Create | Op::Update | Op::Read if after.is_none() => {
            return Err(fail(missing("after")));
        }
        _ => {}
    }
    Ok(ChangeEvent::Row(RowChange {
        op,
        key,
        before,
        after,
        source,
        ts_ms,
    }))
}

/// Typed, consuming reads of envelope fields; errors name the field.
struct Fields<'a>(&'a mut Row);

impl Fields<'_> {
    fn int(&mut self, f: &'static str) -> Result<Option<i64>, Failure> {
        match self.0.take(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Int(i)) => Ok(Some(i)),
            Some(other) => Err((wrong(f, "integer", &other), None)),
        }
    }

    fn uint(&mut self, f: &'static str) -> Result<Option<u64>, DecodeErrorKind> {
        match self.0.take(f) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| wrong(f, "unsigned integer", &v)),
        }
    }

    fn text(&mut self, f: &'static str) -> Result<Option<String>, DecodeErrorKind> {
        match self.0.take(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s)),
            Some(other) => Err(wrong(f, "string", &other)),
        }
    }

    fn i(&mut self, f: &'static str) -> Result<Option<i64>, DecodeErrorKind> {
        self.int(f).map_err(|e| e.0)
    }
}

fn source(mut row: Row) -> Result<Source, DecodeErrorKind> {
    let mut f = Fields(&mut row);
    let snapshot = match f.0.take("snapshot") {
        None | Some(Value::Null) => Snapshot::False,
        Some(Value::Bool(b)) => {
            if b {
                Snapshot::True
            } else {
                Snapshot::False
            }
        }
        Some(Value::Text(s)) => Snapshot::parse(&s)
            .ok_or_else(|| wrong("source.snapshot", "snapshot marker", &Value::Text(s)))?,
        Some(other) => return Err(wrong("source.snapshot", "snapshot marker", &other)),
    };
    let prefixed = |e: DecodeErrorKind| match e {
        DecodeErrorKind::WrongType {
            column,
            expected,
            found,
        } => DecodeErrorKind::WrongType {
            column: format!("source.{column}"),
            expected,
            found,
        },
        other => other,
    };
    let row_in_event = f.uint("row").map_err(prefixed)?;
    Ok(Source {
        version: f.text("version").map_err(prefixed)?.unwrap_or_default(),
        connector: f.text("connector").map_err(prefixed)?.unwrap_or_default(),
        name: f.text("name").map_err(prefixed)?.unwrap_or_default(),
        db: f.text("db").map_err(prefixed)?.unwrap_or_default(),
        table: f.text("table").map_err(prefixed)?,
        ts_ms: f.i("ts_ms").map_err(prefixed)?.unwrap_or(0),
        snapshot,
        file: f.text("file").map_err(prefixed)?,
        pos: f.uint("pos").map_err(prefixed)?,
        row: row_in_event.map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
        gtid: f.text("gtid").map_err(prefixed)?,
        server_id: f.i("server_id").map_err(prefixed)?,
        thread: f.i("thread").map_err(prefixed)?,
        query: f.text("query").map_err(prefixed)?,
        schema: f.text("schema").map_err(prefixed)?,
        lsn: f.uint("lsn").map_err(prefixed)?,
        tx_id: f.i("txId").map_err(prefixed)?,
        sequence: f.text("sequence").map_err(prefixed)?,
    })
}

fn schema_change(root: &mut Row) -> Result<SchemaChange, DecodeErrorKind> {
    let source = match root.take("source") {
        Some(Value::Struct(row)) => source(row)?,
        _ => Source::default(),
    };
    let mut f = Fields(root);
    let ts_ms = f.i("ts_ms")?;
    let database = f.text("databaseName")?;
    let schema = f.text("schemaName")?;
    let ddl = f.text("ddl")?;
    let mut table_changes = Vec::new();
    match f.0.take("tableChanges") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Value::Struct(mut change) = item else {
                    return Err(wrong("tableChanges", "object", &item));
                };
                let mut cf = Fields(&mut change);
                let kind = cf.text("type")?.unwrap_or_default();
                let id = cf.text("id")?.unwrap_or_default();
                table_changes.push(TableChange { kind, id });
            }
        }
        Some(other) => return Err(wrong("tableChanges", "array", &other)),
    }
    Ok(SchemaChange {
        source,
        ts_ms,
        database,
        schema,
        ddl,
        table_changes,
    })
}

fn transaction(root: &mut Row) -> Result<Transaction, DecodeErrorKind> {
    let mut f = Fields(root);
    let status = match f.text("status")?.as_deref() {
        Some("BEGIN") => TxStatus::Begin,
        Some("END") => TxStatus::End,
        Some(other) => {
            return Err(wrong(
                "status",
                "BEGIN or END",
                &Value::Text(other.to_owned()),
            ));
        }
        None => return Err(missing("status")),
    };
    let id = f.text("id")?.ok_or_else(|| missing("id"))?;
    let event_count = f.uint("event_count")?;
    let ts_ms = f.i("ts_ms")?;
    let mut data_collections = Vec::new();
    if let Some(Value::Array(items)) = f.0.take("data_collections") {
        for item in items {
            let Value::Struct(mut dc) = item else {
                return Err(wrong("data_collections", "object", &item));
            };
            let mut df = Fields(&mut dc);
            let name = df.text("data_collection")?.unwrap_or_default();
            let count = df.uint("event_count")?.unwrap_or(0);
            data_collections.push((name, count));
        }
    }
    Ok(Transaction {
        status,
        id,
        event_count,
        data_collections,
        ts_ms,
    })
}
