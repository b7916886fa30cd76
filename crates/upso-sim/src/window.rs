//! Send windows and time zones. Time zones are `UTC` or fixed offsets (`+02:00`); any
//! other name is treated as UTC, because the simulator carries no time-zone database.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc};
use upso_client::SendWindow;

/// The UTC offset of `zone` in minutes, or `None` if it is not one the simulator knows.
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

fn parse_hm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The first instant at or after `at_ms` inside `window`, read in `zone` (the contact's,
/// else the window's own). `None` when the window can never open (no valid day or times).
pub fn next_open_ms(window: &SendWindow, contact_zone: Option<&str>, at_ms: i64) -> Option<i64> {
    let zone = contact_zone.filter(|z| !z.is_empty()).unwrap_or(&window.time_zone);
    let offset = Duration::minutes(i64::from(offset_minutes(zone).unwrap_or(0)));
    let (start, end) = (parse_hm(&window.start)?, parse_hm(&window.end)?);
    if start >= end {
        return None;
    }
    let at: DateTime<Utc> = Utc.timestamp_millis_opt(at_ms).single()?;
    let local = (at + offset).naive_utc();
    for day in 0..8 {
        let date = local.date() + Duration::days(day);
        let weekday = DAYS[date.weekday().num_days_from_monday() as usize];
        if !window.weekdays.iter().any(|d| d.eq_ignore_ascii_case(weekday)) {
            continue;
        }
        let open = date.and_time(start);
        let close = date.and_time(end);
        let candidate = if local >= close {
            continue;
        } else if local >= open {
            local
        } else {
            open
        };
        return Some((candidate - offset).and_utc().timestamp_millis());
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
        DateTime::parse_from_rfc3339(s).expect("time").timestamp_millis()
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
}
