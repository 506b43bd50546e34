//! `cargo xtask setup`, Kubernetes part: a real kube-apiserver (built once per
//! machine from Debian's `kubernetes` source package), etcd, and kubectl for
//! the admission tests.
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

/// etcd, then kube-apiserver (cached), each skipped when already there.
pub fn run() -> Result<()> {
    // etcd runs next to the apiserver; the tests make certificates with openssl.
    apt_install(&["etcd-server", "openssl"]).context("installing Debian's etcd-server and openssl failed")?;
    if apiserver_works(&paths::kube_apiserver()) {
        return Ok(());
    }
    build_apiserver()
}

/// The cached binary is there and says it is the version we build.
fn apiserver_works(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(KUBE_VERSION))
}

fn build_apiserver() -> Result<()> {
    let started = std::time::Instant::now();
    let kube_dir = paths::cache_dir().join("kube");
    println!("setup: building kube-apiserver {KUBE_VERSION} for the admission tests (once per machine, 5-10 minutes)");

    println!("setup: kube step 1/4: installing build packages: {}", BUILD_PACKAGES.join(" "));
    apt_install(BUILD_PACKAGES).context("kube step 1/4 (build packages) failed")?;

    println!("setup: kube step 2/4: fetching Debian's `kubernetes` source package");
    let src = fetch_source(&kube_dir.join("src")).context(
        "kube step 2/4 (source) failed: needs Debian's archive (deb.debian.org) and a `deb-src` entry for bookworm",
    )?;

    println!("setup: kube step 3/4: replacing vendored reflect2 1.0.1 (crashes under Go >= 1.18) with Debian's 1.0.2");
    replace_reflect2(&src)
        .context("kube step 3/4 (reflect2) failed: `apt-get install golang-github-modern-go-reflect2-dev`")?;

    println!("setup: kube step 4/4: make WHAT=cmd/kube-apiserver (nice'd; the long part)");
    // Kubernetes' scripts keep the Go build cache under _output, inside the
    // source tree, so deleting the tree afterwards frees it too.
    let status = Command::new("nice")
        .args(["-n", "10", "make", "WHAT=cmd/kube-apiserver"])
        .current_dir(&src)
        .env("KUBE_GIT_VERSION", KUBE_VERSION)
        .status()
        .context("kube step 4/4: cannot start `make`: `apt-get install make`")?;
    if !status.success() {
        bail!("kube step 4/4 (make WHAT=cmd/kube-apiserver in {}) failed with {status}", src.display());
    }
    let built = src.join("_output/local/bin/linux/amd64/kube-apiserver");
    let bin = paths::kube_apiserver();
    std::fs::copy(&built, &bin).with_context(|| format!("copy {} to {}", built.display(), bin.display()))?;
    if !apiserver_works(&bin) {
        bail!("kube step 4/4: {} does not print {KUBE_VERSION} for --version", bin.display());
    }
    std::fs::remove_dir_all(kube_dir.join("src")).context("removing the kube source tree")?;
    println!("setup: kube-apiserver ready at {} ({:.0?})", bin.display(), started.elapsed());
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
