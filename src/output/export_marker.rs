//! The state of an export folder, so that an interrupted `plip export` never looks
//! complete (issue 27).
//!
//! `OUT/plip-export.json` is written before the first part with `"complete": false`
//! and replaced (atomically) by one with `"complete": true` and the counts after the
//! last. It records the index commit and the options, so that `--resume` keeps the
//! parts of an interrupted run over the same commit (parts are a pure function of the
//! commit and the options) and writes only the rest. `--replace` deletes the files an
//! earlier export wrote; no mode ever deletes a file whose name plip does not write.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::index::write_atomic;

/// The marker's file name, in OUT.
pub(crate) const MARKER: &str = "plip-export.json";

/// What to do with an earlier export in OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// OUT must hold no export.
    New,
    /// Finish the interrupted export of the same commit and options.
    Resume,
    /// Delete the earlier export's files, then write anew.
    Replace,
}

/// The marker's content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Marker {
    pub(crate) format: String,
    pub(crate) complete: bool,
    /// The index commit exported: manifest generation and checksum.
    pub(crate) generation: u64,
    pub(crate) checksum: u32,
    pub(crate) rows_per_part: usize,
    pub(crate) relative: bool,
    /// Filled in when complete.
    pub(crate) parts: usize,
    pub(crate) rows: usize,
    pub(crate) dim: usize,
}

impl Marker {
    pub(crate) fn new(commit: (u64, u32), rows_per_part: usize, relative: bool) -> Self {
        Marker {
            format: "plip-export".into(),
            complete: false,
            generation: commit.0,
            checksum: commit.1,
            rows_per_part,
            relative,
            parts: 0,
            rows: 0,
            dim: 0,
        }
    }

    fn same_job(&self, other: &Marker) -> bool {
        self.format == other.format
            && (
                self.generation,
                self.checksum,
                self.rows_per_part,
                self.relative,
            ) == (
                other.generation,
                other.checksum,
                other.rows_per_part,
                other.relative,
            )
    }

    /// Writes the marker into `out`, atomically.
    pub(crate) fn store(&self, out: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("marker serializes");
        write_atomic(out, MARKER, &bytes).map_err(anyhow::Error::from)
    }
}

/// Whether `name` is a file an export writes in `img_emb/` or `metadata/` (a part,
/// or the temporary name of one).
fn is_part_name(name: &str) -> bool {
    let name = name
        .strip_prefix('.')
        .map_or(name, |n| n.split_once(".tmp-").map_or(n, |(base, _)| base));
    let numbered = |prefix: &str, ext: &str| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(ext))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    numbered("img_emb_", ".npy") || numbered("metadata_", ".parquet")
}

/// The files in the export's two folders (none when a folder is missing).
fn part_files(out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for sub in ["img_emb", "metadata"] {
        let dir = out.join(sub);
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let name = e.file_name();
            let ok = name.to_str().is_some_and(is_part_name);
            if !ok {
                bail!(
                    "{} holds {:?}, which plip export does not write; choose another OUT \
                     (plip never deletes files it did not write)",
                    dir.display(),
                    name
                );
            }
            files.push(e.path());
        }
    }
    Ok(files)
}

fn read_marker(out: &Path) -> Option<Marker> {
    read_marker_of(out, "plip-export")
}

fn read_marker_of(out: &Path, format: &str) -> Option<Marker> {
    let bytes = fs::read(out.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes)
        .ok()
        .filter(|m: &Marker| m.format == format)
}

/// Whether `name` is a temporary name plip's atomic writes use (`.NAME.tmp-...`).
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// The files of a per-slide export (`--format trident|clam`) in `out` and its `sub`
/// folder: `.h5` files, `slides.csv`, the marker and temporary names. Anything else
/// is refused, naming it.
fn slide_files(out: &Path, sub: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![out.to_path_buf()];
    if !sub.is_empty() {
        dirs.push(out.join(sub));
    }
    for dir in &dirs {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let in_out = dir == out;
            let ok = if in_out && !sub.is_empty() && name == sub {
                continue;
            } else if in_out && (name == MARKER || name == super::slide_files::SLIDES_CSV) {
                true
            } else {
                (sub.is_empty() == in_out) && (name.ends_with(".h5") || is_temporary(&name))
            };
            if !ok || !e.file_type().is_ok_and(|t| t.is_file()) {
                bail!(
                    "{} holds {:?}, which plip export does not write; choose another OUT \
                     (plip never deletes files it did not write)",
                    dir.display(),
                    name
                );
            }
            files.push(e.path());
        }
    }
    Ok(files)
}

/// [`prepare`] for a per-slide export: `.h5` files in OUT without this format's
/// marker were not written by plip and are refused, whatever the mode.
pub(crate) fn prepare_files(out: &Path, sub: &str, mode: Mode, wanted: &Marker) -> Result<bool> {
    let files = slide_files(out, sub)?;
    let marker = read_marker_of(out, &wanted.format);
    let shown = out.display();
    let ours = files
        .iter()
        .all(|f| f.file_name().is_some_and(|n| n == MARKER));
    if marker.is_none() && !ours {
        bail!(
            "{shown} holds files but no {MARKER} of a `plip export --format {}` (another \
             tool's output, or another format's); choose another OUT \
             (plip never deletes files it did not write)",
            wanted.format.trim_start_matches("plip-export-")
        );
    }
    match (mode, marker) {
        (_, None) => Ok(false),
        (Mode::New, Some(m)) if m.complete => bail!(
            "{shown} holds a finished export ({} slides); pass --replace to write it \
             anew, or choose another OUT",
            m.parts
        ),
        (Mode::New, Some(_)) => bail!(
            "{shown} holds an interrupted export; pass --resume to finish it, or \
             --replace to write it anew"
        ),
        (Mode::Replace, Some(_)) => {
            for f in &files {
                fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
            }
            Ok(false)
        }
        (Mode::Resume, Some(m)) => {
            if !m.same_job(wanted) {
                bail!(
                    "the export in {shown} was of another index commit (commit {}); it \
                     cannot be resumed: pass --replace to write it anew",
                    m.generation
                );
            }
            for f in &files {
                if f.file_name()
                    .is_some_and(|n| is_temporary(&n.to_string_lossy()))
                {
                    fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
                }
            }
            Ok(true)
        }
    }
}

/// Checks OUT against `mode` before anything is written, and applies it: with
/// `Replace`, deletes the earlier export's files; with `Resume`, deletes only
/// temporary files. Returns whether parts already in place may be kept.
pub(crate) fn prepare(out: &Path, mode: Mode, wanted: &Marker) -> Result<bool> {
    let files = part_files(out)?;
    let marker = read_marker(out);
    let shown = out.display();
    match mode {
        Mode::New if files.is_empty() => Ok(false),
        Mode::New => match marker {
            Some(m) if m.complete => bail!(
                "{shown} holds a finished export ({} rows in {} parts); \
                 pass --replace to write it anew, or choose another OUT",
                m.rows,
                m.parts
            ),
            Some(_) => bail!(
                "{shown} holds an interrupted export ({} files written); pass --resume to \
                 finish it, or --replace to write it anew",
                files.len()
            ),
            None => bail!(
                "{shown} holds export parts but no {MARKER} (an interrupted or older \
                 export); pass --replace to write it anew, or choose another OUT"
            ),
        },
        Mode::Replace => {
            for f in &files {
                fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
            }
            let _ = fs::remove_file(out.join(MARKER));
            Ok(false)
        }
        Mode::Resume => {
            let Some(m) = marker else {
                if files.is_empty() {
                    return Ok(false);
                }
                bail!(
                    "{shown} has no {MARKER}, so what it holds cannot be resumed; \
                     pass --replace to write it anew"
                );
            };
            if !m.same_job(wanted) {
                bail!(
                    "the export in {shown} was of another index commit or other options \
                     (commit {}, --rows-per-part {}, relative paths {}); it cannot be \
                     resumed: pass --replace to write it anew",
                    m.generation,
                    m.rows_per_part,
                    m.relative
                );
            }
            for f in &files {
                let temporary = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if temporary {
                    fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
                }
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_recognized_and_nothing_else() {
        for ok in [
            "img_emb_0.npy",
            "metadata_12.parquet",
            ".img_emb_3.npy.tmp-4242",
            ".metadata_0.parquet.tmp-1",
        ] {
            assert!(is_part_name(ok), "{ok}");
        }
        for no in [
            "img_emb_.npy",
            "img_emb_a.npy",
            "photo.jpg",
            "metadata_1.parquet.bak",
            ".hidden",
            "img_emb_1.npy.tmp-3",
        ] {
            assert!(!is_part_name(no), "{no}");
        }
    }
}
