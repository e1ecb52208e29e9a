//! The fan-out in shadow mode: the calls live mode would send, decided read-only, and the
//! effects their scripts would have planned instead of run.
//!
//! The calls are the live ones ([`super::Fanout`] queues them into a `Vec` instead of the round
//! trips). What the scripts read is read with one pipeline of plain reads: the fences (`MGET`, in
//! the state Redis if there is one), the visit keys (`MGET`) and Redis's clock (`TIME`). Each
//! call is then decided as [`super::scripts`] decides it, in record order, against the fences
//! as the batch's earlier calls would have left them: a call whose event is not newer than its
//! fence (nor the fence's event's next call) is stale and has no effect, and a record whose
//! calls are all stale is [`Outcome::Stale`], as live. A call that applies is planned as the
//! commands its script runs, keys with `REDIS_KEY_PREFIX`:
//! - the fence's `set` (`{position}#{calls}`, `EX`, TTL: the value a done call leaves);
//! - create: `zadd` of the global inbox (first call), and of the author's timeline and each
//!   inbox whose visit key holds a future expiry, each followed by its `expire`, args
//!   `[score, member]` (both the `tml_id`); the `publish` on the create channel with its payload
//!   (last call);
//! - delete: `zrem` of the global inbox, the author's timeline and each inbox, `del` of the item
//!   cache;
//! - update: the item cache's `del` (unfenced).
//!
//! Nothing is written: no script, fence or set, and the follower lists read from
//! `chii_friends` are not cached. The legacy worker writes meanwhile, but not the fences (they
//! are the fleet's): a shadow decides staleness against the fences the fleet's live worker left,
//! none before it runs.

use std::collections::{BTreeSet, HashMap};

use cdc_runtime::shadow::{Effect, redis_effects};
use cdc_runtime::sink::redis_error;
use cdc_runtime::{HandlerError, Outcome, Record};

use super::round_trips::{Call, Entry, Op};
use super::{Fanout, authors, followers};
use crate::fanout::plan::Plan;

/// Keys per `MGET` of the reads.
const KEYS_PER_MGET: usize = 1000;

impl Fanout {
    /// Decides `plans` (each with its record's index in `records`) read-only, plans their
    /// effects, and sets the `outcomes` of the fenced ones (applied, or stale).
    pub(super) async fn shadow(
        &self,
        records: &[Record],
        plans: &[(usize, Plan)],
        outcomes: &mut [Outcome],
    ) -> Result<(), HandlerError> {
        let mut redis = self.redis.clone();
        let followers = followers::lookup(
            &mut redis,
            &self.mysql,
            &self.at,
            &self.prefix,
            &authors(plans),
            false,
        )
        .await?;
        let mut queued = Vec::with_capacity(plans.len());
        for (index, plan) in plans {
            let mut entries: Vec<Entry> = Vec::new();
            self.push(&mut entries, *index, plan, &followers).await?;
            queued.push((*index, entries));
        }
        let calls = || {
            queued
                .iter()
                .flat_map(|(_, entries)| entries)
                .filter_map(|e| match e {
                    Entry::Call(call) => Some(call),
                    Entry::Invalidate(_) => None,
                })
        };
        let fence_keys: BTreeSet<&str> = calls().map(Call::fence).collect();
        let visit_keys: BTreeSet<&str> = calls().flat_map(visit_keys).collect();
        let mut reads = Reads {
            fences: self.read_fences(fence_keys).await?,
            ..self.read_visits(visit_keys).await?
        };

        let mut applied = Vec::new();
        for (index, entries) in &queued {
            let mut effects = Vec::new();
            for entry in entries {
                match entry {
                    Entry::Invalidate(cmd) => {
                        let mut pipe = redis::pipe();
                        pipe.add_command(cmd.clone());
                        effects.extend(redis_effects(&pipe));
                    }
                    Entry::Call(call) => {
                        let claimed = reads.claim(call);
                        applied.push((*index, claimed));
                        if claimed {
                            reads.effects(call, &mut effects);
                        }
                    }
                }
            }
            self.effects
                .plan(std::slice::from_ref(&records[*index]), effects);
        }
        for &(index, _) in &applied {
            outcomes[index] = Outcome::Stale;
        }
        for &(index, claimed) in &applied {
            if claimed {
                outcomes[index] = Outcome::Applied;
            }
        }
        Ok(())
    }

    /// The fences' values, read where the scripts keep them.
    async fn read_fences(
        &self,
        keys: BTreeSet<&str>,
    ) -> Result<HashMap<String, String>, HandlerError> {
        let keys: Vec<&str> = keys.into_iter().collect();
        let (mut redis, at) = match &self.state {
            Some(state) => (state.clone(), self.at.state()),
            None => (self.redis.clone(), &self.at.redis),
        };
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(KEYS_PER_MGET) {
            pipe.cmd("MGET").arg(chunk);
        }
        let values: Vec<Vec<Option<String>>> = if keys.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut redis)
                .await
                .map_err(|e| redis_error(e).at(at))?
        };
        Ok(keys
            .into_iter()
            .zip(values.into_iter().flatten())
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect())
    }

    /// The visit keys' expiries and Redis's clock (unix seconds), from the cache Redis.
    async fn read_visits(&self, keys: BTreeSet<&str>) -> Result<Reads, HandlerError> {
        let keys: Vec<&str> = keys.into_iter().collect();
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for chunk in keys.chunks(KEYS_PER_MGET) {
            pipe.cmd("MGET").arg(chunk);
        }
        let (time, values): ((u64, u64), Vec<Vec<Option<String>>>) = {
            let mut replies: Vec<redis::Value> = pipe
                .query_async(&mut self.redis.clone())
                .await
                .map_err(|e| redis_error(e).at(&self.at.redis))?;
            let time = redis::from_redis_value(replies.remove(0))
                .map_err(|e| redis_error(e.into()).at(&self.at.redis))?;
            let values = replies
                .into_iter()
                .map(redis::from_redis_value)
                .collect::<Result<_, _>>()
                .map_err(|e| redis_error(e.into()).at(&self.at.redis))?;
            (time, values)
        };
        Ok(Reads {
            now: time.0 as f64,
            expiries: keys
                .into_iter()
                .zip(values.into_iter().flatten())
                .filter_map(|(key, value)| {
                    // Lua's `tonumber`: no `inf` or `nan` (hex aside, never written).
                    let expiry = value?.trim().parse::<f64>().ok()?;
                    expiry.is_finite().then(|| (key.to_owned(), expiry))
                })
                .collect(),
            fences: HashMap::new(),
        })
    }
}

/// What the scripts would read, and the fences as the batch's earlier calls leave them.
struct Reads {
    /// Redis's clock, unix seconds (`TIME`).
    now: f64,
    /// Visit key → expiry (unix seconds), for keys holding a number.
    expiries: HashMap<String, f64>,
    /// Fence key → value, for fences that exist.
    fences: HashMap<String, String>,
}

impl Reads {
    /// Whether `call` claims its fence ([`super::scripts`]'s `CLAIM`, or `CLAIM_PENDING` ≠ 0);
    /// if it does, the fence as the call leaves it once done.
    fn claim(&mut self, call: &Call) -> bool {
        let (position, index) = (&call.args[0], call_index(call));
        if let Some(fence) = self.fences.get(call.fence())
            && !claims(fence, position, index)
        {
            return false;
        }
        self.fences
            .insert(call.fence().to_owned(), done(position, index));
        true
    }

    /// The effects of a claimed `call`, in the order its script has them.
    fn effects(&self, call: &Call, out: &mut Vec<Effect>) {
        let [position, ttl, id] = [&call.args[0], &call.args[1], &call.args[2]];
        out.push(command(
            "set",
            call.fence(),
            [done(position, call_index(call)), "EX".into(), ttl.clone()],
        ));
        let keys = &call.keys[1..];
        match call.op {
            Op::Create => {
                if call_index(call) == 0 {
                    out.push(command("zadd", &keys[0], [id.clone(), id.clone()]));
                    self.add_if_visited(&keys[1], &keys[2], id, out);
                }
                for pair in keys[3..].chunks(2) {
                    if let [inbox, visit] = pair {
                        self.add_if_visited(inbox, visit, id, out);
                    }
                }
                if let (Some(channel), Some(payload)) = (call.args.get(4), call.args.get(5))
                    && !channel.is_empty()
                {
                    out.push(command("publish", channel, [payload.clone()]));
                }
            }
            Op::Delete => {
                for set in [&keys[0], &keys[1]].into_iter().chain(&keys[3..]) {
                    out.push(command("zrem", set, [id.clone()]));
                }
                out.push(command("del", &keys[2], []));
            }
        }
    }

    /// The create script's `add_if_visited`: `ZADD` and `EXPIRE` `key` if `visit` holds a
    /// future expiry.
    fn add_if_visited(&self, key: &str, visit: &str, id: &str, out: &mut Vec<Effect>) {
        if let Some(expiry) = self.expiries.get(visit).filter(|e| **e > self.now) {
            out.push(command("zadd", key, [id.to_owned(), id.to_owned()]));
            let seconds = (expiry - self.now).ceil() as i64;
            out.push(command("expire", key, [seconds.to_string()]));
        }
    }
}

/// The visit keys a create call's script reads (user visit, then each inbox's).
fn visit_keys(call: &Call) -> Vec<&str> {
    match call.op {
        Op::Create => {
            let keys = &call.keys[1..];
            std::iter::once(&keys[2])
                .chain(keys[3..].iter().skip(1).step_by(2))
                .map(String::as_str)
                .collect()
        }
        Op::Delete => Vec::new(),
    }
}

fn call_index(call: &Call) -> u64 {
    call.args[3].parse().unwrap_or(0)
}

/// The fence a done call leaves: `{position}#{call + 1}`.
fn done(position: &str, call: u64) -> String {
    format!("{position}#{}", call + 1)
}

/// Whether a call (`position`, `call`) applies against the existing `fence`
/// (`{position}#{done}`, `~` after it while pending; a bare position counts as all done).
fn claims(fence: &str, position: &str, call: u64) -> bool {
    let bare = fence.strip_suffix('~').unwrap_or(fence);
    let (at, calls_done) = match bare.rsplit_once('#') {
        Some((at, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (at, n.parse().unwrap_or(u64::MAX))
        }
        _ => (fence, call + 1),
    };
    !(at > position || (at == position && calls_done > call))
}

fn command<const N: usize>(kind: &str, key: &str, args: [String; N]) -> Effect {
    Effect {
        kind: kind.into(),
        key: Some(key.into()),
        args: args.into(),
        value: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_claims_as_the_scripts_decide() {
        // Older event, or this event's call already done: stale.
        assert!(!claims("0002#1", "0001", 0));
        assert!(!claims("0001#1", "0001", 0));
        // Newer event; this event's next call; a pending call again.
        assert!(claims("0001#1", "0002", 0));
        assert!(claims("0001#1", "0001", 1));
        assert!(claims("0001#1~", "0001", 1));
        // A bare position counts as the event all done.
        assert!(!claims("0001", "0001", 3));
        assert!(claims("0001", "0002", 0));
    }

    #[test]
    fn a_create_plans_its_scripts_commands() {
        let call = Call {
            owner: 0,
            op: Op::Create,
            keys: [
                "f",
                "inbox:0",
                "user:1",
                "visit:user:1",
                "inbox:2",
                "visit:2",
                "inbox:3",
                "visit:3",
            ]
            .map(String::from)
            .to_vec(),
            args: ["0009", "60", "7", "0", "chan", "{}"]
                .map(String::from)
                .to_vec(),
        };
        assert_eq!(visit_keys(&call), ["visit:user:1", "visit:2", "visit:3"]);
        let mut reads = Reads {
            now: 100.0,
            expiries: [("visit:2".to_owned(), 150.5), ("visit:3".to_owned(), 90.0)].into(),
            fences: HashMap::new(),
        };
        assert!(reads.claim(&call));
        let mut effects = Vec::new();
        reads.effects(&call, &mut effects);
        let shown: Vec<String> = effects.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "set f 0009#1 EX 60",
                "zadd inbox:0 7 7",
                "zadd inbox:2 7 7",
                "expire inbox:2 51",
                "publish chan {}",
            ]
        );
        // The same call again in the batch: stale.
        assert!(!reads.claim(&call));
    }
}
