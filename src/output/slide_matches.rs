//! Slides found like a slide (`plip search --image SLIDE`, issue 32): the table, JSON
//! Lines (one slide a line, with its matched tile pairs) and paths.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use super::printers::OutputFormat;
use crate::app::slides_like::{SlideMatch, SlideMatches};
use crate::index::{paths, Region};

/// A tile's place, as printed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct Place {
    pub(crate) x: u64,
    pub(crate) y: u64,
    pub(crate) w: u64,
    pub(crate) h: u64,
}

impl From<&Region> for Place {
    fn from(r: &Region) -> Self {
        Place {
            x: r.x,
            y: r.y,
            w: r.w,
            h: r.h,
        }
    }
}

/// A matched tile pair, as printed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct PrintedMatch {
    pub(crate) query: Place,
    pub(crate) found: Place,
    pub(crate) score: f64,
}

/// A found slide, as printed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct PrintedSlideMatch {
    pub(crate) rank: usize,
    pub(crate) score: f64,
    /// Path relative to the current directory (the index's lossless encoding).
    pub(crate) path: String,
    pub(crate) tiles: usize,
    pub(crate) matches: Vec<PrintedMatch>,
}

/// The found slides with paths relative to `cwd`.
pub(crate) fn printable(found: &SlideMatches, cwd: &Path) -> Vec<PrintedSlideMatch> {
    found.slides.iter().map(|s| row(s, cwd)).collect()
}

fn row(s: &SlideMatch, cwd: &Path) -> PrintedSlideMatch {
    PrintedSlideMatch {
        rank: s.rank,
        score: s.score,
        path: paths::display(&paths::relative(&s.path, cwd)),
        tiles: s.tiles,
        matches: s
            .matches
            .iter()
            .map(|m| PrintedMatch {
                query: (&m.query).into(),
                found: (&m.found).into(),
                score: m.score,
            })
            .collect(),
    }
}

/// Prints found slides in `format`. The table shows each slide's best pair.
pub(crate) fn print<W: Write>(
    mut w: W,
    rows: &[PrintedSlideMatch],
    format: OutputFormat,
) -> io::Result<()> {
    match format {
        OutputFormat::Table => {
            if rows.is_empty() {
                writeln!(w, "no slides match")?;
            } else {
                writeln!(
                    w,
                    "{:>4}  {:>7}  {:>6}  slide  (best match: query tile -> its tile, cosine)",
                    "rank", "score", "tiles"
                )?;
                for r in rows {
                    write!(
                        w,
                        "{:>4}  {:>7.4}  {:>6}  {}",
                        r.rank, r.score, r.tiles, r.path
                    )?;
                    if let Some(m) = r.matches.first() {
                        write!(
                            w,
                            "  (@ {},{} {}x{} -> @ {},{} {}x{}  {:.4})",
                            m.query.x,
                            m.query.y,
                            m.query.w,
                            m.query.h,
                            m.found.x,
                            m.found.y,
                            m.found.w,
                            m.found.h,
                            m.score
                        )?;
                    }
                    writeln!(w)?;
                }
            }
        }
        OutputFormat::JsonLines => {
            for r in rows {
                serde_json::to_writer(&mut w, r)?;
                writeln!(w)?;
            }
        }
        OutputFormat::PathsOnly | OutputFormat::PathsNull => {
            let end = if format == OutputFormat::PathsNull {
                "\0"
            } else {
                "\n"
            };
            for r in rows {
                write!(w, "{}{end}", r.path)?;
            }
        }
    }
    w.flush()
}
