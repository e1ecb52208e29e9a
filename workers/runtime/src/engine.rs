//! The consumer engine: one poll thread, one task per assigned partition.
//!
//! The poll thread owns the rdkafka consumer. It hands each record to its partition's task over
//! a bounded channel, stores the offsets the tasks report done, and serves rebalances. Partition
//! tasks run concurrently on tokio, each strictly in offset order, batching up to N records or
//! T ms and passing each batch through the [`Pipeline`].
//!
//! Ordering invariant (at-least-once): a record's effects are applied (or it is dead-lettered)
//! → its task reports the next offset → the poll thread stores it → librdkafka commits stored
//! offsets on its interval, and the engine commits synchronously on revocation and shutdown.
//! Nothing is ever stored ahead of what is applied.
//!
//! A partition whose task is busy (a large batch, or a transient failure being retried) fills its
//! channel; the poll thread keeps what arrives next in the partition's stash and hands it over
//! as room appears (polling every millisecond meanwhile), and pauses that partition alone in
//! librdkafka once the stash passes a high-water mark, so other partitions flow on and memory
//! stays bounded.
//!
//! # Layout
//! - [`EngineContext`]: rdkafka callbacks (rebalance, statistics, errors) and the partition table.
//! - `poll_loop`: the poll thread.
//! - `PartitionSlot`, `run_partition`, `next_batch`: one partition's task.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics::{counter, gauge};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::family::Handler;
use crate::observe::{Health, metric};
use crate::pipeline::Pipeline;

/// The consumer type the engine runs.
pub type EngineConsumer = BaseConsumer<EngineContext>;

type PartitionKey = (String, i32);

/// Batch limits of a partition task.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most records per batch.
    pub max_messages: usize,
    /// Longest wait for a batch to fill.
    pub max_wait: Duration,
}

/// A partition's next offset to store, reported by its task once a batch is done.
struct Done {
    key: PartitionKey,
    next_offset: i64,
}

/// One running partition task, as the poll thread sees it.
struct PartitionSlot {
    tx: mpsc::Sender<OwnedMessage>,
    /// Records fetched while the channel was full, in order; the partition is paused meanwhile.
    stash: VecDeque<OwnedMessage>,
    paused: bool,
    next_offset: i64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// rdkafka callbacks and the engine's partition table.
pub struct EngineContext {
    family: String,
    health: Arc<Health>,
    runtime: tokio::runtime::Handle,
    drain_timeout: Duration,
    partitions: Mutex<HashMap<PartitionKey, PartitionSlot>>,
    done_tx: std_mpsc::Sender<Done>,
    done_rx: Mutex<std_mpsc::Receiver<Done>>,
}

impl EngineContext {
    /// A context for `family`'s consumer; tasks run on `runtime`.
    pub fn new(
        family: &str,
        health: Arc<Health>,
        runtime: tokio::runtime::Handle,
        drain_timeout: Duration,
    ) -> Self {
        let (done_tx, done_rx) = std_mpsc::channel();
        Self {
            family: family.to_owned(),
            health,
            runtime,
            drain_timeout,
            partitions: Mutex::default(),
            done_tx,
            done_rx: Mutex::new(done_rx),
        }
    }

    fn partitions(&self) -> MutexGuard<'_, HashMap<PartitionKey, PartitionSlot>> {
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores every offset the tasks reported done (the highest per partition).
    fn store_done(&self, consumer: &EngineConsumer) {
        let mut highest: BTreeMap<PartitionKey, i64> = BTreeMap::new();
        if let Ok(rx) = self.done_rx.lock() {
            for done in rx.try_iter() {
                let entry = highest.entry(done.key).or_insert(done.next_offset);
                *entry = (*entry).max(done.next_offset);
            }
        }
        if highest.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &highest {
            if let Err(error) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::error!(%error, topic, partition, "building offset list");
            }
        }
        if let Err(error) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile refuses the store; its new owner redoes the batch.
            counter!(metric::ERRORS, "family" => self.family.clone(), "stage" => "commit", "error_class" => "transient").increment(1);
            tracing::warn!(family = %self.family, %error, "storing offsets");
        }
    }

    /// Stops the tasks of `keys` (all when `None`): each finishes its in-flight batch, then
    /// exits. Waits at most the drain timeout; tasks still running then are aborted, and their
    /// unstored records are redelivered to the next owner.
    fn stop_partitions(&self, consumer: &EngineConsumer, keys: Option<&[PartitionKey]>) {
        let stopped: Vec<(PartitionKey, PartitionSlot)> = {
            let mut partitions = self.partitions();
            let keys: Vec<PartitionKey> = match keys {
                Some(keys) => keys.to_vec(),
                None => partitions.keys().cloned().collect(),
            };
            keys.into_iter()
                .filter_map(|k| partitions.remove(&k).map(|slot| (k, slot)))
                .collect()
        };
        if stopped.is_empty() {
            return;
        }
        let mut paused = TopicPartitionList::new();
        let mut tasks = Vec::new();
        for ((topic, partition), slot) in stopped {
            slot.stop.cancel();
            if slot.paused {
                paused.add_partition(&topic, partition);
            }
            tasks.push(slot.task);
        }
        if paused.count() > 0 {
            let _ = consumer.resume(&paused);
        }
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let drained = self.runtime.block_on(async {
            tokio::time::timeout(self.drain_timeout, futures::future::join_all(tasks)).await
        });
        if drained.is_err() {
            tracing::warn!(family = %self.family, timeout = ?self.drain_timeout, "partition tasks did not drain in time; aborting them (their records will be redelivered)");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        gauge!(metric::ACTIVE_PARTITIONS, "family" => self.family.clone())
            .set(self.partitions().len() as f64);
        self.store_done(consumer);
    }

    /// Commits stored offsets now and waits for the broker.
    fn commit_sync(&self, consumer: &EngineConsumer, why: &str) {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {
                counter!(metric::COMMITS, "family" => self.family.clone(), "result" => "ok")
                    .increment(1);
                tracing::info!(family = %self.family, why, "offsets committed");
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                counter!(metric::COMMITS, "family" => self.family.clone(), "result" => "error")
                    .increment(1);
                tracing::warn!(family = %self.family, why, %error, "offset commit failed");
            }
        }
    }
}

impl ClientContext for EngineContext {
    fn stats(&self, statistics: Statistics) {
        if statistics.brokers.values().any(|b| b.state == "UP") {
            self.health.set_broker_down(false);
        }
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id >= 0 && p.consumer_lag >= 0 {
                    gauge!(metric::CONSUMER_LAG, "family" => self.family.clone(), "topic" => topic.clone(), "partition" => id.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.health.set_broker_down(true);
        }
        counter!(metric::ERRORS, "family" => self.family.clone(), "stage" => "consume", "error_class" => "transient").increment(1);
        tracing::warn!(family = %self.family, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for EngineContext {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => counter!(metric::COMMITS, "family" => self.family.clone(), "result" => "ok")
                .increment(1),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                counter!(metric::COMMITS, "family" => self.family.clone(), "result" => "error")
                    .increment(1);
                tracing::warn!(family = %self.family, %error, "offset commit failed");
            }
        }
    }

    fn pre_rebalance(&self, consumer: &EngineConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                counter!(metric::REBALANCES, "family" => self.family.clone(), "kind" => "assign")
                    .increment(1);
                tracing::info!(family = %self.family, partitions = %describe(tpl), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                counter!(metric::REBALANCES, "family" => self.family.clone(), "kind" => "revoke")
                    .increment(1);
                tracing::info!(family = %self.family, partitions = %describe(tpl), "partitions revoked; draining them");
                let keys: Vec<PartitionKey> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                self.stop_partitions(consumer, Some(&keys));
                self.commit_sync(consumer, "revocation");
            }
            Rebalance::Error(error) => {
                counter!(metric::REBALANCES, "family" => self.family.clone(), "kind" => "error")
                    .increment(1);
                tracing::warn!(family = %self.family, %error, "rebalance error");
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The poll thread: dispatches records, stores finished offsets, and on `shutdown` drains every
/// partition and commits. Runs until `shutdown` is cancelled.
pub(crate) fn poll_loop<H: Handler>(
    consumer: EngineConsumer,
    pipeline: Arc<Pipeline<H>>,
    limits: BatchLimits,
    shutdown: CancellationToken,
) {
    let ctx = consumer.context();
    ctx.health.set_polling(true);
    let mut backlog = false;
    while !shutdown.is_cancelled() {
        // With records waiting for room in a task's channel, come back within a millisecond.
        let wait = if backlog {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        };
        match consumer.poll(wait) {
            Some(Ok(msg)) => {
                ctx.health.set_broker_down(false);
                dispatch(&consumer, &pipeline, limits, msg.detach());
            }
            Some(Err(error)) => {
                counter!(metric::ERRORS, "family" => ctx.family.clone(), "stage" => "consume", "error_class" => "transient").increment(1);
                tracing::warn!(family = %ctx.family, %error, "consume error");
            }
            None => {}
        }
        backlog = relieve_backpressure(&consumer);
        ctx.store_done(&consumer);
    }
    tracing::info!(family = %ctx.family, "shutting down: finishing in-flight batches");
    ctx.stop_partitions(&consumer, None);
    ctx.commit_sync(&consumer, "shutdown");
    ctx.health.set_polling(false);
    // Dropping the consumer here (on this thread) leaves the group cleanly.
}

/// Hands `msg` to its partition's task, starting the task on first sight of the partition.
fn dispatch<H: Handler>(
    consumer: &EngineConsumer,
    pipeline: &Arc<Pipeline<H>>,
    limits: BatchLimits,
    msg: OwnedMessage,
) {
    let ctx = consumer.context();
    ctx.health
        .dispatched
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut partitions = ctx.partitions();
    let key = (msg.topic().to_owned(), msg.partition());
    if !partitions.contains_key(&key) {
        partitions.insert(
            key.clone(),
            start_partition(ctx, pipeline, limits, key.clone()),
        );
        gauge!(metric::ACTIVE_PARTITIONS, "family" => ctx.family.clone())
            .set(partitions.len() as f64);
    }
    let Some(slot) = partitions.get_mut(&key) else {
        return;
    };
    if msg.offset() < slot.next_offset {
        return; // fetched again after a pause; already queued
    }
    slot.next_offset = msg.offset() + 1;
    if slot.stash.is_empty() {
        match slot.tx.try_send(msg) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(msg) | mpsc::error::TrySendError::Closed(msg)) => {
                slot.stash.push_back(msg);
            }
        }
    } else {
        slot.stash.push_back(msg);
    }
    // Pause only when the backlog is large: pausing drops librdkafka's prefetched records,
    // which it must fetch again on resume.
    if !slot.paused && slot.stash.len() >= stash_high_water(limits) {
        slot.paused = true;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.0, key.1);
        if let Err(error) = consumer.pause(&tpl) {
            tracing::warn!(family = %ctx.family, %error, topic = key.0, partition = key.1, "pausing partition");
        }
    }
}

/// Records a partition may hold beyond its channel before it is paused.
fn stash_high_water(limits: BatchLimits) -> usize {
    4 * limits.max_messages.max(256)
}

/// Moves stashed records into channels with room again, and resumes paused partitions whose
/// stash is empty. Returns whether any records still wait.
fn relieve_backpressure(consumer: &EngineConsumer) -> bool {
    let ctx = consumer.context();
    let mut resume = TopicPartitionList::new();
    let mut waiting = false;
    for ((topic, partition), slot) in ctx
        .partitions()
        .iter_mut()
        .filter(|(_, s)| !s.stash.is_empty() || s.paused)
    {
        while let Some(msg) = slot.stash.pop_front() {
            if let Err(
                mpsc::error::TrySendError::Full(msg) | mpsc::error::TrySendError::Closed(msg),
            ) = slot.tx.try_send(msg)
            {
                slot.stash.push_front(msg);
                break;
            }
        }
        if slot.stash.is_empty() {
            if slot.paused {
                slot.paused = false;
                resume.add_partition(topic, *partition);
            }
        } else {
            waiting = true;
        }
    }
    if resume.count() > 0
        && let Err(error) = consumer.resume(&resume)
    {
        tracing::warn!(family = %ctx.family, %error, "resuming partitions");
    }
    waiting
}

fn start_partition<H: Handler>(
    ctx: &EngineContext,
    pipeline: &Arc<Pipeline<H>>,
    limits: BatchLimits,
    key: PartitionKey,
) -> PartitionSlot {
    let (tx, rx) = mpsc::channel(limits.max_messages * 2);
    let stop = CancellationToken::new();
    let task = ctx.runtime.spawn(run_partition(
        pipeline.clone(),
        key,
        rx,
        stop.clone(),
        limits,
        ctx.done_tx.clone(),
    ));
    PartitionSlot {
        tx,
        stash: VecDeque::new(),
        paused: false,
        next_offset: i64::MIN,
        stop,
        task,
    }
}

/// One partition's task: batches in order, processes each, reports its next offset.
async fn run_partition<H: Handler>(
    pipeline: Arc<Pipeline<H>>,
    key: PartitionKey,
    mut rx: mpsc::Receiver<OwnedMessage>,
    stop: CancellationToken,
    limits: BatchLimits,
    done: std_mpsc::Sender<Done>,
) {
    while let Some(batch) = next_batch(&mut rx, &stop, limits).await {
        pipeline.process(&batch).await;
        if let Some(last) = batch.last() {
            let _ = done.send(Done {
                key: key.clone(),
                next_offset: last.offset() + 1,
            });
        }
    }
}

/// Waits for the first record, then takes more until the batch is full or `max_wait` passed.
/// `None` once stopped (records not yet taken stay unprocessed and uncommitted).
async fn next_batch(
    rx: &mut mpsc::Receiver<OwnedMessage>,
    stop: &CancellationToken,
    limits: BatchLimits,
) -> Option<Vec<OwnedMessage>> {
    let first = tokio::select! {
        biased;
        () = stop.cancelled() => return None,
        msg = rx.recv() => msg?,
    };
    let mut batch = Vec::with_capacity(limits.max_messages.min(64));
    batch.push(first);
    let deadline = tokio::time::Instant::now() + limits.max_wait;
    while batch.len() < limits.max_messages {
        match rx.try_recv() {
            Ok(msg) => batch.push(msg),
            Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(msg)) => batch.push(msg),
                _ => break,
            },
        }
    }
    Some(batch)
}
