//! Redis cache key formats this family deletes: exactly server-private's, byte for byte.
//!
//! Placeholders: `{id}` is the row's id (from the message key or the row), `{uid}`/`{fid}` the
//! two ids of a friendship row. No global prefix (Bangumi's keys have none); `REDIS_KEY_PREFIX`
//! exists only to isolate tests and staging.

/// `chii_blog_entry`: `lib/blog` slim cache.
pub const BLOG_SLIM: &str = "blog:v3:slim:{id}";
/// `chii_characters`.
pub const CHARACTER_SLIM: &str = "crt:v2:slim:{id}";
/// `chii_persons`.
pub const PERSON_SLIM: &str = "prsn:v3:slim:{id}";
/// `chii_index`.
pub const INDEX_SLIM: &str = "idx:v6:slim:{id}";
/// `chii_groups`.
pub const GROUP_SLIM: &str = "grp:v3:slim:{id}";
/// `chii_group_topics`.
pub const GROUP_TOPIC: &str = "grp:topic:{id}";
/// `chii_group_members`: the member's group list.
pub const USER_GROUPS: &str = "user:groups:{id}";
/// `chii_subjects`, `chii_subject_fields`: the full item.
pub const SUBJECT_ITEM: &str = "sbj:v2:item:{id}";
/// `chii_subjects`, `chii_subject_fields`: the slim item.
pub const SUBJECT_SLIM: &str = "sbj:v3:slim:{id}";
/// `chii_subject_topics`.
pub const SUBJECT_TOPIC: &str = "sbj:topic:{id}";
/// `chii_episodes`.
pub const EPISODE: &str = "sbj:v2:ep:{id}";
/// `chii_members`.
pub const USER_SLIM: &str = "user:v2:slim:{id}";
/// `chii_memberfields`.
pub const USER_PRIVACY: &str = "user:privacy:{id}";
/// `chii_friends`: the user's friend list.
pub const USER_FRIENDS: &str = "user:v2:friends:{uid}";
/// `chii_friends`: the followed user's followers (also the timeline fan-out's follower cache).
pub const USER_FOLLOWERS: &str = "user:followers:{fid}";
/// `chii_friends`: the user's friend count.
pub const USER_FRIEND_STATS: &str = "user:stats:{uid}:friend";

/// The ids a key format is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// One id: `{id}`.
    One(u64),
    /// A friendship: `{uid}` (the user) and `{fid}` (the friend).
    Pair {
        /// `frd_uid`.
        uid: u64,
        /// `frd_fid`.
        fid: u64,
    },
}

/// Fills `format`'s placeholders with `ids`, after `prefix`.
pub fn render(prefix: &str, format: &str, ids: Ids) -> String {
    let key = match ids {
        Ids::One(id) => format.replace("{id}", &id.to_string()),
        Ids::Pair { uid, fid } => format
            .replace("{uid}", &uid.to_string())
            .replace("{fid}", &fid.to_string()),
    };
    format!("{prefix}{key}")
}
