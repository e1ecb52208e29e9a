//! `dlq ls` and `dlq show`: looking without touching.

use std::collections::BTreeMap;

use cdc_runtime::decode::{Decoded, Decoder};
use cdc_runtime::worker::format_of;
use cdc_runtime::{Event, WorkerConfig};
use cdc_schemas::{ChangeEvent, encode};
use cdc_topics::Family;
use serde_json::{Value as Json, json};

use crate::cli::Filter;
use crate::error::DlqError;
use crate::letter::{Letter, format_ms};
use crate::reader::DlqReader;

/// One DLQ partition in `ls`.
#[derive(Debug, Default)]
struct PartitionSummary {
    pending: u64,
    oldest_ms: Option<i64>,
    newest_ms: Option<i64>,
    kinds: BTreeMap<String, u64>,
}

/// `dlq ls`.
pub fn ls(config: &WorkerConfig, families: &[Family], as_json: bool) -> Result<(), DlqError> {
    let mut rows = Vec::new();
    for family in families {
        let reader = match DlqReader::connect(config, family) {
            Ok(reader) => reader,
            // Listing every family: one without a DLQ topic yet is a note, not a failure.
            Err(DlqError::Usage(why)) if families.len() > 1 => {
                eprintln!("note: {why}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let pending = reader.pending()?;
        let mut summaries: BTreeMap<i32, PartitionSummary> = reader
            .partitions
            .iter()
            .map(|&p| (p, PartitionSummary::default()))
            .collect();
        reader.read(&pending, |letter| {
            let s = summaries.entry(letter.partition).or_default();
            s.pending += 1;
            if let Some(t) = letter.failed_at_ms() {
                s.oldest_ms = Some(s.oldest_ms.map_or(t, |o| o.min(t)));
                s.newest_ms = Some(s.newest_ms.map_or(t, |n| n.max(t)));
            }
            *s.kinds.entry(letter.error_kind()).or_default() += 1;
            true
        })?;
        for (p, s) in summaries {
            let (start, end) = pending.get(&p).copied().unwrap_or_default();
            rows.push((
                family.family.clone(),
                reader.topic.clone(),
                p,
                start,
                end,
                s,
            ));
        }
    }
    if as_json {
        for (family, topic, p, start, end, s) in &rows {
            let line = json!({
                "family": family, "dlq": topic, "partition": p, "pending": s.pending,
                "replay_offset": start, "end_offset": end,
                "oldest_failure": s.oldest_ms.map(format_ms), "newest_failure": s.newest_ms.map(format_ms),
                "error_kinds": s.kinds,
            });
            println!("{line}");
        }
        return Ok(());
    }
    println!(
        "{:<20} {:>4} {:>8} {:>10} {:<21} {:<21} ERRORS",
        "FAMILY", "PART", "PENDING", "NEXT", "OLDEST FAILURE", "NEWEST FAILURE"
    );
    for (family, _, p, start, _, s) in &rows {
        let kinds = s
            .kinds
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{family:<20} {p:>4} {:>8} {start:>10} {:<21} {:<21} {kinds}",
            s.pending,
            s.oldest_ms.map_or("-".into(), format_ms),
            s.newest_ms.map_or("-".into(), format_ms),
        );
    }
    Ok(())
}

/// `dlq show`.
pub async fn show(
    config: &WorkerConfig,
    family: &Family,
    filter: &Filter,
    limit: usize,
    all: bool,
    payload: bool,
    as_json: bool,
) -> Result<(), DlqError> {
    let reader = DlqReader::connect(config, family)?;
    let ranges = if all {
        reader.everything()?
    } else {
        reader.pending()?
    };
    let mut letters = Vec::new();
    reader.read(&ranges, |letter| {
        if letter.matches(filter) {
            letters.push(letter);
        }
        letters.len() < limit
    })?;
    let decoder = Decoder::new(
        format_of(family.encoding),
        family.service_topics.iter().cloned(),
        config.schema_registry_url.as_deref(),
    );
    for letter in &letters {
        let event = decoded(&decoder, letter).await;
        if as_json {
            let mut line = json!({
                "partition": letter.partition, "offset": letter.offset,
                "context": letter.context_json(),
                "headers": original_headers(letter),
                "event": event,
            });
            if payload {
                line["payload"] = letter.payload_json();
            }
            println!("{line}");
        } else {
            println!("{}", letter.summary_line());
            for (k, v) in original_headers(letter).as_object().into_iter().flatten() {
                println!("    header {k}: {}", v.as_str().unwrap_or_default());
            }
            println!("    event  {event}");
            if payload {
                println!("    payload {}", letter.payload_json());
            }
        }
    }
    if !as_json {
        println!("{} record(s) shown", letters.len());
    }
    Ok(())
}

/// The headers the original record carried (the DLQ's own context left out).
fn original_headers(letter: &Letter) -> Json {
    let map: serde_json::Map<String, Json> = letter
        .headers
        .iter()
        .filter(|(k, _)| !cdc_runtime::dead_letter::header::ALL.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                Json::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    Json::Object(map)
}

/// The record decoded through the schema crate, as JSON; or why it does not decode.
pub async fn decoded(decoder: &Decoder, letter: &Letter) -> Json {
    let Some(original) = letter.as_original() else {
        return json!({"error": "no DLQ context headers"});
    };
    match decoder.decode(&original).await {
        Ok(Decoded::Skip(reason)) => json!({ "skipped": reason }),
        Ok(Decoded::Event(Event::Service { value, .. })) => json!({
            "service": value.map(|v| String::from_utf8_lossy(&v).into_owned())
        }),
        Ok(Decoded::Event(Event::Change(event))) => match *event {
            ChangeEvent::Row(change) => json!({
                "op": change.op.as_str(),
                "table": change.table(),
                "position": change.position().to_string(),
                "key": change.key.as_ref().map(encode::row_json),
                "before": change.before.as_ref().map(encode::row_json),
                "after": change.after.as_ref().map(encode::row_json),
            }),
            other => json!({ "event": format!("{other:?}") }),
        },
        Err(failure) => json!({ "undecodable": failure.message, "class": failure.class.as_str() }),
    }
}
