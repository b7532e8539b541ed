//! The whole application: the rooms' routes merged in one place, with the
//! middleware that applies across them.
//!
//! `assets` (the page) and `auth`'s `/api/login` are open; `search`, `items`,
//! `slides` and `like` are the rest of `/api/`, behind the token check. Every
//! response passes `auth::guard` (Host checks, security headers); an unknown
//! route or method is a JSON 404 or 405 like every other error; uploads apply
//! their own body limit (a JSON 413), so axum's default limit is off.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::Router;

use super::app::{error, App};
use super::state::State;
use super::{assets, auth, items, like, search, slides};

/// The whole application.
pub(crate) fn router(state: Arc<State>) -> Router {
    let app = App::new(state);
    let api = Router::new()
        .merge(search::routes())
        .merge(items::routes())
        .merge(slides::routes())
        .merge(like::routes())
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(assets::routes())
        .merge(auth::routes())
        .merge(api)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such page or API route; the API is /api/search, /api/info, /api/item/ID, \
                 /api/thumb/ID and /api/slide/SLIDE_ID{.dzi,/thumb,/heatmap,/like}",
            )
        })
        .method_not_allowed_fallback(|m: Method| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{m} is not allowed here"),
            )
        })
        // The upload handler applies its own limit (with a JSON 413).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(app.clone(), auth::guard))
        .with_state(app)
}
