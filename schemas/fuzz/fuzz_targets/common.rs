//! Shared by the fuzz targets: the registry schemas of the fixtures (so Avro inputs reach the
//! body decoder), and one call that splits the input into key and value and decodes it.

use std::sync::OnceLock;

use cdc_schemas::{
    Columns, Format, RawRecord, SchemaSet, decode, decode_columns, decode_columns_by_tree, schema_ids,
};

static REGISTRY: &str = include_str!("../../../fixtures/debezium/registry.json");

fn schemas() -> &'static SchemaSet {
    static SET: OnceLock<SchemaSet> = OnceLock::new();
    SET.get_or_init(|| {
        // Cap what one Avro length prefix may allocate, so the fuzzer finds bugs, not OOMs.
        apache_avro::util::max_allocation_bytes(1 << 20); // before the crate sets 64 MiB
        let mut set = SchemaSet::new();
        let items: Vec<serde_json::Value> = serde_json::from_str(REGISTRY).unwrap_or_default();
        for item in items {
            if let (Some(id), Some(schema)) = (item["id"].as_u64(), item["schema"].as_str()) {
                let _ = set.insert(id as u32, schema);
            }
        }
        set
    })
}

/// First byte: 0 = no key, 1 = key/value split at the second byte, else value only.
pub fn run(data: &[u8], format: Format) {
    let (key, value) = match data.split_first() {
        Some((1, rest)) if !rest.is_empty() => {
            let at = usize::from(rest[0]).min(rest.len() - 1);
            (Some(&rest[1..=at]), Some(&rest[at + 1..]))
        }
        Some((_, rest)) => (None, Some(rest)),
        None => (None, None),
    };
    let record = RawRecord {
        topic: "debezium.chii.bangumi.chii_timeline",
        key,
        value,
    };
    let _ = schema_ids(&record);
    if matches!(format, Format::Json | Format::Auto) {
        for columns in [Columns::All, Columns::Only(&["uid"]), Columns::Only(&[])] {
            assert_eq!(
                decode_columns(&record, format, columns, schemas()),
                decode_columns_by_tree(&record, format, columns, schemas()),
                "the plain-JSON fast path disagrees with the tree path"
            );
        }
    }
    if let Ok(cdc_schemas::ChangeEvent::Row(change)) = decode(&record, format, schemas()) {
        let _ = change.position().to_key();
        if let Some(row) = change.row() {
            let _ = row.parse::<cdc_schemas::rows::Timeline>();
        }
    }
}
