//! How `plip search` prints its hits: a table, JSON Lines, or bare paths.
//!
//! Printers take `impl Write`, so `--json` and `--paths-only` are just other
//! printers and tests capture output without spawning a process. Paths are printed
//! relative to the current directory, so they can be opened or piped as they are.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::index::IndexHit;
use crate::source::walk;

/// How `plip search` prints hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// Rank, score and path in aligned columns.
    Table,
    /// One JSON object per line.
    JsonLines,
    /// One path per line.
    PathsOnly,
}

/// A hit ready to print.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct PrintedHit {
    /// 1-based rank.
    pub rank: usize,
    /// Cosine similarity, rounded to 6 decimals.
    pub score: f64,
    /// Path usable from the current directory.
    pub path: String,
}

/// Turns index hits into printable rows with paths relative to `cwd`.
pub(crate) fn printable(hits: &[IndexHit], root: &Path, cwd: &Path) -> Vec<PrintedHit> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| PrintedHit {
            rank: i + 1,
            score: (h.score as f64 * 1e6).round() / 1e6,
            path: walk::relative(&walk::resolve(root, &h.path), cwd),
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
                    writeln!(w, "{:>4}  {:>7.4}  {}", h.rank, h.score, h.path)?;
                }
            }
        }
        OutputFormat::JsonLines => {
            for h in hits {
                serde_json::to_writer(&mut w, h)?;
                writeln!(w)?;
            }
        }
        OutputFormat::PathsOnly => {
            for h in hits {
                writeln!(w, "{}", h.path)?;
            }
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_rank_score_and_cwd_relative_path() {
        let hits = vec![IndexHit {
            score: 0.30712345,
            path: "slides/a.png".into(),
        }];
        let rows = printable(&hits, Path::new("/p"), Path::new("/p/slides"));
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
}
