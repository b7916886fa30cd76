//! Change notification for watchers. Ingest only bumps counters and never waits on a
//! watcher; each watcher recomputes when it is ready, so a slow client sees fewer,
//! newer updates (coalesced) and never slows ingest. A company's watchers wake only for
//! that company's changes: with 200 companies each watched, a batch touching one wakes
//! one watcher, not 200.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Debug)]
pub struct Changes {
    /// Moves on every change anywhere: for portfolio watchers.
    any: watch::Sender<u64>,
    /// Moves on a change of that company; made when the first watcher subscribes, dropped
    /// once nobody watches.
    companies: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self { any: watch::channel(0).0, companies: Mutex::default() }
    }
}

impl Changes {
    /// Wakes the watchers of `companies` and of the portfolio.
    pub fn publish(&self, companies: &[String]) {
        {
            let mut watched = self.companies.lock().unwrap_or_else(|e| e.into_inner());
            for company in companies {
                if let Some(sender) = watched.get(company) {
                    sender.send_modify(|n| *n += 1);
                }
            }
            watched.retain(|_, sender| sender.receiver_count() > 0);
        }
        self.any.send_modify(|n| *n += 1);
    }

    /// Wakes on any change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Wakes on changes of `company` only.
    pub fn subscribe_company(&self, company: &str) -> watch::Receiver<u64> {
        let mut watched = self.companies.lock().unwrap_or_else(|e| e.into_inner());
        watched.entry(company.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishing_wakes_watchers_coalesced() {
        let changes = Changes::default();
        let mut rx = changes.subscribe();
        changes.publish(&["c1".to_owned()]);
        changes.publish(&["c2".to_owned()]);
        rx.changed().await.expect("woken");
        // Two publishes, one wake-up: coalesced.
        assert_eq!(*rx.borrow_and_update(), 2);
    }

    #[tokio::test]
    async fn a_company_watcher_wakes_only_for_its_company() {
        let changes = Changes::default();
        let mut c1 = changes.subscribe_company("c1");
        let c2 = changes.subscribe_company("c2");
        changes.publish(&["c2".to_owned()]);
        assert!(!c1.has_changed().expect("open"), "c1 is not woken by c2's change");
        assert!(c2.has_changed().expect("open"));
        changes.publish(&["c1".to_owned(), "c3".to_owned()]);
        c1.changed().await.expect("woken");
        assert_eq!(*c1.borrow_and_update(), 1);
        drop(c2);
        changes.publish(&[]);
        assert_eq!(changes.companies.lock().expect("lock").len(), 1, "unwatched companies are forgotten");
    }
}
