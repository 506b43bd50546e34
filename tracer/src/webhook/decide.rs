//! The admission decision for one pod: inject the tracer (a JSON patch) or
//! leave the pod unchanged, with the reason either way. No I/O.

use json_patch::{jsonptr::PointerBuf, AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use kube_core::admission::Operation;
use serde_json::Value;

use super::{
    settings::InjectArgs,
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
pub fn decide(args: &InjectArgs, operation: &Operation, namespace: &str, pod: &Pod) -> Decision {
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
            c.name == SIDECAR_NAME
                || program.is_some_and(|p| p.rsplit('/').next() == Some("cuda-tracer"))
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
pub fn patch(args: &InjectArgs, pod: &Pod) -> Patch {
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
