//! Dead letters: records that failed permanently, produced to the family's DLQ topic with their
//! original key, value and headers byte-identical, plus headers saying what failed.
//!
//! The produce is idempotent with `acks=all` and is awaited: a record's offset is stored only
//! after its dead letter is acknowledged. An unreachable DLQ is a transient failure (retried by
//! the caller), never a reason to skip.
//!
//! # Layout
//! - [`header`]: the documented DLQ header names.
//! - [`DeadLetters`]: the producer for one family's DLQ.
//! - [`DeadLetter`]: one failed record and why.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::dependency::Dependency;
use crate::error::{ErrorClass, RuntimeError, Stage};
use crate::family::Coordinates;

/// Header names added to every dead letter. Values are UTF-8 text.
pub mod header {
    /// Topic the record was consumed from.
    pub const ORIGINAL_TOPIC: &str = "cdc.dlq.original.topic";
    /// Its partition (decimal).
    pub const ORIGINAL_PARTITION: &str = "cdc.dlq.original.partition";
    /// Its offset (decimal).
    pub const ORIGINAL_OFFSET: &str = "cdc.dlq.original.offset";
    /// Its record timestamp, ms since the epoch (decimal; absent if the broker gave none).
    pub const ORIGINAL_TIMESTAMP: &str = "cdc.dlq.original.timestamp";
    /// `permanent` (the only class that is dead-lettered today).
    pub const ERROR_CLASS: &str = "cdc.dlq.error.class";
    /// Pipeline step that failed: `decode` or `apply`.
    pub const ERROR_STAGE: &str = "cdc.dlq.error.stage";
    /// The error, one line.
    pub const ERROR_MESSAGE: &str = "cdc.dlq.error.message";
    /// How many times this record has been dead-lettered (1, then +1 per failed replay).
    pub const ATTEMPTS: &str = "cdc.dlq.attempts";
    /// Worker (family name) that dead-lettered it.
    pub const WORKER: &str = "cdc.dlq.worker";
    /// Consumer group of that worker.
    pub const GROUP: &str = "cdc.dlq.group";
    /// When it failed, ms since the epoch (decimal).
    pub const FAILED_AT: &str = "cdc.dlq.failed.at";

    /// Only on a letter too large for the DLQ: what was left out, `value` or `key,value`.
    pub const DROPPED: &str = "cdc.dlq.dropped";
    /// Only with [`DROPPED`]: the original value's size in bytes (decimal).
    pub const ORIGINAL_VALUE_SIZE: &str = "cdc.dlq.original.value.size";
    /// Only with [`DROPPED`]: the original key's size in bytes (decimal).
    pub const ORIGINAL_KEY_SIZE: &str = "cdc.dlq.original.key.size";

    /// Every header above; replaced (not duplicated) when a dead letter fails again.
    pub const ALL: &[&str] = &[
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        ERROR_CLASS,
        ERROR_STAGE,
        ERROR_MESSAGE,
        ATTEMPTS,
        WORKER,
        GROUP,
        FAILED_AT,
        DROPPED,
        ORIGINAL_VALUE_SIZE,
        ORIGINAL_KEY_SIZE,
    ];
}

/// One failed record and why it failed.
#[derive(Debug)]
pub struct DeadLetter<'a, M> {
    /// The record as consumed.
    pub original: &'a M,
    /// Why (always [`ErrorClass::Permanent`] today).
    pub class: ErrorClass,
    /// Where.
    pub stage: Stage,
    /// The error message.
    pub error: &'a str,
}

/// Producer for one family's dead-letter topic.
pub struct DeadLetters {
    /// Its settings, checked at start; the producer itself (four librdkafka threads and their
    /// buffers) is created with the first dead letter: most workers never send one.
    config: ClientConfig,
    producer: OnceLock<FutureProducer>,
    topic: String,
    worker: String,
    group: String,
}

impl DeadLetters {
    /// An idempotent, `acks=all` producer for `topic` with the shared Kafka properties. Fails if
    /// librdkafka refuses the settings.
    pub fn new(
        kafka: &ClientConfig,
        topic: &str,
        worker: &str,
        group: &str,
    ) -> Result<Self, RuntimeError> {
        let mut config = kafka.clone();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "15000");
        config
            .create_native_config()
            .map_err(|source| RuntimeError::KafkaClient {
                client: "dead-letter producer",
                source,
            })?;
        Ok(Self {
            config,
            producer: OnceLock::new(),
            topic: topic.to_owned(),
            worker: worker.to_owned(),
            group: group.to_owned(),
        })
    }

    fn producer(&self) -> Result<&FutureProducer, rdkafka::error::KafkaError> {
        crate::get_or_try_init(&self.producer, || self.config.create())
    }

    /// The brokers the dead letters go to.
    pub fn brokers(&self) -> Dependency {
        Dependency::kafka(self.config.get("bootstrap.servers").unwrap_or_default())
    }

    /// The DLQ topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces `letter` and waits for the broker's acknowledgement. An error is transient.
    ///
    /// A letter too large for the DLQ is produced without its value, then also without its key
    /// (see the module docs), so an oversize record never blocks its partition.
    pub async fn send<M: Message>(
        &self,
        letter: &DeadLetter<'_, M>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let headers = dead_letter_headers(letter, &self.worker, &self.group, now_ms());
        let original = letter.original;
        let mut last = None;
        for body in [Body::Whole, Body::KeyOnly, Body::Nothing] {
            let key = original.key().filter(|_| body != Body::Nothing);
            let value = original.payload().filter(|_| body == Body::Whole);
            if body != Body::Whole && original.payload().is_none() && key.is_some() {
                // Nothing to drop at this step (a tombstone): go straight to dropping the key.
                continue;
            }
            let headers = match body {
                Body::Whole => headers.clone(),
                _ => with_dropped(headers.clone(), original, body),
            };
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(value) = value {
                record = record.payload(value);
            }
            match self.producer()?.send(record, Duration::from_secs(30)).await {
                Ok(_) => {
                    if body != Body::Whole {
                        tracing::warn!(
                            topic = original.topic(),
                            partition = original.partition(),
                            offset = original.offset(),
                            dropped = body.dropped(),
                            value_bytes = original.payload().map_or(0, <[u8]>::len),
                            key_bytes = original.key().map_or(0, <[u8]>::len),
                            "record too large for the DLQ: dead-lettered without its body"
                        );
                    }
                    return Ok(());
                }
                Err((error, _)) if is_too_large(&error) => last = Some(error),
                Err((error, _)) => return Err(error),
            }
        }
        Err(
            last.unwrap_or(rdkafka::error::KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge,
            )),
        )
    }
}

/// What of the original a dead letter carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// Key and value.
    Whole,
    /// The key only (the value was too large).
    KeyOnly,
    /// Neither (the key alone was too large too).
    Nothing,
}

impl Body {
    fn dropped(self) -> &'static str {
        match self {
            Body::Whole => "",
            Body::KeyOnly => "value",
            Body::Nothing => "key,value",
        }
    }
}

/// Whether the producer or the broker refused a record for its size.
fn is_too_large(error: &rdkafka::error::KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// `headers` plus the headers saying what was dropped from the letter of `original`.
fn with_dropped(headers: OwnedHeaders, original: &impl Message, body: Body) -> OwnedHeaders {
    let mut headers = headers.insert(Header {
        key: header::DROPPED,
        value: Some(body.dropped()),
    });
    if original.payload().is_some() {
        headers = headers.insert(Header {
            key: header::ORIGINAL_VALUE_SIZE,
            value: Some(&original.payload().map_or(0, <[u8]>::len).to_string()),
        });
    }
    if body == Body::Nothing && original.key().is_some() {
        headers = headers.insert(Header {
            key: header::ORIGINAL_KEY_SIZE,
            value: Some(&original.key().map_or(0, <[u8]>::len).to_string()),
        });
    }
    headers
}

/// The original headers (minus earlier DLQ headers), then the DLQ headers for this failure.
pub fn dead_letter_headers<M: Message>(
    letter: &DeadLetter<'_, M>,
    worker: &str,
    group: &str,
    failed_at_ms: i64,
) -> OwnedHeaders {
    let original = letter.original;
    let mut headers = OwnedHeaders::new();
    let mut attempts = 0u32;
    if let Some(existing) = original.headers() {
        for h in existing.iter() {
            if h.key == header::ATTEMPTS {
                attempts = h
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            if !header::ALL.contains(&h.key) {
                headers = headers.insert(h);
            }
        }
    }
    let text = |key: &'static str, value: &str| -> Header<'static, Vec<u8>> {
        Header {
            key,
            value: Some(value.as_bytes().to_vec()),
        }
    };
    // A dead letter put back and failing again keeps the coordinates of its first delivery.
    let first = origin(original).unwrap_or_else(|| Coordinates {
        topic: original.topic().into(),
        partition: original.partition(),
        offset: original.offset(),
        timestamp_ms: original.timestamp().to_millis(),
    });
    let mut added = vec![
        text(header::ORIGINAL_TOPIC, &first.topic),
        text(header::ORIGINAL_PARTITION, &first.partition.to_string()),
        text(header::ORIGINAL_OFFSET, &first.offset.to_string()),
    ];
    if let Some(ts) = first.timestamp_ms {
        added.push(text(header::ORIGINAL_TIMESTAMP, &ts.to_string()));
    }
    added.extend([
        text(header::ERROR_CLASS, letter.class.as_str()),
        text(header::ERROR_STAGE, letter.stage.as_str()),
        text(header::ERROR_MESSAGE, &one_line(letter.error)),
        text(header::ATTEMPTS, &(attempts + 1).to_string()),
        text(header::WORKER, worker),
        text(header::GROUP, group),
        text(header::FAILED_AT, &failed_at_ms.to_string()),
    ]);
    for h in &added {
        headers = headers.insert(Header {
            key: h.key,
            value: h.value.as_deref(),
        });
    }
    headers
}

/// The first-delivery coordinates a dead letter carries in its `cdc.dlq.original.*` headers.
pub fn origin(msg: &impl Message) -> Option<Coordinates> {
    let headers = msg.headers()?;
    let get = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    Some(Coordinates {
        topic: get(header::ORIGINAL_TOPIC)?.into(),
        partition: get(header::ORIGINAL_PARTITION)?.parse().ok()?,
        offset: get(header::ORIGINAL_OFFSET)?.parse().ok()?,
        timestamp_ms: get(header::ORIGINAL_TIMESTAMP).and_then(|t| t.parse().ok()),
    })
}

/// Newlines folded, length bounded (a header, not a log).
fn one_line(text: &str) -> String {
    let mut line: String = text.replace(['\n', '\r'], " ");
    if line.len() > 2000 {
        let mut cut = 2000;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    fn header_map(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect()
    }

    fn original(headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{\"x\":1}".to_vec()),
            Some(b"{\"subject_id\":1}".to_vec()),
            "debezium.chii.bangumi.chii_subjects".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            2,
            42,
            Some(headers),
        )
    }

    #[test]
    fn headers_keep_the_originals_and_add_every_documented_one() {
        let msg = original(OwnedHeaders::new().insert(Header {
            key: "__debezium.context.connectorName",
            value: Some("mysql"),
        }));
        let letter = DeadLetter {
            original: &msg,
            class: ErrorClass::Permanent,
            stage: Stage::Decode,
            error: "bad\njson",
        };
        let headers = header_map(&dead_letter_headers(&letter, "cache-invalidation", "g1", 7));
        let expected: Vec<(String, String)> = [
            ("__debezium.context.connectorName", "mysql"),
            (
                header::ORIGINAL_TOPIC,
                "debezium.chii.bangumi.chii_subjects",
            ),
            (header::ORIGINAL_PARTITION, "2"),
            (header::ORIGINAL_OFFSET, "42"),
            (header::ORIGINAL_TIMESTAMP, "1700000000000"),
            (header::ERROR_CLASS, "permanent"),
            (header::ERROR_STAGE, "decode"),
            (header::ERROR_MESSAGE, "bad json"),
            (header::ATTEMPTS, "1"),
            (header::WORKER, "cache-invalidation"),
            (header::GROUP, "g1"),
            (header::FAILED_AT, "7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(headers, expected);
    }

    #[test]
    fn a_dead_letter_failing_again_counts_one_more_attempt_without_duplicate_headers() {
        let msg = original(
            OwnedHeaders::new()
                .insert(Header {
                    key: header::ATTEMPTS,
                    value: Some("2"),
                })
                .insert(Header {
                    key: header::ERROR_MESSAGE,
                    value: Some("old"),
                }),
        );
        let letter = DeadLetter {
            original: &msg,
            class: ErrorClass::Permanent,
            stage: Stage::Apply,
            error: "new",
        };
        let headers = header_map(&dead_letter_headers(&letter, "w", "g", 1));
        let get = |k: &str| {
            headers
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get(header::ATTEMPTS), ["3"]);
        assert_eq!(get(header::ERROR_MESSAGE), ["new"]);
    }

    #[test]
    fn a_put_back_dead_letter_keeps_the_coordinates_of_its_first_delivery() {
        let msg = original(
            OwnedHeaders::new()
                .insert(Header {
                    key: header::ORIGINAL_TOPIC,
                    value: Some("first"),
                })
                .insert(Header {
                    key: header::ORIGINAL_PARTITION,
                    value: Some("1"),
                })
                .insert(Header {
                    key: header::ORIGINAL_OFFSET,
                    value: Some("7"),
                }),
        );
        let first = origin(&msg).expect("origin");
        assert_eq!(
            (&*first.topic, first.partition, first.offset),
            ("first", 1, 7)
        );
        let letter = DeadLetter {
            original: &msg,
            class: ErrorClass::Permanent,
            stage: Stage::Apply,
            error: "again",
        };
        let headers = header_map(&dead_letter_headers(&letter, "w", "g", 1));
        let get = |k: &str| {
            headers
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get(header::ORIGINAL_TOPIC), ["first"]);
        assert_eq!(get(header::ORIGINAL_OFFSET), ["7"]);
        assert!(origin(&original(OwnedHeaders::new())).is_none());
    }

    #[test]
    fn a_letter_without_its_body_says_what_was_dropped_and_the_original_sizes() {
        let msg = original(OwnedHeaders::new());
        let get = |headers: &OwnedHeaders, k: &str| {
            header_map(headers)
                .into_iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        let value_dropped = with_dropped(OwnedHeaders::new(), &msg, Body::KeyOnly);
        assert_eq!(get(&value_dropped, header::DROPPED), ["value"]);
        assert_eq!(get(&value_dropped, header::ORIGINAL_VALUE_SIZE), ["7"]);
        assert!(get(&value_dropped, header::ORIGINAL_KEY_SIZE).is_empty());
        let both_dropped = with_dropped(OwnedHeaders::new(), &msg, Body::Nothing);
        assert_eq!(get(&both_dropped, header::DROPPED), ["key,value"]);
        assert_eq!(get(&both_dropped, header::ORIGINAL_KEY_SIZE), ["16"]);
        // A replayed letter failing again, this time with its body, does not carry the old
        // markers over.
        let replayed = original(
            OwnedHeaders::new()
                .insert(Header {
                    key: header::DROPPED,
                    value: Some("value"),
                })
                .insert(Header {
                    key: header::ORIGINAL_VALUE_SIZE,
                    value: Some("7"),
                }),
        );
        let letter = DeadLetter {
            original: &replayed,
            class: ErrorClass::Permanent,
            stage: Stage::Apply,
            error: "again",
        };
        let again = dead_letter_headers(&letter, "cache-invalidation", "g1", 8);
        assert!(get(&again, header::DROPPED).is_empty());
        assert!(get(&again, header::ORIGINAL_VALUE_SIZE).is_empty());
    }

    /// No broker needed: librdkafka refuses an oversize record when it is enqueued, and the
    /// letter without its value is enqueued (then times out, unreachable broker) instead of
    /// failing for its size forever.
    #[tokio::test]
    async fn an_oversize_letter_is_produced_without_its_value_instead_of_failing_forever() {
        let mut kafka = ClientConfig::new();
        kafka
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.max.bytes", "1000");
        let letters = DeadLetters::new(&kafka, "dlq", "w", "g").expect("producer");
        // (payload, key, …)
        let huge = OwnedMessage::new(
            Some(vec![b'x'; 50_000]),
            Some(b"{\"uid\":1}".to_vec()),
            "t".into(),
            Timestamp::CreateTime(1),
            0,
            1,
            None,
        );
        let letter = DeadLetter {
            original: &huge,
            class: ErrorClass::Permanent,
            stage: Stage::Decode,
            error: "too big",
        };
        let producer: FutureProducer = kafka.create().expect("producer");
        let refused = producer
            .send(
                FutureRecord::<[u8], [u8]>::to("dlq").payload(huge.payload().expect("value")),
                Duration::from_secs(1),
            )
            .await
            .expect_err("an oversize record is refused");
        assert!(is_too_large(&refused.0), "{:?}", refused.0);
        let sent = tokio::time::timeout(Duration::from_secs(60), letters.send(&letter))
            .await
            .expect("send returns once the fallback times out");
        let error = sent.expect_err("no broker");
        assert!(
            !is_too_large(&error),
            "the fallback was enqueued: {error:?}"
        );
    }
}
