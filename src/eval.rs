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
use serde::Serialize;

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

// ------------------------------------------------------------------------------------------
// scores
// ------------------------------------------------------------------------------------------

/// Dot product of two equal-length `f32` rows (= cosine similarity for L2-normalised rows).
///
/// Eight independent accumulators (so it vectorises) combined in a fixed order: the result
/// depends only on the two inputs, so identical rows always give bit-identical scores.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Checks all rows have dimension `dim` and only finite values.
fn check_rows<R: AsRef<[f32]>>(
    what: &'static str,
    rows: &[R],
    dim: usize,
) -> Result<(), EvalError> {
    for (index, r) in rows.iter().enumerate() {
        let r = r.as_ref();
        if r.len() != dim {
            return Err(EvalError::Dimension {
                what,
                index,
                expected: dim,
                got: r.len(),
            });
        }
        if !r.iter().all(|x| x.is_finite()) {
            return Err(EvalError::NonFinite { what, index });
        }
    }
    Ok(())
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), EvalError> {
    if expected == got {
        Ok(())
    } else {
        Err(EvalError::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

// ------------------------------------------------------------------------------------------
// retrieval
// ------------------------------------------------------------------------------------------

/// Recall@K in one direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallAt {
    pub k: usize,
    /// Fraction of queries whose rank is `<= k`.
    pub recall: f64,
    /// `k >= n`: there are only `n` candidates, so the value is trivially 1.
    pub k_exceeds_candidates: bool,
}

/// Retrieval results in one direction (see the module docs for the rank definition).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectionReport {
    pub recall: Vec<RecallAt>,
    pub mean_rank: f64,
    /// numpy median: mean of the two middle ranks for an even number of queries.
    pub median_rank: f64,
    /// Rank of every query, in pair order (1 = a correct candidate scored highest).
    pub ranks: Vec<usize>,
}

/// Both directions of a retrieval evaluation over `n` image-caption pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalReport {
    pub n: usize,
    pub text_to_image: DirectionReport,
    pub image_to_text: DirectionReport,
}

/// Recall@K, ranks, mean and median rank for text → image and image → text retrieval over `n`
/// pairs `(images[i], captions[i])`.
///
/// `image_groups[i]` / `caption_groups[i]` identify identical items (equal id = identical
/// image / identical caption text, e.g. a content hash); see the module docs for how they define
/// the correct candidates, and for the pessimistic tie rule. `ks` are the K values for
/// Recall@K (e.g. [`DEFAULT_KS`]). Rows must share one dimension and be finite; they should be
/// L2-normalised (scores are plain dot products). Work is `O(n² · dim)`, in parallel, without an
/// `n × n` matrix.
pub fn retrieval<R: AsRef<[f32]> + Sync>(
    images: &[R],
    captions: &[R],
    image_groups: &[u64],
    caption_groups: &[u64],
    ks: &[usize],
) -> Result<RetrievalReport, EvalError> {
    let n = images.len();
    if n == 0 {
        return Err(EvalError::Empty("images"));
    }
    check_len("captions", n, captions.len())?;
    check_len("image_groups", n, image_groups.len())?;
    check_len("caption_groups", n, caption_groups.len())?;
    if ks.contains(&0) {
        return Err(EvalError::ZeroK);
    }
    let dim = images[0].as_ref().len();
    check_rows("image", images, dim)?;
    check_rows("caption", captions, dim)?;
    let t2i = query_ranks(captions, images, caption_groups, image_groups);
    let i2t = query_ranks(images, captions, image_groups, caption_groups);
    Ok(RetrievalReport {
        n,
        text_to_image: direction_report(t2i, ks),
        image_to_text: direction_report(i2t, ks),
    })
}

/// Summarises ranks (each in `1..=n`) into Recall@K, mean and median rank.
pub fn direction_report(ranks: Vec<usize>, ks: &[usize]) -> DirectionReport {
    let n = ranks.len();
    let recall = ks
        .iter()
        .map(|&k| RecallAt {
            k,
            recall: if n == 0 {
                0.0
            } else {
                ranks.iter().filter(|&&r| r <= k).count() as f64 / n as f64
            },
            k_exceeds_candidates: k >= n,
        })
        .collect();
    let ranks_f: Vec<f64> = ranks.iter().map(|&r| r as f64).collect();
    DirectionReport {
        recall,
        mean_rank: if n == 0 {
            f64::NAN
        } else {
            ranks_f.iter().sum::<f64>() / n as f64
        },
        median_rank: median(&ranks_f).unwrap_or(f64::NAN),
        ranks,
    }
}

/// Maps arbitrary ids to dense `0..` indices (in order of first appearance).
fn dense_ids(ids: &[u64]) -> (Vec<usize>, usize) {
    let mut map = HashMap::with_capacity(ids.len());
    let dense = ids
        .iter()
        .map(|&g| {
            let next = map.len();
            *map.entry(g).or_insert(next)
        })
        .collect();
    (dense, map.len())
}

/// Pessimistic rank of every query `i` (row `queries[i]`) among `cands`.
fn query_ranks<R: AsRef<[f32]> + Sync>(
    queries: &[R],
    cands: &[R],
    query_groups: &[u64],
    cand_groups: &[u64],
) -> Vec<usize> {
    let n = queries.len();
    let (qg, n_qg) = dense_ids(query_groups);
    let (cg, n_cg) = dense_ids(cand_groups);
    // correct[q] = candidate groups paired with query group q; members[c] = positions of group c
    let mut correct: Vec<Vec<usize>> = vec![Vec::new(); n_qg];
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_cg];
    for i in 0..n {
        correct[qg[i]].push(cg[i]);
        members[cg[i]].push(i);
    }
    for c in &mut correct {
        c.sort_unstable();
        c.dedup();
    }
    let blocks: Vec<Vec<usize>> = (0..n.div_ceil(QUERY_BLOCK))
        .into_par_iter()
        .map(|b| {
            let block = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n);
            // correct positions (sorted) and the best correct score of each query in the block
            let mut matches = Vec::with_capacity(block.len());
            let mut best = Vec::with_capacity(block.len());
            for i in block.clone() {
                let mut m: Vec<usize> = correct[qg[i]]
                    .iter()
                    .flat_map(|&c| members[c].iter().copied())
                    .collect();
                m.sort_unstable();
                let q = queries[i].as_ref();
                best.push(
                    m.iter()
                        .map(|&j| dot(q, cands[j].as_ref()))
                        .fold(f32::NEG_INFINITY, f32::max),
                );
                matches.push(m);
            }
            let mut ranks = vec![1usize; block.len()];
            for (j, cand) in cands.iter().enumerate() {
                let cand = cand.as_ref();
                for (bi, i) in block.clone().enumerate() {
                    if dot(queries[i].as_ref(), cand) >= best[bi]
                        && matches[bi].binary_search(&j).is_err()
                    {
                        ranks[bi] += 1;
                    }
                }
            }
            ranks
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

/// numpy's median: the middle value, or the mean of the two middle values for an even count.
/// `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

// ------------------------------------------------------------------------------------------
// zero-shot classification
// ------------------------------------------------------------------------------------------

/// Per-class metrics (scikit-learn semantics, `zero_division = 0`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub name: String,
    /// correct / predicted as this class; 0 if never predicted.
    pub precision: f64,
    /// correct / support; 0 if the class has no items.
    pub recall: f64,
    /// `2 tp / (support + predicted)`; 0 if both are 0.
    pub f1: f64,
    /// Number of items whose true class this is.
    pub support: usize,
}

/// Classification metrics over `n` items and all `C` classes (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    pub classes: Vec<String>,
    pub n: usize,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// CLIP prompt ensembling: the mean of the L2-normalised template embeddings, L2-normalised
/// again (computed in `f64`). Rows are normalised here, so raw embeddings work too.
pub fn ensemble<R: AsRef<[f32]>>(template_embeddings: &[R]) -> Result<Vec<f32>, EvalError> {
    let first = template_embeddings
        .first()
        .ok_or(EvalError::Empty("template embeddings"))?;
    let dim = first.as_ref().len();
    check_rows("template", template_embeddings, dim)?;
    let mut sum = vec![0f64; dim];
    for (index, row) in template_embeddings.iter().enumerate() {
        let row = row.as_ref();
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(EvalError::ZeroNorm {
                what: "template",
                index,
            });
        }
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += x as f64 / norm;
        }
    }
    let t = template_embeddings.len() as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / t).collect();
    let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(EvalError::ZeroNorm {
            what: "ensemble of templates",
            index: 0,
        });
    }
    Ok(mean.iter().map(|x| (x / norm) as f32).collect())
}

/// Zero-shot predictions: for each image, `argmax_c dot(image, class_embeddings[c])`, ties to
/// the lowest class index.
pub fn predict<R: AsRef<[f32]> + Sync, C: AsRef<[f32]> + Sync>(
    images: &[R],
    class_embeddings: &[C],
) -> Result<Vec<usize>, EvalError> {
    let first = class_embeddings
        .first()
        .ok_or(EvalError::Empty("class embeddings"))?;
    let dim = first.as_ref().len();
    check_rows("class embedding", class_embeddings, dim)?;
    check_rows("image", images, dim)?;
    Ok(images
        .par_iter()
        .map(|img| {
            let img = img.as_ref();
            let mut best = (0, dot(img, class_embeddings[0].as_ref()));
            for (c, e) in class_embeddings.iter().enumerate().skip(1) {
                let s = dot(img, e.as_ref());
                if s > best.1 {
                    best = (c, s);
                }
            }
            best.0
        })
        .collect())
}

/// Zero-shot classification: [`predict`] each image against the class embeddings (usually
/// [`ensemble`]s of prompt templates), then [`classification_report`] against `labels` (true
/// class index per image).
pub fn zero_shot<R: AsRef<[f32]> + Sync, C: AsRef<[f32]> + Sync>(
    images: &[R],
    labels: &[usize],
    class_embeddings: &[C],
    class_names: &[String],
) -> Result<ClassificationReport, EvalError> {
    check_len("class names", class_embeddings.len(), class_names.len())?;
    check_len("labels", images.len(), labels.len())?;
    let predicted = predict(images, class_embeddings)?;
    classification_report(labels, &predicted, class_names)
}

/// Accuracy, per-class and averaged precision / recall / F1, and the confusion matrix, with
/// scikit-learn semantics (`labels = range(C)`, `zero_division = 0`; see the module docs).
/// `truth[i]` and `predicted[i]` are class indices into `class_names`.
pub fn classification_report(
    truth: &[usize],
    predicted: &[usize],
    class_names: &[String],
) -> Result<ClassificationReport, EvalError> {
    let n = truth.len();
    let c = class_names.len();
    if n == 0 {
        return Err(EvalError::Empty("labels"));
    }
    if c == 0 {
        return Err(EvalError::Empty("classes"));
    }
    check_len("predictions", n, predicted.len())?;
    let mut confusion = vec![vec![0usize; c]; c];
    for (index, (&t, &p)) in truth.iter().zip(predicted).enumerate() {
        for (what, class) in [("label", t), ("prediction", p)] {
            if class >= c {
                return Err(EvalError::ClassOutOfRange {
                    what,
                    index,
                    class,
                    classes: c,
                });
            }
        }
        confusion[t][p] += 1;
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassMetrics> = (0..c)
        .map(|k| {
            let tp = confusion[k][k];
            let support: usize = confusion[k].iter().sum();
            let pred: usize = confusion.iter().map(|row| row[k]).sum();
            ClassMetrics {
                name: class_names[k].clone(),
                precision: ratio(tp, pred),
                recall: ratio(tp, support),
                f1: ratio(2 * tp, support + pred),
                support,
            }
        })
        .collect();
    let macro_avg = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / c as f64;
    // total support is n > 0
    let weighted_avg = |f: fn(&ClassMetrics) -> f64| {
        per_class
            .iter()
            .map(|m| f(m) * m.support as f64)
            .sum::<f64>()
            / n as f64
    };
    let correct: usize = (0..c).map(|k| confusion[k][k]).sum();
    Ok(ClassificationReport {
        classes: class_names.to_vec(),
        n,
        accuracy: correct as f64 / n as f64,
        macro_precision: macro_avg(|m| m.precision),
        macro_recall: macro_avg(|m| m.recall),
        macro_f1: macro_avg(|m| m.f1),
        weighted_precision: weighted_avg(|m| m.precision),
        weighted_recall: weighted_avg(|m| m.recall),
        weighted_f1: weighted_avg(|m| m.f1),
        per_class,
        confusion,
    })
}

// ------------------------------------------------------------------------------------------
// ANN quality and latency
// ------------------------------------------------------------------------------------------

/// ANN recall@K: the mean over queries of `|approx[..K] ∩ exact[..K]| / min(K, len(exact))`.
///
/// `exact[q]` are query `q`'s true nearest ids, best first (`min(K, n_available)` of them),
/// `approx[q]` what the index returned; longer lists are cut at K, each id counts once. Queries
/// with an empty exact list (empty index) are left out; if that leaves none, it is an error.
pub fn ann_recall<T: Eq + Hash>(
    exact: &[Vec<T>],
    approx: &[Vec<T>],
    k: usize,
) -> Result<f64, EvalError> {
    if k == 0 {
        return Err(EvalError::ZeroK);
    }
    check_len("approximate result lists", exact.len(), approx.len())?;
    let mut sum = 0.0;
    let mut queries = 0usize;
    for (e, a) in exact.iter().zip(approx) {
        let e: HashSet<&T> = e.iter().take(k).collect();
        let denom = e.len();
        if denom == 0 {
            continue;
        }
        let found: HashSet<&T> = a.iter().take(k).filter(|id| e.contains(id)).collect();
        sum += found.len() as f64 / denom as f64;
        queries += 1;
    }
    if queries == 0 {
        return Err(EvalError::Empty("exact result lists"));
    }
    Ok(sum / queries as f64)
}

/// The `q`-th percentile (`0 <= q <= 100`) with numpy's default method, bit-for-bit like
/// `np.percentile(values, q)`: sort ascending, `h = (n - 1) * (q / 100)`, interpolate linearly
/// between `x[floor(h)]` and the next value (numpy's `_lerp`). The input need not be sorted.
/// `None` for no values or `q` outside `[0, 100]`.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=100.0).contains(&q) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let last = v.len() - 1;
    let h = last as f64 * (q / 100.0);
    if h >= last as f64 {
        return Some(v[last]);
    }
    let lo = h.floor();
    let g = h - lo;
    let (a, b) = (v[lo as usize], v[lo as usize + 1]);
    let d = b - a;
    Some(if g >= 0.5 {
        b - d * (1.0 - g)
    } else {
        a + d * g
    })
}

/// Latency summary of a list of durations (same unit as the input, e.g. milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub n: usize,
    pub mean: f64,
    /// [`percentile`] 50.
    pub p50: f64,
    /// [`percentile`] 99.
    pub p99: f64,
    pub max: f64,
}

/// Mean, p50, p99 and max of `durations`; `None` if empty.
pub fn latency_summary(durations: &[f64]) -> Option<LatencySummary> {
    Some(LatencySummary {
        n: durations.len(),
        mean: durations.iter().sum::<f64>() / durations.len() as f64,
        p50: percentile(durations, 50.0)?,
        p99: percentile(durations, 99.0)?,
        max: durations.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

// ------------------------------------------------------------------------------------------
// tables
// ------------------------------------------------------------------------------------------

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints a retrieval report as an aligned table: Recall@K rows (with "(only N candidates)"
/// where `K >= N`), mean and median rank, for both directions.
pub fn print_retrieval_table<W: Write>(w: &mut W, r: &RetrievalReport) -> io::Result<()> {
    let (t, i) = (&r.text_to_image, &r.image_to_text);
    let mut rows: Vec<(String, String, String)> = t
        .recall
        .iter()
        .zip(&i.recall)
        .map(|(a, b)| {
            let mut label = format!("recall@{}", a.k);
            if a.k_exceeds_candidates {
                label += &format!(" (only {})", plural(r.n, "candidate", "candidates"));
            }
            (
                label,
                format!("{:.4}", a.recall),
                format!("{:.4}", b.recall),
            )
        })
        .collect();
    rows.push((
        "mean rank".into(),
        format!("{:.2}", t.mean_rank),
        format!("{:.2}", i.mean_rank),
    ));
    rows.push((
        "median rank".into(),
        format!("{:.1}", t.median_rank),
        format!("{:.1}", i.median_rank),
    ));
    let (h1, h2) = ("text->image", "image->text");
    let lw = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max("metric".len());
    writeln!(
        w,
        "retrieval over {}",
        plural(r.n, "image-caption pair", "image-caption pairs")
    )?;
    writeln!(w, "{:<lw$}  {h1:>11}  {h2:>11}", "metric")?;
    for (label, a, b) in rows {
        writeln!(w, "{label:<lw$}  {a:>11}  {b:>11}")?;
    }
    Ok(())
}

/// Prints a classification report like scikit-learn's `classification_report` (per class
/// precision / recall / F1 / support, accuracy, macro and weighted averages), notes on classes
/// with no items or never predicted, and the confusion matrix.
pub fn print_classification_table<W: Write>(w: &mut W, r: &ClassificationReport) -> io::Result<()> {
    let nw = r
        .classes
        .iter()
        .map(|c| c.chars().count())
        .chain(["weighted avg".len(), "class".len()])
        .max()
        .unwrap_or(0);
    let sw = r.n.to_string().len().max("support".len());
    writeln!(
        w,
        "classification of {} into {}",
        plural(r.n, "item", "items"),
        plural(r.classes.len(), "class", "classes")
    )?;
    writeln!(
        w,
        "{:<nw$}  {:>9}  {:>9}  {:>9}  {:>sw$}",
        "class", "precision", "recall", "f1", "support"
    )?;
    for m in &r.per_class {
        writeln!(
            w,
            "{:<nw$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>sw$}",
            m.name, m.precision, m.recall, m.f1, m.support
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "{:<nw$}  {:>9}  {:>9}  {:>9.4}  {:>sw$}",
        "accuracy", "", "", r.accuracy, r.n
    )?;
    for (label, p, rc, f) in [
        ("macro avg", r.macro_precision, r.macro_recall, r.macro_f1),
        (
            "weighted avg",
            r.weighted_precision,
            r.weighted_recall,
            r.weighted_f1,
        ),
    ] {
        writeln!(
            w,
            "{label:<nw$}  {p:>9.4}  {rc:>9.4}  {f:>9.4}  {:>sw$}",
            r.n
        )?;
    }
    let list = |f: &dyn Fn(usize) -> bool| -> Vec<&str> {
        (0..r.classes.len())
            .filter(|&k| f(k))
            .map(|k| r.classes[k].as_str())
            .collect()
    };
    let empty = list(&|k| r.per_class[k].support == 0);
    let never = list(&|k| r.confusion.iter().all(|row| row[k] == 0));
    if !empty.is_empty() {
        writeln!(
            w,
            "no items (recall and F1 counted as 0): {}",
            empty.join(", ")
        )?;
    }
    if !never.is_empty() {
        writeln!(
            w,
            "never predicted (precision counted as 0): {}",
            never.join(", ")
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "confusion matrix (rows = true class, columns = predicted class):"
    )?;
    let c = r.classes.len();
    let max = r.confusion.iter().flatten().copied().max().unwrap_or(0);
    let cw = max
        .to_string()
        .len()
        .max(c.saturating_sub(1).to_string().len());
    let iw = c.saturating_sub(1).to_string().len();
    let rw = iw + 1 + nw;
    write!(w, "{:rw$}", "")?;
    for k in 0..c {
        write!(w, "  {k:>cw$}")?;
    }
    writeln!(w)?;
    for (k, row) in r.confusion.iter().enumerate() {
        write!(w, "{:<rw$}", format!("{k:>iw$} {}", r.classes[k]))?;
        for v in row {
            write!(w, "  {v:>cw$}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// tests
// ------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn ids(n: usize) -> Vec<u64> {
        (0..n as u64).collect()
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn perfect_retrieval() {
        let e: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                unit(&[
                    (i == 0) as u8 as f32,
                    (i == 1) as u8 as f32,
                    (i == 2) as u8 as f32,
                    (i == 3) as u8 as f32,
                ])
            })
            .collect();
        let r = retrieval(&e, &e, &ids(4), &ids(4), &[1, 5]).unwrap();
        for d in [&r.text_to_image, &r.image_to_text] {
            assert_eq!(d.ranks, vec![1; 4]);
            assert_eq!(
                d.recall[0],
                RecallAt {
                    k: 1,
                    recall: 1.0,
                    k_exceeds_candidates: false
                }
            );
            assert_eq!(
                d.recall[1],
                RecallAt {
                    k: 5,
                    recall: 1.0,
                    k_exceeds_candidates: true
                }
            );
            assert_eq!((d.mean_rank, d.median_rank), (1.0, 1.0));
        }
    }

    #[test]
    fn single_pair() {
        let r = retrieval(
            &[vec![1.0f32, 0.0]],
            &[vec![0.0f32, 1.0]],
            &[9],
            &[9],
            &DEFAULT_KS,
        )
        .unwrap();
        assert_eq!(r.n, 1);
        for d in [&r.text_to_image, &r.image_to_text] {
            assert_eq!(d.ranks, vec![1]);
            assert!(d
                .recall
                .iter()
                .all(|x| x.recall == 1.0 && x.k_exceeds_candidates));
            assert_eq!((d.mean_rank, d.median_rank), (1.0, 1.0));
        }
    }

    #[test]
    fn constant_embeddings_score_worst_not_best() {
        let e = vec![unit(&[1.0, 2.0, 3.0]); 5];
        let r = retrieval(&e, &e, &ids(5), &ids(5), &[1, 4, 5, 10]).unwrap();
        for d in [&r.text_to_image, &r.image_to_text] {
            assert_eq!(d.ranks, vec![5; 5]);
            let rec: Vec<(f64, bool)> = d
                .recall
                .iter()
                .map(|x| (x.recall, x.k_exceeds_candidates))
                .collect();
            assert_eq!(
                rec,
                vec![(0.0, false), (0.0, false), (1.0, true), (1.0, true)]
            );
        }
        // ...unless everything is the same item
        let r = retrieval(&e, &e, &[7; 5], &[7; 5], &[1]).unwrap();
        assert_eq!(r.text_to_image.ranks, vec![1; 5]);
    }

    #[test]
    fn duplicates_are_matches() {
        // pairs (A,x) (A,y) (B,y) (C,z): image A twice, caption y twice
        let a = unit(&[1.0, 0.0, 0.0]);
        let b = unit(&[0.0, 1.0, 0.0]);
        let c = unit(&[0.0, 0.0, 1.0]);
        let images = vec![a.clone(), a.clone(), b.clone(), c.clone()];
        // captions chosen so that every caption scores image A highest
        let x = unit(&[1.0, 0.1, 0.2]);
        let y = unit(&[1.0, 0.5, 0.0]);
        let z = unit(&[1.0, 0.0, 0.5]);
        let captions = vec![x, y.clone(), y, z];
        let r = retrieval(
            &images,
            &captions,
            &[1, 1, 2, 3],
            &[10, 11, 11, 12],
            &[1, 2],
        )
        .unwrap();
        // text->image: x -> {A} at positions 0,1 -> rank 1; y (pairs 1, 2) -> images {A, B}
        // -> rank 1; z -> {C}: A (twice) beats it -> rank 3
        assert_eq!(r.text_to_image.ranks, vec![1, 1, 1, 3]);
        // image->text: A -> captions {x, y} = pairs 0, 1, 2; B -> {y}; C -> {z}
        // B . y = 0.447 vs x 0.098, z 0 -> rank 1; C . z = 0.447 vs x 0.195, y 0 -> rank 1
        assert_eq!(r.image_to_text.ranks, vec![1, 1, 1, 1]);
    }

    #[test]
    fn ties_with_non_matches_count_against() {
        // two different captions with the same embedding: each image ties the other's caption
        let images = vec![unit(&[1.0, 0.2]), unit(&[1.0, -0.2])];
        let captions = vec![unit(&[1.0, 0.0]), unit(&[1.0, 0.0])];
        let r = retrieval(&images, &captions, &ids(2), &ids(2), &[1]).unwrap();
        assert_eq!(r.image_to_text.ranks, vec![2, 2]);
        // and each caption scores both (different) images the same
        assert_eq!(r.text_to_image.ranks, vec![2, 2]);
    }

    #[test]
    fn median_is_numpy_median() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let d = direction_report(vec![1, 2, 3, 10], &[2]);
        assert_eq!(
            (d.mean_rank, d.median_rank, d.recall[0].recall),
            (4.0, 2.5, 0.5)
        );
    }

    #[test]
    fn many_queries_cross_blocks() {
        // more than one query block; a rotation so that query i's best non-match is known
        let n = 150;
        let e: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let t = i as f32 / n as f32 * std::f32::consts::PI; // half circle: distinct
                vec![t.cos(), t.sin()]
            })
            .collect();
        let r = retrieval(&e, &e, &ids(n), &ids(n), &DEFAULT_KS).unwrap();
        assert_eq!(r.text_to_image.ranks, vec![1; n]);
        assert_eq!(r.image_to_text.ranks, vec![1; n]);
        assert!(!r.text_to_image.recall[3].k_exceeds_candidates);
    }

    #[test]
    fn retrieval_rejects_bad_input() {
        let e = vec![vec![1.0f32, 0.0]];
        let none: Vec<Vec<f32>> = vec![];
        assert_eq!(
            retrieval(&none, &none, &[], &[], &[1]),
            Err(EvalError::Empty("images"))
        );
        assert!(matches!(
            retrieval(&e, &none, &[0], &[0], &[1]),
            Err(EvalError::LengthMismatch { .. })
        ));
        assert!(matches!(
            retrieval(&e, &e, &[0], &[], &[1]),
            Err(EvalError::LengthMismatch { .. })
        ));
        assert_eq!(retrieval(&e, &e, &[0], &[0], &[0]), Err(EvalError::ZeroK));
        let bad = vec![vec![1.0f32, 0.0, 0.0]];
        assert!(matches!(
            retrieval(&e, &bad, &[0], &[0], &[1]),
            Err(EvalError::Dimension { .. })
        ));
        let nan = vec![vec![f32::NAN, 0.0]];
        assert!(matches!(
            retrieval(&e, &nan, &[0], &[0], &[1]),
            Err(EvalError::NonFinite { .. })
        ));
    }

    #[test]
    fn ensemble_is_renormalised_mean() {
        let e = ensemble(&[vec![2.0f32, 0.0], vec![0.0, 3.0]]).unwrap();
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!((e[0] - s).abs() < 1e-7 && (e[1] - s).abs() < 1e-7);
        assert_eq!(ensemble(&[vec![0.6f32, 0.8]]).unwrap(), vec![0.6, 0.8]);
        assert!(matches!(
            ensemble(&[vec![1.0f32, 0.0], vec![-1.0, 0.0]]),
            Err(EvalError::ZeroNorm { .. })
        ));
        assert!(matches!(
            ensemble(&[vec![0.0f32, 0.0]]),
            Err(EvalError::ZeroNorm { .. })
        ));
        assert_eq!(
            ensemble::<Vec<f32>>(&[]),
            Err(EvalError::Empty("template embeddings"))
        );
    }

    #[test]
    fn prediction_ties_go_to_lowest_class() {
        let classes = vec![vec![1.0f32, 0.0], vec![0.0, 1.0], vec![0.0, 1.0]];
        let images = vec![vec![0.0f32, 1.0], unit(&[1.0, 1.0]), vec![1.0, 0.0]];
        assert_eq!(predict(&images, &classes).unwrap(), vec![1, 0, 0]);
    }

    #[test]
    fn class_without_items_and_never_predicted() {
        // classes: a, b (no items, predicted once), c (items, never predicted), d (nothing)
        let r = classification_report(&[0, 0, 2, 2], &[0, 1, 0, 0], &names(&["a", "b", "c", "d"]))
            .unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0, 0], vec![0; 4], vec![2, 0, 0, 0], vec![0; 4]]
        );
        assert_eq!(r.accuracy, 0.25);
        let a = &r.per_class[0];
        assert_eq!(
            (a.precision, a.recall, a.f1, a.support),
            (1.0 / 3.0, 0.5, 0.4, 2)
        );
        for k in 1..4 {
            let m = &r.per_class[k];
            assert_eq!((m.precision, m.recall, m.f1), (0.0, 0.0, 0.0), "{}", m.name);
        }
        assert_eq!(r.per_class[1].support, 0);
        assert_eq!(r.macro_f1, 0.1);
        assert_eq!(r.weighted_f1, 0.2);
        assert_eq!(r.weighted_recall, r.accuracy);
        let mut out = Vec::new();
        print_classification_table(&mut out, &r).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("no items (recall and F1 counted as 0): b, d"),
            "{out}"
        );
        assert!(
            out.contains("never predicted (precision counted as 0): c, d"),
            "{out}"
        );
    }

    #[test]
    fn zero_shot_end_to_end() {
        let classes = vec![
            ensemble(&[vec![1.0f32, 0.0, 0.0], unit(&[1.0, 0.1, 0.0])]).unwrap(),
            ensemble(&[vec![0.0f32, 1.0, 0.0]]).unwrap(),
            ensemble(&[vec![0.0f32, 0.0, 1.0]]).unwrap(),
        ];
        let images = vec![
            unit(&[0.9, 0.1, 0.0]),
            unit(&[0.1, 0.9, 0.0]),
            unit(&[0.8, 0.0, 0.3]),
        ];
        let r = zero_shot(&images, &[0, 1, 2], &classes, &names(&["x", "y", "z"])).unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![1, 0, 0], vec![0, 1, 0], vec![1, 0, 0]]
        );
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-15);
        assert!(matches!(
            zero_shot(&images, &[0, 1, 3], &classes, &names(&["x", "y", "z"])),
            Err(EvalError::ClassOutOfRange {
                what: "label",
                index: 2,
                class: 3,
                classes: 3
            })
        ));
        assert!(matches!(
            zero_shot(&images, &[0, 1], &classes, &names(&["x", "y", "z"])),
            Err(EvalError::LengthMismatch { .. })
        ));
        assert!(matches!(
            zero_shot(&images, &[0, 1, 2], &classes, &names(&["x", "y"])),
            Err(EvalError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn ann_recall_cases() {
        let exact = vec![vec![1, 2, 3], vec![4, 5]];
        let approx = vec![vec![3, 2, 9, 1], vec![5, 5]];
        // k = 3: 2/3 and 1/2 (5 counted once)
        assert!((ann_recall(&exact, &approx, 3).unwrap() - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-15);
        // k = 1: {1} vs {3} -> 0; {4} vs {5} -> 0
        assert_eq!(ann_recall(&exact, &approx, 1).unwrap(), 0.0);
        assert_eq!(ann_recall(&exact, &exact, 10).unwrap(), 1.0);
        assert_eq!(
            ann_recall(&[vec![], vec![7u64]], &[vec![1], vec![7]], 5).unwrap(),
            1.0
        );
        assert!(ann_recall::<u64>(&[vec![]], &[vec![]], 5).is_err());
        assert_eq!(ann_recall(&exact, &approx, 0), Err(EvalError::ZeroK));
    }

    #[test]
    fn percentile_is_numpy_linear() {
        let v = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert_eq!(percentile(&v, 40.0), Some(29.0)); // h = 1.6: 20 + 0.6 * 15
        assert_eq!(percentile(&v, 0.0), Some(15.0));
        assert_eq!(percentile(&v, 100.0), Some(50.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), Some(2.5));
        assert_eq!(percentile(&[2.5], 99.0), Some(2.5));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v, 100.5), None);
        let s = latency_summary(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.n, s.mean, s.p50, s.max), (4, 2.5, 2.5, 4.0));
        assert!((s.p99 - 3.97).abs() < 1e-12);
        assert!(latency_summary(&[]).is_none());
    }

    #[test]
    fn retrieval_table_flags_large_k() {
        let e = vec![unit(&[1.0, 0.0]), unit(&[0.0, 1.0])];
        let r = retrieval(&e, &e, &ids(2), &ids(2), &[1, 5]).unwrap();
        let mut out = Vec::new();
        print_retrieval_table(&mut out, &r).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("recall@5 (only 2 candidates)"), "{out}");
        assert!(!out.contains("recall@1 (only"), "{out}");
        assert!(out.contains("median rank"), "{out}");
        let one = retrieval(&e[..1], &e[..1], &[0], &[0], &[1]).unwrap();
        let mut out = Vec::new();
        print_retrieval_table(&mut out, &one).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("recall@1 (only 1 candidate) "));
    }

    #[test]
    fn reports_serialize() {
        let e = vec![unit(&[1.0, 0.0]), unit(&[0.0, 1.0])];
        let r = retrieval(&e, &e, &ids(2), &ids(2), &[1]).unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(
            j["text_to_image"]["recall"][0]["k_exceeds_candidates"],
            false
        );
        let c = classification_report(&[0], &[0], &names(&["a"])).unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap()["per_class"][0]["support"],
            1
        );
    }
}
