//! `Idempotency-Key` on POST: the first response to a key is stored and replayed for every
//! retry with the same key and the same request, so a client that lost a response can retry
//! without creating twice. Keys are per caller and kept 24 hours.
//!
//! A response carrying a secret (a new API key) is never stored as sent: its secret is
//! removed first, and a retry gets 409 naming the key that was created (revoke it and
//! create another if the secret was lost), so no secret rests in the database.
//!
//! A key is never left "in progress" by a request that did not finish: the request runs on
//! to its outcome when its client hangs up (the outcome is what the retry gets), a request
//! cut by the deadline releases its key, and a key left by a process that died mid-request
//! is taken over once no request could still be running under it.

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
use std::time::Duration;
use tracing::Instrument as _;

const HEADER: &str = "idempotency-key";
const KEEP_MS: i64 = 24 * 3600 * 1000;
/// Routes whose successful response holds a secret, and the member holding it.
const SECRET_BEARING: &[(&str, &str)] = &[("/v1/api-keys", "key")];
/// Response headers worth replaying.
const REPLAYED_HEADERS: &[HeaderName] = &[header::CONTENT_TYPE, header::LOCATION, header::ETAG];

#[derive(Clone, Debug)]
pub struct IdempotencyStore {
    db: Database,
    /// How long one request may run (the gateway's request deadline).
    deadline: Duration,
}

impl IdempotencyStore {
    pub fn new(db: Database, deadline: Duration) -> Self {
        Self { db, deadline }
    }

    /// A key still "in progress" after this long was left by a process that died: no
    /// request runs past its deadline (twice it, for clocks of replicas a little apart).
    fn abandoned_after_ms(&self) -> i64 {
        i64::try_from(self.deadline.as_millis()).unwrap_or(i64::MAX / 4).saturating_mul(2)
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
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2 \
             AND (created_at < $3 OR (status = 0 AND created_at < $4))",
        )
        .bind(actor)
        .bind(key)
        .bind(now - KEEP_MS)
        .bind(now - self.abandoned_after_ms())
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

/// The JSON member holding a secret in this route's responses, if any.
fn secret_member(path: &str) -> Option<&'static str> {
    SECRET_BEARING.iter().find(|(route, _)| *route == path).map(|(_, member)| *member)
}

/// `body` without its secret; a body that is not the JSON object expected keeps nothing.
fn redact(body: &[u8], member: &str) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut object)) => {
            object.remove(member);
            serde_json::Value::Object(object).to_string()
        }
        _ => String::new(),
    }
}

/// What a retry of a secret-bearing request gets: the secret was shown once and is gone.
fn secret_already_shown(stored: &str) -> Response {
    let id = serde_json::from_str::<serde_json::Value>(stored)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
    let detail = match id {
        Some(id) => format!(
            "the first request with this Idempotency-Key created {id}; its secret was shown once and is not kept: \
             revoke it and create another if it was lost"
        ),
        None => "the first request with this Idempotency-Key already succeeded; its secret is not kept".into(),
    };
    let mut response = Problem::new(ErrorKind::AlreadyExists, detail).into_response();
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
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
    let secret = secret_member(parts.uri.path());

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
        Ok(Claim::Replay { status, body, .. }) if secret.is_some() && (200..300).contains(&status) => {
            return secret_already_shown(&body);
        }
        Ok(Claim::Replay { status, body, headers }) => return replay(status, body, &headers),
        Ok(Claim::New) => {}
    }
    // On its own task: a client that hangs up drops this handler, and the request must not
    // stop half-way with its key left "in progress"; it runs on, and the retry gets its outcome.
    let store = state.idempotency.clone();
    let request = Request::from_parts(parts, Body::from(bytes));
    let run = tokio::spawn(
        async move {
            let Ok(response) = tokio::time::timeout(store.deadline, next.run(request)).await else {
                store.release(&actor, &key).await;
                return Problem::new(ErrorKind::Timeout, "the request took too long").into_response();
            };
            finish(&store, &actor, &key, secret, response).await
        }
        // Still the request's span: its logs and calls stay in the caller's trace.
        .in_current_span(),
    );
    run.await.unwrap_or_else(|_| Problem::new(ErrorKind::Internal, "internal error").into_response())
}

/// Records `response` as the key's outcome (a server error releases the key instead).
async fn finish(
    store: &IdempotencyStore,
    actor: &str,
    key: &str,
    secret: Option<&str>,
    response: Response,
) -> Response {
    let status = response.status();
    if status.is_server_error() {
        store.release(actor, key).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        store.release(actor, key).await;
        return Problem::new(ErrorKind::Internal, "internal error").into_response();
    };
    let text = match secret {
        Some(member) if status.is_success() => redact(&bytes, member),
        _ => String::from_utf8_lossy(&bytes).into_owned(),
    };
    store.record(actor, key, status.as_u16(), &text, &encode_headers(&parts.headers)).await;
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_left_in_progress_by_a_dead_process_is_taken_over_after_the_deadline() {
        let tdb = gomark_testkit::TestDatabase::sqlite();
        let db = Database::connect(&tdb.settings).await.expect("db");
        db.migrate(&crate::MIGRATIONS).await.expect("migrate");
        let store = IdempotencyStore::new(db, Duration::from_millis(50));
        assert!(matches!(store.claim("a", "k", "h").await, Ok(Claim::New)));
        // The process that claimed it dies here: nothing records or releases the key.
        assert!(matches!(store.claim("a", "k", "h").await, Ok(Claim::InProgress)), "within the deadline");
        assert!(matches!(store.claim("a", "k", "other").await, Ok(Claim::Mismatch)));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(matches!(store.claim("a", "k", "h").await, Ok(Claim::New)), "no request outlives twice the deadline");
        assert!(matches!(store.claim("a", "k", "h").await, Ok(Claim::InProgress)), "and it is this request's now");
        store.record("a", "k", 201, "{}", "[]").await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            matches!(store.claim("a", "k", "h").await, Ok(Claim::Replay { status: 201, .. })),
            "a recorded answer is kept its 24 hours"
        );
    }

    #[test]
    fn the_secret_of_a_new_key_is_never_kept() {
        assert_eq!(secret_member("/v1/api-keys"), Some("key"));
        assert_eq!(secret_member("/v1/companies"), None);
        let stored = redact(br#"{"key":"gmk_secret","id":"key_1","name":"ci"}"#, "key");
        assert!(!stored.contains("gmk_secret"), "{stored}");
        assert!(stored.contains("key_1"));
        assert_eq!(redact(b"not json gmk_secret", "key"), "");
    }
}
