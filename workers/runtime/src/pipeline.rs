//! The path of one batch of one partition: decode → apply → dead-letter, with retries.
//!
//! [`Pipeline::decode`] then [`Pipeline::apply`] (together: [`Pipeline::process`]) is the one
//! path the consumer engine *and* the replay tooling use, so a replayed record meets exactly the
//! same decoding, idempotency rules and dead-letter handling as a consumed one. `apply` returns
//! only when every record of the batch is applied, skipped or acknowledged by the DLQ; the caller
//! then stores the offset. The engine decodes a partition's next batch while `apply` runs.
//!
//! `apply` is [`Pipeline::start`], the batch's [`Confirmation`], then [`Pipeline::finish`]. The
//! engine calls the three itself, so that a handler whose effects become durable later
//! ([`Handler::start`]) has several batches of a partition waiting at once.
//!
//! # Layout
//! - [`Pipeline`]: a family's handler, decoder and DLQ producer, with its retry policy.
//! - [`DecodedBatch`], [`StartedBatch`]: a batch between the stages.
//! - [`BatchReport`]: what became of a batch.
//! - `retry_transient`: exponential backoff with jitter (`backon`), pausing readiness.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use cdc_schemas::ChangeEvent;
use metrics::{counter, histogram};
use rdkafka::message::Message;

use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::decode::{DecodeFailure, Decoded, Decoder};
use crate::dependency::Dependency;
use crate::error::{ErrorClass, Stage};
use crate::family::{
    Confirmation, Coordinates, Event, Handler, HandlerError, Outcome, Record, Started,
};
use crate::observe::{Health, PauseId, metric};

/// Everything needed to process a family's records.
pub struct Pipeline<H> {
    /// Family name (metrics label, DLQ header).
    pub family: String,
    /// The family's logic.
    pub handler: H,
    /// Bytes → events.
    pub decoder: Decoder,
    /// Where permanent failures go.
    pub dead_letters: DeadLetters,
    /// Backoff for transient failures.
    pub retry: cdc_topics::Retry,
    /// Readiness is false while a batch waits on a transient failure.
    pub health: Arc<Health>,
    /// Whether payloads of failing records may be logged.
    pub log_payloads: bool,
    /// Live, or shadow: a dead letter is planned and reported, never produced.
    pub effects: crate::shadow::Effects,
}

/// What became of one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Records whose effects were applied.
    pub applied: usize,
    /// Records older than the state (fenced).
    pub stale: usize,
    /// Records with nothing to do.
    pub skipped: usize,
    /// Records produced to the DLQ.
    pub dead_lettered: usize,
}

/// A batch decoded by [`Pipeline::decode`], for [`Pipeline::apply`]. The records stay as
/// consumed (`M`: the engine's are borrowed from librdkafka, not copied) until the batch is
/// applied: a dead letter carries its record's bytes and headers.
pub struct DecodedBatch<M> {
    batch: Vec<M>,
    slots: Vec<Slot>,
    records: Vec<Record>,
    started: Instant,
}

/// A batch whose effects [`Pipeline::start`] started, for [`Pipeline::finish`] once its
/// confirmation resolves.
pub struct StartedBatch<M> {
    decoded: DecodedBatch<M>,
    outcomes: Vec<Outcome>,
}

impl<M: Message> StartedBatch<M> {
    /// The offset after the batch's last record (what to store once it is finished).
    pub fn next_offset(&self) -> Option<i64> {
        self.decoded.batch.last().map(|m| m.offset() + 1)
    }
}

/// A record's place in the batch while it is processed.
enum Slot {
    /// Waiting for the handler; index into the handler batch.
    Handler(usize),
    Skipped(&'static str),
    Failed(Stage, String),
}

impl<H: Handler> Pipeline<H> {
    /// The pipeline of `family` (already topic-prefixed) with `handler`: its decoder, its DLQ
    /// producer and retry policy, per `config`. Used by the worker and by replay tooling.
    pub fn for_family(
        family: &cdc_topics::Family,
        config: &crate::WorkerConfig,
        handler: H,
        health: Arc<Health>,
        client_id: &str,
    ) -> Result<Self, crate::RuntimeError> {
        let decoder = Decoder::new(
            crate::worker::format_of(family.encoding),
            family.service_topics.iter().cloned(),
            config.schema_registry_url.as_deref(),
        )
        .with_columns(H::row_columns);
        let dead_letters = DeadLetters::new(
            &crate::kafka::base_config(config, client_id),
            &family.dlq,
            &family.family,
            &config.group_id(family),
        )?;
        Ok(Self {
            family: family.family.clone(),
            handler,
            decoder,
            dead_letters,
            retry: family.retry.clone(),
            health,
            log_payloads: config.log_payloads,
            effects: crate::shadow::Effects::of(config, &family.family).map_err(|source| {
                crate::RuntimeError::Sink {
                    what: "the shadow's planned-effects file",
                    source,
                }
            })?,
        })
    }

    /// Processes `batch` (records of one partition, in offset order): [`Pipeline::decode`],
    /// then [`Pipeline::apply`].
    ///
    /// Invariant kept for the caller: when this returns, every record's effects are applied (or
    /// it was skipped, or its dead letter is acknowledged), so its offset may be stored. Transient
    /// failures are retried here until they pass; this never returns early.
    pub async fn process<M: Message + Sync>(&self, batch: Vec<M>) -> BatchReport {
        let decoded = self.decode(batch).await;
        self.apply(decoded).await
    }

    /// Decodes `batch` (records of one partition, in offset order); transient failures (the
    /// schema registry) are retried until they pass. The engine decodes a partition's next
    /// batch while the previous one is applied.
    pub async fn decode<M: Message + Sync>(&self, batch: Vec<M>) -> DecodedBatch<M> {
        let started = Instant::now();
        let mut slots = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut topic = None;
        for msg in &batch {
            let decoded = self
                .retry_transient(
                    Stage::Decode,
                    At::of(msg),
                    || self.decoder.decode(msg),
                    DecodeFailure::is_transient,
                    |_| self.decoder.registry(),
                )
                .await;
            slots.push(match decoded {
                Ok(Decoded::Event(event)) => {
                    records.push(Record {
                        at: coordinates(msg, &mut topic),
                        origin: if H::READS_IDENTITY {
                            crate::dead_letter::origin(msg)
                        } else {
                            None
                        },
                        event,
                    });
                    Slot::Handler(records.len() - 1)
                }
                Ok(Decoded::Skip(reason)) => Slot::Skipped(reason),
                Err(failure) => Slot::Failed(Stage::Decode, failure.message),
            });
        }
        DecodedBatch {
            batch,
            slots,
            records,
            started,
        }
    }

    /// Applies a decoded batch: the handler's effects, then the dead letters of what failed.
    /// When this returns, every record of the batch may have its offset stored (see
    /// [`Pipeline::process`]).
    pub async fn apply<M: Message + Sync>(&self, decoded: DecodedBatch<M>) -> BatchReport {
        let (started, confirmation) = self.start(decoded).await;
        self.finish(started, confirmation.await).await
    }

    /// Starts a decoded batch's effects ([`Handler::start`]); transient failures are retried
    /// until they pass. Returns the batch and what confirms its effects durable (at once when
    /// they already are).
    pub async fn start<M: Message + Sync>(
        &self,
        decoded: DecodedBatch<M>,
    ) -> (StartedBatch<M>, Confirmation) {
        let (outcomes, confirmation) = self.start_handler(&decoded.records).await;
        let confirmation = confirmation.unwrap_or_else(|| Box::pin(std::future::ready(Ok(()))));
        (StartedBatch { decoded, outcomes }, confirmation)
    }

    /// Ends a started batch once `confirmed` (its [`Confirmation`]'s result): dead-letters what
    /// failed and reports. A failed confirmation applies the batch again first, waiting for
    /// its effects. When this returns, every record of the batch may have its offset stored.
    pub async fn finish<M: Message + Sync>(
        &self,
        started: StartedBatch<M>,
        confirmed: Result<(), HandlerError>,
    ) -> BatchReport {
        let StartedBatch {
            decoded:
                DecodedBatch {
                    batch,
                    slots,
                    records,
                    started,
                },
            mut outcomes,
        } = started;
        if let Err(error) = confirmed {
            tracing::warn!(family = %self.family, %error, records = records.len(), "the batch's effects were not confirmed; applying it again");
            outcomes = self.apply_handler(&records).await;
        }
        histogram!(metric::BATCH_SIZE, "family" => self.family.clone()).record(batch.len() as f64);

        let mut report = BatchReport::default();
        let mut newest_applied = None;
        let mut skip_reasons: Vec<(&'static str, u64)> = Vec::new();
        for (msg, slot) in batch.iter().zip(slots) {
            let (outcome, record) = match slot {
                Slot::Handler(i) => (outcomes[i].clone(), Some(&records[i])),
                Slot::Skipped(reason) => (Outcome::Skipped(reason), None),
                Slot::Failed(stage, error) => {
                    self.dead_letter(msg, stage, &error).await;
                    report.dead_lettered += 1;
                    continue;
                }
            };
            match outcome {
                Outcome::Applied => {
                    report.applied += 1;
                    newest_applied = record.or(newest_applied);
                }
                Outcome::Stale => report.stale += 1,
                Outcome::Skipped(reason) => {
                    report.skipped += 1;
                    match skip_reasons.iter_mut().find(|(r, _)| *r == reason) {
                        Some((_, n)) => *n += 1,
                        None => skip_reasons.push((reason, 1)),
                    }
                }
                Outcome::Rejected(error) => {
                    self.dead_letter(msg, Stage::Apply, &error).await;
                    report.dead_lettered += 1;
                }
            }
        }
        if let Some(msg) = batch.first() {
            self.count_batch(msg.topic(), &report, &skip_reasons);
        }
        if let Some(record) = newest_applied {
            self.record_age(record);
        }
        histogram!(metric::BATCH_SECONDS, "family" => self.family.clone())
            .record(started.elapsed().as_secs_f64());
        report
    }

    /// Starts the handler batch; on a permanent batch failure, applies its records one by one
    /// instead (nothing left to confirm). Returns one outcome per record.
    async fn start_handler(&self, records: &[Record]) -> (Vec<Outcome>, Option<Confirmation>) {
        match self
            .handler_once(records, || self.handler.start(records))
            .await
        {
            Ok(Started {
                outcomes,
                confirmation,
            }) => match check_outcomes(outcomes, records) {
                Ok(outcomes) => (outcomes, confirmation),
                Err(error) => (self.one_by_one(records, error).await, None),
            },
            Err(error) => (self.one_by_one(records, error).await, None),
        }
    }

    /// Applies the handler batch, waiting for its effects; on a permanent batch failure, isolates
    /// the culprit by applying records one by one. Returns one outcome per record.
    async fn apply_handler(&self, records: &[Record]) -> Vec<Outcome> {
        match self.apply_once(records).await {
            Ok(outcomes) => outcomes,
            Err(error) => self.one_by_one(records, error).await,
        }
    }

    /// The outcomes of `records` after their batch failed permanently with `error`: each
    /// record applied on its own.
    async fn one_by_one(&self, records: &[Record], error: anyhow::Error) -> Vec<Outcome> {
        if records.len() == 1 {
            return vec![Outcome::Rejected(format!("{error:#}"))];
        }
        tracing::warn!(family = %self.family, %error, records = records.len(), "batch failed permanently; applying its records one by one");
        let mut outcomes = Vec::with_capacity(records.len());
        for one in records.chunks(1) {
            outcomes.push(match self.apply_once(one).await {
                Ok(mut o) => o.pop().unwrap_or(Outcome::Skipped("empty")),
                Err(error) => Outcome::Rejected(format!("{error:#}")),
            });
        }
        outcomes
    }

    /// One [`Handler::apply`], transient failures retried; `Err` is a permanent failure.
    async fn apply_once(&self, records: &[Record]) -> Result<Vec<Outcome>, anyhow::Error> {
        let outcomes = self
            .handler_once(records, || self.handler.apply(records))
            .await?;
        check_outcomes(outcomes, records)
    }

    /// One handler call `call` on `records` (none when empty), transient failures retried;
    /// `Err` is a permanent failure.
    async fn handler_once<T: Default, Fut>(
        &self,
        records: &[Record],
        call: impl Fn() -> Fut,
    ) -> Result<T, anyhow::Error>
    where
        Fut: Future<Output = Result<T, HandlerError>>,
    {
        let Some(first) = records.first() else {
            return Ok(T::default());
        };
        let at = At {
            topic: &first.at.topic,
            partition: first.at.partition,
            offset: first.at.offset,
        };
        self.retry_transient(
            Stage::Apply,
            at,
            || async {
                let started = Instant::now();
                let result = call().await;
                histogram!(metric::APPLY_SECONDS, "family" => self.family.clone())
                    .record(started.elapsed().as_secs_f64());
                result
            },
            |e: &HandlerError| e.class() == ErrorClass::Transient,
            |e: &HandlerError| e.dependency().cloned(),
        )
        .await
        .map_err(|(HandlerError::Permanent(e) | HandlerError::Transient(e))| e)
    }

    /// Produces a dead letter, retrying until the DLQ acknowledges it.
    async fn dead_letter<M: Message + Sync>(&self, msg: &M, stage: Stage, error: &str) {
        counter!(metric::ERRORS, "family" => self.family.clone(), "stage" => stage.as_str(), "error_class" => "permanent").increment(1);
        if self.log_payloads {
            tracing::warn!(family = %self.family, topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), stage = stage.as_str(), %error, payload = %String::from_utf8_lossy(msg.payload().unwrap_or_default()), "dead-lettering record");
        } else {
            tracing::warn!(family = %self.family, topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), stage = stage.as_str(), %error, "dead-lettering record");
        }
        if self.effects.is_shadow() {
            self.effects.plan_dead_letter(
                (msg.topic(), msg.partition(), msg.offset()),
                stage.as_str(),
                ErrorClass::Permanent.as_str(),
                error,
            );
            self.count(msg, "dead_lettered");
            return;
        }
        let letter = DeadLetter {
            original: msg,
            class: ErrorClass::Permanent,
            stage,
            error,
        };
        let sent = self
            .retry_transient(
                Stage::DeadLetter,
                At::of(msg),
                || self.dead_letters.send(&letter),
                |_| true,
                |_| Some(self.dead_letters.brokers()),
            )
            .await;
        if sent.is_ok() {
            self.count(msg, "dead_lettered");
        }
    }

    /// Runs `op` until it succeeds or fails with an error `is_transient` rejects, sleeping with
    /// exponential backoff and jitter between tries. While retrying, this partition counts as
    /// paused (readiness false, saying why), and each failure is logged with the `dependency`
    /// that failed and the partition's position `at` (the first record waiting).
    async fn retry_transient<T, E, F, Fut>(
        &self,
        stage: Stage,
        at: At<'_>,
        mut op: F,
        is_transient: impl Fn(&E) -> bool,
        dependency: impl Fn(&E) -> Option<Dependency>,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        // The common case, once per record on the decode path: one try, no retry machinery.
        // After a transient failure the loop below tries again at once, then backs off.
        match op().await {
            Err(error) if is_transient(&error) => {}
            done => return done,
        }
        // backon's jitter adds up to 100 % to each delay: cap the delay at half the policy's
        // maximum so that a wait never exceeds `retry.max` (the bound on how long a
        // partition stays idle after its dependency is back).
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.retry.initial)
            .with_max_delay((self.retry.max / 2).max(self.retry.initial))
            .with_jitter()
            .without_max_times();
        // Dropped when the retries end, and also when the task is aborted mid-retry (a drain
        // timeout on revocation or shutdown): readiness never sticks at paused.
        let mut paused: Option<Paused<'_>> = None;
        let result = op
            .retry(policy)
            .sleep(tokio::time::sleep)
            .when(|e| is_transient(e))
            .notify(|error, delay: Duration| {
                let failed = dependency(error);
                let reason = at.paused_reason(failed.as_ref(), error);
                match &paused {
                    Some(p) => self.health.update_pause(p.id, reason),
                    None => paused = Some(Paused::new(&self.health, &self.family, stage, reason)),
                }
                counter!(metric::RETRIES, "family" => self.family.clone(), "stage" => stage.as_str()).increment(1);
                counter!(metric::ERRORS, "family" => self.family.clone(), "stage" => stage.as_str(), "error_class" => "transient").increment(1);
                tracing::warn!(
                    family = %self.family,
                    stage = stage.as_str(),
                    dependency = failed.as_ref().map_or("unknown", Dependency::kind),
                    address = failed.as_ref().map_or("unknown", Dependency::address),
                    topic = at.topic,
                    partition = at.partition,
                    offset = at.offset,
                    %error,
                    retry_in = ?delay,
                    "transient failure; partition paused"
                );
            })
            .await;
        drop(paused);
        result
    }

    fn count(&self, msg: &impl Message, outcome: &'static str) {
        counter!(metric::MESSAGES, "family" => self.family.clone(), "topic" => msg.topic().to_owned(), "outcome" => outcome).increment(1);
    }

    /// Counts a batch's outcomes (all of one topic) with one counter update per outcome, not
    /// per record. Dead letters are counted as they are sent.
    fn count_batch(&self, topic: &str, report: &BatchReport, skip_reasons: &[(&'static str, u64)]) {
        for (outcome, n) in [
            ("applied", report.applied),
            ("stale", report.stale),
            ("skipped", report.skipped),
        ] {
            if n > 0 {
                counter!(metric::MESSAGES, "family" => self.family.clone(), "topic" => topic.to_owned(), "outcome" => outcome).increment(n as u64);
            }
        }
        for &(reason, n) in skip_reasons {
            counter!(metric::SKIPPED, "family" => self.family.clone(), "topic" => topic.to_owned(), "reason" => reason).increment(n);
        }
    }

    fn record_age(&self, record: &Record) {
        let Event::Change(event) = &record.event else {
            return;
        };
        let ChangeEvent::Row(change) = event.as_ref() else {
            return;
        };
        let ts_ms = change.source.ts_ms;
        if ts_ms <= 0 {
            return;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        histogram!(metric::EVENT_AGE_SECONDS, "family" => self.family.clone(), "topic" => record.at.topic.to_string())
            .record((now_ms - ts_ms).max(0) as f64 / 1000.0);
    }
}

/// Where a partition waits: the first record of what is retried.
#[derive(Debug, Clone, Copy)]
struct At<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

impl<'a> At<'a> {
    fn of(msg: &'a impl Message) -> Self {
        Self {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
        }
    }

    /// The `/readyz` line of a partition waiting here on `error` of `dependency`.
    fn paused_reason(
        &self,
        dependency: Option<&Dependency>,
        error: &impl std::fmt::Display,
    ) -> String {
        let Self {
            topic,
            partition,
            offset,
        } = self;
        // A family's error names its dependency already ([`HandlerError::at`]).
        let error = error.to_string();
        match dependency {
            Some(d) if !error.contains(&d.to_string()) => {
                format!("partition {topic}[{partition}] paused at offset {offset}: {d}: {error}")
            }
            _ => format!("partition {topic}[{partition}] paused at offset {offset}: {error}"),
        }
    }
}

/// A partition waiting on a transient failure: counted in readiness (with its reason) and
/// `cdc_paused_partitions` from creation until dropped.
struct Paused<'a> {
    health: &'a Health,
    id: PauseId,
    family: &'a str,
    stage: Stage,
}

impl<'a> Paused<'a> {
    fn new(health: &'a Health, family: &'a str, stage: Stage, reason: String) -> Self {
        let id = health.pause(reason);
        metrics::gauge!(metric::PAUSED_PARTITIONS, "family" => family.to_owned()).increment(1.0);
        Self {
            health,
            id,
            family,
            stage,
        }
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.health.resume(self.id);
        metrics::gauge!(metric::PAUSED_PARTITIONS, "family" => self.family.to_owned())
            .decrement(1.0);
        tracing::info!(family = %self.family, stage = self.stage.as_str(), "no longer waiting on the transient failure; partition resumed");
    }
}

/// `outcomes` when there is one per record of `records`; a handler bug otherwise.
fn check_outcomes(
    outcomes: Vec<Outcome>,
    records: &[Record],
) -> Result<Vec<Outcome>, anyhow::Error> {
    if outcomes.len() == records.len() {
        Ok(outcomes)
    } else {
        Err(anyhow::anyhow!(
            "handler bug: {} outcomes for {} records",
            outcomes.len(),
            records.len()
        ))
    }
}

impl DecodeFailure {
    fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

/// `msg`'s coordinates; `topic` keeps the last topic name, which the records of a batch share.
fn coordinates(msg: &impl Message, topic: &mut Option<Arc<str>>) -> Coordinates {
    let name = msg.topic();
    let topic = match topic {
        Some(shared) if **shared == *name => shared.clone(),
        _ => topic.insert(name.into()).clone(),
    };
    Coordinates {
        topic,
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp_ms: msg.timestamp().to_millis(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;
    use crate::dead_letter::header;

    /// Applies everything; reads identities or not, as `IDENTITY` says.
    struct Reads<const IDENTITY: bool>;

    impl<const IDENTITY: bool> Handler for Reads<IDENTITY> {
        const READS_IDENTITY: bool = IDENTITY;

        async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
            Ok(vec![Outcome::Applied; batch.len()])
        }
    }

    fn pipeline<H: Handler>(handler: H) -> Pipeline<H> {
        Pipeline {
            family: "test".into(),
            handler,
            decoder: Decoder::new(cdc_schemas::Format::Json, [], None),
            dead_letters: DeadLetters::new(&ClientConfig::new(), "dlq", "test", "group")
                .unwrap_or_else(|e| panic!("{e}")),
            retry: cdc_topics::Retry {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            health: Arc::default(),
            log_payloads: false,
            effects: crate::shadow::Effects::live(),
        }
    }

    /// A dead letter put back on its topic: a row change whose headers name its first delivery.
    fn put_back() -> OwnedMessage {
        let value = br#"{"before":null,"after":{"uid":1},"source":{"version":"3.6.3.Final","connector":"mysql","name":"debezium.chii","db":"bangumi","table":"chii_members","ts_ms":1},"op":"c","ts_ms":1}"#;
        let headers = [
            (header::ORIGINAL_TOPIC, "debezium.chii.bangumi.chii_members"),
            (header::ORIGINAL_PARTITION, "2"),
            (header::ORIGINAL_OFFSET, "42"),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        });
        OwnedMessage::new(
            Some(value.to_vec()),
            None,
            "debezium.chii.bangumi.chii_members".into(),
            Timestamp::NotAvailable,
            0,
            7,
            Some(headers),
        )
    }

    #[tokio::test]
    async fn first_delivery_is_read_only_for_a_handler_that_reads_identities() {
        let reads = pipeline(Reads::<true>).decode(vec![put_back()]).await;
        let identity = reads.records[0].identity();
        assert_eq!((identity.partition, identity.offset), (2, 42));

        let skips = pipeline(Reads::<false>).decode(vec![put_back()]).await;
        assert_eq!(skips.records[0].origin, None);
        assert_eq!(skips.records[0].identity().offset, 7);
    }
}
