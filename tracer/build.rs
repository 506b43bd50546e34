//! Builds the BPF object from `tracer-ebpf` with aya-build (nightly + build-std
//! + bpf-linker) into OUT_DIR, where `loader.rs` embeds it.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not installed: run `cargo xtask setup` (it builds bpf-linker against the nightly toolchain's LLVM)"
        ));
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("tracer crate has no parent dir"))?
        .join("tracer-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non UTF-8 path {}", root.display()))?;
    println!("cargo:rerun-if-changed={root}/../tracer-common/src");
    // aya-build relays the nested cargo's progress lines as build warnings;
    // keep them out of every build's output.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package { name: "tracer-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("bpf-linker")).find(|p| p.is_file())
}
