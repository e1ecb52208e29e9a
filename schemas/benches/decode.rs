//! Decoding throughput per encoding on ~1 KB rows taken from the real fixtures
//! (`fixtures/debezium/`): the row-change line whose JSON value is closest to 1 KiB, in
//! each of the three encodings. Reports time per envelope (→ envelopes/s) and MB/s.
//! Target (docs/architecture.md, "Performance targets"): ≥ 200k envelopes/s per core for JSON
//! without schema.

use std::path::PathBuf;

use base64::Engine as _;
use cdc_schemas::{Columns, Format, RawRecord, SchemaSet, decode_columns};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value as Json;

struct Sample {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

fn lines(name: &str) -> Vec<Json> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/debezium");
    let text = std::fs::read_to_string(dir.join(name))
        .expect("fixtures/debezium missing: run `make fixtures`");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

fn sample(line: &Json) -> Sample {
    let bytes = |field: &str, b64: bool| -> Option<Vec<u8>> {
        let s = line.get(field)?.as_str()?;
        Some(if b64 {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64")
        } else {
            s.as_bytes().to_vec()
        })
    };
    let avro = line.get("value_b64").is_some();
    let (k, v) = if avro {
        ("key_b64", "value_b64")
    } else {
        ("key", "value")
    };
    Sample {
        topic: line["topic"].as_str().unwrap_or_default().to_owned(),
        key: bytes(k, avro),
        value: bytes(v, avro).expect("row change has a value"),
    }
}

fn bench(c: &mut Criterion) {
    let json = lines("json.jsonl");
    // the row change whose JSON value is closest to 1 KiB
    let idx = (0..json.len())
        .filter(|&i| {
            json[i]["value"]
                .as_str()
                .is_some_and(|v| v.contains("\"op\":"))
        })
        .min_by_key(|&i| {
            json[i]["value"]
                .as_str()
                .map_or(usize::MAX, |v| v.len().abs_diff(1024))
        })
        .expect("a row change");
    let mut schemas = SchemaSet::new();
    let registry: Vec<Json> = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/debezium/registry.json"),
        )
        .expect("registry.json"),
    )
    .expect("registry json");
    for r in &registry {
        let id = u32::try_from(r["id"].as_u64().unwrap_or_default()).unwrap_or_default();
        schemas
            .insert(id, r["schema"].as_str().unwrap_or_default())
            .expect("schema");
    }
    let mut group = c.benchmark_group("decode");
    // What the cache-invalidation family keeps of a row image (its `ROW_COLUMNS`).
    let family_columns = Columns::Only(&["gmb_uid", "frd_uid", "frd_fid"]);
    for (file, format, columns) in [
        ("json.jsonl", Format::Json, Columns::All),
        ("json.jsonl", Format::Json, family_columns),
        ("json-schema.jsonl", Format::JsonSchema, Columns::All),
        ("avro.jsonl", Format::Avro, Columns::All),
    ] {
        let s = sample(&lines(file)[idx]);
        let size = s.value.len() + s.key.as_ref().map_or(0, Vec::len);
        group.throughput(Throughput::Bytes(size as u64));
        let kept = match columns {
            Columns::All => "",
            Columns::Only(_) => ", cache-invalidation columns",
        };
        let name = format!("{format:?}{kept} ({size} B, line {})", idx + 1);
        group.bench_function(name, |b| {
            b.iter(|| {
                let rec = RawRecord {
                    topic: &s.topic,
                    key: s.key.as_deref(),
                    value: Some(&s.value),
                };
                decode_columns(std::hint::black_box(&rec), format, columns, &schemas)
                    .expect("decodes")
            })
        });
    }
    // Floors for comparison: serde_json skipping everything, and into `serde_json::Value`.
    let s = sample(&json[idx]);
    group.throughput(Throughput::Bytes(s.value.len() as u64));
    group.bench_function("floor: serde_json IgnoredAny", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&s.value))
                .expect("json")
        })
    });
    group.bench_function("floor: serde_json Value", |b| {
        b.iter(|| serde_json::from_slice::<Json>(std::hint::black_box(&s.value)).expect("json"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
