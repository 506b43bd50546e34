//! `cargo xtask setup`, image part: the Debian bookworm base images the
//! sidecar image (`docker/ebpf-sidecar/Dockerfile`) builds from without a
//! registry, made with `mmdebstrap` and kept as local images in a buildah
//! storage of setup's own (`~/.cache/cuda-tracer/buildah`).
//!
//! Docker Hub is not reachable from CI, Debian's archive is. Each image
//! carries a label with the hash of what went into it (Debian packages,
//! the Rust toolchains, this recipe), so a warm setup does nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

use crate::{exec, paths, setup_kube::apt_install};

/// The runtime stage's base (`RUNTIME_IMAGE`): minbase, CA certificates
/// (S3 over HTTPS) and procps (`ps` for troubleshooting).
pub const RUNTIME_BASE: &str = "localhost/cuda-tracer-base-runtime:bookworm";
/// The build stage's base (`BUILDER_IMAGE`): what `rust:1.95-bookworm`
/// gives the build (a C toolchain, rustup and cargo in the same places),
/// with this machine's stable and nightly toolchains and bpf-linker.
pub const BUILDER_BASE: &str = "localhost/cuda-tracer-base-builder:bookworm";
/// Debian's daemonless image builder and the rootfs builder (buildah pulls
/// in uidmap; as root neither fuse-overlayfs nor slirp4netns is needed),
/// and Debian's Docker engine for the test of a plain `docker build` (the
/// test runs its own dockerd; the package's service is not started here).
const PACKAGES: &[&str] = &["buildah", "mmdebstrap", "docker.io"];
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const RUNTIME_INCLUDE: &[&str] = &["ca-certificates", "procps"];
/// aws-lc-sys, zstd-sys and ring compile C; bpf-linker's llvm-sys a C wrapper.
const BUILDER_INCLUDE: &[&str] = &["ca-certificates", "curl", "gcc", "g++", "libc6-dev", "make", "pkg-config"];
/// The label holding the hash of an image's inputs.
const INPUTS_LABEL: &str = "cuda-tracer.inputs";
/// Changes whenever the steps below change in a way the inputs do not show.
const RECIPE: &str = "base images v1";
/// Where the official rust image keeps rustup and cargo; the builder base too.
const RUSTUP_HOME: &str = "/usr/local/rustup";
const CARGO_HOME: &str = "/usr/local/cargo";
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The CA bundle of Debian's ca-certificates, here and in the image.
pub const HOST_CA_CERTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The rustup proxies the toolchains are run through.
const PROXIES: &[&str] = &["cargo", "rustc", "rustdoc", "cargo-clippy", "clippy-driver", "rustfmt", "cargo-fmt"];

/// buildah and mmdebstrap, the storage configuration, then each base image
/// whose inputs changed.
pub fn run() -> Result<()> {
    apt_install(PACKAGES).with_context(|| {
        format!("installing Debian's image builders failed: `sudo apt-get install -y {}`", PACKAGES.join(" "))
    })?;
    write_storage_conf()?;
    let runtime_inputs = format!("{RECIPE}\n{SUITE} {MIRROR}\ninclude {}\n", RUNTIME_INCLUDE.join(","));
    ensure_image(RUNTIME_BASE, &runtime_inputs, |scratch| {
        let ctr = from_rootfs(scratch, RUNTIME_INCLUDE)?;
        exec(buildah().args(["config", "--env", &format!("PATH={SYSTEM_PATH}"), "--cmd", "bash", &ctr.0]))?;
        Ok(ctr)
    })?;
    crate::setup::tracer_chain()?;
    let toolchains = host_toolchains()?;
    let builder_inputs = format!(
        "{RECIPE}\n{SUITE} {MIRROR}\ninclude {}\nbpf-linker {}\n{}",
        BUILDER_INCLUDE.join(","),
        crate::setup::BPF_LINKER_VERSION,
        toolchains.iter().map(|t| t.version.as_str()).collect::<String>()
    );
    ensure_image(BUILDER_BASE, &builder_inputs, |scratch| builder(scratch, &toolchains))?;
    println!(
        "setup: base images ready: {RUNTIME_BASE}, {BUILDER_BASE} (buildah storage {})",
        paths::buildah_dir().display()
    );
    Ok(())
}

/// `buildah` on setup's storage (and its cache mounts under it too).
pub fn buildah() -> Command {
    let mut cmd = Command::new("buildah");
    cmd.env("CONTAINERS_STORAGE_CONF", paths::buildah_storage_conf()).env("TMPDIR", paths::buildah_tmp());
    cmd
}

/// containers-storage on overlay under setup's cache, not /var/lib/containers.
fn write_storage_conf() -> Result<()> {
    let dir = paths::buildah_dir();
    std::fs::create_dir_all(paths::buildah_tmp())?;
    let conf = format!(
        "# Written by `cargo xtask setup` (cuda-tracer): the sidecar image's build storage.\n\
         [storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
        dir.join("storage").display(),
        dir.join("run").display()
    );
    let path = paths::buildah_storage_conf();
    if std::fs::read_to_string(&path).ok().as_deref() != Some(conf.as_str()) {
        std::fs::write(&path, conf).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// A buildah working container, removed on drop unless committed.
struct WorkingContainer(String);

impl Drop for WorkingContainer {
    fn drop(&mut self) {
        let _ = buildah().args(["rm", &self.0]).output();
    }
}

/// Makes `name` with `make` unless the image there has the label of
/// `inputs`' hash; the image it replaces is deleted.
fn ensure_image(name: &str, inputs: &str, make: impl FnOnce(&Path) -> Result<WorkingContainer>) -> Result<()> {
    let hash = hex::encode(Sha256::digest(inputs.as_bytes()));
    if inputs_label(name).is_some_and(|label| label == hash) {
        return Ok(());
    }
    let started = Instant::now();
    println!("setup: making the base image {name} (Debian {SUITE} from {MIRROR}, once per machine)");
    let scratch = paths::cache_dir().join("images-scratch");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let ctr = make(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let ctr = ctr?;
    exec(buildah().args(["config", "--label", &format!("{INPUTS_LABEL}={hash}"), &ctr.0]))?;
    exec(buildah().args(["commit", "--quiet", "--rm", &ctr.0, name]).stdout(std::process::Stdio::null()))?;
    // The image this one replaces, now untagged, and sidecar builds' layer
    // caches made from it (images only: layers still in use stay).
    exec(buildah().args(["rmi", "--prune"]).stdout(std::process::Stdio::null()))?;
    let size = image_size(name).unwrap_or_default();
    println!("setup: {name} made in {:.0?} ({size})", started.elapsed());
    Ok(())
}

/// The image's inputs label, if the image exists.
fn inputs_label(name: &str) -> Option<String> {
    let format = format!("{{{{index .OCIv1.Config.Labels \"{INPUTS_LABEL}\"}}}}");
    let out = buildah().args(["inspect", "--type", "image", "--format", &format, name]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn image_size(name: &str) -> Option<String> {
    let out = buildah().args(["images", "--format", "{{.Size}}", name]).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A working container from scratch holding a Debian `minbase` rootfs
/// with `include` installed.
fn from_rootfs(scratch: &Path, include: &[&str]) -> Result<WorkingContainer> {
    let rootfs = scratch.join("rootfs.tar");
    exec(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase", &format!("--include={}", include.join(",")), SUITE])
            .arg(&rootfs)
            .arg(MIRROR),
    )
    .context("mmdebstrap failed: it needs Debian's archive (deb.debian.org) and root")?;
    let ctr = WorkingContainer(buildah_output(buildah().args(["from", "--quiet", "scratch"]))?);
    exec(buildah().args(["add", "--quiet", &ctr.0]).arg(&rootfs).arg("/").stdout(std::process::Stdio::null()))?;
    Ok(ctr)
}

fn buildah_output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One of this machine's Rust toolchains, as the builder base gets it.
struct Toolchain {
    /// `rustc -vV` (part of the image's inputs).
    version: String,
    /// Its directory here.
    sysroot: PathBuf,
    /// Its directory name in the image.
    name: String,
    /// The rustup components copied (the rest, docs above all, stays out).
    components: Vec<String>,
}

/// The default (stable) toolchain CI builds with, named like the rust
/// image names it (`1.95.0-x86_64-unknown-linux-gnu`), and nightly with rust-src.
fn host_toolchains() -> Result<Vec<Toolchain>> {
    let mut out = Vec::new();
    for (plus, extra) in [(None, None), (Some("+nightly"), Some("rust-src"))] {
        let rustc = |args: &[&str]| crate::setup::output(Command::new("rustc").args(plus).args(args));
        let version = rustc(&["-vV"])?;
        let field = |key: &str| version.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
        let (Some(host), Some(release)) = (field("host: "), field("release: ")) else {
            bail!("`rustc {} -vV` printed no host or release", plus.unwrap_or_default());
        };
        let channel = if plus.is_some() { "nightly".to_string() } else { release };
        let mut components: Vec<String> =
            ["rustc", "cargo", "rust-std"].iter().map(|c| format!("{c}-{host}")).collect();
        components.extend(extra.map(str::to_string));
        out.push(Toolchain {
            sysroot: PathBuf::from(rustc(&["--print", "sysroot"])?.trim()),
            name: format!("{channel}-{host}"),
            components,
            version,
        });
    }
    Ok(out)
}

/// The builder base: the Debian rootfs, the toolchains under rustup's
/// proxies, then bpf-linker built inside by this same setup (`--tracer-only`).
fn builder(scratch: &Path, toolchains: &[Toolchain]) -> Result<WorkingContainer> {
    let ctr = from_rootfs(scratch, BUILDER_INCLUDE)?;
    for toolchain in toolchains {
        let tar = copy_toolchain(scratch, toolchain)?;
        let dest = format!("{RUSTUP_HOME}/toolchains/{}/", toolchain.name);
        exec(buildah().args(["add", "--quiet", &ctr.0]).arg(&tar).arg(&dest).stdout(std::process::Stdio::null()))?;
        std::fs::remove_file(&tar)?;
    }
    let env = [
        format!("RUSTUP_HOME={RUSTUP_HOME}"),
        format!("CARGO_HOME={CARGO_HOME}"),
        format!("PATH={CARGO_HOME}/bin:{SYSTEM_PATH}"),
    ];
    exec(buildah().arg("config").args(env.iter().flat_map(|e| ["--env", e.as_str()])).args(["--cmd", "bash", &ctr.0]))?;
    let rustup = which("rustup")?;
    exec(buildah().args(["copy", "--quiet", &ctr.0]).arg(&rustup).arg(format!("{CARGO_HOME}/bin/rustup")))?;
    let links = PROXIES.iter().map(|p| format!("ln -sf rustup {CARGO_HOME}/bin/{p}")).collect::<Vec<_>>().join(" && ");
    let default = format!("rustup default {}", toolchains[0].name);
    exec(buildah().args(["run", "--network=none", &ctr.0, "--", "sh", "-c", &format!("{links} && {default}")]))?;
    // This very xtask, mounted in: the same code installs the chain everywhere.
    // The host's CA certificates too, for machines behind a TLS-inspecting proxy.
    let xtask = std::env::current_exe().context("the running xtask's path")?;
    exec(
        buildah()
            .args(["run", "--network=host", "--volume"])
            .arg(format!("{}:/usr/local/bin/cuda-tracer-xtask:ro", xtask.display()))
            .args(["--volume", &format!("{HOST_CA_CERTS}:{HOST_CA_CERTS}:ro")])
            .args([&ctr.0, "--", "cuda-tracer-xtask", "setup", "--tracer-only"]),
    )
    .context("building bpf-linker in the builder base failed (it needs crates.io)")?;
    exec(buildah().args(["run", "--network=none", &ctr.0, "--", "rm", "-rf", &format!("{CARGO_HOME}/registry")]))?;
    Ok(ctr)
}

/// A tar of the toolchain's chosen components (rustup's per-component file lists).
fn copy_toolchain(scratch: &Path, toolchain: &Toolchain) -> Result<PathBuf> {
    let rustlib = toolchain.sysroot.join("lib/rustlib");
    let mut files = vec!["lib/rustlib/rust-installer-version".to_string()];
    for component in &toolchain.components {
        let manifest = rustlib.join(format!("manifest-{component}"));
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("{} is missing: `rustup component add {component}`", manifest.display()))?;
        files.extend(text.lines().filter_map(|l| l.split_once(':')).map(|(_, path)| path.to_string()));
    }
    let list = scratch.join(format!("{}.files", toolchain.name));
    std::fs::write(&list, files.join("\n") + "\n")?;
    let tar = scratch.join(format!("{}.tar", toolchain.name));
    exec(Command::new("tar").arg("-C").arg(&toolchain.sysroot).arg("-cf").arg(&tar).arg("-T").arg(&list))?;
    // rustup's list of what is installed: only the components copied.
    let meta = scratch.join(format!("{}.meta", toolchain.name));
    std::fs::create_dir_all(meta.join("lib/rustlib"))?;
    std::fs::write(meta.join("lib/rustlib/components"), toolchain.components.join("\n") + "\n")?;
    exec(Command::new("tar").arg("-C").arg(&meta).arg("-rf").arg(&tar).arg("lib/rustlib/components"))?;
    Ok(tar)
}

fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").context("PATH is unset")?;
    let found = std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file());
    found.with_context(|| format!("`{tool}` is not on PATH")).and_then(|p| Ok(p.canonicalize()?))
}
