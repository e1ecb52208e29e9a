//! The two Lua scripts that apply a timeline item's mutations atomically behind its fence,
//! and the `EVALSHA` commands that call them.
//!
//! Each call first claims the item's fence (`tml:fence:{id}`): its value is the position of the
//! last event applied and how many of that event's calls (chunks of a large fan-out) are done,
//! `{position}#{calls}`. A call applies only when its event is newer than the fence, or is the
//! fence's event and the next call of it; otherwise it changes nothing and returns 0. So an
//! older event is stale, and a redelivery of an applied event (a retry, a crash before the
//! commit, a replay) has no effect at all — no `PUBLISH` either — while a fan-out cut short
//! by a crash resumes at its first call not done.
//!
//! Positions are `SourcePosition::to_key()` strings: fixed-width ASCII digits, so Lua's string
//! comparison is the position order.
//!
//! Visit keys are read inside the script (one `MGET` per call), against Redis's own clock
//! (`TIME`): only a future expiry counts, and the set then expires with it
//! (`EXPIRE key expiry-now`).

use redis::{Cmd, Script};

/// The fence claim both scripts open with. KEYS[1]: fence. ARGV[1]: position, ARGV[2]: fence
/// TTL seconds, ARGV[4]: the call's index among its event's calls (0, 1, …).
const CLAIM: &str = r#"
local fence = redis.call('GET', KEYS[1])
local call = tonumber(ARGV[4])
if fence then
  local at, done = string.match(fence, '^(.*)#(%d+)$')
  if not at then at, done = fence, call + 1 end
  if at > ARGV[1] or (at == ARGV[1] and tonumber(done) > call) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. (call + 1), 'EX', ARGV[2])
"#;

/// op `c`, after [`CLAIM`]. KEYS: fence, global inbox, user timeline, user visit, then (inbox,
/// inbox visit) pairs. ARGV: position, fence TTL seconds, tml_id, call index (the first call
/// adds to the global inbox and the user timeline), channel ("" except on the last call),
/// payload.
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
  redis.call('ZADD', KEYS[2], id, id)
  add_if_visited(KEYS[3], tonumber(redis.call('GET', KEYS[4])))
end
local visits = {}
for i = 6, #KEYS, 2 do visits[#visits + 1] = KEYS[i] end
if #visits > 0 then
  local expiries = redis.call('MGET', unpack(visits))
  for j = 1, #visits do add_if_visited(KEYS[3 + 2 * j], tonumber(expiries[j])) end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
"#;

/// op `d`, after [`CLAIM`]. KEYS: fence, global inbox, user timeline, item cache, then inboxes.
/// ARGV: position, fence TTL seconds, tml_id, call index.
const DELETE: &str = r#"
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
for i = 5, #KEYS do redis.call('ZREM', KEYS[i], ARGV[3]) end
redis.call('DEL', KEYS[4])
return 1
"#;

/// The loaded scripts.
pub struct Scripts {
    /// [`CLAIM`], then [`CREATE`].
    pub create: Script,
    /// [`CLAIM`], then [`DELETE`].
    pub delete: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            create: Script::new(&format!("{CLAIM}{CREATE}")),
            delete: Script::new(&format!("{CLAIM}{DELETE}")),
        }
    }
}

/// `EVALSHA sha numkeys keys… args…`.
pub fn evalsha(script: &Script, keys: &[String], args: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

/// `SCRIPT LOAD` of every script (after a `NOSCRIPT`, or at the first batch).
pub async fn load(
    scripts: &Scripts,
    redis: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<()> {
    scripts.create.load_async(redis).await?;
    scripts.delete.load_async(redis).await?;
    Ok(())
}
