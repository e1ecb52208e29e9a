//! The `debezium.chii.bangumi.chii_timeline` fan-out: creates go to the global inbox, the
//! author's timeline and the followers' inboxes; deletes leave them; updates drop the item
//! cache; snapshot reads do nothing (server-private `event/timeline.ts`, bangumi-behaviour §2).
//!
//! Unlike server-private, every create/delete is fenced by its `SourcePosition`
//! (docs/architecture.md, "Idempotency"; [`scripts`]), so a replayed create after its delete
//! never resurrects the item. A batch is pipelined: one `MGET` of its authors' follower lists,
//! then its script calls in as few round trips as the key budget allows, in record order. A big
//! author's followers are split into calls of [`Fanout::inboxes_per_call`] inboxes, so no call
//! and no pipeline grows with the follower count.
//!
//! # Where the fences live
//! A fence must outlive every replay of its item's events, so it must not be evicted; the
//! cache Redis may run any eviction policy (`allkeys-lru`). Hence two modes:
//!
//! - **One Redis** (`STATE_REDIS_URI` unset or equal to `REDIS_URI`, the default): the fence is
//!   claimed in the same Lua script that applies the effects, one atomic `EVALSHA` per call,
//!   the fastest; but the fences then share the cache Redis's eviction policy, and an
//!   `allkeys-*` policy can drop one and let an old create come back.
//! - **A state Redis** (`STATE_REDIS_URI` another Redis, `noeviction` with AOF): no script
//!   spans both, so each call goes in three steps, each a pipeline over the batch:
//!   1. *claim* in the state Redis: if the event is newer than the fence, or is the fence's
//!      event and the call is the next one, the fence becomes `{position}#{call}~` (pending)
//!      and the call is applied; a call already pending at the same position is applied again
//!      (its claim was made but its done was never recorded); otherwise it is stale;
//!   2. *apply* the effects-only script in the cache Redis (`ZADD`/`ZREM`/`DEL`, `PUBLISH`);
//!   3. *done* in the state Redis: `{position}#{call}~` → `{position}#{call + 1}`, only if the
//!      fence still holds that claim.
//!
//!   An older event or a redelivery of an applied call finds the fence past it and has no
//!   effect, no `PUBLISH` either. A crash (or an error) after a claim leaves it pending, so the
//!   redelivery applies it again: effects are never lost, and the effects are idempotent, except
//!   the `PUBLISH`, which repeats in that case only. A fan-out cut short resumes at its first
//!   call not done. Calls of the same item go in separate waves (claim → apply → done before
//!   the next claim of that fence), so within a consumer the steps of one fence never
//!   interleave. Positions and TTL (`TIMELINE_FENCE_TTL`) are those of the one-Redis mode,
//!   and so is the `REDIS_KEY_PREFIX` on the fence keys.
//!
//!   The race left: two consumers overlapping on a partition (the old owner lost it but has
//!   not noticed yet). If, between the old owner's claim of an event and its apply (one round
//!   trip to the cache Redis), the new owner claims and applies a *newer* event of the same
//!   item (say its delete), the old owner's older effects land after it and the item comes
//!   back in the cache. It takes a stalled consumer, a rebalance, and both events of one item
//!   inside that window; the old owner's done then finds the fence moved on and logs a warning
//!   naming the fence. With one Redis this cannot happen (claim and apply are one script).
//!
//! # Shadow mode
//! With shadow [`Effects`] the fan-out runs no script and writes nothing (no fence, no set, no
//! follower cache): [`shadow`] decides the same calls read-only and plans what the scripts would
//! do.
//!
//! Switching between the modes starts from the other Redis's fences (none at first): do it
//! with the topic drained, not mid-replay.
//!
//! # Layout
//! - [`plan`]: one change → [`plan::Plan`] (pure).
//! - [`followers`]: follower lists (cache, then `chii_friends`).
//! - [`scripts`]: the Lua scripts (fenced, effects only, claim and done).
//! - `round_trips`: queues the calls and sends them in either mode.
//! - `shadow`: decides the calls read-only and plans their effects (`RUN_MODE=shadow`).
//! - [`Fanout`]: applies a batch.

pub mod followers;
pub mod plan;
mod round_trips;
pub mod scripts;
mod shadow;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use cdc_runtime::shadow::Effects;
use cdc_runtime::sink::redis_error;
use cdc_runtime::{Dependency, Event, HandlerError, Outcome, Record};
use cdc_schemas::ChangeEvent;
use redis::aio::ConnectionManager;
use sqlx::MySqlPool;

use crate::keys;
use plan::{Item, Plan};
use round_trips::{Call, Entry, Op, Queue, RoundTrips};
use scripts::Scripts;

/// Where the fan-out's connections point, named in their failures (logs, `/readyz`).
#[derive(Debug, Clone)]
pub struct Dependencies {
    /// The cache Redis (`REDIS_URI`).
    pub redis: Dependency,
    /// The state Redis (`STATE_REDIS_URI`), if it is another one.
    pub state: Option<Dependency>,
    /// MySQL.
    pub mysql: Dependency,
}

impl Dependencies {
    /// The Redis of the fences: the state Redis, else the cache Redis.
    pub fn state(&self) -> &Dependency {
        self.state.as_ref().unwrap_or(&self.redis)
    }
}

/// The fan-out's settings and connections.
pub struct Fanout {
    /// The cache Redis: inboxes, timelines, item caches, follower lists.
    pub redis: ConnectionManager,
    /// The state Redis, where the fences live when it is not the cache Redis
    /// (`STATE_REDIS_URI`); `None`: fences in the cache Redis, claimed in the effects' script.
    pub state: Option<ConnectionManager>,
    /// MySQL, for `chii_friends`.
    pub mysql: MySqlPool,
    /// `REDIS_KEY_PREFIX`.
    pub prefix: String,
    /// Lifetime of a fence, ≥ the topic's retention.
    pub fence_ttl_seconds: u64,
    /// Inboxes per script call.
    pub inboxes_per_call: usize,
    /// Where `redis`, `state` and `mysql` point.
    pub at: Dependencies,
    scripts: Scripts,
    scripts_loaded: AtomicBool,
    /// Live, or shadow: nothing run, the scripts' effects planned ([`shadow`]).
    effects: Effects,
}

impl Fanout {
    /// A fan-out over these connections (pointing `at`); `state`: a separate state Redis for
    /// the fences.
    pub fn new(
        redis: ConnectionManager,
        state: Option<ConnectionManager>,
        mysql: MySqlPool,
        at: Dependencies,
        prefix: String,
        fence_ttl_seconds: u64,
        inboxes_per_call: usize,
    ) -> Self {
        Self {
            redis,
            state,
            mysql,
            prefix,
            fence_ttl_seconds,
            inboxes_per_call: inboxes_per_call.max(1),
            at,
            scripts: Scripts::default(),
            scripts_loaded: AtomicBool::new(false),
            effects: Effects::live(),
        }
    }

    /// The same fan-out with `effects` (shadow: see the module's "Shadow mode").
    pub fn with_effects(mut self, effects: Effects) -> Self {
        self.effects = effects;
        self
    }

    /// Applies `records` (Debezium changes of one partition, in order).
    pub async fn apply(&self, records: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        let mut outcomes = Vec::with_capacity(records.len());
        let mut plans = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let planned = match &record.event {
                Event::Change(event) => match event.as_ref() {
                    ChangeEvent::Row(change) => plan::plan(change),
                    _ => Ok(Plan::Skip("truncate")),
                },
                Event::Service { .. } => Ok(Plan::Skip("not_a_change")),
            };
            outcomes.push(match planned {
                Ok(Plan::Skip(reason)) => Outcome::Skipped(reason),
                Ok(p) => {
                    plans.push((index, p));
                    Outcome::Applied
                }
                Err(message) => Outcome::Rejected(message),
            });
        }
        if plans.is_empty() {
            return Ok(outcomes);
        }
        if self.effects.is_shadow() {
            self.shadow(records, &plans, &mut outcomes).await?;
            return Ok(outcomes);
        }
        let mut redis = self.redis.clone();
        if !self.scripts_loaded.load(Ordering::Relaxed) {
            self.load_scripts().await?;
            self.scripts_loaded.store(true, Ordering::Relaxed);
        }
        let followers = followers::lookup(
            &mut redis,
            &self.mysql,
            &self.at,
            &self.prefix,
            &authors(&plans),
            true,
        )
        .await?;
        let mut round_trips = RoundTrips::new(&self.scripts, redis, self.state.clone(), &self.at);
        for (index, plan) in &plans {
            self.push(&mut round_trips, *index, plan, &followers)
                .await?;
        }
        // A record is applied if any of its calls was (a redelivery of a fan-out cut short
        // applies only the calls not done), stale if none was.
        let calls = round_trips.finish().await?;
        for &(index, _) in &calls {
            outcomes[index] = Outcome::Stale;
        }
        for &(index, applied) in &calls {
            if applied {
                outcomes[index] = Outcome::Applied;
            }
        }
        Ok(outcomes)
    }

    /// Loads the scripts each Redis runs.
    async fn load_scripts(&self) -> Result<(), HandlerError> {
        let mut cache = self.redis.clone();
        let cache_failed = |e| redis_error(e).at(&self.at.redis);
        match &self.state {
            None => scripts::load(&self.scripts.fenced(), &mut cache)
                .await
                .map_err(cache_failed),
            Some(state) => {
                scripts::load(&self.scripts.effects(), &mut cache)
                    .await
                    .map_err(cache_failed)?;
                scripts::load(&self.scripts.fences(), &mut state.clone())
                    .await
                    .map_err(|e| redis_error(e).at(self.at.state()))
            }
        }
    }

    /// Queues the entries of the record at `index` of its batch, planned `plan`, into `out`.
    async fn push(
        &self,
        out: &mut impl Queue,
        index: usize,
        plan: &Plan,
        followers: &HashMap<u64, Vec<u64>>,
    ) -> Result<(), HandlerError> {
        let p = &self.prefix;
        match plan {
            Plan::Invalidate { tml_id } => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(keys::item(p, *tml_id));
                out.push(Entry::Invalidate(cmd)).await
            }
            Plan::Create(item) => {
                let inboxes = inboxes(item, followers);
                let ttl = self.fence_ttl_seconds.to_string();
                let id = item.tml_id.to_string();
                let channel = keys::create_channel(p);
                let payload = plan::create_payload(item);
                let chunks = chunks(&inboxes, self.inboxes_per_call);
                let last = chunks.len() - 1;
                for (n, chunk) in chunks.into_iter().enumerate() {
                    let mut k = common_keys(p, item);
                    k.push(keys::user_visit(p, item.uid));
                    for uid in chunk {
                        k.push(keys::inbox(p, *uid));
                        k.push(keys::inbox_visit(p, *uid));
                    }
                    let (channel, payload) = if n == last {
                        (channel.as_str(), payload.as_str())
                    } else {
                        ("", "")
                    };
                    let args = vec![
                        item.position.clone(),
                        ttl.clone(),
                        id.clone(),
                        n.to_string(),
                        channel.to_owned(),
                        payload.to_owned(),
                    ];
                    out.push(Entry::Call(Call {
                        owner: index,
                        op: Op::Create,
                        keys: k,
                        args,
                    }))
                    .await?;
                }
                Ok(())
            }
            Plan::Delete { item, item_key_id } => {
                let inboxes = inboxes(item, followers);
                let ttl = self.fence_ttl_seconds.to_string();
                let id = item.tml_id.to_string();
                for (n, chunk) in chunks(&inboxes, self.inboxes_per_call)
                    .into_iter()
                    .enumerate()
                {
                    let mut k = common_keys(p, item);
                    k.push(keys::item(p, *item_key_id));
                    k.extend(chunk.iter().map(|uid| keys::inbox(p, *uid)));
                    let args = vec![
                        item.position.clone(),
                        ttl.clone(),
                        id.clone(),
                        n.to_string(),
                    ];
                    out.push(Entry::Call(Call {
                        owner: index,
                        op: Op::Delete,
                        keys: k,
                        args,
                    }))
                    .await?;
                }
                Ok(())
            }
            Plan::Skip(_) => Ok(()),
        }
    }
}

/// The distinct non-zero authors of `plans`' creates and deletes.
fn authors(plans: &[(usize, Plan)]) -> Vec<u64> {
    plans
        .iter()
        .filter_map(|(_, p)| match p {
            Plan::Create(item) | Plan::Delete { item, .. } => Some(item.uid),
            _ => None,
        })
        .filter(|uid| *uid != 0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Fence, global inbox, author's timeline: the first keys of both scripts.
fn common_keys(prefix: &str, item: &Item) -> Vec<String> {
    vec![
        keys::fence(prefix, item.tml_id),
        keys::inbox(prefix, 0),
        keys::user_timeline(prefix, item.uid),
    ]
}

/// The inboxes an item goes to: its author's followers, then the author, but only when the
/// author has followers (server-private's quirk, docs/bangumi-behaviour.md §2).
fn inboxes(item: &Item, followers: &HashMap<u64, Vec<u64>>) -> Vec<u64> {
    match followers.get(&item.uid) {
        Some(list) if !list.is_empty() => {
            let mut all = Vec::with_capacity(list.len() + 1);
            all.extend_from_slice(list);
            all.push(item.uid);
            all
        }
        _ => Vec::new(),
    }
}

/// `inboxes` in chunks of `size`; always at least one (maybe empty) chunk.
fn chunks(inboxes: &[u64], size: usize) -> Vec<&[u64]> {
    if inboxes.is_empty() {
        vec![&[]]
    } else {
        inboxes.chunks(size).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_author_gets_their_inbox_only_with_followers() {
        let item = Item {
            tml_id: 1,
            uid: 9,
            cat: 1,
            position: String::new(),
        };
        let mut followers = HashMap::new();
        assert!(inboxes(&item, &followers).is_empty());
        followers.insert(9, vec![]);
        assert!(inboxes(&item, &followers).is_empty());
        followers.insert(9, vec![2, 3]);
        assert_eq!(inboxes(&item, &followers), vec![2, 3, 9]);
    }

    #[test]
    fn chunks_split_and_never_vanish() {
        assert_eq!(chunks(&[], 2).len(), 1);
        assert_eq!(chunks(&[1, 2, 3], 2), vec![&[1, 2][..], &[3][..]]);
    }
}
