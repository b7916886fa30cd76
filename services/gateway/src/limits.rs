//! Per-caller rate limits: fixed one-minute windows counted in the shared cache (Redis in
//! distributed mode, so every gateway replica sees the same count), with a local counter
//! as the fallback when the cache is down.

use crate::problem::Problem;
use axum::http::{HeaderMap, HeaderValue};
use gomark_cache::{Cache, MemoryCache};
use gomark_platform::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    shared: Arc<dyn Cache>,
    local: MemoryCache,
    per_minute: u64,
}

/// What remains of a caller's quota, for the response headers.
pub struct Quota {
    limit: u64,
    remaining: u64,
}

impl Quota {
    pub fn annotate(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
    }
}

impl RateLimiter {
    pub fn new(shared: Arc<dyn Cache>, per_minute: u64) -> Self {
        Self { shared, local: MemoryCache::new("gateway-local"), per_minute }
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
        if count > self.per_minute {
            let retry_after = (WINDOW.as_millis() as u64 - now % WINDOW.as_millis() as u64).div_ceil(1000);
            let mut problem =
                Problem::new(ErrorKind::RateLimited, format!("more than {} requests a minute", self.per_minute));
            problem.retry_after = Some(retry_after);
            return Err(problem);
        }
        Ok(Quota { limit: self.per_minute, remaining: self.per_minute - count })
    }
}
