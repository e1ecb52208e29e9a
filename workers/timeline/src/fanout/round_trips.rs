//! A batch's script calls, sent in as few round trips as their order allows, with the fences
//! either beside the effects (one Redis, one atomic script per call) or in the state Redis
//! (claim, apply, done: three pipelines per wave).
//!
//! Not here: what the calls are (the fan-out's plan) or what the scripts do ([`super::scripts`]).
//!
//! # Layout
//! - [`Entry`], [`Call`], [`Op`]: what is queued.
//! - [`RoundTrips`]: queues entries, flushes them, and remembers which record each reply
//!   belongs to; [`RoundTrips::flush`] picks [`RoundTrips::flush_atomic`] or
//!   [`RoundTrips::flush_claimed`].

use std::collections::HashSet;

use cdc_runtime::sink::redis_error;
use cdc_runtime::{Dependency, HandlerError};
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Pipeline, Script};

use super::Dependencies;
use super::scripts::{self, Scripts, evalsha};

/// Keys sent per pipeline round trip before it is flushed.
const KEYS_PER_ROUND_TRIP: usize = 50_000;

/// Where the fan-out queues a record's entries: the [`RoundTrips`] (live), or a `Vec` the
/// shadow decides on (`super::shadow`).
pub trait Queue {
    /// Queues `entry`.
    async fn push(&mut self, entry: Entry) -> Result<(), HandlerError>;
}

impl Queue for Vec<Entry> {
    async fn push(&mut self, entry: Entry) -> Result<(), HandlerError> {
        Vec::push(self, entry);
        Ok(())
    }
}

impl Queue for RoundTrips<'_> {
    async fn push(&mut self, entry: Entry) -> Result<(), HandlerError> {
        RoundTrips::push(self, entry).await
    }
}

/// One queued command.
pub enum Entry {
    /// An unfenced command (an update's `DEL` of the item cache).
    Invalidate(redis::Cmd),
    /// A fenced script call.
    Call(Call),
}

/// Which script a call runs.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Create,
    Delete,
}

/// One fenced script call of a record.
pub struct Call {
    /// The record (index in its batch) whose outcome the call counts for.
    pub owner: usize,
    pub op: Op,
    /// The fence first, then the effects' keys.
    pub keys: Vec<String>,
    /// Position, fence TTL seconds, tml_id, call index, then the op's own (channel, payload).
    pub args: Vec<String>,
}

impl Call {
    /// The fence's key.
    pub fn fence(&self) -> &str {
        &self.keys[0]
    }

    /// The arguments of the state Redis's fence scripts: position, fence TTL, call index.
    fn fence_args(&self) -> [&str; 3] {
        [&self.args[0], &self.args[1], &self.args[3]]
    }
}

/// Script calls queued into pipelines, flushed when their keys exceed the budget (or, with a
/// state Redis, when an item comes twice); remembers which record each reply belongs to.
pub struct RoundTrips<'a> {
    scripts: &'a Scripts,
    /// Where `cache` and `state` point.
    at: &'a Dependencies,
    cache: ConnectionManager,
    /// `None`: the fences are in the cache Redis.
    state: Option<ConnectionManager>,
    entries: Vec<Entry>,
    /// The fences of the queued calls (state Redis only: one call per item per wave).
    fences: HashSet<String>,
    keys: usize,
    results: Vec<(usize, bool)>,
}

impl<'a> RoundTrips<'a> {
    /// Round trips to `cache`, with the fences in `state` if given; `at`: where they point.
    pub fn new(
        scripts: &'a Scripts,
        cache: ConnectionManager,
        state: Option<ConnectionManager>,
        at: &'a Dependencies,
    ) -> Self {
        Self {
            scripts,
            at,
            cache,
            state,
            entries: Vec::new(),
            fences: HashSet::new(),
            keys: 0,
            results: Vec::new(),
        }
    }

    /// Queues `entry`.
    pub async fn push(&mut self, entry: Entry) -> Result<(), HandlerError> {
        let keys = match &entry {
            Entry::Invalidate(_) => 1,
            Entry::Call(call) => call.keys.len(),
        };
        if self.state.is_some()
            && let Entry::Call(call) = &entry
            && !self.fences.insert(call.fence().to_owned())
        {
            // A claim must follow the previous call's done on the same fence.
            self.flush().await?;
            self.fences.insert(call.fence().to_owned());
        }
        self.entries.push(entry);
        self.keys += keys;
        if self.keys >= KEYS_PER_ROUND_TRIP {
            self.flush().await?;
        }
        Ok(())
    }

    /// Flushes what is queued; returns (record index, applied) for every call, in order.
    pub async fn finish(mut self) -> Result<Vec<(usize, bool)>, HandlerError> {
        self.flush().await?;
        Ok(self.results)
    }

    async fn flush(&mut self) -> Result<(), HandlerError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.entries);
        match self.state.clone() {
            None => self.flush_atomic(&entries).await?,
            Some(state) => self.flush_claimed(&entries, state).await?,
        }
        self.fences.clear();
        self.keys = 0;
        Ok(())
    }

    /// One pipeline to the cache Redis: each call claims its fence and applies its effects in
    /// one script.
    async fn flush_atomic(&mut self, entries: &[Entry]) -> Result<(), HandlerError> {
        let mut pipe = redis::pipe();
        let mut owners = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                Entry::Invalidate(cmd) => {
                    pipe.add_command(cmd.clone());
                    owners.push(None);
                }
                Entry::Call(call) => {
                    let script = match call.op {
                        Op::Create => &self.scripts.create,
                        Op::Delete => &self.scripts.delete,
                    };
                    pipe.add_command(evalsha(script, &call.keys, &call.args));
                    owners.push(Some(call.owner));
                }
            }
        }
        let replies: Vec<i64> = query(
            &pipe,
            &mut self.cache,
            &self.at.redis,
            &self.scripts.fenced(),
        )
        .await?;
        for (owner, reply) in owners.into_iter().zip(replies) {
            if let Some(index) = owner {
                self.results.push((index, reply == 1));
            }
        }
        Ok(())
    }

    /// Three pipelines: the calls' claims in the state Redis, the claimed calls' effects (and
    /// the invalidations) in the cache Redis, their done in the state Redis. The queue holds
    /// at most one call per fence, so each fence goes claim → apply → done.
    async fn flush_claimed(
        &mut self,
        entries: &[Entry],
        mut state: ConnectionManager,
    ) -> Result<(), HandlerError> {
        let calls: Vec<&Call> = entries
            .iter()
            .filter_map(|entry| match entry {
                Entry::Call(call) => Some(call),
                Entry::Invalidate(_) => None,
            })
            .collect();
        let claims: Vec<i64> = if calls.is_empty() {
            Vec::new()
        } else {
            let mut pipe = redis::pipe();
            for call in &calls {
                let fence = [call.fence().to_owned()];
                pipe.add_command(evalsha(&self.scripts.claim, &fence, &call.fence_args()));
            }
            query(&pipe, &mut state, self.at.state(), &self.scripts.fences()).await?
        };

        let mut pipe = redis::pipe();
        let mut queued = 0;
        let mut claims_left = claims.iter();
        for entry in entries {
            match entry {
                Entry::Invalidate(cmd) => {
                    pipe.add_command(cmd.clone()).ignore();
                    queued += 1;
                }
                Entry::Call(call) => {
                    let claim = claims_left.next().copied().unwrap_or(0);
                    if claim == 2 {
                        tracing::info!(
                            fence = call.fence(),
                            position = %call.args[0],
                            call = %call.args[3],
                            "applying again a call claimed but never marked done (a crash or an error came between)"
                        );
                    }
                    if claim != 0 {
                        let script = match call.op {
                            Op::Create => &self.scripts.create_effects,
                            Op::Delete => &self.scripts.delete_effects,
                        };
                        pipe.add_command(evalsha(script, &call.keys[1..], &call.args))
                            .ignore();
                        queued += 1;
                    }
                }
            }
        }
        if queued > 0 {
            let () = query(
                &pipe,
                &mut self.cache,
                &self.at.redis,
                &self.scripts.effects(),
            )
            .await?;
        }

        let claimed: Vec<&Call> = calls
            .iter()
            .zip(&claims)
            .filter(|(_, claim)| **claim != 0)
            .map(|(call, _)| *call)
            .collect();
        if !claimed.is_empty() {
            let mut pipe = redis::pipe();
            for call in &claimed {
                let fence = [call.fence().to_owned()];
                pipe.add_command(evalsha(&self.scripts.done, &fence, &call.fence_args()));
            }
            let done: Vec<i64> =
                query(&pipe, &mut state, self.at.state(), &self.scripts.fences()).await?;
            for (call, done) in claimed.iter().zip(done) {
                if done == 0 {
                    tracing::warn!(
                        fence = call.fence(),
                        position = %call.args[0],
                        call = %call.args[3],
                        "the fence moved on while this call was applied: another consumer applied a newer event of the item meanwhile (a lost partition), the older effects may have landed after it"
                    );
                }
            }
        }
        for (call, claim) in calls.iter().zip(claims) {
            self.results.push((call.owner, claim != 0));
        }
        Ok(())
    }
}

/// Sends `pipe` to `redis` (which is `at`); if Redis lost the scripts (restart, `SCRIPT
/// FLUSH`), loads `scripts` and sends it again (every call is idempotent at its own position).
async fn query<T: FromRedisValue>(
    pipe: &Pipeline,
    redis: &mut ConnectionManager,
    at: &Dependency,
    scripts: &[&Script],
) -> Result<T, HandlerError> {
    let failed = |e| redis_error(e).at(at);
    match pipe.query_async(redis).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            scripts::load(scripts, redis).await.map_err(failed)?;
            pipe.query_async(redis).await.map_err(failed)
        }
        other => other.map_err(failed),
    }
}
