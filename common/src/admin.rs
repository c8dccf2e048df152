//! The admin server every binary runs: `/metrics` (OpenMetrics text from one registry),
//! `/healthz` (the process runs) and `/readyz` (it has connected and, for the hub, leads or
//! stands by ready to).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

/// Shared admin state: the metrics registry and the readiness flag.
pub struct Admin {
    /// Every metric of the process.
    pub registry: Registry,
    /// Set once the process can do its job.
    pub ready: AtomicBool,
}

impl Admin {
    /// A registry with the `kdfed` prefix.
    pub fn new() -> Admin {
        Admin { registry: Registry::with_prefix("kdfed"), ready: AtomicBool::new(false) }
    }

    /// Marks the process ready.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin::new()
    }
}

/// Serves the admin endpoints on `addr`; returns the bound address.
pub async fn serve(addr: SocketAddr, admin: Arc<Admin>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{addr} is in use (another kdfed process on this machine?): choose another address with --admin-address (admin_address in the settings file), or port 0 for a free one, logged at start"
                ),
            )
        } else {
            e
        }
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, admin.clone()));
                if let Err(e) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                {
                    warn!("admin connection: {e}");
                }
            });
        }
    });
    info!(address = %bound, "admin server listening (/metrics, /healthz, /readyz)");
    Ok(bound)
}

async fn handle(req: Request<Incoming>, admin: Arc<Admin>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (code, content_type, body) = match req.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
                Ok(()) => (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
            }
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if admin.ready.load(Ordering::SeqCst) => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    Ok(response)
}
