//! Entry points for programs that host plip's engine in their own process: the
//! `plip` binary's `main`, the Python package (`python/`), a future server.
//!
//! Each is one call over the application layer (`crate::app`) that the command
//! line uses too, so a host gets the CLI's behaviour without its terminal: the
//! model is resolved as `--model` is, a search request is parsed and run as
//! `plip search` runs it (a slide as the query too), indexing is the same
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

use crate::app::{self, Found, SearchRequest, Terms};
use crate::backend::cpu::{Precision, PrecisionChoice};
use crate::cli::Cli;
use crate::embed::{Embedder, LoadOptions};
use crate::index::{Index, IndexWriter, Skipped, StoreError};
use crate::job::{IndexJob, IndexOptions, Progress};
use crate::model::Towers;
use crate::source::slide::TilingOverrides;

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
/// [`crate::DEFAULT_MODEL`], as every command resolves `--model`.
pub fn model_source(model: Option<&str>, index_dir: Option<&Path>) -> String {
    app::locate::model_source(model, index_dir)
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
    app::model::load(source, towers, precision)
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
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
    /// Threads for this run (`--threads`): a pool of its own; `None` uses the
    /// process's pool (all cores unless the host set it).
    pub threads: Option<usize>,
    /// Memory for decoded images in flight, in MiB (`--decode-memory`); `None`
    /// keeps the process's budget (1024 MiB unless set before).
    pub decode_memory: Option<u64>,
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
            threads: None,
            decode_memory: None,
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
    match req.threads {
        Some(0) => {
            Err(io::Error::new(io::ErrorKind::InvalidInput, "threads must be at least 1").into())
        }
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .context("starting the thread pool")?
            .install(|| index_in_pool(req, cancel)),
        None => index_in_pool(req, cancel),
    }
}

fn index_in_pool(req: &IndexRequest, cancel: &AtomicBool) -> Result<IndexReport> {
    if req.decode_memory == Some(0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "decode_memory must be at least 1 MiB",
        )
        .into());
    }
    for d in &req.dirs {
        if !d.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", d.display()),
            )
            .into());
        }
    }
    let slides = TilingOverrides {
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
    if let Some(mib) = req.decode_memory {
        crate::source::set_decode_budget(mib.saturating_mul(1 << 20));
    }
    let index_dir = app::locate::index_for_writing(&cwd(), req.index.as_deref());
    let source =
        app::locate::model_source(req.model.as_deref(), (!req.rebuild).then_some(&*index_dir));
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

/// Fails when `embedder` is not the model that built `index` (another model, or
/// the same model whose files changed), with the advice `plip search` gives.
pub fn check_model(index: &Index, embedder: &Embedder) -> std::result::Result<(), StoreError> {
    app::model::check(index, embedder)
}

/// The index folder to read, as `--index` resolves: `index` (relative to the
/// current directory), else the nearest `.plip` in the current directory or
/// above it. No index there is a [`StoreError::NoIndex`].
pub fn find_index(index: Option<&Path>) -> Result<PathBuf> {
    Ok(app::locate::find_index(&cwd(), index)?)
}

/// Runs `req`, whose terms are `terms` (from [`SearchRequest::terms`]), over
/// `index` as `plip search` does. `embedder` must be the index's model; it may be
/// `None` when the request has only vectors. Paths are absolute; a relative
/// `under` is relative to the current directory.
pub fn search(
    index: &Index,
    embedder: Option<&Embedder>,
    terms: &Terms,
    req: &SearchRequest,
) -> Result<Found> {
    app::search::run(index, embedder, terms, req, &cwd())
}

/// A slide (or a region of one) as the query, as `plip search --image SLIDE` with its
/// slide flags takes it.
#[derive(Clone, Debug)]
pub struct SlideSearchRequest {
    /// The slide file, or `SLIDE@X,Y,W,H` (level-0 pixels): a region is a slide query
    /// here without any other flag.
    pub image: PathBuf,
    /// Slides returned.
    pub top: usize,
    /// `mean` or `bag` (`--slide-score`); `None`: mean for a slide, bag for a region.
    pub score: Option<String>,
    /// Keep the query slide in the ranking (`--include-self`).
    pub include_self: bool,
    /// A `slide,patient` CSV (`--group-by`): the query's patient is left out.
    pub group_by: Option<PathBuf>,
    /// Only slides under this folder.
    pub under: Option<PathBuf>,
    /// Only slides scoring at least this.
    pub threshold: Option<f32>,
}

/// What a slide query found.
#[derive(Clone, Debug)]
pub struct SlideSearchReport {
    /// One JSON object a slide, best first: `plip search --image SLIDE --json`'s lines,
    /// with absolute paths.
    pub slides: Vec<String>,
    /// The query's tiles that were compared.
    pub query_tiles: usize,
    /// Whether they were embedded now (the slide is not in the index).
    pub embedded_now: bool,
    /// `mean` or `bag`.
    pub score: String,
    /// The tiles of the query's mosaic, when `bag` scored a big query by one.
    pub mosaic: Option<usize>,
    /// Slides left out (the query, its patient's slides), absolute.
    pub excluded: Vec<PathBuf>,
    /// Slides the `group_by` CSV names that the index does not hold.
    pub unknown_in_groups: Vec<String>,
}

/// Ranks the slides of `index` against a slide as `plip search --image SLIDE` does.
/// The query's stored tiles are used when the index holds it; else it is tiled and
/// embedded now with `embedder`, or with the model `source` loaded in `precision`
/// when `embedder` is `None`. A relative path is relative to the current directory.
pub fn search_slides(
    index: &Index,
    embedder: Option<&Embedder>,
    source: &str,
    precision: PrecisionChoice,
    req: &SlideSearchRequest,
) -> Result<SlideSearchReport> {
    use app::slides_like::{self, QueryModel, SlideOptions, SlideQuery};
    let score = match &req.score {
        Some(s) => Some(
            s.parse()
                .map_err(|e: String| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let search = SearchRequest {
        query: None,
        image: Some(req.image.clone()),
        add: Vec::new(),
        subtract: Vec::new(),
        templates: Vec::new(),
        vectors: Vec::new(),
        top: req.top,
        ef: None,
        threshold: req.threshold,
        under: req.under.clone(),
        by_slide: false,
    };
    let opts = SlideOptions {
        score,
        include_self: req.include_self,
        group_by: req.group_by.clone(),
    };
    let q = SlideQuery::explicit(&search, &opts)?;
    let model = match embedder {
        Some(e) => QueryModel::Loaded(e),
        None => QueryModel::Load(source, precision),
    };
    let cwd = cwd();
    let found = slides_like::run_on(index, model, &q, &cwd)?;
    let rows = crate::output::slide_matches::printable(&found, &cwd);
    let slides = rows
        .into_iter()
        .zip(&found.slides)
        .map(|(mut row, s)| {
            row.path = s.path.to_string_lossy().into_owned();
            serde_json::to_string(&row).context("writing a slide as JSON")
        })
        .collect::<Result<_>>()?;
    Ok(SlideSearchReport {
        slides,
        query_tiles: found.query_tiles,
        embedded_now: found.embedded_now,
        score: found.score.name().to_string(),
        mosaic: found.mosaic,
        excluded: found.excluded,
        unknown_in_groups: found.unknown_in_groups,
    })
}

/// True when `path` is a whole slide (indexed and embedded as tiles), as
/// `plip index` and `plip embed` decide it; any other file is one image.
pub fn is_slide(path: &Path) -> bool {
    crate::source::slide::is_slide(path)
}
