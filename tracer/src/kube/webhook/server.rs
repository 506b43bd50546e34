//! HTTP side of the webhook: `/mutate` reads an AdmissionReview, decides and
//! answers; `/healthz` and `/readyz` for probes; bad requests get a 4xx that
//! says what was wrong.

use std::{pin::Pin, sync::Arc};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use k8s_openapi::api::core::v1::Pod;
use kube_core::{
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND},
    DynamicObject,
};

use super::{
    decide::{decide, Verdict},
    settings::InjectConfig,
};

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    pub inject: InjectConfig,
    /// Largest AdmissionReview accepted, in bytes.
    pub max_body_bytes: usize,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "no such path: the webhook serves POST /mutate, GET /healthz and GET /readyz\n")
        })
        .with_state(app)
}

/// A request the webhook refuses, answered with its status and a message.
/// The body is an AdmissionReview whose response carries the message, so
/// both people and the API server's logs see it.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        tracing::warn!(status = self.status.as_u16(), "rejected request: {}", self.message);
        json(self.status, &AdmissionResponse::invalid(&self.message).into_review())
    }
}

/// A JSON response (axum's `json` feature is not built in).
fn json(status: StatusCode, review: &AdmissionReview<DynamicObject>) -> Response {
    match serde_json::to_vec(review) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("serializing the AdmissionReview: {e}\n")).into_response()
        }
    }
}

/// Reads the body up to `limit` bytes. A larger body is read on to its end
/// (up to a bound) before the 413 goes out: closing a socket with unread
/// data resets it, and the client would lose the answer.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, Rejection> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    let drain_bound = limit.saturating_mul(8).max(16 << 20);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| Rejection::new(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total <= limit {
            buf.extend_from_slice(&data);
        } else if total > drain_bound {
            break;
        }
    }
    if total > limit {
        return Err(Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {total}+ bytes is over the {limit}-byte limit for an AdmissionReview \
                 (raise --max-body-bytes if pods this large are real)"
            ),
        ));
    }
    Ok(Bytes::from(buf))
}

/// Parses and checks an AdmissionReview v1 for a Pod.
fn parse_review(body: &[u8]) -> Result<(AdmissionRequest<DynamicObject>, Pod), Rejection> {
    let bad = |m: String| Rejection::new(StatusCode::BAD_REQUEST, m);
    if body.is_empty() {
        return Err(bad("empty body: POST an AdmissionReview (admission.k8s.io/v1) as JSON".into()));
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not an AdmissionReview in JSON: {e}")))?;
    if review.types.kind != META_KIND || review.types.api_version != META_API_VERSION_V1 {
        return Err(bad(format!(
            "expected apiVersion {META_API_VERSION_V1} kind {META_KIND}, got apiVersion {:?} kind {:?} \
             (set admissionReviewVersions: [v1] in the MutatingWebhookConfiguration)",
            review.types.api_version, review.types.kind
        )));
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| bad("the AdmissionReview has no `request`".into()))?;
    let kind = &request.kind;
    if !(kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod") {
        let group = if kind.group.is_empty() { String::new() } else { format!("{}/", kind.group) };
        return Err(bad(format!(
            "this webhook mutates Pods only, got {group}{} {} (request {}): limit the webhook's rules \
             to apiGroups [\"\"], resources [\"pods\"]",
            kind.version, kind.kind, request.uid
        )));
    }
    let object = request.object.as_ref().ok_or_else(|| bad(format!("request {} carries no object", request.uid)))?;
    let pod = serde_json::to_value(object)
        .and_then(serde_json::from_value::<Pod>)
        .map_err(|e| bad(format!("request {}: the object is not a valid Pod: {e}", request.uid)))?;
    Ok((request, pod))
}

async fn mutate(State(app): State<Arc<App>>, body: Body) -> Result<Response, Rejection> {
    let body = read_body(body, app.max_body_bytes).await?;
    let (request, pod) = parse_review(&body)?;
    let namespace = request.namespace.clone().or_else(|| pod.metadata.namespace.clone()).unwrap_or_default();
    let decision = decide(&app.inject, &request.operation, &namespace, &pod);
    tracing::info!(
        uid = %request.uid,
        namespace = %namespace,
        name = pod.metadata.name.as_deref().unwrap_or(""),
        generate_name = pod.metadata.generate_name.as_deref().unwrap_or(""),
        decision = decision.name(),
        reason = %decision.reason,
        dry_run = request.dry_run,
        "admission decision"
    );
    let response = AdmissionResponse::from(&request);
    let response = match decision.verdict {
        Verdict::Skip => response,
        Verdict::Inject(patch) => response
            .with_patch(patch)
            .map_err(|e| Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, format!("request {}: {e}", request.uid)))?,
    };
    Ok(json(StatusCode::OK, &response.into_review()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn review(kind: Value, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": kind, "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "llm", "operation": "CREATE", "userInfo": {}, "object": object
            }
        }))
        .unwrap()
    }

    fn rejected(body: &[u8]) -> String {
        let r = parse_review(body).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        r.message
    }

    #[test]
    fn reviews_of_pods_parse_and_everything_else_is_named() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
        let (req, parsed) = parse_review(&review(json!({"group": "", "version": "v1", "kind": "Pod"}), pod)).unwrap();
        assert_eq!((req.uid.as_str(), parsed.metadata.name.as_deref()), ("u-1", Some("p")));

        assert!(rejected(b"").contains("empty body"));
        assert!(rejected(b"{not json").contains("not an AdmissionReview in JSON"));
        let v1beta1 = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#;
        assert!(rejected(v1beta1).contains("admissionReviewVersions: [v1]"));
        let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(rejected(no_request).contains("no `request`"));
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        let m = rejected(&review(json!({"group": "apps", "version": "v1", "kind": "Deployment"}), deployment));
        assert!(m.contains("Pods only, got apps/v1 Deployment"), "{m}");
        let bad_pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "vllm"}});
        let m = rejected(&review(json!({"group": "", "version": "v1", "kind": "Pod"}), bad_pod));
        assert!(m.contains("not a valid Pod"), "{m}");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413_after_being_read() {
        let body = Body::from(vec![b'x'; 5000]);
        let r = read_body(body, 1000).await.unwrap_err();
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.message.contains("5000+ bytes is over the 1000-byte limit"), "{}", r.message);
        assert_eq!(read_body(Body::from("abc"), 3).await.unwrap(), Bytes::from("abc"));
    }
}
