//! Approximate (HNSW) and exact nearest-neighbour search over L2-normalized
//! embeddings, scored by cosine similarity (= dot product for unit vectors).
//!
//! # Why this module exists
//!
//! `hnsw_rs` builds good graphs but is unsafe to use as-is (measured by the
//! studies `measure` and `diagnose` in `benches/ann_study.rs`):
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
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hnsw_rs::anndists::dist::distances::Distance;
use hnsw_rs::prelude::Hnsw;
use rayon::prelude::*;

use crate::vectors::{dot, dot_rows, LANES};

mod build;
pub(crate) mod codes;
pub(crate) mod distance;
mod exact;
mod file;
mod graph;
#[doc(hidden)]
pub mod study;
#[cfg(test)]
mod tests;
mod topk;
pub(crate) use codes::Codes;
pub(crate) use distance::{score_from_distance, score_from_dot, UnitCosine};
pub use exact::exact_search;
pub(crate) use exact::{exact_search_many, RowFilter};
pub use graph::AnnGraph;
pub(crate) use graph::{
    check_input, extract, hnsw_search, Csr, Lists, ListsView, SharedVectors, Topology, UpperLayer,
    Vectors,
};
pub(crate) use topk::{sort_hits, TopK};
// What `tests.rs` reaches through `use super::*`.
#[cfg(all(test, target_arch = "x86_64"))]
use graph::{TO_L1, TO_L2};
#[cfg(test)]
use {
    codes::{dot_i8, dot_i8_portable, encode},
    file::all_finite,
    topk::rank_cmp,
};

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
/// 1M graphs were built with parallel insertion), the last is the study
/// `benches/ann_study.rs measure` with `ANN_DATA=iso` (1000 queries). 256
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
pub(crate) const MAX_FULL_CHECKS: usize = 3;

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
