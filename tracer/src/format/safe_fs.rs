//! Opens, creates and lists files in a trace dir without following symlinks:
//! a tenant who can write there must not steer the root tracer elsewhere.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

/// Mode of files the tracer creates: owner read/write, group read, others nothing.
pub const FILE_MODE: u32 = 0o640;

#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is a symlink; not followed")]
    Symlink { path: String },
    #[error("{path} is not a regular file ({kind})")]
    NotRegular { path: String, kind: &'static str },
}

impl SafeFsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        // ELOOP from O_NOFOLLOW is the kernel saying "the last component is a symlink".
        if source.raw_os_error() == Some(libc::ELOOP) {
            return SafeFsError::Symlink { path: path.display().to_string() };
        }
        SafeFsError::Io { path: path.display().to_string(), source }
    }

    /// The error as `std::io::Error`, for callers whose errors carry one.
    pub fn into_io(self) -> std::io::Error {
        match self {
            SafeFsError::Io { source, .. } => source,
            other => std::io::Error::other(other),
        }
    }
}

/// Creates `path` for writing; fails if anything (a file, a symlink, a FIFO)
/// is already there, so a planted name is never written through.
pub fn create_new(path: &Path) -> Result<File, SafeFsError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| SafeFsError::io(path, e))
}

/// Opens an existing regular file (read, or read and write) without following
/// a symlink at `path`; the type is checked on the descriptor itself, so
/// nothing can be swapped in between check and use.
pub fn open_regular(path: &Path, write: bool) -> Result<File, SafeFsError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| SafeFsError::io(path, e))?;
    let kind = file.metadata().map_err(|e| SafeFsError::io(path, e))?.file_type();
    if !kind.is_file() {
        return Err(SafeFsError::NotRegular { path: path.display().to_string(), kind: kind_name(kind) });
    }
    Ok(file)
}

/// What a file that is not regular is, for error messages.
pub(crate) fn kind_name(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "other"
    }
}

/// Removes the entry at `path` if there is one; `unlink` removes a symlink
/// itself, never its target, so a planted link is simply gone.
pub fn unlink_entry(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// True when the directory entry at `path` itself (not what a symlink points
/// at) is a regular file.
pub fn is_regular_entry(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// True when the directory entry at `path` itself is a directory; a symlink
/// to one is skipped and logged.
pub fn is_real_dir(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            skipped_symlink(path);
            false
        }
        Ok(m) => m.is_dir(),
        Err(_) => false,
    }
}

/// Names of the regular files directly in `dir`, sorted; symlinks are skipped
/// (and logged once each), as are directories, FIFOs and the like.
pub fn regular_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        // DirEntry::file_type does not follow symlinks.
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_symlink() {
            skipped_symlink(&entry.path());
        } else if kind.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names
}

/// Logs a skipped symlink once per path, so a planted link does not flood
/// the log every upload round.
pub fn skipped_symlink(path: &Path) {
    static LOGGED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    let first =
        LOGGED.get_or_init(Default::default).lock().map(|mut seen| seen.insert(path.to_path_buf())).unwrap_or(true);
    if first {
        tracing::warn!(path = %path.display(), "skipping a symlink in the trace dir; it is not followed");
    }
}

/// True when the tracer (by its real and effective ids) may create files in
/// `dir`: asks the kernel and creates nothing, so a request cannot be
/// turned into a write anywhere.
pub fn dir_writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call;
    // faccessat only reads it. AT_EACCESS checks with the effective ids.
    unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// A dir holding a file `outside` and a symlink `link` to it.
    fn file_and_link() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        (dir, outside, link)
    }

    #[test]
    fn create_new_refuses_symlinks_and_existing_files() {
        let (dir, outside, link) = file_and_link();
        assert!(create_new(&link).is_err());
        assert!(create_new(&outside).is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        let fresh = dir.path().join("fresh");
        create_new(&fresh).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o007, 0);
    }

    #[test]
    fn open_regular_refuses_symlinks_fifos_and_dirs() {
        let (dir, outside, link) = file_and_link();
        assert!(matches!(open_regular(&link, true), Err(SafeFsError::Symlink { .. })));
        let pipe = dir.path().join("pipe");
        fifo(&pipe);
        assert!(matches!(open_regular(&pipe, false), Err(SafeFsError::NotRegular { kind: "FIFO", .. })));
        assert!(matches!(
            open_regular(dir.path(), false),
            Err(SafeFsError::NotRegular { .. }) | Err(SafeFsError::Io { .. })
        ));
        assert!(open_regular(&outside, true).is_ok());
    }

    #[test]
    fn listing_skips_symlinks_and_symlinked_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), b"x").unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("c")).unwrap();
        fifo(&dir.path().join("d"));
        assert_eq!(regular_files(dir.path()), vec!["a", "b"]);
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::symlink(&sub, dir.path().join("sublink")).unwrap();
        assert!(is_real_dir(&sub));
        assert!(!is_real_dir(&dir.path().join("sublink")));
        assert!(is_regular_entry(&dir.path().join("a")));
        assert!(!is_regular_entry(&dir.path().join("c")));
        assert!(dir_writable(dir.path()));
    }
}
