//! One search, assembled once: a request (the face's raw inputs), its terms parsed
//! by [`Terms`], the model checked against the index, the query vector built, the
//! index searched (items and tiles, or whole slides), scores rounded as every face
//! prints them, paths made absolute.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::terms::Terms;
use crate::backend::cpu::PrecisionChoice;
use crate::embed::Embedder;
use crate::index::paths;
use crate::index::{Index, IndexHit, Region};
use crate::query::slides::{self, SlideHit};
use crate::query::{filter, QueryTerm};
use crate::vectors::round_score;

/// What a face asks for: `plip search`'s flags, Python's `Index.search` arguments.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    /// The positional query: words, an image file, or `SLIDE@X,Y,W,H`.
    pub query: Option<String>,
    /// An image file or `SLIDE@X,Y,W,H` (`--image`).
    pub image: Option<PathBuf>,
    /// `[W:]TERM` terms added (`--add`).
    pub add: Vec<String>,
    /// `[W:]TERM` terms subtracted (`--subtract`).
    pub subtract: Vec<String>,
    /// Prompt templates for text terms (`--template`), ensembled.
    pub templates: Vec<String>,
    /// Weighted vectors given directly (Python), each normalised.
    pub vectors: Vec<(f32, Vec<f32>)>,
    /// Number of hits (at least 1).
    pub top: usize,
    /// HNSW breadth, for segments whose graph was loaded; `None` is the default.
    pub ef: Option<usize>,
    /// Keep only hits with at least this cosine score.
    pub threshold: Option<f32>,
    /// Keep only items under this folder (relative to the working directory).
    pub under: Option<PathBuf>,
    /// Rank whole slides by their pooled tile scores instead of items.
    pub by_slide: bool,
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            query: None,
            image: None,
            add: Vec::new(),
            subtract: Vec::new(),
            templates: Vec::new(),
            vectors: Vec::new(),
            top: 10,
            ef: None,
            threshold: None,
            under: None,
            by_slide: false,
        }
    }
}

/// One item or slide tile found, with its absolute path.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    /// 1-based rank.
    pub rank: usize,
    /// Cosine similarity, rounded to 6 decimals.
    pub score: f64,
    /// The image or slide file (its bytes as on disk, whatever the encoding).
    pub path: PathBuf,
    /// For a tile of a whole slide: where it is (level-0 pixels), its level and mpp.
    pub region: Option<Region>,
}

/// One whole slide found (`by_slide`), with its absolute path.
#[derive(Clone, Debug, PartialEq)]
pub struct SlideSearchHit {
    /// 1-based rank.
    pub rank: usize,
    /// The slide's score: the mean of its best tile scores, rounded to 6 decimals.
    pub score: f64,
    /// The slide file.
    pub path: PathBuf,
    /// Tiles of the slide that were scored.
    pub tiles: usize,
    /// Its best tiles with their scores (rounded), best first.
    pub best: Vec<(Region, f64)>,
}

/// What a search found.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// Items and slide tiles, best first.
    Items(Vec<SearchHit>),
    /// Whole slides, best first; `any_tiles` says whether the index (under the
    /// filter) holds slide tiles at all.
    Slides {
        slides: Vec<SlideSearchHit>,
        any_tiles: bool,
    },
}

/// A slide and its tiles found: `(region, score, rank)` each.
pub(crate) type SlideTiles = (PathBuf, Vec<(Region, f64, usize)>);

impl Found {
    /// The slide tiles found, grouped by slide in the order of each slide's best
    /// hit: `(slide, [(region, score, rank)])`. For items, the tile hits (whole
    /// images have no region and are left out); for slides, each slide's best tiles,
    /// ranked by the slide's rank then the tile's order.
    pub(crate) fn tiles_by_slide(&self) -> Vec<SlideTiles> {
        let mut out: Vec<SlideTiles> = Vec::new();
        let mut push = |path: &Path, region: Region, score: f64, rank: usize| match out
            .iter_mut()
            .find(|(p, _)| p == path)
        {
            Some((_, tiles)) => tiles.push((region, score, rank)),
            None => out.push((path.to_path_buf(), vec![(region, score, rank)])),
        };
        match self {
            Found::Items(hits) => {
                for h in hits {
                    if let Some(r) = h.region {
                        push(&h.path, r, h.score, h.rank);
                    }
                }
            }
            Found::Slides { slides, .. } => {
                for s in slides {
                    for (i, (r, score)) in s.best.iter().enumerate() {
                        push(&s.path, *r, *score, i + 1);
                    }
                }
            }
        }
        out
    }
}

fn invalid(message: String) -> anyhow::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message).into()
}

impl SearchRequest {
    /// Parses the request's terms (before anything is opened).
    pub fn terms(&self) -> Result<Terms> {
        Terms::parse(
            self.query.as_deref(),
            self.image.as_deref(),
            &self.add,
            &self.subtract,
        )
    }

    /// Checks the numbers a face may pass unchecked: `top`, `threshold`, and the
    /// given vectors against the index's dimension `dim`. Errors are
    /// [`io::ErrorKind::InvalidInput`].
    pub fn validate(&self, dim: usize) -> Result<()> {
        if self.top == 0 {
            return Err(invalid("top must be at least 1".into()));
        }
        if let Some(t) = self.threshold {
            if !t.is_finite() || !(-1.0..=1.0).contains(&t) {
                return Err(invalid(format!(
                    "threshold {t} is not a cosine score between -1 and 1"
                )));
            }
        }
        for (w, v) in &self.vectors {
            if v.len() != dim {
                return Err(invalid(format!(
                    "the query vector has {} values; this index holds {dim}-d vectors",
                    v.len()
                )));
            }
            if !w.is_finite() || v.iter().any(|x| !x.is_finite()) {
                return Err(invalid("the query vector holds NaN or infinity".into()));
            }
        }
        Ok(())
    }
}

/// Opens the index at `dir` and loads the model `source` with the towers `terms`
/// need, at the same time (on a cold start each takes a few hundred milliseconds at
/// 100k images). A missing or unreadable index is reported before any model is
/// loaded. `graphs` loads the HNSW graphs (for `ef`).
pub(crate) fn open(
    dir: &Path,
    source: &str,
    precision: PrecisionChoice,
    terms: &Terms,
    graphs: bool,
) -> Result<(Index, Embedder)> {
    crate::index::recorded_model(dir)?;
    let (index, embedder) = std::thread::scope(|s| {
        let index = s.spawn(|| {
            if graphs {
                Index::open_with_graphs(dir)
            } else {
                Index::open(dir)
            }
        });
        let embedder = super::model::load(source, terms.towers(), precision);
        (index.join().expect("index thread panicked"), embedder)
    });
    Ok((index?, embedder?))
}

/// The query vector of `terms` (through `templates`) plus the weighted `vectors`,
/// each normalised, summed with its weight and normalised again.
pub(crate) fn query_vector(
    embedder: Option<&Embedder>,
    terms: &[QueryTerm],
    templates: &[String],
    vectors: &[(f32, Vec<f32>)],
) -> Result<Vec<f32>> {
    if terms.is_empty() {
        if vectors.is_empty() {
            anyhow::bail!("the query is empty: give words, an image or a vector");
        }
        return Ok(crate::vectors::combine(vectors)?);
    }
    let embedder = embedder.context("internal error: no model to embed the query terms")?;
    if vectors.is_empty() {
        return crate::query::build_query(embedder, terms, templates);
    }
    let mut parts = vectors.to_vec();
    for t in terms {
        let unit = QueryTerm {
            weight: 1.0,
            kind: t.kind.clone(),
        };
        parts.push((
            t.weight,
            crate::query::build_query(embedder, &[unit], templates)?,
        ));
    }
    Ok(crate::vectors::combine(&parts)?)
}

/// Runs `req` (with its parsed `terms`) over `index`. `embedder` embeds the terms
/// and must be the index's model; it may be `None` when there are only vectors.
/// `cwd` anchors a relative `under`.
pub(crate) fn run(
    index: &Index,
    embedder: Option<&Embedder>,
    terms: &Terms,
    req: &SearchRequest,
    cwd: &Path,
) -> Result<Found> {
    req.validate(index.model().dim)?;
    if index.is_empty() {
        anyhow::bail!(
            "the index at {} is empty; run `plip index DIR` on a folder with images",
            index.dir().display()
        );
    }
    if let Some(e) = embedder {
        super::model::check(index, e)?;
    }
    let query = query_vector(embedder, &terms.terms, &req.templates, &req.vectors)?;
    let root = index.root();
    let prefix = req.under.as_ref().map(|u| {
        let abs = cwd.join(u);
        let abs = abs.canonicalize().unwrap_or(abs);
        paths::relative(&abs, &root)
    });
    if req.by_slide {
        let allow = |p: &str| filter::under(prefix.as_deref(), p);
        let (found, any_tiles) = slides::by_slide(index, &query, &allow, req.threshold, req.top);
        let slides = slide_hits(found, &root);
        return Ok(Found::Slides { slides, any_tiles });
    }
    let ef = req.ef.unwrap_or(crate::index::ann::DEFAULT_EF_SEARCH);
    let hits =
        filter::search_filtered(index, &query, req.top, ef, prefix.as_deref(), req.threshold);
    Ok(Found::Items(item_hits(hits, &root)))
}

/// Ranked index hits as a face gives them: 1-based ranks, rounded scores, paths
/// resolved against the index `root`.
pub(crate) fn item_hits(hits: Vec<IndexHit>, root: &Path) -> Vec<SearchHit> {
    hits.into_iter()
        .enumerate()
        .map(|(i, h)| SearchHit {
            rank: i + 1,
            score: round_score(h.score),
            path: paths::resolve(root, &h.path),
            region: h.region,
        })
        .collect()
}

/// Ranked slides as a face gives them (as [`item_hits`]).
pub(crate) fn slide_hits(slides: Vec<SlideHit>, root: &Path) -> Vec<SlideSearchHit> {
    slides
        .into_iter()
        .enumerate()
        .map(|(i, s)| SlideSearchHit {
            rank: i + 1,
            score: round_score(s.score),
            path: paths::resolve(root, &s.path),
            tiles: s.tiles,
            best: s
                .best
                .into_iter()
                .map(|(r, sc)| (r, round_score(sc)))
                .collect(),
        })
        .collect()
}
