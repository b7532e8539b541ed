//! How `plip search` prints its hits: a table, JSON Lines, or bare paths.
//!
//! Printers take `impl Write`, so `--json` and `--paths-only` are just other
//! printers and tests capture output without spawning a process. Paths are printed
//! relative to the current directory, so they can be opened or piped as they are.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::app::SearchHit;
use crate::index::paths;
use crate::index::Region;

/// How `plip search` prints hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// Rank, score and path in aligned columns.
    Table,
    /// One JSON object per line.
    JsonLines,
    /// One path per line, byte for byte as on disk.
    PathsOnly,
    /// Paths separated by NUL bytes (`find -print0`), for names with newlines.
    PathsNull,
}

/// A hit ready to print.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct PrintedHit {
    /// 1-based rank.
    pub rank: usize,
    /// Cosine similarity, rounded to 6 decimals.
    pub score: f64,
    /// Path relative to the current directory, in the index's lossless
    /// encoding (see `index::paths`); printed through [`paths::display`], or as
    /// raw bytes by `--paths-only`.
    #[serde(serialize_with = "serialize_display")]
    pub path: String,
    /// For a tile of a whole slide: x, y, w, h (level-0 pixels), level and mpp,
    /// flattened into the JSON object.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

fn serialize_display<S: serde::Serializer>(path: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&paths::display(path))
}

/// Writes the path's bytes as they are on disk.
fn write_raw<W: Write>(w: &mut W, path: &str) -> io::Result<()> {
    let p = paths::resolve(Path::new(""), path);
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        w.write_all(p.as_os_str().as_bytes())
    }
    #[cfg(not(unix))]
    w.write_all(p.to_string_lossy().as_bytes())
}

/// Turns search hits into printable rows with paths relative to `cwd`.
pub(crate) fn printable(hits: &[SearchHit], cwd: &Path) -> Vec<PrintedHit> {
    hits.iter()
        .map(|h| PrintedHit {
            rank: h.rank,
            score: h.score,
            path: paths::relative(&h.path, cwd),
            region: h.region,
        })
        .collect()
}

/// Prints hits in the chosen format.
pub(crate) fn print_hits<W: Write>(
    mut w: W,
    hits: &[PrintedHit],
    format: OutputFormat,
) -> io::Result<()> {
    match format {
        OutputFormat::Table => {
            if hits.is_empty() {
                writeln!(w, "no matches")?;
            } else {
                writeln!(w, "{:>4}  {:>7}  path", "rank", "score")?;
                for h in hits {
                    let path = paths::display(&h.path);
                    match &h.region {
                        Some(r) => writeln!(
                            w,
                            "{:>4}  {:>7.4}  {path} @ {},{}  ({}x{})",
                            h.rank, h.score, r.x, r.y, r.w, r.h
                        )?,
                        None => writeln!(w, "{:>4}  {:>7.4}  {path}", h.rank, h.score)?,
                    }
                }
            }
        }
        OutputFormat::JsonLines => {
            for h in hits {
                serde_json::to_writer(&mut w, h)?;
                writeln!(w)?;
            }
        }
        OutputFormat::PathsOnly | OutputFormat::PathsNull => {
            let end: &[u8] = if format == OutputFormat::PathsNull {
                b"\0"
            } else {
                b"\n"
            };
            for h in hits {
                write_raw(&mut w, &h.path)?;
                w.write_all(end)?;
            }
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::search::item_hits;
    use crate::index::IndexHit;

    #[test]
    fn json_lines_have_rank_score_and_cwd_relative_path() {
        let hits = vec![IndexHit {
            score: 0.30712345,
            path: "slides/a.png".into(),
            region: None,
        }];
        let rows = printable(&item_hits(hits, Path::new("/p")), Path::new("/p/slides"));
        let mut out = Vec::new();
        print_hits(&mut out, &rows, OutputFormat::JsonLines).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"rank\":1,\"score\":0.307123,\"path\":\"a.png\"}\n"
        );
        let mut out = Vec::new();
        print_hits(&mut out, &rows, OutputFormat::Table).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("   1   0.3071  a.png"));
    }

    #[test]
    fn tile_hits_carry_their_region_in_json_and_the_table() {
        let hits = vec![IndexHit {
            score: 0.5,
            path: "s/a.svs".into(),
            region: Some(Region {
                x: 448,
                y: 896,
                w: 448,
                h: 448,
                level: 1,
                mpp: 0.5,
            }),
        }];
        let rows = printable(&item_hits(hits, Path::new("/p")), Path::new("/p"));
        let mut out = Vec::new();
        print_hits(&mut out, &rows, OutputFormat::JsonLines).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"rank\":1,\"score\":0.5,\"path\":\"s/a.svs\",\"x\":448,\"y\":896,\
             \"w\":448,\"h\":448,\"level\":1,\"mpp\":0.5}\n"
        );
        let mut out = Vec::new();
        print_hits(&mut out, &rows, OutputFormat::Table).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(table.contains("s/a.svs @ 448,896  (448x448)"), "{table}");
    }
}
