//! Slide retrieval figures as SISH, Yottixel and RetCCL report them (issue 32), as pure
//! functions of each query's true label and the labels of the slides it retrieved, in
//! rank order (the query itself, and with a patient column its whole patient, already
//! left out by the caller).
//!
//! - **top-1 accuracy**: the first retrieved slide has the query's label.
//! - **MV@k** (majority vote at k): the most frequent label among the first `k`
//!   retrieved (all of them when fewer were retrieved) is the query's. A tie between
//!   labels goes to the one whose best-ranked slide comes first, as Python's
//!   `Counter(labels).most_common(1)` does over a ranked list (SISH's `eval.py`).
//!   No retrieved slide is a wrong vote.
//! - **AP@k** as SISH's evaluation code computes it (`eval.py`, "MAP calculation",
//!   <https://github.com/mahmoodlab/SISH/blob/42fe005413d7ae5b4e758a99505ecb0a2e6efb0f/eval.py#L240>):
//!   over the first `k` retrieved, for each position `i` (1-based) holding the query's
//!   label, the precision at `i` (correct among the first `i`, over `i`); their sum
//!   divided by `k` (SISH divides by 5, its k), not by the number of correct slides.
//!   So a query with one correct slide, at rank 1, has AP@5 = 0.2. **mAP@k** is the
//!   mean over queries; per class, over the class's queries (SISH reports it per
//!   class, as "Percision").
//! - **macro F1 of MV@5**: MV@5 read as a classifier; per evaluated class `c`,
//!   F1 = 2 tp / (support + predicted), where predicted counts the queries voted `c`;
//!   the unweighted mean over the evaluated classes (scikit-learn's
//!   `f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro",
//!   zero_division=0)`). A vote for a class that is not evaluated is simply wrong.

use serde::Serialize;

use crate::eval::EvalError;

/// The label most frequent among `retrieved[..k]`, ties to the best-ranked; `None`
/// when nothing was retrieved or `k` is 0.
pub(crate) fn majority_vote(retrieved: &[usize], k: usize) -> Option<usize> {
    let top = &retrieved[..k.min(retrieved.len())];
    let mut best: Option<(usize, usize)> = None; // (label, count)
    for (i, &l) in top.iter().enumerate() {
        if top[..i].contains(&l) {
            continue; // counted at its first (best-ranked) place
        }
        let n = top.iter().filter(|&&x| x == l).count();
        if best.is_none_or(|(_, c)| n > c) {
            best = Some((l, n));
        }
    }
    best.map(|b| b.0)
}

/// SISH's AP@k of one query whose label is `truth`.
pub(crate) fn ap_at_k(retrieved: &[usize], truth: usize, k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let top = &retrieved[..k.min(retrieved.len())];
    let mut correct = 0usize;
    let mut sum = 0.0;
    for (i, &l) in top.iter().enumerate() {
        if l == truth {
            correct += 1;
            sum += correct as f64 / (i + 1) as f64;
        }
    }
    sum / k as f64
}

/// The figures of one class (or of all queries).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct SlideFigures {
    /// The class name (`"all"` for every query).
    pub(crate) class: String,
    /// Queries of the class.
    pub(crate) queries: usize,
    pub(crate) top1: f64,
    pub(crate) mv3: f64,
    pub(crate) mv5: f64,
    pub(crate) map5: f64,
    /// MV@5 read as a classifier: precision, recall, F1 of this class.
    pub(crate) precision: f64,
    pub(crate) recall: f64,
    pub(crate) f1: f64,
}

/// Every figure of a slide retrieval evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct SlideRetrievalReport {
    /// Queries scored.
    pub(crate) queries: usize,
    pub(crate) top1: f64,
    pub(crate) mv3: f64,
    pub(crate) mv5: f64,
    pub(crate) map5: f64,
    pub(crate) macro_f1_mv5: f64,
    /// Per evaluated class, in class order.
    pub(crate) per_class: Vec<SlideFigures>,
}

/// One query's verdicts: top-1, MV@3, MV@5 correct, AP@5, and its MV@5 vote.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) top1: bool,
    pub(crate) mv3: bool,
    pub(crate) mv5: bool,
    pub(crate) ap5: f64,
    pub(crate) vote5: Option<usize>,
}

/// The verdicts of a query labelled `truth` that retrieved `retrieved`.
pub(crate) fn verdict(truth: usize, retrieved: &[usize]) -> Verdict {
    let vote5 = majority_vote(retrieved, 5);
    Verdict {
        top1: retrieved.first() == Some(&truth),
        mv3: majority_vote(retrieved, 3) == Some(truth),
        mv5: vote5 == Some(truth),
        ap5: ap_at_k(retrieved, truth, 5),
        vote5,
    }
}

/// The report of queries labelled `truth` (class indices into `classes`) that
/// retrieved `retrieved` (labels in rank order). Classes without a query are not
/// reported.
pub(crate) fn slide_retrieval(
    truth: &[usize],
    retrieved: &[Vec<usize>],
    classes: &[String],
) -> Result<SlideRetrievalReport, EvalError> {
    if truth.is_empty() {
        return Err(EvalError::Empty("the set of slide queries"));
    }
    crate::eval::check_len("retrieved lists", truth.len(), retrieved.len())?;
    for (i, &t) in truth.iter().enumerate() {
        if t >= classes.len() {
            return Err(EvalError::ClassOutOfRange {
                what: "query",
                index: i,
                class: t,
                classes: classes.len(),
            });
        }
    }
    let verdicts: Vec<Verdict> = truth
        .iter()
        .zip(retrieved)
        .map(|(&t, r)| verdict(t, r))
        .collect();
    let mean = |f: &dyn Fn(&Verdict) -> f64, which: &dyn Fn(usize) -> bool| {
        let v: Vec<f64> = (0..truth.len())
            .filter(|&i| which(i))
            .map(|i| f(&verdicts[i]))
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    let mut per_class = Vec::new();
    for (c, name) in classes.iter().enumerate() {
        let support = truth.iter().filter(|&&t| t == c).count();
        if support == 0 {
            continue;
        }
        let predicted = verdicts.iter().filter(|v| v.vote5 == Some(c)).count();
        let tp = truth
            .iter()
            .zip(&verdicts)
            .filter(|(&t, v)| t == c && v.vote5 == Some(c))
            .count();
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let of = |i: usize| truth[i] == c;
        per_class.push(SlideFigures {
            class: name.clone(),
            queries: support,
            top1: mean(&|v| b(v.top1), &of),
            mv3: mean(&|v| b(v.mv3), &of),
            mv5: mean(&|v| b(v.mv5), &of),
            map5: mean(&|v| v.ap5, &of),
            precision: ratio(tp, predicted),
            recall: ratio(tp, support),
            f1: ratio(2 * tp, support + predicted),
        });
    }
    let all = |_: usize| true;
    Ok(SlideRetrievalReport {
        queries: truth.len(),
        top1: mean(&|v| b(v.top1), &all),
        mv3: mean(&|v| b(v.mv3), &all),
        mv5: mean(&|v| b(v.mv5), &all),
        map5: mean(&|v| v.ap5, &all),
        macro_f1_mv5: per_class.iter().map(|c| c.f1).sum::<f64>() / per_class.len() as f64,
        per_class,
    })
}
