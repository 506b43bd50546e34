//! What the test node changes on the host, and undoing it: the veth carrying
//! the node IP, the pods' cgroup parent, the sysctls the kubelet and the CNI
//! bridge set, the directories they create, and (after a crash of the node's
//! processes) leftover shims, mounts and links. One node per machine at a
//! time (a file lock), since the link and cgroup names are fixed.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
};

use crate::node_config::*;

/// The host as it was before the node, and the lock that serialises nodes.
pub struct HostState {
    sysctls: Vec<(&'static str, String)>,
    new_dirs: Vec<&'static str>,
    _lock: File,
}

/// Runs `ip` with `args`; whether it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).output().is_ok_and(|o| o.status.success())
}

fn ip_ok(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Every cgroup v1 (and the hybrid `unified`) hierarchy mounted here.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("cgroup.procs").exists()).collect()
}

/// Removes a cgroup and its children, deepest first (rmdir only).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for child in entries.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            remove_cgroup(&child.path());
        }
    }
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir(dir) {
            eprintln!("node teardown: cannot remove cgroup {}: {e}", dir.display());
        }
    }
}

/// The machine-wide node lock (held while the file, or a clone of it, is
/// open): one node at a time, since link, bridge and cgroup names are fixed.
pub fn machine_lock() -> File {
    crate::exclusive_lock(Path::new("/tmp/cuda-tracer-node.lock"))
}

impl HostState {
    /// Holding the machine-wide node `lock` ([`machine_lock`]), clears what
    /// a killed earlier run left, and records the host's state.
    pub fn take(lock: File) -> Self {
        for link in [VETH_HOST, BRIDGE] {
            ip(&["link", "del", link]);
        }
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup(&hierarchy.join(CGROUP_ROOT));
        }
        let sysctls = HOST_SYSCTLS
            .iter()
            .map(|s| (*s, std::fs::read_to_string(Path::new("/proc/sys").join(s)).unwrap_or_default()))
            .collect();
        let new_dirs = HOST_DIRS.iter().copied().filter(|d| !Path::new(d).exists()).collect();
        Self { sysctls, new_dirs, _lock: lock }
    }

    /// The veth pair with the node IP, and the pods' cgroup parent.
    pub fn set_up_network(&mut self) {
        ip_ok(&["link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_PEER]);
        ip_ok(&["addr", "add", &format!("{NODE_IP}/32"), "dev", VETH_HOST]);
        ip_ok(&["link", "set", VETH_HOST, "up"]);
        ip_ok(&["link", "set", VETH_PEER, "up"]);
        for hierarchy in cgroup_hierarchies() {
            std::fs::create_dir_all(hierarchy.join(CGROUP_ROOT)).expect("the pods' cgroup parent");
        }
    }

    /// Undoes everything, after the node's processes are stopped: shims of
    /// `socket` still running, mounts under `dir`, links, cgroups, sysctls,
    /// new host directories and libcni's cache entries.
    pub fn restore(&mut self, dir: &Path, socket: &Path) {
        kill_shims(socket);
        unmount_under(dir);
        for link in [VETH_HOST, BRIDGE] {
            ip(&["link", "del", link]);
        }
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup(&hierarchy.join(CGROUP_ROOT));
        }
        for (name, value) in &self.sysctls {
            if let Err(e) = std::fs::write(Path::new("/proc/sys").join(name), value) {
                eprintln!("node teardown: cannot restore {name}: {e}");
            }
        }
        for d in &self.new_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        remove_cni_cache();
    }
}

/// Kills (by pid) the containerd shims serving `socket`'s containerd.
fn kill_shims(socket: &Path) {
    let needle = socket.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
            // SAFETY: kill has no memory-safety preconditions; the pid is a shim of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points {
        let c = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()).expect("no NUL in a mount point");
        // SAFETY: c is a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// libcni's cached results for our network (kept in /var/lib/cni whatever
/// the configuration says).
fn remove_cni_cache() {
    let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(CNI_NETWORK) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
