//! The admission decision for one pod: inject the tracer (a JSON patch) or
//! leave the pod unchanged, with the reason either way. No I/O.

use json_patch::{jsonptr::PointerBuf, AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use kube_core::admission::Operation;
use serde_json::Value;

use super::{
    settings::InjectConfig,
    sidecar::{self, INJECTED_ANNOTATION, SIDECAR_NAME, TRACES_VOLUME},
};

/// What the webhook does with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Add the sidecar, hostPID and the traces volume.
    Inject(Patch),
    /// Allow the pod unchanged.
    Skip,
}

/// A verdict and why, for the decision log.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
}

impl Decision {
    fn skip(reason: impl Into<String>) -> Self {
        Self { verdict: Verdict::Skip, reason: reason.into() }
    }

    /// `inject` or `skip`, for logs.
    pub fn name(&self) -> &'static str {
        match self.verdict {
            Verdict::Inject(_) => "inject",
            Verdict::Skip => "skip",
        }
    }
}

/// Decides for a pod that `operation` creates or changes in `namespace`
/// (the request's namespace: a pod created from a template carries none).
pub fn decide(args: &InjectConfig, operation: &Operation, namespace: &str, pod: &Pod) -> Decision {
    if !matches!(operation, Operation::Create) {
        return Decision::skip(format!("operation {operation:?} is not CREATE"));
    }
    if args.target_namespace != "*" && namespace != args.target_namespace {
        return Decision::skip(format!("namespace {namespace:?} is not the target {:?}", args.target_namespace));
    }
    let label = pod.metadata.labels.as_ref().and_then(|l| l.get(&args.label_key));
    if label.map(String::as_str) != Some(args.label_value.as_str()) {
        return Decision::skip(match label {
            Some(v) => format!("label {}={v:?}, not {:?}", args.label_key, args.label_value),
            None => format!("no label {}", args.label_key),
        });
    }
    if let Some(name) = existing_tracer(pod) {
        return Decision::skip(format!("already traced: container {name:?} runs the tracer"));
    }
    Decision {
        verdict: Verdict::Inject(patch(args, pod)),
        reason: format!("label {}={} in namespace {namespace}", args.label_key, args.label_value),
    }
}

/// A container that already is the tracer: named like the sidecar, or
/// running `cuda-tracer` (a hand-written sidecar from the manifests).
fn existing_tracer(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    all.into_iter()
        .find(|c| {
            let program = c.command.as_ref().and_then(|cmd| cmd.first());
            c.name == SIDECAR_NAME || program.is_some_and(|p| p.rsplit('/').next() == Some("cuda-tracer"))
        })
        .map(|c| c.name.clone())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    // from_tokens escapes `/` and `~` inside a token (label and annotation keys).
    PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(tokens.iter().copied()), value })
}

fn to_value(v: &impl serde::Serialize) -> Value {
    // k8s-openapi types always serialize to JSON.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The JSON patch: sidecar appended, traces volume (unless the pod has
/// one by that name), hostPID, and the injected annotation. Arrays and maps
/// that the pod lacks are added whole: `/-` on a missing array fails.
pub fn patch(args: &InjectConfig, pod: &Pod) -> Patch {
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
    match &spec.volumes {
        Some(volumes) if volumes.iter().any(|v| v.name == TRACES_VOLUME) => {}
        Some(_) => ops.push(add(&["spec", "volumes", "-"], volume)),
        None => ops.push(add(&["spec", "volumes"], Value::Array(vec![volume]))),
    }
    if spec.host_pid != Some(true) {
        // `add` on an existing member replaces it (RFC 6902 4.1).
        ops.push(add(&["spec", "hostPID"], Value::Bool(true)));
    }
    let injected = Value::String(args.image.clone());
    if pod.metadata.annotations.is_some() {
        ops.push(add(&["metadata", "annotations", INJECTED_ANNOTATION], injected));
    } else {
        ops.push(add(&["metadata", "annotations"], serde_json::json!({ INJECTED_ANNOTATION: injected })));
    }
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> InjectConfig {
        InjectConfig { target_namespace: "llm".into(), image: "reg/cuda-tracer:1".into(), ..Default::default() }
    }

    fn pod(v: Value) -> Pod {
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
        let (doc, d) = applied(&args(), vllm_pod());
        assert_eq!(d.name(), "inject");
        let injected = pod(doc);
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
        let a = args();
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
        let a = args();
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
        let d = decide(&args(), &Operation::Create, "llm", &pod(v.clone()));
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
        let (doc, _) = applied(&args(), v);
        assert_eq!(doc["spec"]["volumes"][0]["name"], "shm");
        assert_eq!(doc["spec"]["volumes"][1]["name"], TRACES_VOLUME);
        assert_eq!(doc["metadata"]["annotations"]["a"], "b");
        assert_eq!(doc["metadata"]["annotations"][INJECTED_ANNOTATION], "reg/cuda-tracer:1");
    }

    #[test]
    fn a_pod_that_brings_the_traces_volume_keeps_it() {
        let mut v = vllm_pod();
        v["spec"]["volumes"] = json!([{"name": TRACES_VOLUME, "persistentVolumeClaim": {"claimName": "mine"}}]);
        let (doc, _) = applied(&args(), v);
        assert_eq!(doc["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(doc["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "mine");
    }
}
