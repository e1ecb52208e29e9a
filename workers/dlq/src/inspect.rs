//! `dlq ls` and `dlq show`: looking without touching.

use std::collections::BTreeMap;

use cdc_runtime::decode::{Decoded, Decoder};
use cdc_runtime::worker::format_of;
use cdc_runtime::{Event, WorkerConfig};
use cdc_schemas::{ChangeEvent, encode};
use cdc_topics::Family;
use serde_json::{Value as Json, json};

use cdc_runtime::dead_letter::header;

use crate::cli::{Filter, GroupBy};
use crate::error::DlqError;
use crate::handled::Handled;
use crate::letter::{Letter, format_ms};
use crate::reader::DlqReader;

/// One row of `ls`: a DLQ partition, or a group of `--by`.
#[derive(Debug, Default)]
struct Summary {
    pending: u64,
    oldest_ms: Option<i64>,
    newest_ms: Option<i64>,
    kinds: BTreeMap<String, u64>,
}

impl Summary {
    fn add(&mut self, letter: &Letter) {
        self.pending += 1;
        if let Some(t) = letter.failed_at_ms() {
            self.oldest_ms = Some(self.oldest_ms.map_or(t, |o| o.min(t)));
            self.newest_ms = Some(self.newest_ms.map_or(t, |n| n.max(t)));
        }
        *self.kinds.entry(letter.error_kind()).or_default() += 1;
    }
}

/// What one row of `ls` counts: a DLQ partition (in number order), or a group of `--by`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Partition(i32),
    Group(GroupBy, String),
}

impl Row {
    fn of(letter: &Letter, by: Option<GroupBy>) -> Self {
        by.map_or(Row::Partition(letter.partition), |by| {
            Row::Group(by, group_of(letter, by))
        })
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Row::Partition(p) => p.fmt(f),
            Row::Group(_, g) => g.fmt(f),
        }
    }
}

/// What `ls --by` groups a letter under.
fn group_of(letter: &Letter, by: GroupBy) -> String {
    match by {
        GroupBy::Error => letter
            .header(header::ERROR_MESSAGE)
            .unwrap_or_else(|| "?".into()),
        GroupBy::Table => letter
            .original_topic()
            .map_or_else(|| "?".into(), |t| cdc_schemas::topic_table(&t).to_owned()),
        GroupBy::Stage => letter
            .header(header::ERROR_STAGE)
            .unwrap_or_else(|| "?".into()),
    }
}

/// `dlq ls`: pending letters (after the replay group, less those handled on their own) per DLQ
/// partition, or grouped `by` error, table or stage.
pub fn ls(
    config: &WorkerConfig,
    families: &[Family],
    by: Option<GroupBy>,
    as_json: bool,
) -> Result<(), DlqError> {
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
        if !as_json {
            eprintln!(
                "{}: {} through replay group {}",
                family.family,
                family.dlq,
                family.replay_group()
            );
        }
        let pending = reader.pending()?;
        let handled = Handled::load(config, family, &reader)?;
        // Every partition has a row, pending letters or not.
        let mut summaries: BTreeMap<Row, Summary> = match by {
            None => reader
                .partitions
                .iter()
                .map(|&p| (Row::Partition(p), Summary::default()))
                .collect(),
            Some(_) => BTreeMap::new(),
        };
        reader.read_pending(&pending, &handled, |letter| {
            summaries
                .entry(Row::of(&letter, by))
                .or_default()
                .add(&letter);
            true
        })?;
        for (row, s) in summaries {
            let next = match row {
                Row::Partition(p) => pending.get(&p).map(|(start, _)| *start),
                Row::Group(..) => None,
            };
            rows.push((family, row, next, s));
        }
    }
    if as_json {
        for (family, row, next, s) in &rows {
            let mut line = json!({
                "family": family.family, "dlq": family.dlq, "replay_group": family.replay_group(),
                "pending": s.pending,
                "oldest_failure": s.oldest_ms.map(format_ms), "newest_failure": s.newest_ms.map(format_ms),
                "error_kinds": s.kinds,
            });
            match row {
                Row::Partition(p) => {
                    line["partition"] = json!(p);
                    line["replay_offset"] = json!(next);
                }
                Row::Group(by, group) => line[format!("{by:?}").to_lowercase()] = json!(group),
            }
            println!("{line}");
        }
        return Ok(());
    }
    let column = by.map_or("PART".to_owned(), |by| format!("{by:?}").to_uppercase());
    println!(
        "{:<20} {:<24} {:>8} {:>10} {:<21} {:<21} ERRORS",
        "FAMILY", column, "PENDING", "NEXT", "OLDEST FAILURE", "NEWEST FAILURE"
    );
    for (family, row, next, s) in &rows {
        let kinds = s
            .kinds
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<20} {:<24} {:>8} {:>10} {:<21} {:<21} {kinds}",
            family.family,
            row.to_string(),
            s.pending,
            next.map_or("-".into(), |n| n.to_string()),
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
    filter.validate()?;
    let reader = DlqReader::connect(config, family)?;
    reader.check(filter)?;
    if !as_json {
        eprintln!(
            "{}: {} letters of {} (replay group {})",
            family.family,
            if all { "all" } else { "pending" },
            family.dlq,
            family.replay_group()
        );
    }
    let mut letters = Vec::new();
    let mut visit = |letter: Letter| {
        if letter.matches(filter) {
            letters.push(letter);
        }
        letters.len() < limit
    };
    if all {
        reader.read(&reader.everything()?, visit)?;
    } else {
        let handled = Handled::load(config, family, &reader)?;
        reader.read_pending(&reader.pending()?, &handled, &mut visit)?;
    }
    let decoder = Decoder::new(
        format_of(family.encoding),
        family.service_topics.iter().cloned(),
        config.schema_registry_url.as_deref(),
    );
    for letter in &letters {
        let mut event = decoded(&decoder, letter).await;
        if !payload {
            redact(&mut event);
        }
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
            match letter.header(header::DROPPED) {
                Some(dropped) => println!(
                    "    body   dropped, too large for the DLQ ({dropped}{}); `replay` reads it back from {}",
                    letter.dropped_sizes(),
                    letter.source_line()
                ),
                None => println!("    event  {event}"),
            }
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
        .filter(|(k, _)| !header::ALL.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                Json::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    Json::Object(map)
}

/// Columns that can hold personal data or secrets: `show` prints them as `"<redacted>"` unless
/// `--payload` is given.
fn is_personal(column: &str) -> bool {
    const PARTS: &[&str] = &[
        "password", "passwd", "email", "token", "secret", "salt", "phone",
    ];
    let column = column.to_ascii_lowercase();
    PARTS.iter().any(|p| column.contains(p))
        || column == "ip"
        || column.ends_with("_ip")
        || column == "regip"
        || column == "lastip"
}

/// Replaces the values of personal columns in a decoded event's rows.
fn redact(event: &mut Json) {
    for part in ["key", "before", "after"] {
        if let Some(Json::Object(row)) = event.get_mut(part) {
            for (column, value) in row.iter_mut() {
                if is_personal(column) && !value.is_null() {
                    *value = Json::String("<redacted>".into());
                }
            }
        }
    }
}

/// The record decoded through the schema crate, as JSON; or why it does not decode.
pub async fn decoded(decoder: &Decoder, letter: &Letter) -> Json {
    if let Some(dropped) = letter.header(header::DROPPED) {
        return json!({ "dropped": dropped, "sizes": letter.dropped_sizes().trim_start_matches(", "), "source": letter.source_line() });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_columns_are_redacted() {
        let mut event = json!({
            "op": "u",
            "before": {"uid": 1, "email": "a@b.c", "password_crypt": "x", "lastip": "1.2.3.4", "nickname": "n"},
            "after": {"uid": 1, "email": null, "reset_password_token": "t"},
        });
        redact(&mut event);
        assert_eq!(
            event,
            json!({
                "op": "u",
                "before": {"uid": 1, "email": "<redacted>", "password_crypt": "<redacted>", "lastip": "<redacted>", "nickname": "n"},
                "after": {"uid": 1, "email": null, "reset_password_token": "<redacted>"},
            })
        );
    }
}
