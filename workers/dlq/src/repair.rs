//! `dlq replay`, `dlq purge`, `dlq rewind`: the commands that change state, each behind a dry
//! run or a confirmation, each leaving an audit line.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cdc_runtime::dead_letter::header::DROPPED;
use cdc_runtime::observe::Health;
use cdc_runtime::pipeline::Pipeline;
use cdc_runtime::{Handler, WorkerConfig};
use cdc_topics::Family;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::audit::Audit;
use crate::cli::{Filter, Target};
use crate::error::DlqError;
use crate::letter::{Letter, millis};
use crate::reader::{DlqReader, Progress};

/// Most records between two progress commits.
const CHUNK: usize = 100;

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Records re-applied or re-produced.
    pub replayed: u64,
    /// Of those, records that failed again (back in the DLQ, attempts + 1).
    pub failed_again: u64,
    /// Pending records the filter left alone.
    pub left: u64,
}

/// `dlq replay`.
pub async fn replay(
    config: &WorkerConfig,
    family: &Family,
    filter: &Filter,
    target: Target,
    dry_run: bool,
    rate: Option<f64>,
    audit: &Audit,
) -> Result<ReplayReport, DlqError> {
    if rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        return Err(DlqError::Usage(
            "--rate must be a positive number of records per second".into(),
        ));
    }
    let reader = DlqReader::connect(config, family)?;
    let ranges = reader.pending()?;
    let mut selected = Vec::new();
    let mut progress = Progress::new(&ranges);
    let mut report = ReplayReport::default();
    reader.read(&ranges, |letter| {
        if letter.matches(filter) && letter.header(DROPPED).is_some() {
            // Too large for the DLQ: the letter has no body to replay. It stays pending; the
            // record is at its source coordinates (headers) for a replay from there.
            eprintln!(
                "left pending: {} (its body was dropped, too large for the DLQ; the original is at its source coordinates)",
                letter.summary_line()
            );
            report.left += 1;
            progress.left(&letter);
        } else if letter.matches(filter) {
            selected.push(letter);
        } else {
            report.left += 1;
            progress.left(&letter);
        }
        true
    })?;
    // `selected` is in partition order; `left` blocks only what follows it in its partition.
    let what = json!({"target": format!("{target:?}").to_lowercase(), "filter": format!("{filter:?}"), "selected": selected.len(), "dry_run": dry_run});
    if dry_run {
        for letter in &selected {
            println!("would replay {}", letter.summary_line());
        }
        println!(
            "dry run: {} record(s) would be replayed to {}, {} left pending; nothing changed",
            selected.len(),
            if target == Target::Origin {
                "their original topics"
            } else {
                "the handler"
            },
            report.left
        );
        return Ok(report);
    }
    audit.write("replay-start", family, what.clone())?;
    let bar = progress_bar(selected.len() as u64);
    let mut pacer = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
    let started = Instant::now();
    let sink = match target {
        Target::Origin => Sink::Origin(
            cdc_runtime::kafka::base_config(config, "dlq-replay")
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create()?,
        ),
        Target::Direct => Sink::Direct(Box::new(DirectHandler::connect(config, family).await?)),
    };
    // With a rate, commit progress about every second, so an interruption repeats little.
    let chunk_size = rate.map_or(CHUNK, |r| (r.ceil() as usize).clamp(1, CHUNK));
    for chunk in selected.chunks(chunk_size) {
        let mut paced = Vec::with_capacity(chunk.len());
        for letter in chunk {
            if let Some(p) = pacer.as_mut() {
                p.tick().await;
            }
            paced.push(letter);
        }
        report.failed_again += sink.send(&paced).await?;
        for letter in chunk {
            progress.handled(letter);
        }
        report.replayed += chunk.len() as u64;
        reader.commit(progress.offsets())?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    println!(
        "replayed {} record(s) in {:.1} s: {} applied or re-produced, {} failed again (back in {}), {} left pending",
        report.replayed,
        started.elapsed().as_secs_f64(),
        report.replayed - report.failed_again,
        report.failed_again,
        family.dlq,
        report.left
    );
    audit.write(
        "replay",
        family,
        json!({"request": what, "replayed": report.replayed, "failed_again": report.failed_again, "left": report.left, "replay_offsets": progress.offsets()}),
    )?;
    Ok(report)
}

/// Where replayed records go.
enum Sink {
    Origin(FutureProducer),
    Direct(Box<DirectHandler>),
}

impl Sink {
    /// Sends `letters`; returns how many failed again.
    async fn send(&self, letters: &[&Letter]) -> Result<u64, DlqError> {
        match self {
            Sink::Origin(producer) => {
                for letter in letters {
                    let (Some(topic), Some(partition)) =
                        (letter.original_topic(), letter.original_partition())
                    else {
                        return Err(DlqError::Other(anyhow::anyhow!(
                            "DLQ record p{}@{} has no original topic/partition headers",
                            letter.partition,
                            letter.offset
                        )));
                    };
                    let mut headers = OwnedHeaders::new();
                    for (k, v) in &letter.headers {
                        headers = headers.insert(Header {
                            key: k,
                            value: Some(v),
                        });
                    }
                    let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                        .partition(partition)
                        .headers(headers);
                    if let Some(k) = &letter.key {
                        record = record.key(k);
                    }
                    if let Some(v) = &letter.value {
                        record = record.payload(v);
                    }
                    producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map_err(|(e, _)| {
                            DlqError::Other(anyhow::anyhow!("re-producing to {topic}: {e}"))
                        })?;
                }
                Ok(0)
            }
            Sink::Direct(handler) => handler.apply(letters).await,
        }
    }
}

/// A family's handler, in-process, behind the runtime's pipeline (same decoding, idempotency
/// and dead-letter path as the worker).
#[allow(clippy::large_enum_variant)] // one per process, boxed in `Sink`
enum DirectHandler {
    CacheInvalidation(Pipeline<cache_invalidation::CacheInvalidation>),
    Timeline(Pipeline<timeline::Timeline>),
}

impl DirectHandler {
    async fn connect(config: &WorkerConfig, family: &Family) -> Result<Self, DlqError> {
        fn pipeline<H: Handler>(
            config: &WorkerConfig,
            family: &Family,
            handler: H,
        ) -> Result<Pipeline<H>, DlqError> {
            Pipeline::for_family(
                family,
                config,
                handler,
                Arc::new(Health::default()),
                "dlq-replay",
            )
            .map_err(|e| DlqError::Other(e.into()))
        }
        match family.family.as_str() {
            cache_invalidation::FAMILY => {
                let handler =
                    cache_invalidation::CacheInvalidation::connect(config.clone()).await?;
                Ok(Self::CacheInvalidation(pipeline(config, family, handler)?))
            }
            timeline::FAMILY => {
                // Default timeline settings: the same fence TTL and chunking as the worker's.
                let handler = timeline::Timeline::connect(
                    config,
                    &timeline::Settings::default(),
                    config.group_id(family),
                )?;
                Ok(Self::Timeline(pipeline(config, family, handler)?))
            }
            other => Err(DlqError::Usage(format!(
                "--to direct is not available for family {other}; use --to origin"
            ))),
        }
    }

    async fn apply(&self, letters: &[&Letter]) -> Result<u64, DlqError> {
        match self {
            Self::CacheInvalidation(p) => apply_direct(p, letters).await,
            Self::Timeline(p) => apply_direct(p, letters).await,
        }
    }
}

/// Runs `letters` (as their original records) through `pipeline`; counts new dead letters.
async fn apply_direct<H: Handler>(
    pipeline: &Pipeline<H>,
    letters: &[&Letter],
) -> Result<u64, DlqError> {
    let originals = letters
        .iter()
        .map(|l| {
            l.as_original().ok_or_else(|| {
                DlqError::Other(anyhow::anyhow!(
                    "DLQ record p{}@{} has no context headers",
                    l.partition,
                    l.offset
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One record at a time: originals may come from different partitions and topics.
    let mut failed = 0;
    for original in originals {
        failed += pipeline.process(vec![original]).await.dead_lettered as u64;
    }
    Ok(failed)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} records, {per_sec}, eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// `dlq purge`: shows what would be skipped; with `yes`, moves the replay group past it.
pub fn purge(
    config: &WorkerConfig,
    family: &Family,
    filter: &Filter,
    yes: bool,
    audit: &Audit,
) -> Result<u64, DlqError> {
    let reader = DlqReader::connect(config, family)?;
    let ranges = reader.pending()?;
    let mut progress = Progress::new(&ranges);
    let mut skipped = Vec::new();
    let mut left = 0u64;
    reader.read(&ranges, |letter| {
        if letter.matches(filter) {
            progress.handled(&letter);
            skipped.push(letter);
        } else {
            left += 1;
            progress.left(&letter);
        }
        true
    })?;
    // Only records before the first one left alone can be skipped past.
    let skippable: Vec<&Letter> = skipped
        .iter()
        .filter(|l| {
            progress
                .offsets()
                .get(&l.partition)
                .is_some_and(|next| l.offset < *next)
        })
        .collect();
    for letter in &skippable {
        println!(
            "{} {}",
            if yes { "skipping" } else { "would skip" },
            letter.summary_line()
        );
    }
    let not_skippable = skipped.len() - skippable.len();
    if not_skippable > 0 {
        println!(
            "{not_skippable} matching record(s) come after records the filter leaves pending and stay pending (replay or purge those first)"
        );
    }
    if !yes {
        return Err(DlqError::Refused(format!(
            "purge would skip {} record(s) of {}; nothing changed. Add --yes to do it.",
            skippable.len(),
            family.dlq
        )));
    }
    reader.commit(progress.offsets())?;
    audit.write(
        "purge",
        family,
        json!({"filter": format!("{filter:?}"), "skipped": skippable.len(), "left": left, "replay_offsets": progress.offsets()}),
    )?;
    println!(
        "skipped {} record(s); {} left pending",
        skippable.len(),
        left
    );
    Ok(skippable.len() as u64)
}

/// `dlq rewind`: resets the family's consumer group to the first offsets at or after `to`.
pub fn rewind(
    config: &WorkerConfig,
    family: &Family,
    to: SystemTime,
    yes: bool,
    audit: &Audit,
) -> Result<(), DlqError> {
    let group = config.group_id(family).to_owned();
    let consumer: BaseConsumer = cdc_runtime::kafka::base_config(config, "dlq-rewind")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let groups = consumer
        .fetch_group_list(Some(&group), Duration::from_secs(10))
        .map_err(|e| DlqError::BrokerUnreachable {
            brokers: config.kafka_brokers.clone(),
            reason: e.to_string(),
        })?;
    let members: Vec<String> = groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| {
            g.members()
                .iter()
                .map(|m| format!("{} ({})", m.client_id(), m.client_host()))
        })
        .collect();
    if !members.is_empty() {
        return Err(DlqError::Refused(format!(
            "group {group} has {} active member(s){}; scale the {} workers to 0 first",
            members.len(),
            if members.iter().all(String::is_empty) {
                String::new()
            } else {
                format!(": {}", members.join(", "))
            },
            family.family
        )));
    }
    let at = millis(to);
    let mut wanted = TopicPartitionList::new();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    for topic in family.all_topics() {
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            continue;
        };
        for p in t.partitions() {
            wanted.add_partition_offset(topic, p.id(), Offset::Offset(at))?;
        }
    }
    let found = consumer.offsets_for_times(wanted, Duration::from_secs(10))?;
    let mut target = TopicPartitionList::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            // No record at or after the time: the end of the partition.
            _ => {
                consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?
                    .1
            }
        };
        println!(
            "{} {}[{}] → offset {offset}",
            if yes { "rewinding" } else { "would rewind" },
            e.topic(),
            e.partition()
        );
        target.add_partition_offset(e.topic(), e.partition(), Offset::Offset(offset))?;
    }
    if !yes {
        return Err(DlqError::Refused(format!(
            "rewind of group {group} to {} not done; add --yes to do it",
            humantime::format_rfc3339_seconds(to)
        )));
    }
    consumer.commit(&target, CommitMode::Sync)?;
    audit.write(
        "rewind",
        family,
        json!({"group": group, "to": humantime::format_rfc3339_seconds(to).to_string(), "partitions": target.count()}),
    )?;
    println!("group {group} rewound ({} partitions)", target.count());
    Ok(())
}
