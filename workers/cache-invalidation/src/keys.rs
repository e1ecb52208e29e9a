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

impl Ids {
    /// The id a placeholder (`id`, `uid`, `fid`) stands for, if these ids have it.
    fn named(self, placeholder: &str) -> Option<u64> {
        match (self, placeholder) {
            (Self::One(id), "id") | (Self::Pair { uid: id, .. }, "uid") => Some(id),
            (Self::Pair { fid, .. }, "fid") => Some(fid),
            _ => None,
        }
    }
}

/// Fills `format`'s placeholders with `ids`, after `prefix`.
pub fn render(prefix: &str, format: &str, ids: Ids) -> String {
    use std::fmt::Write;
    // One allocation per key: this runs for every record of a batch.
    let mut key = String::with_capacity(prefix.len() + format.len() + 20);
    key.push_str(prefix);
    let mut rest = format;
    while let Some((text, after)) = rest.split_once('{') {
        key.push_str(text);
        let Some((name, after)) = after.split_once('}') else {
            key.push('{');
            rest = after;
            break;
        };
        // Writing to a String cannot fail.
        let _ = match ids.named(name) {
            Some(id) => write!(key, "{id}"),
            None => write!(key, "{{{name}}}"),
        };
        rest = after;
    }
    key.push_str(rest);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_the_placeholders_its_ids_have_and_leaves_the_rest() {
        assert_eq!(render("t:", USER_SLIM, Ids::One(7)), "t:user:v2:slim:7");
        assert_eq!(render("", SUBJECT_ITEM, Ids::One(0)), "sbj:v2:item:0");
        let pair = Ids::Pair { uid: 1, fid: 2 };
        assert_eq!(render("", USER_FRIENDS, pair), "user:v2:friends:1");
        assert_eq!(render("", USER_FOLLOWERS, pair), "user:followers:2");
        assert_eq!(render("", USER_FRIEND_STATS, pair), "user:stats:1:friend");
        assert_eq!(render("", "a:{uid}:{id}", Ids::One(3)), "a:{uid}:3");
        assert_eq!(render("", "a:{id", Ids::One(3)), "a:{id");
        assert_eq!(
            render("", "{id}{id}", Ids::One(u64::MAX)),
            "1844674407370955161518446744073709551615"
        );
    }
}
