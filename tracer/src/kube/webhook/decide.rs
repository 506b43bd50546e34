//! The admission decision for one pod: inject the tracer (a JSON patch),
//! leave the pod unchanged, or deny it, with the reason each time. No I/O.

use json_patch::{jsonptr::PointerBuf, AddOperation, Patch, PatchOperation};
use kube_core::admission::Operation;
use serde_json::Value;

use super::{
    pod_view::PodView,
    settings::InjectConfig,
    sidecar::{self, INJECTED_ANNOTATION, TRACES_VOLUME},
};

/// What the webhook does with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Add the sidecar, hostPID and the traces volume.
    Inject(Patch),
    /// Allow the pod unchanged.
    Skip,
    /// Refuse the pod: injecting it would be unsafe.
    Deny,
}

/// A verdict and why, for the decision log (and, for a denial, the user).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
}

impl Decision {
    fn skip(reason: impl Into<String>) -> Self {
        Self { verdict: Verdict::Skip, reason: reason.into() }
    }

    /// `inject`, `skip` or `deny`, for logs.
    pub fn name(&self) -> &'static str {
        match self.verdict {
            Verdict::Inject(_) => "inject",
            Verdict::Skip => "skip",
            Verdict::Deny => "deny",
        }
    }
}

/// Decides for a pod that `operation` creates or changes in `namespace`
/// (the request's namespace: a pod created from a template carries none).
/// `pod` was read with the label key of `args`.
pub fn decide(args: &InjectConfig, operation: &Operation, namespace: &str, pod: &PodView) -> Decision {
    if !matches!(operation, Operation::Create) {
        return Decision::skip(format!("operation {operation:?} is not CREATE"));
    }
    if args.target_namespace != "*" && namespace != args.target_namespace {
        return Decision::skip(format!("namespace {namespace:?} is not the target {:?}", args.target_namespace));
    }
    let label = pod.target_label.as_deref();
    if label != Some(args.label_value.as_str()) {
        return Decision::skip(match label {
            Some(v) => format!("label {}={v:?}, not {:?}", args.label_key, args.label_value),
            None => format!("no label {}", args.label_key),
        });
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if let Some(name) = &spec.tracer {
        return Decision::skip(format!("already traced: container {name:?} runs the tracer"));
    }
    // The sidecar runs as root with BPF and SYS_PTRACE and writes where this
    // volume points: the pod must not choose it (a hostPath of / would hand
    // it the node). Renaming ours instead would leave the pod's volume for
    // any of its containers to share with the tracer under our name.
    if spec.has_traces_volume {
        return Decision {
            verdict: Verdict::Deny,
            reason: format!(
                "the pod defines a volume named {TRACES_VOLUME:?}, which the cuda-tracer webhook reserves for \
                 the tracer's trace files: rename that volume, or remove the label {} to run the pod untraced",
                args.label_key
            ),
        };
    }
    Decision {
        verdict: Verdict::Inject(patch(args, pod)),
        reason: format!("label {}={} in namespace {namespace}", args.label_key, args.label_value),
    }
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    // from_tokens escapes `/` and `~` inside a token (label and annotation keys).
    PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(tokens.iter().copied()), value })
}

fn to_value(v: &impl serde::Serialize) -> Value {
    // k8s-openapi types always serialize to JSON.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The JSON patch: sidecar appended, traces volume, hostPID, and the
/// injected annotation. Arrays and maps that the pod lacks are added whole:
/// `/-` on a missing array fails.
pub fn patch(args: &InjectConfig, pod: &PodView) -> Patch {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = to_value(&sidecar::container(args));
    let mut ops = Vec::new();
    if pod.spec.is_none() {
        ops.push(add(&["spec"], serde_json::json!({ "containers": [container] })));
    } else {
        // `containers` is required: a pod spec always has the array.
        ops.push(add(&["spec", "containers", "-"], container));
    }
    let volume = to_value(&sidecar::traces_volume(args));
    if spec.has_volumes {
        ops.push(add(&["spec", "volumes", "-"], volume));
    } else {
        ops.push(add(&["spec", "volumes"], Value::Array(vec![volume])));
    }
    if spec.host_pid != Some(true) {
        // `add` on an existing member replaces it (RFC 6902 4.1).
        ops.push(add(&["spec", "hostPID"], Value::Bool(true)));
    }
    let injected = Value::String(args.image.clone());
    if pod.has_annotations {
        ops.push(add(&["metadata", "annotations", INJECTED_ANNOTATION], injected));
    } else {
        ops.push(add(&["metadata", "annotations"], serde_json::json!({ INJECTED_ANNOTATION: injected })));
    }
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::{super::sidecar::SIDECAR_NAME, *};
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn args(extra: &[&str]) -> InjectConfig {
        let argv = ["--target-namespace", "llm", "--tracer-image", "reg/cuda-tracer:1"];
        super::super::settings::parse_for_test(&[&argv[..], extra].concat())
    }

    fn pod(v: Value) -> PodView {
        PodView::parse(&v.to_string(), "llm-d.ai/inferenceServing").unwrap()
    }

    fn typed(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn vllm_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "vllm-", "labels": {"llm-d.ai/inferenceServing": "true"}},
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]}
        })
    }

    fn applied(args: &InjectConfig, original: Value) -> (Value, Decision) {
        let d = decide(args, &Operation::Create, "llm", &pod(original.clone()));
        let Verdict::Inject(patch) = &d.verdict else { panic!("not injected: {}", d.reason) };
        let mut doc = original;
        json_patch::patch(&mut doc, patch).unwrap();
        (doc, d)
    }

    #[test]
    fn labelled_pod_in_target_namespace_is_injected() {
        let (doc, d) = applied(&args(&[]), vllm_pod());
        assert_eq!(d.name(), "inject");
        let injected = typed(doc);
        let spec = injected.spec.unwrap();
        assert_eq!(spec.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["vllm", SIDECAR_NAME]);
        assert_eq!(spec.host_pid, Some(true));
        let volumes = spec.volumes.unwrap();
        assert_eq!(volumes.len(), 1);
        assert!(volumes[0].empty_dir.is_some());
        let annotations = injected.metadata.annotations.unwrap();
        assert_eq!(annotations[INJECTED_ANNOTATION], "reg/cuda-tracer:1");
    }

    #[test]
    fn other_pods_are_skipped_with_the_reason() {
        let a = args(&[]);
        let p = pod(vllm_pod());
        let d = decide(&a, &Operation::Create, "default", &p);
        assert_eq!((d.verdict, d.reason.as_str()), (Verdict::Skip, r#"namespace "default" is not the target "llm""#));
        let d = decide(&a, &Operation::Update, "llm", &p);
        assert!(d.verdict == Verdict::Skip && d.reason.contains("not CREATE"), "{}", d.reason);
        let mut v = vllm_pod();
        v["metadata"]["labels"] = json!({"llm-d.ai/inferenceServing": "false"});
        let d = decide(&a, &Operation::Create, "llm", &pod(v.clone()));
        assert_eq!(d.reason, r#"label llm-d.ai/inferenceServing="false", not "true""#);
        v["metadata"]["labels"] = json!({"app": "vllm"});
        let d = decide(&a, &Operation::Create, "llm", &pod(v));
        assert_eq!(d.reason, "no label llm-d.ai/inferenceServing");
        let any = InjectConfig { target_namespace: "*".into(), ..a };
        assert_eq!(decide(&any, &Operation::Create, "default", &p).name(), "inject");
    }

    #[test]
    fn a_pod_with_the_tracer_is_not_injected_twice() {
        let a = args(&[]);
        let (doc, _) = applied(&a, vllm_pod());
        let d = decide(&a, &Operation::Create, "llm", &pod(doc));
        assert!(d.verdict == Verdict::Skip && d.reason.contains("already traced"), "{}", d.reason);
        // A hand-written sidecar running the tracer under another name.
        let mut v = vllm_pod();
        v["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "ebpf-tracer", "image": "x", "command": ["/usr/local/bin/cuda-tracer", "run"]}));
        let d = decide(&a, &Operation::Create, "llm", &pod(v));
        assert_eq!(d.reason, r#"already traced: container "ebpf-tracer" runs the tracer"#);
    }

    #[test]
    fn patch_appends_to_existing_arrays_and_escapes_keys() {
        let mut v = vllm_pod();
        v["metadata"]["annotations"] = json!({"a": "b"});
        v["spec"]["volumes"] = json!([{"name": "shm", "emptyDir": {"medium": "Memory"}}]);
        v["spec"]["hostPID"] = json!(true);
        let d = decide(&args(&[]), &Operation::Create, "llm", &pod(v.clone()));
        let Verdict::Inject(patch) = &d.verdict else { panic!() };
        let paths: Vec<String> = serde_json::to_value(patch)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap().to_string())
            .collect();
        // hostPID is already true: no op for it.
        assert_eq!(paths, ["/spec/containers/-", "/spec/volumes/-", "/metadata/annotations/cuda-tracer~1injected"]);
        let (doc, _) = applied(&args(&[]), v);
        assert_eq!(doc["spec"]["volumes"][0]["name"], "shm");
        assert_eq!(doc["spec"]["volumes"][1]["name"], TRACES_VOLUME);
        assert_eq!(doc["metadata"]["annotations"]["a"], "b");
        assert_eq!(doc["metadata"]["annotations"][INJECTED_ANNOTATION], "reg/cuda-tracer:1");
    }

    #[test]
    fn a_pod_that_brings_a_volume_named_like_ours_is_denied() {
        // Issue 15: a pod sent with this volume as `hostPath: /` got no volume
        // of ours, and the root tracer wrote into the node's root.
        for volume in [
            json!({"name": TRACES_VOLUME, "hostPath": {"path": "/"}}),
            json!({"name": TRACES_VOLUME, "persistentVolumeClaim": {"claimName": "mine"}}),
        ] {
            let mut v = vllm_pod();
            v["spec"]["volumes"] = json!([{"name": "shm", "emptyDir": {}}, volume]);
            let d = decide(&args(&[]), &Operation::Create, "llm", &pod(v));
            assert_eq!(d.verdict, Verdict::Deny);
            assert_eq!(d.name(), "deny");
            assert!(
                d.reason.contains(r#"volume named "cuda-tracer-traces""#) && d.reason.contains("rename"),
                "{}",
                d.reason
            );
        }
        // Other pods with that volume are none of the webhook's business.
        let mut v = vllm_pod();
        v["spec"]["volumes"] = json!([{"name": TRACES_VOLUME, "hostPath": {"path": "/"}}]);
        v["metadata"]["labels"] = json!({});
        assert_eq!(decide(&args(&[]), &Operation::Create, "llm", &pod(v)).verdict, Verdict::Skip);
    }
}
