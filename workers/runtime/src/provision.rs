//! Creating a family's topics and its dead-letter topic on a broker, from `topics/`.
//!
//! Idempotent: topics that exist are left as they are (their partition count is reported, not
//! changed). Used by `make up`/`make demo`, the tests, and the `provision` subcommand of every
//! worker binary.

use std::time::Duration;

use cdc_topics::Family;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::RuntimeError;

/// What provisioning did to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// Created with the family's partition count.
    Created(String),
    /// Already there.
    Existed(String),
}

/// Creates every topic of `family` (DLQ included) with `family.partitions` partitions.
pub async fn provision(
    kafka: &ClientConfig,
    family: &Family,
    replication: i32,
) -> Result<Vec<Provisioned>, RuntimeError> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.create().map_err(|source| RuntimeError::KafkaClient {
            client: "admin client",
            source,
        })?;
    let names: Vec<&str> = family.all_topics().chain([family.dlq.as_str()]).collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                family.partitions,
                TopicReplication::Fixed(replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results =
        admin
            .create_topics(&topics, &options)
            .await
            .map_err(|e| RuntimeError::Provision {
                topic: names.join(","),
                reason: e.to_string(),
            })?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(topic) => Ok(Provisioned::Created(topic)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(Provisioned::Existed(topic)),
            Err((topic, code)) => Err(RuntimeError::Provision {
                topic,
                reason: code.to_string(),
            }),
        })
        .collect()
}
