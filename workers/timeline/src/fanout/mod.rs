//! The `debezium.chii.bangumi.chii_timeline` fan-out: creates go to the global inbox, the
//! author's timeline and the followers' inboxes; deletes leave them; updates drop the item
//! cache; snapshot reads do nothing (server-private `event/timeline.ts`, reference §2).
//!
//! Unlike server-private, every create/delete is fenced by its `SourcePosition` in the Lua
//! script that applies it (DESIGN §4), so a replayed create after its delete never resurrects
//! the item. A batch is pipelined: one `MGET` of its authors' follower lists, then its script
//! calls in as few round trips as the key budget allows, in record order. A big author's
//! followers are split into calls of [`Fanout::inboxes_per_call`] inboxes, so no call and no
//! pipeline grows with the follower count.
//!
//! # Layout
//! - [`plan`]: one change → [`plan::Plan`] (pure).
//! - [`followers`]: follower lists (cache, then `chii_friends`).
//! - [`scripts`]: the fenced Lua scripts.
//! - [`Fanout`]: applies a batch.

pub mod followers;
pub mod plan;
pub mod scripts;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use cdc_runtime::sink::redis_error;
use cdc_runtime::{Event, HandlerError, Outcome, Record};
use cdc_schemas::ChangeEvent;
use redis::aio::ConnectionManager;
use sqlx::MySqlPool;

use crate::keys;
use plan::{Item, Plan};
use scripts::{Scripts, evalsha};

/// Keys sent per pipeline round trip before it is flushed.
const KEYS_PER_ROUND_TRIP: usize = 50_000;

/// The fan-out's settings and connections.
pub struct Fanout {
    /// Redis.
    pub redis: ConnectionManager,
    /// MySQL, for `chii_friends`.
    pub mysql: MySqlPool,
    /// `REDIS_KEY_PREFIX`.
    pub prefix: String,
    /// Lifetime of a fence, ≥ the topic's retention.
    pub fence_ttl_seconds: u64,
    /// Inboxes per script call.
    pub inboxes_per_call: usize,
    scripts: Scripts,
    scripts_loaded: AtomicBool,
}

impl Fanout {
    /// A fan-out over these connections.
    pub fn new(
        redis: ConnectionManager,
        mysql: MySqlPool,
        prefix: String,
        fence_ttl_seconds: u64,
        inboxes_per_call: usize,
    ) -> Self {
        Self {
            redis,
            mysql,
            prefix,
            fence_ttl_seconds,
            inboxes_per_call: inboxes_per_call.max(1),
            scripts: Scripts::default(),
            scripts_loaded: AtomicBool::new(false),
        }
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
        let mut redis = self.redis.clone();
        if !self.scripts_loaded.load(Ordering::Relaxed) {
            scripts::load(&self.scripts, &mut redis)
                .await
                .map_err(redis_error)?;
            self.scripts_loaded.store(true, Ordering::Relaxed);
        }
        let authors: Vec<u64> = plans
            .iter()
            .filter_map(|(_, p)| match p {
                Plan::Create(item) | Plan::Delete { item, .. } => Some(item.uid),
                _ => None,
            })
            .filter(|uid| *uid != 0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let followers = followers::lookup(&mut redis, &self.mysql, &self.prefix, &authors).await?;
        let mut round_trips = RoundTrips::new(self, redis);
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

    async fn push(
        &self,
        out: &mut RoundTrips<'_>,
        index: usize,
        plan: &Plan,
        followers: &HashMap<u64, Vec<u64>>,
    ) -> Result<(), HandlerError> {
        let p = &self.prefix;
        match plan {
            Plan::Invalidate { tml_id } => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(keys::item(p, *tml_id));
                out.push(cmd, 1, None).await
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
                    let call = n.to_string();
                    let args = [item.position.as_str(), &ttl, &id, &call, channel, payload];
                    let cmd = evalsha(&self.scripts.create, &k, &args);
                    out.push(cmd, k.len(), Some(index)).await?;
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
                    let call = n.to_string();
                    let args = [item.position.as_str(), &ttl, &id, &call];
                    let cmd = evalsha(&self.scripts.delete, &k, &args);
                    out.push(cmd, k.len(), Some(index)).await?;
                }
                Ok(())
            }
            Plan::Skip(_) => Ok(()),
        }
    }
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
/// author has followers (server-private's quirk, reference §11.5).
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

/// Script calls queued into pipelines, flushed when their keys exceed the budget; remembers
/// which record each reply belongs to.
struct RoundTrips<'a> {
    fanout: &'a Fanout,
    redis: ConnectionManager,
    commands: Vec<redis::Cmd>,
    owners: Vec<Option<usize>>,
    keys: usize,
    results: Vec<(usize, bool)>,
}

impl<'a> RoundTrips<'a> {
    fn new(fanout: &'a Fanout, redis: ConnectionManager) -> Self {
        Self {
            fanout,
            redis,
            commands: Vec::new(),
            owners: Vec::new(),
            keys: 0,
            results: Vec::new(),
        }
    }

    /// Queues `cmd` (with `keys` keys); `owner` = the record whose outcome its reply counts for.
    async fn push(
        &mut self,
        cmd: redis::Cmd,
        keys: usize,
        owner: Option<usize>,
    ) -> Result<(), HandlerError> {
        self.commands.push(cmd);
        self.owners.push(owner);
        self.keys += keys;
        if self.keys >= KEYS_PER_ROUND_TRIP {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), HandlerError> {
        if self.commands.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for cmd in &self.commands {
            pipe.add_command(cmd.clone());
        }
        let replies: Vec<i64> = match pipe.query_async(&mut self.redis).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis lost the scripts (restart, SCRIPT FLUSH): load and send again; every
                // call is idempotent at its own position.
                scripts::load(&self.fanout.scripts, &mut self.redis)
                    .await
                    .map_err(redis_error)?;
                pipe.query_async(&mut self.redis)
                    .await
                    .map_err(redis_error)?
            }
            other => other.map_err(redis_error)?,
        };
        for (owner, reply) in self.owners.iter().zip(replies) {
            if let Some(index) = owner {
                self.results.push((*index, reply == 1));
            }
        }
        self.commands.clear();
        self.owners.clear();
        self.keys = 0;
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<(usize, bool)>, HandlerError> {
        self.flush().await?;
        Ok(self.results)
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
