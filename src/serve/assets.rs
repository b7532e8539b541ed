//! The page and its static files, embedded in the binary (no CDN, no network):
//! `/` and `/slide/{id}` (the same page; the script reads the URL), its scripts,
//! style and icon, and OpenSeadragon vendored under `assets/vendor/`.
//!
//! The page is served under a CSP that allows only its own script and style
//! files, and nothing here reads the index, so none of it needs the token.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::app::App;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
/// "More slides like this" in the viewer (`/api/slide/{id}/like`).
const LIKE_JS: &str = include_str!("assets/like.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");
/// OpenSeadragon, vendored from npm (`assets/vendor/openseadragon/README.md`).
const OSD_JS: &str = include_str!("assets/vendor/openseadragon/openseadragon.min.js");
const OSD_LICENSE: &str = include_str!("assets/vendor/openseadragon/LICENSE.txt");

/// The page allows only its own script and style files: even a name that got
/// past escaping could not run. The one hash is the `<style>` OpenSeadragon 6.1.1
/// adds for touch screens (`@media (hover: none) {...}` in openseadragon.min.js);
/// `tests/serve_click.py` fails on any CSP violation, so a new OpenSeadragon
/// that changes it is noticed.
const CSP: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE='; \
     img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The page and its files.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/", get(page))
        .route("/slide/{id}", get(page))
        .route(
            "/vendor/openseadragon/openseadragon.min.js",
            get(|| asset("text/javascript; charset=utf-8", OSD_JS)),
        )
        .route(
            "/vendor/openseadragon/LICENSE.txt",
            get(|| asset("text/plain; charset=utf-8", OSD_LICENSE)),
        )
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/like.js",
            get(|| asset("text/javascript; charset=utf-8", LIKE_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        .route("/favicon.svg", get(|| asset("image/svg+xml", FAVICON_SVG)))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
