//! Bounded, jittered retry decisions (CONTRACT.md §2–3).
//!
//! | outcome | retried? | wait before retry n |
//! |---|---|---|
//! | 500, 502, 503, 504, 521–526, 423, 477 | yes | `Retry-After`, else `base × n` |
//! | timeout, connection error | yes | `base × n` |
//! | 429 `TEN_SECONDLY_ROLLING` / unknown | yes | `Retry-After`, else `rate_limit_backoff × n` |
//! | 429 search "secondly" | yes | `Retry-After`, else `rate_limit_backoff / 10 × n` |
//! | 429 `DAILY` | never | — |
//! | any other status, decode errors | never | — |
//!
//! Every computed wait gets up to `base` of random jitter and is capped at `max_retry_delay`.
//! At most `max_retries` retries are made. The rules are the same for every method: a POST
//! create is only retried after a 5xx/423/477/429/timeout/connection error, never after the
//! server answered a non-retryable status (callers diff against a fresh GET before writing).

use std::time::Duration;

use rand::Rng;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::rate_limit::RateLimitPolicy;

/// Statuses HubSpot documents as transient.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 423 | 477 | 500 | 502 | 503 | 504 | 521..=526)
}

/// Retry settings extracted from [`ClientConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    base: Duration,
    rate_limit_backoff: Duration,
    max_delay: Duration,
}

impl RetryPolicy {
    pub(crate) fn from_config(config: &ClientConfig) -> Self {
        Self {
            max_retries: config.max_retries,
            base: config.retry_base_delay,
            rate_limit_backoff: config.rate_limit_backoff,
            max_delay: config.max_retry_delay,
        }
    }

    /// How long to wait before retry number `retry` (1-based) after `error`, or `None` to give
    /// up. `retry_after` is the response's `Retry-After` header, if any.
    pub(crate) fn delay(&self, error: &Error, retry_after: Option<Duration>, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries || !error.is_retryable() {
            return None;
        }
        let wait = match error {
            Error::RateLimited { policy, .. } => {
                let unit = match policy {
                    RateLimitPolicy::Secondly => self.rate_limit_backoff / 10,
                    _ => self.rate_limit_backoff,
                };
                retry_after.unwrap_or_else(|| unit.saturating_mul(retry))
            }
            Error::Api { .. } => retry_after.unwrap_or_else(|| self.base.saturating_mul(retry)),
            _ => self.base.saturating_mul(retry),
        };
        Some(wait.saturating_add(self.jitter()).min(self.max_delay))
    }

    /// A uniformly random duration in `[0, base]`.
    fn jitter(&self) -> Duration {
        let max = u64::try_from(self.base.as_nanos()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::from_config(&ClientConfig {
            max_retries: 3,
            retry_base_delay: Duration::from_millis(100),
            rate_limit_backoff: Duration::from_secs(10),
            max_retry_delay: Duration::from_secs(60),
            ..ClientConfig::default()
        })
    }

    fn api(status: u16) -> Error {
        Error::Api { status, category: None, sub_category: None, message: "m".into(), correlation_id: None }
    }

    fn within(d: Option<Duration>, lo_ms: u64, hi_ms: u64) -> bool {
        d.is_some_and(|d| d >= Duration::from_millis(lo_ms) && d <= Duration::from_millis(hi_ms))
    }

    #[test]
    fn retryable_statuses() {
        for s in [423, 477, 500, 502, 503, 504, 521, 522, 523, 524, 525, 526] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 429, 501, 505, 520, 527] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn server_errors_back_off_linearly_with_jitter() {
        let p = policy();
        assert!(within(p.delay(&api(502), None, 1), 100, 200));
        assert!(within(p.delay(&api(502), None, 3), 300, 400));
        assert!(within(p.delay(&Error::Timeout, None, 2), 200, 300));
        assert!(within(p.delay(&api(477), Some(Duration::from_secs(2)), 1), 2000, 2100));
        assert_eq!(p.delay(&api(500), None, 4), None);
        assert_eq!(p.delay(&api(400), None, 1), None);
        assert_eq!(p.delay(&Error::Decode("x".into()), None, 1), None);
    }

    #[test]
    fn rate_limits() {
        let p = policy();
        let ten = Error::RateLimited { policy: RateLimitPolicy::TenSecondlyRolling, retry_after: None };
        assert!(within(p.delay(&ten, None, 2), 20_000, 20_100));
        let search = Error::RateLimited { policy: RateLimitPolicy::Secondly, retry_after: None };
        assert!(within(p.delay(&search, None, 1), 1000, 1100));
        let daily = Error::RateLimited { policy: RateLimitPolicy::Daily, retry_after: None };
        assert_eq!(p.delay(&daily, None, 1), None);
        // Capped by max_retry_delay.
        assert_eq!(p.delay(&ten, Some(Duration::from_secs(3600)), 1), Some(Duration::from_secs(60)));
    }
}
