//! Prompts for zero-shot classification: named template sets, class names with synonyms,
//! and the class embedding built from them.
//!
//! * **Template sets** ([`template_set`]): `plip` is the prompt PLIP's own zero-shot
//!   evaluation feeds the model, `An H&E image patch of {}.` (its `text_style_4` column, written
//!   by `process_Kather_csv` in `reproducibility/generate_validation_datasets/
//!   _dataset_loader.py`, PathologyFoundation/plip at f010f3d). The help text of PLIP's
//!   `zero_shot_evaluation.py` words it `An H&E image of XXX.`; that wording is `plip-short`.
//!   `pathology` is plip's own list of 20 templates written in the style of the prompt
//!   ensembles CONCH (Lu et al., Nature Medicine 2024) uses for zero-shot classification:
//!   short sentences that name the class plainly or say how it was imaged ("histopathology",
//!   "H&E", "photomicrograph"). It is not CONCH's list.
//! * **Class names** come from the folder names, or a labels CSV `class,name1|name2|…` (one
//!   row per class; `|` separates synonyms), or the built-in `kather` table: the Kather colon
//!   folder codes mapped to the names PLIP used (`subtype_dict` in the same PLIP file).
//! * **Class embedding** ([`class_embedding`]): every name × every template is embedded, the
//!   L2-normalised embeddings are averaged and the mean renormalised: CLIP's prompt ensemble,
//!   extended over synonyms as CONCH does.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::embed::Embedder;

/// PLIP's zero-shot template as its code uses it (see the module docs).
pub(crate) const PLIP_TEMPLATE: &str = "An H&E image patch of {}.";

/// The wording of PLIP's zero-shot script's help text.
const PLIP_SHORT_TEMPLATE: &str = "An H&E image of {}.";

/// plip's pathology template set (CONCH's style, plip's own sentences).
pub(crate) const PATHOLOGY_TEMPLATES: [&str; 20] = [
    "{}.",
    "an image of {}.",
    "an H&E image of {}.",
    "an H&E stained image of {}.",
    "an H&E image patch of {}.",
    "a histopathology image of {}.",
    "a histopathology image showing {}.",
    "a histopathological photograph of {}.",
    "a histology slide showing {}.",
    "a photomicrograph of {}.",
    "a photomicrograph showing {}.",
    "a microscopy image of {}.",
    "a pathology tissue image of {}.",
    "a hematoxylin and eosin stained section of {}.",
    "an image showing {}.",
    "this is {}.",
    "{} is shown.",
    "{} is present.",
    "presence of {}.",
    "an example of {}.",
];

/// Names accepted by `--templates`.
pub(crate) const TEMPLATE_SET_NAMES: [&str; 3] = ["plip", "plip-short", "pathology"];

/// The templates of a named set, or None for an unknown name.
pub(crate) fn template_set(name: &str) -> Option<Vec<String>> {
    let set: &[&str] = match name.trim().to_ascii_lowercase().as_str() {
        "plip" => &[PLIP_TEMPLATE],
        "plip-short" => &[PLIP_SHORT_TEMPLATE],
        "pathology" => &PATHOLOGY_TEMPLATES,
        _ => return None,
    };
    Some(set.iter().map(|s| s.to_string()).collect())
}

/// The templates a run uses: the named sets (in order), then the explicit templates; PLIP's
/// template when both are empty.
pub(crate) fn resolve_templates(sets: &[String], explicit: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for s in sets {
        let Some(t) = template_set(s) else {
            bail!(
                "unknown template set `{s}`; choose one of {}, or give your own with --template",
                TEMPLATE_SET_NAMES.join(", ")
            );
        };
        out.extend(t);
    }
    out.extend(explicit.iter().cloned());
    if out.is_empty() {
        out.push(PLIP_TEMPLATE.to_string());
    }
    Ok(out)
}

/// Kather colon (NCT-CRC-HE-100K) folder codes and the class names PLIP used for them
/// (`subtype_dict` in PLIP's `_dataset_loader.py`, see the module docs).
pub(crate) const KATHER: [(&str, &str); 9] = [
    ("ADI", "adipose tissue"),
    ("BACK", "background"),
    ("DEB", "debris"),
    ("LYM", "lymphocytes"),
    ("MUC", "mucus"),
    ("MUS", "smooth muscle"),
    ("NORM", "normal colon mucosa"),
    ("STR", "cancer-associated stroma"),
    ("TUM", "colorectal adenocarcinoma epithelium"),
];

/// Names of built-in label tables accepted by `--labels`.
pub(crate) const LABEL_TABLES: [&str; 1] = ["kather"];

/// Class folder → its prompt names (one or more synonyms).
pub(crate) type LabelTable = HashMap<String, Vec<String>>;

/// `--labels`: the built-in `kather` table (unless a file of that name exists), or a CSV file
/// `class,name1|name2|…` (an optional
/// header row whose first cell is `class` or `folder` is skipped).
pub(crate) fn load_labels(arg: &Path) -> Result<LabelTable> {
    if arg.as_os_str().eq_ignore_ascii_case("kather") && !arg.is_file() {
        return Ok(KATHER
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect());
    }
    let text = std::fs::read_to_string(arg).with_context(|| {
        format!(
            "reading the labels file {} (built-in tables: {})",
            arg.display(),
            LABEL_TABLES.join(", ")
        )
    })?;
    parse_labels(&text, &arg.display().to_string())
}

/// Parses a labels CSV (see [`load_labels`]); `what` names the file in errors.
pub(crate) fn parse_labels(text: &str, what: &str) -> Result<LabelTable> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut table = LabelTable::new();
    for (n, rec) in rdr.records().enumerate() {
        let row = n + 1;
        let rec = rec.with_context(|| format!("{what} row {row}"))?;
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let class = rec.get(0).unwrap_or("").trim();
        if row == 1 && matches!(class.to_ascii_lowercase().as_str(), "class" | "folder") {
            continue;
        }
        if rec.len() != 2 {
            bail!(
                "{what} row {row}: expected 2 columns `class,name1|name2|…`, found {} (quote a name that contains a comma)",
                rec.len()
            );
        }
        if class.is_empty() {
            bail!("{what} row {row}: empty class folder name");
        }
        let names: Vec<String> = rec[1].split('|').map(|s| s.trim().to_string()).collect();
        if names.iter().any(String::is_empty) {
            bail!("{what} row {row}: empty name for class `{class}` (names are separated by `|`)");
        }
        if table.insert(class.to_string(), names).is_some() {
            bail!("{what} row {row}: class `{class}` is listed twice");
        }
    }
    if table.is_empty() {
        bail!("{what} has no `class,name` rows");
    }
    Ok(table)
}

/// The prompt names of each class folder: the table's names, else the folder name itself.
/// Table entries that match no folder are reported as warnings (returned, not printed).
pub(crate) fn class_names(
    folders: &[String],
    table: Option<&LabelTable>,
) -> (Vec<Vec<String>>, Vec<String>) {
    let Some(table) = table else {
        return (
            folders.iter().map(|f| vec![f.clone()]).collect(),
            Vec::new(),
        );
    };
    let names = folders
        .iter()
        .map(|f| table.get(f).cloned().unwrap_or_else(|| vec![f.clone()]))
        .collect();
    let mut unused: Vec<String> = table
        .keys()
        .filter(|k| !folders.contains(k))
        .map(|k| format!("labels list class `{k}`, but there is no folder of that name"))
        .collect();
    unused.sort();
    (names, unused)
}

/// Every name × every template, filled.
pub(crate) fn prompts(names: &[String], templates: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| {
            templates
                .iter()
                .map(move |t| crate::query::fill_template(t, n))
        })
        .collect()
}

/// A class's embedding: the ensemble ([`crate::eval::ensemble`]) of all its [`prompts`].
pub(crate) fn class_embedding(
    embedder: &Embedder,
    names: &[String],
    templates: &[String],
) -> Result<Vec<f32>> {
    let p = prompts(names, templates);
    let refs: Vec<&str> = p.iter().map(String::as_str).collect();
    Ok(crate::eval::ensemble(&embedder.embed_texts(&refs)?)?)
}
