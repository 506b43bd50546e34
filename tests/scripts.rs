//! The repository's shell scripts, found through git, and the shellcheck
//! that `cargo xtask setup` installs, for the tests that lint them.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::Command,
};

/// Every shell script git tracks: `*.sh`, and files whose `#!` line runs a
/// shell (`.ci/run`), sorted.
pub fn shell_scripts() -> Vec<PathBuf> {
    let root = crate::root();
    let out = Command::new("git").current_dir(&root).args(["ls-files", "-z"]).output().expect("git ls-files");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    let mut scripts: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| root.join(String::from_utf8_lossy(name).as_ref()))
        .filter(|path| path.is_file() && is_shell_script(path))
        .collect();
    scripts.sort();
    scripts
}

fn is_shell_script(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "sh") {
        return true;
    }
    let mut first = String::new();
    let Ok(file) = std::fs::File::open(path) else { return false };
    if BufReader::new(file.take(256)).read_line(&mut first).is_err() {
        return false; // not text
    }
    let Some(command) = first.strip_prefix("#!") else { return false };
    let mut words = command.split_whitespace();
    let interpreter = match words.next() {
        Some(env) if env.ends_with("/env") => words.next(),
        other => other,
    };
    let name = interpreter.and_then(|w| w.rsplit('/').next());
    name.is_some_and(|n| ["sh", "bash", "dash", "ksh"].contains(&n))
}

/// shellcheck from PyPI in setup's k8s tools (`CUDA_TRACER_K8S_TOOLS`).
pub fn shellcheck() -> Command {
    let tools = std::env::var_os("CUDA_TRACER_K8S_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::setup_cache().join("k8s-tools"));
    let path = tools.join("bin/shellcheck");
    assert!(path.exists(), "{} is missing: run `cargo xtask setup`", path.display());
    Command::new(path)
}
