//! The labelled slides of `plip eval slide-*`: a `slide,label[,patient]` CSV matched
//! against the index's slides. Slides the index does not hold are named in a warning
//! and left out; a slide listed twice keeps its first row.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Result};

use crate::app::slide_names::{read_csv, SlideNames};
use crate::app::slides_like::IndexedSlides;

/// The labelled slides found in the index.
pub(crate) struct Labelled {
    /// Positions in the [`IndexedSlides`], one per labelled slide (CSV order).
    pub(crate) slides: Vec<usize>,
    /// Class index of each slide.
    pub(crate) labels: Vec<usize>,
    /// Class names, sorted.
    pub(crate) classes: Vec<String>,
    /// Patient of each slide, when the CSV has a `patient` column.
    pub(crate) patients: Option<Vec<String>>,
    /// Slides named in the CSV that the index does not hold.
    pub(crate) unknown: Vec<String>,
}

/// Reads `csv` and finds its slides in `indexed` (paths relative to `root`).
pub(crate) fn load(csv: &Path, root: &Path, indexed: &IndexedSlides) -> Result<Labelled> {
    let rows = read_csv(csv, &["label"], &["patient"])?;
    let has_patient = rows.iter().any(|r| r.cells[1].is_some());
    if has_patient {
        if let Some(r) = rows.iter().find(|r| r.cells[1].is_none()) {
            bail!(
                "{}: line {} ({}) has no patient; give every slide a patient, or drop the column",
                csv.display(),
                r.line,
                r.slide
            );
        }
    }
    let names = SlideNames::new(root, indexed.paths.iter().map(String::as_str));
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut found: Vec<(usize, String, String)> = Vec::new();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut unknown = Vec::new();
    for r in &rows {
        let Some(stored) = names.resolve(&r.slide, base) else {
            unknown.push(r.slide.clone());
            continue;
        };
        let Some(pos) = indexed.find(&stored) else {
            unknown.push(r.slide.clone());
            continue;
        };
        if seen.insert(pos, r.line).is_some() {
            continue;
        }
        let label = r.cells[0].clone().unwrap_or_default();
        let patient = r.cells[1].clone().unwrap_or_default();
        found.push((pos, label, patient));
    }
    if found.is_empty() {
        bail!(
            "none of the {} slide(s) in {} is in the index at {}; name them as `plip search` \
             prints them (e.g. {}), or index them first",
            rows.len(),
            csv.display(),
            root.display(),
            indexed.paths.first().map_or("slides/a.svs", String::as_str)
        );
    }
    let classes: Vec<String> = found
        .iter()
        .map(|f| f.1.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let labels = found
        .iter()
        .map(|f| classes.binary_search(&f.1).expect("a class of its own"))
        .collect();
    Ok(Labelled {
        slides: found.iter().map(|f| f.0).collect(),
        labels,
        classes,
        patients: has_patient.then(|| found.iter().map(|f| f.2.clone()).collect()),
        unknown,
    })
}
