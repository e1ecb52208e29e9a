//! Creating a family's topics, its dead-letter topic and the DLQ's handled topic on a broker,
//! from `topics/`.
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

/// Creates every topic of `family`: its topics and DLQ with `family.partitions` partitions, and
/// the DLQ's handled topic ([`Family::dlq_handled_topic`]).
pub async fn provision(
    kafka: &ClientConfig,
    family: &Family,
    replication: i32,
) -> Result<Vec<Provisioned>, RuntimeError> {
    let handled = family.dlq_handled_topic();
    let mut topics: Vec<NewTopic<'_>> = family
        .all_topics()
        .chain([family.dlq.as_str()])
        .map(|name| {
            NewTopic::new(
                name,
                family.partitions,
                TopicReplication::Fixed(replication),
            )
        })
        .collect();
    topics.push(handled_topic(&handled, replication));
    create(kafka, &topics).await
}

/// Creates `family`'s DLQ handled topic, if missing (deployments provisioned before it existed).
pub async fn provision_dlq_handled(
    kafka: &ClientConfig,
    family: &Family,
    replication: i32,
) -> Result<Provisioned, RuntimeError> {
    let handled = family.dlq_handled_topic();
    let mut done = create(kafka, &[handled_topic(&handled, replication)]).await?;
    Ok(done.remove(0))
}

/// One partition: the tool reads it whole. Compacted: only each letter's last record matters,
/// and the tool deletes the records of letters its replay group has moved past.
fn handled_topic(name: &str, replication: i32) -> NewTopic<'_> {
    NewTopic::new(name, 1, TopicReplication::Fixed(replication)).set("cleanup.policy", "compact")
}

async fn create(
    kafka: &ClientConfig,
    topics: &[NewTopic<'_>],
) -> Result<Vec<Provisioned>, RuntimeError> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.create().map_err(|source| RuntimeError::KafkaClient {
            client: "admin client",
            source,
        })?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results =
        admin
            .create_topics(topics, &options)
            .await
            .map_err(|e| RuntimeError::Provision {
                topic: topics.iter().map(|t| t.name).collect::<Vec<_>>().join(","),
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
