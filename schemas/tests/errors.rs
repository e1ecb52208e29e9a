//! Bad input: each failure has its own error kind, and messages name topic, table, column.
//! Also the event kinds the fixtures lack (truncate, transaction metadata), built from the
//! shapes Debezium documents.
#![allow(clippy::unwrap_used)] // tests: a failure should panic with the value

mod common;

use cdc_schemas::rows::Timeline;
use cdc_schemas::{
    ChangeEvent, DecodeError, DecodeErrorKind, Format, Part, RawRecord, RowErrorKind, TxStatus,
    decode,
};
use common::{load, registry};

const TOPIC: &str = "debezium.chii.bangumi.chii_timeline";
const SOURCE: &str = r#"{"version":"3.6.3.Final","connector":"mysql","name":"debezium.chii","ts_ms":1,"snapshot":"false","db":"bangumi","table":"chii_timeline","server_id":1,"file":"mysql-bin.000003","pos":100,"row":0}"#;

fn value(v: &[u8], format: Format) -> Result<ChangeEvent, DecodeError> {
    decode(
        &RawRecord {
            topic: TOPIC,
            key: None,
            value: Some(v),
        },
        format,
        &registry(),
    )
}

fn kind(v: &[u8], format: Format) -> DecodeErrorKind {
    value(v, format).expect_err("must fail").kind
}

#[test]
fn malformed_json() {
    for f in [Format::Json, Format::JsonSchema, Format::Auto] {
        assert!(matches!(
            kind(br#"{"op":"c","#, f),
            DecodeErrorKind::MalformedJson { .. }
        ));
    }
    let e = decode(
        &RawRecord {
            topic: TOPIC,
            key: Some(b"{tml_id"),
            value: None,
        },
        Format::Json,
        &(),
    )
    .unwrap_err();
    assert_eq!((e.part, e.label()), (Part::Key, "malformed_json"));
}

#[test]
fn invalid_utf8() {
    let bytes = b"{\"op\":\"c\xff\xfe\"}";
    assert_eq!(
        kind(bytes, Format::Json),
        DecodeErrorKind::InvalidUtf8 { valid_up_to: 8 }
    );
}

#[test]
fn wrong_types() {
    let v = format!(r#"{{"op":"c","source":{SOURCE},"after":5}}"#);
    let e = value(v.as_bytes(), Format::Json).unwrap_err();
    assert!(
        matches!(&e.kind, DecodeErrorKind::WrongType { column, .. } if column == "after"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(TOPIC) && msg.contains("chii_timeline") && msg.contains("after"),
        "{msg}"
    );

    let v = r#"{"op":"c","source":{"pos":"x"},"after":{}}"#;
    assert!(
        matches!(kind(v.as_bytes(), Format::Json), DecodeErrorKind::WrongType { column, .. } if column == "source.pos")
    );

    // With a schema, a payload value of the wrong type names the column.
    let schema = r#"{"type":"struct","fields":[{"type":"struct","optional":true,"field":"after","fields":[{"type":"int64","field":"tml_id"}]},{"type":"string","field":"op"}]}"#;
    let v = format!(
        r#"{{"schema":{schema},"payload":{{"op":"c","source":{SOURCE},"after":{{"tml_id":"seven"}}}}}}"#
    );
    let e = value(v.as_bytes(), Format::JsonSchema).unwrap_err();
    assert!(
        matches!(&e.kind, DecodeErrorKind::WrongType { column, found, .. } if column == "after.tml_id" && found.contains("seven")),
        "{e}"
    );
}

#[test]
fn typed_row_errors_name_table_and_column() {
    let v = format!(
        r#"{{"op":"c","source":{SOURCE},"after":{{"tml_id":1,"tml_uid":"abc","tml_cat":1,"tml_dateline":1}}}}"#
    );
    let ChangeEvent::Row(change) = value(v.as_bytes(), Format::Json).unwrap() else {
        panic!()
    };
    let err = change
        .after
        .as_ref()
        .unwrap()
        .parse::<Timeline>()
        .unwrap_err();
    assert_eq!(
        (err.table.as_deref(), err.column.as_str()),
        (Some("chii_timeline"), "tml_uid")
    );
    assert!(
        matches!(&err.kind, RowErrorKind::WrongType { found, .. } if found.contains("abc")),
        "{err}"
    );
    assert!(err.to_string().contains("chii_timeline") && err.to_string().contains("tml_uid"));

    let v = format!(
        r#"{{"op":"c","source":{SOURCE},"after":{{"tml_id":1,"tml_cat":1,"tml_dateline":1}}}}"#
    );
    let ChangeEvent::Row(change) = value(v.as_bytes(), Format::Json).unwrap() else {
        panic!()
    };
    let err = change
        .after
        .as_ref()
        .unwrap()
        .parse::<Timeline>()
        .unwrap_err();
    assert_eq!(
        (err.column.as_str(), err.kind),
        ("tml_uid", RowErrorKind::Missing)
    );
    let err = change.after.as_ref().unwrap().u64("tml_uid").unwrap_err();
    assert_eq!(err.kind, RowErrorKind::Missing);
}

#[test]
fn unknown_op_and_missing_fields() {
    let v = format!(r#"{{"op":"x","source":{SOURCE},"after":{{}}}}"#);
    assert_eq!(
        kind(v.as_bytes(), Format::Json),
        DecodeErrorKind::UnknownOp("x".into())
    );
    let v = format!(r#"{{"op":"c","source":{SOURCE},"after":null}}"#);
    assert_eq!(
        kind(v.as_bytes(), Format::Json),
        DecodeErrorKind::MissingField {
            field: "after".into()
        }
    );
    assert_eq!(
        kind(br#"{"op":"c"}"#, Format::Json),
        DecodeErrorKind::MissingField {
            field: "source".into()
        }
    );
    assert!(matches!(
        kind(br#"[1,2]"#, Format::Json),
        DecodeErrorKind::NotAnEnvelope { .. }
    ));
    assert!(matches!(
        kind(br#"{"foo":1}"#, Format::Json),
        DecodeErrorKind::NotAnEnvelope { .. }
    ));
    assert!(matches!(
        kind(br#"{"foo":1}"#, Format::JsonSchema),
        DecodeErrorKind::NotAnEnvelope { .. }
    ));
}

#[test]
fn avro_errors() {
    let line = load("avro")
        .into_iter()
        .find(|l| l.value.as_ref().is_some_and(|v| v.len() > 40))
        .unwrap();
    let full = line.value.unwrap();
    for cut in [full.len() - 1, full.len() / 2, 7] {
        let k = kind(&full[..cut], Format::Avro);
        assert!(
            matches!(k, DecodeErrorKind::TruncatedAvro { .. }),
            "cut {cut}: {k:?}"
        );
    }
    assert!(matches!(
        kind(&full[..3], Format::Avro),
        DecodeErrorKind::TruncatedAvro { .. }
    ));
    assert!(matches!(
        kind(&[], Format::Avro),
        DecodeErrorKind::TruncatedAvro { .. }
    ));
    let mut unknown = full.clone();
    unknown[1..5].copy_from_slice(&9999u32.to_be_bytes());
    assert_eq!(
        kind(&unknown, Format::Avro),
        DecodeErrorKind::UnknownSchemaId(9999)
    );
    assert_eq!(
        kind(&unknown, Format::Auto),
        DecodeErrorKind::UnknownSchemaId(9999)
    );
    assert_eq!(
        kind(b"{}", Format::Avro),
        DecodeErrorKind::BadMagic { found: b'{' }
    );
    let mut trailing = full.clone();
    trailing.push(0);
    assert!(matches!(
        kind(&trailing, Format::Avro),
        DecodeErrorKind::InvalidAvro { .. }
    ));
    // No schemas at all: the id is unknown.
    let e = decode(
        &RawRecord {
            topic: TOPIC,
            key: None,
            value: Some(&full),
        },
        Format::Auto,
        &(),
    )
    .unwrap_err();
    assert_eq!(e.label(), "unknown_schema_id");
}

#[test]
fn truncate_and_transaction_metadata() {
    let v = format!(r#"{{"op":"t","source":{SOURCE},"before":null,"after":null,"ts_ms":5}}"#);
    let ChangeEvent::Truncate(t) = value(v.as_bytes(), Format::Json).unwrap() else {
        panic!()
    };
    assert_eq!(
        (t.source.table.as_deref(), t.ts_ms),
        (Some("chii_timeline"), Some(5))
    );

    let begin =
        br#"{"status":"BEGIN","id":"0-1-42","ts_ms":1,"event_count":null,"data_collections":null}"#;
    let ChangeEvent::Transaction(tx) = value(begin, Format::Json).unwrap() else {
        panic!()
    };
    assert_eq!((tx.status, tx.id.as_str()), (TxStatus::Begin, "0-1-42"));
    let end = br#"{"status":"END","id":"0-1-42","ts_ms":2,"event_count":2,"data_collections":[{"data_collection":"bangumi.chii_timeline","event_count":2}]}"#;
    let ChangeEvent::Transaction(tx) = value(end, Format::Json).unwrap() else {
        panic!()
    };
    assert_eq!(tx.event_count, Some(2));
    assert_eq!(
        tx.data_collections,
        vec![("bangumi.chii_timeline".to_owned(), 2)]
    );
}

#[test]
fn tombstone_key_is_a_row() {
    let e = decode(
        &RawRecord {
            topic: TOPIC,
            key: Some(br#"{"tml_id":12}"#),
            value: None,
        },
        Format::Json,
        &(),
    )
    .unwrap();
    let ChangeEvent::Tombstone { key: Some(key) } = e else {
        panic!("{e:?}")
    };
    assert_eq!(
        (key.u64("tml_id").unwrap(), key.table()),
        (12, Some("chii_timeline"))
    );
}
