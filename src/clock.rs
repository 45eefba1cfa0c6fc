//! Formatting times and durations as text, without a date crate.
//!
//! The server needs two formats only: the UTC timestamp of a replayed message
//! (`HIST 2026-11-25T20:06:13Z ...`) and a short human duration for uptimes and idle
//! times. Both are a few lines of arithmetic, so the project stays free of `chrono`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_MINUTE: u64 = 60;
const SECONDS_PER_HOUR: u64 = 60 * SECONDS_PER_MINUTE;
const SECONDS_PER_DAY: u64 = 24 * SECONDS_PER_HOUR;

/// `t` as an RFC 3339 UTC timestamp to the second, like `2026-11-25T20:06:13Z`.
///
/// Fractions of a second are dropped; times before 1970 are shown as the epoch
/// (a server clock set that far back is broken anyway, and this must not panic).
pub fn format_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(secs / SECONDS_PER_DAY);
    let in_day = secs % SECONDS_PER_DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / SECONDS_PER_HOUR,
        in_day % SECONDS_PER_HOUR / SECONDS_PER_MINUTE,
        in_day % SECONDS_PER_MINUTE,
    )
}

/// `d` in a short human form: `45s`, `3m 05s`, `2h 03m 05s`, `3d 04h 05m`.
///
/// Only the two or three largest units are shown; past a day the seconds no longer
/// matter to a reader. Fractions of a second are dropped.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours) = (
        secs / SECONDS_PER_DAY,
        secs % SECONDS_PER_DAY / SECONDS_PER_HOUR,
    );
    let (minutes, seconds) = (secs % SECONDS_PER_HOUR / SECONDS_PER_MINUTE, secs % 60);
    if secs < SECONDS_PER_MINUTE {
        format!("{seconds}s")
    } else if secs < SECONDS_PER_HOUR {
        format!("{minutes}m {seconds:02}s")
    } else if secs < SECONDS_PER_DAY {
        format!("{hours}h {minutes:02}m {seconds:02}s")
    } else {
        format!("{days}d {hours:02}h {minutes:02}m")
    }
}

/// The (year, month, day) of the proleptic Gregorian calendar that is `days` days
/// after 1970-01-01.
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>),
/// for non-negative day counts only. It counts in 400-year "eras" that start on
/// 1 March, so the leap day falls at the very end of each year and needs no special case.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097; // 146,097 days in 400 years
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from 1 March, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2); // Jan and Feb belong to the next year
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(secs: u64) -> String {
        format_utc(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn known_timestamps() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(86_399), "1970-01-01T23:59:59Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(utc(1_798_761_599), "2026-12-31T23:59:59Z");
        // 2100 is not a leap year: 28 February is followed by 1 March.
        assert_eq!(utc(4_107_456_000), "2100-02-28T00:00:00Z");
        assert_eq!(utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn fractions_are_dropped_and_the_past_clamps_to_the_epoch() {
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_millis(1_700_000_000_999)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn days_round_trip_through_the_calendar() {
        // Walking day by day for 1,000 years checks every month length and leap rule.
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..366_000 {
            assert_eq!(civil_from_days(days), (year, month, day));
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let month_len = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(format_duration(s(0)), "0s");
        assert_eq!(format_duration(Duration::from_millis(45_900)), "45s");
        assert_eq!(format_duration(s(59)), "59s");
        assert_eq!(format_duration(s(60)), "1m 00s");
        assert_eq!(format_duration(s(185)), "3m 05s");
        assert_eq!(format_duration(s(3_600)), "1h 00m 00s");
        assert_eq!(format_duration(s(7_385)), "2h 03m 05s");
        assert_eq!(format_duration(s(86_400)), "1d 00h 00m");
        assert_eq!(
            format_duration(s(3 * 86_400 + 4 * 3_600 + 5 * 60 + 6)),
            "3d 04h 05m"
        );
        assert!(format_duration(Duration::MAX).ends_with('m'), "no overflow");
    }
}
