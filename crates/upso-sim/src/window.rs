//! Send windows and time zones, as Upso reads them: IANA zones (`America/New_York`,
//! daylight saving included, via jiff and the system's time-zone database), `UTC`, or
//! fixed offsets (`+02:00`). A name Upso does not know is read as UTC.

use jiff::civil::Time;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ToSpan};
use upso_client::SendWindow;

/// The UTC offset of a fixed-offset zone (`UTC`, `+02:00`) in minutes; `None` for names.
pub fn offset_minutes(zone: &str) -> Option<i32> {
    let zone = zone.trim();
    if zone.is_empty() || zone.eq_ignore_ascii_case("utc") || zone == "Z" || zone == "Etc/UTC" {
        return Some(0);
    }
    let (sign, rest) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=14).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 60 + m))
}

/// The zone `name` denotes, if Upso knows it.
pub fn zone(name: &str) -> Option<TimeZone> {
    match offset_minutes(name) {
        Some(minutes) => Offset::from_seconds(minutes * 60).ok().map(TimeZone::fixed),
        None => TimeZone::get(name.trim()).ok(),
    }
}

fn parse_hm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The first instant at or after `at_ms` inside `window`, read in `zone` (the contact's,
/// else the window's own). `None` when the window can never open (no valid day or times).
pub fn next_open_ms(window: &SendWindow, contact_zone: Option<&str>, at_ms: i64) -> Option<i64> {
    let name = contact_zone.filter(|z| !z.is_empty()).unwrap_or(&window.time_zone);
    let tz = zone(name).unwrap_or(TimeZone::UTC);
    let (start, end) = (parse_hm(&window.start)?, parse_hm(&window.end)?);
    if start >= end {
        return None;
    }
    let local = tz.to_datetime(Timestamp::from_millisecond(at_ms).ok()?);
    for day in 0..8 {
        let date = local.date().checked_add(day.days()).ok()?;
        let weekday = DAYS[date.weekday().to_monday_zero_offset() as usize];
        if !window.weekdays.iter().any(|d| d.eq_ignore_ascii_case(weekday)) {
            continue;
        }
        let (open, close) = (date.to_datetime(start), date.to_datetime(end));
        if local >= close {
            continue;
        }
        if local >= open {
            return Some(at_ms);
        }
        // An opening inside a daylight-saving gap opens when the clock jumps past it.
        return open.to_zoned(tz.clone()).ok().map(|z| z.timestamp().as_millisecond());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(zone: &str) -> SendWindow {
        SendWindow {
            time_zone: zone.into(),
            start: "09:00".into(),
            end: "17:00".into(),
            weekdays: upso_client::default_weekdays(),
        }
    }

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("time").as_millisecond()
    }

    #[test]
    fn sends_wait_for_the_window_in_the_right_zone() {
        // Monday 2026-11-23.
        assert_eq!(next_open_ms(&window("UTC"), None, ms("2026-11-23T10:00:00Z")), Some(ms("2026-11-23T10:00:00Z")));
        assert_eq!(next_open_ms(&window("UTC"), None, ms("2026-11-23T18:00:00Z")), Some(ms("2026-11-24T09:00:00Z")));
        // Friday evening waits for Monday.
        assert_eq!(next_open_ms(&window("UTC"), None, ms("2026-11-27T17:00:00Z")), Some(ms("2026-11-30T09:00:00Z")));
        // 08:00 UTC is 10:00 at +02:00: open for that contact.
        assert_eq!(
            next_open_ms(&window("UTC"), Some("+02:00"), ms("2026-11-23T08:00:00Z")),
            Some(ms("2026-11-23T08:00:00Z"))
        );
        assert_eq!(offset_minutes("-05:30"), Some(-330));
        assert_eq!(offset_minutes("Europe/Berlin"), None);
    }

    #[test]
    fn a_send_window_follows_daylight_saving_in_two_zones() {
        let w = window("America/New_York");
        // New York, before and after the US change (2026-03-08): 09:00 local is 14:00 UTC,
        // then 13:00 UTC.
        assert_eq!(next_open_ms(&w, None, ms("2026-03-06T13:30:00Z")), Some(ms("2026-03-06T14:00:00Z")));
        assert_eq!(next_open_ms(&w, None, ms("2026-03-09T12:30:00Z")), Some(ms("2026-03-09T13:00:00Z")));
        // A Berlin contact of the same cadence, before and after Europe's change (03-29):
        // 09:00 local is 08:00 UTC, then 07:00 UTC.
        let berlin = Some("Europe/Berlin");
        assert_eq!(next_open_ms(&w, berlin, ms("2026-03-27T07:30:00Z")), Some(ms("2026-03-27T08:00:00Z")));
        assert_eq!(next_open_ms(&w, berlin, ms("2026-03-30T06:30:00Z")), Some(ms("2026-03-30T07:00:00Z")));
        // Friday 16:30 in Berlin after the change is 14:30 UTC: still open.
        assert_eq!(next_open_ms(&w, berlin, ms("2026-04-03T14:30:00Z")), Some(ms("2026-04-03T14:30:00Z")));
    }
}
