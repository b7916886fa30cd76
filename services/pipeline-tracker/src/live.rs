//! Change notification for watchers. Ingest only bumps counters and never waits on a
//! watcher; each watcher recomputes when it is ready, so a slow client sees fewer,
//! newer updates (coalesced) and never slows ingest. A company's watchers wake only for
//! that company's changes: with 200 companies each watched, a batch touching one wakes
//! one watcher, not 200.
//!
//! When ingest already has a company's new figures (from its kept sums), it hands them
//! over with the wake-up ([`Fresh`]): computed once per company per batch and shared by
//! all its watchers, none of which then reads the database or the cache.

use gomark_proto::pipeline_tracker::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A company's figures as a batch left them.
#[derive(Debug, Clone, PartialEq)]
pub struct Fresh {
    /// The company's change counter they reflect.
    pub version: i64,
    pub funnels: Arc<pb::CompanyFunnels>,
}

/// What a company's watchers are woken with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompanyChange {
    /// Moves on every change.
    pub count: u64,
    /// The newest figures, when the last change came with them; `None` means "recompute".
    pub fresh: Option<Fresh>,
    /// The highest change counter announced so far: figures of an older one (a slower
    /// batch finishing late) are never handed over.
    newest: i64,
}

#[derive(Debug)]
pub struct Changes {
    /// Moves on every change anywhere: for portfolio watchers.
    any: watch::Sender<u64>,
    /// Moves on a change of that company; made when the first watcher subscribes, dropped
    /// once nobody watches.
    companies: Mutex<HashMap<String, watch::Sender<CompanyChange>>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self { any: watch::channel(0).0, companies: Mutex::default() }
    }
}

impl Changes {
    /// Wakes the watchers of `companies` and of the portfolio.
    pub fn publish(&self, companies: &[String]) {
        self.publish_with(companies.iter().map(|c| (c.as_str(), None, None)), || true);
    }

    /// Wakes the watchers of each company and of the portfolio; a company's watchers get its
    /// change counter (when known) and its new figures (when computed). `current` is asked,
    /// under the lock, whether figures may still be handed over (the configuration they
    /// were computed under is still in force); if not, watchers recompute.
    pub fn publish_with<S: AsRef<str>>(
        &self,
        companies: impl IntoIterator<Item = (S, Option<i64>, Option<Fresh>)>,
        current: impl Fn() -> bool,
    ) {
        {
            let mut watched = self.companies.lock().unwrap_or_else(|e| e.into_inner());
            let current = current();
            for (company, version, fresh) in companies {
                if let Some(sender) = watched.get(company.as_ref()) {
                    sender.send_modify(|c| {
                        c.count += 1;
                        let newer = version.is_some_and(|v| v > c.newest);
                        c.fresh = fresh.filter(|f| current && newer && Some(f.version) == version);
                        c.newest = c.newest.max(version.unwrap_or(0));
                    });
                }
            }
            watched.retain(|_, sender| sender.receiver_count() > 0);
        }
        self.any.send_modify(|n| *n += 1);
    }

    /// Whether anyone watches `company` on this replica.
    pub fn watched(&self, company: &str) -> bool {
        let watched = self.companies.lock().unwrap_or_else(|e| e.into_inner());
        watched.get(company).is_some_and(|s| s.receiver_count() > 0)
    }

    /// Wakes on any change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Wakes on changes of `company` only.
    pub fn subscribe_company(&self, company: &str) -> watch::Receiver<CompanyChange> {
        let mut watched = self.companies.lock().unwrap_or_else(|e| e.into_inner());
        watched.entry(company.to_owned()).or_insert_with(|| watch::channel(CompanyChange::default()).0).subscribe()
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
        assert_eq!(c1.borrow_and_update().count, 1);
        drop(c2);
        changes.publish(&[]);
        assert_eq!(changes.companies.lock().expect("lock").len(), 1, "unwatched companies are forgotten");
    }

    fn fresh(version: i64, open_count: u64) -> Fresh {
        let funnel = pb::Funnel { open_count, ..Default::default() };
        Fresh { version, funnels: Arc::new(pb::CompanyFunnels { funnels: vec![funnel], summary: None }) }
    }

    #[tokio::test]
    async fn figures_are_handed_over_only_when_newest_and_current() {
        let changes = Changes::default();
        let mut rx = changes.subscribe_company("c1");
        changes.publish_with([("c1", Some(2), Some(fresh(2, 7)))], || true);
        assert_eq!(rx.borrow_and_update().fresh, Some(fresh(2, 7)));
        // A batch that finished later but left an older counter: watchers recompute.
        changes.publish_with([("c1", Some(1), Some(fresh(1, 6)))], || true);
        assert_eq!(rx.borrow_and_update().fresh, None);
        // Figures computed under a configuration no longer in force: recompute.
        changes.publish_with([("c1", Some(3), Some(fresh(3, 8)))], || false);
        assert_eq!(rx.borrow_and_update().fresh, None);
        // A change without figures (another path) clears the last ones.
        changes.publish_with([("c1", Some(4), Some(fresh(4, 9)))], || true);
        changes.publish(&["c1".to_owned()]);
        let seen = rx.borrow_and_update().clone();
        assert_eq!((seen.count, seen.fresh), (5, None));
        assert!(changes.watched("c1") && !changes.watched("c2"));
    }
}
