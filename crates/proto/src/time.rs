//! Instants and spans between the services' epoch milliseconds and the contracts'
//! `google.protobuf.Timestamp` / `Duration`: the one place each direction is converted.
//!
//! Inside the services an instant is epoch milliseconds, and 0 often means "none" (a deal
//! without a close date, a portal never synced). On the wire "none" is an unset field, so
//! the `*_opt` helpers map 0 to and from `None`.

use prost_types::{Duration, Timestamp};

/// `ms` (epoch milliseconds) as a Timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// `ms` as a Timestamp, or none for 0 (the services' "no such instant").
pub fn timestamp_opt(ms: i64) -> Option<Timestamp> {
    (ms != 0).then(|| timestamp(ms))
}

/// A Timestamp as epoch milliseconds, sub-millisecond digits dropped; saturates instead of
/// overflowing on a hostile value.
pub fn millis(ts: &Timestamp) -> i64 {
    ts.seconds.saturating_mul(1000).saturating_add(i64::from(ts.nanos.clamp(0, 999_999_999) / 1_000_000))
}

/// An optional Timestamp as epoch milliseconds, 0 when unset.
pub fn millis_opt(ts: Option<&Timestamp>) -> i64 {
    ts.map_or(0, millis)
}

/// A std span as a protobuf Duration (saturating at `i64::MAX` seconds).
pub fn duration(span: std::time::Duration) -> Duration {
    Duration { seconds: i64::try_from(span.as_secs()).unwrap_or(i64::MAX), nanos: span.subsec_nanos() as i32 }
}

/// A span given in (fractional) days, as statistics are computed, to the millisecond.
pub fn duration_from_days(days: f64) -> Duration {
    let ms = (days * 86_400_000.0).round();
    // Casting saturates, and a NaN becomes 0: no hostile figure can panic here.
    let ms = ms as i64;
    Duration { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// A protobuf Duration in (fractional) days; unset is 0.
pub fn days(d: Option<&Duration>) -> f64 {
    d.map_or(0.0, |d| (d.seconds as f64 + f64::from(d.nanos) / 1e9) / 86_400.0)
}

/// A protobuf Duration as a std span; a negative one is zero.
pub fn std_duration(d: &Duration) -> std::time::Duration {
    if d.seconds < 0 || d.nanos < 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(d.seconds as u64, d.nanos as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_before_and_after_the_epoch() {
        for ms in [0, 1, 999, 1_000, 1_733_212_800_123, -1, -999, -1_001] {
            let ts = timestamp(ms);
            assert!((0..1_000_000_000).contains(&ts.nanos), "{ms}: {ts:?}");
            assert_eq!(millis(&ts), ms);
        }
        assert_eq!(timestamp(-1), Timestamp { seconds: -1, nanos: 999_000_000 });
    }

    #[test]
    fn zero_is_unset_on_the_wire() {
        assert_eq!(timestamp_opt(0), None);
        assert_eq!(millis_opt(None), 0);
        assert_eq!(millis_opt(timestamp_opt(42).as_ref()), 42);
    }

    #[test]
    fn hostile_values_saturate() {
        assert_eq!(millis(&Timestamp { seconds: i64::MAX, nanos: 0 }), i64::MAX);
        assert_eq!(std_duration(&Duration { seconds: -5, nanos: 0 }), std::time::Duration::ZERO);
        let d = std::time::Duration::from_millis(1_500);
        assert_eq!(std_duration(&duration(d)), d);
        assert_eq!(duration_from_days(f64::NAN), Duration::default());
    }

    #[test]
    fn days_round_trip_to_the_millisecond() {
        assert_eq!(duration_from_days(1.5), Duration { seconds: 129_600, nanos: 0 });
        for days_in in [0.0, 0.25, 3.75, 10.0, 1.0 / 3.0] {
            assert!((days(Some(&duration_from_days(days_in))) - days_in).abs() < 1e-8, "{days_in}");
        }
        assert_eq!(days(None), 0.0);
    }
}
