//! Search: `/api/search` (GET for text and items, POST for an image body;
//! `by_slide=1` ranks slides) and `/api/info`, with the answer types the API
//! shares with the other rooms (a hit, a slide reference).
//!
//! A query's parameters are parsed and checked (`params`) before any work; the
//! query vector is built as `plip search` builds it (text through the cached
//! text tower, stored vectors for `like=`, an upload decoded with plip's own
//! decoder), and concurrent searches share one pass over the index (`batch`).
//! Hits carry `plip search --json`'s fields, then the server's own.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{RawQuery, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::json;

use super::app::{bad, error, json_ok, on_pool, ApiError, App, MAX_BODY};
use super::ids::ItemId;
use super::listen::UPLOAD_TIMEOUT;
use super::params::{self, SearchParams, Term};
use super::snapshot::Snapshot;
use super::state::State;
use crate::index::Region;
use crate::output::{by_slide, printers};

/// `/api/search` and `/api/info` (behind the token check).
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/search", get(search_get).post(search_post))
        .route("/api/info", get(info))
}

async fn info(AxState(app): AxState<App>) -> Response {
    let snap = app.state.snapshot();
    let stats = snap.index.stats();
    // The first two folder levels, for the page's `under` suggestions.
    let mut folders = std::collections::BTreeMap::<String, usize>::new();
    for (e, _) in snap.index.iter() {
        let parts: Vec<&str> = e.path.split('/').collect();
        for depth in 1..parts.len().min(3) {
            *folders.entry(parts[..depth].join("/")).or_default() += 1;
        }
        if folders.len() > 500 {
            break;
        }
    }
    json_ok(&json!({
        "images": stats.images,
        "generation": stats.generation,
        "segments": stats.segments,
        "model": stats.model.source,
        "dim": stats.model.dim,
        "updated_unix": stats.updated_unix,
        "folders": folders.into_iter().map(|(f, n)| json!({"path": f, "images": n})).collect::<Vec<_>>(),
        "max_top": params::MAX_TOP,
        "max_terms": params::MAX_TERMS,
        "max_prompts": params::MAX_PROMPTS,
        "max_upload_bytes": MAX_BODY,
    }))
}

/// One hit as the API returns it: `plip search --json`'s fields (for a tile:
/// path, x, y, w, h, level, mpp), then the server's own.
#[derive(Serialize)]
pub(super) struct ApiHit {
    #[serde(flatten)]
    row: printers::PrintedHit,
    /// Item id: for `like=`, `/api/item/` and `/api/thumb/`.
    id: String,
    /// URL of a thumbnail (for a tile: its crop, read by plip's slide reader).
    thumb: String,
    /// `image`, or `slide` for a tile of a whole slide.
    kind: &'static str,
    /// The tile's region of its slide (null for images).
    region: Option<Region>,
    /// For a tile: its slide's id, level-0 size and Deep Zoom descriptor.
    #[serde(flatten)]
    slide: Option<SlideRef>,
}

/// The slide a tile belongs to, as the viewer needs it.
#[derive(Serialize)]
pub(super) struct SlideRef {
    /// Slide id, for `/api/slide/{slide_id}...`.
    pub(super) slide_id: String,
    /// URL of its `.dzi` descriptor.
    pub(super) dzi: String,
    /// Level-0 size, pixels.
    pub(super) slide_width: u64,
    pub(super) slide_height: u64,
}

impl SlideRef {
    /// The slide at stored path `path` (an indexed slide).
    pub(super) fn of(snap: &Snapshot, path: &str) -> Self {
        let id = ItemId::of_slide(path);
        let (w, h) = snap
            .index
            .slides()
            .get(path)
            .map_or((0, 0), |r| (r.width, r.height));
        SlideRef {
            slide_id: id.to_string(),
            dzi: format!("/api/slide/{id}.dzi"),
            slide_width: w,
            slide_height: h,
        }
    }
}

impl ApiHit {
    pub(super) fn new(snap: &Snapshot, row: printers::PrintedHit, stored_path: &str) -> Self {
        let region = row.region;
        let id = ItemId::of(stored_path, region.as_ref()).to_string();
        ApiHit {
            thumb: format!("/api/thumb/{id}"),
            id,
            kind: if region.is_some() { "slide" } else { "image" },
            region,
            slide: region.map(|_| SlideRef::of(snap, stored_path)),
            row,
        }
    }
}

/// One slide of `/api/search?by_slide=1`: `plip search --by-slide --json`'s fields,
/// then the server's own.
#[derive(Serialize)]
struct ApiSlide {
    #[serde(flatten)]
    row: by_slide::PrintedSlide,
    #[serde(flatten)]
    slide: SlideRef,
    /// URL of the slide's thumbnail.
    thumb: String,
    /// Item id of the best tile (the viewer opens at it).
    best_id: String,
}

/// The answer of `/api/search?by_slide=1`.
#[derive(Serialize)]
struct SlidesAnswer {
    slides: Vec<ApiSlide>,
    generation: u64,
    images: usize,
    took_ms: f64,
}

/// The answer of `/api/search`.
#[derive(Serialize)]
struct SearchAnswer {
    hits: Vec<ApiHit>,
    /// The commit that answered.
    generation: u64,
    /// Live images in that commit.
    images: usize,
    /// Time spent embedding and searching, in milliseconds.
    took_ms: f64,
}

async fn search_get(AxState(app): AxState<App>, RawQuery(query): RawQuery) -> Response {
    let params = match params::parse(query.as_deref().unwrap_or(""), 10) {
        Ok(p) => p,
        Err(m) => return bad(m).into_response(),
    };
    if params.terms.is_empty() {
        return bad("the query is empty: give q=WORDS, like=ID or add=WORDS (or POST an image)")
            .into_response();
    }
    run_search(app, params, None).await
}

async fn search_post(
    AxState(app): AxState<App>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Refused before reading when the client says how much is coming.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let params = match params::parse(query.as_deref().unwrap_or(""), 10) {
        Ok(p) => p,
        Err(m) => return bad(m).into_response(),
    };
    // A chunked body is cut off at the limit.
    let collect = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY));
    let body = match tokio::time::timeout(UPLOAD_TIMEOUT, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => return bad(format!("reading the upload: {e}")).into_response(),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the upload did not arrive within {} s",
                    UPLOAD_TIMEOUT.as_secs()
                ),
            )
        }
    };
    if body.is_empty() {
        return bad("the request body is empty: POST the image file itself as the body")
            .into_response();
    }
    run_search(app, params, Some(body)).await
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the upload is over the {} MB limit", MAX_BODY >> 20),
    )
}

async fn run_search(app: App, params: SearchParams, image: Option<Bytes>) -> Response {
    // An upload also waits for one of the few decode slots.
    let _upload = match &image {
        Some(_) => match app.upload_gate.clone().acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                )
            }
        },
        None => None,
    };
    let state = app.state.clone();
    on_pool(&app.search_gate, "searching", move || {
        search_blocking(&state, params, image)
    })
    .await
}

fn search_blocking(
    state: &State,
    p: SearchParams,
    image: Option<Bytes>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let snap = state.snapshot();
    let query = query_vector(state, &snap, &p, image)?;
    let took = |t: Instant| (t.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    if p.by_slide {
        let allow = |path: &str| crate::query::filter::under(p.under.as_deref(), path);
        let (ranked, _) =
            crate::query::slides::by_slide(&snap.index, &query, &allow, p.threshold, p.top);
        let rows = by_slide::printable(
            &crate::app::search::slide_hits(ranked.clone(), &snap.root),
            &state.cwd,
        );
        let slides = rows
            .into_iter()
            .zip(&ranked)
            .map(|(row, s)| {
                let slide = SlideRef::of(&snap, &s.path);
                ApiSlide {
                    thumb: format!("/api/slide/{}/thumb", slide.slide_id),
                    best_id: ItemId::of(&s.path, Some(&s.best[0].0)).to_string(),
                    row,
                    slide,
                }
            })
            .collect();
        return Ok(json_ok(&SlidesAnswer {
            slides,
            generation: snap.generation,
            images: snap.index.len(),
            took_ms: took(started),
        }));
    }
    let hits = state
        .searches
        .search(
            Arc::clone(&snap),
            query,
            p.top,
            state.ef,
            p.under.as_deref(),
            p.threshold,
        )
        .ok_or_else(|| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the search failed inside the server; try again".into(),
            )
        })?;
    let rows = printers::printable(
        &crate::app::search::item_hits(hits.clone(), &snap.root),
        &state.cwd,
    );
    let hits: Vec<ApiHit> = rows
        .into_iter()
        .zip(&hits)
        .map(|(row, h)| ApiHit::new(&snap, row, &h.path))
        .collect();
    Ok(json_ok(&SearchAnswer {
        hits,
        generation: snap.generation,
        images: snap.index.len(),
        took_ms: took(started),
    }))
}

/// The unit query vector of checked parameters (and an uploaded image).
pub(super) fn query_vector(
    state: &State,
    snap: &Snapshot,
    p: &SearchParams,
    image: Option<Bytes>,
) -> Result<Vec<f32>, ApiError> {
    let mut parts: Vec<(f32, Vec<f32>)> = Vec::with_capacity(p.terms.len() + 1);
    if let Some(bytes) = image {
        parts.push((1.0, embed_upload(state, &bytes)?));
    }
    for t in &p.terms {
        match t {
            Term::Text(w, text) => {
                let v = state
                    .text_embedding(text, &p.templates)
                    .map_err(|e| bad(format!("{e:#}")))?;
                parts.push((*w, v.to_vec()));
            }
            Term::Item(w, id) => {
                let (_, v) = snap.item(*id).ok_or_else(|| {
                    ApiError(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no item {id} in the index (it may have been removed; search again)"
                        ),
                    )
                })?;
                parts.push((*w, v.to_vec()));
            }
        }
    }
    crate::query::combine(&parts).map_err(|e| bad(format!("{e:#}")))
}

/// Decodes an uploaded image with plip's decoder (limits on, panics caught)
/// and embeds it exactly as indexed images are embedded.
fn embed_upload(state: &State, bytes: &[u8]) -> Result<Vec<f32>, ApiError> {
    let e = &state.embedder;
    // Nothing shared is written while decoding, so a panic leaves no broken state.
    let pixels = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::preprocess::decode_rgb(bytes, e.limits())
            .map(|rgb| crate::preprocess::preprocess(&rgb, e.preprocess_config()))
    }));
    let pixels = match pixels {
        Ok(Ok(p)) => p,
        Ok(Err(err @ crate::preprocess::ImageError::Unsupported(_))) => {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the upload is not an image plip reads: {err}"),
            ))
        }
        Ok(Err(err)) => return Err(bad(format!("the uploaded image: {err}"))),
        Err(_) => return Err(bad("the image decoder crashed on the upload")),
    };
    let mut v = e.embed_pixels(pixels, 1).map_err(|err| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("embedding the upload: {err:#}"),
        )
    })?;
    Ok(v.remove(0))
}
