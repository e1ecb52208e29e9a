//! The two Lua scripts that apply a timeline item's mutations atomically behind its fence,
//! and the `EVALSHA` commands that call them.
//!
//! Each call first compares the event's position with the item's fence (`tml:fence:{id}`):
//! lower ⇒ stale, return 0, change nothing; otherwise set the fence (refreshing its TTL) and
//! apply, return 1. An equal position is the same event again (a redelivery, or the next chunk
//! of a large fan-out) and re-applies harmlessly: `ZADD`/`ZREM`/`DEL` are idempotent.
//!
//! Positions are `SourcePosition::to_key()` strings: fixed-width ASCII digits, so Lua's string
//! comparison is the position order.
//!
//! Visit keys are read inside the script (one `MGET` per call), against Redis's own clock
//! (`TIME`): only a future expiry counts, and the set then expires with it
//! (`EXPIRE key expiry-now`).

use redis::{Cmd, Script};

/// op `c`. KEYS: fence, global inbox, user timeline, user visit, then (inbox, inbox visit)
/// pairs. ARGV: position, fence TTL seconds, tml_id, "1" on the first chunk (global inbox and
/// user timeline), channel ("" except on the last chunk), payload.
pub const CREATE: &str = r#"
local fence = redis.call('GET', KEYS[1])
if fence and fence > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local now = tonumber(redis.call('TIME')[1])
local id = ARGV[3]
local function add_if_visited(key, expiry)
  if expiry and expiry > now then
    redis.call('ZADD', key, id, id)
    redis.call('EXPIRE', key, math.ceil(expiry - now))
  end
end
if ARGV[4] == '1' then
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

/// op `d`. KEYS: fence, global inbox, user timeline, item cache, then inboxes.
/// ARGV: position, fence TTL seconds, tml_id.
pub const DELETE: &str = r#"
local fence = redis.call('GET', KEYS[1])
if fence and fence > ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
for i = 5, #KEYS do redis.call('ZREM', KEYS[i], ARGV[3]) end
redis.call('DEL', KEYS[4])
return 1
"#;

/// The loaded scripts.
pub struct Scripts {
    /// [`CREATE`].
    pub create: Script,
    /// [`DELETE`].
    pub delete: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            create: Script::new(CREATE),
            delete: Script::new(DELETE),
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
