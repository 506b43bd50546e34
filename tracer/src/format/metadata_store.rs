//! Writing `metadata.json` so that it never keeps saying `running` after
//! the tracer ends: replaced atomically (temp file + rename) with room
//! reserved for the next write; rewritten in place inside that reserve when
//! the disk is full; and, when even that fails or the tracer is killed, its
//! status alone is patched in place (`failed`, `killed`), which needs no
//! new disk space.

use std::{
    fs::File,
    io::Write as _,
    os::{
        fd::{AsRawFd, OwnedFd, RawFd},
        unix::fs::{FileExt, MetadataExt, OpenOptionsExt},
    },
    path::Path,
};

use super::{names, safe_fs};

/// Room reserved beyond the JSON, for what a session adds before its next
/// write: the last write adds the per-function summary (about 200 bytes a
/// function) and every count.
const RESERVE_EXTRA: u64 = 32 << 10;

/// Writes `json` as `dir/metadata.json`: atomically when the disk allows,
/// else in place inside the room the previous write reserved. Never leaves
/// a file that is not the old or the new JSON, except a tracer killed in
/// the middle of an in-place write on a full disk.
pub fn write(dir: &Path, json: &[u8]) -> std::io::Result<()> {
    let dest = dir.join(names::METADATA);
    let tmp = dir.join(names::partial(names::METADATA));
    let replaced = replace(&tmp, &dest, json);
    let Err(first) = replaced else { return Ok(()) };
    // Its blocks are what the in-place write may need.
    let _ = safe_fs::unlink_entry(&tmp);
    match overwrite_in_place(&dest, json) {
        Ok(()) => {
            tracing::warn!(error = %first, "metadata.json rewritten in place (its temp file could not be written)");
            Ok(())
        }
        Err(_) => Err(first),
    }
}

/// The atomic replace, its file allocated to hold twice the JSON plus
/// [`RESERVE_EXTRA`] (past its end: the size stays the JSON's).
fn replace(tmp: &Path, dest: &Path, json: &[u8]) -> std::io::Result<()> {
    // A leftover temp file (a crash mid-write, or a planted symlink) is
    // unlinked, never written through; the new one is created exclusively.
    safe_fs::unlink_entry(tmp)?;
    let mut file = safe_fs::create_new(tmp).map_err(safe_fs::SafeFsError::into_io)?;
    reserve(&file, json.len() as u64 * 2 + RESERVE_EXTRA)?;
    file.write_all(json)?;
    std::fs::rename(tmp, dest)
}

/// Allocates `bytes` for `file` without changing its size; a filesystem
/// without `fallocate` is written without a reserve.
fn reserve(file: &File, bytes: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(bytes).unwrap_or(libc::off_t::MAX);
    // SAFETY: fallocate only acts on the descriptor, which `file` keeps open.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        _ if rc == 0 => Ok(()),
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(()),
        _ => Err(err),
    }
}

/// Rewrites `dest` from its start, padded with spaces (JSON allows trailing
/// white space) so it never shrinks and keeps its reserve; refused when
/// the JSON does not fit in the blocks the file already has.
fn overwrite_in_place(dest: &Path, json: &[u8]) -> std::io::Result<()> {
    let file = safe_fs::open_regular(dest, true).map_err(safe_fs::SafeFsError::into_io)?;
    let meta = file.metadata()?;
    let allocated = meta.blocks().saturating_mul(512);
    if json.len() as u64 > allocated {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    let mut padded = json.to_vec();
    padded.resize(padded.len().max(usize::try_from(meta.len()).unwrap_or(usize::MAX)), b' ');
    file.write_all_at(&padded, 0)
}

/// How a session that did not finish ends, as patched into its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndMark {
    /// The tracer was killed (SIGKILL): its watchdog marks the session.
    Killed,
    /// The tracer could not write its final metadata, or panicked.
    Failed,
}

impl EndMark {
    /// The same length as `"running"`: the trailing space is JSON white space.
    fn bytes(self) -> &'static [u8; 9] {
        match self {
            EndMark::Killed => b"\"killed\" ",
            EndMark::Failed => b"\"failed\" ",
        }
    }
}

/// What `"status": "running"` looks like in the file ([`super::metadata::Metadata`]
/// is written pretty-printed, its status among the first fields).
const RUNNING: &[u8] = b"\"status\": \"running\"";
/// Bytes of the file searched for [`RUNNING`]: the fields before it are
/// the session id, version, host and pod names (each bounded by the kernel
/// or Kubernetes).
const HEAD_BYTES: usize = 4096;

/// Opens a session dir for [`mark_ended`], without following a link.
pub fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    Ok(file.into())
}

/// If `metadata.json` in the dir `dir_fd` still says `running`, overwrites
/// that status in place with `mark`; returns whether it did. Needs no disk
/// space, and is async-signal-safe (only system calls on stack memory), so
/// a watchdog forked from the multi-threaded tracer may call it.
pub fn mark_ended(dir_fd: RawFd, mark: EndMark) -> bool {
    // SAFETY: openat/fstat/pread/pwrite/close on descriptors this function
    // opens, with buffers on its own stack of the sizes passed.
    unsafe {
        let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        let fd = libc::openat(dir_fd, names::METADATA_C.as_ptr(), flags);
        if fd < 0 {
            return false;
        }
        let mut st: libc::stat = std::mem::zeroed();
        let mut buf = [0u8; HEAD_BYTES];
        let regular = libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG;
        let read = if regular { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) } else { -1 };
        let head = &buf[..usize::try_from(read).unwrap_or(0)];
        let at = head.windows(RUNNING.len()).position(|w| w == RUNNING);
        let done = match at {
            Some(at) => {
                let value = (at + RUNNING.len() - mark.bytes().len()) as libc::off_t;
                libc::pwrite(fd, mark.bytes().as_ptr().cast(), mark.bytes().len(), value) == 9
            }
            None => false,
        };
        libc::close(fd);
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(status: &str, pad: usize) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({"session_id": "s", "status": status, "pad": "x".repeat(pad)}))
            .unwrap()
    }

    #[test]
    fn write_replaces_and_reserves_room_for_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &json("running", 10)).unwrap();
        let dest = dir.path().join(names::METADATA);
        assert_eq!(std::fs::read(&dest).unwrap(), json("running", 10));
        let blocks = std::fs::metadata(&dest).unwrap().blocks() * 512;
        assert!(blocks >= RESERVE_EXTRA, "reserved {blocks} bytes");
        assert!(!dir.path().join(names::partial(names::METADATA)).exists());
    }

    #[test]
    fn in_place_rewrite_pads_a_shorter_json_and_refuses_one_that_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join(names::METADATA);
        write(dir.path(), &json("running", 3000)).unwrap();
        overwrite_in_place(&dest, &json("finished", 5)).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&dest).unwrap()).unwrap();
        assert_eq!(back["status"], "finished");
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), json("running", 3000).len() as u64, "never shrinks");
        let huge = json("finished", 4 << 20);
        assert_eq!(overwrite_in_place(&dest, &huge).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&dest).unwrap()).unwrap(), back);
    }

    #[test]
    fn a_running_session_is_marked_once_and_a_finished_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_dir(dir.path()).unwrap();
        assert!(!mark_ended(fd.as_raw_fd(), EndMark::Killed), "no metadata.json yet");
        write(dir.path(), &json("running", 10)).unwrap();
        assert!(mark_ended(fd.as_raw_fd(), EndMark::Killed));
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(names::METADATA)).unwrap()).unwrap();
        assert_eq!(back["status"], "killed");
        assert!(!mark_ended(fd.as_raw_fd(), EndMark::Failed), "already ended");
        write(dir.path(), &json("finished", 10)).unwrap();
        assert!(!mark_ended(fd.as_raw_fd(), EndMark::Failed));
    }
}
