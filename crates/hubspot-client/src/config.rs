//! Client configuration and API-version path building.

use std::time::Duration;

/// HubSpot's production API host.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// Which generation of HubSpot CRM paths to call.
///
/// HubSpot is moving from numbered (`/crm/v3/...`) to date-versioned paths
/// (`/crm/properties/2026-03/...`); the schemas are the same, only the path differs
/// (CONTRACT.md §0). Numbered versions are unsupported from September 2027.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ApiVersion {
    /// `/crm/v3/{family}/{objectType}`, e.g. `/crm/v3/properties/deals`.
    #[default]
    V3,
    /// `/crm/{family}/2026-03/{objectType}`, e.g. `/crm/properties/2026-03/deals`.
    Date2026_03,
    /// `/crm/{family}/2026-09/{objectType}`: as 2026-03, and HubSpot enforces the portal's
    /// validation rules on record writes (400 `VALIDATION_ERROR`, [`crate::Error::Validation`]).
    Date2026_09,
}

impl ApiVersion {
    /// Path segments of a CRM API family (`properties`, `pipelines`, `objects`) for this version,
    /// without the object type: `["crm", "v3", family]` or `["crm", family, "2026-03"]`.
    pub fn crm_segments(self, family: &str) -> [&str; 3] {
        match self {
            ApiVersion::V3 => ["crm", "v3", family],
            ApiVersion::Date2026_03 => ["crm", family, "2026-03"],
            ApiVersion::Date2026_09 => ["crm", family, "2026-09"],
        }
    }

    /// Path of the OAuth token endpoint: `/oauth/v1/token`, or `/oauth/2026-03/token` for the
    /// dated versions (2026-09 did not change OAuth).
    pub fn oauth_token_segments(self) -> [&'static str; 3] {
        match self {
            ApiVersion::V3 => ["oauth", "v1", "token"],
            ApiVersion::Date2026_03 | ApiVersion::Date2026_09 => ["oauth", "2026-03", "token"],
        }
    }
}

/// Settings shared by every request a [`crate::HubSpotClient`] makes.
///
/// Construct with struct-update syntax so new fields keep old call sites compiling:
/// `ClientConfig { base_url: url, ..ClientConfig::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// API host, e.g. `https://api.hubapi.com` (a trailing slash or a path prefix is fine).
    pub base_url: String,
    /// Path generation to use.
    pub api_version: ApiVersion,
    /// Timeout for one HTTP attempt (connect + send + read the body). Default 10 s.
    pub timeout: Duration,
    /// Maximum number of retries after the first attempt (so at most `max_retries + 1`
    /// requests per call). Default 3.
    pub max_retries: u32,
    /// Base backoff for 5xx/423/477/timeouts/connection errors: the n-th retry waits
    /// `retry_base_delay × n` plus up to `retry_base_delay` of random jitter. Default 200 ms.
    pub retry_base_delay: Duration,
    /// Base backoff for a 429 `TEN_SECONDLY_ROLLING` without `Retry-After`: the n-th retry waits
    /// `rate_limit_backoff × n` (+ jitter). The search "secondly" limit uses a tenth of it.
    /// Default 10 s (HubSpot's burst window); tests set a few milliseconds.
    pub rate_limit_backoff: Duration,
    /// Upper bound on any single wait, including a server-sent `Retry-After`. Default 60 s.
    pub max_retry_delay: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_version: ApiVersion::default(),
            timeout: Duration::from_secs(10),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(200),
            rate_limit_backoff: Duration::from_secs(10),
            max_retry_delay: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_per_version() {
        assert_eq!(ApiVersion::V3.crm_segments("properties"), ["crm", "v3", "properties"]);
        assert_eq!(ApiVersion::Date2026_03.crm_segments("properties"), ["crm", "properties", "2026-03"]);
        assert_eq!(ApiVersion::default(), ApiVersion::V3);
        assert_eq!(ApiVersion::V3.oauth_token_segments(), ["oauth", "v1", "token"]);
        assert_eq!(ApiVersion::Date2026_03.oauth_token_segments(), ["oauth", "2026-03", "token"]);
        assert_eq!(ApiVersion::Date2026_09.crm_segments("objects"), ["crm", "objects", "2026-09"]);
        assert_eq!(ApiVersion::Date2026_09.oauth_token_segments(), ["oauth", "2026-03", "token"]);
    }

    #[test]
    fn defaults() {
        let c = ClientConfig::default();
        assert_eq!(c.base_url, "https://api.hubapi.com");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.retry_base_delay, Duration::from_millis(200));
        assert_eq!(c.rate_limit_backoff, Duration::from_secs(10));
    }
}
