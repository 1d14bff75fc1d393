//! One server per SQLite data directory.
//!
//! SQLite itself would let two servers share a database file, and each would serve its own
//! hub, release controller and in-memory guardrail evidence over it: every rule that assumes
//! one writer of that evidence would silently break. An OS lock on a file in the directory,
//! held for the server's lifetime, refuses the second server instead. The kernel drops the
//! lock when the process ends, however it ends, so a crash never leaves a stale lock behind.
//!
//! Offline CLI verbs (`serin token create|revoke --data`) do not take it: they are single
//! transactions that SQLite serializes with the running server, which picks their effects up
//! like another replica's.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// File name of the lock inside the data directory.
pub const LOCK_FILE_NAME: &str = "serin.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds the lock.
    #[error("the data directory {dir} is in use by another server ({holder})")]
    Held {
        /// The data directory.
        dir: String,
        /// `pid N` as the holder wrote it into the lock file, or `holder unknown`.
        holder: String,
    },
    /// The directory or its lock file could not be created or locked.
    #[error("could not lock the data directory {dir}: {source}")]
    Io {
        /// The data directory.
        dir: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock on a data directory; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `dir` (created 0700 if missing) through its [`LOCK_FILE_NAME`], and writes this
    /// process's id into the file so a refused server can name the holder.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DirLockError> {
        let io = |source| DirLockError::Io {
            dir: dir.display().to_string(),
            source,
        };
        crate::store::create_private_dir(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE_NAME);
        let mut options = OpenOptions::new();
        // Not truncated on open: until the lock is ours, the holder's pid must stay readable.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) => holder_of(&text),
                    Err(_) => "holder unknown".to_owned(),
                };
                return Err(DirLockError::Held {
                    dir: dir.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "pid {}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `pid N` from the lock file's text, if it holds one.
fn holder_of(text: &str) -> String {
    text.trim()
        .strip_prefix("pid ")
        .and_then(|pid| pid.parse::<u32>().ok())
        .map_or_else(|| "holder unknown".to_owned(), |pid| format!("pid {pid}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = DataDirLock::acquire(&dir).unwrap();
        assert_eq!(first.path(), dir.join(LOCK_FILE_NAME));
        // A second open file description conflicts even within one process (flock semantics).
        match DataDirLock::acquire(&dir) {
            Err(DirLockError::Held { dir: d, holder }) => {
                assert_eq!(d, dir.display().to_string());
                assert_eq!(holder, format!("pid {}", std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = DataDirLock::acquire(&dir).unwrap();
        drop(again);
    }

    #[test]
    fn an_unreadable_holder_is_reported_as_unknown() {
        assert_eq!(holder_of("pid 42\n"), "pid 42");
        assert_eq!(holder_of(""), "holder unknown");
        assert_eq!(holder_of("pid forty-two"), "holder unknown");
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_and_lock_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fresh");
        let _lock = DataDirLock::acquire(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(LOCK_FILE_NAME)), 0o600);
    }
}
