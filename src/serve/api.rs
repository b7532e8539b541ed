//! Routes and handlers: the page and its assets, `/api/search` (GET for text
//! and items, POST for an image body; `by_slide=1` ranks slides), `/api/info`,
//! `/api/item/{id}`, `/api/thumb/{id}` and `/api/login`; the slide viewer's
//! routes (`/api/slide/...`) are in `slides`.
//!
//! Every error is JSON, `{"error": MESSAGE, "status": CODE}`, with a 4xx code
//! for anything the client can fix. Model and disk work runs on the blocking
//! pool behind a semaphore; a panic there (a bug) becomes a 500 for that
//! request only.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use super::params::{self, SearchParams, Term};
use super::state::{Snapshot, State};
use super::thumbs::ThumbOf;
use super::{slides, ItemId, MAX_BODY};
use crate::index::Region;
use crate::output::{by_slide, printers};

/// Blocking threads (model, decoding, disk) at most.
pub(crate) const MAX_BLOCKING: usize = 64;
/// Searches answered at once (they share passes over the index); below
/// [`MAX_BLOCKING`], so thumbnails and tiles still get threads.
const SEARCHES_IN_FLIGHT: usize = 32;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
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

#[derive(Clone)]
pub(super) struct App {
    pub(super) state: Arc<State>,
    /// Searches in flight; more wait their turn. Many, so that concurrent
    /// searches can share one pass over the index (`batch`).
    pub(super) search_gate: Arc<Semaphore>,
    /// Uploaded query images being decoded and embedded; more wait their turn.
    pub(super) upload_gate: Arc<Semaphore>,
    /// Thumbnails and deep-zoom tiles being made; more wait their turn.
    pub(super) thumb_gate: Arc<Semaphore>,
}

/// The whole application.
pub(crate) fn router(state: Arc<State>) -> Router {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let app = App {
        state,
        search_gate: Arc::new(Semaphore::new(SEARCHES_IN_FLIGHT)),
        upload_gate: Arc::new(Semaphore::new(cores.clamp(2, 16))),
        thumb_gate: Arc::new(Semaphore::new((2 * cores).clamp(2, 32))),
    };
    let api = Router::new()
        .route("/api/search", get(search_get).post(search_post))
        .route("/api/info", get(info))
        .route("/api/thumb/{id}", get(thumb))
        .route("/api/item/{id}", get(item))
        .merge(slides::routes())
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
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
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        .route("/favicon.svg", get(|| asset("image/svg+xml", FAVICON_SVG)))
        .route("/api/login", post(login))
        .merge(api)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such page or API route; the API is /api/search, /api/info, /api/item/ID, \
                 /api/thumb/ID and /api/slide/SLIDE_ID{.dzi,/thumb,/heatmap}",
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
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// An error response: JSON with the status repeated inside.
pub(crate) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": message.into(), "status": status.as_u16()});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub(super) fn json_ok<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Security headers on every response, and the Host checks: one Host header at
/// most, an absolute-form target that agrees with it, and on loopback only
/// loopback names in either (a guard against DNS rebinding).
async fn guard(AxState(app): AxState<App>, req: Request, next: Next) -> Response {
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
async fn require_token(AxState(app): AxState<App>, req: Request, next: Next) -> Response {
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
struct ApiHit {
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
    fn new(snap: &Snapshot, row: printers::PrintedHit, stored_path: &str) -> Self {
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
    let body = match tokio::time::timeout(super::UPLOAD_TIMEOUT, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => return bad(format!("reading the upload: {e}")).into_response(),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the upload did not arrive within {} s",
                    super::UPLOAD_TIMEOUT.as_secs()
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

/// Runs `work` on the blocking pool once `gate` lets it in; its error is the
/// response, and a panic in it (a bug) is a 500 for this request only.
pub(super) async fn on_pool<F>(gate: &Arc<Semaphore>, what: &str, work: F) -> Response
where
    F: FnOnce() -> Result<Response, ApiError> + Send + 'static,
{
    let Ok(_permit) = gate.clone().acquire_owned().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error while {what} (a bug; please report it)"),
        ),
    }
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
        path: crate::source::walk::relative(
            &crate::source::walk::resolve(&snap.root, &entry.path),
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
    let file = crate::source::walk::resolve(&snap.root, path);
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
