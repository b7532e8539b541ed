//! Who may ask: the checks every request passes (the Host guard and the
//! security headers on every response), the bearer token of `/api/` and
//! `/api/login`, which turns the token into the cookie the page's images send.
//!
//! The token is compared without an early exit, so timing does not reveal a
//! prefix; the login cookie is `HttpOnly` and `SameSite=Strict`.

use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::json;

use super::app::{error, json_ok, App};

/// `/api/login` (outside the token check: it is how the token is presented).
pub(super) fn routes() -> Router<App> {
    Router::new().route("/api/login", post(login))
}

/// Security headers on every response, and the Host checks: one Host header at
/// most, an absolute-form target that agrees with it, and on loopback only
/// loopback names in either (a guard against DNS rebinding).
pub(super) async fn guard(AxState(app): AxState<App>, req: Request, next: Next) -> Response {
    if let Some(refused) = super::host::check(req.headers(), req.uri(), app.state.loopback) {
        return refused;
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// With `--token`, `/api/` wants `Authorization: Bearer TOKEN` or the cookie
/// that `/api/login` sets (the page's images cannot send a header).
pub(super) async fn require_token(
    AxState(app): AxState<App>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &app.state.token {
        if !presented(req.headers(), token, true) {
            let mut res = error(
                StatusCode::UNAUTHORIZED,
                "this server needs a token: send `Authorization: Bearer TOKEN` (the page asks for it)",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    }
    next.run(req).await
}

fn presented(headers: &HeaderMap, token: &str, cookie_ok: bool) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim(), token));
    let cookie = cookie_ok
        && headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().strip_prefix("plip_token="))
            .any(|t| same(t, token));
    bearer || cookie
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn login(AxState(app): AxState<App>, headers: HeaderMap) -> Response {
    match &app.state.token {
        None => json_ok(&json!({"ok": true, "token_required": false})),
        Some(token) if presented(&headers, token, false) => {
            let mut res = json_ok(&json!({"ok": true, "token_required": true}));
            // The token is checked to be a header-safe string at startup.
            if let Ok(v) = HeaderValue::from_str(&format!(
                "plip_token={token}; Path=/; HttpOnly; SameSite=Strict"
            )) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong token"),
    }
}
