//! The webhook's HTTPS server: TLS from [`super::tls`], `/validate` and `/mutate` answered
//! by the review services, every answer counted in [`WebhookMetrics`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionReview, Operation};
use tower::ServiceExt;
use tracing::{info, warn};

use super::review::{self, Review, Reviewer};
use super::tls::{self, TlsError};
use crate::observe::WebhookMetrics;

/// Path of the validating webhook.
pub const PATH: &str = "/validate";
/// Path of the mutating webhook (secret key encryption, generated master keys).
pub const MUTATE_PATH: &str = "/mutate";

/// Why the webhook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Certificate, key or TLS configuration unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address could not be bound.
    #[error("bind {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

/// Starts the webhook on `addr` with the certificate files; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    reviewer: Reviewer,
    metrics: Arc<WebhookMetrics>,
) -> Result<SocketAddr, ServeError> {
    let acceptor = tls::acceptor(cert, key)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| ServeError::Bind(addr, e))?;
    let bound = listener.local_addr().map_err(|e| ServeError::Bind(addr, e))?;
    let reviewer = Arc::new(reviewer);
    let routes =
        Routes { validation: review::validation(reviewer.clone()), mutation: review::mutation(reviewer), metrics };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(move |req| routes.clone().handle(req));
                if let Err(e) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await
                {
                    warn!("webhook connection: {e}");
                }
            });
        }
    });
    info!(address = %bound, "admission webhook listening");
    Ok(bound)
}

/// The webhook's paths and what answers them.
#[derive(Clone)]
struct Routes {
    validation: Review,
    mutation: Review,
    metrics: Arc<WebhookMetrics>,
}

type Reply = Result<Response<Full<Bytes>>, std::convert::Infallible>;

fn reply(code: StatusCode, body: Vec<u8>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(r)
}

fn error_body(error: &str) -> Vec<u8> {
    format!("{{\"error\":{error:?}}}").into_bytes()
}

/// The `operation` label of a request.
fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

impl Routes {
    async fn handle(self, req: Request<Incoming>) -> Reply {
        let started = Instant::now();
        let service = match req.uri().path() {
            "/healthz" => return reply(StatusCode::OK, b"{\"status\":\"ok\"}".to_vec()),
            PATH => self.validation,
            MUTATE_PATH => self.mutation,
            _ => return reply(StatusCode::NOT_FOUND, b"{}".to_vec()),
        };
        let webhook = service.webhook().label();
        let unreadable = |e: String| {
            self.metrics.record(webhook, "malformed", "", false, started.elapsed().as_secs_f64());
            reply(StatusCode::BAD_REQUEST, error_body(&e))
        };
        let review = match read_review(req.into_body()).await {
            Ok(review) => review,
            Err(e) => return unreadable(e),
        };
        let asked = review.request.as_ref().map(|r| (r.kind.kind.clone(), operation_label(&r.operation)));
        let answer = match service.oneshot(review).await {
            Ok(answer) => answer,
            Err(e) => return unreadable(e.to_string()),
        };
        let allowed = answer.response.as_ref().is_some_and(|r| r.allowed);
        let (kind, operation) = asked.unwrap_or_default();
        self.metrics.record(webhook, &kind, operation, allowed, started.elapsed().as_secs_f64());
        match serde_json::to_vec(&answer) {
            Ok(body) => reply(StatusCode::OK, body),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, error_body(&e.to_string())),
        }
    }
}

/// The body as an `AdmissionReview`.
async fn read_review(body: Incoming) -> Result<AdmissionReview<DynamicObject>, String> {
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
