//! Change notification for watchers. Ingest only bumps a counter and never waits on a
//! watcher; each watcher recomputes when it is ready, so a slow client sees fewer,
//! newer updates (coalesced) and never slows ingest.

use tokio::sync::watch;

#[derive(Debug)]
pub struct Changes {
    /// Moves on every change anywhere; watchers wake on it and check their own version.
    any: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Self { any: watch::channel(0).0 }
    }
}

impl Changes {
    pub fn publish(&self) {
        self.any.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishing_wakes_watchers_coalesced() {
        let changes = Changes::default();
        let mut rx = changes.subscribe();
        changes.publish();
        changes.publish();
        rx.changed().await.expect("woken");
        // Two publishes, one wake-up: coalesced.
        assert_eq!(*rx.borrow_and_update(), 2);
    }
}
