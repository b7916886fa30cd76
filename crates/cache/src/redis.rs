//! The distributed cache: Redis through a deadpool pool, every call bounded by a timeout.

use crate::{Cache, CacheError, Result};
use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{Config, Pool, Runtime, Timeouts};
use std::time::Duration;

/// The rolling window, atomically: drop uses older than the window, then take a slot if
/// one is free, else say how long until the oldest use leaves. Time comes from Redis itself
/// so replicas with skewed clocks still agree.
static SLIDING_WINDOW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local window = tonumber(ARGV[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now - window)
        if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
            redis.call('ZADD', KEYS[1], now, ARGV[3])
            redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
            return 0
        end
        local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        return math.max(1, tonumber(oldest[2]) + window - now)
        ",
    )
});

/// Moves one slot to Redis's now, if it is still in the window.
static RESTAMP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local t = redis.call('TIME')
        redis.call('ZADD', KEYS[1], 'XX', tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[1])
        return 0
        ",
    )
});

/// The bound on waiting for a pooled connection, in multiples of the call timeout.
const QUEUE_WAIT_FACTOR: u32 = 30;

pub struct RedisCache {
    pool: Pool,
    prefix: String,
    timeout: Duration,
}

fn unavailable(err: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(err.to_string())
}

impl RedisCache {
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self> {
        let mut config = Config::from_url(url);
        let mut pool_config = deadpool_redis::PoolConfig::new(16);
        // Waiting for a pooled connection is this process queueing, not Redis failing: it
        // gets a long bound of its own, so a burst of callers is served in turn instead of
        // being told Redis is down (callers such as the HubSpot budget then fall back).
        let queue = (timeout * QUEUE_WAIT_FACTOR).max(Duration::from_secs(10));
        pool_config.timeouts = Timeouts { wait: Some(queue), create: Some(timeout), recycle: Some(timeout) };
        config.pool = Some(pool_config);
        let pool = config.create_pool(Some(Runtime::Tokio1)).map_err(unavailable)?;
        Ok(Self { pool, prefix: prefix.to_owned(), timeout })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.pool.get().await.map_err(unavailable)?;
        tokio::time::timeout(self.timeout, op(conn))
            .await
            .map_err(|_| CacheError::Unavailable("timed out".into()))?
            .map_err(unavailable)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(key);
        self.run(|mut c| async move { c.get::<_, Option<Vec<u8>>>(key).await }).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let key = self.key(key);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move { c.pset_ex::<_, _, ()>(key, value, ttl_ms).await }).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = self.key(key);
        self.run(|mut c| async move { c.del::<_, ()>(key).await }).await
    }

    async fn delete_all(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.run(|mut c| async move { c.del::<_, ()>(keys).await }).await
    }

    async fn acquire_slot(&self, key: &str, window: Duration, max: u32, slot: &str) -> Result<Option<Duration>> {
        let key = self.key(key);
        let window_us = window.as_micros().max(1) as u64;
        let member = slot.to_owned();
        self.run(|mut c| async move {
            let wait_us: i64 =
                SLIDING_WINDOW.key(&key).arg(window_us).arg(max).arg(member).invoke_async(&mut c).await?;
            Ok((wait_us > 0).then(|| Duration::from_micros(wait_us as u64)))
        })
        .await
    }

    async fn restamp_slot(&self, key: &str, slot: &str) -> Result<()> {
        let key = self.key(key);
        let member = slot.to_owned();
        self.run(|mut c| async move { RESTAMP.key(&key).arg(member).invoke_async::<()>(&mut c).await }).await
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64> {
        let key = self.key(key);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move {
            // One round trip; NX keeps the window's original expiry.
            let (count,): (u64,) = redis::pipe()
                .incr(&key, 1u64)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_ms)
                .arg("NX")
                .ignore()
                .query_async(&mut c)
                .await?;
            Ok(count)
        })
        .await
    }
}
