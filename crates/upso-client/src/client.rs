//! The HTTP core (auth, timeouts, bounded retries) and one method per endpoint.

use crate::UpsoToken;
use crate::error::{Error, Result};
use crate::model::*;
use rand::Rng;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Retries after a transient failure; the total is `1 + max_retries` attempts.
    pub max_retries: u32,
    /// Backoff unit: retry `n` waits `base × n` plus jitter (or `Retry-After`).
    pub retry_base_delay: Duration,
    /// No single wait is longer, whatever `Retry-After` says.
    pub max_retry_delay: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: crate::DEFAULT_BASE_URL.into(),
            timeout: Duration::from_secs(10),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(10),
        }
    }
}

/// An Upso client shared by every account; cloning shares the connection pool.
#[derive(Clone, Debug)]
pub struct UpsoClient {
    http: reqwest::Client,
    base_url: Url,
    config: ClientConfig,
}

impl UpsoClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let base_url = Url::parse(&config.base_url).map_err(|_| Error::Config("base_url is not a URL".into()))?;
        let http = gomark_vendor_http::tls::client_builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { http, base_url, config })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub async fn account(&self, token: &UpsoToken) -> Result<Account> {
        self.call(token, Method::GET, "/v1/account", &[], None::<&()>).await
    }

    pub async fn list_mailboxes(&self, token: &UpsoToken) -> Result<Vec<Mailbox>> {
        Ok(self.call::<List<Mailbox>>(token, Method::GET, "/v1/mailboxes", &[], None::<&()>).await?.data)
    }

    pub async fn create_mailbox(&self, token: &UpsoToken, input: &MailboxInput) -> Result<Mailbox> {
        self.call(token, Method::POST, "/v1/mailboxes", &[], Some(input)).await
    }

    /// Every cadence, or those in `state`.
    pub async fn list_cadences(&self, token: &UpsoToken, state: Option<CadenceState>) -> Result<Vec<Cadence>> {
        let query: Vec<(&str, String)> = match state {
            Some(CadenceState::Active) => vec![("state", "active".into())],
            Some(CadenceState::Archived) => vec![("state", "archived".into())],
            None => vec![],
        };
        Ok(self.call::<List<Cadence>>(token, Method::GET, "/v1/cadences", &query, None::<&()>).await?.data)
    }

    pub async fn get_cadence(&self, token: &UpsoToken, id: &str) -> Result<Cadence> {
        self.call(token, Method::GET, &format!("/v1/cadences/{}", seg(id)), &[], None::<&()>).await
    }

    pub async fn create_cadence(&self, token: &UpsoToken, input: &CadenceInput) -> Result<Cadence> {
        self.call(token, Method::POST, "/v1/cadences", &[], Some(input)).await
    }

    /// Replaces the definition. A `PUT` of the same body is idempotent, so it is retried.
    pub async fn replace_cadence(&self, token: &UpsoToken, id: &str, input: &CadenceInput) -> Result<Cadence> {
        self.call(token, Method::PUT, &format!("/v1/cadences/{}", seg(id)), &[], Some(input)).await
    }

    pub async fn archive_cadence(&self, token: &UpsoToken, id: &str) -> Result<Cadence> {
        self.call(token, Method::POST, &format!("/v1/cadences/{}/archive", seg(id)), &[], None::<&()>).await
    }

    pub async fn enroll(&self, token: &UpsoToken, input: &EnrollmentInput) -> Result<Enrollment> {
        self.call(token, Method::POST, "/v1/enrollments", &[], Some(input)).await
    }

    pub async fn list_enrollments(
        &self,
        token: &UpsoToken,
        cadence_id: Option<&str>,
        state: Option<EnrollmentState>,
    ) -> Result<Vec<Enrollment>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(c) = cadence_id {
            query.push(("cadenceId", c.to_owned()));
        }
        if let Some(s) = state {
            query.push(("state", enum_text(&s)?));
        }
        Ok(self.call::<List<Enrollment>>(token, Method::GET, "/v1/enrollments", &query, None::<&()>).await?.data)
    }

    pub async fn get_enrollment(&self, token: &UpsoToken, id: &str) -> Result<Enrollment> {
        self.call(token, Method::GET, &format!("/v1/enrollments/{}", seg(id)), &[], None::<&()>).await
    }

    pub async fn pause_enrollment(&self, token: &UpsoToken, id: &str) -> Result<Enrollment> {
        self.call(token, Method::POST, &format!("/v1/enrollments/{}/pause", seg(id)), &[], None::<&()>).await
    }

    pub async fn resume_enrollment(&self, token: &UpsoToken, id: &str) -> Result<Enrollment> {
        self.call(token, Method::POST, &format!("/v1/enrollments/{}/resume", seg(id)), &[], None::<&()>).await
    }

    pub async fn finish_enrollment(&self, token: &UpsoToken, id: &str) -> Result<Enrollment> {
        self.call(token, Method::POST, &format!("/v1/enrollments/{}/finish", seg(id)), &[], None::<&()>).await
    }

    pub async fn list_opt_outs(&self, token: &UpsoToken) -> Result<Vec<OptOut>> {
        Ok(self.call::<List<OptOut>>(token, Method::GET, "/v1/opt-outs", &[], None::<&()>).await?.data)
    }

    pub async fn opt_out(&self, token: &UpsoToken, input: &OptOutInput) -> Result<OptOut> {
        self.call(token, Method::POST, "/v1/opt-outs", &[], Some(input)).await
    }

    /// Activities at or after `since` (RFC 3339), oldest first.
    pub async fn list_activities(&self, token: &UpsoToken, since: Option<&str>) -> Result<Vec<Activity>> {
        let query: Vec<(&str, String)> = since.map(|s| vec![("since", s.to_owned())]).unwrap_or_default();
        Ok(self.call::<List<Activity>>(token, Method::GET, "/v1/activities", &query, None::<&()>).await?.data)
    }

    pub async fn create_webhook(&self, token: &UpsoToken, input: &WebhookInput) -> Result<Webhook> {
        self.call(token, Method::POST, "/v1/webhooks", &[], Some(input)).await
    }

    /// One API call with bounded retries of transient failures.
    ///
    /// POSTs that create (cadence, enrollment) are retried too: a duplicate enrollment is
    /// refused by Upso (`already_enrolled`), and callers re-read cadences before creating.
    async fn call<T: DeserializeOwned>(
        &self,
        token: &UpsoToken,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let mut url = self.base_url.clone();
        url.set_path(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| Error::Decode(e.to_string()))?;
        let mut retry = 0;
        loop {
            let outcome = self.attempt(token, method.clone(), url.clone(), body.clone()).await;
            let (err, retry_after) = match outcome {
                Ok(bytes) => return serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string())),
                Err(failure) => failure,
            };
            retry += 1;
            if !err.is_transient() || retry > self.config.max_retries {
                return Err(err);
            }
            let wait = retry_after
                .unwrap_or_else(|| self.config.retry_base_delay.saturating_mul(retry))
                .saturating_add(jitter(self.config.retry_base_delay))
                .min(self.config.max_retry_delay);
            tracing::debug!(path, retry, wait_ms = wait.as_millis() as u64, error = %err, "upso call retried");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        token: &UpsoToken,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> std::result::Result<Vec<u8>, (Error, Option<Duration>)> {
        let mut request = self.http.request(method, url).bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = gomark_vendor_http::send(gomark_vendor_http::Vendor::Upso, &token.metrics_key(), request)
            .await
            .map_err(|e| (transport(&e), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|e| (transport(&e), None))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let detail = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|b| b.error);
        let (code, message, field) = match detail {
            Some(d) => (d.code, d.message, d.field),
            None => (String::new(), String::new(), None),
        };
        let err = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized,
            StatusCode::NOT_FOUND => Error::NotFound(message),
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => Error::Conflict { code, message },
            StatusCode::TOO_MANY_REQUESTS => {
                Error::RateLimited { retry_after: retry_after.unwrap_or(self.config.retry_base_delay) }
            }
            s if s.is_server_error() => Error::Server(s.as_u16()),
            _ => Error::Refused { code, message, field },
        };
        Err((err, retry_after))
    }
}

fn transport(err: &reqwest::Error) -> Error {
    if err.is_timeout() { Error::Timeout } else { Error::Connect(err.without_url_text()) }
}

trait WithoutUrl {
    fn without_url_text(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    /// The error's kind, without the URL (which may carry ids) or the body.
    fn without_url_text(&self) -> String {
        if self.is_connect() { "connection failed".into() } else { "request failed".into() }
    }
}

/// A path segment, percent-encoded so an id can never change the path.
fn seg(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn enum_text(value: &impl Serialize) -> Result<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(Error::Decode("enum did not serialise to a string".into())),
    }
}

fn jitter(base: Duration) -> Duration {
    let max = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    if max == 0 { Duration::ZERO } else { Duration::from_millis(rand::rng().random_range(0..=max)) }
}
