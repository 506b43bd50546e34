//! `cargo xtask setup`, Kubernetes part: the control plane and node binaries
//! (built once per machine from Debian's `kubernetes` source package), etcd,
//! and the container runtime, for the admission and node tests.
//!
//! No container registry or GitHub download is reachable from CI, but
//! Debian's archive is: bookworm's `kubernetes` 1.20.2 source carries its
//! whole vendor tree and builds offline with Debian's Go.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{exec, paths};

/// The version the source package builds (`kube-apiserver --version`).
const KUBE_VERSION: &str = "v1.20.2";
/// Debian packages the build needs (dpkg-dev unpacks `apt-get source`).
const BUILD_PACKAGES: &[&str] = &["golang-go", "make", "rsync", "dpkg-dev", "golang-github-modern-go-reflect2-dev"];
/// Where Debian's reflect2 1.0.2 sources live.
const REFLECT2_DEBIAN: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";
/// apt sources file this step adds when no `deb-src` entry exists.
const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/cuda-tracer-src.sources";

/// The binaries built from the source tree: `cmd/<name>` → `kube/<name>`.
const KUBE_BINARIES: &[&str] = &["kube-apiserver", "kubelet", "kube-scheduler", "kube-controller-manager"];
/// Debian's container runtime for the node tests: containerd 1.6 (with
/// `ctr`), runc, the CNI plugins (in /usr/lib/cni); gcc builds the pause binary.
const NODE_PACKAGES: &[&str] = &["containerd", "runc", "containernetworking-plugins", "gcc", "libc6-dev"];

/// etcd and the runtime, then the Kubernetes binaries not cached yet.
pub fn run() -> Result<()> {
    // etcd runs next to the apiserver; the tests make certificates with openssl.
    let packages = [&["etcd-server", "openssl"], NODE_PACKAGES].concat();
    apt_install(&packages).with_context(|| {
        format!(
            "installing Debian's etcd, openssl and container runtime failed: `sudo apt-get install -y {}`",
            packages.join(" ")
        )
    })?;
    let missing: Vec<&str> = KUBE_BINARIES.iter().copied().filter(|b| !binary_works(&paths::kube_bin(b))).collect();
    if missing.is_empty() && paths::kube_pause().exists() {
        return Ok(());
    }
    build_kube(&missing)
}

/// The cached binary is there and says it is the version we build.
fn binary_works(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(KUBE_VERSION))
}

/// Builds `missing` (all in one `make`) and the pause binary, then deletes the tree.
fn build_kube(missing: &[&str]) -> Result<()> {
    let started = std::time::Instant::now();
    let kube_dir = paths::cache_dir().join("kube");
    println!(
        "setup: building {} {KUBE_VERSION} and the pause binary for the Kubernetes tests \
         (once per machine, 5-10 minutes per binary on 2 cores)",
        if missing.is_empty() { "nothing else".to_string() } else { missing.join(", ") }
    );

    println!("setup: kube step 1/5: installing build packages: {}", BUILD_PACKAGES.join(" "));
    apt_install(BUILD_PACKAGES).context("kube step 1/5 (build packages) failed")?;

    println!("setup: kube step 2/5: fetching Debian's `kubernetes` source package");
    let src = fetch_source(&kube_dir.join("src")).context(
        "kube step 2/5 (source) failed: needs Debian's archive (deb.debian.org) and a `deb-src` entry for bookworm",
    )?;

    println!("setup: kube step 3/5: replacing vendored reflect2 1.0.1 (crashes under Go >= 1.18) with Debian's 1.0.2");
    replace_reflect2(&src)
        .context("kube step 3/5 (reflect2) failed: `apt-get install golang-github-modern-go-reflect2-dev`")?;

    if !missing.is_empty() {
        make_binaries(&src, missing)?;
    }
    println!("setup: kube step 5/5: the pause binary (build/pause/linux/pause.c, gcc -static)");
    let pause = paths::kube_pause();
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-DVERSION=v3.4", "-o"])
        .arg(&pause)
        .arg(src.join("build/pause/linux/pause.c"))
        .status()
        .context("kube step 5/5: cannot start gcc: `apt-get install gcc libc6-dev`")?;
    if !status.success() {
        bail!("kube step 5/5 (gcc -static pause.c) failed with {status}: `apt-get install libc6-dev`");
    }
    std::fs::remove_dir_all(kube_dir.join("src")).context("removing the kube source tree")?;
    println!("setup: Kubernetes binaries ready in {} ({:.0?})", kube_dir.display(), started.elapsed());
    Ok(())
}

/// `make WHAT="cmd/a cmd/b"` (nice'd, static) and copies each into the cache.
fn make_binaries(src: &Path, names: &[&str]) -> Result<()> {
    let what: Vec<String> = names.iter().map(|n| format!("cmd/{n}")).collect();
    println!("setup: kube step 4/5: make WHAT=\"{}\" (nice'd; the long part)", what.join(" "));
    // Kubernetes' scripts keep the Go build cache under _output, inside the
    // source tree, so deleting the tree afterwards frees it too.
    let status = Command::new("nice")
        .args(["-n", "10", "make"])
        .arg(format!("WHAT={}", what.join(" ")))
        .current_dir(src)
        .env("KUBE_GIT_VERSION", KUBE_VERSION)
        // Static binaries: the kubelet too (no cgo needed with a remote runtime).
        .env("CGO_ENABLED", "0")
        .status()
        .context("kube step 4/5: cannot start `make`: `apt-get install make`")?;
    if !status.success() {
        bail!("kube step 4/5 (make WHAT={} in {}) failed with {status}", what.join(" "), src.display());
    }
    for name in names {
        let built = src.join("_output/local/bin/linux/amd64").join(name);
        let bin = paths::kube_bin(name);
        std::fs::copy(&built, &bin).with_context(|| format!("copy {} to {}", built.display(), bin.display()))?;
        if !binary_works(&bin) {
            bail!("kube step 4/5: {} does not print {KUBE_VERSION} for --version", bin.display());
        }
    }
    Ok(())
}

/// `apt-get install` of the packages not installed yet (needs root).
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "packages {} are missing: run `sudo apt-get install -y {}` or setup as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Unpacks `apt-get source kubernetes` (with Debian's patches) under `dir`,
/// adding a `deb-src` entry for bookworm first if apt has none.
fn fetch_source(dir: &Path) -> Result<PathBuf> {
    if !has_deb_src()? {
        if !is_root() {
            bail!("apt has no deb-src entry: add one for bookworm (see {DEB_SRC_FILE} in xtask/src/setup_kube.rs) or run setup as root");
        }
        std::fs::write(DEB_SRC_FILE, DEB_SRC).with_context(|| format!("write {DEB_SRC_FILE}"))?;
        println!("setup: added {DEB_SRC_FILE} (deb-src for bookworm)");
        exec(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove the old {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    exec(Command::new("apt-get").args(["source", "-qq", "kubernetes"]).current_dir(dir))?;
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kubernetes-")))
        .with_context(|| format!("`apt-get source kubernetes` left no kubernetes-* directory in {}", dir.display()))
}

const DEB_SRC: &str = "# Added by `cargo xtask setup` (cuda-tracer): sources for the test kube-apiserver.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// Whether any apt source list enables `deb-src`.
fn has_deb_src() -> Result<bool> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    Ok(files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).any(|text| {
        text.lines()
            .map(str::trim)
            .any(|l| l.starts_with("deb-src ") || (l.starts_with("Types:") && l.contains("deb-src")))
    }))
}

/// The vendored reflect2 1.0.1 crashes under Go >= 1.18 when the apiserver
/// applies a webhook's JSON patch; Debian's 1.0.2 is a drop-in fix.
fn replace_reflect2(src: &Path) -> Result<()> {
    let vendored = src.join("vendor/github.com/modern-go/reflect2");
    std::fs::remove_dir_all(&vendored).with_context(|| format!("remove {}", vendored.display()))?;
    std::fs::create_dir_all(&vendored)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(REFLECT2_DEBIAN).with_context(|| format!("read {REFLECT2_DEBIAN}"))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if (name.ends_with(".go") && !name.ends_with("_test.go")) || name.ends_with(".s") {
            std::fs::copy(&path, vendored.join(&name))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("{REFLECT2_DEBIAN} has no Go files");
    }
    Ok(())
}
