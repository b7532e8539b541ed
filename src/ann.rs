//! Approximate (HNSW) and exact nearest-neighbour search over L2-normalized
//! embeddings, scored by cosine similarity (= dot product for unit vectors).
//!
//! This module is the only place that touches the `hnsw_rs` crate. It exists
//! because using `hnsw_rs` directly has several sharp edges, each handled here:
//!
//! * **Distance.** `DistDot`/`DistCosine` assert that `1 - dot >= 0`, which
//!   fails (panics) for identical images whose dot product rounds to slightly
//!   above 1. [`UnitCosine`] clamps instead and never returns NaN.
//! * **Lifetimes.** A reloaded `Hnsw` borrows its `HnswIo`. [`AnnGraph`] is an
//!   owned, `'static`, `Send + Sync` type (see [`AnnGraph::load`]).
//! * **Dump names.** `file_dump` silently picks another basename when files
//!   exist; [`AnnGraph::save`] always writes exactly the names it returns and
//!   fsyncs them.
//! * **Loading garbage.** The `hnsw_rs` loader panics, calls
//!   `std::process::exit`, allocates sizes read from the file, and reads
//!   out of bounds on short records. [`AnnGraph::load`] checks a CRC32 of
//!   every file and validates the whole structure before handing the files
//!   to `hnsw_rs`, so corrupt or truncated files give an [`AnnError`].
//! * **Edge cases.** Empty index, one point, `k > n`, `ef < k`, `k == 0`,
//!   filtered searches that hide most points: [`AnnGraph::search`] never
//!   panics and returns `min(k, number of allowed points)` hits.
//! * **No deletion in `hnsw_rs`.** Callers hide tombstoned ids with the
//!   `allow` predicate of [`AnnGraph::search`] / [`exact_search`].
//!
//! Ids are row indices `0..n` of the matrix given to [`AnnGraph::build`].
//! Results are sorted by score descending, ties by id ascending; scores are
//! cosine similarities clamped to `[-1, 1]`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use hnsw_rs::anndists::dist::distances::Distance;
use hnsw_rs::prelude::{AnnT, FilterT, Hnsw, HnswIo, Neighbour};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Default `ef` for [`AnnGraph::search`] (candidate list size at layer 0).
///
/// Chosen from measurements on seeded clustered data (see
/// `measure_recall_latency` below); at this value recall@10 against
/// [`exact_search`] was >= 0.95.
pub const DEFAULT_EF_SEARCH: usize = 64;

/// `hnsw_rs` can only dump graphs built with exactly this many layers
/// (`Description::dump` rejects anything else), so it is not a parameter.
const HNSW_MAX_LAYERS: usize = 16;

/// Construction parameters of the HNSW graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnParams {
    /// `M`: links per node in upper layers (layer 0 keeps `2*M`). Clamped to
    /// `2..=255` (hnsw_rs stores it as a `u8` and exits the process above 256).
    pub max_connections: usize,
    /// Candidate list size while inserting; larger = better graph, slower build.
    pub ef_construction: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            max_connections: 24,
            ef_construction: 200,
        }
    }
}

impl AnnParams {
    fn clamped(&self) -> AnnParams {
        AnnParams {
            max_connections: self.max_connections.clamp(2, 255),
            ef_construction: self.ef_construction.max(1),
        }
    }
}

/// One search result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Row index of the vector in the matrix given to [`AnnGraph::build`].
    pub id: usize,
    /// Cosine similarity to the query (dot product), clamped to `[-1, 1]`.
    pub score: f32,
}

/// Errors of [`AnnGraph::build`], [`AnnGraph::save`] and [`AnnGraph::load`].
#[derive(thiserror::Error, Debug)]
pub enum AnnError {
    /// The vectors given to `build` are unusable.
    #[error("cannot build the search index: {0}")]
    InvalidInput(String),
    /// A file of the index does not exist.
    #[error("search index file {} is missing; rebuild with `plip index --rebuild`", .0.display())]
    Missing(PathBuf),
    /// A file of the index exists but cannot be trusted.
    #[error("search index file {} is corrupt ({reason}); rebuild with `plip index --rebuild`", path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The caller passed an unusable directory or basename.
    #[error("invalid index location: {0}")]
    InvalidPath(String),
    /// An operating-system error while reading or writing index files.
    #[error("I/O error on {}: {source}; check that the disk is not full and the directory is writable", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `hnsw_rs` failed while writing the graph.
    #[error("writing the search index graph to {} failed: {reason}; check free disk space and permissions", dir.display())]
    Dump {
        /// Directory being written.
        dir: PathBuf,
        /// Error reported by hnsw_rs.
        reason: String,
    },
}

fn io_err(path: &Path, source: io::Error) -> AnnError {
    AnnError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> AnnError {
    AnnError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Distance
// ---------------------------------------------------------------------------

/// Dot product, written so that it autovectorizes (16 independent lanes).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut acc = [0.0f32; L];
    for (x, y) in ca.zip(cb) {
        let x: &[f32; L] = x.try_into().expect("chunk of L");
        let y: &[f32; L] = y.try_into().expect("chunk of L");
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    // pairwise reduction of the lanes
    let mut w = L;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0] + tail
}

/// Cosine distance for unit vectors: `1 - dot`, clamped to `[0, 2]`.
///
/// Unlike `anndists::DistDot` it never asserts (identical vectors can have a
/// dot product slightly above 1) and never returns NaN (NaN maps to 2, the
/// largest distance), because `hnsw_rs` panics on NaN distances.
///
/// The type name is stored in the dumped graph file and checked on load
/// (last path segment only): renaming it invalidates existing index files.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    #[inline]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        let d = 1.0 - dot(va, vb);
        if d >= 0.0 {
            d.min(2.0)
        } else if d < 0.0 {
            0.0
        } else {
            2.0
        }
    }
}

/// Score reported for a distance of [`UnitCosine`]: `1 - d`, i.e. the dot
/// product clamped to `[-1, 1]`. Exact and approximate search both report
/// this, so the same vector gets a bit-identical score from either (for
/// dot >= 0.5 it is the dot product itself, bit for bit).
#[inline]
fn score_from_distance(d: f32) -> f32 {
    1.0 - d
}

/// Score of a raw dot product, `None` for NaN.
#[inline]
fn score_from_dot(dot: f32) -> Option<f32> {
    if dot.is_nan() {
        None
    } else {
        Some(score_from_distance((1.0 - dot).clamp(0.0, 2.0)))
    }
}

// ---------------------------------------------------------------------------
// Ordering and top-k selection
// ---------------------------------------------------------------------------

/// `Less` means `a` ranks before `b`: higher score first, then lower id.
#[inline]
fn rank_cmp(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.id.cmp(&b.id))
}

fn sort_hits(hits: &mut [Hit]) {
    hits.sort_unstable_by(rank_cmp);
}

/// Keeps the `k` best hits in amortized O(1) per push (buffer of `2k`,
/// partial selection when full) instead of sorting everything.
struct TopK {
    k: usize,
    buf: Vec<Hit>,
    worst: Option<Hit>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            buf: Vec::with_capacity(k.saturating_mul(2).min(4096)),
            worst: None,
        }
    }

    #[inline]
    fn push(&mut self, h: Hit) {
        if let Some(w) = &self.worst {
            if rank_cmp(&h, w) != std::cmp::Ordering::Less {
                return;
            }
        }
        self.buf.push(h);
        if self.buf.len() >= self.k.saturating_mul(2).max(64) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, rank_cmp);
            self.buf.truncate(self.k);
            self.worst = self.buf.iter().copied().max_by(rank_cmp);
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for h in other.buf {
            self.push(h);
        }
        self
    }

    fn finish(mut self) -> Vec<Hit> {
        sort_hits(&mut self.buf);
        self.buf.truncate(self.k);
        self.buf
    }
}

// ---------------------------------------------------------------------------
// Exact search
// ---------------------------------------------------------------------------

/// Rows per rayon task in [`exact_search`].
const EXACT_CHUNK_ROWS: usize = 8192;
/// Below this many rows [`exact_search`] stays on the calling thread.
const EXACT_PAR_MIN_ROWS: usize = 32768;

/// Brute-force top-`k` by dot product over a row-major `n x dim` matrix.
///
/// Same ordering and score rules as [`AnnGraph::search`]. Rows whose score is
/// NaN are skipped; a trailing partial row is ignored. Returns an empty vector
/// when `dim == 0`, `k == 0`, `query.len() != dim` or the query is not finite.
pub fn exact_search(
    vectors: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> Vec<Hit> {
    if dim == 0 || k == 0 || query.len() != dim || query.iter().any(|x| !x.is_finite()) {
        return Vec::new();
    }
    let n = vectors.len() / dim;
    let rows = &vectors[..n * dim];
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let scan = |chunk: &[f32], first_id: usize| {
        let mut top = TopK::new(k);
        for (i, row) in chunk.chunks_exact(dim).enumerate() {
            let id = first_id + i;
            if let Some(f) = allow {
                if !f(id) {
                    continue;
                }
            }
            if let Some(score) = score_from_dot(dot(row, query)) {
                top.push(Hit { id, score });
            }
        }
        top
    };
    if n < EXACT_PAR_MIN_ROWS {
        return scan(rows, 0).finish();
    }
    rows.par_chunks(EXACT_CHUNK_ROWS * dim)
        .enumerate()
        .map(|(ci, chunk)| scan(chunk, ci * EXACT_CHUNK_ROWS))
        .reduce(|| TopK::new(k), TopK::merge)
        .finish()
}

// ---------------------------------------------------------------------------
// The graph
// ---------------------------------------------------------------------------

type Graph = Hnsw<'static, f32, UnitCosine>;

/// An HNSW graph over `n` unit vectors with ids `0..n`.
///
/// Owned, `'static`, `Send + Sync`; searches may run concurrently.
pub struct AnnGraph {
    dim: usize,
    len: usize,
    params: AnnParams,
    /// `None` iff `len == 0` (hnsw_rs cannot dump an empty graph).
    hnsw: Option<Graph>,
}

impl std::fmt::Debug for AnnGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnGraph")
            .field("dim", &self.dim)
            .field("len", &self.len)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Tolerance on `| ||v|| - 1 |` accepted by [`AnnGraph::build`].
const NORM_TOLERANCE: f32 = 1e-2;

fn check_input(vectors: &[f32], dim: usize) -> Result<usize, AnnError> {
    if dim == 0 {
        return Err(AnnError::InvalidInput("dimension is 0".into()));
    }
    if !vectors.len().is_multiple_of(dim) {
        return Err(AnnError::InvalidInput(format!(
            "{} values is not a multiple of the dimension {dim}",
            vectors.len()
        )));
    }
    for (i, row) in vectors.chunks_exact(dim).enumerate() {
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return Err(AnnError::InvalidInput(format!(
                "vector {i} has a non-finite value at position {j}; re-embed that image"
            )));
        }
        let norm = dot(row, row).sqrt();
        if (norm - 1.0).abs() > NORM_TOLERANCE {
            return Err(AnnError::InvalidInput(format!(
                "vector {i} has L2 norm {norm}, expected 1 (embeddings must be L2-normalized)"
            )));
        }
    }
    Ok(vectors.len() / dim)
}

impl AnnGraph {
    /// Builds the graph over the rows of a row-major `n x dim` matrix of
    /// L2-normalized vectors; ids are row indices.
    ///
    /// Insertion is serial and therefore deterministic (hnsw_rs seeds its
    /// level generator): the same input always gives the same graph.
    ///
    /// Errors if `dim == 0`, the length is not a multiple of `dim`, or a row is
    /// non-finite or not unit-norm (within 1e-2).
    pub fn build(vectors: &[f32], dim: usize, params: &AnnParams) -> Result<AnnGraph, AnnError> {
        Self::build_impl(vectors, dim, params, false)
    }

    /// Like [`AnnGraph::build`], with hnsw_rs' parallel insertion: about twice as
    /// fast on two cores, but not deterministic, and contended insertion can
    /// leave points harder to find, so measure recall on what it builds
    /// (`benches/hnsw.rs` does). For benchmarks at sizes where the serial build
    /// takes hours.
    pub fn build_parallel(
        vectors: &[f32],
        dim: usize,
        params: &AnnParams,
    ) -> Result<AnnGraph, AnnError> {
        Self::build_impl(vectors, dim, params, true)
    }

    fn build_impl(
        vectors: &[f32],
        dim: usize,
        params: &AnnParams,
        parallel: bool,
    ) -> Result<AnnGraph, AnnError> {
        let n = check_input(vectors, dim)?;
        let params = params.clamped();
        if n == 0 {
            return Ok(AnnGraph {
                dim,
                len: 0,
                params,
                hnsw: None,
            });
        }
        let hnsw: Graph = Hnsw::new(
            params.max_connections,
            n,
            HNSW_MAX_LAYERS,
            params.ef_construction,
            UnitCosine,
        );
        if parallel {
            let data: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..n).collect();
            hnsw.parallel_insert_slice(&data);
        } else {
            for (id, row) in vectors.chunks_exact(dim).enumerate() {
                hnsw.insert_slice((row, id));
            }
        }
        Ok(AnnGraph {
            dim,
            len: n,
            params,
            hnsw: Some(hnsw),
        })
    }

    /// Number of vectors in the graph.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the graph holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Construction parameters (after clamping).
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Approximate top-`k` by cosine similarity.
    ///
    /// `ef` is the candidate list size (use [`DEFAULT_EF_SEARCH`]); it is
    /// raised to `k` when smaller. `allow` hides ids for which it returns
    /// false (e.g. tombstones); hidden ids are never returned.
    ///
    /// Returns `min(k, number of allowed points)` hits, sorted by score
    /// descending then id ascending: when the graph walk yields fewer (heavy
    /// filtering, unreachable nodes), it falls back to an exact scan of the
    /// stored vectors, O(n). Returns an empty vector if `k == 0`, the graph
    /// is empty, `query.len() != self.dim()` or the query is not finite.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<Hit> {
        let Some(hnsw) = &self.hnsw else {
            return Vec::new();
        };
        if k == 0 || query.len() != self.dim || query.iter().any(|x| !x.is_finite()) {
            return Vec::new();
        }
        let want = k.min(self.len);
        let ef = ef.max(want);
        let raw: Vec<Neighbour> = match allow {
            None => hnsw.search_filter(query, ef, ef, None),
            Some(f) => {
                let filter = |id: &usize| f(*id);
                hnsw.search_filter(query, ef, ef, Some(&filter as &dyn FilterT))
            }
        };
        let mut hits: Vec<Hit> = raw
            .iter()
            .filter(|nb| nb.d_id < self.len && allow.is_none_or(|f| f(nb.d_id)))
            .map(|nb| Hit {
                id: nb.d_id,
                score: score_from_distance(nb.distance),
            })
            .collect();
        sort_hits(&mut hits);
        hits.dedup_by_key(|h| h.id);
        if hits.len() >= want {
            hits.truncate(want);
            return hits;
        }
        // Fewer hits than asked: either fewer than k points are allowed, or
        // the walk missed some. An exact scan settles it.
        self.scan_exact(hnsw, query, want, allow)
    }

    /// Exact top-`k` over the vectors stored in the graph.
    fn scan_exact(
        &self,
        hnsw: &Graph,
        query: &[f32],
        k: usize,
        allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<Hit> {
        let mut top = TopK::new(k);
        let pi = hnsw.get_point_indexation();
        for layer in 0..HNSW_MAX_LAYERS {
            if pi.get_layer_nb_point(layer) == 0 {
                continue;
            }
            for p in pi.get_layer_iterator(layer) {
                let id = p.get_origin_id();
                if id >= self.len || !allow.is_none_or(|f| f(id)) {
                    continue;
                }
                let score = score_from_distance(UnitCosine.eval(query, p.get_v()));
                top.push(Hit { id, score });
            }
        }
        let mut hits = top.finish();
        hits.dedup_by_key(|h| h.id);
        hits
    }
}

// ---------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------

/// Suffixes of the three files written by [`AnnGraph::save`]. The first two
/// are imposed by `hnsw_rs`.
const GRAPH_SUFFIX: &str = ".hnsw.graph";
const DATA_SUFFIX: &str = ".hnsw.data";
const META_SUFFIX: &str = ".ann.json";
const META_FORMAT: &str = "plip-ann";
const META_VERSION: u32 = 1;

/// Sidecar written last by `save`: it lists the other files with their size
/// and CRC32, so a torn or bit-flipped file is detected before `hnsw_rs`
/// parses it.
#[derive(Serialize, Deserialize, Debug)]
struct Meta {
    format: String,
    version: u32,
    len: usize,
    dim: usize,
    params: AnnParams,
    files: Vec<FileMeta>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct FileMeta {
    name: String,
    bytes: u64,
    crc32: u32,
}

fn check_basename(basename: &str) -> Result<(), AnnError> {
    let bad = basename.is_empty()
        || basename.starts_with('.')
        || basename
            .chars()
            .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control());
    if bad {
        return Err(AnnError::InvalidPath(format!(
            "index basename {basename:?} must be a plain, non-hidden file name"
        )));
    }
    Ok(())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Reads `path` back, returning (size, CRC32), and fsyncs it.
fn checksum_and_sync(path: &Path) -> Result<(u64, u32), AnnError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, h.finalize()))
}

fn sync_dir(dir: &Path) -> Result<(), AnnError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn make_tmp_dir(dir: &Path, basename: &str) -> Result<PathBuf, AnnError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for _ in 0..16 {
        let c = TMP_COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
        let tmp = dir.join(format!(
            ".{basename}.ann-tmp-{}-{nanos}-{c}",
            std::process::id()
        ));
        match fs::create_dir(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&tmp, e)),
        }
    }
    Err(AnnError::InvalidPath(format!(
        "could not create a temporary directory in {}",
        dir.display()
    )))
}

impl AnnGraph {
    /// Writes the graph as `dir/{basename}.hnsw.graph`,
    /// `dir/{basename}.hnsw.data` and `dir/{basename}.ann.json` and returns
    /// exactly those paths (only the `.ann.json` one for an empty graph).
    ///
    /// Files are written in a fresh temporary subdirectory (so `hnsw_rs`
    /// never renames them), fsynced, then renamed into `dir`, the
    /// `.ann.json` last; `dir` is fsynced at the end. Existing files with the
    /// same names are replaced. A crash mid-way leaves a set that
    /// [`AnnGraph::load`] rejects as corrupt (use a new basename per
    /// generation if the previous one must stay loadable).
    pub fn save(&self, dir: &Path, basename: &str) -> Result<Vec<PathBuf>, AnnError> {
        check_basename(basename)?;
        if !dir.is_dir() {
            return Err(AnnError::InvalidPath(format!(
                "{} is not an existing directory",
                dir.display()
            )));
        }
        let tmp = make_tmp_dir(dir, basename)?;
        let res = self.save_via(&tmp, dir, basename);
        let _ = fs::remove_dir_all(&tmp);
        res
    }

    fn save_via(&self, tmp: &Path, dir: &Path, basename: &str) -> Result<Vec<PathBuf>, AnnError> {
        let mut files = Vec::new();
        if let Some(hnsw) = &self.hnsw {
            let dumped = catch_unwind(AssertUnwindSafe(|| hnsw.file_dump(tmp, basename)));
            let dump_err = |reason: String| AnnError::Dump {
                dir: dir.to_path_buf(),
                reason,
            };
            match dumped {
                Ok(Ok(name)) if name == basename => {}
                Ok(Ok(name)) => {
                    return Err(dump_err(format!(
                        "hnsw_rs wrote basename {name:?} instead of {basename:?}"
                    )))
                }
                Ok(Err(e)) => return Err(dump_err(format!("{e:#}"))),
                Err(p) => return Err(dump_err(panic_message(p.as_ref()))),
            }
            for suffix in [GRAPH_SUFFIX, DATA_SUFFIX] {
                let name = format!("{basename}{suffix}");
                let (bytes, crc32) = checksum_and_sync(&tmp.join(&name))?;
                files.push(FileMeta { name, bytes, crc32 });
            }
        }
        let meta = Meta {
            format: META_FORMAT.to_string(),
            version: META_VERSION,
            len: self.len,
            dim: self.dim,
            params: self.params,
            files: files.clone(),
        };
        let meta_name = format!("{basename}{META_SUFFIX}");
        let meta_tmp = tmp.join(&meta_name);
        {
            let json = serde_json::to_vec_pretty(&meta).expect("Meta serializes");
            let mut f = File::create(&meta_tmp).map_err(|e| io_err(&meta_tmp, e))?;
            f.write_all(&json).map_err(|e| io_err(&meta_tmp, e))?;
            f.sync_all().map_err(|e| io_err(&meta_tmp, e))?;
        }
        let mut written = Vec::new();
        for name in files.iter().map(|f| &f.name).chain([&meta_name]) {
            let dst = dir.join(name);
            fs::rename(tmp.join(name), &dst).map_err(|e| io_err(&dst, e))?;
            written.push(dst);
        }
        sync_dir(dir)?;
        Ok(written)
    }

    /// Loads a graph written by [`AnnGraph::save`].
    ///
    /// Every file is checked against the sizes and CRC32s in the `.ann.json`
    /// sidecar and the whole `hnsw_rs` format is validated before `hnsw_rs`
    /// parses it (its loader can panic, exit the process or read out of
    /// bounds on bad input); the parse itself also runs under
    /// `catch_unwind`. Vectors are loaded into memory (no mmap).
    ///
    /// Ownership: `hnsw_rs` ties the loaded graph's lifetime to its
    /// `HnswIo` loader. To return an owned `'static` value without `unsafe`,
    /// the loader is leaked (`Box::leak`): about 200 bytes per call (two
    /// paths and an `Arc`), no vector data. Fine for loading an index a few
    /// times per process; don't call this in a hot loop.
    ///
    /// The files must not change while loading (hold the index lock).
    pub fn load(dir: &Path, basename: &str) -> Result<AnnGraph, AnnError> {
        check_basename(basename)?;
        let meta_path = dir.join(format!("{basename}{META_SUFFIX}"));
        let meta_bytes = match fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(AnnError::Missing(meta_path))
            }
            Err(e) => return Err(io_err(&meta_path, e)),
        };
        let meta: Meta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| corrupt(&meta_path, format!("unreadable metadata: {e}")))?;
        if meta.format != META_FORMAT || meta.version != META_VERSION {
            return Err(corrupt(
                &meta_path,
                format!(
                    "unsupported format {:?} version {}",
                    meta.format, meta.version
                ),
            ));
        }
        if meta.dim == 0 || meta.params.clamped() != meta.params {
            return Err(corrupt(&meta_path, "invalid dimension or parameters"));
        }
        if meta.len == 0 {
            if !meta.files.is_empty() {
                return Err(corrupt(&meta_path, "empty index lists files"));
            }
            return Ok(AnnGraph {
                dim: meta.dim,
                len: 0,
                params: meta.params,
                hnsw: None,
            });
        }
        let expected = [
            format!("{basename}{GRAPH_SUFFIX}"),
            format!("{basename}{DATA_SUFFIX}"),
        ];
        if meta.files.len() != 2 || meta.files.iter().zip(&expected).any(|(f, e)| &f.name != e) {
            return Err(corrupt(&meta_path, "unexpected file list"));
        }
        let graph_path = dir.join(&expected[0]);
        let data_path = dir.join(&expected[1]);
        validate::validate(
            &graph_path,
            &meta.files[0],
            &data_path,
            &meta.files[1],
            &meta,
        )?;

        // Lifetime workaround, see the doc comment: leak the small loader.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        let loaded = catch_unwind(AssertUnwindSafe(move || {
            { io }.load_hnsw::<f32, UnitCosine>()
        }));
        let hnsw: Graph = match loaded {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(corrupt(&graph_path, format!("{e:#}"))),
            Err(p) => {
                return Err(corrupt(
                    &graph_path,
                    format!("hnsw_rs loader panicked: {}", panic_message(p.as_ref())),
                ))
            }
        };
        if hnsw.get_nb_point() != meta.len {
            return Err(corrupt(
                &graph_path,
                format!(
                    "{} points loaded, {} expected",
                    hnsw.get_nb_point(),
                    meta.len
                ),
            ));
        }
        Ok(AnnGraph {
            dim: meta.dim,
            len: meta.len,
            params: meta.params,
            hnsw: Some(hnsw),
        })
    }
}

/// Streaming validator for the `hnsw_rs` 0.3 dump format (Full mode, format
/// v4 description, native endianness), mirroring `hnswio.rs` read for read.
/// It guarantees that `HnswIo::load_hnsw` will neither hit one of its
/// asserts/`unwrap`s/`process::exit`s nor allocate a size read from a corrupt
/// file. Counts are bounded by the bytes left in the file before use.
mod validate {
    use super::*;

    const MAGICDESCR_4: u32 = 0x002a_6779;
    const MAGICLAYER: u32 = 0x000a_676f;
    const MAGICPOINT: u32 = 0x000a_678f;
    const MAGICDATAP: u32 = 0xa67f_0000;
    const NB_LAYER_MAX: usize = 16;
    const USZ: u64 = std::mem::size_of::<usize>() as u64;
    /// Smallest serialized neighbour: d_id usize, layer u8, rank i32, dist f32.
    const NEIGHBOUR_BYTES: u64 = USZ + 1 + 4 + 4;
    /// Smallest serialized graph point: magic, origin, layer, rank, 16 counts.
    const POINT_BYTES: u64 = 4 + USZ + 1 + 4 + NB_LAYER_MAX as u64 * USZ;

    /// Reader that tracks position and CRC32 of everything read.
    struct Checked {
        r: BufReader<File>,
        path: PathBuf,
        pos: u64,
        len: u64,
        crc: crc32fast::Hasher,
    }

    impl Checked {
        fn open(path: &Path, fm: &FileMeta) -> Result<Checked, AnnError> {
            let f = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(AnnError::Missing(path.to_path_buf()))
                }
                Err(e) => return Err(io_err(path, e)),
            };
            let len = f.metadata().map_err(|e| io_err(path, e))?.len();
            if len != fm.bytes {
                return Err(corrupt(
                    path,
                    format!("size is {len} bytes, {} expected (truncated?)", fm.bytes),
                ));
            }
            Ok(Checked {
                r: BufReader::with_capacity(1 << 20, f),
                path: path.to_path_buf(),
                pos: 0,
                len,
                crc: crc32fast::Hasher::new(),
            })
        }

        fn left(&self) -> u64 {
            self.len - self.pos
        }

        fn bad(&self, what: impl std::fmt::Display) -> AnnError {
            corrupt(&self.path, format!("{what} at byte {}", self.pos))
        }

        fn bytes(&mut self, buf: &mut [u8]) -> Result<(), AnnError> {
            if (buf.len() as u64) > self.left() {
                return Err(self.bad("unexpected end of file"));
            }
            self.r.read_exact(buf).map_err(|e| io_err(&self.path, e))?;
            self.crc.update(buf);
            self.pos += buf.len() as u64;
            Ok(())
        }

        fn arr<const N: usize>(&mut self) -> Result<[u8; N], AnnError> {
            let mut b = [0u8; N];
            self.bytes(&mut b)?;
            Ok(b)
        }
        fn u8(&mut self) -> Result<u8, AnnError> {
            Ok(self.arr::<1>()?[0])
        }
        fn u32(&mut self) -> Result<u32, AnnError> {
            Ok(u32::from_ne_bytes(self.arr()?))
        }
        fn i32(&mut self) -> Result<i32, AnnError> {
            Ok(i32::from_ne_bytes(self.arr()?))
        }
        fn u64(&mut self) -> Result<u64, AnnError> {
            Ok(u64::from_ne_bytes(self.arr()?))
        }
        fn usize(&mut self) -> Result<usize, AnnError> {
            Ok(usize::from_ne_bytes(self.arr()?))
        }
        fn f32(&mut self) -> Result<f32, AnnError> {
            Ok(f32::from_ne_bytes(self.arr()?))
        }
        fn f64(&mut self) -> Result<f64, AnnError> {
            Ok(f64::from_ne_bytes(self.arr()?))
        }
        fn magic(&mut self, want: u32, what: &str) -> Result<(), AnnError> {
            if self.u32()? != want {
                return Err(self.bad(format!("bad {what} magic")));
            }
            Ok(())
        }
        /// A count of records of at least `unit` bytes each that must fit.
        fn count(&mut self, unit: u64, what: &str) -> Result<usize, AnnError> {
            let c = self.usize()?;
            if (c as u64).saturating_mul(unit) > self.left() {
                return Err(self.bad(format!("impossible {what} count {c}")));
            }
            Ok(c)
        }
        fn string(&mut self, what: &str) -> Result<String, AnnError> {
            let n = self.usize()?;
            if n > 256 || n as u64 > self.left() {
                return Err(self.bad(format!("bad {what} length {n}")));
            }
            let mut b = vec![0u8; n];
            self.bytes(&mut b)?;
            String::from_utf8(b).map_err(|_| self.bad(format!("{what} is not UTF-8")))
        }
        fn finish(self, fm: &FileMeta) -> Result<(), AnnError> {
            if self.pos != self.len {
                return Err(self.bad("trailing bytes"));
            }
            if self.crc.finalize() != fm.crc32 {
                return Err(corrupt(&self.path, "checksum mismatch"));
            }
            Ok(())
        }
    }

    pub(super) fn validate(
        graph_path: &Path,
        graph_meta: &FileMeta,
        data_path: &Path,
        data_meta: &FileMeta,
        meta: &Meta,
    ) -> Result<(), AnnError> {
        let mut g = Checked::open(graph_path, graph_meta)?;
        let mut d = Checked::open(data_path, data_meta)?;
        let res = check(&mut g, &mut d, meta);
        // A checksum mismatch explains a structural error better than the
        // structural error itself, so finish hashing before reporting.
        if let Err(structural) = res {
            for c in [&mut g, &mut d] {
                let mut sink = vec![0u8; 1 << 16];
                while c.left() > 0 {
                    let n = (c.left() as usize).min(sink.len());
                    if c.bytes(&mut sink[..n]).is_err() {
                        return Err(structural);
                    }
                }
            }
            let (gm, dm) = (graph_meta, data_meta);
            g.finish(gm)?;
            d.finish(dm)?;
            return Err(structural);
        }
        g.finish(graph_meta)?;
        d.finish(data_meta)?;
        Ok(())
    }

    fn check(g: &mut Checked, d: &mut Checked, meta: &Meta) -> Result<(), AnnError> {
        let n = meta.len;
        let dim = meta.dim;
        // --- description
        g.magic(MAGICDESCR_4, "description")?;
        if g.u8()? != 1 {
            return Err(g.bad("dump mode is not Full"));
        }
        if g.u8()? as usize != meta.params.max_connections {
            return Err(g.bad("max_connections differs from metadata"));
        }
        let scale = g.f64()?;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(g.bad("bad level scale"));
        }
        if g.u8()? as usize != NB_LAYER_MAX {
            return Err(g.bad("bad layer count in description"));
        }
        let _ef = g.usize()?;
        if g.usize()? != n {
            return Err(g.bad("point count differs from metadata"));
        }
        if g.usize()? != dim {
            return Err(g.bad("dimension differs from metadata"));
        }
        let dist = g.string("distance name")?;
        if dist.rsplit("::").next() != Some("UnitCosine") {
            return Err(g.bad(format!("unexpected distance {dist:?}")));
        }
        if g.string("type name")? != "f32" {
            return Err(g.bad("vector type is not f32"));
        }
        // --- data header
        d.magic(MAGICDATAP, "data header")?;
        if d.usize()? != dim {
            return Err(d.bad("dimension differs from metadata"));
        }
        let vec_bytes = (dim as u64) * 4;
        let mut vbuf = vec![0u8; dim * 4];
        // --- layers
        let nb_layer = g.u8()? as usize;
        if nb_layer > NB_LAYER_MAX {
            return Err(g.bad("too many layers"));
        }
        let mut layer_size = [0usize; NB_LAYER_MAX];
        let mut max_ref: [i64; NB_LAYER_MAX] = [-1; NB_LAYER_MAX];
        let mut seen = vec![false; n];
        let mut total = 0usize;
        for (l, size) in layer_size.iter_mut().enumerate().take(nb_layer) {
            g.magic(MAGICLAYER, "layer")?;
            let nbp = g.count(POINT_BYTES, "point")?;
            *size = nbp;
            for r in 0..nbp {
                g.magic(MAGICPOINT, "point")?;
                let origin = g.usize()?;
                if origin >= n || seen[origin] {
                    return Err(g.bad(format!("bad or repeated point id {origin}")));
                }
                seen[origin] = true;
                if g.u8()? as usize != l || g.i32()? as i64 != r as i64 {
                    return Err(g.bad("point stored out of place"));
                }
                for _ in 0..NB_LAYER_MAX {
                    let nbn = g.count(NEIGHBOUR_BYTES, "neighbour")?;
                    for _ in 0..nbn {
                        let nid = g.usize()?;
                        let nl = g.u8()? as usize;
                        let nr = g.i32()?;
                        let nd = g.f32()?;
                        if nid >= n || nl >= NB_LAYER_MAX || nr < 0 || !nd.is_finite() {
                            return Err(g.bad("bad neighbour record"));
                        }
                        max_ref[nl] = max_ref[nl].max(nr as i64);
                    }
                }
                // matching data record
                d.magic(MAGICDATAP, "vector")?;
                if d.u64()? != origin as u64 {
                    return Err(d.bad("vector id differs from graph"));
                }
                if d.u64()? != vec_bytes {
                    return Err(d.bad("bad vector length"));
                }
                d.bytes(&mut vbuf)?;
                if vbuf
                    .chunks_exact(4)
                    .any(|b| !f32::from_ne_bytes(b.try_into().expect("4 bytes")).is_finite())
                {
                    return Err(d.bad("non-finite vector value"));
                }
                total += 1;
            }
        }
        if total != n {
            return Err(g.bad(format!("{total} points stored, {n} expected")));
        }
        for l in 0..NB_LAYER_MAX {
            if max_ref[l] >= 0 && (l >= nb_layer || max_ref[l] as u64 >= layer_size[l] as u64) {
                return Err(g.bad("neighbour refers to a missing point"));
            }
        }
        // --- entry point
        let _ep_origin = g.usize()?;
        let ep_layer = g.u8()? as usize;
        let ep_rank = g.i32()?;
        if ep_layer >= nb_layer || ep_rank < 0 || ep_rank as usize >= layer_size[ep_layer] {
            return Err(g.bad("bad entry point"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// splitmix64: tiny seeded PRNG for reproducible test data.
    pub(super) struct Rng(u64);
    impl Rng {
        pub(super) fn new(seed: u64) -> Self {
            Rng(seed)
        }
        pub(super) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        pub(super) fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        pub(super) fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
        /// Standard normal (Box-Muller).
        pub(super) fn gauss(&mut self) -> f32 {
            let (u, v) = (self.unit(), self.unit());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        }
    }

    pub(super) fn normalize(v: &mut [f32]) {
        let n = dot(v, v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
    }

    /// `n` unit vectors around `clusters` random unit centres; the noise
    /// vector has expected norm `spread` before normalization.
    pub(super) fn clustered(
        n: usize,
        dim: usize,
        clusters: usize,
        spread: f32,
        seed: u64,
    ) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut centres = vec![0f32; clusters * dim];
        for c in centres.chunks_exact_mut(dim) {
            c.iter_mut().for_each(|x| *x = rng.gauss());
            normalize(c);
        }
        let sigma = spread / (dim as f32).sqrt();
        let mut out = vec![0f32; n * dim];
        for row in out.chunks_exact_mut(dim) {
            let c = rng.below(clusters);
            let centre = &centres[c * dim..(c + 1) * dim];
            for (x, m) in row.iter_mut().zip(centre) {
                *x = m + sigma * rng.gauss();
            }
            normalize(row);
        }
        out
    }

    pub(super) fn recall_at(
        g: &AnnGraph,
        data: &[f32],
        queries: &[f32],
        dim: usize,
        k: usize,
        ef: usize,
    ) -> f64 {
        let mut found = 0usize;
        let mut total = 0usize;
        for q in queries.chunks_exact(dim) {
            let truth: HashSet<usize> = exact_search(data, dim, q, k, None)
                .iter()
                .map(|h| h.id)
                .collect();
            let got = g.search(q, k, ef, None);
            found += got.iter().filter(|h| truth.contains(&h.id)).count();
            total += truth.len();
        }
        found as f64 / total as f64
    }

    fn small_params() -> AnnParams {
        // keep dev-profile tests fast (our crate is built without optimization)
        AnnParams {
            max_connections: 16,
            ef_construction: 64,
        }
    }

    fn assert_sorted(hits: &[Hit]) {
        for w in hits.windows(2) {
            assert_eq!(rank_cmp(&w[0], &w[1]), std::cmp::Ordering::Less, "{hits:?}");
        }
    }

    #[test]
    fn is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<AnnGraph>();
        check::<AnnError>();
    }

    #[test]
    fn distance_never_negative_or_nan() {
        let mut v = vec![0.0f32; 512];
        let mut rng = Rng::new(1);
        v.iter_mut().for_each(|x| *x = rng.gauss());
        normalize(&mut v);
        let d = UnitCosine.eval(&v, &v);
        assert!((0.0..1e-5).contains(&d));
        let mut w = v.clone();
        w.iter_mut().for_each(|x| *x *= 1.001); // dot > 1
        assert_eq!(UnitCosine.eval(&v, &w), 0.0);
        let nan = vec![f32::NAN; 512];
        assert_eq!(UnitCosine.eval(&v, &nan), 2.0);
        // dot matches a naive f64 sum
        let naive: f64 = v.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((dot(&v, &w) as f64 - naive).abs() < 1e-5);
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
    }

    #[test]
    fn exact_search_matches_full_sort() {
        for &(n, dim) in &[(0usize, 3usize), (1, 3), (37, 5), (40_000, 4)] {
            let mut data = clustered(n, dim, 7, 0.6, 42 + n as u64);
            // ties: duplicate a few rows
            if n > 10 {
                let r: Vec<f32> = data[..dim].to_vec();
                data[5 * dim..6 * dim].copy_from_slice(&r);
                data[9 * dim..10 * dim].copy_from_slice(&r);
            }
            let q: Vec<f32> = if n > 0 {
                data[..dim].to_vec()
            } else {
                vec![0.5; dim]
            };
            let allow_odd = |id: usize| id % 2 == 1;
            for allow in [None, Some(&allow_odd as &(dyn Fn(usize) -> bool + Sync))] {
                let mut all: Vec<Hit> = data
                    .chunks_exact(dim)
                    .enumerate()
                    .filter(|(i, _)| allow.is_none_or(|f| f(*i)))
                    .map(|(id, r)| Hit {
                        id,
                        score: 1.0 - (1.0 - dot(r, &q)).clamp(0.0, 2.0),
                    })
                    .collect();
                sort_hits(&mut all);
                for k in [0, 1, 3, 10, 100, n + 5] {
                    let got = exact_search(&data, dim, &q, k, allow);
                    assert_eq!(got, all[..k.min(all.len())].to_vec(), "n={n} k={k}");
                }
            }
        }
        assert!(exact_search(&[1.0, 0.0], 2, &[1.0], 1, None).is_empty());
        assert!(exact_search(&[1.0, 0.0], 0, &[], 1, None).is_empty());
    }

    /// The oracle test: HNSW top-10 vs exact top-10 on clustered data, plus
    /// findability of every point (one build, to keep dev-profile tests fast).
    #[test]
    fn recall_and_findability_at_default_ef() {
        let (n, nq, dim) = (2000, 100, 64);
        let all = clustered(n + nq, dim, 20, 1.0, 7);
        let (data, queries) = all.split_at(n * dim);
        let t = std::time::Instant::now();
        let g = AnnGraph::build(data, dim, &small_params()).unwrap();
        let build_s = t.elapsed().as_secs_f64();
        assert_eq!(g.len(), n);
        let r = recall_at(&g, data, queries, dim, 10, DEFAULT_EF_SEARCH);
        let r10 = recall_at(&g, data, queries, dim, 10, 10);
        eprintln!(
            "n={n} dim={dim}: build {build_s:.2}s, recall@10 {r:.4} at ef={DEFAULT_EF_SEARCH}, {r10:.4} at ef=10"
        );
        assert!(r >= 0.95, "recall@10 = {r}");
        for q in queries.chunks_exact(dim).take(10) {
            let hits = g.search(q, 10, DEFAULT_EF_SEARCH, None);
            assert_eq!(hits.len(), 10);
            assert_sorted(&hits);
        }
        let missing: Vec<usize> = (0..n)
            .into_par_iter()
            .step_by(3)
            .filter(|&i| {
                let q = &data[i * dim..(i + 1) * dim];
                !g.search(q, 10, DEFAULT_EF_SEARCH, None)
                    .iter()
                    .any(|h| h.id == i)
            })
            .collect();
        assert!(missing.is_empty(), "unfindable: {missing:?}");
    }

    #[test]
    fn duplicates_do_not_panic_and_are_all_found() {
        let dim = 32;
        let others = clustered(300, dim, 5, 0.8, 3);
        let dup = others[..dim].to_vec();
        // 50 identical copies interleaved with other vectors
        let mut data = Vec::new();
        let mut dup_ids = Vec::new();
        for (i, row) in others.chunks_exact(dim).enumerate() {
            if i % 6 == 0 && dup_ids.len() < 50 {
                dup_ids.push(data.len() / dim);
                data.extend_from_slice(&dup);
            }
            data.extend_from_slice(row);
        }
        while dup_ids.len() < 50 {
            dup_ids.push(data.len() / dim);
            data.extend_from_slice(&dup);
        }
        let g = AnnGraph::build(&data, dim, &small_params()).unwrap();
        // others[0] equals dup too, so 51 exact copies in total
        let copies: HashSet<usize> = data
            .chunks_exact(dim)
            .enumerate()
            .filter(|(_, r)| *r == &dup[..])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(copies.len(), 51);
        for k in [51, 60, 100] {
            for ef in [1, DEFAULT_EF_SEARCH] {
                let hits = g.search(&dup, k, ef, None);
                assert_eq!(hits.len(), k);
                let got: HashSet<usize> = hits.iter().map(|h| h.id).collect();
                assert!(copies.is_subset(&got), "k={k} ef={ef}");
                assert_sorted(&hits);
            }
        }
        // k = 50 of 51 tied copies: ties are broken by id
        let hits = g.search(&dup, 50, DEFAULT_EF_SEARCH, None);
        let mut expect: Vec<usize> = copies.iter().copied().collect();
        expect.sort();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), expect[..50]);
        assert!(hits
            .iter()
            .all(|h| h.score == hits[0].score && h.score > 0.9999));
        // every copy searched by its own vector is found with k >= #copies
        for &i in &dup_ids {
            let hits = g.search(&data[i * dim..(i + 1) * dim], 51, 64, None);
            assert!(hits.iter().any(|h| h.id == i));
        }
    }

    #[test]
    fn filter_hides_ids_and_still_returns_k() {
        let (n, dim) = (1000, 32);
        let data = clustered(n, dim, 10, 0.8, 5);
        let g = AnnGraph::build(&data, dim, &small_params()).unwrap();
        let q = &data[..dim];
        let even = |id: usize| id.is_multiple_of(2);
        let only5 = |id: usize| id % 200 == 3; // ids 3, 203, ..., 803
        let none = |_: usize| false;
        let near = |id: usize| id != 0; // hide the query itself
        for ef in [1, 10, DEFAULT_EF_SEARCH, 500] {
            let hits = g.search(q, 10, ef, Some(&even));
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.id % 2 == 0));
            assert_sorted(&hits);

            let hits = g.search(q, 10, ef, Some(&only5));
            let ids: Vec<usize> = hits.iter().map(|h| h.id).collect();
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, vec![3, 203, 403, 603, 803]);
            assert_eq!(hits, exact_search(&data, dim, q, 10, Some(&only5)));

            assert!(g.search(q, 10, ef, Some(&none)).is_empty());

            let hits = g.search(q, 10, ef, Some(&near));
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.id != 0));
        }
        // heavy filtering (99% hidden) still gives k exact-quality results
        let sparse = |id: usize| id % 100 == 7;
        let hits = g.search(q, 10, DEFAULT_EF_SEARCH, Some(&sparse));
        assert_eq!(hits, exact_search(&data, dim, q, 10, Some(&sparse)));
    }

    #[test]
    fn edge_cases_never_panic() {
        let dim = 8;
        // empty
        let g = AnnGraph::build(&[], dim, &AnnParams::default()).unwrap();
        assert!(g.is_empty());
        assert!(g.search(&[0.0; 8], 10, 10, None).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let files = g.save(dir.path(), "empty").unwrap();
        assert_eq!(files, vec![dir.path().join("empty.ann.json")]);
        let g2 = AnnGraph::load(dir.path(), "empty").unwrap();
        assert!(g2.is_empty() && g2.dim() == dim);
        assert!(g2.search(&[0.0; 8], 10, 10, None).is_empty());

        // one point
        let mut v = vec![0f32; dim];
        v[3] = 1.0;
        let g = AnnGraph::build(&v, dim, &AnnParams::default()).unwrap();
        for (k, ef) in [(1, 1), (10, 1), (10, 100), (0, 10)] {
            let hits = g.search(&v, k, ef, None);
            assert_eq!(hits.len(), k.min(1));
            if k > 0 {
                assert_eq!(hits[0], Hit { id: 0, score: 1.0 });
            }
        }
        assert!(g.search(&v, 10, 10, Some(&|_| false)).is_empty());
        g.save(dir.path(), "one").unwrap();
        let g2 = AnnGraph::load(dir.path(), "one").unwrap();
        assert_eq!(g2.search(&v, 5, 5, None), vec![Hit { id: 0, score: 1.0 }]);

        // k > n, ef < k, k = 0, wrong query dimension, NaN query
        let data = clustered(20, dim, 3, 0.5, 9);
        let g = AnnGraph::build(&data, dim, &AnnParams::default()).unwrap();
        let q = &data[..dim];
        let hits = g.search(q, 100, 1, None);
        assert_eq!(hits.len(), 20);
        assert_eq!(hits.iter().map(|h| h.id).collect::<HashSet<_>>().len(), 20);
        assert_eq!(hits, exact_search(&data, dim, q, 100, None));
        assert_eq!(g.search(q, 10, 0, None).len(), 10);
        assert!(g.search(q, 0, 10, None).is_empty());
        assert!(g.search(&q[1..], 5, 10, None).is_empty());
        let nan = vec![f32::NAN; dim];
        assert!(g.search(&nan, 5, 10, None).is_empty());
        assert!(exact_search(&data, dim, &nan, 5, None).is_empty());
    }

    #[test]
    fn invalid_input_is_an_error() {
        let p = AnnParams::default();
        assert!(AnnGraph::build(&[1.0], 0, &p).is_err());
        assert!(AnnGraph::build(&[1.0, 0.0, 0.0], 2, &p).is_err());
        assert!(AnnGraph::build(&[f32::NAN, 0.0], 2, &p).is_err());
        assert!(AnnGraph::build(&[0.0, 0.0], 2, &p).is_err());
        assert!(AnnGraph::build(&[3.0, 4.0], 2, &p).is_err());
        assert!(AnnGraph::build(&[0.6, 0.8], 2, &p).is_ok());
        // absurd parameters are clamped, not fatal (hnsw_rs exits above 256)
        let wild = AnnParams {
            max_connections: 1000,
            ef_construction: 0,
        };
        let g = AnnGraph::build(&[0.6, 0.8, 0.8, 0.6], 2, &wild).unwrap();
        assert_eq!(g.params().max_connections, 255);
        let dir = tempfile::tempdir().unwrap();
        g.save(dir.path(), "wild").unwrap();
        AnnGraph::load(dir.path(), "wild").unwrap();
        for bad in ["", ".hidden", "a/b", "a\\b"] {
            assert!(matches!(
                g.save(dir.path(), bad),
                Err(AnnError::InvalidPath(_))
            ));
            assert!(AnnGraph::load(dir.path(), bad).is_err());
        }
        assert!(matches!(
            g.save(&dir.path().join("nope"), "x"),
            Err(AnnError::InvalidPath(_))
        ));
        assert!(matches!(
            AnnGraph::load(dir.path(), "nope"),
            Err(AnnError::Missing(_))
        ));
    }

    #[test]
    fn save_load_roundtrip_is_identical() {
        let (n, dim) = (600, 32);
        let data = clustered(n + 30, dim, 8, 0.8, 21);
        let (data, queries) = data.split_at(n * dim);
        let g = AnnGraph::build(data, dim, &small_params()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = g.save(dir.path(), "idx").unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["idx.hnsw.graph", "idx.hnsw.data", "idx.ann.json"]);
        assert!(files
            .iter()
            .all(|f| f.parent() == Some(dir.path()) && f.is_file()));
        // no temporary leftovers
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);

        let l = AnnGraph::load(dir.path(), "idx").unwrap();
        assert_eq!(
            (l.len(), l.dim(), l.params()),
            (g.len(), g.dim(), g.params())
        );
        let odd = |id: usize| id % 2 == 1;
        for q in queries.chunks_exact(dim) {
            for ef in [10, DEFAULT_EF_SEARCH] {
                assert_eq!(g.search(q, 10, ef, None), l.search(q, 10, ef, None));
                assert_eq!(
                    g.search(q, 10, ef, Some(&odd)),
                    l.search(q, 10, ef, Some(&odd))
                );
            }
        }
        // saving again (also from the reloaded graph, which hnsw_rs flags as
        // mmapped and would dump under a random name) keeps exact names
        let again = l.save(dir.path(), "idx").unwrap();
        assert_eq!(again, files);
        let again2 = g.save(dir.path(), "idx").unwrap();
        assert_eq!(again2, files);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
        let l2 = AnnGraph::load(dir.path(), "idx").unwrap();
        let q = &queries[..dim];
        assert_eq!(g.search(q, 10, 64, None), l2.search(q, 10, 64, None));
        // graph is usable from another thread and outlives the files
        drop(dir);
        let h = std::thread::spawn(move || l2.search(&[0.0; 32], 3, 10, None).len());
        assert_eq!(h.join().unwrap(), 3);
    }

    /// Clusters with low intrinsic dimension, closer to real image
    /// embeddings: each point is its centre plus a combination of `rank`
    /// cluster-specific directions (norm ~`spread`) plus small isotropic
    /// noise (norm ~`spread / 4`).
    pub(super) fn clustered_lowrank(
        n: usize,
        dim: usize,
        clusters: usize,
        rank: usize,
        spread: f32,
        seed: u64,
    ) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut centres = vec![0f32; clusters * dim];
        let mut basis = vec![0f32; clusters * rank * dim];
        for c in centres.chunks_exact_mut(dim) {
            c.iter_mut().for_each(|x| *x = rng.gauss());
            normalize(c);
        }
        for b in basis.chunks_exact_mut(dim) {
            b.iter_mut().for_each(|x| *x = rng.gauss());
            normalize(b);
        }
        let coef = spread / (rank as f32).sqrt();
        let iso = spread / 4.0 / (dim as f32).sqrt();
        let mut out = vec![0f32; n * dim];
        let mut w = vec![0f32; rank];
        for row in out.chunks_exact_mut(dim) {
            let c = rng.below(clusters);
            row.copy_from_slice(&centres[c * dim..(c + 1) * dim]);
            w.iter_mut().for_each(|x| *x = coef * rng.gauss());
            for (j, wj) in w.iter().enumerate() {
                let b = &basis[(c * rank + j) * dim..(c * rank + j + 1) * dim];
                row.iter_mut().zip(b).for_each(|(x, y)| *x += wj * y);
            }
            row.iter_mut().for_each(|x| *x += iso * rng.gauss());
            normalize(row);
        }
        out
    }

    fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn pct(sorted: &[f64], p: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    /// Release-mode measurement (run by hand):
    /// `cargo test --release --lib ann::tests::measure -- --ignored --nocapture`
    /// Env: ANN_N (100000), ANN_DIM (512), ANN_CLUSTERS (20), ANN_DATA
    /// (lowrank|iso), ANN_BUILD (serial,parallel), ANN_M, ANN_EFC.
    #[test]
    #[ignore]
    fn measure_recall_latency() {
        use std::time::Instant;
        let n = env_usize("ANN_N", 100_000);
        let dim = env_usize("ANN_DIM", 512);
        let clusters = env_usize("ANN_CLUSTERS", 20);
        let nq = env_usize("ANN_Q", 1000);
        let kind = std::env::var("ANN_DATA").unwrap_or_else(|_| "lowrank".into());
        let builds = std::env::var("ANN_BUILD").unwrap_or_else(|_| "serial,parallel".into());
        let params = AnnParams {
            max_connections: env_usize("ANN_M", AnnParams::default().max_connections),
            ef_construction: env_usize("ANN_EFC", AnnParams::default().ef_construction),
        };
        let t = Instant::now();
        let all = match kind.as_str() {
            "iso" => clustered(n + nq, dim, clusters, 0.8, 1234),
            _ => clustered_lowrank(n + nq, dim, clusters, 16, 0.8, 1234),
        };
        let (data, queries) = all.split_at(n * dim);
        eprintln!(
            "data {kind}: n={n} dim={dim} clusters={clusters} queries={nq} \
             threads={} params={params:?} (gen {:.1}s)",
            rayon::current_num_threads(),
            t.elapsed().as_secs_f64()
        );
        let k = 10;
        let t = Instant::now();
        let truth: Vec<Vec<Hit>> = queries
            .par_chunks_exact(dim)
            .map(|q| exact_search(data, dim, q, k, None))
            .collect();
        let exact_ms = t.elapsed().as_secs_f64() * 1e3 / nq as f64;
        let mut lat = Vec::new();
        for q in queries.chunks_exact(dim).take(200) {
            let t = Instant::now();
            std::hint::black_box(exact_search(data, dim, q, k, None));
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        eprintln!(
            "exact_search: {exact_ms:.2} ms/query amortized over rayon; single query p50 {:.2} ms p99 {:.2} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        for mode in builds.split(',') {
            let parallel = mode == "parallel";
            let t = Instant::now();
            let g = AnnGraph::build_impl(data, dim, &params, parallel).unwrap();
            let build_s = t.elapsed().as_secs_f64();
            eprintln!("\n== build {mode}: {build_s:.1}s");
            // findability: every point searched with its own vector
            for (fk, fef) in [(1usize, 10usize), (10, 10), (10, DEFAULT_EF_SEARCH)] {
                let t = Instant::now();
                let missing: Vec<usize> = (0..n)
                    .into_par_iter()
                    .filter(|&i| {
                        let q = &data[i * dim..(i + 1) * dim];
                        !g.search(q, fk, fef, None).iter().any(|h| h.id == i)
                    })
                    .collect();
                eprintln!(
                    "findability k={fk} ef={fef}: {} of {n} not found ({:.1}s) {:?}",
                    missing.len(),
                    t.elapsed().as_secs_f64(),
                    &missing[..missing.len().min(10)]
                );
            }
            for ef in [10usize, 16, 24, 32, 48, 64, 96, 128, 200] {
                let mut found = 0usize;
                let mut lat = Vec::with_capacity(nq);
                for (q, tr) in queries.chunks_exact(dim).zip(&truth) {
                    let t = Instant::now();
                    let got = g.search(q, k, ef, None);
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    found += got
                        .iter()
                        .filter(|h| tr.iter().any(|x| x.id == h.id))
                        .count();
                }
                lat.sort_by(f64::total_cmp);
                eprintln!(
                    "ef={ef:4} recall@10={:.4} latency p50={:.3}ms p99={:.3}ms",
                    found as f64 / (nq * k) as f64,
                    pct(&lat, 0.5),
                    pct(&lat, 0.99)
                );
            }
            // filtered: 10% of ids hidden
            let allow = |id: usize| !id.is_multiple_of(10);
            let mut lat = Vec::new();
            let mut found = 0;
            for q in queries.chunks_exact(dim).take(200) {
                let tr = exact_search(data, dim, q, k, Some(&allow));
                let t = Instant::now();
                let got = g.search(q, k, DEFAULT_EF_SEARCH, Some(&allow));
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                found += got
                    .iter()
                    .filter(|h| tr.iter().any(|x| x.id == h.id))
                    .count();
            }
            lat.sort_by(f64::total_cmp);
            eprintln!(
                "filtered (10% hidden) ef={DEFAULT_EF_SEARCH}: recall@10={:.4} p50={:.3}ms p99={:.3}ms",
                found as f64 / (200 * k) as f64,
                pct(&lat, 0.5),
                pct(&lat, 0.99)
            );
            if !parallel {
                let dir = tempfile::tempdir().unwrap();
                let t = Instant::now();
                let files = g.save(dir.path(), "bench").unwrap();
                let save_s = t.elapsed().as_secs_f64();
                let sizes: Vec<u64> = files.iter().map(|f| f.metadata().unwrap().len()).collect();
                let t = Instant::now();
                let l = AnnGraph::load(dir.path(), "bench").unwrap();
                eprintln!(
                    "save {save_s:.1}s load {:.1}s sizes {sizes:?}",
                    t.elapsed().as_secs_f64()
                );
                let q = &queries[..dim];
                assert_eq!(l.search(q, k, 64, None), g.search(q, k, 64, None));
            }
        }
    }

    /// Recomputes the size and CRC of `name` in the metadata, so that the
    /// structural validator (not the checksum) has to catch the damage.
    fn reseal(dir: &Path, base: &str, name: &str) {
        let mp = dir.join(format!("{base}{META_SUFFIX}"));
        let mut meta: Meta = serde_json::from_slice(&fs::read(&mp).unwrap()).unwrap();
        let (bytes, crc32) = checksum_and_sync(&dir.join(name)).unwrap();
        for f in &mut meta.files {
            if f.name == name {
                f.bytes = bytes;
                f.crc32 = crc32;
            }
        }
        fs::write(&mp, serde_json::to_vec(&meta).unwrap()).unwrap();
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let (n, dim) = (120, 8);
        let data = clustered(n, dim, 4, 0.8, 31);
        let g = AnnGraph::build(&data, dim, &small_params()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let files = g.save(d, "pristine").unwrap();
        let originals: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
        let restore = || {
            for (f, b) in files.iter().zip(&originals) {
                fs::write(f, b).unwrap();
            }
        };
        let mut rng = Rng::new(99);
        let q = &data[..dim];
        let reference = g.search(q, 10, 64, None);
        let mut structural_ok = 0;
        for (fi, name) in ["pristine.hnsw.graph", "pristine.hnsw.data"]
            .iter()
            .enumerate()
        {
            let path = d.join(name);
            let orig = &originals[fi];
            // truncations, with and without a matching checksum
            for cut in [0, 1, 4, 20, orig.len() / 3, orig.len() / 2, orig.len() - 1] {
                for resealed in [false, true] {
                    restore();
                    fs::write(&path, &orig[..cut]).unwrap();
                    if resealed {
                        reseal(d, "pristine", name);
                    }
                    let r = AnnGraph::load(d, "pristine");
                    assert!(
                        matches!(r, Err(AnnError::Corrupt { .. })),
                        "{name} cut at {cut} resealed={resealed}: {r:?}"
                    );
                }
            }
            // random bit flips: always detected by the checksum
            for _ in 0..40 {
                restore();
                let mut b = orig.clone();
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
                fs::write(&path, &b).unwrap();
                let r = AnnGraph::load(d, "pristine");
                assert!(matches!(r, Err(AnnError::Corrupt { .. })), "{r:?}");
                // with a matching checksum the validator must keep hnsw_rs
                // from panicking or exiting; benign flips may load
                reseal(d, "pristine", name);
                if let Ok(l) = AnnGraph::load(d, "pristine") {
                    structural_ok += 1;
                    let _ = l.search(q, 10, 64, None);
                }
            }
            // trailing garbage
            restore();
            let mut b = orig.clone();
            b.extend_from_slice(&[0u8; 9]);
            fs::write(&path, &b).unwrap();
            reseal(d, "pristine", name);
            assert!(AnnGraph::load(d, "pristine").is_err());
            // missing
            restore();
            fs::remove_file(&path).unwrap();
            assert!(matches!(
                AnnGraph::load(d, "pristine"),
                Err(AnnError::Missing(_))
            ));
        }
        // metadata damage
        let mp = d.join("pristine.ann.json");
        for garbage in [&b""[..], b"{", b"[1,2]", b"{\"format\":\"plip-ann\"}"] {
            restore();
            fs::write(&mp, garbage).unwrap();
            assert!(matches!(
                AnnGraph::load(d, "pristine"),
                Err(AnnError::Corrupt { .. })
            ));
        }
        restore();
        let text = String::from_utf8(originals[2].clone()).unwrap();
        fs::write(&mp, text.replace("\"len\": 120", "\"len\": 121")).unwrap();
        assert!(AnnGraph::load(d, "pristine").is_err());
        // error messages say what to do
        let msg = AnnGraph::load(d, "pristine").unwrap_err().to_string();
        assert!(msg.contains("plip index --rebuild"), "{msg}");
        // and the pristine files still load and agree
        restore();
        let l = AnnGraph::load(d, "pristine").unwrap();
        assert_eq!(l.search(q, 10, 64, None), reference);
        eprintln!("resealed flips that loaded: {structural_ok}/80");
    }
}
