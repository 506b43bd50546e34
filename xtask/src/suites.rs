//! Which test targets run where: `cargo xtask test` runs every test, the
//! real-node suites (`tests/k8s_node*`, registered in tests/Cargo.toml)
//! through `cargo xtask e2e kubernetes` as README shows it, the rest in one
//! `cargo test`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result};

/// The test package, whose targets are split.
const TEST_PACKAGE: &str = "cuda-tracer-tests";
/// Test targets of the real-node suites start with this.
const NODE_SUITE_PREFIX: &str = "k8s_node";

/// The `[[test]]` target names of tests/Cargo.toml, in file order.
fn test_targets(root: &Path) -> Result<Vec<String>> {
    let manifest = root.join("tests/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_test = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_test = line == "[[test]]";
        } else if let Some(value) = line.strip_prefix("name").map(str::trim_start).and_then(|l| l.strip_prefix('=')) {
            if in_test {
                names.push(value.trim().trim_matches('"').to_string());
            }
        }
    }
    Ok(names)
}

/// The real-node suites.
pub fn node_suites(root: &Path) -> Result<Vec<String>> {
    Ok(test_targets(root)?.into_iter().filter(|t| t.starts_with(NODE_SUITE_PREFIX)).collect())
}

/// `cargo test` of every test but the real-node suites: the other
/// packages whole (the BPF crate builds only for its own target), then the
/// test package's library and its other targets.
pub fn all_but_node(root: &Path) -> Result<Vec<Command>> {
    let mut others = Command::new("cargo");
    others.current_dir(root).args(["test", "--workspace", "--exclude", TEST_PACKAGE, "--exclude", "tracer-ebpf"]);
    let mut tests = Command::new("cargo");
    tests.current_dir(root).args(["test", "-p", TEST_PACKAGE, "--lib"]);
    for target in test_targets(root)?.iter().filter(|t| !t.starts_with(NODE_SUITE_PREFIX)) {
        tests.args(["--test", target]);
    }
    Ok(vec![others, tests])
}

/// `cargo test` of the real-node suites.
pub fn node(root: &Path) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args(["test", "-p", TEST_PACKAGE]);
    for suite in node_suites(root)? {
        cmd.args(["--test", &suite]);
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_test_runs_once() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let all = test_targets(root).unwrap();
        let node = node_suites(root).unwrap();
        assert!(all.len() > 40 && all.contains(&"k8s_node".to_string()), "{all:?}");
        assert!(node.len() >= 4 && node.iter().all(|n| all.contains(n)), "{node:?}");
        // Every file tests/<name>.rs registered is one of the two runs.
        let registered: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(registered.len(), all.len(), "no target twice");
    }
}
