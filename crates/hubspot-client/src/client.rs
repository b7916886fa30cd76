//! The HTTP core: request building, auth, retries and rate-limit bookkeeping.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gomark_vendor_http::Vendor;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::budget::{BudgetError, Permit, RequestBudget, RequestKind};
use crate::config::{ApiVersion, ClientConfig};
use crate::error::{self, Error, Result};
use crate::rate_limit::{self, RateLimitInfo, RateLimitPolicy};
use crate::retry::RetryPolicy;
use crate::token::AccessToken;

/// Entries kept by [`HubSpotClient::last_rate_limit`] before the table is reset (tokens rotate).
const MAX_TRACKED_TOKENS: usize = 4096;

/// A HubSpot API client shared by all portals.
///
/// Cloning is cheap: clones share one `reqwest` connection pool and one rate-limit table. The
/// portal is chosen per call by the [`AccessToken`] passed in.
#[derive(Clone)]
pub struct HubSpotClient {
    inner: Arc<Inner>,
    /// Optional per-portal limiter; per handle so `with_budget` does not need to rebuild `inner`.
    budget: Option<Arc<dyn RequestBudget>>,
    /// Waiting for a budget slot stops here (see [`Self::with_budget_wait_until`]).
    wait_until: Option<tokio::time::Instant>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    config: ClientConfig,
    retry: RetryPolicy,
    hasher: RandomState,
    /// Latest rate-limit headers per token, keyed by a per-process hash of the token.
    rate_limits: Mutex<HashMap<u64, RateLimitInfo>>,
}

/// A successful (2xx) response.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// A request body, already encoded.
pub(crate) enum Payload {
    None,
    Json(Vec<u8>),
    /// `application/x-www-form-urlencoded` (OAuth).
    Form(String),
}

/// Everything needed to send one logical request (all its attempts).
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) payload: Payload,
    /// Sent as `Authorization: Bearer …`; its rate-limit headers are recorded for
    /// [`HubSpotClient::last_rate_limit`]. `None` for OAuth token calls.
    pub(crate) bearer: Option<&'a AccessToken>,
    /// [`AccessToken::budget_key`] of the portal the call counts against.
    pub(crate) budget_key: String,
    pub(crate) kind: RequestKind,
    /// Values that must never appear in an error (the token, client secrets, refresh tokens).
    pub(crate) secrets: Vec<&'a str>,
}

/// A failed attempt: the error plus the server's `Retry-After`, if any.
struct Failure {
    error: Error,
    retry_after: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self { error, retry_after: None }
    }
}

impl HubSpotClient {
    /// Builds a client (and its connection pool) from `config`.
    ///
    /// Fails with [`Error::Config`] if `base_url` is not an absolute http(s) URL.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let mut base_url =
            Url::parse(config.base_url.trim()).map_err(|e| Error::Config(format!("invalid base_url: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(Error::Config("base_url must be an http(s) URL".to_owned()));
        }
        base_url.set_query(None);
        base_url.set_fragment(None);
        let http = gomark_vendor_http::tls::client_builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(error::transport_message(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                retry: RetryPolicy::from_config(&config),
                config,
                hasher: RandomState::new(),
                rate_limits: Mutex::new(HashMap::new()),
            }),
            budget: None,
            wait_until: None,
        })
    }

    /// Installs a per-portal [`RequestBudget`]: `acquire` runs before every HTTP attempt
    /// (retries included) and `observe` after every response. Without one (the default) requests
    /// are only paced by the retry backoff. Other clones keep their own budget (or none).
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<dyn RequestBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// A handle whose calls never wait for a budget slot past `until`: a call that would
    /// fails at once with [`Error::RateLimited`] carrying when a slot frees up, without any
    /// HTTP call. For callers with a deadline of their own (one gRPC call applying a portal),
    /// so that waiting for the portal's budget is reported, not slept through.
    #[must_use]
    pub fn with_budget_wait_until(mut self, until: tokio::time::Instant) -> Self {
        self.wait_until = Some(until);
        self
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The rate-limit headers of the most recent HubSpot response (success or error) received
    /// with `token`, i.e. for that portal; `None` if no response for this token carried any
    /// `X-HubSpot-RateLimit-*` header yet. Responses without such headers (e.g. search) do not
    /// clear the previous value.
    ///
    /// Read it after each call to feed a per-portal limiter. Under concurrent calls for the same
    /// token it is the info of whichever response arrived last.
    pub fn last_rate_limit(&self, token: &AccessToken) -> Option<RateLimitInfo> {
        let key = self.token_key(token);
        self.rate_limits().get(&key).copied()
    }

    fn rate_limits(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RateLimitInfo>> {
        self.inner.rate_limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn token_key(&self, token: &AccessToken) -> u64 {
        self.inner.hasher.hash_one(token.expose())
    }

    fn record_rate_limit(&self, token: &AccessToken, info: RateLimitInfo) {
        let key = self.token_key(token);
        let mut table = self.rate_limits();
        if table.len() >= MAX_TRACKED_TOKENS && !table.contains_key(&key) {
            table.clear();
        }
        table.insert(key, info);
    }

    /// The version calls made with `token` use: its pin, or the configured default.
    pub fn api_version_for(&self, token: &AccessToken) -> ApiVersion {
        token.api_version().unwrap_or(self.inner.config.api_version)
    }

    /// `{base}/crm/v3/{family}/{tail…}` or `{base}/crm/{family}/{date}/{tail…}` in the version
    /// `token` is pinned to; every segment is percent-encoded.
    pub(crate) fn crm_url(&self, token: &AccessToken, family: &str, tail: &[&str]) -> Result<Url> {
        let mut url = self.inner.base_url.clone();
        {
            let mut segments =
                url.path_segments_mut().map_err(|()| Error::Config("base_url cannot carry a path".to_owned()))?;
            segments.pop_if_empty();
            segments.extend(self.api_version_for(token).crm_segments(family));
            segments.extend(tail);
        }
        Ok(url)
    }

    /// `{base}/{segments…}` outside the CRM families (e.g. `/oauth/v1/token`).
    pub(crate) fn root_url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.inner.base_url.clone();
        {
            let mut path =
                url.path_segments_mut().map_err(|()| Error::Config("base_url cannot carry a path".to_owned()))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    /// GETs an absolute URL outside the API (a journal entry's pre-signed file): no
    /// Authorization header, no budget, one attempt within the configured timeout.
    pub(crate) async fn download(&self, url: &str) -> Result<Vec<u8>> {
        let url = Url::parse(url).map_err(|_| Error::Decode("journal entry URL is not a URL".into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Decode("journal entry URL is not http(s)".into()));
        }
        // A pre-signed file, not a portal's API: no portal to count it against.
        let request = self.inner.http.get(url);
        let response =
            gomark_vendor_http::send(Vendor::HubSpot, "none", request).await.map_err(|e| map_reqwest(e).error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| map_reqwest(e).error)?.to_vec();
        if !status.is_success() {
            return Err(Error::from_response(status.as_u16(), &headers, &body, None, &[]));
        }
        Ok(body)
    }

    /// Sends a JSON request against the standard budget with retries (see [`crate::retry`]) and
    /// returns the 2xx response.
    pub(crate) async fn send_json<B: Serialize + ?Sized>(
        &self,
        token: &AccessToken,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<RawResponse> {
        self.send_json_as(token, RequestKind::Standard, method, url, body).await
    }

    /// [`Self::send_json`] drawing from the budget of `kind`.
    pub(crate) async fn send_json_as<B: Serialize + ?Sized>(
        &self,
        token: &AccessToken,
        kind: RequestKind,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<RawResponse> {
        let payload = match body {
            Some(body) => Payload::Json(serde_json::to_vec(body).map_err(|e| Error::Encode(e.to_string()))?),
            None => Payload::None,
        };
        self.execute(Call {
            method,
            url,
            payload,
            bearer: Some(token),
            budget_key: token.budget_key(),
            kind,
            secrets: vec![token.expose()],
        })
        .await
    }

    /// Sends `call`, retrying per [`RetryPolicy`], asking the budget before every attempt.
    pub(crate) async fn execute(&self, call: Call<'_>) -> Result<RawResponse> {
        let auth = call.bearer.map(bearer).transpose()?;
        let Call { method, url, .. } = &call;
        let mut retry = 0u32;
        loop {
            tracing::debug!(method = %method, path = url.path(), retry, "HubSpot request");
            let permit = self.acquire(&call).await?;
            let outcome = self.attempt(&call, auth.as_ref()).await;
            if let (Some(budget), Some(permit)) = (&self.budget, permit) {
                budget.finish(&call.budget_key, call.kind, permit).await;
            }
            let failure = match outcome {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            retry += 1;
            match self.inner.retry.delay(&failure.error, failure.retry_after, retry) {
                Some(wait) => {
                    tracing::warn!(
                        method = %method,
                        path = url.path(),
                        retry,
                        max_retries = self.inner.retry.max_retries,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %failure.error,
                        "retrying HubSpot request"
                    );
                    tokio::time::sleep(wait).await;
                }
                None => {
                    tracing::debug!(method = %method, path = url.path(), error = %failure.error, "HubSpot request failed");
                    return Err(failure.error);
                }
            }
        }
    }

    /// Asks the budget (if any) for one attempt. A spent daily budget becomes the same error a
    /// HubSpot `DAILY` 429 gives, which is never retried, so no HTTP call is made at all.
    async fn acquire(&self, call: &Call<'_>) -> Result<Option<Permit>> {
        let Some(budget) = &self.budget else { return Ok(None) };
        let permit = match self.wait_until {
            Some(until) => budget.acquire_until(&call.budget_key, call.kind, until).await,
            None => budget.acquire(&call.budget_key, call.kind).await,
        };
        permit.map(Some).map_err(|e| match e {
            BudgetError::DailyExhausted { retry_after } => {
                Error::RateLimited { policy: RateLimitPolicy::Daily, retry_after: Some(retry_after) }
            }
            BudgetError::Busy { retry_after } => {
                Error::RateLimited { policy: RateLimitPolicy::TenSecondlyRolling, retry_after: Some(retry_after) }
            }
        })
    }

    /// One HTTP exchange, no retries.
    async fn attempt(&self, call: &Call<'_>, auth: Option<&HeaderValue>) -> std::result::Result<RawResponse, Failure> {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        request = match &call.payload {
            Payload::None => request,
            Payload::Json(body) => {
                request.header(CONTENT_TYPE, HeaderValue::from_static("application/json")).body(body.clone())
            }
            Payload::Form(body) => request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
                .body(body.clone()),
        };
        let response =
            gomark_vendor_http::send(Vendor::HubSpot, &call.budget_key, request).await.map_err(map_reqwest)?;
        let status = response.status();
        let headers = response.headers().clone();
        let rate_limit = RateLimitInfo::from_headers(&headers);
        if let (Some(info), Some(token)) = (rate_limit, call.bearer) {
            self.record_rate_limit(token, info);
        }
        if let Some(budget) = &self.budget {
            budget.observe(&call.budget_key, call.kind, rate_limit.as_ref(), status.as_u16());
        }
        let body = response.bytes().await.map_err(map_reqwest)?.to_vec();
        if status.is_success() {
            return Ok(RawResponse { body });
        }
        Err(Failure {
            retry_after: rate_limit::retry_after(&headers),
            error: Error::from_response(status.as_u16(), &headers, &body, rate_limit.as_ref(), &call.secrets),
        })
    }
}

/// The body of a GET whose 404 means "absent".
pub(crate) fn get_optional<T: DeserializeOwned>(response: Result<RawResponse>) -> Result<Option<T>> {
    match response {
        Ok(response) => response.json().map(Some),
        Err(Error::Api { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Appends `pairs` to the query of `url` (form-encoded).
pub(crate) fn with_query(mut url: Url, pairs: &[(&str, &str)]) -> Url {
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    url
}

fn bearer(token: &AccessToken) -> Result<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
        .map_err(|_| Error::Config("access token is not a valid header value".to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn map_reqwest(err: reqwest::Error) -> Failure {
    if err.is_timeout() { Error::Timeout.into() } else { Error::Transport(error::transport_message(err)).into() }
}

impl fmt::Debug for HubSpotClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSpotClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("config", &self.inner.config)
            .field("budget", &self.budget.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base_url: &str, api_version: ApiVersion) -> Result<HubSpotClient> {
        HubSpotClient::new(ClientConfig { base_url: base_url.to_owned(), api_version, ..ClientConfig::default() })
    }

    #[test]
    fn builds_paths() -> Result<()> {
        let t = AccessToken::new("t");
        let c = client("https://api.hubapi.com", ApiVersion::V3)?;
        assert_eq!(c.crm_url(&t, "properties", &["deals"])?.as_str(), "https://api.hubapi.com/crm/v3/properties/deals");
        let c = client("http://127.0.0.1:9/prefix/", ApiVersion::Date2026_03)?;
        assert_eq!(
            c.crm_url(&t, "properties", &["deals", "a b/c"])?.as_str(),
            "http://127.0.0.1:9/prefix/crm/properties/2026-03/deals/a%20b%2Fc"
        );
        Ok(())
    }

    #[test]
    fn a_pinned_token_picks_the_path_of_its_version() -> Result<()> {
        let c = client("https://api.hubapi.com", ApiVersion::V3)?;
        let pinned = AccessToken::new("t").with_api_version(ApiVersion::Date2026_09);
        assert_eq!(c.api_version_for(&pinned), ApiVersion::Date2026_09);
        let cases = [
            ("properties", vec!["deals", "groups"], "/crm/properties/2026-09/deals/groups"),
            ("pipelines", vec!["deals", "p1", "stages"], "/crm/pipelines/2026-09/deals/p1/stages"),
            ("objects", vec!["deals", "search"], "/crm/objects/2026-09/deals/search"),
        ];
        for (family, tail, path) in cases {
            assert_eq!(c.crm_url(&pinned, family, &tail)?.path(), path);
        }
        assert_eq!(c.crm_url(&AccessToken::new("t"), "objects", &["deals"])?.path(), "/crm/v3/objects/deals");
        Ok(())
    }

    #[test]
    fn rejects_bad_base_url() {
        assert!(matches!(client("not a url", ApiVersion::V3), Err(Error::Config(_))));
        assert!(matches!(client("mailto:x@y.z", ApiVersion::V3), Err(Error::Config(_))));
    }

    #[test]
    fn rejects_token_unusable_as_header() {
        let err = bearer(&AccessToken::new("bad\ntoken")).err();
        assert!(matches!(err, Some(Error::Config(ref m)) if !m.contains("bad")));
    }

    #[test]
    fn rate_limit_table_is_per_token() -> Result<()> {
        let c = client("https://api.hubapi.com", ApiVersion::V3)?;
        let a = AccessToken::new("a");
        let info = RateLimitInfo { remaining: Some(3), ..RateLimitInfo::default() };
        c.record_rate_limit(&a, info);
        assert_eq!(c.last_rate_limit(&a), Some(info));
        assert_eq!(c.last_rate_limit(&AccessToken::new("b")), None);
        assert!(!format!("{c:?}").contains("rate_limits"));
        Ok(())
    }
}
