//! A dead letter as read from a DLQ topic: its bytes and the context headers the runtime wrote
//! (`cdc_runtime::dead_letter::header`), and whether it matches a [`Filter`].

use std::time::{SystemTime, UNIX_EPOCH};

use cdc_runtime::dead_letter::header;
use rdkafka::Timestamp;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use serde_json::{Value as Json, json};

use crate::cli::Filter;

/// One record of a DLQ topic.
#[derive(Debug, Clone)]
pub struct Letter {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// Key bytes (the original's).
    pub key: Option<Vec<u8>>,
    /// Value bytes (the original's).
    pub value: Option<Vec<u8>>,
    /// All headers, in order (the original's, then the DLQ's).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Letter {
    /// Copies a consumed record.
    pub fn from_message(msg: &BorrowedMessage<'_>) -> Self {
        Self {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers: msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The text of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn number(&self, name: &str) -> Option<i64> {
        self.header(name).and_then(|v| v.parse().ok())
    }

    /// Topic the record originally came from.
    pub fn original_topic(&self) -> Option<String> {
        self.header(header::ORIGINAL_TOPIC)
    }

    /// [`Letter::original_topic`], borrowed.
    pub fn original_topic_ref(&self) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == header::ORIGINAL_TOPIC)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Its original offset.
    pub fn original_offset(&self) -> Option<i64> {
        self.number(header::ORIGINAL_OFFSET)
    }

    /// This letter with the key and value of `original` (its record read back from the source
    /// topic, for a letter whose body was dropped), and without the dropped marker.
    pub fn with_body_of(&self, original: &BorrowedMessage<'_>) -> Self {
        Self {
            partition: self.partition,
            offset: self.offset,
            key: original.key().map(<[u8]>::to_vec),
            value: original.payload().map(<[u8]>::to_vec),
            headers: self
                .headers
                .iter()
                .filter(|(k, _)| k != header::DROPPED)
                .cloned()
                .collect(),
        }
    }

    /// `, value 5242880 bytes, key 12 bytes`: the sizes of what was dropped, if recorded.
    pub fn dropped_sizes(&self) -> String {
        [
            ("value", header::ORIGINAL_VALUE_SIZE),
            ("key", header::ORIGINAL_KEY_SIZE),
        ]
        .iter()
        .filter_map(|(what, name)| Some(format!(", {what} {} bytes", self.header(name)?)))
        .collect()
    }

    /// `topic[partition]@offset` of the original record.
    pub fn source_line(&self) -> String {
        format!(
            "{}[{}]@{}",
            self.original_topic().unwrap_or_else(|| "?".into()),
            self.original_partition()
                .map_or("?".into(), |p| p.to_string()),
            self.original_offset().map_or("?".into(), |o| o.to_string())
        )
    }

    /// Its original partition.
    pub fn original_partition(&self) -> Option<i32> {
        self.number(header::ORIGINAL_PARTITION)
            .and_then(|p| i32::try_from(p).ok())
    }

    /// When it failed, ms since the epoch.
    pub fn failed_at_ms(&self) -> Option<i64> {
        self.number(header::FAILED_AT)
    }

    /// `class/stage`, e.g. `permanent/decode`.
    pub fn error_kind(&self) -> String {
        format!(
            "{}/{}",
            self.header(header::ERROR_CLASS)
                .unwrap_or_else(|| "?".into()),
            self.header(header::ERROR_STAGE)
                .unwrap_or_else(|| "?".into())
        )
    }

    /// Whether every condition of `filter` holds (partition and offsets included).
    pub fn matches(&self, filter: &Filter) -> bool {
        let failed = self.failed_at_ms();
        let eq = |want: &Option<String>, name: &str| {
            want.as_ref()
                .is_none_or(|w| self.header(name).as_deref() == Some(w))
        };
        filter.partition.is_none_or(|p| p == self.partition)
            && filter.offset.is_none_or(|o| o == self.offset)
            && filter.from_offset.is_none_or(|o| self.offset >= o)
            && filter.to_offset.is_none_or(|o| self.offset <= o)
            && filter
                .since
                .is_none_or(|t| failed.is_some_and(|f| f >= millis(t)))
            && filter
                .until
                .is_none_or(|t| failed.is_some_and(|f| f <= millis(t)))
            && eq(&filter.error_class, header::ERROR_CLASS)
            && eq(&filter.stage, header::ERROR_STAGE)
            && filter.error.as_ref().is_none_or(|e| {
                self.header(header::ERROR_MESSAGE)
                    .is_some_and(|m| m.contains(e.as_str()))
            })
            && filter
                .key
                .as_ref()
                .is_none_or(|k| self.key.as_deref() == Some(k.as_bytes()))
    }

    /// The record as the worker originally consumed it: original topic, partition, offset and
    /// timestamp, with the dead letter's key, value and headers (so a new failure counts one
    /// more attempt). `None` if the DLQ headers are missing.
    pub fn as_original(&self) -> Option<OwnedMessage> {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        Some(OwnedMessage::new(
            self.value.clone(),
            self.key.clone(),
            self.original_topic()?,
            self.number(header::ORIGINAL_TIMESTAMP)
                .map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
            self.original_partition()?,
            self.number(header::ORIGINAL_OFFSET)?,
            Some(headers),
        ))
    }

    /// The DLQ headers as a JSON object (header name without the `cdc.dlq.` prefix).
    pub fn context_json(&self) -> Json {
        let mut map = serde_json::Map::new();
        for name in header::ALL {
            if let Some(v) = self.header(name) {
                map.insert(
                    name.trim_start_matches("cdc.dlq.").to_owned(),
                    Json::String(v),
                );
            }
        }
        Json::Object(map)
    }

    /// Summary for people: one line.
    pub fn summary_line(&self) -> String {
        format!(
            "p{}@{} {} from {} attempts {} at {}: {}",
            self.partition,
            self.offset,
            self.error_kind(),
            self.source_line(),
            self.header(header::ATTEMPTS).unwrap_or_else(|| "?".into()),
            self.failed_at_ms().map_or("?".into(), format_ms),
            self.header(header::ERROR_MESSAGE).unwrap_or_default()
        )
    }

    /// Key and value for display: text when UTF-8, else base64-free hex preview.
    pub fn payload_json(&self) -> Json {
        json!({ "key": bytes_json(self.key.as_deref()), "value": bytes_json(self.value.as_deref()) })
    }
}

fn bytes_json(bytes: Option<&[u8]>) -> Json {
    match bytes {
        None => Json::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => Json::String(text.to_owned()),
            Err(_) => Json::String(format!(
                "hex:{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )),
        },
    }
}

/// Milliseconds since the epoch.
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 (UTC, seconds) of `ms` since the epoch.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
