//! Metrics both binaries share: reconciles per controller (errors also per failed step),
//! requests to each Kubernetes API server they talk to (a tower layer in the client stack)
//! and admission webhook requests and rejections.
//!
//! Label values are bounded: the API server is a name the binary chooses (`hub`, `local`),
//! the verb is the HTTP method (or `WATCH`), the code a status class; webhook kinds are the
//! four kinds kdfed reviews (anything else is `other`); a reconcile error's step is a
//! `&'static str` its error type names.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// Controller name.
    pub controller: String,
}

/// Labels of reconcile errors: the controller and, when the caller knows it, the step of
/// the reconcile that failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ErrorLabels {
    /// Controller name.
    pub controller: String,
    /// The step that failed (`dereference`, `apply`, ...); a `&'static str` from the
    /// error's `step()`, so the label stays bounded.
    pub step: Option<&'static str>,
}

impl EncodeLabelSet for ErrorLabels {
    /// `controller`, and `step` only when known: the series without a step (created at 0
    /// at start, and errors counted by [`ReconcileMetrics::observe`]) keep their old form.
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("controller", self.controller.as_str()).encode(encoder.encode_label())?;
        if let Some(step) = self.step {
            ("step", step).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Reconcile runs, errors and durations per controller; errors also per failed step.
#[derive(Debug)]
pub struct ReconcileMetrics {
    runs: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
}

impl ReconcileMetrics {
    /// The metrics, with the series of `controllers` created at 0 (so their rates are 0
    /// rather than absent before the first run).
    pub fn new(controllers: &[&str]) -> ReconcileMetrics {
        let m = ReconcileMetrics {
            runs: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
        };
        for controller in controllers {
            let label = ControllerLabel { controller: controller.to_string() };
            let _ = m.runs.get_or_create(&label);
            let _ = m.errors.get_or_create(&ErrorLabels { controller: controller.to_string(), step: None });
            let _ = m.duration.get_or_create(&label);
        }
        m
    }

    /// Registers `reconcile_total`, `reconcile_errors_total` and
    /// `reconcile_duration_seconds` in `registry` (already prefixed with the component).
    pub fn register_in(&self, registry: &mut Registry) {
        registry.register("reconcile", "Reconcile runs per controller", self.runs.clone());
        registry.register("reconcile_errors", "Reconcile errors per controller and failed step", self.errors.clone());
        registry.register_with_unit(
            "reconcile_duration",
            "Reconcile duration per controller",
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    /// Times one reconcile of `controller`, counting an error (without a step) when it
    /// `failed`. Controllers whose errors name their step use [`Self::record_run`] and
    /// [`Self::error`] instead, so that each error is counted once.
    pub fn observe(&self, controller: &str, started: Instant, failed: bool) {
        self.record_run(controller, started);
        // The error series exists from the first run, so rates of it are 0, not absent.
        let errors = self.errors.get_or_create(&ErrorLabels { controller: controller.to_string(), step: None });
        if failed {
            errors.inc();
        }
    }

    /// Counts one reconcile of `controller` and times it; its error, if any, is counted by
    /// [`Self::error`] (from the controller's `error_policy`).
    pub fn record_run(&self, controller: &str, started: Instant) {
        let label = ControllerLabel { controller: controller.to_string() };
        self.runs.get_or_create(&label).inc();
        self.duration.get_or_create(&label).observe(started.elapsed().as_secs_f64());
    }

    /// Counts a finished run and, when it failed, the error with the step that failed.
    pub fn finished(&self, controller: &str, started: Instant, failed_step: Option<&'static str>) {
        self.record_run(controller, started);
        // The step-less error series exists from the first run, so rates of errors are 0,
        // not absent, before the first error (dashboards and alerts read them).
        drop(self.errors.get_or_create(&ErrorLabels { controller: controller.to_string(), step: None }));
        if let Some(step) = failed_step {
            self.error(controller, step);
        }
    }

    /// Counts one failed reconcile of `controller` at `step`: call it from the
    /// `error_policy` with the error's `step()`, e.g. `metrics.error("director", e.step())`.
    pub fn error(&self, controller: &str, step: &'static str) {
        self.errors.get_or_create(&ErrorLabels { controller: controller.to_string(), step: Some(step) }).inc();
    }
}

/// Labels of one API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// Which API server (`hub`, `local`).
    pub server: String,
    /// HTTP method, or `WATCH` for watches.
    pub verb: String,
    /// `2xx`, `3xx`, `4xx`, `5xx`, or `error` when no response came back.
    pub code: String,
}

/// Labels of one API request by what it asks for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// Which API server (`hub`, `local`).
    pub server: String,
    /// `LIST` (a GET of a collection), `WATCH`, or the HTTP method.
    pub verb: String,
    /// The resource (`pods`, `kubedirectorclusters`), with its subresource
    /// (`kubedirectorclusters/status`, `pods/exec`); `other` for paths outside the API.
    pub resource: String,
}

/// Labels of request durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// Which API server.
    pub server: String,
}

/// Requests a process sends to Kubernetes API servers.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Family<ApiLabels, Counter>,
    by_resource: Family<ResourceLabels, Counter>,
    duration: Family<ServerLabel, Histogram>,
}

impl ApiMetrics {
    /// Registers `api_requests_total` and `api_request_duration_seconds` in `registry`
    /// (already prefixed with the component).
    pub fn register(registry: &mut Registry) -> Arc<ApiMetrics> {
        let m = ApiMetrics {
            requests: Family::default(),
            by_resource: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
        };
        registry.register(
            "api_requests",
            "Requests sent to Kubernetes API servers, by server, verb and status class",
            m.requests.clone(),
        );
        registry.register(
            "api_resource_requests",
            "Requests sent to Kubernetes API servers, by server, verb (LIST apart from GET) and resource",
            m.by_resource.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "Time until the response headers of a Kubernetes API request (watches: until the stream opened)",
            Unit::Seconds,
            m.duration.clone(),
        );
        Arc::new(m)
    }

    /// A layer counting the requests of one client under `server`.
    pub fn layer(self: &Arc<Self>, server: &str) -> CountingLayer {
        CountingLayer { metrics: self.clone(), server: server.to_string() }
    }

    /// Records one finished request.
    pub fn record(&self, server: &str, verb: &str, code: &str, seconds: f64) {
        let labels = ApiLabels { server: server.to_string(), verb: verb.to_string(), code: code.to_string() };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&ServerLabel { server: server.to_string() }).observe(seconds);
    }

    /// Records what one request asked for (see [`resource`]).
    pub fn record_resource(&self, server: &str, verb: &str, resource: &str) {
        let labels =
            ResourceLabels { server: server.to_string(), verb: verb.to_string(), resource: resource.to_string() };
        self.by_resource.get_or_create(&labels).inc();
    }
}

/// What a request asks for: its verb (`LIST` for a GET of a collection, `WATCH`, else the
/// method) and its resource with the subresource, if any (`pods`, `pods/exec`,
/// `kubedirectorclusters/status`); `other` for paths outside `/api` and `/apis`.
pub fn resource(method: &http::Method, path: &str, query: Option<&str>) -> (String, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let skip = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return (verb(method, query), "other".to_string()),
    };
    let mut rest = segments.get(skip..).unwrap_or_default();
    // namespaces/<ns>/<resource>...; `namespaces/<ns>` alone is the namespace itself.
    if rest.len() >= 3 && rest[0] == "namespaces" {
        rest = &rest[2..];
    }
    let Some(kind) = rest.first() else { return (verb(method, query), "other".to_string()) };
    let resource = match rest.get(2) {
        Some(sub) => format!("{kind}/{sub}"),
        None => kind.to_string(),
    };
    let verb = verb(method, query);
    let verb = if verb == "GET" && rest.len() == 1 { "LIST".to_string() } else { verb };
    (verb, resource)
}

/// The verb label of a request: its method, or `WATCH` for `?watch=true`/`1`.
pub fn verb(method: &http::Method, query: Option<&str>) -> String {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    if watch { "WATCH".to_string() } else { method.as_str().to_string() }
}

/// The code label of a status.
pub fn code_class(status: Option<http::StatusCode>) -> &'static str {
    match status.map(|s| s.as_u16() / 100) {
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

/// Tower layer that counts requests (see [`ApiMetrics::layer`]).
#[derive(Clone, Debug)]
pub struct CountingLayer {
    metrics: Arc<ApiMetrics>,
    server: String,
}

impl<S> tower::Layer<S> for CountingLayer {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting { inner, metrics: self.metrics.clone(), server: self.server.clone() }
    }
}

/// The service [`CountingLayer`] wraps around a client's stack.
#[derive(Clone, Debug)]
pub struct Counting<S> {
    inner: S,
    metrics: Arc<ApiMetrics>,
    server: String,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Counting<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let verb = verb(req.method(), req.uri().query());
        let (what, resource) = resource(req.method(), req.uri().path(), req.uri().query());
        self.metrics.record_resource(&self.server, &what, &resource);
        let metrics = self.metrics.clone();
        let server = self.server.clone();
        let started = Instant::now();
        let future = self.inner.call(req);
        Box::pin(async move {
            let result = future.await;
            let code = code_class(result.as_ref().ok().map(http::Response::status));
            metrics.record(&server, &verb, code, started.elapsed().as_secs_f64());
            result
        })
    }
}

/// Labels of one admission request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `validate` or `mutate`.
    pub webhook: String,
    /// The reviewed kind (`KubeDirectorApp`, `KubeDirectorCluster`, `KubeDirectorConfig`,
    /// `KubeDirectorMember`), `other`, or `malformed` when the review could not be read.
    pub kind: String,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` (empty for malformed reviews).
    pub operation: String,
}

/// Labels of webhook durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    /// `validate` or `mutate`.
    pub webhook: String,
}

/// Admission requests served and rejected.
#[derive(Debug)]
pub struct WebhookMetrics {
    requests: Family<WebhookLabels, Counter>,
    rejections: Family<WebhookLabels, Counter>,
    duration: Family<WebhookLabel, Histogram>,
}

impl WebhookMetrics {
    /// Registers `webhook_requests_total`, `webhook_rejections_total` and
    /// `webhook_duration_seconds` in `registry` (already prefixed with the component).
    pub fn register(registry: &mut Registry) -> Arc<WebhookMetrics> {
        let m = WebhookMetrics {
            requests: Family::default(),
            rejections: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 14))),
        };
        registry.register(
            "webhook_requests",
            "Admission requests served, by webhook, kind and operation",
            m.requests.clone(),
        );
        registry.register(
            "webhook_rejections",
            "Admission requests denied (or unreadable), by webhook, kind and operation",
            m.rejections.clone(),
        );
        registry.register_with_unit(
            "webhook_duration",
            "Time to answer an admission request",
            Unit::Seconds,
            m.duration.clone(),
        );
        Arc::new(m)
    }

    /// Records one answered request.
    pub fn record(&self, webhook: &str, kind: &str, operation: &str, allowed: bool, seconds: f64) {
        let kind = match kind {
            "KubeDirectorApp" | "KubeDirectorCluster" | "KubeDirectorConfig" | "KubeDirectorMember" | "malformed" => {
                kind
            }
            _ => "other",
        };
        let operation = match operation {
            "CREATE" | "UPDATE" | "DELETE" | "CONNECT" => operation,
            _ => "",
        };
        let labels =
            WebhookLabels { webhook: webhook.to_string(), kind: kind.to_string(), operation: operation.to_string() };
        self.requests.get_or_create(&labels).inc();
        if !allowed {
            self.rejections.get_or_create(&labels).inc();
        }
        self.duration.get_or_create(&WebhookLabel { webhook: webhook.to_string() }).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).expect("encode");
        out
    }

    #[test]
    fn verbs_and_codes_are_bounded() {
        assert_eq!(verb(&http::Method::GET, Some("watch=true&resourceVersion=5")), "WATCH");
        assert_eq!(verb(&http::Method::GET, Some("labelSelector=watch%3Dtrue")), "GET");
        assert_eq!(verb(&http::Method::PATCH, None), "PATCH");
        assert_eq!(code_class(Some(http::StatusCode::CONFLICT)), "4xx");
        assert_eq!(code_class(Some(http::StatusCode::OK)), "2xx");
        assert_eq!(code_class(None), "error");
    }

    #[test]
    fn reconcile_errors_name_the_failed_step_and_keep_the_controller_series() {
        let mut registry = Registry::with_prefix("kdfed_spoke");
        let m = ReconcileMetrics::new(&["director"]);
        m.register_in(&mut registry);
        let out = text(&registry);
        assert!(out.contains("kdfed_spoke_reconcile_errors_total{controller=\"director\"} 0"), "{out}");
        m.record_run("director", Instant::now());
        m.error("director", "apply");
        m.error("director", "apply");
        m.error("works", "dereference");
        m.observe("director", Instant::now(), true);
        let out = text(&registry);
        for line in [
            "kdfed_spoke_reconcile_total{controller=\"director\"} 2",
            "kdfed_spoke_reconcile_errors_total{controller=\"director\",step=\"apply\"} 2",
            "kdfed_spoke_reconcile_errors_total{controller=\"works\",step=\"dereference\"} 1",
            "kdfed_spoke_reconcile_errors_total{controller=\"director\"} 1",
            "kdfed_spoke_reconcile_duration_seconds_count{controller=\"director\"} 2",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
        // Counting errors by step does not count runs.
        assert!(!out.contains("kdfed_spoke_reconcile_total{controller=\"works\"}"), "{out}");
    }

    #[test]
    fn a_finished_run_makes_the_error_series_exist_before_any_error() {
        let mut registry = Registry::with_prefix("kdfed_hub");
        let m = ReconcileMetrics::new(&[]);
        m.register_in(&mut registry);
        m.finished("placement", Instant::now(), None);
        let out = text(&registry);
        assert!(out.contains("kdfed_hub_reconcile_errors_total{controller=\"placement\"} 0"), "{out}");
        m.finished("placement", Instant::now(), Some("apply"));
        let out = text(&registry);
        assert!(out.contains("kdfed_hub_reconcile_errors_total{controller=\"placement\",step=\"apply\"} 1"), "{out}");
        assert!(out.contains("kdfed_hub_reconcile_total{controller=\"placement\"} 2"), "{out}");
    }

    #[test]
    fn webhook_kinds_outside_kdfed_collapse_to_other() {
        let mut registry = Registry::with_prefix("kdfed_hub");
        let m = WebhookMetrics::register(&mut registry);
        m.record("validate", "KubeDirectorCluster", "CREATE", false, 0.01);
        m.record("validate", "Pod", "WEIRD", true, 0.01);
        let out = text(&registry);
        assert!(
            out.contains(
                "kdfed_hub_webhook_rejections_total{webhook=\"validate\",kind=\"KubeDirectorCluster\",operation=\"CREATE\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("kdfed_hub_webhook_requests_total{webhook=\"validate\",kind=\"other\",operation=\"\"} 1"),
            "{out}"
        );
        assert!(out.contains("kdfed_hub_webhook_duration_seconds_count{webhook=\"validate\"} 2"), "{out}");
    }

    #[tokio::test]
    async fn the_layer_counts_each_request_by_server_verb_and_code() {
        use tower::{Layer, Service, ServiceExt};
        let mut registry = Registry::with_prefix("kdfed_spoke");
        let m = ApiMetrics::register(&mut registry);
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let status = if req.uri().path() == "/missing" { 404 } else { 200 };
            Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(()).expect("response"))
        });
        let mut svc = m.layer("hub").layer(inner);
        for (method, uri) in [("GET", "/ok"), ("GET", "/missing"), ("GET", "/ok?watch=true"), ("PATCH", "/ok")] {
            let req = http::Request::builder().method(method).uri(uri).body(()).expect("request");
            svc.ready().await.expect("ready").call(req).await.expect("call");
        }
        let out = text(&registry);
        for line in [
            "kdfed_spoke_api_requests_total{server=\"hub\",verb=\"GET\",code=\"2xx\"} 1",
            "kdfed_spoke_api_requests_total{server=\"hub\",verb=\"GET\",code=\"4xx\"} 1",
            "kdfed_spoke_api_requests_total{server=\"hub\",verb=\"WATCH\",code=\"2xx\"} 1",
            "kdfed_spoke_api_requests_total{server=\"hub\",verb=\"PATCH\",code=\"2xx\"} 1",
            "kdfed_spoke_api_request_duration_seconds_count{server=\"hub\"} 4",
            "kdfed_spoke_api_resource_requests_total{server=\"hub\",verb=\"GET\",resource=\"other\"} 2",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
    }

    #[test]
    fn a_request_names_its_resource_and_a_collection_get_is_a_list() {
        let get = http::Method::GET;
        let cases = [
            (&get, "/api/v1/pods", None, ("LIST", "pods")),
            (&get, "/api/v1/namespaces/default/pods", Some("labelSelector=a"), ("LIST", "pods")),
            (&get, "/api/v1/namespaces/default/pods/p-0", None, ("GET", "pods")),
            (
                &http::Method::POST,
                "/api/v1/namespaces/default/pods/p-0/exec",
                Some("command=ls"),
                ("POST", "pods/exec"),
            ),
            (
                &get,
                "/apis/kubedirector.hpe.com/v1beta1/kubedirectorclusters",
                Some("watch=true"),
                ("WATCH", "kubedirectorclusters"),
            ),
            (
                &http::Method::PATCH,
                "/apis/kubedirector.hpe.com/v1beta1/namespaces/ns/kubedirectorclusters/c/status",
                None,
                ("PATCH", "kubedirectorclusters/status"),
            ),
            (&get, "/api/v1/namespaces/kdfed-system", None, ("GET", "namespaces")),
            (&get, "/version", None, ("GET", "other")),
            (&get, "/apis/apps/v1", None, ("GET", "other")),
        ];
        for (method, path, query, (verb, resource)) in cases {
            assert_eq!(super::resource(method, path, query), (verb.to_string(), resource.to_string()), "{path}");
        }
    }
}
