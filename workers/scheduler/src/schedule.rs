//! When a job runs: a cron pattern (`croner`, seconds optional as in the `cron` npm package
//! server-private uses) read in a time zone from the IANA database (`jiff`, bundled so a bare
//! container has it). Daylight saving is the crate's business: a zone whose clocks jump gets
//! the pattern's next real instant, never a guessed offset.
//!
//! Pure: instants in, instants out. A tick is identified by its instant in unix seconds.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A parsed cron pattern in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pattern: String,
    cron: Cron,
    zone: TimeZone,
}

impl Schedule {
    /// Parses `pattern` (5 fields, or 6 with seconds first) in `zone`.
    pub fn new(pattern: &str, zone: TimeZone) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| format!("cron pattern {pattern:?}: {e}"))?;
        Ok(Self {
            pattern: pattern.to_owned(),
            cron,
            zone,
        })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The first tick strictly after `at`.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&self.zoned(at), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last tick at or before `at`.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&self.zoned(at), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// `at` on this schedule's wall clock (for `list`).
    pub fn zoned(&self, at: Timestamp) -> Zoned {
        at.to_zoned(self.zone.clone())
    }
}

/// The IANA zone `name` (`Asia/Shanghai`).
pub fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|e| format!("time zone {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn shanghai(pattern: &str) -> Schedule {
        let zone = zone("Asia/Shanghai").unwrap_or_else(|e| panic!("{e}"));
        Schedule::new(pattern, zone).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn five_fields_fire_at_second_zero_every_ten_minutes() {
        let s = shanghai("*/10 * * * *");
        assert_eq!(
            s.next_after(at("2024-01-01T00:00:00Z")),
            Some(at("2024-01-01T00:10:00Z"))
        );
        assert_eq!(
            s.next_after(at("2024-01-01T00:09:59Z")),
            Some(at("2024-01-01T00:10:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2024-01-01T00:10:00Z")),
            Some(at("2024-01-01T00:10:00Z"))
        );
    }

    #[test]
    fn six_fields_have_seconds() {
        let s = shanghai("*/10 * * * * *");
        assert_eq!(
            s.next_after(at("2024-01-01T00:00:01Z")),
            Some(at("2024-01-01T00:00:10Z"))
        );
    }

    #[test]
    fn daily_times_are_shanghai_times() {
        let s = shanghai("0 0 4 * * *");
        // 08:00 in Shanghai → 04:00 tomorrow there = 20:00Z today.
        assert_eq!(
            s.next_after(at("2024-01-01T00:00:00Z")),
            Some(at("2024-01-01T20:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2024-01-01T20:00:00Z")),
            Some(at("2024-01-02T20:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(at("2024-01-01T19:59:59Z")),
            Some(at("2023-12-31T20:00:00Z"))
        );
    }

    #[test]
    fn a_zone_with_daylight_saving_gets_real_instants() {
        // Berlin skips 02:00–03:00 on 2024-03-31 and repeats 02:00–03:00 on 2024-10-27.
        let zone = zone("Europe/Berlin").unwrap_or_else(|e| panic!("{e}"));
        let daily_0230 = Schedule::new("0 30 2 * * *", zone).unwrap_or_else(|e| panic!("{e}"));
        let after_skip = daily_0230
            .next_after(at("2024-03-30T02:00:00Z"))
            .unwrap_or_else(|| panic!("no tick"));
        assert_eq!(
            after_skip,
            at("2024-03-31T01:00:00Z"),
            "02:30 does not exist on 03-31: it runs when the clock jumps (03:00 CEST)"
        );
        let first = daily_0230
            .next_after(at("2024-10-26T02:00:00Z"))
            .unwrap_or_else(|| panic!("no tick"));
        assert_eq!(first, at("2024-10-27T00:30:00Z"), "02:30 CEST");
        assert_eq!(
            daily_0230.next_after(first),
            Some(at("2024-10-28T01:30:00Z")),
            "the repeated 02:30 (CET) of 10-27 does not run twice"
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_refused() {
        assert!(Schedule::new("61 * * * *", TimeZone::UTC).is_err());
        assert!(zone("Mars/Olympus").is_err());
    }
}
