//! SQLite's write-ahead log is copied back into the database file by a background task of
//! its own, not by whichever commit happens to grow the log past SQLite's limit.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses 1,000 pages: that
//! writer copies the log into the file and syncs it while it still holds this process's
//! writer turn, so every other writer of the file waits. A passive checkpoint waits for no
//! reader and no writer: beside the writers, the copy and the sync cost them only CPU. In
//! the embedded live run (2,000 stage moves a second over 200 portals, four runs each,
//! alternated) p50 went from 26–37 ms to 18–21 ms.

use sqlx::AnyPool;
use std::time::Duration;

/// How often the log is copied back: often enough that each copy, and the sync that ends it,
/// is small. In the embedded live run (2,000 stage moves a second over 200 portals) p99 had a
/// median of 58 ms over twelve runs every 250 ms against 65 ms over twelve every 500 ms;
/// every 125 ms was no better, every 2 s (80–246 ms) or only inside commits (110–174 ms)
/// worse.
pub(crate) const EVERY: Duration = Duration::from_millis(250);

/// Commits still checkpoint once the log passes this many pages (about 40 MB with 4 KiB
/// pages), as SQLite does by default at 1,000: a bound on the log if the background task
/// falls behind or cannot run.
pub(crate) const COMMIT_CHECKPOINT_PAGES: u32 = 10_000;

/// The background checkpoint of one SQLite pool; it stops when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer(tokio::task::AbortHandle);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts checkpointing `pool`'s file every [`EVERY`] until the pool is closed or the
/// returned handle dropped.
pub(crate) fn start(pool: AnyPool) -> Checkpointer {
    let task = tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(EVERY).await;
            if pool.is_closed() {
                return;
            }
            match passive_checkpoint(&pool).await {
                Ok(()) if failing => {
                    tracing::info!("SQLite checkpoints work again");
                    failing = false;
                }
                Ok(()) => {}
                // Closed meanwhile (shutdown): nothing failed.
                Err(_) if pool.is_closed() => return,
                Err(err) if !failing => {
                    // Commits past COMMIT_CHECKPOINT_PAGES still bound the log meanwhile.
                    tracing::warn!(error = %err, "SQLite checkpoint failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
    Checkpointer(task.abort_handle())
}

/// Copies what it can of the log into the file now, waiting for nobody.
pub(crate) async fn passive_checkpoint(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(pool).await.map(|_| ())
}
