//! The distributed cache: Redis through a deadpool pool, every call bounded by a timeout.

use crate::{Cache, CacheError, Result};
use async_trait::async_trait;
use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{Config, Pool, Runtime, Timeouts};
use std::time::Duration;

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
        pool_config.timeouts = Timeouts { wait: Some(timeout), create: Some(timeout), recycle: Some(timeout) };
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
        let call = async {
            let conn = self.pool.get().await.map_err(unavailable)?;
            op(conn).await.map_err(unavailable)
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| CacheError::Unavailable("timed out".into()))?
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
