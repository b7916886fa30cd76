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

pub use api_keys::{ApiKeyRecord, ApiKeys};

/// Routes anyone may call: health, the API description, webhooks (which check their own
/// signatures).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/openapi.json", "/docs", "/dashboard", "/webhooks/hubspot"];

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
    if PUBLIC_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let caller = match state.auth.authenticate(req.headers().get(header::AUTHORIZATION)).await {
        Ok(caller) => caller,
        Err(problem) => {
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
    response
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
