//! Whether a service can do its work right now: its gRPC health answers NOT_SERVING and
//! its admin `/readyz` answers 503 while a dependency it cannot work without (database,
//! event bus) is unreachable, and SERVING again once it is back. Liveness (`/healthz`)
//! stays "ok": restarting the process would not bring the database back.

use std::sync::Arc;
use tokio::sync::watch;

/// Shared between the probe loop that decides and the servers that report.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<watch::Sender<bool>>);

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Ready until a probe says otherwise.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(true)))
    }

    pub fn set(&self, ready: bool) {
        self.0.send_if_modified(|current| std::mem::replace(current, ready) != ready);
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves on every change, with the new value.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}
