//! `plip eval slide-zero-shot` (issue 32): slide classification from tile scores as
//! MI-Zero does it (Lu et al. 2023, "top-K pooling"): each tile's class probabilities
//! are CLIP's softmax over classes of 100 · cosine(tile, class prompt ensemble); a
//! class's slide score is the mean of its K highest tile probabilities (all tiles when
//! the slide has fewer than K); the slide is predicted as the best class (ties to the
//! lowest class). Reports balanced accuracy (scikit-learn's: the mean recall over the
//! classes that have slides) and weighted F1 beside the usual classification table.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::command::{indexed, warn_unknown};
use super::labels;
use crate::embed::Embedder;
use crate::eval::{self, prompts, ClassificationReport};
use crate::index::{paths, Index};
use crate::vectors::dot;

/// CLIP's logit scale, as the tile zero-shot pages use it.
const LOGIT_SCALE: f64 = 100.0;

/// Each class's mean of the `k` highest tile probabilities of one slide (`rows`: unit
/// tile embeddings; `classes`: unit class embeddings). Empty when there are no tiles.
pub(crate) fn top_k_mean(rows: &[&[f32]], classes: &[Vec<f32>], k: usize) -> Vec<f64> {
    if rows.is_empty() || classes.is_empty() {
        return Vec::new();
    }
    let mut probs: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); classes.len()];
    for r in rows {
        let logits: Vec<f64> = classes
            .iter()
            .map(|c| LOGIT_SCALE * f64::from(dot(r, c)))
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        for (p, l) in probs.iter_mut().zip(&logits) {
            p.push((l - max).exp() / z);
        }
    }
    probs
        .into_iter()
        .map(|mut p| {
            p.sort_by(|a, b| b.total_cmp(a));
            let top = &p[..k.clamp(1, p.len())];
            top.iter().sum::<f64>() / top.len() as f64
        })
        .collect()
}

/// The best class of `scores` (ties to the lowest index).
pub(crate) fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

/// scikit-learn's balanced accuracy: the mean recall of the classes that have items.
pub(crate) fn balanced_accuracy(r: &ClassificationReport) -> f64 {
    let with: Vec<f64> = r
        .per_class
        .iter()
        .filter(|c| c.support > 0)
        .map(|c| c.recall)
        .collect();
    if with.is_empty() {
        0.0
    } else {
        with.iter().sum::<f64>() / with.len() as f64
    }
}

/// What `plip eval slide-zero-shot` was asked.
pub(crate) struct ZeroShotOptions<'a> {
    pub(crate) labels: &'a Path,
    /// `--classes`: a `class,name1|name2` CSV (or `kather`), or `A=name|name,B`.
    pub(crate) classes: Option<&'a str>,
    pub(crate) templates: &'a [String],
    pub(crate) top_k: usize,
    pub(crate) json: bool,
}

#[derive(Serialize)]
struct SlidePrediction {
    slide: String,
    label: String,
    predicted: String,
    scores: Vec<f64>,
}

/// The class table of `--classes`: a file, or an inline `A=name1|name2,B` list.
fn class_table(arg: &str) -> Result<prompts::LabelTable> {
    let p = Path::new(arg);
    if p.is_file() || arg.eq_ignore_ascii_case("kather") {
        return prompts::load_labels(p);
    }
    let text: String = arg
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((c, names)) => format!("\"{}\",\"{}\"\n", c.trim(), names.trim()),
            None => format!("\"{0}\",\"{0}\"\n", item.trim()),
        })
        .collect();
    prompts::parse_labels(&text, "--classes")
}

/// Runs the evaluation over `index` with `embedder` (the index's model, checked).
pub(crate) fn slide_zero_shot(
    index: &Index,
    embedder: &Embedder,
    o: &ZeroShotOptions,
    out: &mut impl Write,
) -> Result<()> {
    if o.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    crate::app::model::check(index, embedder)?;
    let all = indexed(index)?;
    let lab = labels::load(o.labels, &index.root(), &all)?;
    warn_unknown(o.labels, &lab.unknown);
    let table = o.classes.map(class_table).transpose()?;
    if let Some(t) = &table {
        let mut unused: Vec<&String> = t.keys().filter(|k| !lab.classes.contains(k)).collect();
        unused.sort();
        for k in unused {
            eprintln!(
                "plip: warning: --classes names class `{k}`, but no slide in {} has that label",
                o.labels.display()
            );
        }
    }
    let (synonyms, _) = prompts::class_names(&lab.classes, table.as_ref());
    let templates: Vec<String> = if o.templates.is_empty() {
        vec![eval::run::DEFAULT_TEMPLATE.to_string()]
    } else {
        o.templates.to_vec()
    };
    let class_embs = synonyms
        .iter()
        .map(|names| prompts::class_embedding(embedder, names, &templates))
        .collect::<Result<Vec<_>>>()?;
    let mut predictions = Vec::new();
    let mut predicted = Vec::new();
    for (i, &pos) in lab.slides.iter().enumerate() {
        let scores = top_k_mean(&all.bags[pos].rows, &class_embs, o.top_k);
        let p = argmax(&scores);
        predicted.push(p);
        predictions.push(SlidePrediction {
            slide: paths::display(&all.paths[pos]),
            label: lab.classes[lab.labels[i]].clone(),
            predicted: lab.classes[p].clone(),
            scores,
        });
    }
    let report = eval::classification_report(&lab.labels, &predicted, &lab.classes)?;
    let balanced = balanced_accuracy(&report);
    let run = eval::provenance::record(
        "slide-zero-shot",
        index.model(),
        Some(&templates),
        None,
        serde_json::json!({"slides": lab.slides.len()}),
    );
    if o.json {
        let mut v = eval::provenance::attach(serde_json::to_value(&report)?, &run);
        v["balanced_accuracy"] = serde_json::json!(balanced);
        v["top_k"] = serde_json::json!(o.top_k);
        v["unknown_slides"] = serde_json::json!(lab.unknown);
        v["per_slide"] = serde_json::to_value(&predictions)?;
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "slide zero-shot (MI-Zero top-{} mean of tile probabilities) over {} slides",
            o.top_k,
            lab.slides.len()
        )?;
        writeln!(out, "balanced accuracy  {balanced:.4}")?;
        writeln!(out, "weighted F1        {:.4}\n", report.weighted_f1)?;
        eval::print_classification_table(out, &report)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_mean_of_tile_softmax_probabilities_by_hand() {
        // two classes along x and y; tiles: x, y, x
        let classes = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let (x, y) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let rows: Vec<&[f32]> = vec![&x, &y, &x];
        // a tile on x: p(x) = 1 / (1 + e^-100)
        let px = 1.0 / (1.0 + (-100f64).exp());
        let py = 1.0 - px;
        let s1 = top_k_mean(&rows, &classes, 1);
        assert!((s1[0] - px).abs() < 1e-12 && (s1[1] - px).abs() < 1e-12);
        let s2 = top_k_mean(&rows, &classes, 2);
        assert!((s2[0] - px).abs() < 1e-12);
        assert!((s2[1] - (px + py) / 2.0).abs() < 1e-12);
        // K past the tile count takes them all
        let s9 = top_k_mean(&rows, &classes, 9);
        assert!((s9[1] - (px + 2.0 * py) / 3.0).abs() < 1e-12);
        assert_eq!(argmax(&s9), 0);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert!(top_k_mean(&[], &classes, 3).is_empty());
    }

    #[test]
    fn balanced_accuracy_is_the_mean_recall_of_classes_with_slides() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // a: 3 slides, 2 right; b: 1 slide, right; c: none (predicted once)
        let r = eval::classification_report(&[0, 0, 0, 1], &[0, 0, 2, 1], &names).unwrap();
        assert!((balanced_accuracy(&r) - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn inline_classes_give_names_and_synonyms() {
        let t = class_table("TUM=tumor|carcinoma, NORM").unwrap();
        assert_eq!(t["TUM"], vec!["tumor", "carcinoma"]);
        assert_eq!(t["NORM"], vec!["NORM"]);
    }
}
