//! The Kubernetes manifests: every document under k8s/ is a valid object of
//! its kind (typed parse with unknown fields rejected, and the official
//! schemas in strict mode), the kustomizations render, and the pods ask for
//! exactly what the tracer needs: hostPID, a shared /traces volume, the
//! downward-API env, and capabilities instead of privileged mode.

mod k8s_capabilities;
mod k8s_deploy_flow;
mod k8s_scripts;
mod k8s_support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Container, PersistentVolumeClaim, PodSpec, Service},
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_support::*;

const TRACER: &str = "ebpf-tracer";
/// The sidecar tracer's added capabilities, exactly (no SYS_ADMIN:
/// uprobe_multi links need none; no SYS_PTRACE: its vLLM container drops
/// ALL; tests/k8s_node_capabilities.rs shows each is needed).
const SIDECAR_CAPS: [&str; 2] = ["BPF", "PERFMON"];
/// The DaemonSet's: the pods it traces may hold capabilities (SYS_PTRACE).
const DAEMONSET_CAPS: [&str; 3] = ["BPF", "PERFMON", "SYS_PTRACE"];

fn doc<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter().find(|d| d.kind == kind && d.name == name).unwrap_or_else(|| {
        panic!("no {kind}/{name} in {:?}", docs.iter().map(|d| (&d.kind, &d.name)).collect::<Vec<_>>())
    })
}

fn sidecar_docs() -> Vec<Doc> {
    kustomize_docs(&root().join("k8s"))
}

fn kustomize_docs(dir: &std::path::Path) -> Vec<Doc> {
    parse_docs(&format!("kustomize {}", dir.display()), &kustomize(dir))
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let docs = all_docs();
    let resources: Vec<_> = docs.iter().filter(|d| !d.is_kustomization()).collect();
    assert!(resources.len() >= 12, "expected the sidecar and DaemonSet manifests, found {}", resources.len());
    let errors: Vec<String> = resources
        .iter()
        .filter_map(|d| check_typed(d).err().map(|e| format!("{} {}/{}: {e}", d.file, d.kind, d.name)))
        .collect();
    assert!(errors.is_empty(), "manifests that are not valid objects:\n{}", errors.join("\n"));
}

#[test]
fn typed_parse_rejects_unknown_and_misplaced_fields() {
    // The check above would pass anything if k8s-openapi's lenience leaked through.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: NodePort\n  nodePorts: [30800]\n";
    let err = check_typed(&parse_docs("bad.yaml", bad)[0]).unwrap_err();
    assert!(err.contains("nodePorts"), "{err}");
    let wrong_version = "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: x}\n";
    assert!(check_typed(&parse_docs("old.yaml", wrong_version)[0]).is_err());
}

#[test]
fn manifests_pass_strict_schema_validation() {
    let files: Vec<_> = yaml_files(&root().join("k8s"))
        .into_iter()
        .filter(|p| file_docs(p).iter().any(|d| !d.is_kustomization()))
        .collect();
    if let Err(out) = schema_validate(&files) {
        panic!("kubernetes-validate --strict -k {SCHEMA_VERSION} rejected the manifests:\n{out}");
    }
    // And the check does reject what it should.
    let scratch = tempfile::tempdir().unwrap();
    let bad = scratch.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, lables: {a: b}}\n").unwrap();
    let out = schema_validate(&[bad]).unwrap_err();
    assert!(out.contains("lables"), "{out}");
}

#[test]
fn kustomizations_render_every_file_and_validate() {
    let scratch = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = yaml_files(&root().join("k8s"))
        .into_iter()
        .filter(|p| cuda_tracer_tests::is_kustomization(p))
        .filter_map(|p| p.parent().map(|d| d.to_path_buf()))
        .collect();
    assert!(dirs.len() >= 2, "k8s/ and k8s/daemonset/ have kustomizations: {dirs:?}");
    for dir in dirs {
        let rendered = kustomize(&dir);
        let docs = parse_docs(&dir.display().to_string(), &rendered);
        for d in &docs {
            check_typed(d).unwrap_or_else(|e| panic!("rendered {}: {}/{}: {e}", dir.display(), d.kind, d.name));
        }
        let out = scratch.path().join("rendered.yaml");
        std::fs::write(&out, &rendered).unwrap();
        schema_validate(&[out]).unwrap_or_else(|e| panic!("rendered {}:\n{e}", dir.display()));
        // Every manifest in the directory is in the kustomization (none forgotten).
        let rendered_ids: BTreeSet<_> = docs.iter().map(|d| (d.kind.clone(), d.name.clone())).collect();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() || path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            for d in file_docs(&path).iter().filter(|d| !d.is_kustomization()) {
                assert!(
                    rendered_ids.contains(&(d.kind.clone(), d.name.clone())),
                    "{} {}/{} is not in {}/kustomization.yaml",
                    d.file,
                    d.kind,
                    d.name,
                    dir.display()
                );
            }
        }
    }
}

fn caps(c: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{} has no securityContext", c.name));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    let set = |v: &Option<Vec<String>>| v.clone().unwrap_or_default().into_iter().collect::<BTreeSet<_>>();
    (set(&caps.add), set(&caps.drop))
}

/// What both tracer pods (sidecar and DaemonSet) must have.
fn assert_least_privilege_tracer(spec: &PodSpec, what: &str, caps_added: &[&str]) {
    assert_eq!(spec.host_pid, Some(true), "{what}: the tracer sees other containers' pids only with hostPID");
    let tracer = container(spec, TRACER);
    let sc = tracer.security_context.as_ref().expect("securityContext");
    assert_ne!(sc.privileged, Some(true), "{what}: capabilities, not privileged mode");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
    let seccomp = sc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"), "{what}: seccomp stays on");
    let (add, drop) = caps(tracer);
    assert_eq!(add, caps_added.iter().map(|s| s.to_string()).collect(), "{what}: added capabilities");
    assert_eq!(drop, BTreeSet::from(["ALL".to_string()]), "{what}: dropped capabilities");
    // Kubernetes gives added capabilities to uid 0 only.
    assert_eq!(sc.run_as_user, Some(0), "{what}");
    assert_eq!(spec.automount_service_account_token, Some(false), "{what}: nothing calls the API");
}

fn env_field(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value_from
        .as_ref()?
        .field_ref
        .as_ref()
        .map(|f| f.field_path.clone())
}

fn mount_at<'a>(c: &'a Container, path: &str) -> Option<&'a k8s_openapi::api::core::v1::VolumeMount> {
    c.volume_mounts.as_ref()?.iter().find(|m| m.mount_path == path)
}

fn quantity(c: &Container, resource: &str) -> String {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
    requests.get(resource).map(|q| q.0.clone()).unwrap_or_else(|| panic!("{} requests no {resource}", c.name))
}

fn http_probe(p: &Option<k8s_openapi::api::core::v1::Probe>) -> (String, IntOrString) {
    let get = p.as_ref().and_then(|p| p.http_get.as_ref()).expect("an httpGet probe");
    (get.path.clone().unwrap_or_default(), get.port.clone())
}

/// A named or numbered container port resolved to its number.
fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .as_ref()
            .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name.as_str())))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("{} has no port named {name}", c.name)),
    }
}

fn config_data(docs: &[Doc], name: &str) -> BTreeMap<String, String> {
    doc(docs, "ConfigMap", name).typed::<ConfigMap>().data.unwrap_or_default()
}

#[test]
fn sidecar_pod_shares_traces_and_asks_only_for_what_the_tracer_needs() {
    let docs = sidecar_docs();
    let deploy: Deployment = doc(&docs, "Deployment", "vllm").typed();
    let spec = deploy.spec.template.spec.as_ref().unwrap();
    assert_least_privilege_tracer(spec, "sidecar", &SIDECAR_CAPS);
    let (vllm, tracer) = (container(spec, "vllm"), container(spec, TRACER));

    // One volume at /traces in both containers, backed by the PVC of 01-storage.yaml.
    let (a, b) = (mount_at(vllm, "/traces").expect("vllm mounts /traces"), mount_at(tracer, "/traces").unwrap());
    assert_eq!(a.name, b.name, "both containers mount the same volume at /traces");
    assert_ne!(b.read_only, Some(true), "the tracer writes /traces");
    let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == b.name).expect("the traces volume");
    let claim = &volume.persistent_volume_claim.as_ref().expect("a PVC").claim_name;
    doc(&docs, "PersistentVolumeClaim", claim).typed::<PersistentVolumeClaim>();

    for (var, path) in
        [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("NODE_NAME", "spec.nodeName")]
    {
        assert_eq!(env_field(tracer, var).as_deref(), Some(path), "downward-API {var}");
    }

    // The seed's resource requests.
    assert_eq!(quantity(vllm, "nvidia.com/gpu"), "1");
    assert_eq!(quantity(vllm, "memory"), "12Gi");
    assert_eq!(quantity(vllm, "cpu"), "4");
    assert_eq!(quantity(tracer, "memory"), "512Mi");
    assert_eq!(quantity(tracer, "cpu"), "500m");
    let gpu_limit = vllm.resources.as_ref().and_then(|r| r.limits.as_ref()).and_then(|l| l.get("nvidia.com/gpu"));
    assert_eq!(gpu_limit.map(|q| q.0.as_str()), Some("1"), "extended resources need a limit");

    // Probes: vLLM /health on 8000, the tracer's /healthz and /readyz on METRICS_ADDR's port.
    for probe in [&vllm.readiness_probe, &vllm.liveness_probe, &vllm.startup_probe] {
        let (path, port) = http_probe(probe);
        assert_eq!((path.as_str(), port_number(vllm, &port)), ("/health", 8000));
    }
    let config = config_data(&docs, "tracer-config");
    let metrics_port: i32 = config["METRICS_ADDR"].rsplit(':').next().unwrap().parse().unwrap();
    let (path, port) = http_probe(&tracer.liveness_probe);
    assert_eq!((path.as_str(), port_number(tracer, &port)), ("/healthz", metrics_port));
    let (path, port) = http_probe(&tracer.readiness_probe);
    assert_eq!((path.as_str(), port_number(tracer, &port)), ("/readyz", metrics_port));
    assert_eq!(config["VLLM_METRICS_URL"], "http://127.0.0.1:8000/metrics");
    assert_eq!(config["TRACE_DIR"], "/traces");

    // NodePort 30800 reaches vLLM's port.
    let svc: Service = doc(&docs, "Service", "vllm-api").typed();
    let svc_spec = svc.spec.unwrap();
    assert_eq!(svc_spec.type_.as_deref(), Some("NodePort"));
    let port = &svc_spec.ports.unwrap()[0];
    assert_eq!(port.node_port, Some(30800));
    assert_eq!(port_number(vllm, port.target_port.as_ref().unwrap()), 8000);
    let labels = deploy.spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in svc_spec.selector.unwrap() {
        assert_eq!(labels.get(&k), Some(&v), "the Service selects the vLLM pod");
    }
}

#[test]
fn daemonset_traces_every_gpu_node_with_the_same_privileges() {
    let docs = kustomize_docs(&root().join("k8s/daemonset"));
    let ds: DaemonSet = doc(&docs, "DaemonSet", "cuda-tracer").typed();
    let spec = ds.spec.template.spec.unwrap();
    assert_least_privilege_tracer(&spec, "daemonset", &DAEMONSET_CAPS);
    let selector = spec.node_selector.as_ref().expect("a GPU node selector");
    assert_eq!(selector.get("nvidia.com/gpu.present").map(String::as_str), Some("true"));
    let tolerations = spec.tolerations.as_ref().expect("tolerations");
    assert!(tolerations.iter().any(|t| t.key.as_deref() == Some("nvidia.com/gpu")), "{tolerations:?}");
    let tracer = container(&spec, TRACER);
    assert_eq!(env_field(tracer, "NODE_NAME").as_deref(), Some("spec.nodeName"));
    let mount = mount_at(tracer, "/traces").expect("/traces");
    let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == mount.name).unwrap();
    assert!(volume.host_path.is_some(), "files not yet uploaded survive a tracer restart on the node");
}

#[test]
fn tracer_settings_are_variables_the_tracer_reads() {
    let known = tracer_env_names();
    for name in ["TARGET_PROCESS", "TRACE_INTERVAL", "S3_BUCKET", "UPLOAD_INTERVAL", "POD_NAME", "NODE_NAME"] {
        assert!(known.contains(&name.to_string()), "tracer_env_names() misses {name}: {known:?}");
    }
    let sidecar = sidecar_docs();
    let node = kustomize_docs(&root().join("k8s/daemonset"));
    for (docs, name) in [(&sidecar, "tracer-config"), (&node, "tracer-node-config")] {
        for (key, value) in config_data(docs, name) {
            assert!(known.contains(&key), "{name}: {key} is not an environment variable of cuda-tracer ({known:?})");
            // clap reads an empty S3_PATH_STYLE as a missing value and fails.
            assert!(!value.is_empty() || key == "S3_BUCKET", "{name}: {key} is empty");
        }
    }
    // Every container that reads the ConfigMaps refers to ones that exist.
    let deploy: Deployment = doc(&sidecar, "Deployment", "vllm").typed();
    let spec = deploy.spec.template.spec.unwrap();
    for c in &spec.containers {
        for from in c.env_from.iter().flatten() {
            let cm = from.config_map_ref.as_ref().expect("configMapRef");
            doc(&sidecar, "ConfigMap", &cm.name);
        }
    }
    // vLLM's args read $(VAR)s that its env defines.
    let vllm = container(&spec, "vllm");
    let model_config = config_data(&sidecar, "vllm-config");
    for arg in vllm.args.iter().flatten() {
        if let Some(var) = arg.split("$(").nth(1).and_then(|s| s.split(')').next()) {
            assert!(model_config.contains_key(var), "vLLM arg {arg} needs {var} in vllm-config");
        }
    }
}

#[test]
fn vllm_container_drops_what_it_does_not_need() {
    // Issue 15: it ran as root with the runtime's default capabilities.
    let docs = sidecar_docs();
    let deploy: Deployment = doc(&docs, "Deployment", "vllm").typed();
    let vllm = container(deploy.spec.template.spec.as_ref().unwrap(), "vllm");
    let sc = vllm.security_context.as_ref().expect("vllm securityContext");
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let (add, drop) = caps(vllm);
    assert!(add.is_empty(), "vLLM needs no capability: {add:?}");
    assert_eq!(drop, BTreeSet::from(["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"));
}
