//! Sign-in and sign-out. The sign-in form carries its own CSRF token (double-submitted in a
//! short-lived cookie, since there is no session yet); a token is accepted only when the
//! hub's API server says whose it is, and then lives only inside the sealed session cookie.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::info;

use super::{Shared, now, render};
use crate::hub::{Hub, SignInError, who_am_i};
use crate::session::{self, Session};
use crate::templates::{Chrome, SignInPage};

/// Cookie of the sign-in form's CSRF token.
const SIGN_IN_COOKIE: &str = "kdfed_sign_in";

fn sign_in_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SIGN_IN_COOKIE)
        .map(|(_, v)| v.to_string())
}

fn form_page(status: StatusCode, error: &str) -> Response {
    let csrf = session::new_csrf();
    let page = SignInPage { chrome: Chrome::default(), error: error.to_string(), csrf: csrf.clone() };
    let cookie = format!("{SIGN_IN_COOKIE}={csrf}; Path=/sign-in; Max-Age=900; HttpOnly; Secure; SameSite=Strict");
    (status, [(header::SET_COOKIE, cookie)], render(&page)).into_response()
}

/// `GET /sign-in`.
pub async fn sign_in_form(State(console): State<Shared>) -> Response {
    if matches!(console.hub, Hub::Local { .. }) {
        return Redirect::to("/catalog").into_response();
    }
    form_page(StatusCode::OK, "")
}

/// `POST /sign-in`: checks the token with the hub's API server, then seals it in the
/// session cookie.
pub async fn sign_in(
    State(console): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if matches!(console.hub, Hub::Local { .. }) {
        return Redirect::to("/catalog").into_response();
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string());
    let expected = sign_in_cookie(&headers).unwrap_or_default();
    if !session::csrf_matches(&expected, field("csrf").as_deref()) {
        return form_page(StatusCode::FORBIDDEN, "The sign-in form expired or came from another site: sign in again.");
    }
    let token = field("token").unwrap_or_default();
    let verified = if token.is_empty() {
        Err(SignInError::Empty)
    } else {
        match console.hub.client_for(&token) {
            Ok(client) => who_am_i(&client).await,
            Err(e) => Err(SignInError::Unreachable(e)),
        }
    };
    let user = match verified {
        Ok(user) => user,
        Err(e) => {
            console.metrics.sign_in_failed(e.reason());
            info!(reason = e.reason(), "sign-in refused");
            let status = if matches!(e, SignInError::Unreachable(_)) {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::UNAUTHORIZED
            };
            return form_page(status, &e.to_string());
        }
    };
    console.metrics.sign_in();
    info!(%user, "signed in");
    let expires = now() + console.session_seconds;
    let sealed = console.sealer.seal(&Session { user, token, csrf: session::new_csrf(), expires });
    let clear = format!("{SIGN_IN_COOKIE}=; Path=/sign-in; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    let mut response = Redirect::to("/catalog").into_response();
    let headers = response.headers_mut();
    if let Ok(v) = session::set_cookie(&sealed, console.session_seconds).parse() {
        headers.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = clear.parse() {
        headers.append(header::SET_COOKIE, v);
    }
    response
}

/// `POST /sign-out`: clears the session cookie (CSRF-checked, so no other site signs a user out).
pub async fn sign_out(
    State(console): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(refused) = super::poster(&console, &headers, &form) {
        return refused;
    }
    let target = if matches!(console.hub, Hub::Local { .. }) { "/catalog" } else { "/sign-in" };
    ([(header::SET_COOKIE, session::clear_cookie())], Redirect::to(target)).into_response()
}
