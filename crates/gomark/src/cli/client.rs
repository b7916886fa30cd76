//! A small client for the gateway's REST API: bearer authentication, a timeout on every
//! request, and errors mapped from RFC 9457 problem documents.

use reqwest::{Method, RequestBuilder, Response, Url};
use serde_json::Value;
use std::time::Duration;

/// How long one request may take. The SSE stream is the exception: it may last as long as
/// the rollout, so it is bounded by [`TIMEOUT`] between reads instead (the gateway sends a
/// keep-alive every 15 s).
pub const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One invalid field named by a problem document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

#[derive(Debug)]
pub enum CliError {
    /// The API answered with an error (a problem document, or something else with an
    /// error status, e.g. a proxy's 502 page).
    Api { status: u16, title: String, detail: String, errors: Vec<FieldError> },
    /// The gateway could not be reached at all.
    Unreachable { url: String, reason: String },
    /// The gateway did not answer within [`TIMEOUT`].
    TimedOut { url: String },
    /// No API key was given.
    MissingApiKey,
    /// The command cannot run as asked (bad arguments, unreadable file, no confirmation).
    Invalid(String),
    /// The command ran, and what it did failed (a halted rollout, failed steps).
    Failed(String),
}

impl CliError {
    /// Builds the error for an error response from its status and body.
    pub fn from_response(status: u16, body: &str) -> Self {
        let problem: Option<Value> = serde_json::from_str(body).ok();
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
        match problem {
            Some(p) if p.get("detail").is_some() || p.get("title").is_some() => {
                let errors = p
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|errors| {
                        errors
                            .iter()
                            .map(|e| FieldError { field: text(e, "field"), detail: text(e, "detail") })
                            .collect()
                    })
                    .unwrap_or_default();
                let title = Some(text(&p, "title")).filter(|t| !t.is_empty()).unwrap_or_else(|| reason.to_owned());
                CliError::Api { status, title, detail: text(&p, "detail"), errors }
            }
            _ => {
                // Not from GoMark (a proxy, a wrong URL): show a little of what came back.
                let snippet: String = body.trim().chars().take(200).collect();
                let detail = if snippet.is_empty() {
                    format!("HTTP {status} {reason}")
                } else {
                    format!("HTTP {status} {reason}: {snippet}")
                };
                CliError::Api { status, title: reason.to_owned(), detail, errors: Vec::new() }
            }
        }
    }

    /// The HTTP status, for errors that came from the API.
    pub fn status(&self) -> Option<u16> {
        match self {
            CliError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What is printed to stderr: `error: …` first, then one line per invalid field, then
    /// a hint when there is an obvious next step.
    pub fn lines(&self) -> Vec<String> {
        match self {
            CliError::Api { status, title, detail, errors } => {
                let detail = if detail.is_empty() { title.as_str() } else { detail.as_str() };
                let mut lines = Vec::new();
                // A document with several errors comes as "<what>: <path>: <why>; <path>: <why>"
                // with the first path in `errors`; one line per path reads far better.
                let split = errors.first().and_then(|first| {
                    let (head, rest) = detail.split_once(": ")?;
                    rest.starts_with(&first.field).then(|| (head, rest.split("; ").collect::<Vec<_>>()))
                });
                match split {
                    Some((head, parts)) => {
                        lines.push(format!("error: {head}:"));
                        lines.extend(parts.iter().map(|p| format!("  {p}")));
                        for e in errors {
                            if !parts.iter().any(|p| p.starts_with(&e.field)) {
                                lines.push(format!("  {}: {}", e.field, e.detail));
                            }
                        }
                    }
                    None => {
                        lines.push(format!("error: {detail}"));
                        // A field error the detail already states is not repeated.
                        lines.extend(
                            errors
                                .iter()
                                .map(|e| format!("{}: {}", e.field, e.detail))
                                .filter(|e| !detail.contains(e.as_str()))
                                .map(|e| format!("  {e}")),
                        );
                    }
                }
                match status {
                    401 => lines.push(
                        "authentication failed: check the API key given with --api-key or GOMARK_API_KEY".to_owned(),
                    ),
                    403 => {
                        lines.push("permission denied: this API key's role or company scope does not allow it".into())
                    }
                    429 => lines.push("rate limited: wait a minute and try again".into()),
                    _ => {}
                }
                lines
            }
            CliError::Unreachable { url, reason } => {
                vec![format!("error: could not reach the gateway at {url}: {reason}"), HINT_GATEWAY.to_owned()]
            }
            CliError::TimedOut { url } => {
                vec![format!("error: the gateway at {url} did not answer within {} s", TIMEOUT.as_secs())]
            }
            CliError::MissingApiKey => vec![
                "error: no API key: pass --api-key KEY or set GOMARK_API_KEY".to_owned(),
                "(`gomark serve` prints an admin key on the first start; admins create more with POST /v1/api-keys)"
                    .to_owned(),
            ],
            CliError::Invalid(message) | CliError::Failed(message) => vec![format!("error: {message}")],
        }
    }
}

impl CliError {
    /// The error as `--json` prints it: `{"error": {"kind", "message", …}}`, with the
    /// API's status, title and field errors when it came from the API.
    pub fn to_json(&self) -> Value {
        let kind = match self {
            CliError::Api { .. } => "api",
            CliError::Unreachable { .. } => "unreachable",
            CliError::TimedOut { .. } => "timeout",
            CliError::MissingApiKey => "missing_api_key",
            CliError::Invalid(_) => "invalid",
            CliError::Failed(_) => "failed",
        };
        let message = self.lines().first().map(|l| l.trim_start_matches("error: ").to_owned()).unwrap_or_default();
        let mut error = serde_json::json!({"kind": kind, "message": message});
        if let CliError::Api { status, title, detail, errors } = self {
            error["status"] = (*status).into();
            error["title"] = title.as_str().into();
            error["detail"] = detail.as_str().into();
            error["errors"] =
                errors.iter().map(|e| serde_json::json!({"field": e.field, "detail": e.detail})).collect();
        }
        serde_json::json!({ "error": error })
    }
}

const HINT_GATEWAY: &str = "(is it running? pass its URL with --gateway URL or set GOMARK_GATEWAY)";

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for CliError {}

/// The gateway's REST API. The key is kept private and sent only as the bearer credential.
pub struct Client {
    base: Url,
    key: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(gateway: &str, key: &str) -> Result<Self, CliError> {
        let base = Url::parse(gateway.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| CliError::Invalid(format!("--gateway {gateway:?} is not an http(s) URL")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Bounds every read, so a stalled event stream is noticed too.
            .read_timeout(TIMEOUT)
            .user_agent(concat!("gomark-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Invalid(format!("cannot set up HTTP: {e}")))?;
        Ok(Self { base, key: key.to_owned(), http })
    }

    /// The gateway's URL as given (for messages).
    pub fn gateway(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + path segments (each percent-encoded, so ids cannot break the path) + query.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        let response = self.send(self.http.request(Method::GET, url).timeout(TIMEOUT)).await?;
        self.json_body(response).await
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        let response = self.send(self.http.request(Method::POST, url).timeout(TIMEOUT).json(body)).await?;
        self.json_body(response).await
    }

    pub async fn put(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        let response = self.send(self.http.request(Method::PUT, url).timeout(TIMEOUT).json(body)).await?;
        self.json_body(response).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        let response = self.send(self.http.request(Method::DELETE, url).timeout(TIMEOUT)).await?;
        self.json_body(response).await
    }

    /// Opens a server-sent event stream; read it with `Response::chunk`.
    pub async fn events(&self, segments: &[&str]) -> Result<Response, CliError> {
        let url = self.url(segments, &[]);
        // No total timeout here (see TIMEOUT): the client's read timeout applies.
        self.send(self.http.request(Method::GET, url).header(reqwest::header::ACCEPT, "text/event-stream")).await
    }

    /// POSTs `body` asking for the server-sent event variant of the answer (a plan's
    /// progress); read it with `Response::chunk`. Bounded like `post`.
    pub async fn post_events(&self, segments: &[&str], body: &Value) -> Result<Response, CliError> {
        let url = self.url(segments, &[]);
        let request = self.http.request(Method::POST, url).timeout(TIMEOUT).json(body);
        self.send(request.header(reqwest::header::ACCEPT, "text/event-stream")).await
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.bearer_auth(&self.key).send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(CliError::from_response(status.as_u16(), &body))
    }

    /// A failure below HTTP: which URL, and the root cause (reqwest's own message only
    /// says "error sending request").
    pub fn transport(&self, err: &reqwest::Error) -> CliError {
        let url = self.gateway().to_owned();
        if err.is_timeout() {
            return CliError::TimedOut { url };
        }
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            reason = cause.to_string();
            source = cause.source();
        }
        CliError::Unreachable { url, reason }
    }

    async fn json_body(&self, response: Response) -> Result<Value, CliError> {
        let url = response.url().clone();
        let text = response.text().await.map_err(|e| self.transport(&e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|_| {
            CliError::Invalid(format!("{url} did not answer with JSON: is {} the GoMark gateway?", self.gateway()))
        })
    }
}
