//! The Lua scripts that apply a timeline item's mutations behind its fence, and the `EVALSHA`
//! commands that call them.
//!
//! A fence (`tml:fence:{id}`) holds the position of the last event applied to the item and how
//! many of that event's calls (chunks of a large fan-out) are done, `{position}#{calls}`; while
//! a call is being applied in a separate cache Redis it is `{position}#{call}~` (pending, see
//! [`super`] for when). A call applies only when its event is newer than the fence, or is the
//! fence's event and the next call of it; otherwise it changes nothing and returns 0. So an
//! older event is stale, and a redelivery of an applied event (a retry, a crash before the
//! commit, a replay) has no effect at all — no `PUBLISH` either — while a fan-out cut short
//! by a crash resumes at its first call not done. A pending call counts as not done: its
//! redelivery applies it (again).
//!
//! Positions are `SourcePosition::to_key()` strings: fixed-width ASCII digits, so Lua's string
//! comparison is the position order.
//!
//! Visit keys are read inside the script (one `MGET` per call), against Redis's own clock
//! (`TIME`): only a future expiry counts, and the set then expires with it
//! (`EXPIRE key expiry-now`).
//!
//! # Layout
//! - [`Scripts::create`], [`Scripts::delete`]: fence and effects in one script, for fences in
//!   the cache Redis (the default).
//! - [`Scripts::claim`], [`Scripts::done`]: the fence alone, in the state Redis;
//!   [`Scripts::create_effects`], [`Scripts::delete_effects`]: the effects alone, in the cache
//!   Redis, between the two.
//! - [`evalsha`], [`load`]: calling and loading them.

use redis::{Cmd, Script};

/// The fence check and claim the fenced scripts open with. KEYS[1]: fence. ARGV[1]: position,
/// ARGV[2]: fence TTL seconds, ARGV[4]: the call's index among its event's calls (0, 1, …).
/// Sets `o`, the index of the last key before the effects' keys.
const CLAIM: &str = r#"
local fence = redis.call('GET', KEYS[1])
local call = tonumber(ARGV[4])
if fence then
  local at, done = string.match(fence, '^(.*)#(%d+)~?$')
  if not at then at, done = fence, call + 1 end
  if at > ARGV[1] or (at == ARGV[1] and tonumber(done) > call) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. (call + 1), 'EX', ARGV[2])
local o = 1
"#;

/// The opening of the effects-only scripts: no fence key; the same ARGV as the fenced ones.
const NO_CLAIM: &str = r#"
local call = tonumber(ARGV[4])
local o = 0
"#;

/// op `c`, after [`CLAIM`] or [`NO_CLAIM`]. KEYS after `o`: global inbox, user timeline, user
/// visit, then (inbox, inbox visit) pairs. ARGV: position, fence TTL seconds, tml_id, call
/// index (the first call adds to the global inbox and the user timeline), channel ("" except
/// on the last call), payload.
const CREATE: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local id = ARGV[3]
local function add_if_visited(key, expiry)
  if expiry and expiry > now then
    redis.call('ZADD', key, id, id)
    redis.call('EXPIRE', key, math.ceil(expiry - now))
  end
end
if call == 0 then
  redis.call('ZADD', KEYS[o + 1], id, id)
  add_if_visited(KEYS[o + 2], tonumber(redis.call('GET', KEYS[o + 3])))
end
local visits = {}
for i = o + 5, #KEYS, 2 do visits[#visits + 1] = KEYS[i] end
if #visits > 0 then
  local expiries = redis.call('MGET', unpack(visits))
  for j = 1, #visits do add_if_visited(KEYS[o + 2 + 2 * j], tonumber(expiries[j])) end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
"#;

/// op `d`, after [`CLAIM`] or [`NO_CLAIM`]. KEYS after `o`: global inbox, user timeline, item
/// cache, then inboxes. ARGV: position, fence TTL seconds, tml_id, call index.
const DELETE: &str = r#"
redis.call('ZREM', KEYS[o + 1], ARGV[3])
redis.call('ZREM', KEYS[o + 2], ARGV[3])
for i = o + 4, #KEYS do redis.call('ZREM', KEYS[i], ARGV[3]) end
redis.call('DEL', KEYS[o + 3])
return 1
"#;

/// The claim of a call in the state Redis: [`CLAIM`]'s check, but the call is left pending
/// (`{position}#{call}~`) until [`DONE`]. KEYS[1]: fence. ARGV: position, fence TTL seconds,
/// call index. Returns 0 (stale: done, or an older event), 1 (claimed) or 2 (the same call was
/// already pending: a crash or an error came between its claim and its done; apply it again).
const CLAIM_PENDING: &str = r#"
local fence = redis.call('GET', KEYS[1])
local call = tonumber(ARGV[3])
if fence then
  local at, done, pending = string.match(fence, '^(.*)#(%d+)(~?)$')
  if not at then at, done, pending = fence, call + 1, '' end
  done = tonumber(done)
  if at > ARGV[1] or (at == ARGV[1] and done > call) then return 0 end
  if at == ARGV[1] and done == call and pending == '~' then return 2 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. call .. '~', 'EX', ARGV[2])
return 1
"#;

/// The end of a call claimed by [`CLAIM_PENDING`], once its effects are applied: pending →
/// done, if the fence still holds this claim. KEYS[1]: fence. ARGV: position, fence TTL
/// seconds, call index. Returns 1, or 0 when the fence moved on meanwhile (another consumer
/// claimed a newer event of the item: the race [`super`] describes).
const DONE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '#' .. ARGV[3] .. '~' then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. (tonumber(ARGV[3]) + 1), 'EX', ARGV[2])
return 1
"#;

/// The loaded scripts.
pub struct Scripts {
    /// [`CLAIM`], then [`CREATE`].
    pub create: Script,
    /// [`CLAIM`], then [`DELETE`].
    pub delete: Script,
    /// [`CREATE`] alone.
    pub create_effects: Script,
    /// [`DELETE`] alone.
    pub delete_effects: Script,
    /// [`CLAIM_PENDING`].
    pub claim: Script,
    /// [`DONE`].
    pub done: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            create: Script::new(&format!("{CLAIM}{CREATE}")),
            delete: Script::new(&format!("{CLAIM}{DELETE}")),
            create_effects: Script::new(&format!("{NO_CLAIM}{CREATE}")),
            delete_effects: Script::new(&format!("{NO_CLAIM}{DELETE}")),
            claim: Script::new(CLAIM_PENDING),
            done: Script::new(DONE),
        }
    }
}

impl Scripts {
    /// The fenced scripts, for fences in the cache Redis.
    pub fn fenced(&self) -> [&Script; 2] {
        [&self.create, &self.delete]
    }

    /// The effects-only scripts, for the cache Redis when fences live in the state Redis.
    pub fn effects(&self) -> [&Script; 2] {
        [&self.create_effects, &self.delete_effects]
    }

    /// The fence scripts, for the state Redis.
    pub fn fences(&self) -> [&Script; 2] {
        [&self.claim, &self.done]
    }
}

/// `EVALSHA sha numkeys keys… args…`.
pub fn evalsha<A: redis::ToRedisArgs>(script: &Script, keys: &[String], args: &[A]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

/// `SCRIPT LOAD` of `scripts` (after a `NOSCRIPT`, or at the first batch).
pub async fn load(
    scripts: &[&Script],
    redis: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<()> {
    for script in scripts {
        script.load_async(redis).await?;
    }
    Ok(())
}
