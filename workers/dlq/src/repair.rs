//! `dlq replay`, `dlq purge`, `dlq rewind`: the commands that change state. Each shows what it
//! would do first (a dry run, or no `--yes`), writes its intent to the audit trail before acting
//! and its outcome after, and handles letters one by one: any letter can be replayed or purged
//! whatever its neighbours, and none twice (see [`crate::handled`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cdc_runtime::config::redact_uri;
use cdc_runtime::dead_letter::header::DROPPED;
use cdc_runtime::observe::Health;
use cdc_runtime::pipeline::Pipeline;
use cdc_runtime::{Handler, WorkerConfig};
use cdc_topics::Family;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{Audit, coordinates};
use crate::cli::{AuditArgs, Filter, Target};
use crate::error::DlqError;
use crate::handled::{Handled, Outcome};
use crate::handover::live_members;
use crate::letter::{Letter, millis};
use crate::reader::{DlqReader, Pending, Ranges};

/// Most letters between two saves of progress (handled records, then the replay group).
const CHUNK: usize = 100;

/// How `dlq replay` goes about it.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Where the letters go.
    pub target: Target,
    /// Show, change nothing.
    pub dry_run: bool,
    /// Letters per second.
    pub rate: Option<f64>,
    /// At most this many letters.
    pub max: Option<u64>,
    /// Stop once this many failed again.
    pub stop_after_failures: Option<u64>,
    /// Longest wait of one letter on an unavailable dependency.
    pub timeout: Duration,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Letters re-applied or re-produced.
    pub replayed: u64,
    /// Of those, letters that failed again (a new letter in the DLQ, attempts + 1).
    pub failed_again: u64,
    /// Pending letters left alone (filtered out, past `--max`, or bodiless and gone at the
    /// source).
    pub left: u64,
}

/// The letters an operation selected, out of the pending ones.
struct Selection {
    reader: DlqReader,
    handled: Handled,
    pending: Pending,
    selected: Vec<Letter>,
}

impl Selection {
    /// Reads the pending letters of `family`'s DLQ and picks those `filter` matches, up to
    /// `max`.
    fn read(
        config: &WorkerConfig,
        family: &Family,
        filter: &Filter,
        max: Option<u64>,
    ) -> Result<Self, DlqError> {
        filter.validate()?;
        let reader = DlqReader::connect(config, family)?;
        reader.check(filter)?;
        let ranges: Ranges = reader.pending()?;
        let handled = Handled::load(config, family, &reader)?;
        let mut pending = Pending::new(&ranges);
        let mut selected = Vec::new();
        let limit = max.map_or(usize::MAX, |m| m as usize);
        reader.read_pending(&ranges, &handled, |letter| {
            pending.add(&letter);
            if selected.len() < limit && letter.matches(filter) {
                selected.push(letter);
            }
            true
        })?;
        println!(
            "{}: {} pending letter(s) (replay group {}); {} selected by {}{}",
            family.dlq,
            pending.count(),
            family.replay_group(),
            selected.len(),
            filter.describe(),
            max.map_or(String::new(), |m| format!(", --max {m}"))
        );
        Ok(Self {
            reader,
            handled,
            pending,
            selected,
        })
    }

    fn coordinates(letters: &[Letter]) -> String {
        coordinates(letters.iter().map(|l| (l.partition, l.offset)))
    }

    /// Records `letters` as handled, then moves the replay group to each partition's first
    /// pending letter and deletes the handled records it moved past.
    async fn save(
        &mut self,
        letters: &[&Letter],
        outcome: Outcome,
        operation: &str,
    ) -> Result<(), DlqError> {
        if letters.is_empty() {
            return Ok(());
        }
        self.handled.mark(letters, outcome, operation).await?;
        for letter in letters {
            self.pending.handled(letter);
        }
        let offsets = self.pending.group_offsets();
        self.reader.commit(&offsets)?;
        self.handled.forget_before(&offsets).await?;
        Ok(())
    }
}

/// Starts the audit trail of an operation on letters: reason given, file writable, the handled
/// topic there (created with the DLQ's `replication` if missing).
async fn begin(
    config: &WorkerConfig,
    family: &Family,
    audit: &AuditArgs,
    replication: i32,
) -> Result<Audit, DlqError> {
    let audit = Audit::open(&audit.audit_log, audit.reason()?)?;
    cdc_runtime::provision::provision_dlq_handled(
        &cdc_runtime::kafka::base_config(config, "dlq"),
        family,
        replication,
    )
    .await
    .map_err(|e| DlqError::Other(e.into()))?;
    Ok(audit)
}

/// `dlq replay`.
pub async fn replay(
    config: &WorkerConfig,
    family: &Family,
    filter: &Filter,
    options: &ReplayOptions,
    audit: &AuditArgs,
    stop: &CancellationToken,
) -> Result<ReplayReport, DlqError> {
    if options.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        return Err(DlqError::Usage(
            "--rate must be a positive number of records per second".into(),
        ));
    }
    let mut selection = Selection::read(config, family, filter, options.max)?;
    let target = match options.target {
        Target::Origin => "their original topics",
        Target::Direct => "the handler",
    };
    if options.dry_run {
        for letter in &selection.selected {
            println!("would replay {}", letter.summary_line());
        }
        println!(
            "dry run: {} letter(s) would be replayed to {target}; nothing changed",
            selection.selected.len()
        );
        return Ok(ReplayReport {
            left: (selection.pending.count() - selection.selected.len()) as u64,
            ..ReplayReport::default()
        });
    }
    let mut audit = begin(config, family, audit, selection.reader.replication).await?;
    let request = json!({
        "target": format!("{:?}", options.target).to_lowercase(),
        "filter": filter.describe(),
        "max": options.max,
        "selected": selection.selected.len(),
        "letters": Selection::coordinates(&selection.selected),
    });
    audit.intent("replay", family, request.clone())?;
    let mut run = ReplayRun::new(selection.selected.len() as u64);
    let result = run
        .go(config, family, &mut selection, options, audit.id(), stop)
        .await;
    let report = ReplayReport {
        replayed: run.replayed.len() as u64,
        failed_again: run.failed_again,
        left: selection.pending.count() as u64,
    };
    audit.outcome(
        "replay",
        family,
        json!({
            "request": request,
            "result": result.as_ref().map_or_else(|e| e.to_string(), |()| "done".into()),
            "replayed": report.replayed,
            "failed_again": report.failed_again,
            "still_pending": report.left,
            "letters": coordinates(run.replayed.iter().copied()),
            "replay_group_offsets": selection.pending.group_offsets(),
        }),
    )?;
    result?;
    match options.target {
        Target::Direct => println!(
            "replayed {} letter(s) in {:.1} s: {} applied, {} failed again (new letters in {}); {} pending",
            report.replayed,
            run.started.elapsed().as_secs_f64(),
            report.replayed - report.failed_again,
            report.failed_again,
            family.dlq,
            report.left
        ),
        Target::Origin => println!(
            "re-produced {} letter(s) to their original topics in {:.1} s; {} pending.\n\
             The running {} workers decide the outcome: a letter that fails again comes back to {} \
             as a new letter (watch with `dlq ls --family {}`).",
            report.replayed,
            run.started.elapsed().as_secs_f64(),
            report.left,
            family.family,
            family.dlq,
            family.family
        ),
    }
    Ok(report)
}

/// One replay in progress.
struct ReplayRun {
    started: Instant,
    bar: ProgressBar,
    /// Coordinates of the letters replayed so far.
    replayed: Vec<(i32, i64)>,
    failed_again: u64,
}

impl ReplayRun {
    fn new(total: u64) -> Self {
        Self {
            started: Instant::now(),
            bar: progress_bar(total),
            replayed: Vec::new(),
            failed_again: 0,
        }
    }

    /// Replays the selection chunk by chunk, saving progress after each; stops early on an
    /// interrupt, too many failures or an unavailable dependency, with what was done saved.
    async fn go(
        &mut self,
        config: &WorkerConfig,
        family: &Family,
        selection: &mut Selection,
        options: &ReplayOptions,
        operation: &str,
        stop: &CancellationToken,
    ) -> Result<(), DlqError> {
        let sink = Sink::connect(config, family, options).await?;
        let mut source = Source::new(config);
        let mut pacer = options
            .rate
            .map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
        // With a rate, save progress about every second, so an interruption repeats little.
        let chunk_size = options
            .rate
            .map_or(CHUNK, |r| (r.ceil() as usize).clamp(1, CHUNK));
        let selected = std::mem::take(&mut selection.selected);
        let mut outcome = Ok(());
        let mut enough_failures = false;
        for chunk in selected.chunks(chunk_size) {
            let mut done: Vec<&Letter> = Vec::with_capacity(chunk.len());
            for letter in chunk {
                if stop.is_cancelled() {
                    outcome = Err(DlqError::Interrupted(format!(
                        "{} letter(s) replayed, the rest still pending; run the same command to resume",
                        self.replayed.len() + done.len()
                    )));
                    break;
                }
                if let Some(p) = pacer.as_mut() {
                    p.tick().await;
                }
                let body = match source.body_of(letter, options.timeout) {
                    Ok(Some(body)) => body,
                    Ok(None) => continue,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
                let wait = Wait {
                    letter: &body,
                    timeout: options.timeout,
                    stop,
                    bar: &self.bar,
                };
                match sink.send(&wait).await {
                    Ok(failed) => {
                        self.failed_again += u64::from(failed);
                        done.push(letter);
                        self.bar.inc(1);
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
                enough_failures = options
                    .stop_after_failures
                    .is_some_and(|n| self.failed_again >= n);
                if enough_failures {
                    eprintln!(
                        "stopping: {} letter(s) failed again (--stop-after-failures)",
                        self.failed_again
                    );
                    break;
                }
            }
            // What was sent is saved whatever stopped the chunk.
            selection.save(&done, Outcome::Replayed, operation).await?;
            self.replayed
                .extend(done.iter().map(|l| (l.partition, l.offset)));
            if outcome.is_err() || enough_failures {
                break;
            }
        }
        self.bar.finish_and_clear();
        outcome
    }
}

/// Where bodiless letters' records are read back from: their source topics.
struct Source<'a> {
    config: &'a WorkerConfig,
    /// Made at the first bodiless letter.
    reader: Option<RecordReader>,
}

impl<'a> Source<'a> {
    fn new(config: &'a WorkerConfig) -> Self {
        Self {
            config,
            reader: None,
        }
    }

    /// The letter to replay: `letter` itself, or, when its body was dropped (too large for the
    /// DLQ), the letter with its original record's key and value read back from the source
    /// topic. `None` when the source no longer holds it (said on stderr: purge it instead).
    fn body_of(&mut self, letter: &Letter, timeout: Duration) -> Result<Option<Letter>, DlqError> {
        if letter.header(DROPPED).is_none() {
            return Ok(Some(letter.clone()));
        }
        let (Some(topic), Some(partition), Some(offset)) = (
            letter.original_topic(),
            letter.original_partition(),
            letter.original_offset(),
        ) else {
            eprintln!(
                "left pending: {} (its body was dropped and it has no source coordinates)",
                letter.summary_line()
            );
            return Ok(None);
        };
        let reader = match &mut self.reader {
            Some(reader) => reader,
            none => none.insert(RecordReader::new(self.config, "dlq-source")?),
        };
        let (low, high) = reader
            .consumer
            .fetch_watermarks(&topic, partition, timeout)
            .map_err(|e| {
                unavailable(
                    timeout,
                    format!("the broker, reading {topic}[{partition}]: {e}"),
                )
            })?;
        if offset < low || offset >= high {
            eprintln!(
                "left pending: {} (its body was dropped and {topic}[{partition}] no longer holds offset {offset}: it holds {low}..{high}; purge it with --partition {} --offset {})",
                letter.summary_line(),
                letter.partition,
                letter.offset
            );
            return Ok(None);
        }
        let restored = reader.read(&topic, partition, offset, timeout, |record| {
            letter.with_body_of(record)
        })?;
        Ok(Some(restored))
    }
}

/// A client reading single records by their coordinates, in a group it never commits in, its
/// fetches answered without waiting for more data.
struct RecordReader {
    consumer: BaseConsumer,
}

impl RecordReader {
    fn new(config: &WorkerConfig, client_id: &str) -> Result<Self, DlqError> {
        Ok(Self {
            consumer: cdc_runtime::kafka::base_config(config, client_id)
                .set("group.id", client_id)
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "10")
                .set("enable.partition.eof", "false")
                .create()?,
        })
    }

    /// `f` of the record at `topic[partition]@offset`; an unavailable broker if it does not
    /// arrive within `timeout`.
    fn read<T>(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
        f: impl FnOnce(&BorrowedMessage<'_>) -> T,
    ) -> Result<T, DlqError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        self.consumer.assign(&tpl)?;
        let record = self
            .consumer
            .poll(timeout)
            .ok_or_else(|| {
                unavailable(
                    timeout,
                    format!("the broker, reading {topic}[{partition}]@{offset}"),
                )
            })?
            .map_err(|e| {
                DlqError::Other(anyhow::anyhow!(
                    "reading {topic}[{partition}]@{offset}: {e}"
                ))
            })?;
        let result = f(&record);
        drop(record);
        self.consumer.unassign()?;
        Ok(result)
    }
}

fn unavailable(timeout: Duration, waiting_for: String) -> DlqError {
    DlqError::Unavailable {
        timeout,
        waiting_for,
    }
}

/// Where replayed letters go.
enum Sink {
    Origin(FutureProducer),
    Direct(Box<DirectHandler>),
}

impl Sink {
    async fn connect(
        config: &WorkerConfig,
        family: &Family,
        options: &ReplayOptions,
    ) -> Result<Self, DlqError> {
        Ok(match options.target {
            Target::Origin => Sink::Origin(
                cdc_runtime::kafka::base_config(config, "dlq-replay")
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set(
                        "message.timeout.ms",
                        options.timeout.as_millis().max(1).to_string(),
                    )
                    .create()?,
            ),
            Target::Direct => {
                let connecting = DirectHandler::connect(config, family);
                let handler = tokio::time::timeout(options.timeout, connecting)
                    .await
                    .map_err(|_| {
                        unavailable(
                            options.timeout,
                            format!("connecting the {} handler's stores", family.family),
                        )
                    })??;
                Sink::Direct(Box::new(handler))
            }
        })
    }

    /// Sends one letter; whether it failed again. Waits on transient failures at most
    /// `wait.timeout`; an interrupt abandons the wait (the letter stays pending).
    async fn send(&self, wait: &Wait<'_>) -> Result<bool, DlqError> {
        let (letter, timeout) = (wait.letter, wait.timeout);
        match self {
            Sink::Origin(producer) => {
                let record = origin_record(letter)?;
                producer
                    .send(record, Timeout::After(timeout))
                    .await
                    .map(|_| false)
                    .map_err(|(e, _)| {
                        unavailable(
                            timeout,
                            format!("the broker, re-producing {}: {e}", letter.summary_line()),
                        )
                    })
            }
            Sink::Direct(handler) => handler.apply(wait).await,
        }
    }
}

/// The letter as a record for its original topic and partition, headers included (so a new
/// failure counts one more attempt).
fn origin_record(letter: &Letter) -> Result<FutureRecord<'_, [u8], [u8]>, DlqError> {
    let (Some(topic), Some(partition)) = (letter.original_topic_ref(), letter.original_partition())
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
    let mut record = FutureRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .headers(headers);
    if let Some(k) = &letter.key {
        record = record.key(k);
    }
    if let Some(v) = &letter.value {
        record = record.payload(v);
    }
    Ok(record)
}

/// A family's handler, in-process, behind the runtime's pipeline (same decoding, idempotency
/// and dead-letter path as the worker), and the stores it writes to (named in waits).
struct DirectHandler {
    pipeline: DirectPipeline,
    stores: String,
}

#[allow(clippy::large_enum_variant)] // one per process, boxed in `Sink`
enum DirectPipeline {
    CacheInvalidation(Pipeline<cache_invalidation::CacheInvalidation>),
    Timeline(Pipeline<timeline::Timeline>),
    SubjectDate(Pipeline<subject_date::SubjectDate>),
    Notify(Pipeline<notify::Notify>),
    UserEvents(Pipeline<user_events::UserEvents>),
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
        let redis = format!("Redis at {}", redact_uri(&config.redis_uri));
        match family.family.as_str() {
            cache_invalidation::FAMILY => {
                let handler =
                    cache_invalidation::CacheInvalidation::connect(config.clone()).await?;
                Ok(Self {
                    pipeline: DirectPipeline::CacheInvalidation(pipeline(config, family, handler)?),
                    stores: redis,
                })
            }
            timeline::FAMILY => {
                // Default timeline settings: the same fence TTL and chunking as the worker's.
                let settings = timeline::Settings::default();
                let handler =
                    timeline::Timeline::connect(config, &settings, &config.group_id(family))?;
                let state = settings
                    .separate_state_redis(&config.redis_uri)
                    .map_or(String::new(), |uri| {
                        format!(", state Redis at {}", redact_uri(uri))
                    });
                Ok(Self {
                    pipeline: DirectPipeline::Timeline(pipeline(config, family, handler)?),
                    stores: format!(
                        "MySQL at {}:{}, {redis}{state}",
                        config.mysql_host, config.mysql_port
                    ),
                })
            }
            subject_date::FAMILY => {
                // No read delay: a dead letter is old enough for every replica to have its row.
                let settings = subject_date::Settings {
                    read_delay: std::time::Duration::ZERO,
                };
                let handler = subject_date::SubjectDate::connect(config.clone(), settings)
                    .await
                    .map_err(DlqError::Other)?;
                Ok(Self {
                    pipeline: DirectPipeline::SubjectDate(pipeline(config, family, handler)?),
                    stores: format!("MySQL at {}:{}", config.mysql_host, config.mysql_port),
                })
            }
            notify::FAMILY => {
                // Default settings: the same identity retention as the worker's.
                let handler = notify::Notify::connect(config.clone(), notify::Settings::default())
                    .await
                    .map_err(DlqError::Other)?;
                Ok(Self {
                    pipeline: DirectPipeline::Notify(pipeline(config, family, handler)?),
                    stores: format!("MySQL at {}:{}", config.mysql_host, config.mysql_port),
                })
            }
            user_events::FAMILY => {
                // The worker's S3 settings, from the same environment (S3_*).
                let settings = user_events::Settings::from_env()
                    .map_err(|e| DlqError::Usage(e.to_string()))?;
                let s3 = settings.store();
                let handler = user_events::UserEvents::connect(config.clone(), settings)
                    .await
                    .map_err(DlqError::Other)?;
                Ok(Self {
                    pipeline: DirectPipeline::UserEvents(pipeline(config, family, handler)?),
                    stores: format!(
                        "MySQL at {}:{}, {redis}, {s3}",
                        config.mysql_host, config.mysql_port
                    ),
                })
            }
            other => Err(DlqError::Usage(format!(
                "--to direct is not available for family {other}; use --to origin"
            ))),
        }
    }

    async fn apply(&self, wait: &Wait<'_>) -> Result<bool, DlqError> {
        match &self.pipeline {
            DirectPipeline::CacheInvalidation(p) => wait.apply(p, &self.stores).await,
            DirectPipeline::Timeline(p) => wait.apply(p, &self.stores).await,
            DirectPipeline::SubjectDate(p) => wait.apply(p, &self.stores).await,
            DirectPipeline::Notify(p) => wait.apply(p, &self.stores).await,
            DirectPipeline::UserEvents(p) => wait.apply(p, &self.stores).await,
        }
    }
}

/// One letter being sent, and how long it may wait on what it needs.
struct Wait<'a> {
    letter: &'a Letter,
    timeout: Duration,
    stop: &'a CancellationToken,
    bar: &'a ProgressBar,
}

impl Wait<'_> {
    /// Runs the letter (as its original record) through `pipeline`; whether it failed again.
    /// While the pipeline waits on a transient failure, the progress line names the stores.
    async fn apply<H: Handler>(
        &self,
        pipeline: &Pipeline<H>,
        stores: &str,
    ) -> Result<bool, DlqError> {
        let letter = self.letter;
        let original = letter.as_original().ok_or_else(|| {
            DlqError::Other(anyhow::anyhow!(
                "DLQ record p{}@{} has no context headers",
                letter.partition,
                letter.offset
            ))
        })?;
        let processing = pipeline.process(vec![original]);
        tokio::pin!(processing);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let waiting_for = || {
            format!(
                "p{}@{} waits on {} (a transient failure; the warning above has the error)",
                letter.partition, letter.offset, stores
            )
        };
        loop {
            tokio::select! {
                report = &mut processing => {
                    self.bar.set_message("");
                    return Ok(report.dead_lettered > 0);
                }
                () = self.stop.cancelled() => {
                    return Err(DlqError::Interrupted(format!(
                        "while p{}@{} waited on {}; it stays pending",
                        letter.partition, letter.offset, stores
                    )));
                }
                () = &mut deadline => return Err(unavailable(self.timeout, waiting_for())),
                _ = tick.tick() => {
                    if pipeline.health.paused() > 0 {
                        self.bar.set_message(waiting_for());
                    }
                }
            }
        }
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} letters, {per_sec}, eta {eta} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// `dlq purge`: shows exactly what `--yes` would purge; with it, marks those letters handled.
pub async fn purge(
    config: &WorkerConfig,
    family: &Family,
    filter: &Filter,
    max: Option<u64>,
    yes: bool,
    audit: &AuditArgs,
) -> Result<u64, DlqError> {
    let mut selection = Selection::read(config, family, filter, max)?;
    let verb = if yes { "purging" } else { "would purge" };
    for letter in &selection.selected {
        println!("{verb} {}", letter.summary_line());
    }
    let n = selection.selected.len();
    if !yes {
        return Err(DlqError::Refused(format!(
            "purge would mark {n} letter(s) of {} handled without replaying them ({}); nothing changed. Add --yes --reason '…' to do it.",
            family.dlq,
            Selection::coordinates(&selection.selected)
        )));
    }
    let mut audit = begin(config, family, audit, selection.reader.replication).await?;
    let letters = Selection::coordinates(&selection.selected);
    let request =
        json!({"filter": filter.describe(), "max": max, "selected": n, "letters": letters});
    audit.intent("purge", family, request.clone())?;
    let selected = std::mem::take(&mut selection.selected);
    let mut result = Ok(());
    for chunk in selected.chunks(CHUNK) {
        let chunk: Vec<&Letter> = chunk.iter().collect();
        result = selection.save(&chunk, Outcome::Purged, audit.id()).await;
        if result.is_err() {
            break;
        }
    }
    audit.outcome(
        "purge",
        family,
        json!({
            "request": request,
            "result": result.as_ref().map_or_else(|e| e.to_string(), |()| "done".into()),
            "still_pending": selection.pending.count(),
            "replay_group_offsets": selection.pending.group_offsets(),
        }),
    )?;
    result?;
    println!(
        "purged {n} letter(s); {} pending",
        selection.pending.count()
    );
    Ok(n as u64)
}

/// The first offset of `topic[partition]` whose record is at or after `at` (ms since the
/// epoch), else the partition's end. The broker's `answer` (`offsets_for_times`) is checked
/// against the records around it; when wrong (tansu answers 0 whatever the time), the offset is
/// found by a binary search on the records' timestamps (CDC topics are appended in time order).
fn first_offset_at(
    records: &RecordReader,
    topic: &str,
    partition: i32,
    at: i64,
    answer: Option<i64>,
    timeout: Duration,
) -> Result<i64, DlqError> {
    let (low, high) = records
        .consumer
        .fetch_watermarks(topic, partition, timeout)?;
    let timestamp = |offset: i64| {
        records.read(topic, partition, offset, timeout, |record| {
            record.timestamp().to_millis().unwrap_or(i64::MIN)
        })
    };
    let is_first_at = |offset: i64| -> Result<bool, DlqError> {
        Ok(offset == high
            || (timestamp(offset)? >= at && (offset == low || timestamp(offset - 1)? < at)))
    };
    if let Some(offset) = answer.filter(|o| (low..=high).contains(o))
        && is_first_at(offset)?
    {
        return Ok(offset);
    }
    let (mut lo, mut hi) = (low, high);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if timestamp(mid)? >= at {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// `dlq rewind`: shows, per partition, where the family's consumer group stands and where it
/// would go; resets it there with `--yes` (a forward move also needs `--force`).
pub async fn rewind(
    config: &WorkerConfig,
    family: &Family,
    to: SystemTime,
    yes: bool,
    force: bool,
    audit: &AuditArgs,
) -> Result<(), DlqError> {
    let group = config.group_id(family).into_owned();
    let consumer: BaseConsumer = cdc_runtime::kafka::base_config(config, "dlq-rewind")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let unreachable = |e: rdkafka::error::KafkaError| DlqError::BrokerUnreachable {
        brokers: config.kafka_brokers.clone(),
        reason: e.to_string(),
    };
    let timeout = Duration::from_secs(10);
    let members = live_members(&consumer, &group).map_err(unreachable)?;
    if !members.is_empty() {
        return Err(DlqError::Refused(format!(
            "group {group} has {} active member(s): {}; scale the {} workers to 0 first",
            members.len(),
            members.join(", "),
            family.family
        )));
    }
    let at = millis(to);
    let mut wanted = TopicPartitionList::new();
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(unreachable)?;
    for topic in family.all_topics() {
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            continue;
        };
        for p in t.partitions() {
            wanted.add_partition_offset(topic, p.id(), Offset::Offset(at))?;
        }
    }
    let committed = consumer.committed_offsets(wanted.clone(), timeout)?;
    // Reads single records to check the broker's time lookup.
    let lookup = RecordReader::new(config, "dlq-rewind-lookup")?;
    let found = consumer.offsets_for_times(wanted, timeout)?;
    let mut target = TopicPartitionList::new();
    let mut moves = Vec::new();
    let mut forward = Vec::new();
    for e in found.elements() {
        let answer = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        let offset = first_offset_at(&lookup, e.topic(), e.partition(), at, answer, timeout)?;
        let current = match committed
            .find_partition(e.topic(), e.partition())
            .map(|c| c.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        println!(
            "{}[{}]: at {} → {offset}",
            e.topic(),
            e.partition(),
            current.map_or("(nothing committed)".into(), |c| c.to_string())
        );
        if current.is_some_and(|c| offset > c) {
            forward.push(format!("{}[{}]", e.topic(), e.partition()));
        }
        moves.push(
            json!({"topic": e.topic(), "partition": e.partition(), "from": current, "to": offset}),
        );
        target.add_partition_offset(e.topic(), e.partition(), Offset::Offset(offset))?;
    }
    if !forward.is_empty() && !force {
        return Err(DlqError::Refused(format!(
            "rewind would move {} partition(s) forward ({}), skipping records the workers have not processed; nothing changed. Add --force if that is meant.",
            forward.len(),
            forward.join(", ")
        )));
    }
    let when = humantime::format_rfc3339_seconds(to).to_string();
    if !yes {
        return Err(DlqError::Refused(format!(
            "rewind of group {group} to {when} not done; add --yes --reason '…' to do it"
        )));
    }
    let mut audit = Audit::open(&audit.audit_log, audit.reason()?)?;
    let request = json!({"group": group, "to": when, "force": force, "partitions": moves});
    audit.intent("rewind", family, request.clone())?;
    let result = consumer.commit(&target, CommitMode::Sync);
    audit.outcome(
        "rewind",
        family,
        json!({"request": request, "result": result.as_ref().map_or_else(|e| e.to_string(), |()| "done".into())}),
    )?;
    result?;
    println!("group {group} rewound ({} partitions)", target.count());
    Ok(())
}
