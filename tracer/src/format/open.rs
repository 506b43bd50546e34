//! Opening a session file for reading only if it is a regular file: a FIFO
//! or device named like a trace file must not hang or steer a reader, and a
//! symlink planted in a session dir is not followed.

use std::{fs::File, io, os::unix::fs::OpenOptionsExt, path::Path};

/// Opens `path` for reading; an error names what it is if it is not a
/// regular file. The open never blocks (`O_NONBLOCK`: a FIFO without a
/// writer would block `open` itself) and the type is checked on the opened
/// descriptor, so a swap between a check and the open cannot slip through.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_with(path, libc::O_NONBLOCK)
}

/// [`open_regular`] for a file found in a session dir (a trace file,
/// `metadata.json`, a KV CSV): a symlink there is refused (`O_NOFOLLOW`),
/// never followed out of the tree.
pub fn open_session_file(path: &Path) -> io::Result<File> {
    open_with(path, libc::O_NONBLOCK | libc::O_NOFOLLOW).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(io::ErrorKind::InvalidInput, "a symlink; not followed");
        }
        e
    })
}

fn open_with(path: &Path, flags: i32) -> io::Result<File> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file (a {}); skipped", super::safe_fs::kind_name(kind)),
    ))
}

/// Reads all of a session's regular file ([`open_session_file`]), refusing one over
/// `max_bytes`: a session's small files (metadata, KV chunks) must not be
/// able to make a reader allocate without bound.
pub fn read_regular(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(open_session_file(path)?, max_bytes.saturating_add(1)), &mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max_bytes} bytes, more than such a file ever holds; skipped"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (dir, name) = (tempfile::tempdir().unwrap(), "metadata.json");
        let fifo = dir.path().join(name);
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(open_regular(dir.path()).is_err());
        std::fs::write(dir.path().join("f"), "x").unwrap();
        assert_eq!(read_regular(&dir.path().join("f"), 1).unwrap(), b"x");
        assert!(read_regular(&dir.path().join("f"), 0).unwrap_err().to_string().contains("larger than 0 bytes"));
        std::os::unix::fs::symlink(dir.path().join("f"), dir.path().join("link")).unwrap();
        assert!(open_regular(&dir.path().join("link")).is_ok(), "a /proc/PID/fd link must open");
        let e = open_session_file(&dir.path().join("link")).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
    }
}
