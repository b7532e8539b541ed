//! Slides as queries (issue 32): "find the slides like this slide", decided once for
//! every face.
//!
//! `plip search --image SLIDE` (or `SLIDE@X,Y,W,H` with a slide flag) ranks the
//! index's other slides by [`SlideScore`] against the query's tiles. The query's tiles
//! are its stored tiles when the slide is indexed, else it is tiled and embedded now
//! with the index's own tiling (and the index's tissue mask folder), as `plip index`
//! would; a region keeps the tiles whose centre lies inside it (or, when none does,
//! is embedded as one tile, as a region term is). The query slide is left out unless
//! `include_self`, and with `group_by` (a `slide,patient` CSV) so is every other slide
//! of the same patient. Each ranked slide comes with its best matching tile pairs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::search::SearchRequest;
use super::slide_names::{read_groups, SlideNames};
use crate::backend::cpu::PrecisionChoice;
use crate::embed::Embedder;
use crate::index::{paths, Index, Region};
use crate::model::Towers;
use crate::query::filter;
use crate::query::slide_match::{self, SlideScore, TileBag};
use crate::query::slides::parse_region;
use crate::vectors::round_score;

/// A `bag` query with more tiles than this is scored by its mosaic
/// ([`crate::query::mosaic`]).
pub(crate) const MOSAIC_FROM: usize = 100;
/// The mosaic's share of the query's tiles (Yottixel: 5-10 %), and its cap.
pub(crate) const MOSAIC_FRACTION: f64 = 0.05;
pub(crate) const MOSAIC_CAP: usize = 250;

/// Matched tile pairs reported per slide.
pub(crate) const MATCHES: usize = 5;

/// The slide flags of a search: `--slide-score`, `--include-self`, `--group-by`.
#[derive(Clone, Debug, Default)]
pub(crate) struct SlideOptions {
    /// How slides are compared; `None` is the default ([`SlideScore::default_for`]).
    pub(crate) score: Option<SlideScore>,
    /// Keep the query slide in the ranking.
    pub(crate) include_self: bool,
    /// A `slide,patient` CSV: slides of the query's patient are left out.
    pub(crate) group_by: Option<PathBuf>,
}

impl SlideOptions {
    fn any(&self) -> bool {
        self.score.is_some() || self.include_self || self.group_by.is_some()
    }
}

/// A slide (or a region of one) as the query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SlideQuery {
    /// The slide file.
    pub(crate) slide: PathBuf,
    /// A level-0 region `x, y, w, h` of it, or the whole slide.
    pub(crate) region: Option<[u64; 4]>,
    /// How slides are compared.
    pub(crate) score: SlideScore,
    /// Slides returned.
    pub(crate) top: usize,
    /// Keep the query slide in the ranking.
    pub(crate) include_self: bool,
    /// A `slide,patient` CSV.
    pub(crate) group_by: Option<PathBuf>,
    /// Only slides under this folder (relative to the working directory).
    pub(crate) under: Option<PathBuf>,
    /// Only slides scoring at least this.
    pub(crate) threshold: Option<f32>,
    /// HNSW breadth: a `bag` query given it searches the graphs
    /// ([`super::slides_graph`]).
    pub(crate) ef: Option<usize>,
}

impl SlideQuery {
    /// Whether `req` (with the slide flags `opts`) asks for slides like a slide:
    /// `--image` names a whole slide, or a region with a slide flag given. Flags that
    /// make no sense with it are refused here, before anything is opened.
    pub(crate) fn from_search(
        req: &SearchRequest,
        opts: &SlideOptions,
    ) -> Result<Option<SlideQuery>> {
        Self::build(req, opts, opts.any())
    }

    /// A face that asks for a slide query by name (Python's `search_slides`): `image`
    /// is a slide query even without a slide flag (a region too), or an error.
    pub(crate) fn explicit(req: &SearchRequest, opts: &SlideOptions) -> Result<SlideQuery> {
        Self::build(req, opts, true)?.context("the query must be a whole slide or SLIDE@X,Y,W,H")
    }

    /// `slide_flags`: whether the request is a slide query if `image` can be one.
    fn build(
        req: &SearchRequest,
        opts: &SlideOptions,
        slide_flags: bool,
    ) -> Result<Option<SlideQuery>> {
        let flags = "--slide-score, --include-self and --group-by";
        let Some(image) = &req.image else {
            if slide_flags {
                bail!(
                    "{flags} rank slides like a slide: give --image SLIDE or --image SLIDE@X,Y,W,H"
                );
            }
            return Ok(None);
        };
        let (slide, region) = match parse_region(&image.to_string_lossy())? {
            Some((p, r)) if slide_flags => (p, Some(r)),
            // A region without slide flags stays a tile query, as it always was.
            Some(_) => return Ok(None),
            None if crate::source::slide::is_slide(image) && image.is_file() => {
                (image.clone(), None)
            }
            None if slide_flags && !image.exists() => bail!(
                "--image {}: no such file (a slide query takes a whole-slide file or SLIDE@X,Y,W,H)",
                image.display()
            ),
            None if slide_flags => bail!(
                "--image {}: {flags} need a whole slide (.svs, pyramidal TIFF, ...) or \
                 SLIDE@X,Y,W,H, and this is not one",
                image.display()
            ),
            None => return Ok(None),
        };
        let mixed = [
            (req.query.is_some(), "a positional query"),
            (!req.add.is_empty(), "--add"),
            (!req.subtract.is_empty(), "--subtract"),
            (!req.templates.is_empty(), "--template"),
            (!req.vectors.is_empty(), "query vectors"),
            (
                req.by_slide,
                "--by-slide (a slide query always ranks slides)",
            ),
        ];
        if let Some((_, what)) = mixed.iter().find(|m| m.0) {
            bail!(
                "--image {} is a slide query, which takes no {what}; \
                 search with the slide alone",
                image.display()
            );
        }
        if let Some(g) = &opts.group_by {
            if !g.is_file() {
                bail!(
                    "--group-by {}: no such file (give a CSV with a header `slide,patient`)",
                    g.display()
                );
            }
        }
        if req.top == 0 {
            bail!("top must be at least 1");
        }
        Ok(Some(SlideQuery {
            slide,
            region,
            score: opts
                .score
                .unwrap_or(SlideScore::default_for(region.is_some())),
            top: req.top,
            include_self: opts.include_self,
            group_by: opts.group_by.clone(),
            under: req.under.clone(),
            threshold: req.threshold,
            ef: req.ef,
        }))
    }
}

/// A tile of the query matched with a tile of a found slide.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TileMatch {
    /// The query's tile (level-0 pixels of the query slide).
    pub(crate) query: Region,
    /// The found slide's tile.
    pub(crate) found: Region,
    /// Their cosine, rounded.
    pub(crate) score: f64,
}

/// One slide found like the query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SlideMatch {
    /// 1-based rank.
    pub(crate) rank: usize,
    /// The slide's score by the chosen [`SlideScore`], rounded.
    pub(crate) score: f64,
    /// The slide file.
    pub(crate) path: PathBuf,
    /// Its tiles in the index.
    pub(crate) tiles: usize,
    /// Its best matching tile pairs, best first (at most [`MATCHES`]).
    pub(crate) matches: Vec<TileMatch>,
}

/// What a slide query found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SlideMatches {
    /// The query's tiles that were compared.
    pub(crate) query_tiles: usize,
    /// Whether they were embedded now (the slide is not in the index).
    pub(crate) embedded_now: bool,
    /// The score used.
    pub(crate) score: SlideScore,
    /// The tiles of the query's mosaic, when `bag` scored a big query by one.
    pub(crate) mosaic: Option<usize>,
    /// The candidate slides the HNSW graphs gave, when `bag` took the graph route.
    pub(crate) candidates: Option<usize>,
    /// Slides left out: the query itself, and its patient's slides.
    pub(crate) excluded: Vec<PathBuf>,
    /// Slides the `group_by` CSV names that the index does not hold.
    pub(crate) unknown_in_groups: Vec<String>,
    /// Slides found, best first.
    pub(crate) slides: Vec<SlideMatch>,
}

/// Every slide of `index` whose stored path `allow` accepts: paths sorted, each with
/// its tiles' regions and rows (borrowed from the mapped index).
pub(crate) struct IndexedSlides<'a> {
    pub(crate) paths: Vec<String>,
    pub(crate) regions: Vec<Vec<Region>>,
    pub(crate) bags: Vec<TileBag<'a>>,
}

impl<'a> IndexedSlides<'a> {
    pub(crate) fn collect(index: &'a Index, allow: &dyn Fn(&str) -> bool) -> Self {
        Self::collect_with(index, allow, true)
    }

    /// [`IndexedSlides::collect`], computing the slides' means (for `mean`, in
    /// parallel) only when `means`; a `bag` query leaves them `None`.
    pub(crate) fn collect_with(
        index: &'a Index,
        allow: &dyn Fn(&str) -> bool,
        means: bool,
    ) -> Self {
        type Slot<'a> = (Vec<Region>, Vec<&'a [f32]>);
        let mut by: BTreeMap<&'a str, Slot<'a>> = BTreeMap::new();
        // A slide's tiles are consecutive rows: they are gathered a run at a time, so
        // that a big index costs one path comparison per row, not a map lookup.
        let mut run: Option<(&'a str, Slot<'a>)> = None;
        let mut flush = |run: Option<(&'a str, Slot<'a>)>| {
            if let Some((p, (r, v))) = run {
                let slot = by.entry(p).or_default();
                slot.0.extend(r);
                slot.1.extend(v);
            }
        };
        for (e, v) in index.iter() {
            let Some(r) = e.region else { continue };
            if let Some((_, slot)) = run.as_mut().filter(|(p, _)| *p == e.path.as_str()) {
                slot.0.push(r);
                slot.1.push(v);
            } else if allow(&e.path) {
                flush(run.replace((e.path.as_str(), (vec![r], vec![v]))));
            }
        }
        flush(run);
        let mut out = IndexedSlides {
            paths: Vec::with_capacity(by.len()),
            regions: Vec::with_capacity(by.len()),
            bags: Vec::with_capacity(by.len()),
        };
        for (p, (regions, rows)) in by {
            out.paths.push(p.to_string());
            out.regions.push(regions);
            out.bags.push(TileBag { rows, mean: None });
        }
        if means {
            use rayon::prelude::*;
            out.bags
                .par_iter_mut()
                .for_each(|b| b.mean = slide_match::mean_unit(&b.rows));
        }
        out
    }

    /// The position of the slide stored as `path`.
    pub(crate) fn find(&self, path: &str) -> Option<usize> {
        self.paths.binary_search_by(|p| p.as_str().cmp(path)).ok()
    }
}

/// The query's tiles: regions and owned unit rows.
type QueryTiles = (Vec<Region>, Vec<Vec<f32>>);

/// How the query's tiles are embedded when the index holds none of them.
#[derive(Clone, Copy)]
pub(crate) enum QueryModel<'a> {
    /// Load the model `source` in `precision`, only when it is needed.
    Load(&'a str, PrecisionChoice),
    /// This model, already loaded (checked against the index before use).
    Loaded(&'a Embedder),
    /// Never embed: a query slide without stored tiles is refused. For a server,
    /// whose requests must stay bounded (embedding a whole slide is minutes of work).
    StoredOnly,
}

/// Runs `q` over the index at `dir`, loading the model `source` only when the query's
/// tiles must be embedded now. `cwd` anchors `under`.
pub(crate) fn run(
    dir: &Path,
    source: &str,
    precision: PrecisionChoice,
    q: &SlideQuery,
    cwd: &Path,
) -> Result<SlideMatches> {
    let (index, _) = super::slides_graph::open(dir, q.score, q.ef)?;
    run_on(&index, QueryModel::Load(source, precision), q, cwd)
}

/// Runs `q` over an opened `index` (a face that keeps one open: Python, the server),
/// embedding the query's tiles with `model` only when the index has none of them.
/// A `bag` query takes the graph route ([`super::slides_graph`]) when the index was
/// opened with its graphs and the query wants them (`ef`, or a big index).
pub(crate) fn run_on(
    index: &Index,
    model: QueryModel,
    q: &SlideQuery,
    cwd: &Path,
) -> Result<SlideMatches> {
    let dir = index.dir();
    let graphs = q.score == SlideScore::Bag
        && (q.ef.is_some() || index.len() >= super::slides_graph::GRAPH_FROM_ROWS)
        && super::slides_graph::has_graphs(index);
    if index.is_empty() {
        bail!(
            "the index at {} is empty; run `plip index DIR` on a folder with slides",
            dir.display()
        );
    }
    let root = index.root();
    let all = IndexedSlides::collect_with(index, &|_| true, q.score == SlideScore::Mean);
    if all.paths.is_empty() {
        bail!(
            "the index at {} holds no slide tiles; index whole slides first (`plip index DIR`)",
            dir.display()
        );
    }
    let (abs, stored) = query_path(&all, &root, &cwd.join(&q.slide));
    let (regions, rows, embedded_now) = match all.find(&stored) {
        Some(i) => {
            let (r, v) = region_tiles(&all.regions[i], &all.bags[i].rows, q.region);
            if r.is_empty() {
                let (r, v) = embed_query(index, model, &abs, q.region)?;
                (r, v, true)
            } else {
                (r, v, false)
            }
        }
        None => {
            let (r, v) = embed_query(index, model, &abs, q.region)?;
            (r, v, true)
        }
    };
    let query_tiles = regions.len();
    let (regions, rows, mosaic) = query_mosaic(regions, rows, q.score);
    let query = TileBag::new(rows.iter().map(Vec::as_slice).collect());
    let mut excluded: Vec<String> = Vec::new();
    let mut unknown_in_groups = Vec::new();
    if !q.include_self {
        excluded.push(stored.clone());
    }
    if let Some(csv) = &q.group_by {
        let names = SlideNames::new(&root, all.paths.iter().map(String::as_str));
        let (groups, unknown) = read_groups(&cwd.join(csv), &names)?;
        unknown_in_groups = unknown;
        if let Some(patient) = groups.get(&stored) {
            for (p, g) in &groups {
                if g == patient && (*p != stored || !q.include_self) {
                    excluded.push(p.clone());
                }
            }
        }
    }
    excluded.sort();
    excluded.dedup();
    let prefix = q.under.as_ref().map(|u| {
        let abs = cwd.join(u);
        let abs = abs.canonicalize().unwrap_or(abs);
        paths::relative(&abs, &root)
    });
    let cands: Vec<usize> = (0..all.paths.len())
        .filter(|&i| {
            let p = &all.paths[i];
            filter::under(prefix.as_deref(), p) && excluded.binary_search(p).is_err()
        })
        .collect();
    // The graph route narrows the candidates to those its searches found.
    let candidates = graphs.then(|| {
        let found = super::slides_graph::candidates(index, &query.rows, &all, &cands, q.top, q.ef);
        found.into_iter().map(|c| cands[c]).collect::<Vec<usize>>()
    });
    let cands = candidates.clone().unwrap_or(cands);
    let ranked = score_and_rank(&query, &all, &cands, q);
    let slides = ranked
        .iter()
        .enumerate()
        .map(|(k, &(c, score))| {
            let i = cands[c];
            let matches = slide_match::top_pairs(&query.rows, &all.bags[i].rows, MATCHES)
                .into_iter()
                .map(|(qi, ci, s)| TileMatch {
                    query: regions[qi],
                    found: all.regions[i][ci],
                    score: round_score(s),
                })
                .collect();
            SlideMatch {
                rank: k + 1,
                score: round_score(score),
                path: paths::resolve(&root, &all.paths[i]),
                tiles: all.regions[i].len(),
                matches,
            }
        })
        .collect();
    Ok(SlideMatches {
        query_tiles,
        embedded_now,
        score: q.score,
        mosaic,
        candidates: candidates.map(|c| c.len()),
        unknown_in_groups,
        excluded: excluded
            .iter()
            .filter(|p| all.find(p).is_some())
            .map(|p| paths::resolve(&root, p))
            .collect(),
        slides,
    })
}

/// The query slide's canonical path, and its path as the index stores it. The path as
/// given names the stored slide too when the index's folder is reached through a
/// symlink, which canonicalizing resolves away from `root`.
fn query_path(all: &IndexedSlides, root: &Path, given: &Path) -> (PathBuf, String) {
    let abs = given.canonicalize().unwrap_or_else(|_| given.to_path_buf());
    let stored = [given, &abs]
        .into_iter()
        .map(|p| paths::relative(p, root))
        .find(|s| all.find(s).is_some())
        .unwrap_or_else(|| paths::relative(&abs, root));
    (abs, stored)
}

/// The slides `cands` (positions in `all`) that `q` keeps, best first, as
/// `(position in cands, score)`: scored, above the threshold, the top.
fn score_and_rank(
    query: &TileBag,
    all: &IndexedSlides,
    cands: &[usize],
    q: &SlideQuery,
) -> Vec<(usize, f32)> {
    let bags: Vec<&TileBag> = cands.iter().map(|&i| &all.bags[i]).collect();
    let scores = slide_match::score_all(query, &bags, q.score);
    let mut ranked = slide_match::rank(&scores);
    if let Some(t) = q.threshold {
        ranked.retain(|r| r.1 >= t);
    }
    ranked.truncate(q.top);
    ranked
}

/// The query's tiles as `how` scores them: a `bag` query of more than
/// [`MOSAIC_FROM`] tiles by its mosaic (and its size), else all of them.
fn query_mosaic(
    regions: Vec<Region>,
    rows: Vec<Vec<f32>>,
    how: SlideScore,
) -> (Vec<Region>, Vec<Vec<f32>>, Option<usize>) {
    if how != SlideScore::Bag || rows.len() <= MOSAIC_FROM {
        return (regions, rows, None);
    }
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let picked = crate::query::mosaic::mosaic(&regions, &refs, MOSAIC_FRACTION, MOSAIC_CAP);
    let n = picked.len();
    let r = picked.iter().map(|&i| regions[i]).collect();
    let v = picked.iter().map(|&i| rows[i].clone()).collect();
    (r, v, Some(n))
}

/// The tiles (of `regions`, `rows`) whose centre lies in `region`; all of them
/// without one.
fn region_tiles(regions: &[Region], rows: &[&[f32]], region: Option<[u64; 4]>) -> QueryTiles {
    regions
        .iter()
        .zip(rows)
        .filter(|(r, _)| region.is_none_or(|q| centre_inside(r, q)))
        .map(|(r, v)| (*r, v.to_vec()))
        .unzip()
}

fn centre_inside(r: &Region, [x, y, w, h]: [u64; 4]) -> bool {
    let (cx, cy) = (r.x + r.w / 2, r.y + r.h / 2);
    cx >= x && cx < x + w && cy >= y && cy < y + h
}

/// Tiles the query slide with the index's tiling and embeds them now (model checked
/// against the index); a region no tile centre falls in is embedded as one tile.
fn embed_query(
    index: &Index,
    model: QueryModel,
    slide: &Path,
    region: Option<[u64; 4]>,
) -> Result<QueryTiles> {
    let Some(tiling) = index.tiling() else {
        bail!("the index records no slide tiling; index whole slides first (`plip index DIR`)");
    };
    let loaded;
    let embedder = match model {
        QueryModel::Load(source, precision) => {
            loaded = super::model::load(source, Towers::VISION, precision)?;
            &loaded
        }
        QueryModel::Loaded(e) => e,
        QueryModel::StoredOnly => bail!(
            "{}: the index holds no tiles of this query, and they are not embedded here; \
             search with it from the command line (`plip search --image SLIDE`)",
            slide.display()
        ),
    };
    super::model::check(index, embedder)?;
    let masks = index.tissue_masks().map(|d| index.root().join(d));
    let mask = masks
        .as_deref()
        .filter(|d| d.is_dir())
        .and_then(|d| crate::source::slide::user_mask::find(d, slide));
    let plan = crate::source::slide::TilePlan::with_mask_file(slide, &tiling, mask.as_deref())
        .with_context(|| format!("tiling the query slide {}", slide.display()))?;
    let (tiles, _failed) = crate::embed::tiles::embed_tiles(embedder, &plan, 32)?;
    let (regions, rows): (Vec<Region>, Vec<Vec<f32>>) = tiles.into_iter().unzip();
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let (r, v) = region_tiles(&regions, &refs, region);
    if !r.is_empty() {
        return Ok((r, v));
    }
    match region {
        Some(reg) => embed_region(embedder, slide, reg, &plan),
        None => bail!(
            "{}: no tissue tile to search with (the index's tiling keeps none); \
             check it with `plip tiles {}`",
            slide.display(),
            slide.display()
        ),
    }
}

/// One region embedded as one tile, as a `SLIDE@X,Y,W,H` term is.
fn embed_region(
    embedder: &Embedder,
    slide: &Path,
    [x, y, w, h]: [u64; 4],
    plan: &crate::source::slide::TilePlan,
) -> Result<QueryTiles> {
    use crate::query::{QueryTerm, TermKind};
    let term = QueryTerm {
        weight: 1.0,
        kind: TermKind::Region(slide.to_path_buf(), [x, y, w, h]),
    };
    let v = crate::query::build_query(embedder, &[term], &[])?;
    let region = Region {
        x,
        y,
        w,
        h,
        level: 0,
        mpp: plan.slide_mpp,
    };
    Ok((vec![region], vec![v]))
}
