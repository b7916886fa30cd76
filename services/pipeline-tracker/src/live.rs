//! Change notification for watchers. Ingest only bumps counters and never waits on a
//! watcher; each watcher recomputes when it is ready, so a slow client sees fewer,
//! newer updates (coalesced) and never slows ingest.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Debug)]
pub struct Changes {
    /// Moves on every change anywhere; watchers wake on it.
    any: watch::Sender<u64>,
    /// Per company: how many ingested batches touched it in this process.
    companies: Mutex<HashMap<String, u64>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self { any: watch::channel(0).0, companies: Mutex::new(HashMap::new()) }
    }
}

impl Changes {
    pub fn publish(&self, companies: &[String]) {
        {
            let mut map = self.companies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for c in companies {
                *map.entry(c.clone()).or_default() += 1;
            }
        }
        self.any.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// This process's change counter for `company_id`.
    pub fn company(&self, company_id: &str) -> u64 {
        let map = self.companies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(company_id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishing_wakes_watchers_and_counts_per_company() {
        let changes = Changes::default();
        let mut rx = changes.subscribe();
        changes.publish(&["a".into()]);
        changes.publish(&["a".into(), "b".into()]);
        rx.changed().await.expect("woken");
        // Two publishes, one wake-up: coalesced.
        assert_eq!(*rx.borrow_and_update(), 2);
        assert_eq!((changes.company("a"), changes.company("b"), changes.company("c")), (2, 1, 0));
    }
}
