//! Turning a consumed record into an [`Event`] for the family's handler: Debezium records go
//! through the schema crate (with Avro schemas fetched from the registry and cached), service
//! topic records pass through as bytes.
//!
//! The schema crate is sans-I/O; the registry round trip lives here, so its failures can be
//! classified: registry unreachable or 5xx is transient, an unknown schema id is permanent.
//!
//! # Layout
//! - [`Decoder`]: per family; [`Decoder::decode`] is the entry point.
//! - [`Decoded`]: an event for the handler, or a record the runtime skips.
//! - [`DecodeFailure`]: why a record could not be decoded, classified.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use cdc_schemas::{ChangeEvent, Columns, Format, RawRecord, SchemaLookup};
use rdkafka::message::Message;
use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id};

use crate::dependency::Dependency;
use crate::error::ErrorClass;
use crate::family::Event;

/// The result of decoding one record.
#[derive(Debug)]
pub enum Decoded {
    /// Hand it to the family.
    Event(Event),
    /// Nothing to do (tombstone, heartbeat, schema change, transaction marker).
    Skip(&'static str),
}

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeFailure {
    /// Transient (registry unreachable) or permanent (bad bytes, unknown schema id).
    pub class: ErrorClass,
    /// What was wrong, naming topic and field where known.
    pub message: String,
}

/// Decodes one family's records.
pub struct Decoder {
    format: Format,
    /// The row columns to keep, by table.
    columns: fn(&str) -> Columns,
    service_topics: HashSet<String>,
    registry: Option<Registry>,
}

impl Decoder {
    /// A decoder for Debezium topics in `format` (service topics excepted), with an optional
    /// schema registry for Avro.
    pub fn new(
        format: Format,
        service_topics: impl IntoIterator<Item = String>,
        registry_url: Option<&str>,
    ) -> Self {
        Self {
            format,
            columns: |_| Columns::All,
            service_topics: service_topics.into_iter().collect(),
            registry: registry_url.map(Registry::new),
        }
    }

    /// The schema registry, the one dependency decoding has (its failures are transient).
    pub fn registry(&self) -> Option<Dependency> {
        self.registry
            .as_ref()
            .map(|r| Dependency::schema_registry(&r.url))
    }

    /// The same decoder, keeping only the row-image columns `columns` selects for each table
    /// (see [`crate::Handler::row_columns`]).
    pub fn with_columns(self, columns: fn(&str) -> Columns) -> Self {
        Self { columns, ..self }
    }

    /// Decodes `msg`. Avro schemas not yet cached are fetched first.
    pub async fn decode(&self, msg: &(impl Message + Sync)) -> Result<Decoded, DecodeFailure> {
        // Read once: a borrowed record's topic name is measured and checked on every call.
        let topic = msg.topic();
        if self.service_topics.contains(topic) {
            return Ok(Decoded::Event(Event::Service {
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
            }));
        }
        let record = RawRecord {
            topic,
            key: msg.key(),
            value: msg.payload(),
        };
        let ids = cdc_schemas::schema_ids(&record);
        let schemas = match (&self.registry, ids.is_empty()) {
            (_, true) => Schemas::default(),
            (Some(registry), false) => registry.fetch(&ids).await?,
            (None, false) => {
                return Err(DecodeFailure {
                    class: ErrorClass::Permanent,
                    message: format!(
                        "{topic}: Avro record (schema ids {ids:?}) but no SCHEMA_REGISTRY_URL is configured"
                    ),
                });
            }
        };
        let decode = |columns| {
            cdc_schemas::decode_columns(&record, self.format, columns, &schemas).map_err(|e| {
                DecodeFailure {
                    class: ErrorClass::Permanent,
                    message: e.to_string(),
                }
            })
        };
        let topic_table = cdc_schemas::topic_table(topic);
        let columns = (self.columns)(topic_table);
        let mut event = decode(columns)?;
        if columns != Columns::All
            && let ChangeEvent::Row(change) = &event
            && change.table() != topic_table
        {
            // Routed topic: the selection was for another table.
            event = decode(Columns::All)?;
        }
        Ok(match event {
            ChangeEvent::Tombstone { .. } => Decoded::Skip("tombstone"),
            ChangeEvent::Heartbeat(..) => Decoded::Skip("heartbeat"),
            ChangeEvent::SchemaChange(..) => Decoded::Skip("schema_change"),
            ChangeEvent::Transaction(..) => Decoded::Skip("transaction"),
            event => Decoded::Event(Event::Change(Box::new(event))),
        })
    }
}

/// The schemas one record needs, by id.
#[derive(Default)]
struct Schemas(HashMap<u32, Arc<Schema>>);

impl SchemaLookup for Schemas {
    fn schema(&self, id: u32) -> Option<&Schema> {
        self.0.get(&id).map(Arc::as_ref)
    }
}

/// A Confluent-compatible schema registry with a process-wide cache (schemas are immutable by id).
///
/// Its HTTP client is built when the first Avro record needs it: building it loads the TLS
/// library and the system's CA certificates (≈ 5 MB of a worker's memory), which a JSON-only
/// deployment never uses.
struct Registry {
    url: String,
    settings: OnceLock<SrSettings>,
    cache: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl Registry {
    /// A registry at `url` (checked at start: `WorkerConfig::validate`).
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            settings: OnceLock::new(),
            cache: RwLock::default(),
        }
    }

    fn settings(&self) -> Result<&SrSettings, DecodeFailure> {
        crate::get_or_try_init(&self.settings, || {
            SrSettings::new_builder(self.url.clone())
                .set_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| DecodeFailure {
                    class: ErrorClass::Transient,
                    message: format!("{}: {e}", Dependency::schema_registry(&self.url)),
                })
        })
    }

    async fn fetch(&self, ids: &[u32]) -> Result<Schemas, DecodeFailure> {
        let mut found = HashMap::new();
        for &id in ids {
            let cached = self.cache.read().ok().and_then(|c| c.get(&id).cloned());
            let schema = match cached {
                Some(schema) => schema,
                None => {
                    let schema = Arc::new(self.fetch_one(id).await?);
                    if let Ok(mut cache) = self.cache.write() {
                        cache.insert(id, schema.clone());
                    }
                    schema
                }
            };
            found.insert(id, schema);
        }
        Ok(Schemas(found))
    }

    async fn fetch_one(&self, id: u32) -> Result<Schema, DecodeFailure> {
        let registered =
            get_schema_by_id(id, self.settings()?)
                .await
                .map_err(|e| DecodeFailure {
                    class: if e.retriable {
                        ErrorClass::Transient
                    } else {
                        ErrorClass::Permanent
                    },
                    message: format!("schema registry, schema id {id}: {e}"),
                })?;
        Schema::parse_str(&registered.schema).map_err(|e| DecodeFailure {
            class: ErrorClass::Permanent,
            message: format!("schema id {id} is not a valid Avro schema: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    /// A record of `chii_friends` on a topic named after another table (as a topic router
    /// would leave it) keeps its columns: the selection for the topic's table is not applied.
    #[tokio::test]
    async fn a_routed_record_is_decoded_with_every_column() {
        let value = br#"{"before":null,"after":{"frd_uid":1,"frd_fid":2,"frd_grade":1},"source":{"version":"3.6.3.Final","connector":"mysql","name":"debezium.chii","db":"bangumi","table":"chii_friends","ts_ms":1},"op":"c","ts_ms":1}"#;
        let decoder = Decoder::new(Format::Json, [], None).with_columns(|table| match table {
            "chii_members" => Columns::Only(&[]),
            _ => Columns::Only(&["frd_uid"]),
        });
        let decoder = &decoder;
        let decode = |topic: &str| {
            let msg = OwnedMessage::new(
                Some(value.to_vec()),
                None,
                topic.to_owned(),
                Timestamp::NotAvailable,
                0,
                0,
                None,
            );
            async move { decoder.decode(&msg).await }
        };
        let columns = |decoded: Result<Decoded, DecodeFailure>| match decoded {
            Ok(Decoded::Event(Event::Change(event))) => match *event {
                ChangeEvent::Row(change) => change.row().map_or(0, |r| r.len()),
                other => panic!("not a row change: {other:?}"),
            },
            other => panic!("not an event: {other:?}"),
        };
        assert_eq!(
            columns(decode("debezium.chii.bangumi.chii_friends").await),
            1
        );
        assert_eq!(
            columns(decode("debezium.chii.bangumi.chii_members").await),
            3
        );
    }
}
