//! HTTP side of the webhook: `/mutate` reads an AdmissionReview, decides and
//! answers; `/healthz` and `/readyz` for probes; bad requests get a 4xx that
//! says what was wrong. Reviews are bounded: size, time to arrive, and how
//! many are read and parsed at once.

use std::{pin::Pin, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use kube_core::{
    admission::{AdmissionResponse, AdmissionReview, Operation, META_API_VERSION_V1, META_KIND},
    DynamicObject, GroupVersionKind,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{
    decide::{decide, Verdict},
    pod_view::PodView,
    settings::InjectConfig,
};

/// Bounds on what one client can make the webhook hold.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest AdmissionReview accepted, in bytes.
    pub max_body_bytes: usize,
    /// Time a client has for each of the TLS handshake, the request head
    /// and the request body (also how long an idle connection stays open).
    pub client_timeout: Duration,
    /// Open connections, handshakes included.
    pub max_connections: usize,
    /// Reviews read and parsed at once; more wait (up to the client timeout).
    pub max_concurrent_reviews: usize,
}

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    pub inject: InjectConfig,
    pub limits: Limits,
    /// One permit per review being read and parsed.
    reviews: Semaphore,
}

impl App {
    pub fn new(inject: InjectConfig, limits: Limits) -> Self {
        let reviews = Semaphore::new(limits.max_concurrent_reviews.max(1));
        Self { inject, limits, reviews }
    }
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

/// An AdmissionReview as far as the webhook reads it: the object stays raw
/// text inside the body until [`PodView`] reads the few fields it needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default, borrow)]
    request: Option<Request<'a>>,
}

/// The request part of an AdmissionReview.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    dry_run: bool,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
}

/// A review's request and its pod.
struct Review {
    uid: String,
    namespace: Option<String>,
    operation: Operation,
    dry_run: bool,
    pod: PodView,
}

/// Parses and checks an AdmissionReview v1 for a Pod, reading the pod's
/// label `label_key`.
fn parse_review(body: &[u8], label_key: &str) -> Result<Review, Rejection> {
    let bad = |m: String| Rejection::new(StatusCode::BAD_REQUEST, m);
    if body.is_empty() {
        return Err(bad("empty body: POST an AdmissionReview (admission.k8s.io/v1) as JSON".into()));
    }
    let review: Envelope<'_> =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not an AdmissionReview in JSON: {e}")))?;
    if review.kind != META_KIND || review.api_version != META_API_VERSION_V1 {
        return Err(bad(format!(
            "expected apiVersion {META_API_VERSION_V1} kind {META_KIND}, got apiVersion {:?} kind {:?} \
             (set admissionReviewVersions: [v1] in the MutatingWebhookConfiguration)",
            review.api_version, review.kind
        )));
    }
    let request = review.request.ok_or_else(|| bad("the AdmissionReview has no `request`".into()))?;
    let kind = &request.kind;
    if !(kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod") {
        let group = if kind.group.is_empty() { String::new() } else { format!("{}/", kind.group) };
        return Err(bad(format!(
            "this webhook mutates Pods only, got {group}{} {} (request {}): limit the webhook's rules \
             to apiGroups [\"\"], resources [\"pods\"]",
            kind.version, kind.kind, request.uid
        )));
    }
    let object = request.object.ok_or_else(|| bad(format!("request {} carries no object", request.uid)))?;
    let pod = PodView::parse(object.get(), label_key)
        .map_err(|e| bad(format!("request {}: the object is not a valid Pod: {e}", request.uid)))?;
    Ok(Review {
        uid: request.uid,
        namespace: request.namespace,
        operation: request.operation,
        dry_run: request.dry_run,
        pod,
    })
}

/// An allowing answer to request `uid` (kube-core builds one only from a
/// whole `AdmissionRequest`, which the webhook never materialises).
fn allow(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_string();
    response.allowed = true;
    response.result = Default::default();
    response
}

/// Reads a review's body while holding one of the review permits; the
/// caller answers it before letting the permit go, so at most
/// `max_concurrent_reviews` bodies (and their answers) are in memory at once.
async fn read_review(app: &App, body: Body) -> Result<(SemaphorePermit<'_>, Bytes), Rejection> {
    let timeout = app.limits.client_timeout;
    let busy = || {
        Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: {} reviews in progress for {}s; retry (raise --max-concurrent-reviews if this is real load)",
                app.limits.max_concurrent_reviews,
                timeout.as_secs_f64()
            ),
        )
    };
    let permit = tokio::time::timeout(timeout, app.reviews.acquire()).await.map_err(|_| busy())?.map_err(|_| busy())?;
    let body = tokio::time::timeout(timeout, read_body(body, app.limits.max_body_bytes)).await.map_err(|_| {
        Rejection::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {}s (--client-timeout-secs)", timeout.as_secs_f64()),
        )
    })??;
    Ok((permit, body))
}

async fn mutate(State(app): State<Arc<App>>, body: Body) -> Result<Response, Rejection> {
    let (_permit, body) = read_review(&app, body).await?;
    Ok(answer(&app.inject, &body))
}

/// The answer to one AdmissionReview body: an AdmissionReview whose
/// response allows, patches or denies the pod, or a 4xx naming what is
/// wrong with the request. No I/O: the body is whatever a client sent, and
/// this is what `fuzz/` feeds arbitrary bytes to.
pub fn answer(inject: &InjectConfig, body: &[u8]) -> Response {
    match parse_review(body, &inject.label_key).and_then(|review| respond(inject, &review)) {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    }
}

fn respond(inject: &InjectConfig, review: &Review) -> Result<Response, Rejection> {
    let pod = &review.pod;
    let namespace = review.namespace.clone().or_else(|| pod.namespace.clone()).unwrap_or_default();
    let decision = decide(inject, &review.operation, &namespace, pod);
    tracing::info!(
        uid = %review.uid,
        namespace = %namespace,
        name = pod.name.as_deref().unwrap_or(""),
        generate_name = pod.generate_name.as_deref().unwrap_or(""),
        decision = decision.name(),
        reason = %decision.reason,
        dry_run = review.dry_run,
        "admission decision"
    );
    let response = allow(&review.uid);
    let response = match decision.verdict {
        Verdict::Skip => response,
        Verdict::Deny => response.deny(&decision.reason),
        Verdict::Inject(patch) => response
            .with_patch(patch)
            .map_err(|e| Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, format!("request {}: {e}", review.uid)))?,
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
        let r = parse_review(body, "app").err().unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        r.message
    }

    #[test]
    fn reviews_of_pods_parse_and_everything_else_is_named() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
        let Ok(parsed) = parse_review(&review(json!({"group": "", "version": "v1", "kind": "Pod"}), pod), "app") else {
            panic!("the review of a pod does not parse")
        };
        assert_eq!((parsed.uid.as_str(), parsed.pod.name.as_deref()), ("u-1", Some("p")));

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

    fn app(max_concurrent_reviews: usize) -> App {
        let limits = Limits {
            max_body_bytes: 1000,
            client_timeout: Duration::from_millis(200),
            max_connections: 1,
            max_concurrent_reviews,
        };
        App::new(super::super::settings::parse_for_test(&[]), limits)
    }

    #[tokio::test]
    async fn reviews_past_the_cap_wait_then_get_503_and_late_bodies_408() {
        let app = app(1);
        let held = app.reviews.acquire().await.unwrap();
        let r = read_review(&app, Body::from("{}")).await.err().unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.message.contains("busy: 1 reviews in progress"), "{}", r.message);
        drop(held);
        // A body that never ends.
        let endless = Body::new(Endless);
        let r = read_review(&app, endless).await.err().unwrap();
        assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
        assert!(r.message.contains("did not arrive within 0.2s"), "{}", r.message);
    }

    /// A request body whose next frame never comes.
    struct Endless;

    impl HttpBody for Endless {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }
}
