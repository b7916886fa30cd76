//! Helpers the scenarios share: a small REST client, polling, health checks.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct Api {
    http: reqwest::Client,
    pub base: String,
    token: Option<String>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts a problem document with `status`; returns it.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.content_type(), "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string(), "{}", self.body);
        &self.body
    }
}

impl Api {
    /// A client calling with `token` (an API key) as its bearer credential.
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("http client");
        Self { http, base: base.trim_end_matches('/').to_owned(), token: Some(token.to_owned()) }
    }

    /// A client sending no credentials at all.
    pub fn anonymous(base: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("http client");
        Self { http, base: base.trim_end_matches('/').to_owned(), token: None }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The same gateway, another credential.
    pub fn with_token(&self, token: &str) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), token: Some(token.to_owned()) }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.send_with(method, path, body, &[]).await
    }

    pub async fn send_with(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        if headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")) {
            // A stream never ends on its own: its status and headers are the reply.
            return Reply { status, headers, body: Value::Null };
        }
        let text = resp.text().await.expect("body");
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, headers, body }
    }

    pub async fn raw(&self, method: Method, path: &str, content_type: &str, body: &'static str) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.header("content-type", content_type).body(body).send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        Reply { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }
}

/// Polls `check` until it yields Some, or fails the test naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `grpc.health.v1` status of the whole server at `addr`.
pub async fn health(addr: SocketAddr) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?;
    Some(resp.into_inner().status)
}

pub const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

pub use gomark_testkit::free_port;

/// A HubSpot path in its v3 spelling whatever the version it was called with
/// (`/crm/properties/2026-09/deals` → `/crm/v3/properties/deals`), so tests can match
/// requests of portals pinned to any version.
pub fn v3_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "crm", family, version, rest @ ..] if version.starts_with("20") => {
            let mut out = format!("/crm/v3/{family}");
            for p in rest {
                out.push('/');
                out.push_str(p);
            }
            out
        }
        _ => path.to_owned(),
    }
}

/// Embedded mode without the demo, its HubSpot simulator serving `api_version`; the data
/// folder lives as long as the returned guard.
pub async fn start_at_version(api_version: &str) -> (gomark::Embedded, Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = gomark::EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        hubspot_api_version: api_version.into(),
        ..gomark::EmbeddedOptions::default()
    };
    let gomark = gomark::Embedded::start(options, gomark_platform::Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    (gomark, api, dir)
}

/// Stores `doc` as a revision, rolls it out and waits (30 s at most) for the rollout to end.
pub async fn roll_out(api: &Api, doc: &str) -> Value {
    let body = serde_json::json!({"document": doc, "message": "e2e"});
    let revision = api.send(Method::POST, "/v1/config/revisions", Some(body)).await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    let rollout = api.send(Method::POST, "/v1/rollouts", Some(serde_json::json!({}))).await;
    assert_eq!(rollout.status, 201, "{}", rollout.body);
    let id = rollout.body["id"].as_str().expect("id").to_owned();
    eventually("the rollout", Duration::from_secs(30), || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
        matches!(r.body["state"].as_str(), Some("completed" | "halted")).then_some(r.body)
    })
    .await
}
