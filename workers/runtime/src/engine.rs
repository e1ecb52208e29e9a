//! The consumer engine: one poll thread, one task per assigned partition, each reading its
//! partition's own librdkafka queue.
//!
//! The poll thread owns the rdkafka consumer: it serves rebalances and client events, and stores
//! the offsets the tasks report done. When partitions are assigned, each one's messages are split
//! off into a queue of its own ([`BaseConsumer::split_partition_queue`], before the assignment
//! starts fetching) and a tokio task takes it. The task reads its queue when it wants a batch (up
//! to N records or T ms) and passes the batch through the [`Pipeline`], so each partition goes
//! strictly in offset order, concurrently with the others.
//!
//! Backpressure is librdkafka's own: a task busy with a batch (or retrying a transient failure)
//! does not read its queue, which fills up to `queued.max.messages.kbytes` and then stops
//! fetching for that partition alone. No pause, no copy of records in between. What a worker
//! holds is bounded whatever its assignment: the prefetch by `PREFETCH_BUDGET` (see
//! [`crate::kafka::prefetch_limits`]), the batches taken out of the queues by
//! [`BATCHES_IN_FLIGHT`].
//!
//! Ordering invariant (at-least-once): a record's effects are applied and confirmed durable (or
//! it is dead-lettered) → its task reports the next offset, batch after batch in offset order →
//! the poll thread stores it → librdkafka commits stored offsets on its interval, and the engine
//! commits synchronously on revocation and shutdown. Nothing is ever stored ahead of what is
//! applied.
//!
//! # Layout
//! - [`EngineContext`]: rdkafka callbacks (rebalance, statistics, errors) and the partition table.
//! - `poll_loop`: the poll thread.
//! - `run_partition`, `next_batch`: one partition's task.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use metrics::{counter, gauge};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, base_consumer::PartitionQueue,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::family::{Confirmation, Handler, HandlerError};
use crate::observe::{Health, metric};
use crate::pipeline::{DecodedBatch, Pipeline, StartedBatch};

/// The consumer type the engine runs.
pub type EngineConsumer = BaseConsumer<EngineContext>;

/// One partition's own queue of fetched records.
type Queue = PartitionQueue<EngineContext>;

pub(crate) type PartitionKey = (String, i32);

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
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// rdkafka callbacks and the engine's partition table.
pub struct EngineContext {
    family: String,
    health: Arc<Health>,
    runtime: tokio::runtime::Handle,
    drain_timeout: Duration,
    /// The consumer itself, to split partition queues off in the rebalance callback.
    consumer: OnceLock<Weak<EngineConsumer>>,
    /// Queues split off for newly assigned partitions, waiting for the poll loop to start
    /// their tasks.
    assigned: Mutex<Vec<(PartitionKey, Queue)>>,
    partitions: Mutex<HashMap<PartitionKey, PartitionSlot>>,
    /// Turns for batches in flight, shared by the partition tasks.
    batches: Arc<Semaphore>,
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
            consumer: OnceLock::new(),
            assigned: Mutex::default(),
            partitions: Mutex::default(),
            batches: Arc::new(Semaphore::new(BATCHES_IN_FLIGHT)),
            done_tx,
            done_rx: Mutex::new(done_rx),
        }
    }

    fn partitions(&self) -> MutexGuard<'_, HashMap<PartitionKey, PartitionSlot>> {
        self.partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn assigned(&self) -> MutexGuard<'_, Vec<(PartitionKey, Queue)>> {
        self.assigned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Splits the queues of newly assigned partitions off the consumer's queue. Called before
    /// librdkafka starts fetching them, so no record of theirs reaches the consumer's queue.
    fn split_queues(&self, tpl: &TopicPartitionList) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            tracing::error!(family = %self.family, "consumer not registered with its context; partitions not split");
            return;
        };
        let mut assigned = self.assigned();
        for e in tpl.elements() {
            match consumer.split_partition_queue(e.topic(), e.partition()) {
                Some(queue) => assigned.push(((e.topic().to_owned(), e.partition()), queue)),
                None => {
                    counter!(metric::ERRORS, "family" => self.family.clone(), "stage" => "consume", "error_class" => "permanent").increment(1);
                    tracing::error!(family = %self.family, topic = e.topic(), partition = e.partition(), "could not split the partition's queue; its records are not consumed");
                }
            }
        }
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
        self.assigned()
            .retain(|(k, _)| keys.is_some_and(|keys| !keys.contains(k)));
        let (stopped_keys, stopped): (Vec<PartitionKey>, Vec<PartitionSlot>) = {
            let mut partitions = self.partitions();
            let keys: Vec<PartitionKey> = match keys {
                Some(keys) => keys.to_vec(),
                None => partitions.keys().cloned().collect(),
            };
            keys.into_iter()
                .filter_map(|k| partitions.remove(&k).map(|slot| (k, slot)))
                .unzip()
        };
        if stopped.is_empty() {
            return;
        }
        let tasks: Vec<JoinHandle<()>> = stopped
            .into_iter()
            .map(|slot| {
                slot.stop.cancel();
                slot.task
            })
            .collect();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let drained = self.runtime.block_on(async {
            tokio::time::timeout(self.drain_timeout, futures::future::join_all(tasks)).await
        });
        if drained.is_err() {
            tracing::warn!(family = %self.family, timeout = ?self.drain_timeout, "partition tasks did not drain in time; aborting them (their records will be redelivered)");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        for key in &stopped_keys {
            self.health.partition_lag.remove(key);
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
        // Joined with no partitions (more members than partitions) calls no rebalance
        // callback: only the group's state says the worker has its share.
        if statistics
            .cgrp
            .as_ref()
            .is_some_and(|g| g.join_state == "steady")
        {
            self.health.set_joined();
        }
        // Only partitions this worker owns: librdkafka keeps reporting a revoked one for a while.
        let owned = self.partitions();
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                let key = (topic.clone(), *id);
                if p.consumer_lag >= 0 && owned.contains_key(&key) {
                    self.health.partition_lag.set(key, p.consumer_lag);
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
                self.split_queues(tpl);
                self.health.set_joined();
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

/// The poll thread: serves rebalances and events, starts the tasks of assigned partitions,
/// stores finished offsets, and on `shutdown` drains every partition and commits. Runs until
/// `shutdown` is cancelled.
pub(crate) fn poll_loop<H: Handler>(
    consumer: Arc<EngineConsumer>,
    pipeline: Arc<Pipeline<H>>,
    limits: BatchLimits,
    shutdown: CancellationToken,
) {
    let ctx = consumer.context();
    let _ = ctx.consumer.set(Arc::downgrade(&consumer));
    ctx.health.set_polling(true);
    while !shutdown.is_cancelled() {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(msg)) => {
                // Only a partition whose queue could not be split gets here (logged then);
                // its offsets are never stored, so the record is not lost.
                tracing::error!(family = %ctx.family, topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), "record on the consumer queue: partition not split; not processed");
            }
            Some(Err(error)) => {
                counter!(metric::ERRORS, "family" => ctx.family.clone(), "stage" => "consume", "error_class" => "transient").increment(1);
                tracing::warn!(family = %ctx.family, %error, "consume error");
            }
            None => {}
        }
        start_assigned(ctx, &pipeline, limits);
        ctx.store_done(&consumer);
    }
    tracing::info!(family = %ctx.family, "shutting down: finishing in-flight batches");
    ctx.stop_partitions(&consumer, None);
    ctx.commit_sync(&consumer, "shutdown");
    ctx.health.set_polling(false);
    // The tasks are gone with their queues: dropping the last reference here (on this thread)
    // leaves the group cleanly.
}

/// Starts a task for each partition whose queue was split off since the last call.
fn start_assigned<H: Handler>(
    ctx: &EngineContext,
    pipeline: &Arc<Pipeline<H>>,
    limits: BatchLimits,
) {
    let assigned = std::mem::take(&mut *ctx.assigned());
    if assigned.is_empty() {
        return;
    }
    let mut partitions = ctx.partitions();
    for (key, mut queue) in assigned {
        let wake = Arc::new(Notify::new());
        let notify = wake.clone();
        queue.set_nonempty_callback(move || notify.notify_one());
        let stop = CancellationToken::new();
        let task = ctx.runtime.spawn(run_partition(
            pipeline.clone(),
            PartitionTask {
                family: ctx.family.clone(),
                key: key.clone(),
                queue,
                batches: ctx.batches.clone(),
                wake,
                stop: stop.clone(),
                limits,
                done: ctx.done_tx.clone(),
                health: ctx.health.clone(),
            },
        ));
        if let Some(old) = partitions.insert(key, PartitionSlot { stop, task }) {
            // Assigned again before its revocation was served: the old task must not go on.
            old.stop.cancel();
        }
    }
    gauge!(metric::ACTIVE_PARTITIONS, "family" => ctx.family.clone()).set(partitions.len() as f64);
}

/// Batches a worker holds at once, decoding or applying, all partitions together. Their records
/// are out of librdkafka's queues, so the prefetch budget does not count them (and they pin the
/// fetch buffers they came in); 42 partitions catching up would otherwise hold two full batches
/// each. A batch waits for its turn holding one record. Eight keep both cores and the Redis
/// round trips busy.
const BATCHES_IN_FLIGHT: usize = 8;

/// What one partition's task owns.
struct PartitionTask {
    family: String,
    key: PartitionKey,
    queue: Queue,
    /// The worker's turns for batches in flight ([`BATCHES_IN_FLIGHT`]).
    batches: Arc<Semaphore>,
    /// Notified by librdkafka when the queue becomes non-empty.
    wake: Arc<Notify>,
    stop: CancellationToken,
    limits: BatchLimits,
    done: std_mpsc::Sender<Done>,
    health: Arc<Health>,
}

/// One partition's task: reads, decodes and starts batches in order, and finishes them in the
/// same order once their effects are confirmed ([`Handler::start`]), reporting each one's next
/// offset. A batch is read and decoded while the one before it is started (both in this task:
/// the records are borrowed from the partition's queue, never copied, so they cannot leave it),
/// and up to [`Handler::UNCONFIRMED_BATCHES`] started batches wait for their confirmations
/// meanwhile.
async fn run_partition<H: Handler>(pipeline: Arc<Pipeline<H>>, task: PartitionTask) {
    let mut decoded: Option<(DecodedBatch<BorrowedMessage<'_>>, OwnedSemaphorePermit)> = None;
    let mut unconfirmed = Unconfirmed::default();
    loop {
        // Room for the batch about to start: finish the oldest first.
        while unconfirmed.len() >= H::UNCONFIRMED_BATCHES {
            unconfirmed.finish_oldest(&pipeline, &task).await;
        }
        let previous = decoded.take();
        let mut start = std::pin::pin!(async {
            let (batch, turn) = previous?;
            let (started, confirmation) = pipeline.start(batch).await;
            Some((started, turn, confirmation))
        });
        let mut read = std::pin::pin!(async {
            let (batch, turn) = next_batch(&task).await?;
            // Records arrived, so the broker is reachable again (the statistics say so too,
            // later).
            task.health.set_broker_down(false);
            task.health
                .dispatched
                .fetch_add(batch.len() as i64, std::sync::atomic::Ordering::Relaxed);
            Some((pipeline.decode(batch).await, turn))
        });
        // Start the previous batch and read the next one, finishing the batches confirmed
        // meanwhile. Neither future is dropped before it ends: records read are never lost.
        let (mut starting, mut next) = (true, None);
        while starting || next.is_none() {
            tokio::select! {
                biased;
                started = &mut start, if starting => {
                    starting = false;
                    if let Some((started, turn, confirmation)) = started {
                        unconfirmed.push(started, turn, confirmation);
                    }
                }
                Some(confirmed) = unconfirmed.confirmations.next(), if !unconfirmed.is_empty() => {
                    unconfirmed.finish(confirmed, &pipeline, &task).await;
                }
                read = &mut read, if next.is_none() => next = Some(read),
            }
        }
        // Stopped: the batches started are finished below; records not yet read stay
        // uncommitted and go to the partition's next owner.
        let Some(Some(next)) = next else { break };
        decoded = Some(next);
    }
    while !unconfirmed.is_empty() {
        unconfirmed.finish_oldest(&pipeline, &task).await;
    }
}

/// A partition's started batches waiting for their confirmations, oldest first, each with its
/// turn among the worker's [`BATCHES_IN_FLIGHT`].
struct Unconfirmed<M> {
    batches: VecDeque<(StartedBatch<M>, OwnedSemaphorePermit)>,
    confirmations: FuturesOrdered<Confirmation>,
}

impl<M> Default for Unconfirmed<M> {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
            confirmations: FuturesOrdered::new(),
        }
    }
}

impl<'a> Unconfirmed<BorrowedMessage<'a>> {
    fn len(&self) -> usize {
        self.batches.len()
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    fn push(
        &mut self,
        started: StartedBatch<BorrowedMessage<'a>>,
        turn: OwnedSemaphorePermit,
        confirmation: Confirmation,
    ) {
        self.batches.push_back((started, turn));
        self.confirmations.push_back(confirmation);
    }

    /// Waits for the oldest batch's confirmation, then finishes it and reports its offset.
    async fn finish_oldest<H: Handler>(&mut self, pipeline: &Pipeline<H>, task: &PartitionTask) {
        if let Some(confirmed) = self.confirmations.next().await {
            self.finish(confirmed, pipeline, task).await;
        }
    }

    async fn finish<H: Handler>(
        &mut self,
        confirmed: Result<(), HandlerError>,
        pipeline: &Pipeline<H>,
        task: &PartitionTask,
    ) {
        // The turn is given back once the batch is finished.
        let Some((started, _turn)) = self.batches.pop_front() else {
            return;
        };
        let next_offset = started.next_offset();
        pipeline.finish(started, confirmed).await;
        if let Some(next_offset) = next_offset {
            let _ = task.done.send(Done {
                key: task.key.clone(),
                next_offset,
            });
        }
    }
}

/// Takes what the queue holds, up to a full batch; waits for the first record, then for the
/// batch's turn among the worker's [`BATCHES_IN_FLIGHT`], then at most `max_wait` for the batch
/// to fill. `None` once stopped, checked before every read: a task catching up always finds a
/// full queue, and must still stop after the batch in hand (records not yet processed stay
/// uncommitted and go to the partition's next owner).
async fn next_batch(
    task: &PartitionTask,
) -> Option<(Vec<BorrowedMessage<'_>>, OwnedSemaphorePermit)> {
    let mut batch = Vec::new();
    let mut turn = None;
    let mut deadline = None;
    loop {
        if task.stop.is_cancelled() {
            return None;
        }
        // Until the batch has its turn, one record only: a waiting task holds no more.
        let room = if turn.is_some() {
            task.limits.max_messages
        } else {
            1
        };
        while batch.len() < room {
            match task.queue.poll(Duration::ZERO) {
                Some(Ok(msg)) => batch.push(msg),
                Some(Err(error)) => {
                    counter!(metric::ERRORS, "family" => task.family.clone(), "stage" => "consume", "error_class" => "transient").increment(1);
                    tracing::warn!(family = %task.family, topic = task.key.0, partition = task.key.1, %error, "consume error");
                }
                None => break,
            }
        }
        if turn.is_none() && !batch.is_empty() {
            turn = tokio::select! {
                biased;
                () = task.stop.cancelled() => return None,
                permit = task.batches.clone().acquire_owned() => Some(permit.ok()?),
            };
            continue;
        }
        if batch.len() >= task.limits.max_messages {
            return turn.map(|turn| (batch, turn));
        }
        if deadline.is_none() && !batch.is_empty() {
            deadline = Some(tokio::time::Instant::now() + task.limits.max_wait);
        }
        let until = deadline.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            () = task.stop.cancelled() => return None,
            () = task.wake.notified() => {}
            () = tokio::time::sleep_until(until), if deadline.is_some() => return turn.map(|turn| (batch, turn)),
        }
    }
}
