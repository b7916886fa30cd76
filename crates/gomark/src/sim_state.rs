//! The simulators' state in the data folder: loaded at start, saved every few seconds
//! while it changes and once more at shutdown, so a restarted demo is the same demo as
//! the one GoMark's databases remember. A crash loses at most the last few seconds of
//! simulated activity, which the next deal sync reconciles like any portal change.

use gomark_platform::Shutdown;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SAVE_EVERY: Duration = Duration::from_secs(5);

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
pub async fn keep_saved(path: PathBuf, snapshot: impl Fn() -> Vec<u8> + Send + 'static, shutdown: Shutdown) {
    let mut saved: Option<Vec<u8>> = None;
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            () = shutdown.wait() => true,
            () = tokio::time::sleep(SAVE_EVERY) => false,
        };
        let now = snapshot();
        if saved.as_ref() != Some(&now) {
            gomark_platform::telemetry::poll_span("simulator state save").in_scope(|| {
                match write_atomically(&path, &now) {
                    Ok(()) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!(file = %path.display(), "simulator state saved again");
                        }
                        saved = Some(now);
                    }
                    Err(err) if !failing => {
                        failing = true;
                        tracing::warn!(file = %path.display(), error = %err, "cannot save simulator state; retrying");
                    }
                    Err(_) => {}
                }
            });
        }
        if stopping {
            return;
        }
    }
}

/// Writes a sibling file and renames it over `path`: a crash leaves the old or the new
/// state, never half of one. Readable by this user only (it holds webhook secrets).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
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
}
