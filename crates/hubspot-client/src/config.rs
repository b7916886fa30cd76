//! Client configuration and API-version path building.

use std::time::Duration;

/// HubSpot's production API host.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// Which HubSpot API version to call: every path is built from it.
///
/// HubSpot moved from numbered (`/crm/v3/...`) to date-versioned paths
/// (`/crm/properties/2026-03/...`), one version every March and September, each supported 18
/// months; numbered versions are unsupported from September 2027 (CONTRACT.md §0). The
/// schemas GoMark uses are the same in all three; 2026-09 additionally enforces the portal's
/// validation rules on record writes. Each portal is pinned to one (see hubspot-sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum ApiVersion {
    /// `/crm/v3/{family}/{objectType}`, e.g. `/crm/v3/properties/deals`: the fallback.
    V3,
    /// `/crm/{family}/2026-03/{objectType}`, e.g. `/crm/properties/2026-03/deals`.
    Date2026_03,
    /// `/crm/{family}/2026-09/{objectType}`: the current stable version. HubSpot enforces the
    /// portal's validation rules on record writes (400 `VALIDATION_ERROR`, [`crate::Error::Validation`]).
    #[default]
    Date2026_09,
}

/// The version name is not one [`ApiVersion`] knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown HubSpot API version {0:?}: expected v3, 2026-03 or 2026-09")]
pub struct UnknownApiVersion(pub String);

impl ApiVersion {
    /// Every version, oldest first.
    pub const ALL: [ApiVersion; 3] = [ApiVersion::V3, ApiVersion::Date2026_03, ApiVersion::Date2026_09];

    /// The name used in paths, settings and the desired state: `v3`, `2026-03`, `2026-09`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V3 => "v3",
            ApiVersion::Date2026_03 => "2026-03",
            ApiVersion::Date2026_09 => "2026-09",
        }
    }

    /// Path segments of a CRM API family (`properties`, `pipelines`, `objects`) for this version,
    /// without the object type: `["crm", "v3", family]` or `["crm", family, "2026-09"]`.
    pub fn crm_segments(self, family: &str) -> [&str; 3] {
        match self {
            ApiVersion::V3 => ["crm", "v3", family],
            dated => ["crm", family, dated.as_str()],
        }
    }

    /// Path of the OAuth token endpoint: `/oauth/v1/token`, or `/oauth/2026-03/token` for the
    /// dated versions (OAuth's newest dated version is 2026-03; 2026-09 did not change it).
    pub fn oauth_token_segments(self) -> [&'static str; 3] {
        match self {
            ApiVersion::V3 => ["oauth", "v1", "token"],
            ApiVersion::Date2026_03 | ApiVersion::Date2026_09 => ["oauth", "2026-03", "token"],
        }
    }

    /// Path segments of the associations API: v4's `["crm", "v4", "associations"]` for a
    /// v3-pinned portal (associations never had a v3 worth using), `["crm", "associations", date]`
    /// otherwise.
    pub fn associations_segments(self) -> [&'static str; 3] {
        match self {
            ApiVersion::V3 => ["crm", "v4", "associations"],
            dated => ["crm", "associations", dated.as_str()],
        }
    }

    /// Version segment of the webhooks journal and snapshot paths. The journal has no numbered
    /// version and its newest stable one is 2026-03, which every portal uses whatever its pin.
    pub fn journal_segment(self) -> &'static str {
        "2026-03"
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ApiVersion {
    type Err = UnknownApiVersion;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        ApiVersion::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownApiVersion(s.to_owned()))
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
    /// Version to use for tokens not labelled with one ([`crate::AccessToken::with_api_version`]).
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
        assert_eq!(ApiVersion::Date2026_09.crm_segments("objects"), ["crm", "objects", "2026-09"]);
        assert_eq!(ApiVersion::default(), ApiVersion::Date2026_09);
        assert_eq!(ApiVersion::V3.oauth_token_segments(), ["oauth", "v1", "token"]);
        assert_eq!(ApiVersion::Date2026_03.oauth_token_segments(), ["oauth", "2026-03", "token"]);
        assert_eq!(ApiVersion::Date2026_09.crm_segments("objects"), ["crm", "objects", "2026-09"]);
        assert_eq!(ApiVersion::Date2026_09.oauth_token_segments(), ["oauth", "2026-03", "token"]);
        assert_eq!(ApiVersion::V3.associations_segments(), ["crm", "v4", "associations"]);
        assert_eq!(ApiVersion::Date2026_09.associations_segments(), ["crm", "associations", "2026-09"]);
        assert_eq!(ApiVersion::Date2026_03.journal_segment(), "2026-03");
    }

    #[test]
    fn names_round_trip() {
        for v in ApiVersion::ALL {
            assert_eq!(v.as_str().parse::<ApiVersion>(), Ok(v));
            assert_eq!(v.to_string(), v.as_str());
        }
        assert!("v4".parse::<ApiVersion>().is_err());
        assert!("2026-9".parse::<ApiVersion>().is_err());
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
