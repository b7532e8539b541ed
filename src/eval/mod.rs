//! Evaluation metrics for `plip eval`: cross-modal retrieval (Recall@K), zero-shot
//! classification, and approximate-nearest-neighbour (ANN) index quality.
//!
//! Everything here is pure arithmetic on embeddings the caller has already computed. Inputs are
//! L2-normalised `f32` embedding rows, so the score of two items is their cosine similarity,
//! computed as the dot product ([`dot`], `f32`, a fixed summation order: identical inputs give
//! bit-identical scores, which the tie rule below relies on).
//!
//! # 1. Retrieval (PLIP's Recall@K)
//!
//! The data set is `N` pairs `(image_i, caption_i)`.
//!
//! * **text → image**: every caption `i` is a query against all `N` images;
//!   **image → text**: every image `i` is a query against all `N` captions.
//! * **Duplicates.** The caller gives every image and every caption a *group id*; equal ids mean
//!   identical items (the content hash of the image file, the caption text). A candidate is
//!   correct for a query when it is identical to something the query is paired with anywhere in
//!   the data set. For text → image and query caption `i`: image `j` is correct iff image `j`'s
//!   group is the group of some image `m` whose caption has caption `i`'s group. So image `j` is
//!   correct when `caption_j == caption_i` (the same text describes it), when
//!   `image_j == image_i` (it *is* the target image), and, for chains such as pairs `(A, x)`,
//!   `(B, x)`, `(B, y)`, image `B` at the third pair is correct for query `x`. Image → text is the
//!   mirror image. The correct set `M_i` always contains `i`, and identical candidates always get
//!   the same verdict.
//! * **Rank** of query `i`: `rank_i = 1 + #{ j ∉ M_i : s_ij >= max_{m ∈ M_i} s_im }`, the
//!   position of the best-scoring correct candidate. Ties with incorrect candidates are counted
//!   *against* the query (pessimistic), so a model that maps everything to one constant embedding
//!   gets rank `N` everywhere instead of a perfect score.
//! * **Recall@K** = fraction of queries with `rank <= K`, for each requested `K` (the CLI uses
//!   1, 5, 10, 50). When `K >= N` the value is still reported but it is trivially 1 (there are
//!   only `N` candidates); [`RecallAt::k_exceeds_candidates`] flags it and the table says
//!   "(only N candidates)".
//! * **Mean rank** and **median rank** of the `N` ranks; the median follows numpy: for even `N`
//!   the mean of the two middle values.
//!
//! # 2. Zero-shot classification
//!
//! `C` classes, each with `T` prompt templates (e.g. "an H&E image of {class}"). The class
//! embedding is CLIP's prompt ensemble ([`ensemble`]): the mean of the `T` L2-normalised text
//! embeddings, L2-normalised again. An image is predicted as `argmax_c image · class_c`; ties go
//! to the lowest class index (like `np.argmax`).
//!
//! Metrics follow scikit-learn with `labels = range(C)` (every class is reported, including
//! classes with no images or never predicted) and `zero_division = 0`: per class, with `tp` the
//! correct predictions of it, `support` its number of images and `predicted` how often it was
//! predicted: precision = `tp / predicted`, recall = `tp / support`,
//! F1 = `2 tp / (support + predicted)`, each 0 when its denominator is 0. Accuracy = correct / N;
//! macro averages = unweighted means over all `C` classes; weighted averages = means weighted by
//! support (weighted recall equals accuracy). The confusion matrix has rows = true class,
//! columns = predicted class.
//!
//! # 3. ANN index quality
//!
//! For each query, the exact top-K ids (brute force) and the ANN index's top-K ids.
//! `recall@K = mean over queries of |approx[..K] ∩ exact[..K]| / min(K, len(exact))` (an exact
//! list holds `min(K, n_available)` ids when the index has fewer than K items; ids count once).
//! Latency percentiles use numpy's default method (`np.percentile(x, q)`, "linear"): with the
//! values sorted ascending, `h = (n - 1) q / 100` and the result interpolates linearly between
//! `x[floor(h)]` and `x[floor(h) + 1]`.
//!
//! The golden values in `fixtures/golden/eval.json` come from numpy + scikit-learn
//! (`python3 fixtures/generate.py eval`); `tests/eval_golden.rs` checks this module against them.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::io::{self, Write};

use rayon::prelude::*;

use crate::vectors::dot;
use serde::Serialize;

pub(crate) mod compare;
pub(crate) mod html;
mod metrics;
pub(crate) mod probe;
pub(crate) mod prompts;
pub(crate) mod provenance;
mod report;
pub(crate) mod run;
pub(crate) mod slides;
#[cfg(test)]
mod tests;
pub use metrics::{
    ann_recall, classification_report, ensemble, latency_summary, percentile, predict, retrieval,
    zero_shot, ClassificationReport, DirectionReport,
};
pub(crate) use metrics::{ann_recall_with_ties, check_len, check_rows, RetrievalReport};
pub use report::{print_classification_table, print_retrieval_table};

/// The K values `plip eval` reports Recall@K for.
pub const DEFAULT_KS: [usize; 4] = [1, 5, 10, 50];

/// Queries scored together against each candidate row (keeps the query block in cache while the
/// candidates stream past once per block).
const QUERY_BLOCK: usize = 64;

/// Invalid input to a metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("nothing to evaluate: {0} is empty")]
    Empty(&'static str),
    #[error("{what}: expected {expected} entries, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} {index}: embedding dimension {got}, expected {expected}")]
    Dimension {
        what: &'static str,
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("{what} {index}: embedding contains NaN or infinity")]
    NonFinite { what: &'static str, index: usize },
    #[error("{what} {index}: embedding is all zeros and cannot be normalised")]
    ZeroNorm { what: &'static str, index: usize },
    #[error("{what} {index}: class {class} is out of range (there are {classes} classes)")]
    ClassOutOfRange {
        what: &'static str,
        index: usize,
        class: usize,
        classes: usize,
    },
    #[error("K must be at least 1")]
    ZeroK,
}

impl From<crate::vectors::VectorError> for EvalError {
    fn from(e: crate::vectors::VectorError) -> Self {
        use crate::vectors::VectorError as V;
        match e {
            V::Empty(what) => EvalError::Empty(what),
            V::Dimension {
                what,
                index,
                expected,
                got,
            } => EvalError::Dimension {
                what,
                index,
                expected,
                got,
            },
            V::NonFinite { what, index } => EvalError::NonFinite { what, index },
            V::ZeroNorm { what, index } => EvalError::ZeroNorm { what, index },
            // Not produced by the row checks or the ensemble.
            V::Cancelled | V::ZeroTerm => EvalError::ZeroNorm {
                what: "combination",
                index: 0,
            },
        }
    }
}
