//! The lock a live session's writer holds: an exclusive `flock` on
//! `.session.lock` in the session dir for as long as the tracer writes
//! there. The kernel drops it when the tracer ends, however it ends (a
//! SIGKILL included), so a held lock always means a live writer: `upload`
//! and the repair of `.partial` files leave such a session alone.

use std::{fs::File, path::Path};

use super::{names, safe_fs};

/// Why the session's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is being written by another running tracer (it holds {lock}); \
         stop that tracer or give this one a new directory (-o for record, another --trace-dir for run)"
    )]
    Held { dir: String, lock: String },
    #[error("locking {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The writer's hold on a session dir; released when dropped (or when the
/// process ends). Opened close-on-exec, so traced commands never inherit it.
#[derive(Debug)]
pub struct SessionLock {
    _file: File,
}

impl SessionLock {
    /// Takes the lock of `dir`, creating its lock file (exclusively, never
    /// through a link) if there is none.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(names::SESSION_LOCK);
        let io = |source| LockError::Io { path: path.display().to_string(), source };
        let file = open_or_create(&path).map_err(|e| io(e.into_io()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(LockError::Held { dir: dir.display().to_string(), lock: path.display().to_string() })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

/// The lock file of `dir`, opened as a regular file; created if absent.
fn open_or_create(path: &Path) -> Result<File, safe_fs::SafeFsError> {
    match safe_fs::create_new(path) {
        Err(safe_fs::SafeFsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            safe_fs::open_regular(path, false)
        }
        other => other,
    }
}

/// Whether a running tracer holds the lock of session dir `dir` (this
/// process included: each open of the lock file is its own `flock`). A
/// session without a lock file (an older tracer's, or one that never
/// started) is not held.
pub fn is_held(dir: &Path) -> bool {
    let Ok(file) = safe_fs::open_regular(&dir.join(names::SESSION_LOCK), false) else { return false };
    matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_held(dir.path()), "no lock file: not held");
        let lock = SessionLock::acquire(dir.path()).unwrap();
        assert!(is_held(dir.path()));
        let err = SessionLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another running tracer") && err.contains(names::SESSION_LOCK), "{err}");
        drop(lock);
        assert!(!is_held(dir.path()));
        let _again = SessionLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_planted_link_at_the_lock_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join(names::SESSION_LOCK)).unwrap();
        assert!(SessionLock::acquire(dir.path()).is_err());
        assert!(!is_held(dir.path()));
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    }
}
