//! The metrics themselves, as pure functions over embeddings: retrieval
//! Recall@K and ranks with the pessimistic tie rule, zero-shot prediction and
//! scikit-learn's classification report, ANN recall and latency percentiles.

use super::*;

/// Checks all rows have dimension `dim` and only finite values.
pub(crate) fn check_rows<R: AsRef<[f32]>>(
    what: &'static str,
    rows: &[R],
    dim: usize,
) -> Result<(), EvalError> {
    Ok(crate::vectors::check_rows(what, rows, dim)?)
}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), EvalError> {
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
pub(crate) fn direction_report(ranks: Vec<usize>, ks: &[usize]) -> DirectionReport {
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
pub(crate) fn median(values: &[f64]) -> Option<f64> {
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
/// again (computed in `f64`; [`crate::vectors::ensemble`], the one implementation).
pub fn ensemble<R: AsRef<[f32]>>(template_embeddings: &[R]) -> Result<Vec<f32>, EvalError> {
    Ok(crate::vectors::ensemble(template_embeddings)?)
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

/// [`ann_recall`] where ties count: an approximate hit is correct when it is
/// among the exact top K, or when its score equals or beats the exact K-th
/// score (on an index of identical background tiles, any K of them are right).
/// Lists are `(id, score)`, best first; scores must come from the same dot
/// product (plip's exact and graph search give bit-identical scores).
pub(crate) fn ann_recall_with_ties<T: Eq + Hash>(
    exact: &[Vec<(T, f32)>],
    approx: &[Vec<(T, f32)>],
    k: usize,
) -> Result<f64, EvalError> {
    if k == 0 {
        return Err(EvalError::ZeroK);
    }
    check_len("approximate result lists", exact.len(), approx.len())?;
    let mut sum = 0.0;
    let mut queries = 0usize;
    for (e, a) in exact.iter().zip(approx) {
        let e = &e[..e.len().min(k)];
        let Some(&(_, kth)) = e.last() else {
            continue;
        };
        let ids: HashSet<&T> = e.iter().map(|(id, _)| id).collect();
        let mut seen = HashSet::new();
        let found = a
            .iter()
            .take(k)
            .filter(|(id, score)| seen.insert(id) && (ids.contains(id) || *score >= kth))
            .count();
        sum += found.min(e.len()) as f64 / e.len() as f64;
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
