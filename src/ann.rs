//! Approximate (HNSW) and exact nearest-neighbour search over L2-normalized
//! embeddings, scored by cosine similarity (= dot product for unit vectors).
//!
//! # Why this module exists
//!
//! `hnsw_rs` builds good graphs but is unsafe to use as-is (measured by the
//! ignored tests `measure_recall_latency` and `diagnose_hnsw_rs_search`):
//!
//! * its `DistDot`/`DistCosine` assert `1 - dot >= 0`, which panics on
//!   duplicate images (dot rounds above 1): we use [`UnitCosine`], which
//!   clamps and never returns NaN;
//! * its search walks only one hop per upper layer before the layer-0 beam
//!   search. On the same graph (100k clustered 512-d vectors) a textbook
//!   HNSW search gets recall@10 0.9998 at ef=64 where `Hnsw::search` gets
//!   0.970, and 0.2% instead of 3.6% of points are not found by their own
//!   vector;
//! * its loader panics, calls `process::exit` or reads out of bounds on
//!   damaged files, ties the graph's lifetime to the loader, and its
//!   `file_dump` may silently choose other file names;
//! * it stores every edge as an `Arc` (about 50 bytes per edge).
//!
//! So `hnsw_rs` is used only to *construct* the graph. [`AnnGraph::build`]
//! then copies the graph into compact arrays (`u32` ids, CSR layout), adds
//! edges to any point that its own vector cannot find (see
//! [`BuildStats`]), and drops the `hnsw_rs` structure. Search is our own
//! textbook HNSW search, which walks the graph on 8-bit codes of the
//! vectors and scores what it found on the `f32` vectors
//! ([`AnnGraph::coded_walk`]); persistence is our own single-file format with
//! a CRC32, fully validated on load.
//!
//! # Guarantees
//!
//! * Ids are row indices `0..n` of the matrix given to [`AnnGraph::build`].
//! * Results are sorted by score descending, ties by id ascending. Scores
//!   are cosine similarities in `[-1, 1]`, bit-identical between
//!   [`AnnGraph::search`] and [`exact_search`] for the same vector.
//! * [`AnnGraph::search`] returns `min(k, allowed points)` hits, never a
//!   hidden id, and never panics (empty graph, one point, `k > n`,
//!   `ef < k`, `k == 0`, wrong query length, NaN query).
//! * Every point is returned in the top 10 of a search for its own vector
//!   at ef = 64: checked and repaired at build time, with the 8-bit walk the
//!   graph searches with by default, and
//!   [`BuildStats::unfindable_after_repair`] says when that failed.
//! * Building is deterministic by default (serial insertion, seeded level
//!   generator).
//! * [`AnnGraph::load`] returns an error, never panics or aborts, on
//!   truncated, bit-flipped or otherwise damaged files.
//! * [`AnnGraph`] is owned, `'static`, `Send + Sync`.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use hnsw_rs::anndists::dist::distances::Distance;
use hnsw_rs::prelude::Hnsw;
use rayon::prelude::*;

/// Default `ef` (layer-0 candidate list size) for [`AnnGraph::search`].
///
/// Measured recall@10 vs [`exact_search`] and p50 latency, 512-d vectors,
/// default [`AnnParams`], release build, one thread per query, the 8-bit
/// walk ([`AnnGraph::coded_walk`]), on this project's 2-core VM:
///
/// | ef  | 20k, 100 clusters | 100k, 100 clusters | 1M, 100 clusters | 100k isotropic noise in 20 clusters (worst case) |
/// |-----|-----------------|-----------------|-----------------|-----------------|
/// | 64  | 1.000, 0.13 ms  | 0.991, 0.16 ms  | 0.810, 0.48 ms  | 0.901, 0.22 ms  |
/// | 128 | 1.000, 0.20 ms  | 0.999, 0.29 ms  | 0.921, 0.78 ms  | 0.969, 0.39 ms  |
/// | 256 | 1.000, 0.39 ms  | 1.000, 0.40 ms  | 0.973, 1.24 ms  | 0.993, 0.52 ms  |
///
/// The first three columns are `benches/hnsw.rs` (500 queries; the 20k and
/// 1M graphs were built with parallel insertion), the last is the ignored
/// test `measure_recall_latency` with `ANN_DATA=iso` (1000 queries). 256
/// keeps recall@10 above 0.95 at a million points for about a millisecond
/// per query, negligible next to encoding the text query.
pub const DEFAULT_EF_SEARCH: usize = 256;

/// `ef` of the build-time findability check (see [`BuildStats`]).
const REPAIR_EF: usize = 64;

/// Largest level `hnsw_rs` can generate (`NB_LAYER_MAX - 1`).
const MAX_LEVELS: usize = 15;

/// Construction parameters of the HNSW graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnParams {
    /// `M`: links per node in upper layers (layer 0 keeps up to `2*M`).
    /// Clamped to `2..=255` (hnsw_rs exits the process above 256).
    pub max_connections: usize,
    /// Candidate list size while inserting; larger = better graph, slower
    /// build.
    pub ef_construction: usize,
    /// Insert with `hnsw_rs::Hnsw::parallel_insert` on the rayon pool
    /// instead of one point at a time. Faster on many cores, but the graph
    /// then depends on thread timing (not reproducible). Either way the
    /// build ends with the findability check and repair, so every point is
    /// found by its own vector. Default: `false` (deterministic).
    pub parallel_insert: bool,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            max_connections: 24,
            ef_construction: 200,
            parallel_insert: false,
        }
    }
}

impl AnnParams {
    fn clamped(&self) -> AnnParams {
        AnnParams {
            max_connections: self.max_connections.clamp(2, 255),
            ef_construction: self.ef_construction.max(1),
            parallel_insert: self.parallel_insert,
        }
    }
}

/// One search result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Row index of the vector in the matrix given to [`AnnGraph::build`].
    pub id: usize,
    /// Cosine similarity to the query (dot product), in `[-1, 1]`.
    pub score: f32,
}

/// What [`AnnGraph::build`] found and fixed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Points that a search for their own vector (k = 10, ef = 64) did not
    /// return, before repair.
    pub unfindable_before_repair: usize,
    /// Points not found by the last check (expected 0). When all
    /// [`MAX_FULL_CHECKS`] full checks found misses, this counts only the
    /// last ones: points hidden by their repair links are not re-checked.
    pub unfindable_after_repair: usize,
    /// Checks of all points that ran (1 when the graph needed no repair).
    pub full_checks: usize,
    /// Searches the findability checks ran in all.
    pub searches: usize,
    /// Wall time of the checks and repairs, in milliseconds.
    pub repair_ms: u64,
}

/// Most checks of every point's findability in one build; see [`BuildStats`].
pub const MAX_FULL_CHECKS: usize = 3;

/// Errors of [`AnnGraph::build`], [`AnnGraph::save`] and [`AnnGraph::load`].
#[derive(thiserror::Error, Debug)]
pub enum AnnError {
    /// The vectors given to `build` are unusable.
    #[error("cannot build the search index: {0}")]
    InvalidInput(String),
    /// The index file does not exist.
    #[error("search index file {} is missing; build it with `plip index`", .0.display())]
    Missing(PathBuf),
    /// The index file exists but cannot be trusted.
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
    /// An operating-system error while reading or writing the index.
    #[error("I/O error on {}: {source}; check that the disk is not full and the directory is writable", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
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

/// Dot product with 16 independent partial sums, reduced pairwise.
/// Symmetric bit for bit: `dot(a, b) == dot(b, a)`.
///
/// On x86-64 it runs on AVX-512 or AVX2 registers when the CPU has them (the
/// crate is compiled for baseline x86-64, where this is four SSE registers).
/// Every variant does the same arithmetic in the same order, so scores do not
/// depend on the CPU.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// [`dot`] in plain Rust, which the compiler vectorizes for the target.
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    reduce(acc, a, b)
}

const LANES: usize = 16;

/// The pairwise sum of the 16 lanes, plus the products of the elements past the
/// last full group of 16.
#[inline(always)]
fn reduce(mut acc: [f32; LANES], a: &[f32], b: &[f32]) -> f32 {
    let full = a.len() / LANES * LANES;
    let mut tail = 0.0f32;
    for (x, y) in a[full..].iter().zip(&b[full..]) {
        tail += x * y;
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0] + tail
}

/// [`dot`] on one AVX-512 register: multiply, then add (no FMA, as in the
/// portable loop). `a` and `b` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm512_setzero_ps();
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        // SAFETY: each chunk holds 16 f32; unaligned loads.
        let (x, y) = unsafe { (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(y.as_ptr())) };
        acc = _mm512_add_ps(acc, _mm512_mul_ps(x, y));
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: `lanes` holds 16 f32.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
    reduce(lanes, a, b)
}

/// [`dot`] on two AVX2 registers (lanes 0-7 and 8-15).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        // SAFETY: each chunk holds 16 f32; unaligned loads of 8 at 0 and 8.
        unsafe {
            let (x0, y0) = (_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
            let (x1, y1) = (
                _mm256_loadu_ps(x.as_ptr().add(8)),
                _mm256_loadu_ps(y.as_ptr().add(8)),
            );
            lo = _mm256_add_ps(lo, _mm256_mul_ps(x0, y0));
            hi = _mm256_add_ps(hi, _mm256_mul_ps(x1, y1));
        }
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: `lanes` holds 16 f32.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
    }
    reduce(lanes, a, b)
}

/// Cosine distance for unit vectors: `1 - dot`, clamped to `[0, 2]`.
///
/// Unlike `anndists::DistDot` it never asserts (identical vectors can have a
/// dot product slightly above 1) and never returns NaN (NaN maps to 2, the
/// largest distance): `hnsw_rs` panics on NaN distances.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    #[inline(always)]
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

/// Score reported for a [`UnitCosine`] distance: `1 - d`, the dot product
/// clamped to `[-1, 1]` (bit-exact for dot >= 0.5, by Sterbenz' lemma).
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
// 8-bit codes for walking the graph
// ---------------------------------------------------------------------------

/// 8-bit copies of the vectors, a quarter of their size, that the layer-0 walk
/// scores instead of the `f32` rows; the candidates it ends with are then
/// scored again on the `f32` rows (see [`AnnGraph::search`]).
///
/// Row `i` is `round(v_i * 127 / max|v_i|)`. A code's cosine with an `f32`
/// query, `q . c / |c|`, is within about `1e-3` of the exact one for 512-d
/// unit vectors; dividing by the code's own norm, computed along with the dot
/// product, needs no per-row scale, which would be one more cache miss per
/// row. At a million vectors nearly every row the walk reads misses the
/// caches, and a code is 8 cache lines where the `f32` row is 32.
///
/// A few dimensions much larger than the rest, as CLIP embeddings have,
/// coarsen the steps of every other value. With four such dimensions the walk
/// still matched the `f32` walk's recall@10 (30k points: 0.9979 vs 0.9978 at
/// ef 128; `measure_recall_latency` with `ANN_DATA=outliers`).
///
/// The codes live in an anonymous mapping that Linux is asked to back with
/// 2 MB pages: with 4 KB pages nearly every row read also missed the TLB, and
/// at 1M points the walk took 30% longer (alternating A/B runs on the bench
/// graph; the same advice for the `f32` rows had gained nothing).
struct Codes {
    dim: usize,
    map: memmap2::MmapMut,
}

impl Clone for Codes {
    fn clone(&self) -> Codes {
        let mut map = memmap2::MmapMut::map_anon(self.map.len())
            .unwrap_or_else(|e| panic!("cannot map {} bytes: {e}", self.map.len()));
        map.copy_from_slice(&self.map);
        Codes { dim: self.dim, map }
    }
}

impl PartialEq for Codes {
    fn eq(&self, other: &Codes) -> bool {
        self.dim == other.dim && self.map[..] == other.map[..]
    }
}

impl std::fmt::Debug for Codes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codes")
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Codes {
    /// The codes of `vectors`; `None` when `dim` is 0 or the memory cannot be
    /// mapped (the walk then reads the `f32` rows).
    fn new(vectors: &[f32], dim: usize) -> Option<Codes> {
        if dim == 0 {
            return None;
        }
        let len = vectors.len() / dim * dim;
        let mut map = memmap2::MmapMut::map_anon(len.max(1)).ok()?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage); // only a hint
        map[..len]
            .par_chunks_mut(dim)
            .zip(vectors.par_chunks(dim))
            .for_each(|(code, row)| encode(row, code));
        Some(Codes { dim, map })
    }

    #[inline(always)]
    fn row(&self, id: u32) -> &[i8] {
        let row = &self.map[id as usize * self.dim..(id as usize + 1) * self.dim];
        bytemuck::cast_slice(row)
    }

    /// Approximate cosine distance of `query` to point `id`.
    #[inline(always)]
    fn distance(&self, query: &[f32], id: u32) -> f32 {
        let (qc, cc) = dot_i8(query, self.row(id));
        if cc > 0.0 {
            1.0 - qc / cc.sqrt()
        } else {
            1.0
        }
    }
}

/// Writes `round(x * 127 / max|x|)` of each `x` in `row` to `code`, as `i8`
/// bits. Written so that both loops vectorize on baseline x86-64 (`f32::max`
/// and `as i32` do not: they handle NaN, which `row` never holds).
#[inline]
fn encode(row: &[f32], code: &mut [u8]) {
    let mut lanes = [0f32; LANES];
    for chunk in row.chunks_exact(LANES) {
        for (m, x) in lanes.iter_mut().zip(chunk) {
            let a = x.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let tail = row.chunks_exact(LANES).remainder();
    let max = lanes
        .iter()
        .chain(tail)
        .fold(0f32, |m, x| if x.abs() > m { x.abs() } else { m });
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    // Adding 1.5 * 2^23 rounds |y| <= 127.x to an integer (ties to even) in
    // the low mantissa bits, from which the integer is read back.
    const MAGIC: f32 = 12_582_912.0;
    for (c, x) in code.iter_mut().zip(row) {
        let y = (x * inv).clamp(-127.0, 127.0);
        *c = ((y + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as u8;
    }
}

/// `(q . c, c . c)` over `min(q.len(), c.len())` elements.
#[inline]
fn dot_i8(q: &[f32], c: &[i8]) -> (f32, f32) {
    let n = q.len().min(c.len());
    let (q, c) = (&q[..n], &c[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { dot_i8_avx512(q, c) };
        }
    }
    dot_i8_portable(q, c)
}

/// The products of the elements past the last full group of `width`.
#[inline(always)]
fn dot_i8_tail(q: &[f32], c: &[i8], width: usize) -> (f32, f32) {
    let full = q.len() / width * width;
    q[full..]
        .iter()
        .zip(&c[full..])
        .fold((0.0, 0.0), |(qc, cc), (x, &y)| {
            let y = f32::from(y);
            (qc + x * y, cc + y * y)
        })
}

#[inline(always)]
fn dot_i8_portable(q: &[f32], c: &[i8]) -> (f32, f32) {
    let (mut qc, mut cc) = ([0.0f32; LANES], [0.0f32; LANES]);
    for (x, y) in q.chunks_exact(LANES).zip(c.chunks_exact(LANES)) {
        for i in 0..LANES {
            let y = f32::from(y[i]);
            qc[i] += x[i] * y;
            cc[i] += y * y;
        }
    }
    let (tq, tc) = dot_i8_tail(q, c, LANES);
    (qc.iter().sum::<f32>() + tq, cc.iter().sum::<f32>() + tc)
}

/// [`dot_i8`] on AVX-512 registers. `q` and `c` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_i8_avx512(q: &[f32], c: &[i8]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let (mut q0, mut q1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (mut c0, mut c1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let pairs = q.len() / 32;
    for i in 0..pairs {
        // SAFETY: `i * 32 + 32 <= len` for both slices; unaligned loads.
        unsafe {
            let (qp, cp) = (q.as_ptr().add(i * 32), c.as_ptr().add(i * 32));
            let f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(cp.cast())));
            let f1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(cp.add(16).cast())));
            q0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp), f0, q0);
            q1 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(16)), f1, q1);
            c0 = _mm512_fmadd_ps(f0, f0, c0);
            c1 = _mm512_fmadd_ps(f1, f1, c1);
        }
    }
    let (tq, tc) = dot_i8_tail(q, c, 32);
    (
        _mm512_reduce_add_ps(_mm512_add_ps(q0, q1)) + tq,
        _mm512_reduce_add_ps(_mm512_add_ps(c0, c1)) + tc,
    )
}

// ---------------------------------------------------------------------------
// Ordering and top-k selection
// ---------------------------------------------------------------------------

/// `Less` means `a` ranks before `b`: higher score first, then lower id.
#[inline]
fn rank_cmp(a: &Hit, b: &Hit) -> Ordering {
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
            if rank_cmp(&h, w) != Ordering::Less {
                return;
            }
        }
        self.buf.push(h);
        if self.buf.len() >= self.k.saturating_mul(2).max(64) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        if self.k > 0 && self.buf.len() > self.k {
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
/// Runs on the rayon pool when `n >= 32768`.
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
    let scan = |chunk: &[f32], first_id: usize| scan_rows(chunk, first_id, query, k, allow);
    if n < EXACT_PAR_MIN_ROWS {
        return scan(rows, 0).finish();
    }
    rows.par_chunks(EXACT_CHUNK_ROWS * dim)
        .enumerate()
        .map(|(ci, chunk)| scan(chunk, ci * EXACT_CHUNK_ROWS))
        .reduce(|| TopK::new(k), TopK::merge)
        .finish()
}

/// Top-`k` of the rows of `chunk` (ids from `first_id`) by dot product with
/// `query`.
fn scan_rows(
    chunk: &[f32],
    first_id: usize,
    query: &[f32],
    k: usize,
    allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> TopK {
    let mut top = TopK::new(k);
    for (i, row) in chunk.chunks_exact(query.len()).enumerate() {
        let id = first_id + i;
        if allow.is_some_and(|f| !f(id)) {
            continue;
        }
        if let Some(score) = score_from_dot(dot(row, query)) {
            top.push(Hit { id, score });
        }
    }
    top
}

// ---------------------------------------------------------------------------
// The graph
// ---------------------------------------------------------------------------

/// Adjacency lists in CSR form: the neighbours of node `i` are
/// `targets[offsets[i]..offsets[i + 1]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Csr {
    offsets: Vec<u64>,
    targets: Vec<u32>,
}

impl Csr {
    fn from_lists(lists: &[Vec<u32>]) -> Csr {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        let mut targets = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        offsets.push(0);
        for l in lists {
            targets.extend_from_slice(l);
            offsets.push(targets.len() as u64);
        }
        Csr { offsets, targets }
    }

    #[inline]
    fn row(&self, i: usize) -> &[u32] {
        &self.targets[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// An upper layer: the sorted ids present on it and their adjacency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct UpperLayer {
    nodes: Vec<u32>,
    adj: Csr,
}

impl UpperLayer {
    #[inline]
    fn neighbours(&self, id: u32) -> &[u32] {
        match self.nodes.binary_search(&id) {
            Ok(i) => self.adj.row(i),
            Err(_) => &[],
        }
    }
}

/// Row-major vectors shared between a graph and their owner, for example the
/// mapped file of an index segment (see [`AnnGraph::load_with_shared_vectors`]).
pub type SharedVectors = Arc<dyn AsRef<[f32]> + Send + Sync>;

/// The vectors a graph searches: its own, or shared.
#[derive(Clone)]
enum Vectors {
    Owned(Vec<f32>),
    Shared(SharedVectors),
}

impl std::ops::Deref for Vectors {
    type Target = [f32];

    #[inline]
    fn deref(&self) -> &[f32] {
        match self {
            Vectors::Owned(v) => v,
            Vectors::Shared(v) => (**v).as_ref(),
        }
    }
}

impl PartialEq for Vectors {
    fn eq(&self, other: &Vectors) -> bool {
        **self == **other
    }
}

/// An HNSW graph over `n` unit vectors with ids `0..n`.
///
/// Owned, `'static`, `Send + Sync`; searches may run concurrently.
/// Memory: the vectors (`4 * dim` bytes per point) plus the links, about
/// 120 bytes per point at default parameters (measured 28 layer-0 links per
/// point at 100k; `hnsw_rs` keeps each link as an `Arc`, roughly 10x more),
/// plus `dim` bytes per point of 8-bit codes (see [`AnnGraph::coded_walk`]).
#[derive(Clone, PartialEq)]
pub struct AnnGraph {
    dim: usize,
    params: AnnParams,
    /// Row-major `len x dim`.
    vectors: Vectors,
    /// Layer 0, one row per id.
    base: Csr,
    /// `upper[l - 1]` is layer `l`; each layer's nodes are a subset of the
    /// layer below.
    upper: Vec<UpperLayer>,
    /// Search entry point: a node of the top layer (0 when empty).
    entry: u32,
    stats: Option<BuildStats>,
    /// What layer 0 is walked on, when not the `f32` rows.
    codes: Option<Codes>,
}

impl std::fmt::Debug for AnnGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnGraph")
            .field("len", &self.len())
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("levels", &self.upper.len())
            .field("links", &self.base.targets.len())
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
    let n = vectors.len() / dim;
    if n > u32::MAX as usize {
        return Err(AnnError::InvalidInput(format!(
            "{n} vectors is more than the supported {}",
            u32::MAX
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
    Ok(n)
}

/// Graph under construction: plain adjacency lists, before CSR packing.
struct Lists {
    level: Vec<u8>,
    /// `adj[l][id]`: neighbours of `id` on layer `l` (empty above its level).
    adj: Vec<Vec<Vec<u32>>>,
}

impl Lists {
    /// Drops empty top layers; returns the entry point, the lowest id on the
    /// top layer.
    fn trim_top(&mut self) -> u32 {
        while self.adj.len() > 1 && !self.level.iter().any(|&l| l as usize >= self.adj.len() - 1) {
            self.adj.pop();
        }
        let top = self.adj.len() - 1;
        self.level
            .iter()
            .position(|&l| l as usize == top)
            .unwrap_or(0) as u32
    }
}

/// Copies the graph out of `hnsw_rs` through its public accessors.
fn extract(hnsw: &Hnsw<'_, f32, UnitCosine>, n: usize) -> Lists {
    let pi = hnsw.get_point_indexation();
    let mut level = vec![0u8; n];
    let mut adj: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); n]];
    for l in 0..=MAX_LEVELS {
        if pi.get_layer_nb_point(l) == 0 {
            continue;
        }
        for p in pi.get_layer_iterator(l) {
            let id = p.get_origin_id();
            level[id] = l as u8;
            while adj.len() <= l {
                adj.push(vec![Vec::new(); n]);
            }
            // hnsw_rs also keeps links on layers above a point's level
            // (entry points met while inserting); search never uses them.
            for (layer, nbs) in p.get_neighborhood_id().iter().enumerate().take(l + 1) {
                let mut out: Vec<u32> = Vec::with_capacity(nbs.len());
                for nb in nbs {
                    let t = nb.d_id as u32;
                    if nb.d_id < n && nb.d_id != id && !out.contains(&t) {
                        out.push(t);
                    }
                }
                adj[layer][id] = out;
            }
        }
    }
    // a link on layer l must point to a node present on layer l
    for (l, layer) in adj.iter_mut().enumerate().skip(1) {
        for list in layer.iter_mut() {
            list.retain(|&t| level[t as usize] as usize >= l);
        }
    }
    Lists { level, adj }
}

#[derive(Clone, Copy, PartialEq)]
struct Cand {
    d: f32,
    id: u32,
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}

/// Read access to a graph in either form, for the shared search routine.
trait Topology {
    fn top_level(&self) -> usize;
    fn entry(&self) -> u32;
    fn upper(&self, level: usize, id: u32) -> &[u32];
    fn base(&self, id: u32) -> &[u32];
    /// Asks the CPU to start loading `base(id)`.
    fn prefetch_base(&self, _id: u32) {}
}

impl Topology for AnnGraph {
    fn top_level(&self) -> usize {
        self.upper.len()
    }
    fn entry(&self) -> u32 {
        self.entry
    }
    #[inline]
    fn upper(&self, level: usize, id: u32) -> &[u32] {
        self.upper[level - 1].neighbours(id)
    }
    #[inline]
    fn base(&self, id: u32) -> &[u32] {
        self.base.row(id as usize)
    }
    #[inline]
    fn prefetch_base(&self, id: u32) {
        prefetch::<_, TO_L1>(self.base.row(id as usize));
    }
}

struct ListsView<'a> {
    lists: &'a Lists,
    entry: u32,
}

impl Topology for ListsView<'_> {
    fn top_level(&self) -> usize {
        self.lists.adj.len() - 1
    }
    fn entry(&self) -> u32 {
        self.entry
    }
    fn upper(&self, level: usize, id: u32) -> &[u32] {
        &self.lists.adj[level][id as usize]
    }
    fn base(&self, id: u32) -> &[u32] {
        &self.lists.adj[0][id as usize]
    }
}

/// Prefetch into the L1 cache (`_MM_HINT_T0`).
const TO_L1: i32 = 3;
/// Prefetch into the L2 cache (`_MM_HINT_T1`).
const TO_L2: i32 = 2;

/// Asks the CPU to start loading the cache lines of `v` into L1 or L2
/// ([`TO_L1`], [`TO_L2`]).
///
/// The walk asks for the codes of a node's new neighbours into L2: in A/B runs
/// at 1M points that was 6% faster than into L1, perhaps because L1 has too few
/// slots for misses to keep a whole neighbourhood's 8 lines per code in flight.
#[inline(always)]
fn prefetch<T, const LEVEL: i32>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = v.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(v)).step_by(64) {
            // SAFETY: the address is inside `v`, and a prefetch is only a hint
            // that never faults.
            unsafe { std::arch::x86_64::_mm_prefetch::<LEVEL>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Textbook HNSW search (Malkov & Yashunin, alg. 2 and 5): greedy walk on
/// each upper layer, then a beam of width `ef` on layer 0. Hidden nodes are
/// traversed but never enter the result set. Returns up to `ef` allowed
/// candidates, closest first by exact distance.
///
/// With `codes`, layer 0 is walked on the codes' approximate distances, and
/// the candidates it ends with are then scored on the `f32` rows.
///
/// The neighbours of each expanded node are prefetched before their distances
/// are computed, so that the memory reads of a whole neighbourhood overlap: at
/// a million 512-d vectors (2 GB) nearly every vector read misses the caches.
fn hnsw_search<T: Topology>(
    g: &T,
    vectors: &[f32],
    dim: usize,
    codes: Option<&Codes>,
    query: &[f32],
    ef: usize,
    allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> Vec<Cand> {
    let n = vectors.len() / dim;
    let row = |id: u32| &vectors[id as usize * dim..(id as usize + 1) * dim];
    let exact = |id: u32| UnitCosine.eval(query, row(id));
    let dist = |id: u32| match codes {
        Some(c) => c.distance(query, id),
        None => exact(id),
    };
    let fetch = |id: u32| match codes {
        Some(c) => prefetch::<_, TO_L2>(c.row(id)),
        None => prefetch::<_, TO_L1>(row(id)),
    };
    let allowed = |id: u32| allow.is_none_or(|f| f(id as usize));
    let mut cur = g.entry();
    let mut dcur = dist(cur);
    for level in (1..=g.top_level()).rev() {
        loop {
            let mut moved = false;
            for &nb in g.upper(level, cur) {
                let d = dist(nb);
                if d < dcur {
                    dcur = d;
                    cur = nb;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }
    let mut visited = vec![0u64; n.div_ceil(64)];
    let mut visit = |id: u32| {
        let (w, b) = (id as usize / 64, id % 64);
        let fresh = visited[w] & (1 << b) == 0;
        visited[w] |= 1 << b;
        fresh
    };
    visit(cur);
    let mut candidates = BinaryHeap::new(); // min-heap via Reverse
    let mut results: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1); // max-heap
    let start = Cand { d: dcur, id: cur };
    candidates.push(Reverse(start));
    if allowed(cur) {
        results.push(start);
    }
    let mut fresh: Vec<u32> = Vec::new();
    while let Some(Reverse(c)) = candidates.pop() {
        if results.len() >= ef && results.peek().is_some_and(|w| c.d > w.d) {
            break;
        }
        fresh.clear();
        for &nb in g.base(c.id) {
            if visit(nb) {
                fetch(nb);
                fresh.push(nb);
            }
        }
        // most often the next node expanded
        if let Some(Reverse(next)) = candidates.peek() {
            g.prefetch_base(next.id);
        }
        for &nb in &fresh {
            let d = dist(nb);
            if results.len() < ef || results.peek().is_some_and(|w| d < w.d) {
                let cand = Cand { d, id: nb };
                candidates.push(Reverse(cand));
                if allowed(nb) {
                    results.push(cand);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
    }
    if codes.is_none() {
        return results.into_sorted_vec();
    }
    // score the walk's candidates on the exact rows
    let mut found = results.into_vec();
    const AHEAD: usize = 4;
    for c in found.iter().take(AHEAD) {
        prefetch::<_, TO_L1>(row(c.id));
    }
    for i in 0..found.len() {
        if let Some(next) = found.get(i + AHEAD) {
            prefetch::<_, TO_L1>(row(next.id));
        }
        found[i].d = exact(found[i].id);
    }
    found.sort_unstable();
    found
}

/// Number of own-vector results checked for findability.
const FINDABILITY_K: usize = 10;

impl AnnGraph {
    /// Builds the graph over the rows of a row-major `n x dim` matrix of
    /// L2-normalized vectors; ids are row indices.
    ///
    /// By default insertion into `hnsw_rs` is serial, so the graph is
    /// deterministic. Measured at 100k x 512-d clustered data on 2 busy
    /// cores: serial 390 s, parallel 275 s; points not found by their own
    /// vector before repair: serial 288, parallel 90; 0 for both after;
    /// recall@10 at ef=64: 0.9997 vs 0.9999. So parallel insertion is not
    /// less correct once checked and repaired (with `Hnsw::search` instead
    /// of ours both looked far worse: 3.8% / 4.4% unfound); it is opt-in
    /// ([`AnnParams::parallel_insert`]) only because it is not
    /// reproducible.
    ///
    /// After insertion every point is searched with its own vector
    /// (parallel; each pass costs about a tenth of the insertion time, and
    /// 2-3 passes are typical); points not returned get links from their
    /// nearest reachable neighbours until all are found (see [`BuildStats`],
    /// available from [`AnnGraph::build_stats`]).
    ///
    /// Errors if `dim == 0`, the length is not a multiple of `dim`, or a row
    /// is non-finite or not unit-norm (within 1e-2). Needs about twice the
    /// final memory while building (hnsw_rs's copy).
    pub fn build(vectors: &[f32], dim: usize, params: &AnnParams) -> Result<AnnGraph, AnnError> {
        Self::build_owned(vectors.to_vec(), dim, params)
    }

    /// [`AnnGraph::build`] taking the matrix by value, which the graph then
    /// keeps, so there is no second copy of it.
    pub fn build_owned(
        vectors: Vec<f32>,
        dim: usize,
        params: &AnnParams,
    ) -> Result<AnnGraph, AnnError> {
        let n = check_input(&vectors, dim)?;
        let params = params.clamped();
        if n == 0 {
            return Ok(AnnGraph {
                dim,
                params,
                vectors: Vectors::Owned(Vec::new()),
                base: Csr::from_lists(&[]),
                upper: Vec::new(),
                entry: 0,
                stats: Some(BuildStats::default()),
                codes: Codes::new(&[], dim),
            });
        }
        let mut lists = {
            let hnsw: Hnsw<'_, f32, UnitCosine> = Hnsw::new(
                params.max_connections,
                n,
                MAX_LEVELS + 1,
                params.ef_construction,
                UnitCosine,
            );
            if params.parallel_insert {
                let data: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..n).collect();
                hnsw.parallel_insert_slice(&data);
            } else {
                for (id, row) in vectors.chunks_exact(dim).enumerate() {
                    hnsw.insert_slice((row, id));
                }
            }
            extract(&hnsw, n)
        };
        let entry = lists.trim_top();
        let top = lists.adj.len() - 1;
        // hnsw_rs' copy is gone: the codes do not add to the peak
        let codes = Codes::new(&vectors, dim);
        let stats = repair(&mut lists, entry, &vectors, dim, codes.as_ref(), &params);
        let upper = (1..=top)
            .map(|l| {
                let nodes: Vec<u32> = (0..n as u32)
                    .filter(|&i| lists.level[i as usize] as usize >= l)
                    .collect();
                let rows: Vec<Vec<u32>> = nodes
                    .iter()
                    .map(|&i| std::mem::take(&mut lists.adj[l][i as usize]))
                    .collect();
                UpperLayer {
                    nodes,
                    adj: Csr::from_lists(&rows),
                }
            })
            .collect();
        Ok(AnnGraph {
            codes,
            dim,
            params,
            vectors: Vectors::Owned(vectors),
            base: Csr::from_lists(&lists.adj[0]),
            upper,
            entry,
            stats: Some(stats),
        })
    }

    /// Number of vectors in the graph.
    pub fn len(&self) -> usize {
        self.base.offsets.len() - 1
    }

    /// True when the graph holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Construction parameters (after clamping).
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Findability check results, for a graph built in this process (`None`
    /// after [`AnnGraph::load`]).
    pub fn build_stats(&self) -> Option<BuildStats> {
        self.stats
    }

    /// The stored vectors, row-major `len x dim` (row = id).
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Whether [`AnnGraph::search`] walks layer 0 on 8-bit codes of the
    /// vectors, then scores the `ef` candidates it found on the `f32` vectors.
    ///
    /// On by default. The walk is bound by memory reads, and a code is a
    /// quarter of a row: at ef 256 a query took 0.39 instead of 0.69 ms at
    /// 20k points, and 1.24 instead of 2.44 ms at 1M, with recall@10 within
    /// 0.001 of the `f32` walk (`benches/hnsw.rs`). The codes are built when
    /// the graph is built or loaded (0.4 s per million 512-d points on two
    /// cores) and are not stored in the file. The hits returned and their
    /// scores are exact for the candidates found; only which candidates the
    /// walk finds can differ.
    pub fn coded_walk(&self) -> bool {
        self.codes.is_some()
    }

    /// Turns the 8-bit walk of [`AnnGraph::coded_walk`] on (building the
    /// codes, a quarter of the vectors' memory) or off (freeing them). It
    /// stays off if the memory for the codes cannot be mapped.
    pub fn set_coded_walk(&mut self, on: bool) {
        match (on, &self.codes) {
            (true, None) => self.codes = Codes::new(&self.vectors, self.dim),
            (false, Some(_)) => self.codes = None,
            _ => {}
        }
    }

    /// Approximate top-`k` by cosine similarity.
    ///
    /// `ef` is the candidate list size (use [`DEFAULT_EF_SEARCH`]); it is
    /// raised to `k` when smaller. `allow` hides ids for which it returns
    /// false (e.g. tombstones); hidden ids are never returned. Layer 0 is
    /// walked on 8-bit codes when [`AnnGraph::coded_walk`] is on; scores are
    /// always computed on the `f32` vectors.
    ///
    /// Returns `min(k, number of allowed points)` hits, sorted by score
    /// descending then id ascending: when the graph walk yields fewer (heavy
    /// filtering), it falls back to [`exact_search`] over the stored
    /// vectors, O(n). Returns an empty vector if `k == 0`, the graph is
    /// empty, `query.len() != self.dim()` or the query is not finite.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<Hit> {
        if k == 0 || self.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Vec::new();
        }
        let want = k.min(self.len());
        let found = hnsw_search(
            self,
            &self.vectors,
            self.dim,
            self.codes.as_ref(),
            query,
            ef.max(want),
            allow,
        );
        if found.len() < want {
            return exact_search(&self.vectors, self.dim, query, want, allow);
        }
        let mut hits: Vec<Hit> = found
            .iter()
            .map(|c| Hit {
                id: c.id as usize,
                score: score_from_distance(c.d),
            })
            .collect();
        sort_hits(&mut hits);
        hits.truncate(want);
        hits
    }
}

/// Searches `id`'s own vector; `None` if it is found, else the nearest
/// points the search reached (all of them were expanded by the search, so
/// a link from them to `id` makes the same search find `id`).
fn missed_by_search<T: Topology>(
    g: &T,
    vectors: &[f32],
    dim: usize,
    codes: Option<&Codes>,
    id: u32,
    fan_in: usize,
) -> Option<Vec<u32>> {
    let i = id as usize;
    let q = &vectors[i * dim..(i + 1) * dim];
    let res = hnsw_search(g, vectors, dim, codes, q, REPAIR_EF, None);
    let top = &res[..res.len().min(FINDABILITY_K)];
    if top.iter().any(|c| c.id == id) {
        return None;
    }
    // duplicates: a full top-k at least as close as `id` itself is fine
    let own = UnitCosine.eval(q, q);
    if top.len() == FINDABILITY_K && top.iter().all(|c| c.d <= own) {
        return None;
    }
    Some(
        res.iter()
            .filter(|c| c.id != id)
            .take(fan_in)
            .map(|c| c.id)
            .collect(),
    )
}

/// Makes every point findable by its own vector: each point the search
/// misses gets links from the `M/2` nearest points that search reached, and
/// is searched again until it is found.
///
/// New links also change other points' searches (at 100k points, repairing
/// 288 points hid 8 others), so a full check of all points follows each
/// repair, up to [`MAX_FULL_CHECKS`]. Only the repaired points are re-checked
/// between full checks: at 1M points one full check is a million searches,
/// and checking everything after every round made the build hours long.
///
/// `codes` are those the finished graph walks on, so that the check is made
/// with the search the graph will answer with.
fn repair(
    lists: &mut Lists,
    entry: u32,
    vectors: &[f32],
    dim: usize,
    codes: Option<&Codes>,
    p: &AnnParams,
) -> BuildStats {
    /// Rounds of linking and re-checking the missed points, per full check.
    const MAX_ROUNDS: usize = 4;
    let n = lists.level.len() as u32;
    let fan_in = p.max_connections.div_ceil(2);
    let started = std::time::Instant::now();
    let mut searches = 0usize;
    let mut check = |lists: &Lists, ids: Vec<u32>| -> Vec<(u32, Vec<u32>)> {
        searches += ids.len();
        let view = ListsView { lists, entry };
        ids.into_par_iter()
            .filter_map(|id| {
                missed_by_search(&view, vectors, dim, codes, id, fan_in).map(|s| (id, s))
            })
            .collect()
    };
    let mut stats = BuildStats::default();
    for pass in 0..MAX_FULL_CHECKS {
        let mut todo = check(lists, (0..n).collect());
        stats.full_checks += 1;
        if pass == 0 {
            stats.unfindable_before_repair = todo.len();
        }
        stats.unfindable_after_repair = todo.len();
        if todo.is_empty() {
            break;
        }
        for _ in 0..MAX_ROUNDS {
            for (id, sources) in &todo {
                for &s in sources {
                    let list = &mut lists.adj[0][s as usize];
                    if !list.contains(id) {
                        list.push(*id);
                    }
                }
            }
            let ids = todo.iter().map(|t| t.0).collect();
            todo = check(lists, ids);
            if todo.is_empty() {
                break;
            }
        }
        stats.unfindable_after_repair = todo.len();
    }
    stats.searches = searches;
    stats.repair_ms = started.elapsed().as_millis() as u64;
    stats
}

// ---------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------
//
// One file, `{basename}.ann`, little-endian:
//
//   magic "PLIPANN\0" | version u32 = 1 | flags u32 (bit 0: parallel_insert,
//                                                      bit 1: vectors kept elsewhere)
//   n u64 | dim u64 | max_connections u64 | ef_construction u64
//   entry u64 | levels u64 (number of upper layers)
//   layer 0:      offsets (n+1) x u64 | targets offsets[n] x u32
//   layer 1..=levels: count u64 | nodes count x u32
//                 | offsets (count+1) x u64 | targets x u32
//   vectors       n x dim x f32, or with flag bit 1 the crc32 u32 of their
//                 little-endian bytes (the caller stores them, see
//                 `AnnGraph::save_links`)
//   crc32 u32 of all bytes before it
//
// It is written to a temporary file in the same directory, fsynced, renamed
// over the final name, and the directory is fsynced: readers see the old or
// the new index, never a mix.

const FILE_SUFFIX: &str = ".ann";
const MAGIC: &[u8; 8] = b"PLIPANN\0";
const VERSION: u32 = 1;
/// Bit of the flags word: built with [`AnnParams::parallel_insert`].
const FLAG_PARALLEL_INSERT: u32 = 1;
/// Bit of the flags word: the file holds a checksum of the vectors instead of
/// the vectors ([`AnnGraph::save_links`]).
const FLAG_EXTERNAL_VECTORS: u32 = 2;

/// CRC32 of the vectors as stored (little-endian f32).
fn vectors_crc(vectors: &[f32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for chunk in vectors.chunks(8192) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        h.update(&bytes);
    }
    h.finalize()
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

/// Writer that hashes everything written.
struct CrcWriter<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.w.write_all(b)
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    /// Writes a slice of plain numbers through a small byte buffer.
    fn all<T: Copy, const N: usize>(&mut self, v: &[T], enc: fn(T) -> [u8; N]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(N * 8192);
        for chunk in v.chunks(8192) {
            buf.clear();
            for &x in chunk {
                buf.extend_from_slice(&enc(x));
            }
            self.put(&buf)?;
        }
        Ok(())
    }
    fn csr(&mut self, c: &Csr) -> io::Result<()> {
        self.all(&c.offsets, u64::to_le_bytes)?;
        self.all(&c.targets, u32::to_le_bytes)
    }
}

impl AnnGraph {
    /// Writes the graph to `dir/{basename}.ann` and returns that path (the
    /// only file written), after fsyncing it and `dir`.
    ///
    /// The file is written under a temporary name in `dir`
    /// (`.{basename}.ann.tmp-*`, removed on error, left behind only by a
    /// crash) and renamed into place, so an existing index with that name is
    /// replaced atomically. Concurrent saves to the same name must be
    /// serialized by the caller (the last rename wins).
    pub fn save(&self, dir: &Path, basename: &str) -> Result<Vec<PathBuf>, AnnError> {
        self.save_as(dir, basename, false)
    }

    /// Like [`AnnGraph::save`], but the file keeps only a CRC32 of the vectors,
    /// not the vectors: for callers that store them anyway (the index's segment
    /// files), so that they are not on disk twice. Load it with
    /// [`AnnGraph::load_with_vectors`].
    pub fn save_links(&self, dir: &Path, basename: &str) -> Result<Vec<PathBuf>, AnnError> {
        self.save_as(dir, basename, true)
    }

    fn save_as(
        &self,
        dir: &Path,
        basename: &str,
        external_vectors: bool,
    ) -> Result<Vec<PathBuf>, AnnError> {
        check_basename(basename)?;
        if !dir.is_dir() {
            return Err(AnnError::InvalidPath(format!(
                "{} is not an existing directory",
                dir.display()
            )));
        }
        let path = dir.join(format!("{basename}{FILE_SUFFIX}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = dir.join(format!(
            ".{basename}{FILE_SUFFIX}.tmp-{}-{nanos}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, AtomicOrdering::Relaxed)
        ));
        let res = self.write_file(&tmp, external_vectors).and_then(|()| {
            fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
            sync_dir(dir)
        });
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|()| vec![path])
    }

    fn write_file(&self, tmp: &Path, external_vectors: bool) -> Result<(), AnnError> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| io_err(tmp, e))?;
        let mut w = CrcWriter {
            w: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
        };
        let body = |w: &mut CrcWriter<BufWriter<File>>| -> io::Result<()> {
            w.put(MAGIC)?;
            w.u32(VERSION)?;
            let mut flags = 0;
            if self.params.parallel_insert {
                flags |= FLAG_PARALLEL_INSERT;
            }
            if external_vectors {
                flags |= FLAG_EXTERNAL_VECTORS;
            }
            w.u32(flags)?;
            for v in [
                self.len(),
                self.dim,
                self.params.max_connections,
                self.params.ef_construction,
                self.entry as usize,
                self.upper.len(),
            ] {
                w.u64(v as u64)?;
            }
            w.csr(&self.base)?;
            for layer in &self.upper {
                w.u64(layer.nodes.len() as u64)?;
                w.all(&layer.nodes, u32::to_le_bytes)?;
                w.csr(&layer.adj)?;
            }
            if external_vectors {
                w.u32(vectors_crc(&self.vectors))?;
            } else {
                w.all(&self.vectors, f32::to_le_bytes)?;
            }
            let crc = w.crc.clone().finalize();
            w.w.write_all(&crc.to_le_bytes())?;
            w.w.flush()
        };
        body(&mut w).map_err(|e| io_err(tmp, e))?;
        let file = w.w.into_inner().map_err(|e| io_err(tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(tmp, e))
    }

    /// Loads a graph written by [`AnnGraph::save`] from `dir/{basename}.ann`.
    ///
    /// Every count is checked against the bytes left before anything is
    /// allocated, every id and offset is range-checked, the vectors must be
    /// finite and the CRC32 must match: damaged files give
    /// [`AnnError::Corrupt`], a missing file [`AnnError::Missing`].
    pub fn load(dir: &Path, basename: &str) -> Result<AnnGraph, AnnError> {
        Self::load_impl(dir, basename, None)
    }

    /// Loads a graph written by [`AnnGraph::save_links`] (or [`AnnGraph::save`])
    /// over `vectors`, the row-major matrix it was built from: their count and
    /// CRC32 (or, for a self-contained file, their values) must match the
    /// file's, else [`AnnError::Corrupt`].
    pub fn load_with_vectors(
        dir: &Path,
        basename: &str,
        vectors: Vec<f32>,
    ) -> Result<AnnGraph, AnnError> {
        Self::load_impl(dir, basename, Some(Vectors::Owned(vectors)))
    }

    /// [`AnnGraph::load_with_vectors`] over vectors the graph shares with
    /// their owner instead of copying them: an index segment's mapped file.
    pub fn load_with_shared_vectors(
        dir: &Path,
        basename: &str,
        vectors: SharedVectors,
    ) -> Result<AnnGraph, AnnError> {
        Self::load_impl(dir, basename, Some(Vectors::Shared(vectors)))
    }

    fn load_impl(
        dir: &Path,
        basename: &str,
        vectors: Option<Vectors>,
    ) -> Result<AnnGraph, AnnError> {
        check_basename(basename)?;
        let path = dir.join(format!("{basename}{FILE_SUFFIX}"));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AnnError::Missing(path)),
            Err(e) => return Err(io_err(&path, e)),
        };
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        let mut r = Checked {
            r: BufReader::with_capacity(1 << 20, file),
            path: path.clone(),
            pos: 0,
            // the trailing CRC is read separately
            len: len.saturating_sub(4),
            crc: crc32fast::Hasher::new(),
        };
        if len < 4 {
            return Err(corrupt(&path, "file too short"));
        }
        let graph = read_graph(&mut r, vectors)?;
        if r.pos != r.len {
            return Err(r.bad("trailing bytes"));
        }
        let mut tail = [0u8; 4];
        r.r.read_exact(&mut tail).map_err(|e| io_err(&path, e))?;
        if u32::from_le_bytes(tail) != r.crc.clone().finalize() {
            return Err(corrupt(&path, "checksum mismatch"));
        }
        Ok(graph)
    }
}

/// Reader that bounds every read by the file length and hashes what it
/// reads.
struct Checked {
    r: BufReader<File>,
    path: PathBuf,
    pos: u64,
    len: u64,
    crc: crc32fast::Hasher,
}

impl Checked {
    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn bad(&self, what: impl std::fmt::Display) -> AnnError {
        corrupt(&self.path, format!("{what} at byte {}", self.pos))
    }

    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), AnnError> {
        if buf.len() as u64 > self.left() {
            return Err(self.bad("unexpected end of file (truncated?)"));
        }
        self.r.read_exact(buf).map_err(|e| io_err(&self.path, e))?;
        self.crc.update(buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, AnnError> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, AnnError> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A header value that must fit in `usize` and be at most `max`.
    fn size(&mut self, max: u64, what: &str) -> Result<usize, AnnError> {
        let v = self.u64()?;
        if v > max {
            return Err(self.bad(format!("bad {what} {v}")));
        }
        usize::try_from(v).map_err(|_| self.bad(format!("bad {what} {v}")))
    }

    /// Reads `count` numbers of `N` bytes, after checking they fit.
    fn all<T, const N: usize>(
        &mut self,
        count: usize,
        dec: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, AnnError> {
        if (count as u64).saturating_mul(N as u64) > self.left() {
            return Err(self.bad(format!("impossible count {count}")));
        }
        let mut out = Vec::with_capacity(count);
        let mut buf = vec![0u8; N * 8192];
        let mut left = count;
        while left > 0 {
            let m = left.min(8192);
            self.bytes(&mut buf[..m * N])?;
            out.extend(
                buf[..m * N]
                    .chunks_exact(N)
                    .map(|c| dec(c.try_into().expect("N bytes"))),
            );
            left -= m;
        }
        Ok(out)
    }

    /// CSR with `rows` rows whose targets are all `< bound`.
    fn csr(&mut self, rows: usize, bound: u32) -> Result<Csr, AnnError> {
        let offsets = self.all(rows + 1, u64::from_le_bytes)?;
        if offsets[0] != 0 || offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(self.bad("offsets are not increasing from 0"));
        }
        let count = usize::try_from(offsets[rows]).map_err(|_| self.bad("bad link count"))?;
        let targets = self.all(count, u32::from_le_bytes)?;
        if targets.iter().any(|&t| t >= bound) {
            return Err(self.bad("link to a missing point"));
        }
        Ok(Csr { offsets, targets })
    }
}

fn read_graph(r: &mut Checked, given: Option<Vectors>) -> Result<AnnGraph, AnnError> {
    let mut magic = [0u8; 8];
    r.bytes(&mut magic)?;
    if &magic != MAGIC {
        return Err(r.bad("not a plip search index (bad magic)"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(r.bad(format!("unsupported version {version}")));
    }
    let flags = r.u32()?;
    if flags & !(FLAG_PARALLEL_INSERT | FLAG_EXTERNAL_VECTORS) != 0 {
        return Err(r.bad("unknown flags"));
    }
    let n = r.size(u32::MAX as u64, "point count")?;
    let dim = r.size(1 << 20, "dimension")?;
    let params = AnnParams {
        max_connections: r.size(255, "max_connections")?,
        ef_construction: r.size(u32::MAX as u64, "ef_construction")?,
        parallel_insert: flags & FLAG_PARALLEL_INSERT != 0,
    };
    if dim == 0 || params.clamped() != params {
        return Err(r.bad("bad dimension or parameters"));
    }
    let entry = r.size(n.saturating_sub(1) as u64, "entry point")? as u32;
    let levels = r.size(MAX_LEVELS as u64, "level count")?;
    if n == 0 && levels > 0 {
        return Err(r.bad("empty index with levels"));
    }
    let base = r.csr(n, n as u32)?;
    let mut upper: Vec<UpperLayer> = Vec::with_capacity(levels);
    for _ in 0..levels {
        let below = upper.last().map(|u| &u.nodes);
        let count = r.size(n as u64, "layer size")?;
        let nodes = r.all(count, u32::from_le_bytes)?;
        let ok = !nodes.is_empty()
            && nodes.windows(2).all(|w| w[0] < w[1])
            && nodes.iter().all(|&x| (x as usize) < n)
            && below.is_none_or(|b| nodes.iter().all(|x| b.binary_search(x).is_ok()));
        if !ok {
            return Err(r.bad("bad layer node list"));
        }
        let adj = r.csr(count, n as u32)?;
        if adj.targets.iter().any(|t| nodes.binary_search(t).is_err()) {
            return Err(r.bad("upper-layer link to a node not on that layer"));
        }
        upper.push(UpperLayer { nodes, adj });
    }
    if let Some(top) = upper.last() {
        if top.nodes.binary_search(&entry).is_err() {
            return Err(r.bad("entry point is not on the top layer"));
        }
    }
    let values = n
        .checked_mul(dim)
        .ok_or_else(|| r.bad("vector data too large"))?;
    let vectors = if flags & FLAG_EXTERNAL_VECTORS != 0 {
        let crc = r.u32()?;
        let Some(vectors) = given else {
            return Err(r.bad("the file holds no vectors (load it with its vectors)"));
        };
        if vectors.len() != values || vectors_crc(&vectors) != crc {
            return Err(r.bad("the vectors given are not the ones the graph was built on"));
        }
        vectors
    } else {
        let stored = r.all(values, f32::from_le_bytes)?;
        match given {
            Some(g) if *g != stored[..] => {
                return Err(r.bad("the vectors given are not the ones the graph was built on"))
            }
            Some(g) => g,
            None => Vectors::Owned(stored),
        }
    };
    if !all_finite(&vectors) {
        return Err(r.bad("non-finite vector value"));
    }
    Ok(AnnGraph {
        codes: Codes::new(&vectors, dim),
        dim,
        params,
        vectors,
        base,
        upper,
        entry,
        stats: None,
    })
}
/// Whether no value is NaN or infinite, in a loop that vectorizes (an early
/// exit would not).
fn all_finite(values: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    values.chunks(4096).all(|chunk| {
        !chunk
            .iter()
            .fold(false, |bad, x| bad | (x.to_bits() & EXP == EXP))
    })
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

    #[test]
    fn dot_is_the_same_on_every_instruction_set() {
        let mut rng = Rng::new(11);
        for len in [0, 1, 15, 16, 17, 100, 512, 515] {
            let a: Vec<f32> = (0..len).map(|_| rng.gauss()).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.gauss()).collect();
            let want = dot_portable(&a, &b);
            assert_eq!(dot(&a, &b).to_bits(), want.to_bits(), "len {len}");
            assert_eq!(dot(&b, &a).to_bits(), want.to_bits(), "len {len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: checked just above.
                assert_eq!(unsafe { dot_avx2(&a, &b) }.to_bits(), want.to_bits());
            }
        }
    }

    #[test]
    fn code_dot_is_the_same_on_every_instruction_set() {
        let mut rng = Rng::new(12);
        for len in [0, 1, 15, 31, 32, 33, 100, 512, 515] {
            let q: Vec<f32> = (0..len).map(|_| rng.gauss()).collect();
            let c: Vec<i8> = (0..len).map(|_| rng.below(256) as u8 as i8).collect();
            let (qc, cc) = dot_i8_portable(&q, &c);
            let want_qc: f64 = q.iter().zip(&c).map(|(x, &y)| *x as f64 * y as f64).sum();
            let want_cc: f64 = c.iter().map(|&y| y as f64 * y as f64).sum();
            assert!(
                (qc as f64 - want_qc).abs() <= 1e-3 * (1.0 + want_qc.abs()),
                "len {len}"
            );
            assert_eq!(cc as f64, want_cc, "len {len}: integers, exact in f32");
            let (aq, ac) = dot_i8(&q, &c);
            assert!((aq - qc).abs() <= 1e-3 * (1.0 + qc.abs()), "len {len}");
            assert_eq!(ac, cc, "len {len}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn prefetch_levels_are_the_intrinsic_hints() {
        assert_eq!(TO_L1, std::arch::x86_64::_MM_HINT_T0);
        assert_eq!(TO_L2, std::arch::x86_64::_MM_HINT_T1);
    }

    #[test]
    fn encode_rounds_to_the_nearest_step() {
        let mut rng = Rng::new(13);
        for len in [1, 7, 16, 33, 512] {
            let row: Vec<f32> = (0..len).map(|_| rng.gauss() * 0.05).collect();
            let mut code = vec![0u8; len];
            encode(&row, &mut code);
            let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (x, &c) in row.iter().zip(&code) {
                let want = (x * (127.0 / max)).round_ties_even();
                assert_eq!(c as i8 as f32, want, "len {len}, x {x}");
            }
            assert!(code.iter().any(|&c| c as i8 == 127 || c as i8 == -127));
        }
        let mut code = [1u8; 20];
        encode(&[0.0; 20], &mut code);
        assert_eq!(code, [0; 20]);
        encode(&[-1.0, 0.5, 0.25, -0.0], &mut code[..4]);
        assert_eq!(
            code[..4].iter().map(|&c| c as i8).collect::<Vec<_>>(),
            [-127, 64, 32, 0]
        );
    }

    #[test]
    fn all_finite_finds_every_nan_and_infinity() {
        let mut v = vec![0.5f32; 10_000];
        assert!(all_finite(&v) && all_finite(&[]));
        for (i, bad) in [
            (0, f32::NAN),
            (4095, f32::INFINITY),
            (9999, f32::NEG_INFINITY),
        ] {
            let keep = v[i];
            v[i] = bad;
            assert!(!all_finite(&v), "{i}");
            v[i] = keep;
        }
        assert!(all_finite(&[
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -0.0,
            1e-45
        ]));
    }

    #[test]
    fn codes_approximate_the_cosine() {
        let dim = 512;
        let data = clustered(300, dim, 5, 0.8, 21);
        let codes = Codes::new(&data, dim).unwrap();
        let mut worst = 0f32;
        for (i, q) in data.chunks_exact(dim).enumerate().take(20) {
            for (j, v) in data.chunks_exact(dim).enumerate() {
                let exact = UnitCosine.eval(q, v);
                worst = worst.max((codes.distance(q, j as u32) - exact).abs());
            }
            // a row's own code is (nearly) its nearest
            assert!(
                codes.distance(q, i as u32) < 2e-3,
                "{}",
                codes.distance(q, i as u32)
            );
        }
        assert!(worst < 5e-3, "worst code distance error {worst}");
        // zero rows (not unit, but must not give NaN)
        let zero = Codes::new(&[0.0; 8], 8).unwrap();
        assert_eq!(zero.distance(&[1.0; 8], 0), 1.0);
    }

    #[test]
    fn coded_walk_is_on_by_default_and_survives_save_and_clone() {
        let data = clustered(50, 16, 3, 0.5, 2);
        let mut g = AnnGraph::build(&data, 16, &small_params()).unwrap();
        assert!(g.coded_walk());
        let dir = tempfile::tempdir().unwrap();
        g.save(dir.path(), "g").unwrap();
        let loaded = AnnGraph::load(dir.path(), "g").unwrap();
        assert!(loaded.coded_walk());
        assert_eq!(loaded.codes, g.codes);
        let copy = g.clone();
        assert!(copy.coded_walk() && copy == g);
        g.set_coded_walk(false);
        assert!(!g.coded_walk() && copy != g);
        g.set_coded_walk(true);
        assert!(g.coded_walk() && copy == g);
        let empty = AnnGraph::build(&[], 16, &small_params()).unwrap();
        assert!(empty.coded_walk());
        assert!(empty.search(&data[..16], 3, 10, None).is_empty());
        empty.save(dir.path(), "empty").unwrap();
        let loaded = AnnGraph::load(dir.path(), "empty").unwrap();
        assert!(loaded.coded_walk() && loaded.codes == empty.codes);
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
            max_connections: 12,
            ef_construction: 40,
            parallel_insert: false,
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
        let stats = g.build_stats().unwrap();
        assert_eq!(stats.unfindable_after_repair, 0, "{stats:?}");
        let mut g = g;
        for coded in [false, true] {
            g.set_coded_walk(coded);
            let r = recall_at(&g, data, queries, dim, 10, DEFAULT_EF_SEARCH);
            let r10 = recall_at(&g, data, queries, dim, 10, 10);
            eprintln!(
                "n={n} dim={dim} coded={coded}: build {build_s:.2}s, recall@10 {r:.4} at ef={DEFAULT_EF_SEARCH}, {r10:.4} at ef=10"
            );
            assert!(r >= 0.95, "recall@10 = {r}, coded walk {coded}");
            for q in queries.chunks_exact(dim).take(10) {
                let hits = g.search(q, 10, DEFAULT_EF_SEARCH, None);
                assert_eq!(hits.len(), 10);
                assert_sorted(&hits);
                // scores are the exact ones, whatever the walk read
                let exact = exact_search(data, dim, q, n, None);
                for h in &hits {
                    let e = exact.iter().find(|e| e.id == h.id).unwrap();
                    assert_eq!(h.score.to_bits(), e.score.to_bits());
                }
            }
            let missing: Vec<usize> = (0..n)
                .into_par_iter()
                .filter(|&i| {
                    let q = &data[i * dim..(i + 1) * dim];
                    !g.search(q, 10, REPAIR_EF, None).iter().any(|h| h.id == i)
                })
                .collect();
            assert!(
                missing.is_empty(),
                "unfindable (coded walk {coded}): {missing:?}"
            );
        }
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
        let mut g = AnnGraph::build(&data, dim, &small_params()).unwrap();
        // others[0] equals dup too, so 51 exact copies in total
        let copies: HashSet<usize> = data
            .chunks_exact(dim)
            .enumerate()
            .filter(|(_, r)| *r == &dup[..])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(copies.len(), 51);
        for coded in [false, true] {
            g.set_coded_walk(coded);
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
    }

    #[test]
    fn filter_hides_ids_and_still_returns_k() {
        let (n, dim) = (1000, 32);
        let data = clustered(n, dim, 10, 0.8, 5);
        let mut g = AnnGraph::build(&data, dim, &small_params()).unwrap();
        for coded in [false, true] {
            g.set_coded_walk(coded);
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
        assert_eq!(files, vec![dir.path().join("empty.ann")]);
        let g2 = AnnGraph::load(dir.path(), "empty").unwrap();
        assert!(g2.is_empty() && g2.dim() == dim);
        assert!(g2.search(&[0.0; 8], 10, 10, None).is_empty());

        // one point
        let mut v = vec![0f32; dim];
        v[3] = 1.0;
        let mut g = AnnGraph::build(&v, dim, &AnnParams::default()).unwrap();
        for coded in [false, true] {
            g.set_coded_walk(coded);
            for (k, ef) in [(1, 1), (10, 1), (10, 100), (0, 10)] {
                let hits = g.search(&v, k, ef, None);
                assert_eq!(hits.len(), k.min(1));
                if k > 0 {
                    assert_eq!(hits[0], Hit { id: 0, score: 1.0 });
                }
            }
            assert!(g.search(&v, 10, 10, Some(&|_| false)).is_empty());
        }
        g.save(dir.path(), "one").unwrap();
        let g2 = AnnGraph::load(dir.path(), "one").unwrap();
        assert_eq!(g2.search(&v, 5, 5, None), vec![Hit { id: 0, score: 1.0 }]);

        // k > n, ef < k, k = 0, wrong query dimension, NaN query
        let data = clustered(20, dim, 3, 0.5, 9);
        let mut g = AnnGraph::build(&data, dim, &AnnParams::default()).unwrap();
        for coded in [false, true] {
            g.set_coded_walk(coded);
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
            parallel_insert: true,
        };
        let g = AnnGraph::build(&[0.6, 0.8, 0.8, 0.6], 2, &wild).unwrap();
        assert_eq!(g.params().max_connections, 255);
        let dir = tempfile::tempdir().unwrap();
        g.save(dir.path(), "wild").unwrap();
        assert!(
            AnnGraph::load(dir.path(), "wild")
                .unwrap()
                .params()
                .parallel_insert
        );
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
    fn links_only_files_load_with_their_vectors_and_only_with_them() {
        let (n, dim) = (300, 16);
        let data = clustered(n, dim, 4, 0.8, 5);
        let g = AnnGraph::build(&data, dim, &small_params()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let links = g.save_links(dir.path(), "links").unwrap();
        let full = g.save(dir.path(), "full").unwrap();
        let size = |p: &PathBuf| fs::metadata(p).unwrap().len();
        assert_eq!(
            size(&full[0]) - size(&links[0]),
            (n * dim * 4 - 4) as u64,
            "the vectors are replaced by their CRC32"
        );
        let mut want = g.clone();
        want.stats = None;
        for base in ["links", "full"] {
            let l = AnnGraph::load_with_vectors(dir.path(), base, data.clone()).unwrap();
            assert!(l == want, "{base}");
            // shared: the graph reads the owner's memory, not a copy
            let shared: Arc<Vec<f32>> = Arc::new(data.clone());
            let l = AnnGraph::load_with_shared_vectors(dir.path(), base, shared.clone()).unwrap();
            assert!(l == want, "{base}");
            assert_eq!(l.vectors().as_ptr(), shared.as_ptr());
            assert_eq!(l.search(&data[..dim], 1, 16, None)[0].id, 0);
            let mut other = data.clone();
            other[7] = -other[7];
            assert!(matches!(
                AnnGraph::load_with_vectors(dir.path(), base, other),
                Err(AnnError::Corrupt { .. })
            ));
            assert!(matches!(
                AnnGraph::load_with_vectors(dir.path(), base, data[dim..].to_vec()),
                Err(AnnError::Corrupt { .. })
            ));
            let mut bad = data.clone();
            bad[3] = f32::INFINITY;
            assert!(matches!(
                AnnGraph::load_with_shared_vectors(dir.path(), base, Arc::new(bad)),
                Err(AnnError::Corrupt { .. })
            ));
        }
        assert!(matches!(
            AnnGraph::load(dir.path(), "links"),
            Err(AnnError::Corrupt { .. })
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
        assert_eq!(files, vec![dir.path().join("idx.ann")]);
        // no temporary leftovers
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let l = AnnGraph::load(dir.path(), "idx").unwrap();
        assert_eq!(l.build_stats(), None);
        let mut g_cmp = g.clone();
        g_cmp.stats = None;
        assert!(l == g_cmp, "loaded graph differs");
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
        // saving again replaces the file in place, same name
        assert_eq!(l.save(dir.path(), "idx").unwrap(), files);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let l2 = AnnGraph::load(dir.path(), "idx").unwrap();
        assert!(l2 == l);
        // the graph is usable from another thread and outlives the files
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

    fn rss_mib() -> u64 {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }

    fn pct(sorted: &[f64], p: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    /// Release-mode measurement (run by hand):
    /// `cargo test --release --lib ann::tests::measure -- --ignored --nocapture`
    /// Env: ANN_N (100000), ANN_DIM (512), ANN_CLUSTERS (20), ANN_DATA
    /// (lowrank|iso|outliers), ANN_BUILD (serial,parallel), ANN_M, ANN_EFC.
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
            parallel_insert: false,
        };
        let t = Instant::now();
        let mut all = match kind.as_str() {
            "iso" | "outliers" => clustered(n + nq, dim, clusters, 0.8, 1234),
            _ => clustered_lowrank(n + nq, dim, clusters, 16, 0.8, 1234),
        };
        if kind == "outliers" {
            // CLIP embeddings have a few dimensions far larger than the rest,
            // which coarsens 8-bit codes scaled by the largest value
            for row in all.chunks_exact_mut(dim) {
                for (j, x) in row.iter_mut().take(4).enumerate() {
                    *x += [0.5, -0.4, 0.3, 0.3][j];
                }
                normalize(row);
            }
        }
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
            let params = AnnParams {
                parallel_insert: parallel,
                ..params
            };
            let g = AnnGraph::build(data, dim, &params).unwrap();
            let build_s = t.elapsed().as_secs_f64();
            eprintln!(
                "\n== build {mode}: {build_s:.1}s, {:?}, levels {}, layer-0 links {} ({:.1}/point), RSS {} MiB",
                g.build_stats().unwrap(),
                g.upper.len(),
                g.base.targets.len(),
                g.base.targets.len() as f64 / n as f64,
                rss_mib()
            );
            // findability after repair: every point searched with its own vector
            for (fk, fef) in [(1usize, 10usize), (10, REPAIR_EF)] {
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
            // recall@10 against `truth` (the first `truth.len()` queries) and
            // latency p50 / p99 in ms
            let measure = |g: &AnnGraph,
                           ef: usize,
                           allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
                           truth: &[Vec<Hit>]| {
                let mut found = 0usize;
                let mut lat = Vec::with_capacity(truth.len());
                for (q, tr) in queries.chunks_exact(dim).zip(truth) {
                    let t = Instant::now();
                    let got = g.search(q, k, ef, allow);
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    found += got
                        .iter()
                        .filter(|h| tr.iter().any(|x| x.id == h.id))
                        .count();
                }
                lat.sort_by(f64::total_cmp);
                (
                    found as f64 / (truth.len() * k) as f64,
                    pct(&lat, 0.5),
                    pct(&lat, 0.99),
                )
            };
            let mut g = g;
            // the default walk last, for what follows
            for coded in [false, true] {
                g.set_coded_walk(coded);
                eprintln!(
                    "layer-0 walk on {}",
                    if coded { "8-bit codes" } else { "f32 rows" }
                );
                for ef in [10usize, 16, 24, 32, 48, 64, 96, 128, 200, 256] {
                    let (r, p50, p99) = measure(&g, ef, None, &truth);
                    eprintln!("ef={ef:4} recall@10={r:.4} latency p50={p50:.3}ms p99={p99:.3}ms");
                }
            }
            // filtered: 10% of ids hidden
            let allow = |id: usize| !id.is_multiple_of(10);
            let filtered: Vec<Vec<Hit>> = queries
                .chunks_exact(dim)
                .take(200)
                .map(|q| exact_search(data, dim, q, k, Some(&allow)))
                .collect();
            let (r, p50, p99) = measure(&g, DEFAULT_EF_SEARCH, Some(&allow), &filtered);
            eprintln!(
                "filtered (10% hidden) ef={DEFAULT_EF_SEARCH}: recall@10={r:.4} p50={p50:.3}ms p99={p99:.3}ms"
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

    /// Why we do not use `Hnsw::search`: on the very same hnsw_rs graph,
    /// compare it with our search (before repair). Run by hand:
    /// `cargo test --release --lib diagnose -- --ignored --nocapture`
    /// (env as for `measure_recall_latency`; default n = 50000).
    #[test]
    #[ignore]
    fn diagnose_hnsw_rs_search() {
        let n = env_usize("ANN_N", 50_000);
        let dim = env_usize("ANN_DIM", 512);
        let nq = env_usize("ANN_Q", 500);
        let p = AnnParams::default();
        let all = clustered_lowrank(n + nq, dim, env_usize("ANN_CLUSTERS", 20), 16, 0.8, 1234);
        let (data, queries) = all.split_at(n * dim);
        let hnsw: Hnsw<'_, f32, UnitCosine> = Hnsw::new(
            p.max_connections,
            n,
            MAX_LEVELS + 1,
            p.ef_construction,
            UnitCosine,
        );
        for (id, row) in data.chunks_exact(dim).enumerate() {
            hnsw.insert_slice((row, id));
        }
        let mut lists = extract(&hnsw, n);
        let entry = lists.trim_top();
        let view = ListsView {
            lists: &lists,
            entry,
        };
        let truth: Vec<Vec<Hit>> = queries
            .par_chunks_exact(dim)
            .map(|q| exact_search(data, dim, q, 10, None))
            .collect();
        for ef in [16usize, 32, 64, 128] {
            let (mut a, mut b) = (0, 0);
            for (q, tr) in queries.chunks_exact(dim).zip(&truth) {
                let hit = |id: usize| tr.iter().any(|x| x.id == id);
                a += hnsw
                    .search(q, 10, ef)
                    .iter()
                    .filter(|nb| hit(nb.d_id))
                    .count();
                b += hnsw_search(&view, data, dim, None, q, ef, None)
                    .iter()
                    .take(10)
                    .filter(|c| hit(c.id as usize))
                    .count();
            }
            eprintln!(
                "ef={ef}: recall@10 Hnsw::search {:.4}, ours on the same graph {:.4}",
                a as f64 / (nq * 10) as f64,
                b as f64 / (nq * 10) as f64
            );
        }
        let missed_rs = (0..n)
            .into_par_iter()
            .filter(|&i| {
                let q = &data[i * dim..(i + 1) * dim];
                !hnsw.search(q, 10, REPAIR_EF).iter().any(|nb| nb.d_id == i)
            })
            .count();
        let missed_ours = (0..n as u32)
            .into_par_iter()
            .filter(|&i| missed_by_search(&view, data, dim, None, i, 1).is_some())
            .count();
        eprintln!(
            "not found by own vector (k=10, ef={REPAIR_EF}): Hnsw::search {missed_rs}, ours {missed_ours} of {n}"
        );
    }

    /// Recomputes the trailing CRC, so that the structural checks (not the
    /// checksum) have to catch the damage.
    fn reseal(path: &Path) {
        let mut b = fs::read(path).unwrap();
        if b.len() < 4 {
            return;
        }
        let body = b.len() - 4;
        let crc = crc32fast::hash(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
        fs::write(path, b).unwrap();
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let (n, dim) = (300, 8);
        let data = clustered(n, dim, 4, 0.8, 31);
        let g = AnnGraph::build(&data, dim, &small_params()).unwrap();
        assert!(!g.upper.is_empty(), "test needs upper layers");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = g.save(d, "idx").unwrap().remove(0);
        let orig = fs::read(&path).unwrap();
        let q = &data[..dim];
        let reference = g.search(q, 10, 64, None);
        let check_err = |what: &str| {
            let r = AnnGraph::load(d, "idx");
            assert!(matches!(r, Err(AnnError::Corrupt { .. })), "{what}: {r:?}");
        };
        // truncations, with and without a matching checksum
        let mut cuts: Vec<usize> = vec![0, 1, 3, 4, 8, 12, 20, 60, orig.len() - 5, orig.len() - 1];
        let mut rng = Rng::new(7);
        cuts.extend((0..30).map(|_| rng.below(orig.len())));
        for cut in cuts {
            fs::write(&path, &orig[..cut]).unwrap();
            check_err(&format!("cut at {cut}"));
            reseal(&path);
            check_err(&format!("cut at {cut}, resealed"));
        }
        // random bit flips: the checksum catches every one; with a matching
        // checksum, the structural checks must still prevent any panic
        let mut loaded_after_reseal = 0;
        for trial in 0..300 {
            let mut b = orig.clone();
            let flips = 1 + trial % 3;
            for _ in 0..flips {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            if b == orig {
                continue;
            }
            fs::write(&path, &b).unwrap();
            check_err(&format!("trial {trial}"));
            reseal(&path);
            if let Ok(l) = AnnGraph::load(d, "idx") {
                loaded_after_reseal += 1;
                let _ = l.search(q, 10, 64, None);
                let _ = l.search(q, 10, 64, Some(&|id: usize| id.is_multiple_of(3)));
            }
        }
        eprintln!(
            "bit-flipped files that pass structure checks once resealed: {loaded_after_reseal}/300"
        );
        // trailing garbage, empty file, wrong magic, future version
        let mut b = orig.clone();
        b.splice(b.len() - 4..b.len() - 4, [0u8; 8]);
        fs::write(&path, &b).unwrap();
        reseal(&path);
        check_err("trailing bytes");
        let mut b = orig.clone();
        b[8] = 2;
        fs::write(&path, &b).unwrap();
        reseal(&path);
        check_err("version 2");
        fs::write(&path, b"").unwrap();
        check_err("empty");
        // error messages say what to do
        let msg = AnnGraph::load(d, "idx").unwrap_err().to_string();
        assert!(msg.contains("plip index --rebuild"), "{msg}");
        // missing
        fs::remove_file(&path).unwrap();
        let r = AnnGraph::load(d, "idx");
        assert!(matches!(r, Err(AnnError::Missing(_))), "{r:?}");
        // pristine again: loads and agrees
        fs::write(&path, &orig).unwrap();
        let l = AnnGraph::load(d, "idx").unwrap();
        assert_eq!(l.search(q, 10, 64, None), reference);
    }
}
