//! "More slides like this": `/api/slide/{slide_id}/like?top=N&score=mean|bag`, the
//! viewed slide (or `region=X,Y,W,H` of it) as the query (issue 32), answered by
//! [`crate::app::slides_like`] as `plip search --image SLIDE[@X,Y,W,H] --json` answers it.
//!
//! The work is bounded: the query is a slide the snapshot holds tiles of (its id says
//! so), so its stored tiles are used and nothing is embedded or read from a slide
//! file ([`QueryModel::StoredOnly`]: a region no stored tile's centre lies in is a
//! 422, not embedded); the scores are dot products over the mapped
//! vectors, with one list of tile references per request (about 70 bytes a tile of
//! the index), and at most [`LIKE_IN_FLIGHT`](super::app::LIKE_IN_FLIGHT) of these
//! run at once, so a burst of clicks queues instead of multiplying that memory. `top`
//! is at most [`MAX_LIKE`].
//! Each slide carries the CLI's JSON fields (matched tile pairs included), then
//! what the viewer needs to open it.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::app::{bad, json_ok, on_pool, ApiError, App};
use super::search::SlideRef;
use super::slides::slide_path;
use crate::app::slides_like::{self, QueryModel, SlideQuery};
use crate::index::paths;
use crate::output::slide_matches::{self, PrintedSlideMatch};
use crate::query::slide_match::SlideScore;

/// Most slides one request may ask for.
pub(crate) const MAX_LIKE: usize = 100;
/// Beyond any slide's level-0 size (2^40 px a side), so a region's sums never overflow.
const MAX_PIXELS: u64 = 1 << 40;

/// `/api/slide/{slide_id}/like` (behind the token check).
pub(super) fn routes() -> Router<App> {
    Router::new().route("/api/slide/{slide}/like", get(like))
}

/// The checked query string of `/like`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LikeParams {
    pub(crate) top: usize,
    /// `None`: the default for a whole slide ([`SlideScore::default_for`]).
    pub(crate) score: Option<SlideScore>,
    pub(crate) include_self: bool,
    /// A level-0 region `x, y, w, h` of the slide as the query (its stored tiles
    /// whose centre lies inside), or the whole slide.
    pub(crate) region: Option<[u64; 4]>,
}

/// Parses `/like`'s query string (without the `?`); never touches a file.
pub(crate) fn parse(query: &str) -> Result<LikeParams, String> {
    let mut p = LikeParams {
        top: 10,
        score: None,
        include_self: false,
        region: None,
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value: Cow<str> = value;
        let short: String = value.chars().take(40).collect();
        match key.as_ref() {
            "top" | "k" => {
                p.top = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIKE).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "`{key}` must be a whole number from 1 to {MAX_LIKE}, not {short:?}"
                        )
                    })?;
            }
            "score" => {
                p.score = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| format!("`score` is mean or bag, not {short:?}"))?,
                );
            }
            "include_self" => {
                p.include_self = match value.trim() {
                    "" | "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(format!("`include_self` is 1 or 0, not {short:?}")),
                };
            }
            "region" => {
                let n: Vec<Option<u64>> = value.split(',').map(|v| v.trim().parse().ok()).collect();
                p.region = match n[..] {
                    [Some(x), Some(y), Some(w), Some(h)]
                        if w > 0 && h > 0 && x.max(y).max(w).max(h) < MAX_PIXELS =>
                    {
                        Some([x, y, w, h])
                    }
                    _ => {
                        return Err(format!(
                        "`region` is X,Y,W,H in level-0 pixels (W and H at least 1), not {short:?}"
                    ))
                    }
                };
            }
            "_" => {}
            other => {
                let other: String = other.chars().take(40).collect();
                return Err(format!(
                    "unknown parameter `{other}`; known: top, score, include_self, region"
                ));
            }
        }
    }
    Ok(p)
}

/// The query slide, as the answer names it.
#[derive(Serialize)]
struct QuerySlide {
    /// Path relative to the server's current directory.
    path: String,
    #[serde(flatten)]
    slide: SlideRef,
    /// Its tiles that were compared (stored in the index).
    tiles: usize,
}

/// One slide found: `plip search --image SLIDE --json`'s fields, then the server's own.
#[derive(Serialize)]
struct LikeSlide {
    #[serde(flatten)]
    row: PrintedSlideMatch,
    #[serde(flatten)]
    slide: SlideRef,
    /// URL of its thumbnail.
    thumb: String,
}

/// The answer of `/like`.
#[derive(Serialize)]
struct LikeAnswer {
    query: QuerySlide,
    /// `mean` or `bag`.
    score: &'static str,
    /// The tiles of the query's mosaic, when `bag` scored a big query by one.
    mosaic: Option<usize>,
    /// Slides left out (the query itself unless `include_self`).
    excluded: usize,
    slides: Vec<LikeSlide>,
    generation: u64,
    took_ms: f64,
}

async fn like(
    AxState(app): AxState<App>,
    slide: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path(raw)) = slide else {
        return ApiError(StatusCode::NOT_FOUND, "no such slide route".into()).into_response();
    };
    let p = match parse(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(m) => return bad(m).into_response(),
    };
    let state = app.state.clone();
    on_pool(&app.like_gate, "finding slides like a slide", move || {
        let started = Instant::now();
        let snap = state.snapshot();
        let stored = slide_path(&snap, &raw, "")?;
        let q = SlideQuery {
            slide: paths::resolve(&snap.root, &stored),
            region: p.region,
            score: p
                .score
                .unwrap_or(SlideScore::default_for(p.region.is_some())),
            top: p.top,
            include_self: p.include_self,
            group_by: None,
            under: None,
            threshold: None,
            // The served index's graphs are used for big indexes (see run_on).
            ef: None,
        };
        let found = slides_like::run_on(&snap.index, QueryModel::StoredOnly, &q, &state.cwd)
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
        let rows = slide_matches::printable(&found, &state.cwd);
        let slides = rows
            .into_iter()
            .zip(&found.slides)
            .map(|(row, s)| {
                let slide = SlideRef::of(&snap, &paths::relative(&s.path, &snap.root));
                LikeSlide {
                    thumb: format!("/api/slide/{}/thumb", slide.slide_id),
                    row,
                    slide,
                }
            })
            .collect();
        let query_path = paths::resolve(&snap.root, &stored);
        Ok(json_ok(&LikeAnswer {
            query: QuerySlide {
                path: paths::display(&paths::relative(&query_path, &state.cwd)),
                slide: SlideRef::of(&snap, &stored),
                tiles: found.query_tiles,
            },
            score: found.score.name(),
            mosaic: found.mosaic,
            excluded: found.excluded.len(),
            slides,
            generation: snap.generation,
            took_ms: (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
        }))
    })
    .await
}
