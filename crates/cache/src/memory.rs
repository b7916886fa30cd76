//! The embedded cache: a map with expiry, bounded in size.

use crate::{Cache, Result};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many entries, expired ones are swept and, if still full, the map is cleared:
/// crude, but a cache may always forget.
const MAX_ENTRIES: usize = 50_000;

pub struct MemoryCache {
    prefix: String,
    entries: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
    /// Rolling windows: the uses still inside each window, oldest first.
    windows: Mutex<HashMap<String, VecDeque<(Instant, String)>>>,
}

impl MemoryCache {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), entries: Mutex::new(HashMap::new()), windows: Mutex::new(HashMap::new()) }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Vec<u8>)>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(key);
        let mut entries = self.entries();
        match entries.get(&key) {
            Some((expires, value)) if *expires > Instant::now() => Ok(Some(value.clone())),
            Some(_) => {
                entries.remove(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let key = self.key(key);
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now() + ttl, value.to_vec()));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = self.key(key);
        self.entries().remove(&key);
        Ok(())
    }

    async fn acquire_slot(&self, key: &str, window: Duration, max: u32, slot: &str) -> Result<Option<Duration>> {
        let key = self.key(key);
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= MAX_ENTRIES {
            windows.retain(|_, uses| uses.back().is_some_and(|(last, _)| now.duration_since(*last) < window));
        }
        let uses = windows.entry(key).or_default();
        while uses.front().is_some_and(|(first, _)| now.duration_since(*first) >= window) {
            uses.pop_front();
        }
        if uses.len() < max as usize {
            uses.push_back((now, slot.to_owned()));
            return Ok(None);
        }
        Ok(Some(uses.front().map_or(window, |(first, _)| window.saturating_sub(now.duration_since(*first)))))
    }

    async fn restamp_slot(&self, key: &str, slot: &str) -> Result<()> {
        let key = self.key(key);
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(uses) = windows.get_mut(&key)
            && let Some(at) = uses.iter().position(|(_, s)| s == slot)
            && let Some(found) = uses.remove(at)
        {
            // Now is the latest instant there is: pushing back keeps the deque in time order.
            uses.push_back((Instant::now(), found.1));
        }
        Ok(())
    }

    async fn incr(&self, key: &str, ttl: Duration) -> Result<u64> {
        let key = self.key(key);
        let now = Instant::now();
        let mut entries = self.entries();
        let entry = entries.entry(key).or_insert_with(|| (now + ttl, 0u64.to_le_bytes().to_vec()));
        if entry.0 <= now {
            *entry = (now + ttl, 0u64.to_le_bytes().to_vec());
        }
        let count = entry.1.as_slice().try_into().map(u64::from_le_bytes).unwrap_or(0) + 1;
        entry.1 = count.to_le_bytes().to_vec();
        Ok(count)
    }
}
