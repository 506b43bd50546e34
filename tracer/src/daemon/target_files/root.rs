//! Opens files a traced process names inside that process's own root, never
//! the tracer's: paths from a process's maps, environment or run paths are
//! resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` below an
//! open `/proc/PID/root`, so an absolute symlink or `..` cannot leave it,
//! and each file is checked (regular, size) on the descriptor that is then
//! the only thing read and attached.

use std::{
    ffi::OsString,
    fs::File,
    io,
    os::{
        fd::OwnedFd,
        unix::{ffi::OsStringExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};

use crate::daemon::privileges;

/// The largest file opened as a library. Real CUDA libraries fit with room
/// to spare (libcuda ~ 30-100 MB, libtorch_cuda over 1 GB); the size only
/// bounds what a file may claim, since nothing reads a whole file (see
/// [`super::elf`]).
pub const MAX_LIBRARY_BYTES: u64 = 4 << 30;

/// Why a file of a traced process was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("reading {source_path}: {error} (the process's {shown}){hint}", hint = privileges::ptrace_hint(error))]
    Open { shown: String, source_path: String, error: io::Error },
    #[error("{shown}: not a regular file (a {kind}); not read")]
    NotRegular { shown: String, kind: &'static str },
    #[error("{shown}: {size} bytes, more than the {MAX_LIBRARY_BYTES} bytes a library may have; not read")]
    TooLarge { shown: String, size: u64 },
    #[error(
        "{shown}: the file at this path is not the one the process mapped (inode {found}, mapped {mapped}); not read"
    )]
    Replaced { shown: String, found: u64, mapped: u64 },
}

impl OpenError {
    /// Whether the file was there and refused (not merely gone).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Open { .. })
    }
}

/// A file of a traced process, open: the one descriptor everything reads,
/// parses and attaches through.
#[derive(Debug)]
pub struct TargetFile {
    pub file: File,
    /// Its path as the process sees it.
    pub shown: String,
    /// How the tracer reached it (`/proc/PID/root/…`, `/proc/PID/map_files/…`,
    /// `/proc/PID/fd/N`): said in metadata, never opened again.
    pub source: PathBuf,
    /// The process whose root it was found in (`None`: the tracer's own).
    pub owner: Option<u32>,
    pub dev: u64,
    pub ino: u64,
}

impl TargetFile {
    /// `(dev, inode)`: the file's identity, as uprobes see it.
    pub fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// Opens a `/proc` magic link that names the very file a process has
    /// (`/proc/PID/map_files/START-END`, `/proc/PID/fd/N`): following that
    /// link is the point, it resolves no path.
    pub fn open_proc_link(link: &Path, shown: &str, owner: Option<u32>) -> Result<Self, OpenError> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rustix::fs::open(link, flags, Mode::empty()).map_err(|e| OpenError::Open {
            shown: shown.to_string(),
            source_path: link.display().to_string(),
            error: e.into(),
        })?;
        checked(fd.into(), shown, link.to_path_buf(), owner)
    }
}

/// A process's root directory, open: every path of that process is
/// resolved below it.
#[derive(Debug)]
pub struct TargetRoot {
    dir: OwnedFd,
    /// `/proc/PID/root`, or `/` for the tracer's own.
    shown_root: PathBuf,
    owner: Option<u32>,
}

impl TargetRoot {
    /// The root of process `pid` (a container's root for a containerised one).
    pub fn of_process(pid: u32) -> io::Result<Self> {
        let path = PathBuf::from(format!("/proc/{pid}/root"));
        Self::open_dir(path, Some(pid))
    }

    /// The tracer's own root, for paths the administrator gave (`--lib`)
    /// and `record`'s own search path.
    pub fn own() -> io::Result<Self> {
        Self::open_dir(PathBuf::from("/"), None)
    }

    /// The root `owner` was found in (`None`: the tracer's own).
    pub fn of_owner(owner: Option<u32>) -> io::Result<Self> {
        owner.map_or_else(Self::own, Self::of_process)
    }

    fn open_dir(path: PathBuf, owner: Option<u32>) -> io::Result<Self> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(&path, flags, Mode::empty())?;
        Ok(Self { dir, shown_root: path, owner })
    }

    fn resolve(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let relative = path.strip_prefix("/").unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
        Ok(openat2(&self.dir, relative, flags | OFlags::CLOEXEC | OFlags::NOCTTY, Mode::empty(), resolve)?)
    }

    /// Opens `path` (as the process sees it) for reading, inside this root:
    /// a regular file of at most [`MAX_LIBRARY_BYTES`].
    pub fn open(&self, path: &Path) -> Result<TargetFile, OpenError> {
        let shown = path.display().to_string();
        let source = self.shown_root.join(path.strip_prefix("/").unwrap_or(path));
        let fd = self.resolve(path, OFlags::RDONLY | OFlags::NONBLOCK).map_err(|error| OpenError::Open {
            shown: shown.clone(),
            source_path: source.display().to_string(),
            error,
        })?;
        checked(fd.into(), &shown, source, self.owner)
    }

    /// The entries of directory `dir` inside this root, with whether each
    /// is a symlink; empty when it is not a readable directory.
    pub fn list(&self, dir: &Path) -> Vec<(OsString, bool)> {
        let Ok(fd) = self.resolve(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK) else {
            return Vec::new();
        };
        let Ok(entries) = rustix::fs::Dir::new(fd) else { return Vec::new() };
        entries
            .filter_map(Result::ok)
            .map(|e| (OsString::from_vec(e.file_name().to_bytes().to_vec()), e.file_type()))
            .filter(|(name, _)| name != "." && name != "..")
            .map(|(name, kind)| (name, kind == rustix::fs::FileType::Symlink))
            .collect()
    }
}

/// Accepts `file` only as a regular file of at most [`MAX_LIBRARY_BYTES`],
/// checked on the descriptor itself.
fn checked(file: File, shown: &str, source: PathBuf, owner: Option<u32>) -> Result<TargetFile, OpenError> {
    let meta = file.metadata().map_err(|error| OpenError::Open {
        shown: shown.to_string(),
        source_path: source.display().to_string(),
        error,
    })?;
    if !meta.file_type().is_file() {
        let kind = crate::format::safe_fs::kind_name(meta.file_type());
        return Err(OpenError::NotRegular { shown: shown.to_string(), kind });
    }
    if meta.len() > MAX_LIBRARY_BYTES {
        return Err(OpenError::TooLarge { shown: shown.to_string(), size: meta.len() });
    }
    Ok(TargetFile { file, shown: shown.to_string(), source, owner, dev: meta.dev(), ino: meta.ino() })
}

/// Opens a file process `pid` has mapped at `start..end`: the very inode
/// mapped, through `/proc/PID/map_files` (no path resolved at all). Where
/// that is not permitted (it needs `CAP_SYS_ADMIN` or
/// `CAP_CHECKPOINT_RESTORE`), `shown` is opened inside the process's root
/// and must be the mapped inode.
pub fn open_mapped(pid: u32, start: u64, end: u64, shown: &str, inode: u64) -> Result<TargetFile, OpenError> {
    let link = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
    match TargetFile::open_proc_link(&link, shown, Some(pid)) {
        Err(OpenError::Open { error, .. }) if error.kind() == io::ErrorKind::PermissionDenied => {
            let root = TargetRoot::of_process(pid).map_err(|error| OpenError::Open {
                shown: shown.to_string(),
                source_path: format!("/proc/{pid}/root{shown}"),
                error,
            })?;
            let file = root.open(Path::new(shown))?;
            if inode != 0 && file.ino != inode {
                return Err(OpenError::Replaced { shown: shown.to_string(), found: file.ino, mapped: inode });
            }
            Ok(file)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn an_absolute_symlink_resolves_inside_the_root() {
        let (root, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // The same absolute path exists outside the root (a decoy) and inside it.
        let decoy = outside.path().join("libcuda.so.1");
        std::fs::write(&decoy, b"decoy").unwrap();
        let inside = root.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("libcuda.so.1"), b"inside").unwrap();
        std::fs::create_dir(root.path().join("evil")).unwrap();
        symlink(&decoy, root.path().join("evil/libcuda.so.1")).unwrap();
        symlink("../../../../../../..", root.path().join("evil/up")).unwrap();

        let target = TargetRoot::open_dir(root.path().to_path_buf(), None).unwrap();
        let mut opened = target.open(Path::new("/evil/libcuda.so.1")).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut opened.file, &mut text).unwrap();
        assert_eq!(text, "inside");
        assert_eq!(opened.shown, "/evil/libcuda.so.1");
        // `..` stops at the root: this names the inside copy again, never the decoy.
        let dotdot = format!("/evil/up{}", decoy.display());
        let up = target.open(Path::new(&dotdot)).unwrap();
        assert_eq!(up.key(), opened.key());
        assert!(target.list(Path::new("/evil")).contains(&("libcuda.so.1".into(), true)));
    }

    #[test]
    fn magic_links_fifos_and_huge_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libcuda.so.1");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let sparse = dir.path().join("libcudart.so.99");
        std::fs::File::create(&sparse).unwrap().set_len(MAX_LIBRARY_BYTES + 1).unwrap();
        let own = TargetRoot::own().unwrap();
        let e = own.open(&fifo).unwrap_err();
        assert!(matches!(e, OpenError::NotRegular { kind: "FIFO", .. }), "{e}");
        let e = own.open(&sparse).unwrap_err();
        assert!(matches!(e, OpenError::TooLarge { .. }) && e.is_refusal(), "{e}");
        // /proc/self/root inside the root is a magic link: not followed.
        let e = own.open(Path::new("/proc/self/root/etc/hostname")).unwrap_err();
        assert!(!e.is_refusal(), "{e}");
    }

    #[test]
    fn a_mapped_file_is_opened_by_its_mapping() {
        let exe = std::env::current_exe().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.ends_with(&*exe.display().to_string())).unwrap();
        let range = line.split_whitespace().next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let ino = std::fs::metadata(&exe).unwrap().ino();
        let file = open_mapped(std::process::id(), start, end, "/shown", ino).unwrap();
        assert_eq!(file.ino, ino);
    }
}
