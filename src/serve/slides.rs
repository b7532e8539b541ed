//! The slide viewer's routes: a slide's Deep Zoom descriptor and tiles
//! (`/api/slide/{slide_id}.dzi`, `/api/slide/{slide_id}_files/{L}/{col}_{row}.jpeg`),
//! its thumbnail (`/api/slide/{slide_id}/thumb`) and the query's heatmap over its
//! tiles (`/api/slide/{slide_id}/heatmap?q=...`).
//!
//! A slide id is the hash of a stored slide path ([`ItemId::of_slide`]) looked up
//! in the snapshot, so only slides the index holds tiles of can be reached. Every
//! part of the URL is parsed and bounds-checked before any file is touched: an
//! unknown id, a bad level, column or row is a 404 JSON error, never a panic.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::app::{bad, json_ok, on_pool, ApiError, App};
use super::ids::ItemId;
use super::search::{self, SlideRef};
use super::snapshot::Snapshot;
use super::thumbs::{self, ThumbOf};
use super::{dzi, items, params};

type PathArgs<T> = Result<Path<T>, axum::extract::rejection::PathRejection>;

/// The slide routes (behind the token check, like all of `/api/`).
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/slide/{slide}", get(descriptor))
        .route("/api/slide/{slide}/thumb", get(thumb))
        .route("/api/slide/{slide}/heatmap", get(heatmap))
        .route("/api/slide/{slide}/{level}/{tile}", get(tile))
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.into())
}

/// The stored path of the slide a one-part route names, or the 404 to answer.
fn named_slide(snap: &Snapshot, slide: PathArgs<String>, suffix: &str) -> Result<String, ApiError> {
    let Ok(Path(raw)) = slide else {
        return Err(not_found("no such slide route"));
    };
    slide_path(snap, &raw, suffix)
}

/// The stored path of the slide `raw` names (16 hex digits, then `suffix`).
pub(super) fn slide_path(snap: &Snapshot, raw: &str, suffix: &str) -> Result<String, ApiError> {
    let id = raw
        .strip_suffix(suffix)
        .and_then(ItemId::parse)
        .ok_or_else(|| {
            not_found(format!(
                "a slide URL is /api/slide/SLIDE_ID{suffix} with the 16 hex digits of a hit's \
                 `slide_id`"
            ))
        })?;
    snap.slide(id)
        .map(str::to_string)
        .ok_or_else(|| not_found(format!("no slide {id} in the index")))
}

async fn descriptor(AxState(app): AxState<App>, slide: PathArgs<String>) -> Response {
    let snap = app.state.snapshot();
    let path = match named_slide(&snap, slide, ".dzi") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let r = SlideRef::of(&snap, &path);
    if r.slide_width == 0 || r.slide_height == 0 {
        return not_found("the index records no size for this slide; index it again")
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        dzi::descriptor(r.slide_width, r.slide_height),
    )
        .into_response()
}

/// `{col}_{row}.jpeg` -> (col, row).
fn parse_tile(s: &str) -> Option<(u64, u64)> {
    let (c, r) = s.strip_suffix(".jpeg")?.split_once('_')?;
    let num = |t: &str| {
        (!t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    Some((num(c)?, num(r)?))
}

async fn tile(
    AxState(app): AxState<App>,
    args: PathArgs<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((raw, level, tile))) = args else {
        return not_found("no such slide route").into_response();
    };
    let snap = app.state.snapshot();
    let path = match slide_path(&snap, &raw, "_files") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (Some(level), Some((col, row))) = (
        level
            .parse::<usize>()
            .ok()
            .filter(|_| level.len() <= 3 && level.bytes().all(|b| b.is_ascii_digit())),
        parse_tile(&tile),
    ) else {
        return not_found("a Deep Zoom tile URL ends in LEVEL/COL_ROW.jpeg (whole numbers)")
            .into_response();
    };
    let file = crate::index::paths::resolve(&snap.root, &path);
    let etag = format!("\"{raw}-{level}-{col}-{row}-{}\"", snap.generation);
    let state = app.state.clone();
    on_pool(&app.thumb_gate, "making a Deep Zoom tile", move || {
        let open = state
            .slides
            .get(&file)
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, format!("cannot open the slide: {e}")))?;
        let img = dzi::render(&open.slide, &open.overview, &dzi::BUDGET, level, col, row)
            .map_err(|e| match e {
                dzi::TileError::TooLarge { .. } => {
                    ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                }
                dzi::TileError::Slide(e) => {
                    ApiError(StatusCode::NOT_FOUND, format!("cannot read the tile: {e}"))
                }
            })?
            .ok_or_else(|| {
                ApiError(
                    StatusCode::NOT_FOUND,
                    format!("no Deep Zoom tile {level}/{col}_{row} in this slide"),
                )
            })?;
        let jpeg = thumbs::encode_jpeg(&img).map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the tile: {e}"),
            )
        })?;
        Ok(items::jpeg_response(Bytes::from(jpeg), etag, &headers))
    })
    .await
}

async fn thumb(
    AxState(app): AxState<App>,
    slide: PathArgs<String>,
    headers: HeaderMap,
) -> Response {
    let snap = app.state.snapshot();
    let path = match named_slide(&snap, slide, "") {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    items::send_thumb(&app, &snap, &path, ThumbOf::Slide, headers).await
}

/// One tile in a heatmap.
#[derive(Serialize)]
struct HeatTile {
    x: u64,
    y: u64,
    w: u64,
    h: u64,
    /// Cosine to the query, rounded to 6 decimals as `plip search` prints it.
    score: f64,
    /// Item id of the tile.
    id: String,
}

/// The answer of `/api/slide/{slide_id}/heatmap`.
#[derive(Serialize)]
struct Heatmap {
    #[serde(flatten)]
    slide: SlideRef,
    /// Every live tile of the slide, in index order.
    tiles: Vec<HeatTile>,
    /// Lowest and highest score (the ends of the colour map).
    min: f64,
    max: f64,
}

/// Every indexed tile of the slide with its cosine to the query (the parameters
/// of `/api/search`), from the stored embeddings.
async fn heatmap(
    AxState(app): AxState<App>,
    slide: PathArgs<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path(raw)) = slide else {
        return not_found("no such slide route").into_response();
    };
    let p = match params::parse(query.as_deref().unwrap_or(""), 10) {
        Ok(p) => p,
        Err(m) => return bad(m).into_response(),
    };
    if p.terms.is_empty() {
        return bad("the query is empty: give q=WORDS, like=ID or add=WORDS").into_response();
    }
    let state = app.state.clone();
    on_pool(&app.search_gate, "scoring a slide's tiles", move || {
        let snap = state.snapshot();
        let path = slide_path(&snap, &raw, "").map_err(|_| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no slide {raw:?} in the index"),
            )
        })?;
        let query = search::query_vector(&state, &snap, &p, None)?;
        let tiles: Vec<HeatTile> = snap
            .tiles_of(&path)
            .map(|(r, v)| HeatTile {
                x: r.x,
                y: r.y,
                w: r.w,
                h: r.h,
                score: crate::vectors::round_score(crate::vectors::dot(v, &query)),
                id: ItemId::of(&path, Some(&r)).to_string(),
            })
            .collect();
        let min = tiles.iter().map(|t| t.score).fold(f64::INFINITY, f64::min);
        let max = tiles
            .iter()
            .map(|t| t.score)
            .fold(f64::NEG_INFINITY, f64::max);
        Ok(json_ok(&Heatmap {
            slide: SlideRef::of(&snap, &path),
            min: if min.is_finite() { min } else { 0.0 },
            max: if max.is_finite() { max } else { 0.0 },
            tiles,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::parse_tile;

    #[test]
    fn tile_names_are_two_whole_numbers_and_nothing_else() {
        assert_eq!(parse_tile("3_4.jpeg"), Some((3, 4)));
        for bad in [
            "3_4.jpg",
            "3-4.jpeg",
            "_4.jpeg",
            "3_.jpeg",
            "-1_2.jpeg",
            "1_2_3.jpeg",
            "99999999999999999999_1.jpeg",
            "../x.jpeg",
        ] {
            assert_eq!(parse_tile(bad), None, "{bad}");
        }
    }
}
