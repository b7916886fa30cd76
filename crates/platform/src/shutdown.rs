//! Shutdown: one token every task of a service watches, tripped by SIGTERM/SIGINT or a test.

use tokio_util::sync::CancellationToken;

/// Cloned into every server and background loop; when it trips they stop taking new work
/// and finish what they hold.
#[derive(Clone, Default, Debug)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// Trips this token when SIGTERM or SIGINT arrives.
    pub fn trigger_on_signal(&self) {
        let token = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            crate::telemetry::root_span("shutdown").in_scope(|| tracing::info!("shutdown signal received"));
            token.trigger();
        });
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            futures::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
