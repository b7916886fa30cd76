//! Wall-clock time: named IANA time zones with daylight saving (`America/New_York`, via
//! jiff and the system's time-zone database), `UTC`, and fixed offsets (`+02:00`). Every
//! place GoMark reads a local time (send windows, quiet hours, the day a cap counts,
//! holidays) goes through here, so an hour is never off for half the year.

use crate::outreach::{SendWindow, parse_hhmm};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
pub use jiff::tz::TimeZone;

/// The zone `name` denotes: an IANA name, `UTC`/`Z`, or `±HH:MM`. `None` when unknown, so
/// callers decide between refusing (declared in configuration) and a counted fallback
/// (read from CRM data); nothing here falls back silently.
pub fn zone(name: &str) -> Option<TimeZone> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Some(TimeZone::UTC);
    }
    if let Some(minutes) = fixed_offset_minutes(name) {
        return jiff::tz::Offset::from_seconds(minutes * 60).ok().map(TimeZone::fixed);
    }
    TimeZone::get(name).ok()
}

/// True when `name` is a zone GoMark can compute with.
pub fn is_known(name: &str) -> bool {
    zone(name).is_some()
}

/// `±HH:MM` as minutes east of UTC (at most 14 hours).
fn fixed_offset_minutes(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return None,
    };
    let minutes = parse_hhmm(s.get(1..)?)?;
    (minutes <= 14 * 60).then_some(sign * minutes as i32)
}

fn timestamp(at_ms: i64) -> Timestamp {
    Timestamp::from_millisecond(at_ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The local date and time at `at_ms` in `zone`.
pub fn local(at_ms: i64, zone: &TimeZone) -> DateTime {
    zone.to_datetime(timestamp(at_ms))
}

/// Minutes after local midnight at `at_ms` in `zone`.
pub fn local_minutes(at_ms: i64, zone: &TimeZone) -> u32 {
    let t = local(at_ms, zone);
    t.hour() as u32 * 60 + t.minute() as u32
}

/// The instant (epoch ms) the local day holding `at_ms` began in `zone` (a day after a
/// daylight-saving change is 23 or 25 hours long; this is still its first instant).
pub fn day_start_ms(at_ms: i64, zone: &TimeZone) -> i64 {
    let date = local(at_ms, zone).date();
    date.to_zoned(zone.clone()).map(|z| z.timestamp().as_millisecond()).unwrap_or(at_ms)
}

/// `mon`…`sun` of a local date.
pub fn weekday_name(date: Date) -> &'static str {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    DAYS[date.weekday().to_monday_zero_offset() as usize]
}

/// A `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Option<Date> {
    (s.len() == 10).then(|| s.parse::<Date>().ok()).flatten()
}

/// True when emails may go out at `at_ms` under `window`, read in `zone` (the contact's
/// when known, else the window's own).
pub fn in_send_window(window: &SendWindow, zone: &TimeZone, at_ms: i64) -> bool {
    let (Some(start), Some(end)) = (parse_hhmm(&window.start), parse_hhmm(&window.end)) else {
        return false;
    };
    let t = local(at_ms, zone);
    let minutes = local_minutes(at_ms, zone);
    window.weekdays.iter().any(|d| d.eq_ignore_ascii_case(weekday_name(t.date()))) && minutes >= start && minutes < end
}

/// True when `minutes` after local midnight falls in `start`–`end` (which may wrap
/// midnight: 20:00–08:00).
pub fn in_span(minutes: u32, start: u32, end: u32) -> bool {
    if start < end { minutes >= start && minutes < end } else { minutes >= start || minutes < end }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("instant").as_millisecond()
    }

    #[test]
    fn names_offsets_and_utc_are_zones_and_nothing_else_is() {
        assert!(is_known("America/New_York") && is_known("Europe/Berlin") && is_known("UTC"));
        assert!(is_known("+02:00") && is_known("-05:30"));
        assert!(!is_known("Mars/Olympus") && !is_known("") && !is_known("+25:00") && !is_known("EST5EDT?"));
    }

    #[test]
    fn local_time_follows_daylight_saving() {
        let ny = zone("America/New_York").expect("ny");
        // 14:00 UTC is 09:00 in New York in winter (EST) and 10:00 in summer (EDT).
        assert_eq!(local_minutes(ms("2026-01-15T14:00:00Z"), &ny), 9 * 60);
        assert_eq!(local_minutes(ms("2026-07-15T14:00:00Z"), &ny), 10 * 60);
        // The day of the spring change has 23 hours; its start is still local midnight.
        assert_eq!(day_start_ms(ms("2026-03-08T20:00:00Z"), &ny), ms("2026-03-08T05:00:00Z"));
        assert_eq!(day_start_ms(ms("2026-03-09T20:00:00Z"), &ny), ms("2026-03-09T04:00:00Z"));
    }

    #[test]
    fn parse_dates() {
        assert!(parse_date("2026-12-25").is_some());
        assert!(parse_date("2026-13-01").is_none() && parse_date("2026-1-1").is_none());
    }
}
