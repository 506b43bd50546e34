//! The tracer sidecar container and its traces volume, built as k8s-openapi
//! types from the webhook's settings.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
        HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Probe, ResourceRequirements,
        SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext, Volume, VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

use super::settings::{non_empty, InjectConfig};

/// Name of the injected container; a pod that has it is not injected again.
pub const SIDECAR_NAME: &str = "ebpf-tracer";
/// Name of the pod volume that holds trace files.
pub const TRACES_VOLUME: &str = "cuda-tracer-traces";
/// Where the sidecar writes traces (its TRACE_DIR).
pub const TRACES_MOUNT: &str = "/traces";
/// Annotation the webhook sets on the pods it injects.
pub const INJECTED_ANNOTATION: &str = "cuda-tracer/injected";

/// Capabilities the tracer needs instead of `privileged: true`, added after
/// dropping ALL (the same as the DaemonSet; tests/webhook_hostile.rs checks
/// the whole security context against it): BPF and PERFMON load programs,
/// SYS_PTRACE reads the /proc/PID/maps and /proc/PID/root of the pod's
/// other containers, which may hold capabilities the tracer does not (the
/// shipped sidecar Deployment does without: its vLLM container drops ALL).
/// No SYS_ADMIN: on Linux >= 6.6 uprobes attach through uprobe_multi links,
/// which need no more (only the perf-event uprobes of older kernels need it
/// since CVE-2025-38466; see k8s/README.md). No SYS_RESOURCE: the tracer
/// needs Linux 5.15, where BPF memory is charged to the cgroup, not to
/// memlock.
pub const CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "SYS_PTRACE"];

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), value_from: None }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { api_version: Some("v1".into()), field_path: field_path.into() }),
            ..Default::default()
        }),
    }
}

/// A variable read from a Secret in the pod's namespace. Optional: a missing
/// Secret leaves the variable unset instead of keeping the pod (and vLLM in
/// it) from starting.
fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: Some(true) }),
            ..Default::default()
        }),
    }
}

/// The sidecar's environment: what `cuda-tracer run` reads. Secrets are
/// references only (`secretKeyRef`, `envFrom`): the patch goes back to the
/// webhook's client, so no secret value may be in it
/// (`secrets::refuse_literal_secrets` keeps them out of the settings).
fn sidecar_env(args: &InjectConfig) -> Vec<EnvVar> {
    let mut vars = vec![env("TARGET_PROCESS", &args.target_process), env("TRACE_DIR", TRACES_MOUNT)];
    match non_empty(&args.s3_bucket) {
        Some(bucket) => {
            vars.push(env("S3_BUCKET", bucket));
            vars.push(env("S3_PREFIX", &args.s3_prefix));
        }
        // `run` refuses to start uploading without a bucket: keep traces local.
        None => vars.push(env("UPLOAD_ENABLED", "false")),
    }
    if let Some(endpoint) = non_empty(&args.s3_endpoint) {
        vars.push(env("S3_ENDPOINT", endpoint));
    }
    if let Some(region) = non_empty(&args.s3_region) {
        vars.push(env("S3_REGION", region));
    }
    if args.s3_path_style {
        vars.push(env("S3_PATH_STYLE", "true"));
    }
    if !args.vllm_metrics_url.trim().is_empty() {
        vars.push(env("VLLM_METRICS_URL", args.vllm_metrics_url.trim()));
    }
    if args.metrics_port != 0 {
        vars.push(env("METRICS_ADDR", format!("0.0.0.0:{}", args.metrics_port)));
    }
    // Always set, so an empty value turns the window off in the sidecar too.
    vars.push(env("PROFILE_STEPS", args.profile_steps.trim()));
    // The downward API: metadata.json records them and uploads are grouped by pod.
    vars.push(field_env("POD_NAME", "metadata.name"));
    vars.push(field_env("POD_NAMESPACE", "metadata.namespace"));
    vars.push(field_env("NODE_NAME", "spec.nodeName"));
    for (name, value) in &args.extra_env {
        vars.retain(|v| &v.name != name);
        vars.push(env(name, value));
    }
    for reference in &args.secret_env {
        vars.retain(|v| v.name != reference.var);
        vars.push(secret_env(&reference.var, &reference.secret, &reference.key));
    }
    vars
}

/// The manifests' security context for the tracer container
/// (k8s/daemonset/03-daemonset.yaml): not privileged, ALL capabilities dropped
/// and only [`CAPABILITIES`] added, no privilege escalation, read-only root
/// filesystem (the tracer writes only under /traces), the runtime's default
/// seccomp filter. With `--sidecar-sys-admin` SYS_ADMIN is added too; with
/// `--sidecar-privileged` (kernels without CAP_BPF) privileged mode instead.
pub fn security_context(args: &InjectConfig) -> SecurityContext {
    // Root in the container: Kubernetes gives added capabilities to uid 0
    // only (no ambient capabilities for other users).
    let mut sc = SecurityContext {
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    };
    if args.privileged {
        sc.privileged = Some(true);
    } else {
        sc.privileged = Some(false);
        sc.allow_privilege_escalation = Some(false);
        let admin = args.sys_admin.then_some("SYS_ADMIN");
        sc.capabilities = Some(Capabilities {
            add: Some(CAPABILITIES.iter().copied().chain(admin).map(String::from).collect()),
            drop: Some(vec!["ALL".to_string()]),
        });
        sc.seccomp_profile = Some(SeccompProfile { type_: "RuntimeDefault".to_string(), localhost_profile: None });
    }
    sc
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

/// The tracer sidecar: `cuda-tracer run` with the settings' env.
pub fn container(args: &InjectConfig) -> Container {
    let mut c = Container {
        name: SIDECAR_NAME.into(),
        image: Some(args.image.clone()),
        image_pull_policy: Some(args.image_pull_policy.clone()),
        command: Some(vec!["cuda-tracer".into(), "run".into()]),
        env: Some(sidecar_env(args)),
        env_from: non_empty(&args.aws_secret).map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: name.into(), optional: Some(true) }),
                ..Default::default()
            }]
        }),
        // The seed's requests for the tracer: 0.5 CPU, 512Mi.
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "500m"), ("memory", "512Mi")])),
            limits: Some(quantities(&[("memory", "1Gi")])),
            ..Default::default()
        }),
        security_context: Some(security_context(args)),
        volume_mounts: Some(vec![VolumeMount {
            name: TRACES_VOLUME.into(),
            mount_path: TRACES_MOUNT.into(),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    if args.metrics_port != 0 {
        c.ports = Some(vec![ContainerPort {
            name: Some("tracer-metrics".into()),
            container_port: i32::from(args.metrics_port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
        // Liveness only: a readiness probe on the sidecar would take the
        // vLLM pod out of its Service whenever tracing is not ready.
        c.liveness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::Int(i32::from(args.metrics_port)),
                ..Default::default()
            }),
            period_seconds: Some(20),
            failure_threshold: Some(3),
            ..Default::default()
        });
    }
    c
}

/// The traces volume: the configured PVC, else an emptyDir.
pub fn traces_volume(args: &InjectConfig) -> Volume {
    match non_empty(&args.traces_pvc) {
        Some(claim) => Volume {
            name: TRACES_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: Some(false),
            }),
            ..Default::default()
        },
        None => Volume {
            name: TRACES_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn args(extra: &[&str]) -> InjectConfig {
        super::super::settings::parse_for_test(extra)
    }

    fn env_of(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| {
                let value = match &e.value_from {
                    Some(EnvVarSource { secret_key_ref: Some(s), .. }) => format!("secret:{}/{}", s.name, s.key),
                    Some(from) => format!("fieldRef:{}", from.field_ref.as_ref().unwrap().field_path),
                    None => e.value.clone().unwrap_or_default(),
                };
                (e.name.clone(), value)
            })
            .collect()
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn sidecar_runs_the_tracer_with_capabilities_and_downward_api() {
        let c = container(&args(&[
            "--s3-bucket",
            "traces",
            "--s3-endpoint",
            "http://minio:9000",
            "--s3-path-style",
            "--sidecar-env",
            "TRACE_INTERVAL=30,TARGET_PROCESS=python",
        ]));
        assert_eq!(c.command.as_deref(), Some(&["cuda-tracer".to_string(), "run".to_string()][..]));
        let env = env_of(&c);
        assert_eq!(get(&env, "TRACE_DIR"), Some("/traces"));
        assert_eq!(get(&env, "S3_BUCKET"), Some("traces"));
        assert_eq!(get(&env, "S3_PREFIX"), Some("k3s-vllm/"));
        assert_eq!(get(&env, "S3_ENDPOINT"), Some("http://minio:9000"));
        assert_eq!(get(&env, "S3_PATH_STYLE"), Some("true"));
        assert_eq!(get(&env, "UPLOAD_ENABLED"), None);
        assert_eq!(get(&env, "VLLM_METRICS_URL"), Some("http://127.0.0.1:8000/metrics"));
        assert_eq!(get(&env, "POD_NAME"), Some("fieldRef:metadata.name"));
        assert_eq!(get(&env, "POD_NAMESPACE"), Some("fieldRef:metadata.namespace"));
        assert_eq!(get(&env, "NODE_NAME"), Some("fieldRef:spec.nodeName"));
        assert_eq!(get(&env, "TRACE_INTERVAL"), Some("30"));
        assert_eq!(get(&env, "PROFILE_STEPS"), Some("100..150"), "the seed webhook's window");
        // --sidecar-env overrides, once.
        assert_eq!(get(&env, "TARGET_PROCESS"), Some("python"));
        assert_eq!(env.iter().filter(|(n, _)| n == "TARGET_PROCESS").count(), 1);
        let sc = c.security_context.unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add.unwrap(), CAPABILITIES.map(String::from));
        assert_eq!(caps.drop.unwrap(), ["ALL"]);
        assert_eq!(sc.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"));
        assert_eq!(c.volume_mounts.unwrap()[0].mount_path, TRACES_MOUNT);
        assert_eq!(c.liveness_probe.unwrap().http_get.unwrap().port, IntOrString::Int(9464));
        assert!(c.readiness_probe.is_none());
    }

    #[test]
    fn sys_admin_is_a_switch_that_adds_only_sys_admin() {
        let sc = container(&args(&["--sidecar-sys-admin"])).security_context.unwrap();
        let mut want: Vec<String> = CAPABILITIES.map(String::from).to_vec();
        want.push("SYS_ADMIN".into());
        assert_eq!(sc.capabilities.unwrap().add.unwrap(), want);
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"));
    }

    #[test]
    fn without_a_bucket_traces_stay_local_and_privileged_is_a_switch() {
        let c = container(&args(&[
            "--sidecar-privileged",
            "--sidecar-metrics-port",
            "0",
            "--vllm-metrics-url",
            "",
            "--profile-steps",
            "",
        ]));
        let env = env_of(&c);
        assert_eq!(get(&env, "PROFILE_STEPS"), Some(""), "an empty window is passed on: off");
        assert_eq!(get(&env, "UPLOAD_ENABLED"), Some("false"));
        assert_eq!(get(&env, "S3_BUCKET"), None);
        assert_eq!(get(&env, "METRICS_ADDR"), None);
        assert_eq!(get(&env, "VLLM_METRICS_URL"), None);
        assert!(c.liveness_probe.is_none() && c.ports.is_none());
        let sc = c.security_context.unwrap();
        assert_eq!((sc.privileged, sc.capabilities), (Some(true), None));
    }

    #[test]
    fn traces_volume_is_the_pvc_when_set() {
        assert!(traces_volume(&args(&[])).empty_dir.is_some());
        let v = traces_volume(&args(&["--traces-pvc", "vllm-traces"]));
        assert_eq!(v.persistent_volume_claim.unwrap().claim_name, "vllm-traces");
        let c = container(&args(&["--aws-secret", "aws-creds"]));
        let from = &c.env_from.unwrap()[0];
        assert_eq!(from.secret_ref.as_ref().unwrap().name, "aws-creds");
    }

    #[test]
    fn secrets_are_references_never_values() {
        let c = container(&args(&[
            "--sidecar-env",
            "AWS_ACCESS_KEY_ID=x",
            "--sidecar-secret-env",
            "AWS_ACCESS_KEY_ID=aws-creds:id,HF_TOKEN=hf-token:token",
        ]));
        let env = env_of(&c);
        // The reference replaces a literal of the same name.
        assert_eq!(get(&env, "AWS_ACCESS_KEY_ID"), Some("secret:aws-creds/id"));
        assert_eq!(env.iter().filter(|(n, _)| n == "AWS_ACCESS_KEY_ID").count(), 1);
        assert_eq!(get(&env, "HF_TOKEN"), Some("secret:hf-token/token"));
        let hf = c.env.iter().flatten().find(|e| e.name == "HF_TOKEN").unwrap();
        assert_eq!(hf.value, None);
        let selector = hf.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(selector.optional, Some(true), "a missing Secret must not keep vLLM from starting");
    }
}
