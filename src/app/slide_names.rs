//! Slides named in a user's CSV (`--group-by`, `plip eval slide-* --labels`), found in
//! the index, the same way for every command.
//!
//! A CSV has a header; its `slide` column names a slide as the index stores it
//! (`slides/a.svs`, relative to the index's parent folder), or as a path relative to
//! the CSV's own folder (or absolute), or by its file name (`a.svs`) or its name
//! without the extension (`a`) when only one indexed slide has it. Column names are
//! matched without regard to case.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::index::paths;

/// One row of a slide CSV: the slide as written, and the other columns asked for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SlideRow {
    /// The `slide` cell as written.
    pub(crate) slide: String,
    /// The asked-for columns, in the order asked; `None` when the column is absent
    /// (only for optional columns).
    pub(crate) cells: Vec<Option<String>>,
    /// 1-based line of the row in the file (the header is line 1).
    pub(crate) line: usize,
}

/// Reads `path`: a header with `slide` and every column of `required`, maybe those of
/// `optional`. Rows with an empty slide or required cell are refused with their line.
pub(crate) fn read_csv(path: &Path, required: &[&str], optional: &[&str]) -> Result<Vec<SlideRow>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the slide CSV {}", path.display()))?;
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .with_context(|| format!("{}: no header row", path.display()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let wanted = format!(
        "slide,{}{}",
        required.join(","),
        optional
            .iter()
            .map(|o| format!("[,{o}]"))
            .collect::<String>()
    );
    let Some(slide_col) = col("slide") else {
        bail!(
            "{}: no `slide` column (the header is {:?}); write a header line `{wanted}`",
            path.display(),
            header.join(",")
        );
    };
    let mut cols = Vec::new();
    for r in required {
        match col(r) {
            Some(c) => cols.push(Some(c)),
            None => bail!(
                "{}: no `{r}` column (the header is {:?}); write a header line `{wanted}`",
                path.display(),
                header.join(",")
            ),
        }
    }
    cols.extend(optional.iter().map(|o| col(o)));
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{}: line {line}", path.display()))?;
        if rec.iter().all(|c| c.is_empty()) {
            continue;
        }
        let cell = |c: usize| rec.get(c).map(str::to_string).filter(|s| !s.is_empty());
        let Some(slide) = cell(slide_col) else {
            bail!("{}: line {line} has no slide", path.display());
        };
        let cells: Vec<Option<String>> = cols.iter().map(|c| c.and_then(cell)).collect();
        if let Some(k) = (0..required.len()).find(|&k| cells[k].is_none()) {
            bail!(
                "{}: line {line} ({slide}) has no {}",
                path.display(),
                required[k]
            );
        }
        rows.push(SlideRow { slide, cells, line });
    }
    if rows.is_empty() {
        bail!(
            "{}: no rows under the header; write one line `{wanted}` per slide",
            path.display()
        );
    }
    Ok(rows)
}

/// The indexed slides, found by any of the names a CSV may give them.
pub(crate) struct SlideNames {
    root: PathBuf,
    stored: BTreeMap<String, ()>,
    by_name: HashMap<String, Vec<String>>,
}

impl SlideNames {
    /// The slides stored as `stored` (paths relative to `root`).
    pub(crate) fn new<'a>(root: &Path, stored: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names = SlideNames {
            root: root.to_path_buf(),
            stored: BTreeMap::new(),
            by_name: HashMap::new(),
        };
        for s in stored {
            names.stored.insert(s.to_string(), ());
            let file = s.rsplit('/').next().unwrap_or(s);
            let mut keys = vec![file.to_string()];
            if let Some((stem, _)) = file.split_once('.') {
                keys.push(stem.to_string());
            }
            for k in keys {
                let v = names.by_name.entry(k).or_default();
                if !v.iter().any(|x| x == s) {
                    v.push(s.to_string());
                }
            }
        }
        names
    }

    /// The stored path `name` means (written in a CSV in folder `base`), if any.
    pub(crate) fn resolve(&self, name: &str, base: &Path) -> Option<String> {
        let name = name.replace('\\', "/");
        if self.stored.contains_key(&name) {
            return Some(name);
        }
        let abs = base.join(&name);
        let abs = abs.canonicalize().unwrap_or(abs);
        let rel = paths::relative(&abs, &self.root);
        if self.stored.contains_key(&rel) {
            return Some(rel);
        }
        match self.by_name.get(name.as_str()).map(Vec::as_slice) {
            Some([one]) => Some(one.clone()),
            _ => None,
        }
    }
}

/// The patient (or case) of each indexed slide named in a `--group-by` CSV
/// (`slide,patient`), by stored path; and the names it gave that are not indexed.
pub(crate) fn read_groups(
    csv: &Path,
    names: &SlideNames,
) -> Result<(HashMap<String, String>, Vec<String>)> {
    let rows = read_csv(csv, &["patient"], &[])?;
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut groups = HashMap::new();
    let mut unknown = Vec::new();
    for r in rows {
        match names.resolve(&r.slide, base) {
            Some(p) => {
                groups.insert(p, r.cells[0].clone().unwrap_or_default());
            }
            None => unknown.push(r.slide),
        }
    }
    Ok((groups, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_are_found_by_stored_path_file_name_or_stem() {
        let root = Path::new("/data");
        let n = SlideNames::new(root, ["s/a.svs", "s/b.svs", "t/b.svs"]);
        let base = Path::new("/elsewhere");
        assert_eq!(n.resolve("s/a.svs", base).as_deref(), Some("s/a.svs"));
        assert_eq!(n.resolve("a.svs", base).as_deref(), Some("s/a.svs"));
        assert_eq!(n.resolve("a", base).as_deref(), Some("s/a.svs"));
        // two slides are called b: the name alone is ambiguous
        assert_eq!(n.resolve("b", base), None);
        assert_eq!(
            n.resolve("s/b.svs", Path::new("/data")).as_deref(),
            Some("s/b.svs")
        );
        assert_eq!(n.resolve("c.svs", base), None);
    }

    #[test]
    fn csv_errors_name_the_file_and_the_header_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("labels.csv");
        std::fs::write(&f, "file,class\na,x\n").unwrap();
        let e = read_csv(&f, &["label"], &["patient"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("labels.csv") && e.contains("slide,label[,patient]"),
            "{e}"
        );
        std::fs::write(&f, "Slide,Label\na,x\nb,\n").unwrap();
        let e = read_csv(&f, &["label"], &[]).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("no label"), "{e}");
        std::fs::write(&f, "slide,label\na,x\n\nb,y\n").unwrap();
        let rows = read_csv(&f, &["label"], &["patient"]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].cells, vec![Some("y".into()), None]);
    }
}
