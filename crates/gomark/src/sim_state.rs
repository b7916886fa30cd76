//! The simulators' state in the data folder: loaded at start, saved every few seconds
//! while it changes (less often when saving is slow) and once more at shutdown, so a restarted demo is the same demo as
//! the one GoMark's databases remember. A crash loses the simulated activity since the last
//! save (seconds; longer only for a state that is slow to save), which the next deal sync
//! reconciles like any portal change.

use gomark_platform::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SAVE_EVERY: Duration = Duration::from_secs(5);
/// A save is synced to disk this much at a time ([`write_atomically`]).
const SYNC_EVERY_BYTES: usize = 4 << 20;
/// The pause after each piece, so other files' writes go between.
const BETWEEN_SYNCS: Duration = Duration::from_millis(10);
/// Saving waits at least this many times as long as the last save took.
const SAVE_COST_SHARE: u32 = 20;
/// However slow saving is, a save at least this often.
const SAVE_AT_MOST_EVERY: Duration = Duration::from_secs(300);

/// Restores a simulator from `path` if the file exists; returns whether it did.
pub fn load<E: std::fmt::Display>(
    path: &Path,
    restore: impl FnOnce(&[u8]) -> Result<usize, E>,
) -> anyhow::Result<bool> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => anyhow::bail!("cannot read {}: {err}", path.display()),
    };
    let restored = restore(&bytes).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    tracing::info!(file = %path.display(), restored, "simulator state restored");
    Ok(true)
}

/// Saves `snapshot()` to `path` whenever it changed, until shutdown, then a last time.
///
/// The snapshot is taken, compared and written on a blocking thread: serialising a busy
/// portfolio's simulator (200 portals of 200 deals, 2,000 changes a second) took a CPU for
/// a second or more, and on an async worker it stalled every task queued behind it: the
/// embedded live run's changes waited up to 0.5 s every 5–6 s. The next save then waits
/// [`next_wait`], so saving takes a bounded share of a CPU however large the state grows.
pub async fn keep_saved(path: PathBuf, snapshot: impl Fn() -> Vec<u8> + Send + Sync + 'static, shutdown: Shutdown) {
    let snapshot = Arc::new(snapshot);
    let path = Arc::new(path);
    let mut saved: Option<Vec<u8>> = None;
    let mut failing = false;
    let mut wait = SAVE_EVERY;
    loop {
        let stopping = tokio::select! {
            () = shutdown.wait() => true,
            () = tokio::time::sleep(wait) => false,
        };
        let started = std::time::Instant::now();
        let (snapshot, file, previous) = (snapshot.clone(), path.clone(), saved.take());
        let outcome = tokio::task::spawn_blocking(move || save_if_changed(&file, &*snapshot, previous)).await;
        wait = next_wait(started.elapsed());
        let (kept, written) = match outcome {
            Ok(done) => done,
            // The closure does not panic (plain data); were it to, the next save tries again.
            Err(err) => (None, Some(Err(std::io::Error::other(err.to_string())))),
        };
        saved = kept;
        gomark_platform::telemetry::poll_span("simulator state save").in_scope(|| match written {
            Some(Ok(())) if std::mem::take(&mut failing) => {
                tracing::info!(file = %path.display(), "simulator state saved again");
            }
            Some(Err(err)) if !failing => {
                failing = true;
                tracing::warn!(file = %path.display(), error = %err, "cannot save simulator state; retrying");
            }
            _ => {}
        });
        if stopping {
            return;
        }
    }
}

/// How long after a save that took `took` the next one comes: [`SAVE_EVERY`], or longer
/// when saving is slow, so that it never takes more than about 1/[`SAVE_COST_SHARE`] of a
/// CPU (within [`SAVE_AT_MOST_EVERY`], which bounds what a crash can lose).
fn next_wait(took: Duration) -> Duration {
    took.saturating_mul(SAVE_COST_SHARE).clamp(SAVE_EVERY, SAVE_AT_MOST_EVERY)
}

/// Takes a snapshot and writes it when it differs from `previous` (what the file holds);
/// returns what the file holds now and, when it wrote, whether the write worked.
fn save_if_changed(
    path: &Path,
    snapshot: &dyn Fn() -> Vec<u8>,
    previous: Option<Vec<u8>>,
) -> (Option<Vec<u8>>, Option<std::io::Result<()>>) {
    let now = snapshot();
    if previous.as_ref() == Some(&now) {
        return (previous, None);
    }
    match write_atomically(path, &now) {
        Ok(()) => (Some(now), Some(Ok(()))),
        Err(err) => (previous, Some(Err(err))),
    }
}

/// Writes a sibling file and renames it over `path`: a crash leaves the old or the new
/// state, never half of one. Readable by this user only (it holds webhook secrets).
///
/// The file is synced a piece at a time ([`SYNC_EVERY_BYTES`], a short pause after each):
/// one sync of a 60 MB save held up the other files' writes behind it (ext4's journal), and
/// the embedded live run stalled by 0.1–0.2 s at each save.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    for piece in bytes.chunks(SYNC_EVERY_BYTES) {
        std::io::Write::write_all(&mut file, piece)?;
        file.sync_data()?;
        std::thread::sleep(BETWEEN_SYNCS);
    }
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_on_shutdown_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.json");
        assert!(!load(&path, |_| Ok::<usize, String>(0)).expect("no file is fine"));
        let shutdown = Shutdown::new();
        let task = tokio::spawn(keep_saved(path.clone(), || b"[1,2,3]".to_vec(), shutdown.clone()));
        shutdown.trigger();
        task.await.expect("saver ends");
        let mut seen = Vec::new();
        assert!(
            load(&path, |b| {
                seen = b.to_vec();
                Ok::<usize, String>(3)
            })
            .expect("load")
        );
        assert_eq!(seen, b"[1,2,3]");
        let err = load(&path, |_| Err::<usize, String>("corrupt".into())).expect_err("restore error surfaces");
        assert!(err.to_string().contains("corrupt"));
    }

    #[test]
    fn a_save_larger_than_a_piece_is_written_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.json");
        let bytes: Vec<u8> = (0..SYNC_EVERY_BYTES * 2 + 7).map(|i| (i % 251) as u8).collect();
        write_atomically(&path, &bytes).expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        assert!(!path.with_extension("tmp").exists(), "the sibling was renamed over");
    }

    #[test]
    fn slow_saves_come_less_often() {
        assert_eq!(next_wait(Duration::from_millis(10)), SAVE_EVERY);
        assert_eq!(next_wait(Duration::from_millis(600)), Duration::from_secs(12));
        assert_eq!(next_wait(Duration::from_secs(60)), SAVE_AT_MOST_EVERY);
    }

    #[test]
    fn an_unchanged_state_is_not_written_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.json");
        let (kept, written) = save_if_changed(&path, &|| b"a".to_vec(), None);
        assert!(matches!(written, Some(Ok(()))));
        std::fs::remove_file(&path).expect("written");
        let (kept, written) = save_if_changed(&path, &|| b"a".to_vec(), kept);
        assert!(written.is_none(), "the same state is not written");
        assert!(!path.exists());
        let (kept, written) = save_if_changed(&path, &|| b"b".to_vec(), kept);
        assert!(matches!(written, Some(Ok(()))));
        assert_eq!(kept.as_deref(), Some(&b"b"[..]));
        assert_eq!(std::fs::read(&path).expect("read"), b"b");
    }
}
