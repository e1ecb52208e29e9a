//! Property tests: encode-then-decode round trips (JSON without schema, Avro) and the
//! `SourcePosition` order (total, binlog-consistent, preserved by its encodings).
#![allow(clippy::unwrap_used)] // tests: a failure should panic with the value

mod common;

use std::sync::Arc;

use apache_avro::types::Value as Avro;
use cdc_schemas::{
    ChangeEvent, Format, Op, Phase, RawRecord, Row, RowChange, SchemaSet, Snapshot, Source,
    SourcePosition, Value, decode, encode,
};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
        (-1_000_000i64..1_000_000).prop_map(|i| Value::Float(i as f64 / 1024.0)),
        "\\PC{0,40}".prop_map(Value::Text),
        prop::collection::vec(prop::char::range('\u{1F300}', '\u{1F6FF}'), 0..4)
            .prop_map(|c| Value::Text(c.into_iter().collect())),
    ]
}

fn row(table: Arc<str>) -> impl Strategy<Value = Row> {
    prop::collection::btree_map("[a-z_]{1,12}", scalar(), 0..12)
        .prop_map(move |cols| Row::new(cols).with_table(table.clone()))
}

fn source(table: &str) -> impl Strategy<Value = Source> {
    let table = table.to_owned();
    (
        1u64..2_000_000,
        any::<u32>(),
        0u32..50,
        any::<bool>(),
        any::<i64>(),
    )
        .prop_map(move |(seq, pos, row, snap, ts)| Source {
            version: "3.6.3.Final".into(),
            connector: "mysql".into(),
            name: "debezium.chii".into(),
            db: "bangumi".into(),
            table: Some(table.clone()),
            ts_ms: ts,
            snapshot: if snap {
                Snapshot::Last
            } else {
                Snapshot::False
            },
            file: Some(format!("mysql-bin.{seq:06}")),
            pos: Some(u64::from(pos)),
            row: Some(row),
            server_id: Some(1),
            ..Source::default()
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Create),
        Just(Op::Update),
        Just(Op::Delete),
        Just(Op::Read)
    ]
}

fn change() -> impl Strategy<Value = RowChange> {
    let table: Arc<str> = Arc::from("chii_timeline");
    (
        op(),
        row(table.clone()),
        row(table.clone()),
        row(table),
        source("chii_timeline"),
        any::<Option<i64>>(),
    )
        .prop_map(|(op, key, before, after, source, ts_ms)| {
            let (before, after) = match op {
                Op::Create | Op::Read => (None, Some(after)),
                Op::Update => (Some(before), Some(after)),
                Op::Delete => (Some(before), None),
            };
            RowChange {
                op,
                key: Some(key),
                before,
                after,
                source,
                ts_ms,
            }
        })
}

proptest! {
    #[test]
    fn json_round_trip(c in change()) {
        let key = encode::key(c.key.as_ref().unwrap());
        let value = encode::row_change(&c);
        let rec = RawRecord { topic: "debezium.chii.bangumi.chii_timeline", key: Some(key.as_bytes()), value: Some(value.as_bytes()) };
        for format in [Format::Json, Format::Auto] {
            prop_assert_eq!(decode(&rec, format, &()).unwrap(), ChangeEvent::Row(c.clone()));
        }
    }

    #[test]
    fn avro_round_trip(id in any::<i64>(), name in "\\PC{0,30}", score in any::<Option<i32>>(),
                       flag in any::<bool>(), day in any::<Option<i32>>(), src in source("t")) {
        let schemas = avro_schemas();
        let image = Avro::Record(vec![
            ("id".into(), Avro::Long(id)),
            ("name".into(), Avro::String(name.clone())),
            ("score".into(), score.map_or(Avro::Union(0, Box::new(Avro::Null)), |s| Avro::Union(1, Box::new(Avro::Double(f64::from(s)))))),
            ("flag".into(), Avro::Boolean(flag)),
            ("day".into(), day.map_or(Avro::Union(0, Box::new(Avro::Null)), |d| Avro::Union(1, Box::new(Avro::Int(d))))),
        ]);
        let source = Avro::Record(vec![
            ("connector".into(), Avro::String("mysql".into())),
            ("ts_ms".into(), Avro::Long(src.ts_ms)),
            ("snapshot".into(), Avro::String(src.snapshot.as_str().into())),
            ("table".into(), Avro::String("t".into())),
            ("file".into(), Avro::String(src.file.clone().unwrap())),
            ("pos".into(), Avro::Long(src.pos.unwrap() as i64)),
            ("row".into(), Avro::Int(src.row.unwrap() as i32)),
        ]);
        let envelope = Avro::Record(vec![
            ("before".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("after".into(), Avro::Union(1, Box::new(image))),
            ("source".into(), source),
            ("op".into(), Avro::String("c".into())),
        ]);
        let schema = cdc_schemas::SchemaLookup::schema(&schemas, 7).unwrap();
        let mut bytes = vec![0, 0, 0, 0, 7];
        #[allow(deprecated)]
        bytes.extend(apache_avro::to_avro_datum(schema, envelope).unwrap());
        let rec = RawRecord { topic: "t", key: None, value: Some(&bytes) };
        let ChangeEvent::Row(c) = decode(&rec, Format::Avro, &schemas).unwrap() else { panic!() };
        let after = c.after.clone().unwrap();
        prop_assert_eq!(after.get("id"), Some(&Value::Int(id)));
        prop_assert_eq!(after.get("name"), Some(&Value::Text(name)));
        prop_assert_eq!(after.get("score"), Some(&score.map_or(Value::Null, |s| Value::Float(f64::from(s)))));
        prop_assert_eq!(after.get("flag"), Some(&Value::Bool(flag)));
        prop_assert_eq!(after.get("day"), Some(&day.map_or(Value::Null, Value::Date)));
        prop_assert_eq!(c.position(), SourcePosition::of(&src, Op::Create));
    }

    #[test]
    fn position_order_is_binlog_order(a in source("t"), b in source("t"), oa in op(), ob in op()) {
        let (pa, pb) = (SourcePosition::of(&a, oa), SourcePosition::of(&b, ob));
        let seq = |s: &Source| s.file.as_deref().unwrap().rsplit('.').next().unwrap().parse::<u64>().unwrap();
        // at equal coordinates: snapshot read < streamed delete < other streamed change
        let rank = |op: Op| match op { Op::Read => 0, Op::Delete => 1, Op::Create | Op::Update => 2 };
        let binlog = (seq(&a), a.pos, a.row, rank(oa)).cmp(&(seq(&b), b.pos, b.row, rank(ob)));
        prop_assert_eq!(pa.cmp(&pb), binlog);
        prop_assert_eq!(pa.to_key().cmp(&pb.to_key()), binlog);
        prop_assert_eq!(pa.to_bytes().cmp(&pb.to_bytes()), binlog);
        prop_assert_eq!(SourcePosition::from_key(&pa.to_key()), Some(pa));
        prop_assert_eq!(SourcePosition::from_bytes(&pa.to_bytes()), Some(pa));
        prop_assert_eq!(pa.to_key().len(), cdc_schemas::position::KEY_LEN);
    }

    #[test]
    fn position_order_is_total(v in prop::collection::vec((0u8..3, any::<u64>(), any::<u64>(), any::<u32>(), 0usize..3), 3)) {
        let p: Vec<SourcePosition> = v.iter().map(|&(log, segment, offset, row, snap)| SourcePosition {
            log: [cdc_schemas::LogKind::Unknown, cdc_schemas::LogKind::MySql, cdc_schemas::LogKind::Postgres][log as usize],
            segment, offset, row, phase: [Phase::Snapshot, Phase::Delete, Phase::Streaming][snap],
        }).collect();
        // exactly one of <, =, > and transitivity, also for the string encoding
        for x in &p { for y in &p {
            prop_assert_eq!(x.cmp(y), y.cmp(x).reverse());
            prop_assert_eq!(x.cmp(y), x.to_key().cmp(&y.to_key()));
        }}
        if p[0] <= p[1] && p[1] <= p[2] { prop_assert!(p[0] <= p[2]); }
    }
}

fn avro_schemas() -> SchemaSet {
    let mut set = SchemaSet::new();
    set.insert(7, r#"{"type":"record","name":"Envelope","namespace":"t","fields":[
        {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
            {"name":"id","type":"long"},{"name":"name","type":"string"},
            {"name":"score","type":["null","double"],"default":null},{"name":"flag","type":"boolean"},
            {"name":"day","type":["null",{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}],"default":null}]}],"default":null},
        {"name":"after","type":["null","Value"],"default":null},
        {"name":"source","type":{"type":"record","name":"Source","fields":[
            {"name":"connector","type":"string"},{"name":"ts_ms","type":"long"},{"name":"snapshot","type":"string"},
            {"name":"table","type":"string"},{"name":"file","type":"string"},{"name":"pos","type":"long"},{"name":"row","type":"int"}]}},
        {"name":"op","type":"string"}]}"#).unwrap();
    set
}

fn pos(file: &str, pos: u64, snapshot: bool) -> SourcePosition {
    let s = Source {
        connector: "mysql".into(),
        file: Some(file.into()),
        pos: Some(pos),
        row: Some(0),
        ..Source::default()
    };
    SourcePosition::of(&s, if snapshot { Op::Read } else { Op::Update })
}

#[test]
fn binlog_rotation_and_snapshot_rules() {
    assert!(pos("mysql-bin.000009", 999_999, false) < pos("mysql-bin.000010", 4, false));
    assert!(pos("mysql-bin.999999", 999_999, false) < pos("mysql-bin.1000000", 4, false));
    assert!(pos("mysql-bin.000003", 500, true) < pos("mysql-bin.000003", 500, false));
    assert!(pos("mysql-bin.000003", 500, true) < pos("mysql-bin.000003", 501, false));
    // A later re-snapshot ranks above changes streamed before it.
    assert!(pos("mysql-bin.000002", 9, false) < pos("mysql-bin.000003", 500, true));
    let k = pos("mysql-bin.000010", 4, false).to_key();
    assert_eq!(
        k,
        concat!(
            "1",
            "00000000000000000010",
            "00000000000000000004",
            "0000000000",
            "2"
        )
    );
    // primary-key change: delete of the old key, then create of the new one, same row event
    let s = Source {
        connector: "mysql".into(),
        file: Some("mysql-bin.000001".into()),
        pos: Some(7),
        row: Some(0),
        ..Source::default()
    };
    assert!(SourcePosition::of(&s, Op::Delete) < SourcePosition::of(&s, Op::Create));
}

#[test]
fn fixture_positions_follow_the_log() {
    let mut snapshot_max = None;
    let mut last_stream: Option<SourcePosition> = None;
    for line in common::load("json") {
        let Ok(ChangeEvent::Row(c)) = decode(&line.record(), Format::Json, &()) else {
            continue;
        };
        let p = c.position();
        if c.op == Op::Read {
            snapshot_max = snapshot_max.max(Some(p));
        } else {
            assert!(
                snapshot_max.is_none_or(|s| s < p),
                "line {}: snapshot read not below stream",
                line.seq
            );
            assert!(
                last_stream.is_none_or(|l| l < p),
                "line {}: {p} not after {last_stream:?}",
                line.seq
            );
            last_stream = Some(p);
        }
    }
    assert!(last_stream.is_some() && snapshot_max.is_some());
}
