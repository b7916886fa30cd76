//! One GoMark per data folder. Two processes on one folder would each run a simulator
//! restored from the same saved state and overwrite each other's saves, and each would
//! replay the same event journal. The lock is the operating system's (`flock`): it goes
//! with its process, however that process ends, so a crash never leaves a stale lock.

use anyhow::Context as _;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

const FILE: &str = "gomark.lock";

/// Held while this process uses the folder; dropping it lets another process in.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Takes `dir`'s lock, or says which process holds it.
    pub fn take(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                anyhow::bail!(
                    "the data folder {} is in use by another GoMark process{holder}: stop that one first, \
                     or give this one its own folder with --data-dir",
                    dir.display()
                );
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the message above; the lock itself does not depend on it.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_who_holds_the_folder_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = FolderLock::take(dir.path()).expect("free");
        let refused = FolderLock::take(dir.path()).expect_err("held");
        let message = format!("{refused:#}");
        assert!(message.contains("in use by another GoMark process"), "{message}");
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
        drop(first);
        FolderLock::take(dir.path()).expect("free again");
    }
}
