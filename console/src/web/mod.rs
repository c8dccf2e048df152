//! The console's HTTP side: routes, the signed-in user of each request, CSRF checks, the
//! request metrics, and the answers for errors (a refused call becomes a "not allowed"
//! page, never another user's data).

// A handler's early answer is a whole `Response` (a redirect to sign-in, a "not allowed"
// page); it is built once per request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod auth;
mod change;
mod pages;

use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use kube::Client;

use crate::hub::Hub;
use crate::metrics::ConsoleMetrics;
use crate::session::{self, Sealer, Session};
use crate::templates::{Chrome, MessagePage};

/// What every request handler shares.
pub struct Console {
    /// How the hub is reached.
    pub hub: Hub,
    /// Seals and opens session cookies.
    pub sealer: Sealer,
    /// How long a session lasts, seconds.
    pub session_seconds: i64,
    /// Namespace of the platform's app catalog.
    pub system_namespace: String,
    /// Local mode: the CSRF token of this process (there is no sign-in to carry one).
    pub local_csrf: String,
    /// Local mode: the kubeconfig identity's name.
    pub local_user: String,
    /// Request and sign-in metrics.
    pub metrics: Arc<ConsoleMetrics>,
}

/// Shared state of the router.
pub type Shared = Arc<Console>;

/// The signed-in user of a request: who, their CSRF token, the namespace they look at and
/// a client of the hub acting as them.
pub struct User {
    /// Username.
    pub name: String,
    /// CSRF token every form must carry.
    pub csrf: String,
    /// Namespace the user starts in.
    pub home: String,
    /// Client of the hub with the user's identity.
    pub client: Client,
}

impl User {
    /// The page chrome (navigation, sign-out form) for this user, looking at `namespace`.
    pub fn chrome(&self, console: &Console, namespace: &str) -> Chrome {
        Chrome {
            user: self.name.clone(),
            csrf: self.csrf.clone(),
            namespace: namespace.to_string(),
            local: matches!(console.hub, Hub::Local { .. }),
        }
    }
}

/// The console's routes.
pub fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/catalog") }))
        .route("/sign-in", get(auth::sign_in_form).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/catalog", get(pages::catalog))
        .route("/launch/{namespace}/{app}", get(pages::launch_form).post(pages::launch))
        .route("/placement.json", get(pages::placement_json))
        .route("/clusters", get(pages::clusters))
        .route("/clusters.json", get(pages::clusters_json))
        .route("/clusters/{namespace}/{name}", get(pages::cluster))
        .route("/clusters/{namespace}/{name}/status.json", get(pages::cluster_json))
        .route("/clusters/{namespace}/{name}/members", post(change::members))
        .route("/clusters/{namespace}/{name}/choices", post(change::choices))
        .route("/clusters/{namespace}/{name}/upgrade", post(change::upgrade))
        .route("/clusters/{namespace}/{name}/delete", get(change::delete_form).post(change::delete))
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../../assets/console.css")) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("../../assets/console.js")) }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::from_fn_with_state(console.clone(), observe))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// Counts every request by route pattern and status, and sets the headers every answer
/// carries (no framing by other sites, no caching of pages with user data).
async fn observe(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("other", |m| m.as_str()).to_string();
    let started = Instant::now();
    let mut response = next.run(request).await;
    console.metrics.record(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    let headers = response.headers_mut();
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    if !route.starts_with("/assets") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The signed-in user of a request, or the redirect to the sign-in page.
pub fn user(console: &Console, headers: &HeaderMap) -> Result<User, Response> {
    if let Hub::Local { client, namespace } = &console.hub {
        return Ok(User {
            name: console.local_user.clone(),
            csrf: console.local_csrf.clone(),
            home: namespace.clone(),
            client: client.clone(),
        });
    }
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let Some(cookie) = session::cookie_value(cookies) else { return Err(to_sign_in()) };
    let Ok(Session { user, token, csrf, .. }) = console.sealer.open(cookie, now()) else { return Err(to_sign_in()) };
    let client = console.hub.client_for(&token).map_err(|e| failure(None, &e))?;
    Ok(User { home: crate::hub::home_namespace(&user), name: user, csrf, client })
}

/// Like [`user`], for a POST: the form's `csrf` must match the session's.
pub fn poster(console: &Console, headers: &HeaderMap, form: &[(String, String)]) -> Result<User, Response> {
    let user = user(console, headers)?;
    let sent = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    if !session::csrf_matches(&user.csrf, sent) {
        return Err(message(
            StatusCode::FORBIDDEN,
            Some(user.chrome(console, &user.home)),
            "Form refused",
            "This form did not carry this session's CSRF token (an old page, or a form sent from another site). Reload the page and send it again.",
        ));
    }
    Ok(user)
}

fn to_sign_in() -> Response {
    Redirect::to("/sign-in").into_response()
}

/// Unix seconds now.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A page that says one thing, with `status`.
pub fn message(status: StatusCode, chrome: Option<Chrome>, title: &str, text: &str) -> Response {
    let page = MessagePage { chrome: chrome.unwrap_or_default(), title: title.to_string(), text: text.to_string() };
    (status, render(&page)).into_response()
}

/// A template rendered to HTML (an error page when rendering fails).
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("render: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered\n").into_response()
        }
    }
}

/// A failed call the console cannot do anything about.
pub fn failure(chrome: Option<Chrome>, error: &str) -> Response {
    message(StatusCode::BAD_GATEWAY, chrome, "The hub did not answer", error)
}

/// The answer for a failed API call made for `user` while `doing` (`"list clusters in
/// team-a"`): "not allowed" for a refusal by RBAC (403), "sign in again" for an expired
/// token (401), "not found", else the hub's error.
pub fn api_failure(console: &Console, user: &User, namespace: &str, doing: &str, e: kube::Error) -> Response {
    let chrome = Some(user.chrome(console, namespace));
    match e {
        kube::Error::Api(s) if s.code == 403 => message(
            StatusCode::FORBIDDEN,
            chrome,
            "Not allowed",
            &format!("You ({}) are not allowed to {doing}. Ask your platform team for access.", user.name),
        ),
        kube::Error::Api(s) if s.code == 401 => to_sign_in(),
        kube::Error::Api(s) if s.code == 404 => {
            message(StatusCode::NOT_FOUND, chrome, "Not found", &format!("Nothing to {doing}: it does not exist."))
        }
        other => failure(chrome, &format!("Could not {doing}: {other}")),
    }
}
