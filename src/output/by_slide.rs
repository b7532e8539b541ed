//! Whole slides in `plip search` output: the `--by-slide` rows (table, JSON Lines, paths)
//! and HTML page, and the tile crops shown for tile hits on the ordinary page.
//!
//! Crops and thumbnails are read by plip's own slide reader, so a page shows the pixels
//! that were embedded; a slide that cannot be read gives "no preview", never an error.

use std::io::{self, Write};
use std::path::Path;

use image::RgbImage;
use serde::Serialize;

use super::html::escape;
use super::printers::OutputFormat;
use crate::app::SlideSearchHit;
use crate::index::paths;
use crate::index::Region;
use crate::source::slide::{OpenOptions, Slide, SlideError};

/// Longest side of a slide thumbnail on the page.
const SLIDE_THUMB: u32 = 512;
/// Side of a tile crop on the page.
const CROP: u32 = 224;

/// A `--by-slide` row ready to print.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct PrintedSlide {
    pub(crate) rank: usize,
    pub(crate) score: f64,
    /// Path relative to the current directory (the index's lossless encoding).
    #[serde(serialize_with = "serialize_display")]
    pub(crate) path: String,
    pub(crate) tiles: usize,
    pub(crate) best: BestTile,
    /// The best tiles (for the HTML page), not printed.
    #[serde(skip)]
    pub(crate) top: Vec<Region>,
}

/// The best tile of a slide.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct BestTile {
    pub(crate) x: u64,
    pub(crate) y: u64,
    pub(crate) w: u64,
    pub(crate) h: u64,
    pub(crate) score: f64,
}

fn serialize_display<S: serde::Serializer>(path: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&paths::display(path))
}

/// Ranked slides with paths relative to `cwd`.
pub(crate) fn printable(slides: &[SlideSearchHit], cwd: &Path) -> Vec<PrintedSlide> {
    slides
        .iter()
        .map(|s| {
            let (r, score) = s.best[0];
            PrintedSlide {
                rank: s.rank,
                score: s.score,
                path: paths::relative(&s.path, cwd),
                tiles: s.tiles,
                best: BestTile {
                    x: r.x,
                    y: r.y,
                    w: r.w,
                    h: r.h,
                    score,
                },
                top: s.best.iter().map(|b| b.0).collect(),
            }
        })
        .collect()
}

/// Prints ranked slides in the chosen format.
pub(crate) fn print_slides<W: Write>(
    mut w: W,
    rows: &[PrintedSlide],
    format: OutputFormat,
) -> io::Result<()> {
    match format {
        OutputFormat::Table => {
            if rows.is_empty() {
                writeln!(w, "no slides match")?;
            } else {
                writeln!(
                    w,
                    "{:>4}  {:>7}  {:>6}  slide  (best tile)",
                    "rank", "score", "tiles"
                )?;
                for r in rows {
                    writeln!(
                        w,
                        "{:>4}  {:>7.4}  {:>6}  {}  (@ {},{}  {}x{}  {:.4})",
                        r.rank,
                        r.score,
                        r.tiles,
                        paths::display(&r.path),
                        r.best.x,
                        r.best.y,
                        r.best.w,
                        r.best.h,
                        r.best.score
                    )?;
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
                write!(w, "{}{end}", paths::display(&r.path))?;
            }
        }
    }
    w.flush()
}

/// A crop of the tile `r` of the slide at `path`, read as the tile was for the model
/// (the pixels a page shows for a tile hit; `plip serve` uses it too).
pub(crate) fn tile_crop(path: &Path, r: &Region) -> Result<RgbImage, SlideError> {
    crate::source::slide::tiles::read_region_as_tile(path, (r.x, r.y, r.w, r.h), CROP, None)
}

/// A crop of the tile `r` of the slide at `path`, as a data URI.
pub(crate) fn tile_uri(path: &Path, r: &Region) -> Option<String> {
    super::thumb::data_uri(&tile_crop(path, r).ok()?)
}

/// The slide's thumbnail with `boxes` outlined, as a data URI.
pub(crate) fn slide_uri(path: &Path, boxes: &[Region]) -> Option<String> {
    let slide = Slide::open(path, &OpenOptions::default()).ok()?;
    let thumb = slide.thumbnail(SLIDE_THUMB).ok()?;
    let l0 = slide.levels()[0];
    super::thumb::data_uri(&super::slide_png::boxed(&thumb, l0.width, l0.height, boxes))
}

/// The `--by-slide` page: per slide, its thumbnail with its best tiles boxed (the best
/// one thickest) and crops of those tiles.
pub(crate) fn write_page<W: Write>(
    mut w: W,
    query: &str,
    rows: &[PrintedSlide],
    cwd: &Path,
) -> io::Result<()> {
    write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>plip: {q}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}}\n\
         h1{{font-size:1.3rem}} section{{background:#fff;border:1px solid #ddd;border-radius:6px;\
         padding:.8rem;margin-bottom:1rem}} .thumb{{max-width:512px;display:block}}\n\
         .tiles{{display:flex;gap:.5rem;flex-wrap:wrap;margin-top:.5rem}}\n\
         figure{{margin:0;font-size:.75rem}} figure img{{width:150px;height:150px}}\n\
         footer{{margin-top:1.5rem;font-size:.75rem;color:#777}}\n</style>\n</head>\n<body>\n\
         <h1>plip search --by-slide: <code>{q}</code></h1>\n<p>{n} slide(s); a slide's score is \
         the mean of its 5 best tile scores</p>\n",
        q = escape(query),
        n = rows.len()
    )?;
    for r in rows {
        let full = paths::resolve(cwd, &r.path);
        let shown = escape(&paths::display(&r.path));
        let thumb = match slide_uri(&full, &r.top) {
            Some(uri) => format!("<img class=\"thumb\" src=\"{uri}\" alt=\"{shown}\">"),
            None => "<p>no preview</p>".to_string(),
        };
        writeln!(
            w,
            "<section class=\"slide\" data-rank=\"{rank}\"><h2>#{rank} {shown} \
             <small>score {score:.4}, {tiles} tiles</small></h2>{thumb}<div class=\"tiles\">",
            rank = r.rank,
            score = r.score,
            tiles = r.tiles,
        )?;
        for t in &r.top {
            let img = tile_uri(&full, t)
                .map(|u| format!("<img src=\"{u}\" alt=\"tile\">"))
                .unwrap_or_else(|| "no preview".into());
            writeln!(
                w,
                "<figure>{img}<figcaption>{shown} @ {},{} ({}x{})</figcaption></figure>",
                t.x, t.y, t.w, t.h
            )?;
        }
        writeln!(w, "</div></section>")?;
    }
    write!(
        w,
        "<footer>Made by plip with the PLIP model, for research use only; not medical \
         advice.</footer>\n</body>\n</html>\n"
    )?;
    w.flush()
}
