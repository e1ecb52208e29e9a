//! A subject's release date from its infobox: server-private's `extractDate`
//! (`lib/subject/date.ts`) and `DATE` (`lib/utils/date.ts`), rule for rule.
//!
//! - The infobox fields looked at, and their order, depend on the subject's type and platform
//!   ([`sort_keys`], from `subject_platforms.json` of `bangumi/common`).
//! - For each key, the first field of that name: its scalar value if not empty, else its array
//!   items' values in order; the first text a date is found in wins.
//! - In one text, every pattern of [`PATTERNS`] is tried in order and the **last** that matches
//!   decides year, month and day together (the legacy loop has no `break`).
//!
//! Pure: no I/O. The worker decides what to store ([`ReleaseDate::fields`]).
//!
//! # Layout
//! - [`ReleaseDate`]: year, month, day (0 = absent) and the column values they become.
//! - [`extract`]: a parsed infobox → its release date.
//! - [`from_text`]: one text → a date, by [`PATTERNS`].
//! - [`sort_keys`]: the infobox fields looked at, by subject type and platform.

use std::fmt;
use std::sync::LazyLock;

use bangumi_wiki::{FieldValue, Wiki};
use regex::Regex;

/// A release date as the legacy computes it: month and day are 0 when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReleaseDate {
    /// Year, 0 when no date was found.
    pub year: u32,
    /// Month, 0 when absent; not checked (`13` stays `13`).
    pub month: u32,
    /// Day, 0 when absent; not checked.
    pub day: u32,
}

/// The values `chii_subject_fields` gets for a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// `field_year`.
    pub year: u16,
    /// `field_mon`.
    pub month: u8,
    /// `field_date`: the date when it is a real calendar date, else `0000-00-00`.
    pub date: String,
}

/// Why a date is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// No pattern matched any text of the sort keys' fields (year 0).
    NoDate,
    /// Year ≤ 1900: the legacy's cut-off.
    TooEarly,
    /// Year > 2155: outside MySQL's `YEAR` column, which the legacy's non-strict server zeroes.
    TooLate,
}

impl NotStored {
    /// The skip reason (a metric label).
    pub fn reason(self) -> &'static str {
        match self {
            NotStored::NoDate => "no_date",
            NotStored::TooEarly => "year_too_early",
            NotStored::TooLate => "year_too_late",
        }
    }
}

/// Years up to this one are not stored (the legacy's `year <= 1900`).
const LAST_SKIPPED_YEAR: u32 = 1900;

/// The last year a `YEAR` column holds.
const LAST_YEAR: u32 = 2155;

/// The zero date Bangumi stores for a date that is not a full calendar date.
const ZERO_DATE: &str = "0000-00-00";

impl ReleaseDate {
    /// The column values for this date, or why it is not stored.
    ///
    /// `field_date` is a `DATE` column. The legacy writes `DATE.toString()` there (`YYYY`,
    /// `YYYY-MM` or `YYYY-MM-DD`) and Bangumi's MySQL, not being strict, stores `0000-00-00` for
    /// anything but a valid calendar date; this says so explicitly, so a strict session stores
    /// the same.
    pub fn fields(self) -> Result<Fields, NotStored> {
        match self.year {
            0 => return Err(NotStored::NoDate),
            1..=LAST_SKIPPED_YEAR => return Err(NotStored::TooEarly),
            year if year > LAST_YEAR => return Err(NotStored::TooLate),
            _ => {}
        }
        let date = if self.is_calendar_date() {
            format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
        } else {
            ZERO_DATE.to_owned()
        };
        Ok(Fields {
            year: u16::try_from(self.year).unwrap_or(0),
            month: u8::try_from(self.month).unwrap_or(0),
            date,
        })
    }

    fn is_calendar_date(self) -> bool {
        let leap = self.year.is_multiple_of(4)
            && (!self.year.is_multiple_of(100) || self.year.is_multiple_of(400));
        let days = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return false,
        };
        (1..=days).contains(&self.day)
    }
}

/// The legacy's `DATE.toString()`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, empty for year 0.
impl fmt::Display for ReleaseDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.year == 0 {
            return Ok(());
        }
        write!(f, "{:04}", self.year)?;
        if self.month == 0 {
            return Ok(());
        }
        write!(f, "-{:02}", self.month)?;
        if self.day == 0 {
            return Ok(());
        }
        write!(f, "-{:02}", self.day)
    }
}

/// The release date of a subject of `type_id` on `platform` whose infobox is `wiki`; year 0
/// when none is found.
pub fn extract(wiki: &Wiki, type_id: u16, platform: u16) -> ReleaseDate {
    for key in sort_keys(type_id, platform) {
        let Some(field) = wiki.field(key) else {
            continue;
        };
        let found = match &field.value {
            FieldValue::Scalar(text) => (!text.is_empty()).then(|| from_text(text)).flatten(),
            FieldValue::Array(items) => items
                .iter()
                .filter(|item| !item.value.is_empty())
                .find_map(|item| from_text(&item.value)),
        };
        if let Some(date) = found {
            return date;
        }
    }
    ReleaseDate::default()
}

/// The patterns of `date.ts`, in its order, translated from JavaScript:
/// - `\d` is ASCII there: `[0-9]`;
/// - `.` stops at the four JavaScript line terminators;
/// - a JavaScript character class without the `u` flag matches one UTF-16 unit, so `^[^\d-]`
///   followed by a digit never matches a character outside the BMP (two units): such
///   characters are excluded from those leading classes.
const PATTERNS: [&str; 9] = [
    r"((?<year>[0-9]{4})年(?<month>[0-9]{1,2})月(?<day>[0-9]{1,2})日)([^0-9号発號]|$)",
    r"(^[^0-9\-\x{10000}-\x{10FFFF}])(?<year>[0-9]{4})-(?<month>[0-9]{1,2})-(?<day>[0-9]{1,2})\)([^0-9\-]|$)",
    r"(^[^0-9/\x{10000}-\x{10FFFF}])(?<year>[0-9]{4})/(?<month>[0-9]{1,2})/(?<day>[0-9]{1,2})\)([^0-9/]|$)",
    r"(^[^0-9.\x{10000}-\x{10FFFF}])(?<year>[0-9]{4})\.(?<month>[0-9]{1,2})\.(?<day>[0-9]{1,2})\)([^0-9.万]|$)",
    r"\((?<year>[0-9]{4})-(?<month>[0-9]{1,2})-(?<day>[0-9]{1,2})\)$",
    r"（(?<year>[0-9]{4})-(?<month>[0-9]{1,2})-(?<day>[0-9]{1,2})）$",
    r"^(?<year>[0-9]{4})-(?<month>[0-9]{1,2})-(?<day>[0-9]{1,2})$",
    r"^(?<year>[0-9]{4})-(?<month>[0-9]{1,2})-(?<day>[0-9]{1,2})[ (\[（][^\n\r\x{2028}\x{2029}]*$",
    r"^(?<year>[0-9]{4})年(?:(?<month>[0-9]{1,2})月)?(?:(?<day>[0-9]{1,2})日)?",
];

static COMPILED: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    PATTERNS
        .iter()
        .map(|p| Regex::new(p).unwrap_or_else(|e| panic!("date pattern {p}: {e}")))
        .collect()
});

/// The date in `text`: the last of [`PATTERNS`] that matches decides; `None` when none does.
pub fn from_text(text: &str) -> Option<ReleaseDate> {
    let captures = COMPILED.iter().rev().find_map(|p| p.captures(text))?;
    let number = |group: &str| {
        captures
            .name(group)
            .map_or(0, |m| m.as_str().parse().unwrap_or(0))
    };
    Some(ReleaseDate {
        year: number("year"),
        month: number("month"),
        day: number("day"),
    })
}

/// The anime sort keys: one list for the type's default and each of its platforms.
const ANIME: &[&str] = &["放送开始", "发售日", "发售日期", "上映年度", "上映日"];

/// The sort keys of a subject type when its platform has none of its own, by type id
/// (`defaults.<type>.sort_keys` of `subject_platforms.json`).
const TYPE_SORT_KEYS: &[(u16, &[&str])] = &[
    (1, &["发售日"]),
    (2, ANIME),
    (3, &["发售日期"]),
    (4, &["发行日期"]),
    (6, &["上映日", "开始"]),
];

/// Platforms with sort keys of their own, by `(type, platform)`
/// (`platforms.<type>.<platform>.sort_keys`): today the anime platforms other (0), TV (1),
/// OVA (2), movie (3) and web (5), with the anime default's keys.
const PLATFORM_SORT_KEYS: &[((u16, u16), &[&str])] = &[
    ((2, 0), ANIME),
    ((2, 1), ANIME),
    ((2, 2), ANIME),
    ((2, 3), ANIME),
    ((2, 5), ANIME),
];

/// The keys of a type the file does not know.
const FALLBACK_SORT_KEYS: &[&str] = &["放送开始", "发行日期", "开始"];

/// The infobox fields a subject's date is looked for in, in order (`getSubjectPlatformSortKeys`):
/// its platform's, else its type's, else [`FALLBACK_SORT_KEYS`].
pub fn sort_keys(type_id: u16, platform: u16) -> &'static [&'static str] {
    let own = PLATFORM_SORT_KEYS
        .iter()
        .find(|(at, _)| *at == (type_id, platform))
        .map(|(_, keys)| *keys);
    let of_type = || {
        TYPE_SORT_KEYS
            .iter()
            .find(|(t, _)| *t == type_id)
            .map(|(_, keys)| *keys)
    };
    own.or_else(of_type).unwrap_or(FALLBACK_SORT_KEYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: u32, month: u32, day: u32) -> Option<ReleaseDate> {
        Some(ReleaseDate { year, month, day })
    }

    #[test]
    fn each_pattern_of_date_ts() {
        let cases = [
            // 1: 年月日, not followed by a digit or 号/発/號 (pattern 9 also matches at the start)
            ("1998年10月23日", date(1998, 10, 23)),
            ("第1998年10月23日号", None),
            ("TV 1998年10月23日(土)", date(1998, 10, 23)),
            // 2–4: a non-digit first, then a date closed by `)`
            ("(2019-01-02)", date(2019, 1, 2)),
            ("(2019/01/02)", date(2019, 1, 2)),
            ("(2019.01.02)", date(2019, 1, 2)),
            ("(2019.01.02)万", None),
            // …but a character outside the BMP is two UTF-16 units in JavaScript
            ("🎬2019/01/02)", None),
            ("2019/01/02", None),
            ("2019.01.02", None),
            // 5, 6: a date in parentheses at the end
            ("TV放送 (2019-1-2)", date(2019, 1, 2)),
            ("劇場公開（2019-01-02）", date(2019, 1, 2)),
            // 7, 8: a dashed date at the start, alone or followed by a space or a bracket
            ("2019-01-02", date(2019, 1, 2)),
            ("2019-01-02 (日本)", date(2019, 1, 2)),
            ("2019-01-02（日本）", date(2019, 1, 2)),
            ("2019-01-02[BD]", date(2019, 1, 2)),
            ("2019-01-02日本", None),
            ("2019-01-02 x\ny", None),
            // 9: 年, optional 月 and 日
            ("2019年", date(2019, 0, 0)),
            ("2019年4月", date(2019, 4, 0)),
            ("2019年4月号", date(2019, 4, 0)),
            ("2019年春", date(2019, 0, 0)),
            // the last matching pattern wins
            ("2020-01-02 (2021-03-04)", date(2020, 1, 2)),
            ("1998年10月23日(2000-01-01)", date(1998, 10, 23)),
            ("未定", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(from_text(text), want, "{text:?}");
        }
    }

    #[test]
    fn legacy_strings_and_stored_fields() {
        let d = |year, month, day| ReleaseDate { year, month, day };
        assert_eq!(d(2019, 4, 0).to_string(), "2019-04");
        assert_eq!(d(2019, 0, 0).to_string(), "2019");
        assert_eq!(d(0, 0, 0).to_string(), "");
        let stored = |date: ReleaseDate| date.fields().map(|f| (f.year, f.month, f.date));
        assert_eq!(stored(d(2019, 4, 7)), Ok((2019, 4, "2019-04-07".into())));
        assert_eq!(stored(d(2019, 4, 0)), Ok((2019, 4, ZERO_DATE.into())));
        assert_eq!(stored(d(2021, 2, 30)), Ok((2021, 2, ZERO_DATE.into())));
        assert_eq!(stored(d(2020, 2, 29)), Ok((2020, 2, "2020-02-29".into())));
        assert_eq!(stored(d(1900, 2, 29)), Err(NotStored::TooEarly));
        assert_eq!(stored(d(2100, 2, 29)), Ok((2100, 2, ZERO_DATE.into())));
        assert_eq!(stored(d(2019, 13, 1)), Ok((2019, 13, ZERO_DATE.into())));
        assert_eq!(stored(d(1901, 1, 1)), Ok((1901, 1, "1901-01-01".into())));
        assert_eq!(stored(d(2155, 12, 31)), Ok((2155, 12, "2155-12-31".into())));
        assert_eq!(stored(d(2156, 1, 1)), Err(NotStored::TooLate));
        assert_eq!(stored(d(0, 0, 0)), Err(NotStored::NoDate));
    }

    #[test]
    fn sort_keys_by_type_and_platform() {
        assert_eq!(sort_keys(2, 1)[0], "放送开始");
        assert_eq!(sort_keys(2, 2006), ANIME);
        assert_eq!(sort_keys(1, 1001), ["发售日"]);
        assert_eq!(sort_keys(3, 0), ["发售日期"]);
        assert_eq!(sort_keys(4, 4001), ["发行日期"]);
        assert_eq!(sort_keys(6, 1), ["上映日", "开始"]);
        assert_eq!(sort_keys(5, 0), FALLBACK_SORT_KEYS);
    }
}
