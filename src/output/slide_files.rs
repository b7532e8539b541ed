//! Files named after slides: the safe, distinct ids every per-slide output uses
//! (`--geojson DIR`, `--csv DIR`, `plip export --format trident|clam`), and the
//! folder of such files that a search writes.
//!
//! A slide id is the file name without its last extension, as TRIDENT and CLAM name
//! their outputs (`TCGA-01.svs` → `TCGA-01`, `x.ome.tiff` → `x.ome`). Characters other
//! than letters, digits, `.`, `_`, `-`, `+`, space and parentheses become `_`, a
//! leading `.` too (so no id is `..` or hidden, and none holds `/` or NUL; a name
//! that is not UTF-8 arrives escaped by the index's stored-path rules and is cleaned
//! the same way), and ids that would collide, compared without case, get `-2`, `-3`,
//! ... in the order given. `slides.csv` in the folder writes the mapping down.
//!
//! A search's folder ([`write_folder`]) may hold only what plip writes there: files
//! with the folder's extension, `slides.csv` and temporary names. Anything else is
//! refused before the first write. Each file is written under a temporary name and
//! renamed into place; files an earlier run listed in `slides.csv` and this run did
//! not write are removed after the new mapping is in place, so the folder always
//! describes one run.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::index::write_atomic;
use crate::output::qupath::csv_field;

/// The mapping file's name.
pub(crate) const SLIDES_CSV: &str = "slides.csv";

/// The safe id of a slide's stored path (before de-duplication).
pub(crate) fn slide_id(stored: &str) -> String {
    let name = stored.rsplit('/').next().unwrap_or(stored);
    let stem = match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    };
    let mut id: String = stem
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "._-+ ()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.starts_with('.') {
        id.replace_range(0..1, "_");
    }
    if id.trim().is_empty() {
        id = "slide".into();
    }
    id
}

/// Distinct ids for `stored` paths, in order: the first of a name keeps it, the
/// others get `-2`, `-3`, ... (compared without case, for case-insensitive disks).
/// `slides` is taken: it names the mapping.
pub(crate) fn distinct_ids<'a>(stored: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::from(["slides".to_string()]);
    let mut out = Vec::new();
    for s in stored {
        let base = slide_id(s);
        let mut id = base.clone();
        let mut n = 1;
        while !taken.insert(id.to_lowercase()) {
            n += 1;
            id = format!("{base}-{n}");
        }
        out.push(id);
    }
    out
}

/// One slide's file for [`write_folder`].
pub(crate) struct SlideFile {
    /// The slide's stored path (the id comes from it).
    pub(crate) stored: String,
    /// The slide's path as the mapping shows it.
    pub(crate) path: String,
    /// What the mapping's `items` column counts (hits, tiles).
    pub(crate) items: usize,
    pub(crate) bytes: Vec<u8>,
}

fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Refuses `dir` when it holds anything but `*.ext`, `slides.csv` and temporary
/// names, naming the first such file.
pub(crate) fn check_folder(dir: &Path, ext: &str, flag: &str) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        if dir.exists() {
            bail!("{flag} {}: not a folder", dir.display());
        }
        return Ok(());
    };
    for e in rd {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let ours = name == SLIDES_CSV
            || is_temporary(&name)
            || name.strip_suffix(ext).is_some_and(|s| s.ends_with('.'));
        if !ours || !e.file_type().is_ok_and(|t| t.is_file()) {
            bail!(
                "{flag} {}: the folder holds {name:?}, which plip does not write there; \
                 choose an empty or new folder (plip never overwrites files it did not write)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The files the mapping in `dir` lists (column 2), if it can be read.
fn listed(dir: &Path) -> Vec<String> {
    let Ok(mut r) = csv::Reader::from_path(dir.join(SLIDES_CSV)) else {
        return Vec::new();
    };
    r.records()
        .filter_map(|rec| rec.ok()?.get(1).map(str::to_string))
        .collect()
}

/// Writes one `ID.ext` per slide into `dir` and the mapping `slides.csv`
/// (`slide_id,file,path,items`); see the module docs. Returns the file names.
pub(crate) fn write_folder(
    dir: &Path,
    ext: &str,
    flag: &str,
    files: &[SlideFile],
) -> Result<Vec<String>> {
    check_folder(dir, ext, flag)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let before = listed(dir);
    let ids = distinct_ids(files.iter().map(|f| f.stored.as_str()));
    let mut names = Vec::new();
    let mut mapping = String::from("slide_id,file,path,items\n");
    for (f, id) in files.iter().zip(&ids) {
        let name = format!("{id}.{ext}");
        write_atomic(dir, &name, &f.bytes)?;
        mapping.push_str(&format!(
            "{},{},{},{}\n",
            csv_field(id),
            csv_field(&name),
            csv_field(&f.path),
            f.items
        ));
        names.push(name);
    }
    write_atomic(dir, SLIDES_CSV, mapping.as_bytes())?;
    for old in before {
        let stale = !names.contains(&old) && !old.contains(['/', '\\']) && old != SLIDES_CSV;
        if stale && old.ends_with(&format!(".{ext}")) {
            let _ = fs::remove_file(dir.join(&old));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slide_ids_are_safe_and_distinct() {
        assert_eq!(slide_id("a/b/TCGA-01.svs"), "TCGA-01");
        assert_eq!(slide_id("x.ome.tiff"), "x.ome");
        assert_eq!(slide_id("..svs"), "_");
        assert_eq!(slide_id("d/.hidden"), "_hidden");
        assert_eq!(slide_id("we:ird\u{0}na*me.ndpi"), "we_ird_na_me");
        assert_eq!(slide_id("caf\u{e9} (2).svs"), "caf\u{e9} (2)");
        assert_eq!(slide_id("x/..\\..\\evil.svs"), "_._.._evil");
        let ids = distinct_ids(["a/s.svs", "b/s.svs", "c/S.tif", "s-2.svs", "slides.svs"]);
        assert_eq!(ids, ["s", "s-2", "S-3", "s-2-2", "slides-2"]);
    }

    #[test]
    fn a_folder_is_rewritten_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hits");
        let file = |stored: &str| SlideFile {
            stored: stored.into(),
            path: format!("/data/{stored}"),
            items: 3,
            bytes: b"{}".to_vec(),
        };
        let names = write_folder(
            &out,
            "geojson",
            "--geojson",
            &[file("a.svs"), file("b/a.svs")],
        )
        .unwrap();
        assert_eq!(names, ["a.geojson", "a-2.geojson"]);
        let csv = fs::read_to_string(out.join(SLIDES_CSV)).unwrap();
        assert_eq!(csv, "slide_id,file,path,items\na,a.geojson,/data/a.svs,3\na-2,a-2.geojson,/data/b/a.svs,3\n");
        // A second run with other slides replaces the first run's files.
        write_folder(&out, "geojson", "--geojson", &[file("c.svs")]).unwrap();
        let mut left: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["c.geojson", "slides.csv"]);
        // A file plip did not write: refused, nothing touched.
        fs::write(out.join("notes.txt"), b"mine").unwrap();
        let e = write_folder(&out, "geojson", "--geojson", &[file("d.svs")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("notes.txt") && e.contains("--geojson"), "{e}");
        assert!(!out.join("d.geojson").exists());
    }
}
