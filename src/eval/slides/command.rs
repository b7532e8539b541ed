//! `plip eval slide-retrieval`: every labelled slide of the index, in turn, is the
//! query against all the others (leave-one-slide-out), or against the slides of
//! other patients when the CSV has a patient column (leave-one-patient-out); the
//! ranking is `plip search --image SLIDE`'s ([`slide_match`]), and the figures are
//! [`super::metrics`]'.
//!
//! A class with a single slide (or, with patients, a single patient) cannot be
//! retrieved by its own slides' queries: its queries are set apart and named, and its
//! slides stay in the database as candidates for the others.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::labels::{self, Labelled};
use super::metrics::{self, SlideRetrievalReport};
use crate::app::slides_like::IndexedSlides;
use crate::index::{paths, Index};
use crate::query::slide_match::{self, SlideScore, TileBag};
use crate::vectors::round_score;

/// Slides each query retrieves (MV@5 and mAP@5 need 5).
pub(crate) const RETRIEVED: usize = 5;
/// Worst queries shown.
const WORST: usize = 10;

/// What `plip eval slide-retrieval` was asked.
pub(crate) struct RetrievalOptions<'a> {
    pub(crate) labels: &'a Path,
    pub(crate) score: SlideScore,
    pub(crate) json: bool,
    pub(crate) html: Option<&'a Path>,
}

/// One retrieved slide of a query.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Retrieved {
    pub(crate) slide: String,
    pub(crate) label: String,
    pub(crate) score: f64,
}

/// A query whose MV@5 vote was wrong, with what it retrieved.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct WorstSlideQuery {
    pub(crate) slide: String,
    pub(crate) label: String,
    pub(crate) ap5: f64,
    pub(crate) retrieved: Vec<Retrieved>,
}

/// One query's outcome (`--json` lists them all).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct QueryOutcome {
    pub(crate) slide: String,
    pub(crate) label: String,
    pub(crate) top1: bool,
    pub(crate) mv3: bool,
    pub(crate) mv5: bool,
    pub(crate) ap5: f64,
    pub(crate) retrieved: Vec<Retrieved>,
}

/// A class whose queries were set apart.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SetApart {
    pub(crate) class: String,
    pub(crate) slides: Vec<String>,
    pub(crate) reason: String,
}

/// Everything the command reports.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SlideRetrievalRun {
    pub(crate) protocol: &'static str,
    pub(crate) slide_score: &'static str,
    pub(crate) slides: usize,
    #[serde(flatten)]
    pub(crate) report: SlideRetrievalReport,
    pub(crate) set_apart: Vec<SetApart>,
    pub(crate) unknown_slides: Vec<String>,
    pub(crate) worst: Vec<WorstSlideQuery>,
    /// Every query, in CSV order (JSON only).
    #[serde(rename = "per_query")]
    pub(crate) outcomes: Vec<QueryOutcome>,
}

/// Warns about the CSV's slides that the index does not hold.
pub(crate) fn warn_unknown(csv: &Path, unknown: &[String]) {
    if unknown.is_empty() {
        return;
    }
    let shown: Vec<&str> = unknown.iter().take(20).map(String::as_str).collect();
    let more = unknown.len().saturating_sub(shown.len());
    eprintln!(
        "plip: warning: {} slide(s) in {} are not in the index and are left out: {}{}",
        unknown.len(),
        csv.display(),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
}

/// The slides of `index` that hold tiles, or a clear error.
pub(crate) fn indexed(index: &Index) -> Result<IndexedSlides<'_>> {
    let s = IndexedSlides::collect(index, &|_| true);
    if s.paths.is_empty() {
        bail!(
            "the index at {} holds no slide tiles; index whole slides first (`plip index DIR`)",
            index.dir().display()
        );
    }
    Ok(s)
}

/// Runs the evaluation over `index` and prints it to `out`.
pub(crate) fn slide_retrieval(
    index: &Index,
    o: &RetrievalOptions,
    out: &mut impl Write,
) -> Result<()> {
    let all = indexed(index)?;
    let lab = labels::load(o.labels, &index.root(), &all)?;
    warn_unknown(o.labels, &lab.unknown);
    let (queries, set_apart) = queries_and_set_apart(&lab, &all);
    for s in &set_apart {
        eprintln!(
            "plip: warning: class {:?} {}: its queries are reported apart, not scored",
            s.class, s.reason
        );
    }
    if queries.is_empty() {
        bail!(
            "nothing to evaluate in {}: no class has two slides{} (leave-one-out needs at least \
             two per class)",
            o.labels.display(),
            if lab.patients.is_some() {
                " of different patients"
            } else {
                ""
            }
        );
    }
    let ranked = rank_all(&lab, &all, &queries, o.score);
    let truth: Vec<usize> = queries.iter().map(|&q| lab.labels[q]).collect();
    let retrieved: Vec<Vec<usize>> = ranked
        .iter()
        .map(|r| r.iter().map(|&(j, _)| lab.labels[j]).collect())
        .collect();
    let report = metrics::slide_retrieval(&truth, &retrieved, &lab.classes)?;
    let name = |j: usize| paths::display(&all.paths[lab.slides[j]]);
    let outcomes: Vec<QueryOutcome> = queries
        .iter()
        .zip(&ranked)
        .zip(&retrieved)
        .map(|((&q, rk), r)| {
            let v = metrics::verdict(lab.labels[q], r);
            QueryOutcome {
                slide: name(q),
                label: lab.classes[lab.labels[q]].clone(),
                top1: v.top1,
                mv3: v.mv3,
                mv5: v.mv5,
                ap5: v.ap5,
                retrieved: rk
                    .iter()
                    .map(|&(j, s)| Retrieved {
                        slide: name(j),
                        label: lab.classes[lab.labels[j]].clone(),
                        score: round_score(s),
                    })
                    .collect(),
            }
        })
        .collect();
    let mut worst: Vec<WorstSlideQuery> = outcomes
        .iter()
        .filter(|o| !o.mv5)
        .map(|o| WorstSlideQuery {
            slide: o.slide.clone(),
            label: o.label.clone(),
            ap5: o.ap5,
            retrieved: o.retrieved.clone(),
        })
        .collect();
    worst.sort_by(|a, b| a.ap5.total_cmp(&b.ap5).then(a.slide.cmp(&b.slide)));
    worst.truncate(WORST);
    let run = SlideRetrievalRun {
        protocol: if lab.patients.is_some() {
            "leave-one-patient-out"
        } else {
            "leave-one-slide-out"
        },
        slide_score: o.score.name(),
        slides: lab.slides.len(),
        report,
        set_apart,
        unknown_slides: lab.unknown.clone(),
        worst,
        outcomes,
    };
    let record = crate::eval::provenance::record(
        "slide-retrieval",
        index.model(),
        None,
        None,
        serde_json::json!({"slides": run.slides, "queries": run.report.queries}),
    );
    if let Some(page) = o.html {
        crate::eval::html::write_page(page, |w| {
            crate::eval::html::slides::write_slide_retrieval(w, &run, &record, &index.root())
        })?;
    }
    if o.json {
        let v = crate::eval::provenance::attach(serde_json::to_value(&run)?, &record);
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        super::report::print_slide_retrieval(out, &run)?;
    }
    Ok(())
}

/// The labelled slides that are queries, and the classes set apart: those with a
/// single slide, or (with patients) a single patient.
fn queries_and_set_apart(lab: &Labelled, all: &IndexedSlides) -> (Vec<usize>, Vec<SetApart>) {
    let mut units: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for (i, &c) in lab.labels.iter().enumerate() {
        let unit = match &lab.patients {
            Some(p) => p[i].as_str(),
            None => all.paths[lab.slides[i]].as_str(),
        };
        units.entry(c).or_default().insert(unit);
    }
    let apart: BTreeSet<usize> = units
        .iter()
        .filter(|(_, u)| u.len() < 2)
        .map(|(&c, _)| c)
        .collect();
    let queries = (0..lab.labels.len())
        .filter(|i| !apart.contains(&lab.labels[*i]))
        .collect();
    let set_apart = apart
        .iter()
        .map(|&c| {
            let slides: Vec<String> = (0..lab.labels.len())
                .filter(|&i| lab.labels[i] == c)
                .map(|i| paths::display(&all.paths[lab.slides[i]]))
                .collect();
            let reason = if slides.len() == 1 {
                "has one slide, which no other slide of its class can retrieve".to_string()
            } else {
                format!(
                    "has {} slides, all of one patient, whom leave-one-patient-out leaves out",
                    slides.len()
                )
            };
            SetApart {
                class: lab.classes[c].clone(),
                slides,
                reason,
            }
        })
        .collect();
    (queries, set_apart)
}

/// For each query (a labelled slide), the best [`RETRIEVED`] other labelled slides
/// with their scores: its own slide and, with patients, its patient's left out.
pub(crate) fn rank_all(
    lab: &Labelled,
    all: &IndexedSlides,
    queries: &[usize],
    how: SlideScore,
) -> Vec<Vec<(usize, f32)>> {
    let bags: Vec<&TileBag> = lab.slides.iter().map(|&p| &all.bags[p]).collect();
    queries
        .iter()
        .map(|&q| {
            let cands: Vec<usize> = (0..bags.len())
                .filter(|&j| j != q && lab.patients.as_ref().is_none_or(|p| p[j] != p[q]))
                .collect();
            let cb: Vec<&TileBag> = cands.iter().map(|&j| bags[j]).collect();
            let scores = slide_match::score_all(bags[q], &cb, how);
            slide_match::rank(&scores)
                .into_iter()
                .take(RETRIEVED)
                .map(|(c, s)| (cands[c], s))
                .collect()
        })
        .collect()
}
