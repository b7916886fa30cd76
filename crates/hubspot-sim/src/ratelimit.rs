//! Per-portal rate limiting: a rolling burst window plus a daily budget.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::NaiveDate;

use crate::error::RateLimitPolicy;

/// The limits applied to every portal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub burst_limit: u32,
    pub burst_window: Duration,
    pub daily_limit: u64,
}

/// Values for the `X-HubSpot-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub max: u32,
    pub remaining: u32,
    pub interval_ms: u128,
    pub daily: u64,
    pub daily_remaining: u64,
}

impl Snapshot {
    pub fn apply(&self, headers: &mut HeaderMap) {
        let pairs: [(&'static str, String); 5] = [
            ("x-hubspot-ratelimit-max", self.max.to_string()),
            ("x-hubspot-ratelimit-remaining", self.remaining.to_string()),
            ("x-hubspot-ratelimit-interval-milliseconds", self.interval_ms.to_string()),
            ("x-hubspot-ratelimit-daily", self.daily.to_string()),
            ("x-hubspot-ratelimit-daily-remaining", self.daily_remaining.to_string()),
        ];
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}

/// Result of admitting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed(Snapshot),
    Limited(RateLimitPolicy, Snapshot),
}

/// State of one portal's limiter.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    window: VecDeque<Instant>,
    day: Option<NaiveDate>,
    day_count: u64,
}

impl RateLimiter {
    /// Admits (and counts) a request at `now`, or rejects it without counting.
    pub fn admit(&mut self, limits: Limits, now: Instant, today: NaiveDate) -> Outcome {
        while let Some(front) = self.window.front() {
            if now.saturating_duration_since(*front) >= limits.burst_window {
                self.window.pop_front();
            } else {
                break;
            }
        }
        if self.day != Some(today) {
            self.day = Some(today);
            self.day_count = 0;
        }
        if self.day_count >= limits.daily_limit {
            return Outcome::Limited(RateLimitPolicy::Daily, self.snapshot(limits));
        }
        if self.window.len() >= limits.burst_limit as usize {
            return Outcome::Limited(RateLimitPolicy::TenSecondlyRolling, self.snapshot(limits));
        }
        self.window.push_back(now);
        self.day_count += 1;
        Outcome::Allowed(self.snapshot(limits))
    }

    fn snapshot(&self, limits: Limits) -> Snapshot {
        let used = u32::try_from(self.window.len()).unwrap_or(u32::MAX);
        Snapshot {
            max: limits.burst_limit,
            remaining: limits.burst_limit.saturating_sub(used),
            interval_ms: limits.burst_window.as_millis(),
            daily: limits.daily_limit,
            daily_remaining: limits.daily_limit.saturating_sub(self.day_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { burst_limit: 2, burst_window: Duration::from_millis(100), daily_limit: 3 }
    }

    #[test]
    fn window_then_daily() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).expect("date");
        let Outcome::Allowed(s) = rl.admit(limits(), t0, day) else { panic!("first should pass") };
        assert_eq!((s.remaining, s.daily_remaining), (1, 2));
        assert!(matches!(rl.admit(limits(), t0, day), Outcome::Allowed(_)));
        assert!(matches!(rl.admit(limits(), t0, day), Outcome::Limited(RateLimitPolicy::TenSecondlyRolling, _)));
        let later = t0 + Duration::from_millis(150);
        assert!(matches!(rl.admit(limits(), later, day), Outcome::Allowed(_)));
        assert!(matches!(rl.admit(limits(), later, day), Outcome::Limited(RateLimitPolicy::Daily, _)));
        let tomorrow = day.succ_opt().expect("date");
        assert!(matches!(rl.admit(limits(), later, tomorrow), Outcome::Allowed(_)));
    }
}
