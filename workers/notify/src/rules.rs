//! server-private's rules for a notification (`lib/notify.ts`, `lib/user/privacy.ts`,
//! `lib/user/utils.ts` at the reference's commit), pure: which field hash a type has, which
//! privacy setting governs it, how `chii_memberfields.privacy` and `blocklist` read, and what
//! the title is stored as.
//!
//! # Layout
//! - [`hash_of`]: `hashType` (the `_settings` table's `hash`).
//! - [`Setting`], [`setting_of`]: `privacyValueForNotifyType`.
//! - [`Privacy`], [`Recipient`]: a user's settings, read as `getUserNotifySetting` reads them.
//! - [`stored_title`]: `ntf_title` as Bangumi's MySQL stores it.

use bangumi_js::{Js, decode, escape, number_of};

/// `_settings[type].hash` of server-private's `lib/notify.ts`: the `chii_notify_field` kind a
/// type's notifications share (a reply and a mention in one group topic share its field).
/// `None`: the type has no settings entry (0, 16, anything past 50), where server-private's
/// `hashType` throws.
pub fn hash_of(kind: i32) -> Option<u8> {
    Some(match kind {
        1 | 2 | 23 => 1,
        3 | 4 | 24 => 3,
        5 | 6 | 25 | 26 => 5,
        7 | 8 | 29 => 7,
        9 | 10 | 30 => 9,
        11 | 12 | 27 => 11,
        13 => 13,
        14 | 15 => 14,
        17 | 18 | 32 => 17,
        19 | 33 => 19,
        20 | 21 | 34 => 20,
        22 | 28 | 36 | 38 | 40 | 48 => 22,
        31 => 31,
        35 | 37 | 39 | 47 => 21,
        41 | 43 | 45 | 49 => 23,
        42 | 44 | 46 | 50 => 24,
        _ => return None,
    })
}

/// The privacy setting that decides whether a type of notification reaches its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `commentNotification` (privacy key 21): replies, patches, everything else.
    Comment,
    /// `mentionNotification` (20): types 23–34.
    Mention,
    /// `friendNotification` (23): friend requests and acceptances (14, 15).
    Friend,
}

impl Setting {
    /// The key of the setting in the privacy object, and the values it allows.
    fn key(self) -> (&'static str, &'static [Privacy]) {
        const ALL: &[Privacy] = &[Privacy::All, Privacy::Friends, Privacy::None];
        match self {
            Setting::Comment => ("21", ALL),
            Setting::Mention => ("20", ALL),
            Setting::Friend => ("23", &[Privacy::All, Privacy::None]),
        }
    }
}

/// `privacyValueForNotifyType`.
pub fn setting_of(kind: i32) -> Setting {
    match kind {
        14 | 15 => Setting::Friend,
        23..=34 => Setting::Mention,
        _ => Setting::Comment,
    }
}

/// Who may notify a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Anyone (stored 0; the default of every setting here).
    All,
    /// Only the users the recipient follows (stored 1).
    Friends,
    /// No one (stored 2).
    None,
}

/// A recipient's notification settings: its `chii_memberfields.privacy` and `blocklist`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    privacy: Js,
    blocked: Vec<f64>,
}

/// The largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn safe_integer(n: f64) -> Option<f64> {
    (n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER).then_some(n)
}

impl Recipient {
    /// Reads `privacy` (empty, PHP-serialised or JSON, as server-private's `decode()`) and
    /// `blocklist` (comma-separated user ids, as `parseBlocklist`).
    ///
    /// A privacy value that decodes but is not an object (a PHP list, a JSON array or scalar)
    /// holds no setting: every setting has its default, as in server-private.
    ///
    /// # Errors
    /// `privacy` is neither PHP-serialised nor JSON (server-private takes the defaults, which
    /// may notify a user who opted out: here the message is dead-lettered instead), or an entry
    /// of `blocklist` is not an integer (server-private's `intval` throws too).
    pub fn read(privacy: &str, blocklist: &str) -> Result<Self, String> {
        let blocked = blocklist
            .split(',')
            .map(|entry| {
                number_of(entry).and_then(safe_integer).ok_or_else(|| {
                    format!(
                        "chii_memberfields.blocklist: {:?} is not a valid integer",
                        entry.trim()
                    )
                })
            })
            .filter(|id| !matches!(id, Ok(n) if *n == 0.0))
            .collect::<Result<Vec<f64>, String>>()?;
        let privacy = decode(privacy).map_err(|e| {
            format!("chii_memberfields.privacy is neither PHP-serialised nor JSON: {e}")
        })?;
        Ok(Self { privacy, blocked })
    }

    /// Whether `user` is on the blocklist.
    pub fn blocks(&self, user: u32) -> bool {
        self.blocked.contains(&f64::from(user))
    }

    /// The value of `setting` (`readPrivacySettingFromRaw`): the stored number (a number, or a
    /// string of decimal digits) if it is a value the setting allows, else its default (all).
    pub fn privacy(&self, setting: Setting) -> Privacy {
        let (key, allowed) = setting.key();
        let stored = match self.privacy.get(key) {
            Some(Js::Number(n)) => n.as_f64().and_then(safe_integer),
            Some(Js::String(s)) if is_decimal_integer(s) => number_of(s).and_then(safe_integer),
            _ => None,
        };
        // A safe integer: exact as i64.
        let value = match stored.map(|n| n as i64) {
            Some(0) => Some(Privacy::All),
            Some(1) => Some(Privacy::Friends),
            Some(2) => Some(Privacy::None),
            _ => None,
        };
        value
            .filter(|v| allowed.contains(v))
            .unwrap_or(Privacy::All)
    }
}

/// `/^-?\d+$/`.
fn is_decimal_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The longest `ntf_title` (`VARCHAR(255)`, in characters).
const TITLE_CHARS: usize = 255;

/// `ntf_title` as Bangumi stores it: HTML-escaped (server-private's column type escapes with
/// lodash's `_.escape` on write), cut to the column's 255 characters — what Bangumi's
/// non-strict MySQL stores of a longer title (with a warning), so a strict session stores the
/// same.
pub fn stored_title(title: &str) -> String {
    escape(title).chars().take(TITLE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(privacy: &str) -> Recipient {
        Recipient::read(privacy, "").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn hashes_follow_the_settings_table() {
        assert_eq!(
            hash_of(35),
            Some(21),
            "the fixture of tests/event/notify.spec.ts"
        );
        assert_eq!(hash_of(27), Some(11));
        assert_eq!(hash_of(28), Some(22));
        for unknown in [0, 16, 51, -1, i32::MAX] {
            assert_eq!(hash_of(unknown), None, "type {unknown}");
        }
        assert_eq!((1..=50).filter_map(hash_of).count(), 49, "all but 16");
    }

    #[test]
    fn the_setting_of_a_type() {
        assert_eq!(setting_of(14), Setting::Friend);
        assert_eq!(setting_of(15), Setting::Friend);
        assert_eq!(
            setting_of(22),
            Setting::Comment,
            "timeline replies stay comments"
        );
        assert_eq!(setting_of(23), Setting::Mention);
        assert_eq!(setting_of(34), Setting::Mention);
        assert_eq!(setting_of(35), Setting::Comment);
    }

    #[test]
    fn privacy_as_server_private_reads_it() {
        // tests/event/notify.spec.ts
        let json = recipient(r#"{"20":2,"21":0}"#);
        assert_eq!(json.privacy(Setting::Mention), Privacy::None);
        assert_eq!(json.privacy(Setting::Comment), Privacy::All);
        assert_eq!(
            recipient(r#"{"21":0,"23":2}"#).privacy(Setting::Friend),
            Privacy::None
        );
        // PHP, string values, values a setting does not allow, a list.
        let php = recipient(r#"a:3:{i:21;s:1:"1";i:20;i:7;i:23;i:1;}"#);
        assert_eq!(php.privacy(Setting::Comment), Privacy::Friends);
        assert_eq!(php.privacy(Setting::Mention), Privacy::All, "7 is no value");
        assert_eq!(
            php.privacy(Setting::Friend),
            Privacy::All,
            "friends is not allowed"
        );
        let list = recipient(r#"a:2:{i:0;i:2;i:1;i:2;}"#);
        assert_eq!(list.privacy(Setting::Comment), Privacy::All);
        assert_eq!(recipient("").privacy(Setting::Comment), Privacy::All);
        assert_eq!(
            recipient(r#"{"21":"2"}"#).privacy(Setting::Comment),
            Privacy::None
        );
        assert_eq!(
            recipient(r#"{"21":" 2"}"#).privacy(Setting::Comment),
            Privacy::All
        );
        assert_eq!(
            recipient(r#"{"21":2.0}"#).privacy(Setting::Comment),
            Privacy::None
        );
        assert!(Recipient::read("{oops", "").is_err());
        assert!(Recipient::read("a:1:{i:21;", "").is_err());
    }

    #[test]
    fn blocklists_as_parse_blocklist_reads_them() {
        let r = Recipient::read("", " 5, 7 ,,0,1e1").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.blocks(5) && r.blocks(7) && r.blocks(10));
        assert!(!r.blocks(0) && !r.blocks(1));
        let error = Recipient::read("", "5,x").expect_err("x is not an id");
        assert!(error.contains("\"x\""), "{error}");
    }

    #[test]
    fn titles_are_escaped_and_cut_to_the_column() {
        assert_eq!(stored_title("<a> & 'b'"), "&lt;a&gt; &amp; &#39;b&#39;");
        assert_eq!(stored_title(&"字".repeat(300)).chars().count(), 255);
    }
}
