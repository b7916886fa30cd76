//! HubSpot rate-limit headers and 429 policy detection (CONTRACT.md §3).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

const HEADER_MAX: &str = "x-hubspot-ratelimit-max";
const HEADER_REMAINING: &str = "x-hubspot-ratelimit-remaining";
const HEADER_INTERVAL_MS: &str = "x-hubspot-ratelimit-interval-milliseconds";
const HEADER_DAILY: &str = "x-hubspot-ratelimit-daily";
const HEADER_DAILY_REMAINING: &str = "x-hubspot-ratelimit-daily-remaining";

/// Rate-limit state reported by HubSpot on a response.
///
/// Every field is optional: the daily headers are absent on OAuth calls and search responses
/// carry none of them. Drive per-portal limiters from these values rather than hard-coded tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RateLimitInfo {
    /// `X-HubSpot-RateLimit-Max`: burst budget per interval.
    pub max: Option<u32>,
    /// `X-HubSpot-RateLimit-Remaining`: calls left in the current interval.
    pub remaining: Option<u32>,
    /// `X-HubSpot-RateLimit-Interval-Milliseconds`: burst window (normally 10 s).
    pub interval: Option<Duration>,
    /// `X-HubSpot-RateLimit-Daily`: daily budget of the portal.
    pub daily: Option<u64>,
    /// `X-HubSpot-RateLimit-Daily-Remaining`: calls left today.
    pub daily_remaining: Option<u64>,
}

impl RateLimitInfo {
    /// Parses the `X-HubSpot-RateLimit-*` headers. Returns `None` when none of them is present
    /// (or none parses); unparsable individual headers are treated as absent.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let info = Self {
            max: header_number(headers, HEADER_MAX),
            remaining: header_number(headers, HEADER_REMAINING),
            interval: header_number::<u64>(headers, HEADER_INTERVAL_MS).map(Duration::from_millis),
            daily: header_number(headers, HEADER_DAILY),
            daily_remaining: header_number(headers, HEADER_DAILY_REMAINING),
        };
        (info != Self::default()).then_some(info)
    }
}

fn header_number<T: FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Parses a `Retry-After` header: delay in (possibly fractional) seconds, or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Which HubSpot limit a 429 hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitPolicy {
    /// The per-app burst limit (`TEN_SECONDLY_ROLLING`, e.g. 100–190 calls per 10 s). Retried.
    TenSecondlyRolling,
    /// The portal's daily limit (`DAILY`). Never retried: it resets at the portal's midnight.
    Daily,
    /// The CRM search limit ("You have reached your secondly limit."). Retried.
    Secondly,
    /// A 429 whose body did not say which limit. Retried like the burst limit.
    Unknown,
}

impl RateLimitPolicy {
    /// HubSpot's spelling of the policy (`TEN_SECONDLY_ROLLING`, `DAILY`, `SECONDLY`, `UNKNOWN`).
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitPolicy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            RateLimitPolicy::Daily => "DAILY",
            RateLimitPolicy::Secondly => "SECONDLY",
            RateLimitPolicy::Unknown => "UNKNOWN",
        }
    }

    /// Classifies a 429 from its (possibly non-JSON) body and rate-limit headers.
    ///
    /// Looks at `policyName` first, then at the message text ("ten_secondly_rolling limit",
    /// "daily limit", "secondly limit"), then at `errorType`/`category` together with the
    /// headers: an exhausted `X-HubSpot-RateLimit-Daily-Remaining` means the daily limit.
    pub(crate) fn detect(body: Option<&Value>, info: Option<&RateLimitInfo>) -> Self {
        let field = |name: &str| body.and_then(|b| b.get(name)).and_then(Value::as_str).map(str::to_ascii_uppercase);
        if let Some(policy) = field("policyName").as_deref().and_then(Self::from_name) {
            return policy;
        }
        if let Some(message) = field("message") {
            if message.contains("TEN_SECONDLY") {
                return RateLimitPolicy::TenSecondlyRolling;
            }
            if message.contains("DAILY LIMIT") {
                return RateLimitPolicy::Daily;
            }
            if message.contains("SECONDLY LIMIT") {
                return RateLimitPolicy::Secondly;
            }
        }
        if info.and_then(|i| i.daily_remaining) == Some(0) {
            return RateLimitPolicy::Daily;
        }
        // `errorType: RATE_LIMIT` / `category: RATE_LIMITS` confirm a rate limit without saying
        // which one; a bare 429 is equally unknown.
        RateLimitPolicy::Unknown
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "TEN_SECONDLY_ROLLING" => Some(RateLimitPolicy::TenSecondlyRolling),
            "DAILY" => Some(RateLimitPolicy::Daily),
            "SECONDLY" => Some(RateLimitPolicy::Secondly),
            _ => None,
        }
    }
}

impl fmt::Display for RateLimitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn parses_all_headers() {
        let h = headers(&[
            ("X-HubSpot-RateLimit-Max", "190"),
            ("X-HubSpot-RateLimit-Remaining", "187"),
            ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
            ("X-HubSpot-RateLimit-Daily", "625000"),
            ("X-HubSpot-RateLimit-Daily-Remaining", "624000"),
        ]);
        assert_eq!(
            RateLimitInfo::from_headers(&h),
            Some(RateLimitInfo {
                max: Some(190),
                remaining: Some(187),
                interval: Some(Duration::from_secs(10)),
                daily: Some(625_000),
                daily_remaining: Some(624_000),
            })
        );
    }

    #[test]
    fn partial_and_absent_headers() {
        let h = headers(&[("x-hubspot-ratelimit-remaining", "5"), ("x-hubspot-ratelimit-max", "x")]);
        assert_eq!(
            RateLimitInfo::from_headers(&h),
            Some(RateLimitInfo { remaining: Some(5), ..RateLimitInfo::default() })
        );
        assert_eq!(RateLimitInfo::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(&[("retry-after", "0.5")])), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")])), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn detects_policies() {
        let ten = json!({"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"});
        assert_eq!(RateLimitPolicy::detect(Some(&ten), None), RateLimitPolicy::TenSecondlyRolling);
        let daily = json!({"message":"You have reached your daily limit.","policyName":"DAILY"});
        assert_eq!(RateLimitPolicy::detect(Some(&daily), None), RateLimitPolicy::Daily);
        let daily_msg = json!({"message":"You have reached your daily limit.","category":"RATE_LIMITS"});
        assert_eq!(RateLimitPolicy::detect(Some(&daily_msg), None), RateLimitPolicy::Daily);
        let ten_msg = json!({"message":"You have reached your ten_secondly_rolling limit."});
        assert_eq!(RateLimitPolicy::detect(Some(&ten_msg), None), RateLimitPolicy::TenSecondlyRolling);
        let search = json!({"message":"You have reached your secondly limit.","errorType":"RATE_LIMIT"});
        assert_eq!(RateLimitPolicy::detect(Some(&search), None), RateLimitPolicy::Secondly);
        let bare = json!({"category":"RATE_LIMITS"});
        assert_eq!(RateLimitPolicy::detect(Some(&bare), None), RateLimitPolicy::Unknown);
        assert_eq!(RateLimitPolicy::detect(None, None), RateLimitPolicy::Unknown);
        let exhausted = RateLimitInfo { daily_remaining: Some(0), ..RateLimitInfo::default() };
        assert_eq!(RateLimitPolicy::detect(Some(&bare), Some(&exhausted)), RateLimitPolicy::Daily);
        assert_eq!(RateLimitPolicy::TenSecondlyRolling.to_string(), "TEN_SECONDLY_ROLLING");
    }
}
