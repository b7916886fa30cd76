//! `Idempotency-Key` on POST: the first response to a key is stored and replayed for every
//! retry with the same key and the same request, so a client that lost a response can retry
//! without creating twice. Keys are per caller and kept 24 hours.

use crate::problem::Problem;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gomark_platform::{Caller, ErrorKind};
use gomark_storage::Database;
use sha2::{Digest, Sha256};
use sqlx::Row;

const HEADER: &str = "idempotency-key";
const KEEP_MS: i64 = 24 * 3600 * 1000;
/// Response headers worth replaying.
const REPLAYED_HEADERS: &[HeaderName] = &[header::CONTENT_TYPE, header::LOCATION, header::ETAG];

#[derive(Clone, Debug)]
pub struct IdempotencyStore {
    db: Database,
}

impl IdempotencyStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

enum Claim {
    /// First time: run the request and record its response.
    New,
    Replay {
        status: u16,
        body: String,
        headers: String,
    },
    InProgress,
    Mismatch,
}

fn failed(err: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %err, "idempotency store failed");
    Problem::new(ErrorKind::Unavailable, "idempotency records are unavailable, retry later")
}

impl IdempotencyStore {
    async fn claim(&self, actor: &str, key: &str, hash: &str) -> Result<Claim, Problem> {
        let now = gomark_storage::now_ms();
        sqlx::query("DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2 AND created_at < $3")
            .bind(actor)
            .bind(key)
            .bind(now - KEEP_MS)
            .execute(self.db.pool())
            .await
            .map_err(failed)?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (actor, idem_key, request_hash, status, created_at) VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(actor)
        .bind(key)
        .bind(hash)
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::New);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, response_body, response_headers FROM idempotency_keys WHERE actor = $1 AND idem_key = $2",
        )
        .bind(actor)
        .bind(key)
        .fetch_one(self.db.pool())
        .await
        .map_err(failed)?;
        let stored_hash: String = row.try_get("request_hash").map_err(failed)?;
        let status: i64 = row.try_get("status").map_err(failed)?;
        Ok(match (stored_hash == hash, status) {
            (false, _) => Claim::Mismatch,
            (true, 0) => Claim::InProgress,
            (true, status) => Claim::Replay {
                status: status as u16,
                body: row.try_get("response_body").map_err(failed)?,
                headers: row.try_get("response_headers").map_err(failed)?,
            },
        })
    }

    async fn record(&self, actor: &str, key: &str, status: u16, body: &str, headers: &str) {
        let outcome = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response_body = $2, response_headers = $3 WHERE actor = $4 AND idem_key = $5",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(headers)
        .bind(actor)
        .bind(key)
        .execute(self.db.pool())
        .await;
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "idempotent response not recorded; a retry will run again");
        }
    }

    /// Forgets a key whose request failed on our side, so the client may retry it.
    async fn release(&self, actor: &str, key: &str) {
        let outcome = sqlx::query("DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2")
            .bind(actor)
            .bind(key)
            .execute(self.db.pool())
            .await;
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "idempotency key not released");
        }
    }
}

fn encode_headers(headers: &HeaderMap) -> String {
    let pairs: Vec<(String, String)> = REPLAYED_HEADERS
        .iter()
        .filter_map(|name| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| (name.to_string(), v.to_owned())))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_default()
}

fn replay(status: u16, body: String, headers: &str) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
    let pairs: Vec<(String, String)> = serde_json::from_str(headers).unwrap_or_default();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

pub async fn replay_or_record(State(state): State<crate::routes::AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.headers().contains_key(HEADER) {
        return next.run(req).await;
    }
    let Some(actor) = req.extensions().get::<Caller>().map(|c| c.actor.clone()) else {
        return next.run(req).await;
    };
    let key = match req.headers().get(HEADER).and_then(|v| v.to_str().ok()).map(str::trim) {
        Some(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => return Problem::invalid("Idempotency-Key", "must be 1 to 255 visible characters").into_response(),
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.max_body_bytes).await else {
        return Problem::http(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large").into_response();
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let hash = hex::encode(hasher.finalize());

    match state.idempotency.claim(&actor, &key, &hash).await {
        Err(problem) => return problem.into_response(),
        Ok(Claim::Mismatch) => {
            return Problem::new(
                ErrorKind::FailedPrecondition,
                "this Idempotency-Key was used for a different request",
            )
            .into_response();
        }
        Ok(Claim::InProgress) => {
            return Problem::new(ErrorKind::AlreadyExists, "a request with this Idempotency-Key is still in progress")
                .into_response();
        }
        Ok(Claim::Replay { status, body, headers }) => return replay(status, body, &headers),
        Ok(Claim::New) => {}
    }
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = response.status();
    if status.is_server_error() {
        state.idempotency.release(&actor, &key).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        state.idempotency.release(&actor, &key).await;
        return Problem::new(ErrorKind::Internal, "internal error").into_response();
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    state.idempotency.record(&actor, &key, status.as_u16(), &text, &encode_headers(&parts.headers)).await;
    Response::from_parts(parts, Body::from(bytes))
}
