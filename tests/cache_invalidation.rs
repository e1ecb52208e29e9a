//! Golden tests of the cache-invalidation family against Bangumi's behaviour, stated
//! independently in `fixtures/expected/cache-invalidation.json`:
//! - per record: decoding each real fixture and planning its deletions gives exactly the
//!   expected keys, in every encoding;
//! - end to end: the real fixture stream, through the real broker, into real Redis seeded with
//!   every candidate key and bystanders, leaves exactly the expected keys, and a second delivery
//!   of the whole stream changes nothing.

use std::time::Duration;

use cache_invalidation::{CacheInvalidation, FAMILY, Plan, plan};
use cdc_runtime::Handler;
use cdc_schemas::{ChangeEvent, Format, RawRecord, SchemaSet};
use fleet_harness::expected::CacheInvalidation as Expected;
use fleet_harness::fixtures::{self, Encoding};
use fleet_harness::{
    end_offsets, keys_under, produce, producer, provisioned_family, seed_keys, unique,
    wait_drained, worker_config,
};
use tokio_util::sync::CancellationToken;

fn registry() -> SchemaSet {
    let mut set = SchemaSet::new();
    for (id, schema) in fixtures::registry().expect("registry.json") {
        set.insert(id, &schema)
            .unwrap_or_else(|e| panic!("schema {id}: {e:?}"));
    }
    set
}

#[test]
fn every_fixture_record_plans_exactly_the_expected_deletions_in_every_encoding() {
    let expected = Expected::load().expect("expectations");
    let schemas = registry();
    for encoding in Encoding::ALL {
        let fixtures = fixtures::load(encoding).expect("fixtures");
        for want in &expected.records {
            let f = fixtures
                .iter()
                .find(|f| f.seq == want.seq)
                .expect("seq in fixtures");
            let record = RawRecord {
                topic: &f.topic,
                key: f.record.key.as_deref(),
                value: f.record.value.as_deref(),
            };
            // decoded as the worker decodes: only the row columns its table's rule reads
            let columns = CacheInvalidation::row_columns(cdc_schemas::topic_table(&f.topic));
            let event = cdc_schemas::decode_columns(&record, Format::Auto, columns, &schemas)
                .unwrap_or_else(|e| panic!("{encoding:?} seq {}: {e}", f.seq));
            let ChangeEvent::Row(change) = event else {
                panic!("{encoding:?} seq {} is not a row change", f.seq)
            };
            let planned = match plan(&change, "").unwrap_or_else(|e| panic!("seq {}: {e}", f.seq)) {
                Plan::Delete(keys) => keys,
                Plan::Skip(_) => Vec::new(),
            };
            assert_eq!(
                planned, want.keys,
                "{encoding:?} seq {} ({} {})",
                want.seq, want.table, want.op
            );
        }
    }
}

async fn golden_run(encoding: Encoding) {
    let expected = Expected::load().expect("expectations");
    let topic_prefix = format!("{}.", unique("it.ci"));
    let key_prefix = format!("{}:", unique("it.ci"));
    let group = unique("it.ci.group");
    let family = provisioned_family(FAMILY, &topic_prefix)
        .await
        .expect("provision");
    seed_keys(&key_prefix, &expected.seeded)
        .await
        .expect("seed");

    let records: Vec<_> = fixtures::load(encoding)
        .expect("fixtures")
        .into_iter()
        .filter(|f| {
            family
                .topics
                .iter()
                .any(|t| *t == format!("{topic_prefix}{}", f.topic))
        })
        .collect();
    let producer = producer().expect("producer");
    for f in &records {
        produce(
            &producer,
            &format!("{topic_prefix}{}", f.topic),
            std::slice::from_ref(&f.record),
        )
        .await
        .expect("produce");
    }

    let config = worker_config(&family, &topic_prefix, &key_prefix, &group, &[]).expect("config");
    let handler = CacheInvalidation::connect(config.clone())
        .await
        .expect("redis");
    let shutdown = CancellationToken::new();
    let running = cdc_runtime::start(&family, &config, handler, shutdown.clone())
        .await
        .expect("start");
    let topics: Vec<String> = family.topics.clone();
    wait_drained(&group, &topics, family.partitions, Duration::from_secs(60))
        .await
        .expect("drained");
    assert_eq!(
        keys_under(&key_prefix).await.expect("keys"),
        expected.remaining(),
        "{encoding:?}: Redis after one pass"
    );

    // The whole stream again (a replay): the state does not change.
    for f in &records {
        produce(
            &producer,
            &format!("{topic_prefix}{}", f.topic),
            std::slice::from_ref(&f.record),
        )
        .await
        .expect("produce");
    }
    wait_drained(&group, &topics, family.partitions, Duration::from_secs(60))
        .await
        .expect("drained");
    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    assert_eq!(
        keys_under(&key_prefix).await.expect("keys"),
        expected.remaining(),
        "{encoding:?}: Redis after a replay"
    );
    assert_eq!(
        end_offsets(&family.dlq, family.partitions).expect("dlq"),
        vec![0; family.partitions as usize],
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_json_without_schema() {
    golden_run(Encoding::Json).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_json_with_schema() {
    golden_run(Encoding::JsonSchema).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_avro_through_the_registry() {
    golden_run(Encoding::Avro).await;
}
