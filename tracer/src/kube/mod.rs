//! The Kubernetes-side tools: the admission webhook that injects the tracer
//! sidecar, and the OpenAI-compatible client behind `deploy.sh test`.

pub mod prompt;
pub mod webhook;
