//! Per-portal rate limiting: a rolling burst window plus a daily budget, a separate
//! per-second budget for CRM search, and traffic statistics for tests.
//!
//! Search has its own budget (CONTRACT.md §3): search requests count against the daily limit
//! but **not** against the rolling burst window, and are limited to `search_per_second` per
//! rolling second instead.

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
    pub search_per_second: u32,
}

/// Length of the search limiter's rolling window.
const SEARCH_WINDOW: Duration = Duration::from_secs(1);

/// Cap on timestamps kept by [`Traffic`]; the maximum seen so far is kept regardless.
const TRAFFIC_WINDOW_CAP: usize = 65_536;

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
    search_window: VecDeque<Instant>,
    day: Option<NaiveDate>,
    day_count: u64,
}

/// Drops timestamps older than `window` from the front of `times`.
fn expire(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times.front().is_some_and(|front| now.saturating_duration_since(*front) >= window) {
        times.pop_front();
    }
}

impl RateLimiter {
    fn roll_day(&mut self, today: NaiveDate) {
        if self.day != Some(today) {
            self.day = Some(today);
            self.day_count = 0;
        }
    }

    /// Admits (and counts) a request at `now`, or rejects it without counting.
    pub fn admit(&mut self, limits: Limits, now: Instant, today: NaiveDate) -> Outcome {
        expire(&mut self.window, now, limits.burst_window);
        self.roll_day(today);
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

    /// Admits a search request: daily budget plus `search_per_second`, leaving the burst
    /// window untouched. (The snapshot is informational; search responses carry no headers.)
    pub fn admit_search(&mut self, limits: Limits, now: Instant, today: NaiveDate) -> Outcome {
        expire(&mut self.window, now, limits.burst_window);
        expire(&mut self.search_window, now, SEARCH_WINDOW);
        self.roll_day(today);
        if self.day_count >= limits.daily_limit {
            return Outcome::Limited(RateLimitPolicy::Daily, self.snapshot(limits));
        }
        if self.search_window.len() >= limits.search_per_second as usize {
            return Outcome::Limited(RateLimitPolicy::Secondly, self.snapshot(limits));
        }
        self.search_window.push_back(now);
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

/// What a portal's traffic looked like, for tests that prove a client stayed within its budget.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Arrival times of the burst-budget requests within the last window.
    recent: VecDeque<Instant>,
    /// Highest number of burst-budget requests received within any rolling window.
    pub max_in_window: u32,
    /// 429 responses answered (any policy, including injected ones).
    pub rate_limited: u32,
}

impl Traffic {
    /// Records a request that counts against the burst budget (admitted or not).
    pub fn observe(&mut self, now: Instant, window: Duration) {
        expire(&mut self.recent, now, window);
        if self.recent.len() >= TRAFFIC_WINDOW_CAP {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let count = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        self.max_in_window = self.max_in_window.max(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { burst_limit: 2, burst_window: Duration::from_millis(100), daily_limit: 3, search_per_second: 2 }
    }

    #[test]
    fn search_has_its_own_budget() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).expect("date");
        let big = Limits { daily_limit: 100, ..limits() };
        assert!(matches!(rl.admit_search(big, t0, day), Outcome::Allowed(_)));
        assert!(matches!(rl.admit_search(big, t0, day), Outcome::Allowed(_)));
        assert!(matches!(rl.admit_search(big, t0, day), Outcome::Limited(RateLimitPolicy::Secondly, _)));
        // The burst window is untouched by searches.
        let Outcome::Allowed(s) = rl.admit(big, t0, day) else { panic!("burst budget should be free") };
        assert_eq!(s.remaining, 1);
        assert!(matches!(rl.admit_search(big, t0 + SEARCH_WINDOW, day), Outcome::Allowed(_)));
    }

    #[test]
    fn traffic_max() {
        let mut traffic = Traffic::default();
        let t0 = Instant::now();
        let window = Duration::from_millis(100);
        for i in 0..5 {
            traffic.observe(t0 + Duration::from_millis(i * 30), window);
        }
        // Requests at 0, 30, 60, 90 fall in one window; 120 pushes 0 out.
        assert_eq!(traffic.max_in_window, 4);
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
