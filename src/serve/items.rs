//! Items and thumbnails: `/api/item/{id}` (what the index says of one item)
//! and `/api/thumb/{id}`, and the JPEG answers the slide room shares.
//!
//! Files are reached only through item ids that the snapshot names, never
//! through a path in the request; thumbnails are made on the blocking pool
//! behind the thumbnail gate, and carry an ETag so a revisit is a 304.

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::app::{json_ok, on_pool, ApiError, App};
use super::ids::ItemId;
use super::search::ApiHit;
use super::snapshot::Snapshot;
use super::thumbs::ThumbOf;
use crate::output::printers;

/// `/api/item/{id}` and `/api/thumb/{id}` (behind the token check).
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/thumb/{id}", get(thumb))
        .route("/api/item/{id}", get(item))
}

/// The indexed item an `/api/.../{id}` route names, or the 404 to answer.
fn lookup<'a>(
    snap: &'a Snapshot,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    url: &str,
    field: &str,
) -> Result<&'a crate::index::FileEntry, ApiError> {
    let Some(id) = id.ok().and_then(|Path(s)| ItemId::parse(&s)) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{url} ends in an item id (16 hex digits), as `{field}` in a hit gives it"),
        ));
    };
    snap.item(id)
        .map(|(entry, _)| entry)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no item {id} in the index")))
}

/// What `/api/item/{id}` says of an item: a hit's fields (rank and score 0, as
/// no query ranked it), so for a tile its region and slide (the viewer's shared
/// URL names only the tile).
async fn item(
    AxState(app): AxState<App>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let snap = app.state.snapshot();
    let entry = match lookup(&snap, id, "an item URL", "id") {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let row = printers::PrintedHit {
        rank: 0,
        score: 0.0,
        path: crate::index::paths::relative(
            &crate::index::paths::resolve(&snap.root, &entry.path),
            &app.state.cwd,
        ),
        region: entry.region,
    };
    json_ok(&ApiHit::new(&snap, row, &entry.path))
}

/// A 304 when the client holds this ETag, else the JPEG.
pub(super) fn jpeg_response(jpeg: Bytes, etag: String, headers: &HeaderMap) -> Response {
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "image/jpeg".to_string()),
            (header::CACHE_CONTROL, "private, max-age=60".to_string()),
            (header::ETAG, etag),
        ],
        jpeg,
    )
        .into_response()
}

async fn thumb(
    AxState(app): AxState<App>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    let snap = app.state.snapshot();
    let entry = match lookup(&snap, id, "a thumbnail URL", "thumb") {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let what = entry.region.map_or(ThumbOf::Image, ThumbOf::Tile);
    send_thumb(&app, &snap, &entry.path, what, headers).await
}

/// The thumbnail of `what` in the indexed file at stored path `path`.
pub(super) async fn send_thumb(
    app: &App,
    snap: &Snapshot,
    path: &str,
    what: ThumbOf,
    headers: HeaderMap,
) -> Response {
    // The index names the file; nothing from the request goes into the path.
    let file = crate::index::paths::resolve(&snap.root, path);
    let state = app.state.clone();
    on_pool(&app.thumb_gate, "making a thumbnail", move || {
        let t = state
            .thumbs
            .get(&file, &what)
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, format!("no thumbnail: {e}")))?;
        Ok(jpeg_response(
            Bytes::from_owner(t.jpeg),
            format!("\"{}\"", t.key),
            &headers,
        ))
    })
    .await
}
