//! Short-lived caches shared by a service's replicas: Redis in distributed mode, a map in
//! memory embedded. Always used cache-aside ([`CacheAside`]): the database stays the truth,
//! and a cache that is down is a miss, never an error a caller sees.

mod memory;
mod redis;

pub use memory::MemoryCache;
pub use redis::RedisCache;

use async_trait::async_trait;
use gomark_platform::settings::{SettingsError, Validate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, CacheError>;

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// Deletes every key of `keys`; on Redis one command, one round trip.
    async fn delete_all(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
    /// Adds one to the counter at `key` and returns the new count; a new counter lives
    /// for `ttl` (fixed windows for rate limits, shared by every replica on Redis).
    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64>;
    /// Takes slot `slot` of a rolling window allowing `max` uses per `window` (exact: never
    /// more than `max` in ANY window of that length). `None` when granted; otherwise how
    /// long until a slot frees up. Shared by every replica on Redis.
    async fn acquire_slot(&self, key: &str, window: Duration, max: u32, slot: &str) -> Result<Option<Duration>>;
    /// Moves a granted slot's time to now: a use counts from when it really happened (a
    /// request that waited to be sent), so the window stays honest under load.
    async fn restamp_slot(&self, key: &str, slot: &str) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheSettings {
    pub kind: CacheKind,
    pub redis_url: String,
    /// Prepended to every key, so services (and tests) never collide.
    pub key_prefix: String,
    pub ttl_secs: u64,
    /// A Redis call slower than this counts as a miss; keeps a sick Redis from slowing reads.
    pub timeout_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            kind: CacheKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "gomark".into(),
            ttl_secs: 60,
            timeout_ms: 100,
        }
    }
}

impl Validate for CacheSettings {
    fn validate(&self) -> std::result::Result<(), SettingsError> {
        if self.kind == CacheKind::Redis && !self.redis_url.starts_with("redis://") {
            return Err(SettingsError::invalid("cache.redis_url", "must start with redis://"));
        }
        if self.ttl_secs == 0 {
            return Err(SettingsError::invalid("cache.ttl_secs", "must be at least 1"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 10_000 {
            return Err(SettingsError::invalid("cache.timeout_ms", "must be between 1 and 10000"));
        }
        Ok(())
    }
}

/// Builds the cache `settings` describe. Redis is connected lazily, so a Redis that is
/// down at start does not stop the service.
pub fn build(settings: &CacheSettings) -> Result<Arc<dyn Cache>> {
    Ok(match settings.kind {
        CacheKind::Memory => Arc::new(MemoryCache::new(&settings.key_prefix)),
        CacheKind::Redis => Arc::new(RedisCache::new(
            &settings.redis_url,
            &settings.key_prefix,
            Duration::from_millis(settings.timeout_ms),
        )?),
    })
}

/// Cache-aside reads of JSON values, with errors demoted to misses.
#[derive(Clone)]
pub struct CacheAside {
    cache: Arc<dyn Cache>,
    ttl: Duration,
}

impl CacheAside {
    pub fn new(cache: Arc<dyn Cache>, ttl: Duration) -> Self {
        Self { cache, ttl }
    }

    /// The cached value of `key`, or `load()`'s, which is then cached.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &str, load: F) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        match self.cache.get(key).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(value) => {
                    metrics::counter!("cache_requests_total", "outcome" => "hit").increment(1);
                    return Ok(value);
                }
                Err(err) => tracing::warn!(key, error = %err, "cached value unreadable, reloading"),
            },
            Ok(None) => metrics::counter!("cache_requests_total", "outcome" => "miss").increment(1),
            Err(err) => {
                metrics::counter!("cache_requests_total", "outcome" => "error").increment(1);
                tracing::debug!(key, error = %err, "cache unavailable, reading the database");
            }
        }
        let value = load().await?;
        if let Ok(bytes) = serde_json::to_vec(&value)
            && let Err(err) = self.cache.set(key, &bytes, self.ttl).await
        {
            tracing::debug!(key, error = %err, "cache write skipped");
        }
        Ok(value)
    }

    /// Forgets `key` after a write. A failure is logged: the TTL bounds staleness.
    pub async fn invalidate(&self, key: &str) {
        if let Err(err) = self.cache.delete(key).await {
            tracing::warn!(key, error = %err, "cache invalidation failed; entry expires with its ttl");
        }
    }
}
