//! The middleware every CRM request passes through: latency, authentication (see `auth.rs`:
//! expired tokens get 401, client-credentials tokens 403), the change source of its writes,
//! per-portal rate limiting, fault injection, error-body normalisation, rate-limit headers and
//! logging.
//!
//! CRM search (`POST …/search`) is admitted against its own per-second budget instead of the
//! burst window and its responses carry no `X-HubSpot-RateLimit-*` headers, like HubSpot's.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{Credential, private_app_id};
use crate::error::{ApiError, RateLimitPolicy, rate_limit_response};
use crate::ratelimit::Outcome;
use crate::source::{self, ChangeSource};
use crate::{HubSpotSim, RecordedRequest, lock};

/// Largest framework-generated error body we bother to read when normalising it.
const MAX_NORMALISED_BODY: usize = 16 * 1024;
/// Largest write body accepted (HubSpot's own limit is lower; a bigger one is refused).
const MAX_WRITE_BODY: usize = 4 * 1024 * 1024;

pub(crate) async fn gate(State(sim): State<HubSpotSim>, mut request: Request, next: Next) -> Response {
    let timestamp = SystemTime::now();
    let is_search = request.method() == Method::POST && is_search_path(request.uri().path());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();

    let latency = sim.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    // A write's body is kept for the write log; reading it here leaves the handler a copy.
    let write_body = if crate::writelog::is_write(request.method(), &path) {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_WRITE_BODY).await else {
            return ApiError::validation("Request body too large").into_response();
        };
        request = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        Some(bytes)
    } else {
        None
    };

    let Some(token) = bearer_token(request.headers()) else {
        let response = ApiError::unauthenticated().into_response();
        sim.record(RecordedRequest { method, path, status: response.status().as_u16(), portal_id: None, timestamp });
        return response;
    };

    let credential = lock(&sim.inner.auth).resolve(&token, Instant::now());
    let (portal, oauth) = match credential {
        Credential::PortalToken(token) => (sim.portal_for(&token), false),
        Credential::OAuth { portal_token } => (sim.portal_for(&portal_token), true),
        Credential::Expired | Credential::App { .. } => {
            let response = if credential == Credential::Expired {
                ApiError::expired_token()
            } else {
                ApiError::for_status(
                    StatusCode::FORBIDDEN,
                    "Client credentials tokens only reach the webhooks journal APIs, not CRM records",
                )
            }
            .into_response();
            sim.record(RecordedRequest {
                method,
                path,
                status: response.status().as_u16(),
                portal_id: None,
                timestamp,
            });
            return response;
        }
    };
    let change_source = match request_source(request.headers()) {
        Some(source) => source,
        None if oauth => ChangeSource::integration(sim.app_id()),
        None => ChangeSource::integration(private_app_id(lock(&portal).id)),
    };
    let (portal_id, outcome, injected) = {
        let mut guard = lock(&portal);
        let now = Instant::now();
        let today = chrono::Utc::now().date_naive();
        let limits = sim.limits();
        let outcome = if is_search {
            guard.limiter.admit_search(limits, now, today)
        } else {
            guard.traffic.observe(now, limits.burst_window);
            guard.limiter.admit(limits, now, today)
        };
        let injected = match outcome {
            Outcome::Allowed(_) => guard.take_injected_failure(),
            Outcome::Limited(..) => None,
        };
        (guard.id, outcome, injected)
    };

    let (mut response, snapshot) = match outcome {
        Outcome::Limited(policy, snapshot) => (rate_limit_response(policy, portal_id), snapshot),
        Outcome::Allowed(snapshot) => {
            let response = if let Some(status) = injected {
                injected_response(status, portal_id, is_search)
            } else if random_failure(sim.failure_rate()) {
                ApiError::for_status(StatusCode::BAD_GATEWAY, "Bad Gateway (random failure injected by hubspot-sim)")
                    .into_response()
            } else {
                request.extensions_mut().insert(Arc::clone(&portal));
                request.extensions_mut().insert(sim.clone());
                let response = source::scope(change_source, next.run(request)).await;
                // Handlers that locked the portal directly left their changes queued.
                sim.flush(&portal);
                normalise_error(response).await
            };
            (response, snapshot)
        }
    };

    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        let mut guard = lock(&portal);
        guard.traffic.rate_limited = guard.traffic.rate_limited.saturating_add(1);
    }
    if !is_search {
        snapshot.apply(response.headers_mut());
    }
    if let Some(body) = write_body {
        let cut = &body[..body.len().min(crate::writelog::MAX_LOGGED_BODY)];
        sim.record_write(crate::RecordedWrite {
            portal_id,
            method: method.clone(),
            path: path.clone(),
            body: String::from_utf8_lossy(cut).into_owned(),
            status: response.status().as_u16(),
            at_ms: crate::model::now_ms(),
        });
    }
    sim.record(RecordedRequest {
        method,
        path,
        status: response.status().as_u16(),
        portal_id: Some(portal_id),
        timestamp,
    });
    response
}

/// Test hooks: `X-HubSpot-Sim-UI-User: <id>` makes the request a hand edit in the UI by that
/// user (`CRM_UI`, `userId:<id>`); `X-HubSpot-Sim-Change-Source` (one of
/// [`CHANGE_SOURCES`](crate::CHANGE_SOURCES)) with an optional `X-HubSpot-Sim-Source-Id` sets
/// any other source (e.g. `AUTOMATION`).
fn request_source(headers: &HeaderMap) -> Option<ChangeSource> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    if let Some(user) = text("x-hubspot-sim-ui-user").and_then(|v| v.parse::<u64>().ok()) {
        return Some(ChangeSource::ui_user(user));
    }
    let change_source = text("x-hubspot-sim-change-source")?.to_ascii_uppercase();
    crate::CHANGE_SOURCES
        .contains(&change_source.as_str())
        .then(|| ChangeSource { change_source, source_id: text("x-hubspot-sim-source-id").map(str::to_owned) })
}

/// `Authorization: Bearer <token>` (scheme case-insensitive); `None` if missing or empty.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// `…/objects/{type}/search` on the v3 or date-versioned paths.
fn is_search_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path.ends_with("/search") && (path.starts_with("/crm/v3/objects/") || path.starts_with("/crm/objects/"))
}

fn random_failure(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

fn injected_response(status: u16, portal_id: u64, is_search: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let policy = if is_search { RateLimitPolicy::Secondly } else { RateLimitPolicy::TenSecondlyRolling };
        return rate_limit_response(policy, portal_id);
    }
    ApiError::for_status(
        status,
        format!("{} (failure injected by hubspot-sim)", status.canonical_reason().unwrap_or("Injected failure")),
    )
    .into_response()
}

/// Turns framework-generated non-2xx responses (405, query rejections, ...) into HubSpot
/// error bodies so that every error has the same JSON shape.
async fn normalise_error(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_success() || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_NORMALISED_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("Error").to_owned() } else { text };
    let mut fresh = ApiError::for_status(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        map
    }

    #[test]
    fn search_paths() {
        assert!(is_search_path("/crm/v3/objects/deals/search"));
        assert!(is_search_path("/crm/objects/2026-03/deals/search/"));
        assert!(!is_search_path("/crm/v3/properties/deals/search"));
        assert!(!is_search_path("/crm/v3/objects/deals/123"));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")).as_deref(), Some("abc"));
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
