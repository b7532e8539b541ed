//! Entry points for programs that host plip's engine in their own process: the
//! `plip` binary's `main`, the Python package (`python/`), a future server.
//!
//! Each is one call over the same types the command line uses, so a host gets
//! the CLI's behaviour without its terminal: the model is resolved as `--model`
//! is ([`crate::cli::Config::model_source`]), indexing is the same
//! [`IndexJob`] with the same commits and Ctrl-C semantics (the host owns the
//! cancel flag instead of a signal handler), and a search filters and ranks as
//! `plip search` does. Nothing here prints: warnings come back in the report.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::backend::cpu::{Precision, PrecisionChoice};
use crate::cli::{Cli, Config};
use crate::embed::{Embedder, LoadOptions};
use crate::index::Region;
use crate::index::{Index, IndexWriter, Skipped, StoreError};
use crate::job::{IndexJob, IndexOptions, Progress, SlideFlags};
use crate::model::{hub, Towers};
use crate::query::{QueryTerm, TermKind};
use crate::source::walk;

/// Runs the command line on `args` (the first is the program name) as the
/// `plip` binary does, and returns its exit code: 0, 2 for an error (printed
/// once on stderr), 130 for an interrupted index, clap's codes for bad flags
/// and `--help`. A closed stdout (`plip search … | head`) is success.
pub fn main_with_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // candle's errors capture a backtrace when RUST_BACKTRACE is set, and print
    // it in their message; a user sees one line. Panics keep their backtraces.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    crate::tune_allocator();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code() as u8;
        }
    };
    match crate::run(cli) {
        Ok(code) => code as u8,
        Err(err) => {
            if let Some(io) = err.root_cause().downcast_ref::<io::Error>() {
                if io.kind() == io::ErrorKind::BrokenPipe {
                    return 0;
                }
            }
            eprintln!("plip: error: {err:#}");
            2
        }
    }
}

/// The resolved model source for `model` (a Hub id or a folder): `model` when
/// given, else the model that built the index at `index_dir`, else
/// [`hub::DEFAULT_MODEL`], as every command resolves `--model`.
pub fn model_source(model: Option<&str>, index_dir: Option<&Path>) -> String {
    config(model.map(str::to_string), None).model_source(index_dir)
}

/// Loads the requested towers of the model `source` (a Hub id or a folder), in f32.
pub fn load_model(source: &str, towers: Towers) -> Result<Embedder> {
    load_model_with(source, towers, PrecisionChoice::Fixed(Precision::F32))
}

/// Loads the requested towers of the model `source` in `precision` (as
/// `--precision`: `auto` picks the image tower's arithmetic for this CPU).
pub fn load_model_with(
    source: &str,
    towers: Towers,
    precision: PrecisionChoice,
) -> Result<Embedder> {
    let (options, _) = LoadOptions::resolve(precision, towers)?;
    let files = hub::resolve(source)?;
    Embedder::load_with(&files, towers, options)
        .with_context(|| format!("loading model `{source}`"))
}

fn config(model: Option<String>, index: Option<PathBuf>) -> Config {
    Config {
        model: model.filter(|m| !m.trim().is_empty()),
        index,
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        progress: false,
        quiet: true,
        // The Python API embeds in f32, the reference's arithmetic.
        precision: Default::default(),
    }
}

/// What to index: `plip index [--index I] [--model M] [--rebuild] DIRS`.
#[derive(Clone, Debug)]
pub struct IndexRequest {
    /// Folders or image files; empty re-scans every folder indexed before.
    pub dirs: Vec<PathBuf>,
    /// Index folder; `None` is the nearest `.plip` upward, else `./.plip`.
    pub index: Option<PathBuf>,
    /// Model; `None` is the index's own model, else [`hub::DEFAULT_MODEL`].
    pub model: Option<String>,
    /// Discard the existing index first.
    pub rebuild: bool,
    /// Images per model batch.
    pub batch_size: usize,
    /// Commit at least every this many newly embedded images.
    pub commit_every: usize,
    /// Whole slides: microns per pixel of a tile (`--mpp`); `None` keeps the
    /// index's tiling, else the default.
    pub mpp: Option<f64>,
    /// Whole slides: tile side in pixels at that resolution (`--tile`).
    pub tile: Option<u32>,
    /// Whole slides: least tissue fraction of a kept tile (`--min-tissue`).
    pub min_tissue: Option<f64>,
    /// Whole slides: level-0 mpp for slides that do not record it (`--slide-mpp`).
    pub slide_mpp: Option<f64>,
    /// The image tower's arithmetic (`--precision`; `auto` by default).
    pub precision: PrecisionChoice,
    /// Whole slides: keep pen ink and other artifacts that look like tissue
    /// (`--keep-artifacts`); `None` keeps the index's choice, else false.
    pub keep_artifacts: Option<bool>,
}

impl Default for IndexRequest {
    fn default() -> Self {
        let o = IndexOptions::default();
        IndexRequest {
            dirs: Vec::new(),
            index: None,
            model: None,
            rebuild: false,
            batch_size: o.batch_size,
            commit_every: o.commit_every,
            mpp: None,
            tile: None,
            min_tissue: None,
            slide_mpp: None,
            precision: PrecisionChoice::Auto,
            keep_artifacts: None,
        }
    }
}

/// What an indexing run did: the numbers of `plip index`'s summary line.
#[derive(Clone, Debug)]
pub struct IndexReport {
    /// The index folder, absolute.
    pub index: PathBuf,
    /// Files embedded for the first time.
    pub added: usize,
    /// Files re-embedded because they changed.
    pub updated: usize,
    /// Entries dropped because their files are gone (or now unreadable).
    pub removed: usize,
    /// Files left as they were.
    pub unchanged: usize,
    /// Files that could not be read or decoded, with the reason.
    pub skipped: Vec<Skipped>,
    /// Vectors computed in this run.
    pub embedded: usize,
    /// The run was cancelled; what was embedded is committed.
    pub interrupted: bool,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Every warning the run would have printed, in order.
    pub warnings: Vec<String>,
    /// The image tower's precision and why, as `plip index` prints it.
    pub precision: String,
}

/// Collects the job's warnings instead of printing them.
#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl Progress for Collect {
    fn warn(&self, message: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.to_string());
    }
}

/// Runs `plip index` for `req` without a terminal: the same checks, model
/// resolution, lock and [`IndexJob`]. Setting `cancel` stops the run after the
/// current batch; what was embedded is committed (as Ctrl-C does) and the
/// report says `interrupted`. A folder that does not exist is an
/// [`io::ErrorKind::NotFound`] error.
pub fn index_folders(req: &IndexRequest, cancel: &AtomicBool) -> Result<IndexReport> {
    for d in &req.dirs {
        if !d.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", d.display()),
            )
            .into());
        }
    }
    let slides = SlideFlags {
        mpp: req.mpp,
        tile: req.tile,
        min_tissue: req.min_tissue,
        slide_mpp: req.slide_mpp,
        keep_artifacts: req.keep_artifacts,
    };
    // Before anything is opened for writing (issue 27).
    slides
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let config = config(req.model.clone(), req.index.clone());
    let index_dir = config.index_for_writing();
    let source = config.model_source(if req.rebuild { None } else { Some(&index_dir) });
    let embedder = load_model_with(&source, Towers::VISION, req.precision)?;
    let (_, chosen) = LoadOptions::resolve(req.precision, Towers::VISION)?;
    let mut writer = IndexWriter::open(&index_dir, embedder.info(), req.rebuild)?
        .with_precision(embedder.precision());
    writer.stats_mut().precision = Some(chosen.to_string());
    let options = IndexOptions {
        batch_size: req.batch_size,
        commit_every: req.commit_every,
        slides,
        ..IndexOptions::default()
    };
    let progress = Collect::default();
    let summary =
        IndexJob::new(writer, req.dirs.clone(), options).run(embedder, &progress, cancel)?;
    let stats = summary.stats;
    Ok(IndexReport {
        index: std::path::absolute(&index_dir).unwrap_or(index_dir),
        added: stats.added,
        updated: stats.updated,
        removed: stats.removed,
        unchanged: stats.unchanged,
        skipped: stats.skipped,
        embedded: summary.embedded,
        interrupted: summary.interrupted,
        elapsed: summary.elapsed,
        warnings: progress.0.into_inner().unwrap_or_else(|e| e.into_inner()),
        precision: chosen.to_string(),
    })
}

/// Fails when `embedder` is not the model that built `index`, with the advice
/// `plip search` gives.
pub fn check_model(index: &Index, embedder: &Embedder) -> std::result::Result<(), StoreError> {
    crate::index::check_model(index.dir(), index.model(), embedder.info())
}

/// The filters of `plip search`.
#[derive(Clone, Debug)]
pub struct SearchOptions {
    /// Number of hits (at least 1).
    pub top: usize,
    /// HNSW breadth, for segments whose graph was loaded
    /// ([`Index::open_with_graphs`]); `None` is the default breadth.
    pub ef: Option<usize>,
    /// Keep only hits with at least this cosine score.
    pub threshold: Option<f32>,
    /// Keep only images under this folder (absolute, or relative to the
    /// current directory).
    pub under: Option<PathBuf>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            top: 10,
            ef: None,
            threshold: None,
            under: None,
        }
    }
}

/// One search result, as `plip search --json` prints it, with the image's
/// absolute path instead of a path relative to the current directory.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    /// 1-based rank.
    pub rank: usize,
    /// Cosine similarity, rounded to 6 decimals as `--json` prints it.
    pub score: f64,
    /// The image or slide file (its bytes as on disk, whatever the encoding).
    pub path: PathBuf,
    /// For a tile of a whole slide: where it is (level-0 pixels), its level and mpp.
    pub region: Option<Region>,
}

/// The stored-path prefix of `--under`, relative to the index root.
fn under_prefix(index: &Index, under: Option<&Path>) -> Option<String> {
    under.map(|u| {
        let abs = std::path::absolute(u).unwrap_or_else(|_| u.to_path_buf());
        let abs = abs.canonicalize().unwrap_or(abs);
        walk::relative(&abs, &index.root())
    })
}

/// The `top` indexed images (and slide tiles) nearest to the unit vector
/// `query`, best first, filtered as `plip search` filters them.
pub fn search(index: &Index, query: &[f32], opts: &SearchOptions) -> Vec<SearchHit> {
    let root = index.root();
    let prefix = under_prefix(index, opts.under.as_deref());
    let ef = opts.ef.unwrap_or(crate::index::ann::DEFAULT_EF_SEARCH);
    let hits = crate::query::filter::search_filtered(
        index,
        query,
        opts.top.max(1),
        ef,
        prefix.as_deref(),
        opts.threshold,
    );
    hits.iter()
        .enumerate()
        .map(|(i, h)| SearchHit {
            rank: i + 1,
            score: round6(h.score),
            path: walk::resolve(&root, &h.path),
            region: h.region,
        })
        .collect()
}

fn round6(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

/// One whole slide, as `plip search --by-slide --json` prints it, with an
/// absolute path.
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

/// `plip search --by-slide`: every tile is scored exactly and the `top` slides
/// are ranked by their pooled tile scores. Plain images are left out.
pub fn search_slides(index: &Index, query: &[f32], opts: &SearchOptions) -> Vec<SlideSearchHit> {
    let root = index.root();
    let prefix = under_prefix(index, opts.under.as_deref());
    let allow = |p: &str| crate::query::filter::under(prefix.as_deref(), p);
    let all = index.search(query, index.len().max(1), 0, Some(&allow));
    let mut slides = crate::query::slides::rank_slides(&all);
    if let Some(t) = opts.threshold {
        slides.retain(|s| s.score >= t);
    }
    slides.truncate(opts.top.max(1));
    slides
        .into_iter()
        .enumerate()
        .map(|(i, s)| SlideSearchHit {
            rank: i + 1,
            score: round6(s.score),
            path: walk::resolve(&root, &s.path),
            tiles: s.tiles,
            best: s.best.into_iter().map(|(r, sc)| (r, round6(sc))).collect(),
        })
        .collect()
}

/// The index folder to read, as `--index` resolves: `index` (relative to the
/// current directory), else the nearest `.plip` in the current directory or
/// above it. No index there is a [`StoreError::NoIndex`].
pub fn find_index(index: Option<&Path>) -> Result<PathBuf> {
    config(None, index.map(Path::to_path_buf)).find_index()
}

/// `plip search`'s positional query: an existing image file is an image term,
/// anything else is text. An empty query is an error with the CLI's advice.
pub fn query_term(query: &str) -> Result<QueryTerm> {
    if query.trim().is_empty() {
        anyhow::bail!("the query is empty; give some words, e.g. plip search \"tumor tissue\"");
    }
    let p = Path::new(query);
    let kind = if walk::is_image(p) && p.is_file() {
        TermKind::Image(p.to_path_buf())
    } else {
        TermKind::Text(query.to_string())
    };
    Ok(QueryTerm { weight: 1.0, kind })
}

/// Parses `[W:]TERM` as `--add` (`sign` 1) or `--subtract` (`sign` -1) do.
pub fn parse_term(raw: &str, sign: f32) -> Result<QueryTerm> {
    crate::query::parse_term(raw, sign)
}

/// The query vector of `terms` (with `templates`, as `plip search` builds it)
/// plus weighted `vectors` given directly, each normalized, summed with its
/// weight and renormalized. Without `vectors` this is exactly
/// [`crate::build_query`].
pub fn query_vector(
    embedder: Option<&Embedder>,
    terms: &[QueryTerm],
    templates: &[String],
    vectors: &[(f32, Vec<f32>)],
) -> Result<Vec<f32>> {
    if vectors.is_empty() || !terms.is_empty() {
        let embedder = embedder.context("internal error: no model to embed the query terms")?;
        if vectors.is_empty() {
            return crate::build_query(embedder, terms, templates);
        }
        let mut parts = vectors.to_vec();
        for t in terms {
            let unit = QueryTerm {
                weight: 1.0,
                kind: t.kind.clone(),
            };
            parts.push((t.weight, crate::build_query(embedder, &[unit], templates)?));
        }
        return crate::query::combine(&parts);
    }
    crate::query::combine(vectors)
}

/// True when `path` is a whole slide (indexed and embedded as tiles), as
/// `plip index` and `plip embed` decide it; any other file is one image.
pub fn is_slide(path: &Path) -> bool {
    crate::source::slide::is_slide(path)
}
