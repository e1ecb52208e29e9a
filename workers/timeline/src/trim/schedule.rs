//! When the trims run: server-private's `bin/cron.ts` times in Asia/Shanghai, which is a fixed
//! UTC+8 (no daylight saving since 1991), so no time-zone database is needed.
//!
//! Pure: unix seconds in, unix seconds out.

/// Asia/Shanghai's offset from UTC.
pub const SHANGHAI_OFFSET_SECONDS: i64 = 8 * 3600;

const DAY: i64 = 86_400;

/// A cron-like schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// `*/N * * * *`: at second 0 of every minute divisible by `N` (N divides 60).
    EveryMinutes(i64),
    /// `0 0 H * * *`: daily at `H`:00:00 Shanghai time.
    DailyAt(i64),
}

impl Schedule {
    /// The first firing strictly after `now` (unix seconds).
    pub fn next_after(self, now: i64) -> i64 {
        match self {
            Schedule::EveryMinutes(n) => {
                let period = n * 60;
                (now.div_euclid(period) + 1) * period
            }
            Schedule::DailyAt(hour) => {
                let local = now + SHANGHAI_OFFSET_SECONDS;
                let mut fire = local - local.rem_euclid(DAY) + hour * 3600;
                if fire <= local {
                    fire += DAY;
                }
                fire - SHANGHAI_OFFSET_SECONDS
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-01-01T00:00:00Z = 2024-01-01 08:00 in Shanghai.
    const NEW_YEAR_UTC: i64 = 1_704_067_200;

    #[test]
    fn every_ten_minutes_fires_on_the_tens() {
        let s = Schedule::EveryMinutes(10);
        assert_eq!(s.next_after(NEW_YEAR_UTC), NEW_YEAR_UTC + 600);
        assert_eq!(s.next_after(NEW_YEAR_UTC + 1), NEW_YEAR_UTC + 600);
        assert_eq!(s.next_after(NEW_YEAR_UTC + 599), NEW_YEAR_UTC + 600);
    }

    #[test]
    fn daily_times_are_shanghai_times() {
        let at4 = Schedule::DailyAt(4);
        // 08:00 Shanghai → next 04:00 Shanghai is tomorrow = 2024-01-01T20:00Z.
        assert_eq!(at4.next_after(NEW_YEAR_UTC), NEW_YEAR_UTC + 20 * 3600);
        // 03:59:59 Shanghai (19:59:59Z the day before) → one second later.
        let before = NEW_YEAR_UTC + 20 * 3600 - 1;
        assert_eq!(at4.next_after(before), before + 1);
        // Exactly at 04:00 → the next day.
        let at = NEW_YEAR_UTC + 20 * 3600;
        assert_eq!(at4.next_after(at), at + DAY);
        assert_eq!(
            Schedule::DailyAt(5).next_after(NEW_YEAR_UTC),
            NEW_YEAR_UTC + 21 * 3600
        );
    }
}
