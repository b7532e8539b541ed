//! `plip eval linear-probe`: reads a labelled data set (class folders, or a CSV with an
//! optional split column), embeds it through the eval cache, runs the protocol of
//! [`super::run`] and prints, writes JSON and the HTML report.
//!
//! Inputs:
//! * `DIR` with one subfolder of images per class, and optionally `--test DIR2` with the same
//!   class folders: DIR trains, DIR2 tests.
//! * `FILE.csv` with a header and columns `image,label[,split]`; image paths are relative to
//!   the CSV's folder; `split` is `train`, `val` (also `valid`, `validation`) or `test`, given
//!   for every row or for none.
//!
//! Without a given test set, a stratified 70/30 split is made with `--seed` (default 1) exactly
//! as PLIP's scripts make it ([`super::split`]). Classes are the sorted label names (what
//! scikit-learn's `LabelEncoder` does). An unreadable image is a warning and is skipped.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{split, TRAIN_RATIO};
use crate::embed::Embedder;
use crate::eval::run::CachedImages;
use crate::eval::{html, print_classification_table, provenance};
use crate::source::walk;

fn warn(msg: impl std::fmt::Display) {
    eprintln!("plip: warning: {msg}");
}

/// Which part of the data a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Train,
    Validation,
    Test,
    /// No split given: the stratified split decides.
    Unassigned,
}

/// A labelled image.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) path: PathBuf,
    pub(crate) class: usize,
    pub(crate) part: Part,
}

/// Classes (sorted names) and their images.
#[derive(Debug)]
pub(crate) struct Dataset {
    pub(crate) classes: Vec<String>,
    pub(crate) items: Vec<Item>,
}

/// Subfolder names of `dir` (not hidden), sorted.
fn class_folders(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        bail!("{} is not a folder of class subfolders", dir.display());
    }
    let mut folders: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    if folders.is_empty() {
        bail!("{} has no class subfolders", dir.display());
    }
    Ok(folders)
}

/// `DIR` (and `--test DIR2`): one subfolder per class.
pub(crate) fn from_folders(train: &Path, test: Option<&Path>) -> Result<Dataset> {
    let mut classes = class_folders(train)?;
    let test_classes = match test {
        Some(t) => class_folders(t)?,
        None => Vec::new(),
    };
    for c in &test_classes {
        if !classes.contains(c) {
            warn(format!(
                "test class folder {c} has no training folder in {}; it can never be predicted",
                train.display()
            ));
        }
    }
    let all: BTreeSet<String> = classes
        .drain(..)
        .chain(test_classes.iter().cloned())
        .collect();
    classes = all.into_iter().collect();
    let mut items = Vec::new();
    for (root, part) in [(Some(train), Part::Train), (test, Part::Test)] {
        let Some(root) = root else { continue };
        let part = if test.is_none() {
            Part::Unassigned
        } else {
            part
        };
        for (c, name) in classes.iter().enumerate() {
            let dir = root.join(name);
            if !dir.is_dir() {
                continue;
            }
            let walked = walk::find_images(&dir)?;
            for w in &walked.warnings {
                warn(w.clone());
            }
            let files = walked.files;
            if files.is_empty() {
                warn(format!("class folder {} has no images", dir.display()));
            }
            items.extend(files.into_iter().map(|path| Item {
                path,
                class: c,
                part,
            }));
        }
    }
    Ok(Dataset { classes, items })
}

/// A CSV `image,label[,split]` (see the module docs).
pub(crate) fn from_csv(csv_path: &Path) -> Result<Dataset> {
    let base = csv_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut rdr = csv::Reader::from_path(csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(ic), Some(lc)) = (col("image"), col("label")) else {
        bail!(
            "{} must have a header with `image` and `label` columns, and optionally `split` (found: {})",
            csv_path.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        );
    };
    let sc = col("split");
    let mut rows = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let line = n + 2;
        let rec = rec.with_context(|| format!("{} row {line}", csv_path.display()))?;
        let image = rec.get(ic).unwrap_or("").trim();
        let label = rec.get(lc).unwrap_or("").trim();
        if image.is_empty() || label.is_empty() {
            bail!("{} row {line}: empty image or label", csv_path.display());
        }
        let part = match sc
            .and_then(|c| rec.get(c))
            .map(|s| s.trim().to_ascii_lowercase())
        {
            None => Part::Unassigned,
            Some(s) => match s.as_str() {
                "" => Part::Unassigned,
                "train" => Part::Train,
                "val" | "valid" | "validation" => Part::Validation,
                "test" => Part::Test,
                other => bail!(
                    "{} row {line}: split `{other}` is not train, val or test",
                    csv_path.display()
                ),
            },
        };
        rows.push((line, base.join(image), label.to_string(), part));
    }
    if rows.is_empty() {
        bail!("{} has no rows", csv_path.display());
    }
    let given = rows.iter().filter(|r| r.3 != Part::Unassigned).count();
    if given != 0 && given != rows.len() {
        let r = rows
            .iter()
            .find(|r| r.3 == Part::Unassigned)
            .expect("one unassigned");
        bail!(
            "{} row {}: no split, but other rows have one; give train/val/test for every row or for none",
            csv_path.display(),
            r.0
        );
    }
    if given != 0 && !rows.iter().any(|r| r.3 == Part::Test) {
        bail!(
            "{}: the split column has no `test` rows",
            csv_path.display()
        );
    }
    let classes: Vec<String> = rows
        .iter()
        .map(|r| r.2.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let items = rows
        .into_iter()
        .map(|(_, path, label, part)| Item {
            class: classes.binary_search(&label).expect("label is a class"),
            path,
            part,
        })
        .collect();
    Ok(Dataset { classes, items })
}

/// Options of `plip eval linear-probe`.
pub(crate) struct Options<'a> {
    pub(crate) data: &'a Path,
    pub(crate) test: Option<&'a Path>,
    pub(crate) alphas: &'a [f64],
    pub(crate) seed: u32,
    pub(crate) json: bool,
    pub(crate) html: Option<&'a Path>,
}

/// The embedded items of a run, each with its split.
type Kept = Vec<(Item, Vec<f32>)>;

/// Runs `plip eval linear-probe`.
pub(crate) fn linear_probe(
    embedder: &Embedder,
    images: &mut CachedImages,
    opts: &Options,
    out: &mut impl Write,
) -> Result<()> {
    let (data, kept, skipped) = embedded_items(images, opts)?;
    let part = |p: Part| -> (Vec<&[f32]>, Vec<usize>, Vec<&Path>) {
        let sel: Vec<&(Item, Vec<f32>)> = kept.iter().filter(|k| k.0.part == p).collect();
        (
            sel.iter().map(|k| k.1.as_slice()).collect(),
            sel.iter().map(|k| k.0.class).collect(),
            sel.iter().map(|k| k.0.path.as_path()).collect(),
        )
    };
    let (train_x, train_y, _) = part(Part::Train);
    let (val_x, val_y, _) = part(Part::Validation);
    let (test_x, test_y, test_paths) = part(Part::Test);
    if train_x.is_empty() {
        bail!("no training images (each class needs at least 2 images for a 70/30 split)");
    }
    for (c, name) in data.classes.iter().enumerate() {
        if !train_y.contains(&c) {
            warn(format!(
                "class {name} has no training images; it can never be predicted"
            ));
        }
    }
    let validation = (!val_x.is_empty()).then_some((val_x.as_slice(), val_y.as_slice()));
    let outcome = super::run(
        &train_x,
        &train_y,
        validation,
        &test_x,
        &test_y,
        &data.classes,
        opts.alphas,
        opts.seed,
    )?;
    let run = provenance::record(
        "linear-probe",
        embedder.info(),
        None,
        Some(opts.seed),
        json!({
            "train": outcome.sizes.train,
            "fit": outcome.sizes.fit,
            "validation": outcome.sizes.validation,
            "test": outcome.sizes.test,
            "given": data.items.iter().any(|i| i.part != Part::Unassigned),
        }),
    );
    if opts.json {
        let v = json!({
            "alpha": outcome.alpha,
            "sweep": outcome.sweep,
            "sizes": outcome.sizes,
            "test": outcome.test,
            "solver": {"method": "L-BFGS, exact minimum of SGDClassifier's objective",
                       "max_iterations": outcome.model.iterations,
                       "grad_norm": outcome.model.grad_norm},
            "skipped": skipped,
        });
        serde_json::to_writer_pretty(&mut *out, &provenance::attach(v, &run))?;
        writeln!(out)?;
    } else {
        print_report(out, &outcome, opts.seed, skipped)?;
    }
    if let Some(page) = opts.html {
        write_html(page, &outcome, &test_y, &test_paths, &run)?;
    }
    Ok(())
}

/// Reads the dataset, checks the flags, embeds every image (skipping unreadable
/// ones with a warning) and assigns PLIP's stratified split where none was given.
fn embedded_items(images: &mut CachedImages, opts: &Options) -> Result<(Dataset, Kept, usize)> {
    let data = if opts.data.is_file() {
        if opts.test.is_some() {
            bail!("--test is for class folders; a CSV gives its test rows in its `split` column");
        }
        from_csv(opts.data)?
    } else {
        from_folders(opts.data, opts.test)?
    };
    for &a in opts.alphas {
        if !(a.is_finite() && a > 0.0) {
            bail!("--alpha {a}: the penalty must be a positive number");
        }
    }
    let paths: Vec<PathBuf> = data.items.iter().map(|i| i.path.clone()).collect();
    let vecs = images.embed(&paths, 16)?;
    let mut kept: Kept = Vec::new();
    let mut skipped = 0;
    for (item, v) in data.items.iter().zip(vecs) {
        match v {
            Ok(v) => kept.push((item.clone(), v)),
            Err(e) => {
                warn(format!("skipping {}: {e}", item.path.display()));
                skipped += 1;
            }
        }
    }
    if kept.is_empty() {
        bail!("no readable images in {}", opts.data.display());
    }
    // assign the stratified split where none was given
    if kept.iter().all(|k| k.0.part == Part::Unassigned) {
        let labels: Vec<usize> = kept.iter().map(|k| k.0.class).collect();
        let (train, _) = split::stratified_split(&labels, opts.seed, TRAIN_RATIO);
        for (i, k) in kept.iter_mut().enumerate() {
            k.0.part = if train.binary_search(&i).is_ok() {
                Part::Train
            } else {
                Part::Test
            };
        }
    }
    Ok((data, kept, skipped))
}

/// The text report: sizes, the α sweep, the test table.
fn print_report(
    out: &mut impl Write,
    outcome: &super::ProbeOutcome,
    seed: u32,
    skipped: usize,
) -> Result<()> {
    let s = &outcome.sizes;
    writeln!(
        out,
        "linear probe: {} train ({}), {} test, seed {}",
        s.train,
        if s.validation > 0 {
            format!(
                "α chosen on {} of them against {} held out",
                s.fit, s.validation
            )
        } else {
            "α given".to_string()
        },
        s.test,
        seed
    )?;
    for r in &outcome.sweep {
        let mark = if r.alpha == outcome.alpha {
            "  <- chosen"
        } else {
            ""
        };
        writeln!(
            out,
            "  α {:<8} validation macro F1 {:.4}  accuracy {:.4}{mark}",
            r.alpha, r.val_macro_f1, r.val_accuracy
        )?;
    }
    writeln!(out, "α = {}\n", outcome.alpha)?;
    print_classification_table(out, &outcome.test)?;
    if skipped > 0 {
        writeln!(out, "{skipped} image(s) skipped: unreadable")?;
    }
    Ok(())
}

/// The HTML page: the test table, the α sweep, the most confident mistakes.
fn write_html(
    page: &Path,
    outcome: &super::ProbeOutcome,
    test_y: &[usize],
    test_paths: &[&Path],
    run: &serde_json::Value,
) -> Result<()> {
    let mut mistakes: Vec<html::Mistake> = outcome
        .predictions
        .iter()
        .zip(test_y)
        .zip(test_paths)
        .filter(|((p, t), _)| p.0 != **t)
        .map(|((p, &t), path)| html::Mistake {
            path: path.to_path_buf(),
            truth: t,
            predicted: p.0,
            confidence: p.1,
        })
        .collect();
    mistakes.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let mut sweep = String::from("<h2>Choice of α</h2>");
    if outcome.sweep.is_empty() {
        sweep += &format!("<p>α = {} was given.</p>", outcome.alpha);
    } else {
        sweep += "<table class=\"meta\"><tr><td>α</td><td>validation macro F1</td><td>accuracy</td></tr>";
        for r in &outcome.sweep {
            sweep += &format!(
                "<tr><td>{}{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                r.alpha,
                if r.alpha == outcome.alpha {
                    " (chosen)"
                } else {
                    ""
                },
                r.val_macro_f1,
                r.val_accuracy
            );
        }
        sweep += "</table>";
    }
    let mut meta = run.clone();
    meta["alpha"] = json!(outcome.alpha);
    html::write_page(page, |w| {
        html::write_classification(
            w,
            "plip eval linear-probe",
            &outcome.test,
            &meta,
            &sweep,
            &mistakes,
        )
    })?;
    Ok(())
}
