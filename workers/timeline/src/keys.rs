//! Redis key formats of the timeline family: server-private's (`lib/timeline/cache.ts`,
//! `lib/user/utils.ts`) byte for byte, plus the kind this worker adds (fences), and the `SCAN` patterns of the
//! scheduler's trims.
//!
//! Every function takes the `REDIS_KEY_PREFIX` (empty in production: Bangumi's keys have none)
//! and puts it in front of the key, so tests and staging can share one Redis.

/// Channel of `PUBLISH` after a create (server-private `TIMELINE_EVENT_CHANNEL`).
pub const CREATE_CHANNEL: &str = "events:tml:create";

/// The key formats the fan-out writes (inboxes, timelines, item caches), without the prefix:
/// what a shadow's comparison matches the legacy worker's keyspace events against.
pub const COMPARED: &[&str] = &[
    "tml:v3:inbox:{uid}",
    "tml:v3:user:{uid}",
    "tml:v4:item:{id}",
];

/// Seconds the follower list stays cached (server-private `fetchFollowers`).
pub const FOLLOWERS_TTL_SECONDS: u64 = 3600;

/// `tml:v4:item:{id}`: the rendered item cache.
pub fn item(prefix: &str, tml_id: u64) -> String {
    format!("{prefix}tml:v4:item:{tml_id}")
}

/// `tml:v3:user:{uid}`: the author's own timeline.
pub fn user_timeline(prefix: &str, uid: u64) -> String {
    format!("{prefix}tml:v3:user:{uid}")
}

/// `tml:visit:user:{uid}`: value = absolute unix-seconds expiry of the user timeline's cache.
pub fn user_visit(prefix: &str, uid: u64) -> String {
    format!("{prefix}tml:visit:user:{uid}")
}

/// `tml:v3:inbox:{uid}`: a home timeline; `uid` 0 is the global one.
pub fn inbox(prefix: &str, uid: u64) -> String {
    format!("{prefix}tml:v3:inbox:{uid}")
}

/// `tml:visit:inbox:{uid}`: value = absolute unix-seconds expiry of the inbox's cache.
pub fn inbox_visit(prefix: &str, uid: u64) -> String {
    format!("{prefix}tml:visit:inbox:{uid}")
}

/// `user:followers:{uid}`: JSON array of the uids following `uid`.
pub fn followers(prefix: &str, uid: u64) -> String {
    format!("{prefix}user:followers:{uid}")
}

/// `tml:fence:{tml_id}` (new, this worker's): the `SourcePosition::to_key()` of the last
/// create/delete applied to the item; older events are stale.
pub fn fence(prefix: &str, tml_id: u64) -> String {
    format!("{prefix}tml:fence:{tml_id}")
}

/// `SCAN MATCH` pattern of every `tml:v3:inbox:{uid}` under `prefix`.
pub fn inbox_pattern(prefix: &str) -> String {
    format!("{}tml:v3:inbox:*", glob_escape(prefix))
}

/// `SCAN MATCH` pattern of every `tml:v3:user:{uid}` under `prefix`.
pub fn user_timeline_pattern(prefix: &str) -> String {
    format!("{}tml:v3:user:*", glob_escape(prefix))
}

/// The channel, with the prefix.
pub fn create_channel(prefix: &str) -> String {
    format!("{prefix}{CREATE_CHANNEL}")
}

/// Escapes glob metacharacters of `prefix` for `SCAN MATCH`.
pub fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_server_privates() {
        assert_eq!(item("", 7), "tml:v4:item:7");
        assert_eq!(user_timeline("", 1), "tml:v3:user:1");
        assert_eq!(user_visit("", 1), "tml:visit:user:1");
        assert_eq!(inbox("", 0), "tml:v3:inbox:0");
        assert_eq!(inbox_visit("p:", 2), "p:tml:visit:inbox:2");
        assert_eq!(followers("", 3), "user:followers:3");
        assert_eq!(create_channel(""), "events:tml:create");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(inbox_pattern("p*:"), "p\\*:tml:v3:inbox:*");
        assert_eq!(user_timeline_pattern(""), "tml:v3:user:*");
        // The compared formats are those of `inbox`, `user_timeline` and `item`.
        let written: Vec<String> = [inbox("", 0), user_timeline("", 0), item("", 0)]
            .iter()
            .map(|key| key.replace(":0", ":{}"))
            .collect();
        let compared: Vec<String> = COMPARED
            .iter()
            .map(|f| format!("{}{{}}", f.split('{').next().unwrap_or_default()))
            .collect();
        assert_eq!(written, compared);
    }
}
