//! Per-caller rate limits: fixed one-minute windows counted in the shared cache (Redis in
//! distributed mode, so every gateway replica sees the same count), with a local counter
//! as the fallback when the cache is down.
//!
//! Refused credentials are limited too, per client address: once a client has been refused
//! as often in a minute as a key may call, its further attempts are answered 429 before
//! any key lookup, so guessing keys costs the database nothing.

use crate::problem::Problem;
use axum::http::{HeaderMap, HeaderValue};
use gomark_cache::{Cache, MemoryCache};
use gomark_platform::ErrorKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(60);
/// Most clients remembered as blocked; past it, expired entries are dropped first.
const MAX_BLOCKED: usize = 10_000;

pub struct RateLimiter {
    shared: Arc<dyn Cache>,
    local: MemoryCache,
    per_minute: u64,
    /// Clients refused too often, and until when (ms); this replica's memory of the shared
    /// count, so a blocked client costs no cache call either.
    blocked: Mutex<HashMap<String, u64>>,
}

/// What remains of a caller's quota, for the response headers.
pub struct Quota {
    limit: u64,
    remaining: u64,
    /// Seconds until the window ends and the quota is whole again.
    reset: u64,
}

impl Quota {
    /// The IETF draft's headers (draft-ietf-httpapi-ratelimit-headers): the limit, what is
    /// left, when it resets and the policy (`<limit>;w=<window seconds>`).
    pub fn annotate(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset));
        if let Ok(policy) = HeaderValue::from_str(&format!("{};w={}", self.limit, WINDOW.as_secs())) {
            headers.insert("ratelimit-policy", policy);
        }
    }
}

impl RateLimiter {
    pub fn new(shared: Arc<dyn Cache>, per_minute: u64) -> Self {
        Self { shared, local: MemoryCache::new("gateway-local"), per_minute, blocked: Mutex::new(HashMap::new()) }
    }

    fn too_many(&self, retry_after_ms: u64) -> Problem {
        let mut problem =
            Problem::new(ErrorKind::RateLimited, format!("more than {} requests a minute", self.per_minute));
        problem.retry_after = Some(retry_after_ms.div_ceil(1000));
        problem
    }

    /// 429 for a client refused too often this minute, before its credential is looked up.
    pub fn refuse_blocked(&self, client: &str) -> Result<(), Problem> {
        let now = gomark_storage::now_ms().max(0) as u64;
        let blocked = self.blocked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match blocked.get(client) {
            Some(&until) if until > now => Err(self.too_many(until - now)),
            _ => Ok(()),
        }
    }

    /// Counts a refused credential from `client`; past the limit, blocks it until the
    /// minute ends.
    pub async fn count_refusal(&self, client: &str) {
        let now = gomark_storage::now_ms().max(0) as u64;
        let window_ms = WINDOW.as_millis() as u64;
        let key = format!("gateway:authfail:{client}:{}", now / window_ms);
        let count = match self.shared.incr(&key, WINDOW).await {
            Ok(n) => n,
            Err(_) => self.local.incr(&key, WINDOW).await.unwrap_or(1),
        };
        if count >= self.per_minute {
            let mut blocked = self.blocked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if blocked.len() >= MAX_BLOCKED {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < MAX_BLOCKED {
                blocked.insert(client.to_owned(), now - now % window_ms + window_ms);
            }
        }
    }

    pub async fn check(&self, actor: &str) -> Result<Quota, Problem> {
        let now = gomark_storage::now_ms().max(0) as u64;
        let window = now / WINDOW.as_millis() as u64;
        let key = format!("gateway:ratelimit:{actor}:{window}");
        let count = match self.shared.incr(&key, WINDOW).await {
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(error = %err, "shared rate limit unavailable, counting locally");
                self.local.incr(&key, WINDOW).await.unwrap_or(1)
            }
        };
        let until_reset_ms = WINDOW.as_millis() as u64 - now % WINDOW.as_millis() as u64;
        if count > self.per_minute {
            return Err(self.too_many(until_reset_ms));
        }
        Ok(Quota { limit: self.per_minute, remaining: self.per_minute - count, reset: until_reset_ms.div_ceil(1000) })
    }
}
