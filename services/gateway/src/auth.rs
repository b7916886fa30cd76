//! Authentication: who is calling. API keys (`Authorization: Bearer gmk_…`) are looked up
//! by hash; other bearer tokens are OIDC JWTs verified against the configured issuer's
//! JWKS. The result is a [`Caller`] every route hands on to the services.

pub mod api_keys;
pub mod oidc;

use crate::problem::Problem;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gomark_platform::{Caller, ErrorKind};
use std::sync::Arc;

pub use api_keys::{ApiKeyRecord, ApiKeys};

/// Routes anyone may call: health, the API description, webhooks (which check their own
/// signatures).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/openapi.json", "/docs", "/dashboard", "/webhooks/hubspot"];
/// And the static files of `/docs` and `/dashboard` (vendored libraries and the pages' own
/// scripts: nothing secret).
const PUBLIC_PREFIXES: &[&str] = &["/docs/assets/", "/dashboard/assets/"];

pub struct Authenticator {
    pub keys: ApiKeys,
    pub oidc: Option<oidc::OidcVerifier>,
}

fn unauthenticated(detail: &str) -> Problem {
    Problem::new(ErrorKind::Unauthenticated, detail)
}

impl Authenticator {
    pub async fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Caller, Problem> {
        let value = authorization.ok_or_else(|| unauthenticated("send Authorization: Bearer <API key or token>"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header must be: Bearer <API key or token>"))?;
        if token.starts_with(api_keys::KEY_PREFIX) {
            return match self.keys.authenticate(token).await {
                Ok(Some(caller)) => Ok(caller),
                Ok(None) => Err(unauthenticated("the API key is unknown, expired or revoked")),
                Err(err) => {
                    tracing::error!(error = %err, "api key lookup failed");
                    Err(Problem::new(ErrorKind::Unavailable, "authentication is unavailable, retry later"))
                }
            };
        }
        match &self.oidc {
            Some(oidc) => oidc.verify(token).await,
            None => Err(unauthenticated("the bearer token is not a GoMark API key")),
        }
    }
}

/// Puts the authenticated [`Caller`] into the request, or answers 401; then applies the
/// caller's rate limit.
pub async fn require_caller(State(state): State<crate::routes::AppState>, mut req: Request, next: Next) -> Response {
    if PUBLIC_PATHS.contains(&req.uri().path()) || PUBLIC_PREFIXES.iter().any(|p| req.uri().path().starts_with(p)) {
        return next.run(req).await;
    }
    let client = client_address(&req);
    if let Err(limited) = state.limiter.refuse_blocked(&client) {
        return limited.into_response();
    }
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let caller = match state.auth.authenticate(authorization.as_ref()).await {
        Ok(caller) => caller,
        Err(problem) => {
            // Only unknown API keys cost a lookup; a missing header costs nothing.
            if problem.status == 401 && presents_api_key(authorization.as_ref()) {
                state.limiter.count_refusal(&client).await;
            }
            let mut response = problem.into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gomark\""));
            return response;
        }
    };
    let quota = match state.limiter.check(&caller.actor).await {
        Ok(quota) => quota,
        Err(limited) => return limited.into_response(),
    };
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    quota.annotate(response.headers_mut());
    if is_event_stream(&response) {
        response = end_when_revoked(response, state.auth.clone(), authorization);
    }
    response
}

/// The peer address the server recorded; "unknown" when served some other way (tests
/// calling the router directly). Behind a proxy this is the proxy: see SECURITY.md.
fn client_address(req: &Request) -> String {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |info| info.0.ip().to_string())
}

/// Whether the request offered an API key (`Bearer gmk_…`), the kind that costs a lookup.
fn presents_api_key(authorization: Option<&HeaderValue>) -> bool {
    // After "Bearer " (any case).
    let token = authorization.and_then(|v| v.to_str().ok()).and_then(|v| v.get(7..)).map(str::trim);
    token.is_some_and(|t| t.starts_with(api_keys::KEY_PREFIX))
}

/// How often an open event stream checks that its credential still holds.
const STREAM_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Ends an event stream within [`STREAM_RECHECK`] of its credential being revoked or
/// expiring. An outage of the key store does not end it: the stream only reads, and the
/// next check decides.
fn end_when_revoked(response: Response, auth: Arc<Authenticator>, authorization: Option<HeaderValue>) -> Response {
    use futures::StreamExt as _;
    let revoked = async move {
        loop {
            tokio::time::sleep(STREAM_RECHECK).await;
            match auth.authenticate(authorization.as_ref()).await {
                Err(problem) if problem.status == 401 || problem.status == 403 => return,
                _ => {}
            }
        }
    };
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().take_until(revoked);
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

/// The caller of this request (the middleware put it there).
pub struct Auth(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().map(Auth).ok_or_else(|| unauthenticated("authentication required"))
    }
}

/// Creates the first admin key on a fresh installation (or stores the configured one).
/// Returns the key only when it was generated here, so it can be shown once.
pub async fn bootstrap_admin(keys: &ApiKeys, configured: Option<&str>) -> anyhow::Result<Option<String>> {
    if keys.has_active_portfolio_admin().await? {
        return Ok(None);
    }
    if let Some(key) = configured {
        keys.insert_known("bootstrap admin", key, gomark_platform::Role::Admin, None, "system:bootstrap").await?;
        return Ok(None);
    }
    let new = keys.create("bootstrap admin", gomark_platform::Role::Admin, None, None, "system:bootstrap").await?;
    Ok(Some(new.key))
}
