//! PNG pictures of a whole slide: the tile heatmap of `plip heatmap` and the tiling check
//! of `plip tiles`, plus thumbnails with boxes for the `--by-slide` HTML page.
//!
//! Everything is drawn on the slide's thumbnail ([`Slide::thumbnail`], which keeps the
//! slide's aspect ratio and never decodes a whole level). The heatmap uses viridis
//! (matplotlib's perceptually uniform map, interpolated from 9 samples) scaled from the
//! lowest to the highest tile score, with a colour bar at the right whose 5 ticks are
//! labelled with their cosine values. The tiling check tints tissue green, hatches
//! artifacts orange, outlines kept tiles in blue, and explains the colours in a legend strip
//! under the thumbnail. Text is a tiny built-in 3x5 bitmap font (capitals, digits and a
//! little punctuation), so no font file or text crate is needed.

use image::{Rgb, RgbImage};

use crate::index::Region;
use crate::output::geojson::{ARTIFACT_COLOR, TISSUE_COLOR};
use crate::source::slide::tissue::{TissueMask, ARTIFACT, TISSUE};

/// Outline colour of kept tiles in the tiling check.
const TILE_COLOR: [u8; 3] = [20, 60, 230];

/// matplotlib's viridis at 0, 1/8, ..., 1.
const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// Viridis at `t` in 0..=1.
pub(crate) fn viridis(t: f64) -> [u8; 3] {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let f = t * 8.0;
    let i = (f.floor() as usize).min(7);
    let a = f - i as f64;
    let (p, q) = (VIRIDIS[i], VIRIDIS[i + 1]);
    std::array::from_fn(|c| {
        (f64::from(p[c]) + a * (f64::from(q[c]) - f64::from(p[c]))).round() as u8
    })
}

/// 3x5 glyphs, one row per `u8` (bits 2..0 = left to right); letters in either case
/// are drawn as capitals.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c.to_ascii_uppercase() {
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 7, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        ':' => [0, 2, 0, 2, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '/' => [1, 1, 2, 4, 4],
        ',' => [0, 0, 0, 2, 4],
        '>' => [4, 2, 1, 2, 4],
        '=' => [0, 7, 0, 7, 0],
        '+' => [0, 2, 7, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        _ => return None,
    })
}

/// Draws `text` (letters, digits, a little punctuation; anything else is a blank) with
/// its top-left at `(x, y)`, each font pixel a `scale x scale` block; a character is
/// `4 * scale` pixels wide.
pub(crate) fn draw_text(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    scale: u32,
    color: [u8; 3],
) {
    let s = i64::from(scale.max(1));
    for (k, c) in text.chars().enumerate() {
        let Some(g) = glyph(c) else { continue };
        let gx = x + k as i64 * 4 * s;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    fill(img, gx + col * s, y + row as i64 * s, s, s, color, 1.0);
                }
            }
        }
    }
}

/// Blends `color` over the rectangle with opacity `alpha` (clipped to the image).
pub(crate) fn fill(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, color: [u8; 3], alpha: f32) {
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    for yy in y.max(0)..(y + h).min(ih) {
        for xx in x.max(0)..(x + w).min(iw) {
            let p = img.get_pixel_mut(xx as u32, yy as u32);
            for (v, &c) in p.0.iter_mut().zip(&color) {
                *v = (f32::from(*v) * (1.0 - alpha) + f32::from(c) * alpha).round() as u8;
            }
        }
    }
}

/// Outlines the rectangle with a `t`-pixel line.
pub(crate) fn outline(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, t: i64, color: [u8; 3]) {
    fill(img, x, y, w, t, color, 1.0);
    fill(img, x, y + h - t, w, t, color, 1.0);
    fill(img, x, y, t, h, color, 1.0);
    fill(img, x + w - t, y, t, h, color, 1.0);
}

/// A level-0 region in thumbnail pixels: `(x, y, w, h)`, at least 1 px wide.
pub(crate) fn scaled(r: &Region, sx: f64, sy: f64) -> (i64, i64, i64, i64) {
    let x0 = (r.x as f64 * sx).floor() as i64;
    let y0 = (r.y as f64 * sy).floor() as i64;
    let x1 = ((r.x + r.w) as f64 * sx).ceil() as i64;
    let y1 = ((r.y + r.h) as f64 * sy).ceil() as i64;
    (x0, y0, (x1 - x0).max(1), (y1 - y0).max(1))
}

/// Width of the colour-bar panel at the right of a heatmap.
const PANEL: u32 = 90;

/// The heatmap: the thumbnail (level-0 size `slide_w x slide_h`) with each tile filled
/// by its score's colour (opacity 0.65), and a colour bar with labelled ticks at the
/// right. Returns the picture and the score range of the colour map.
pub(crate) fn heatmap(
    thumb: &RgbImage,
    slide_w: u64,
    slide_h: u64,
    tiles: &[(Region, f32)],
) -> (RgbImage, (f32, f32)) {
    let (tw, th) = thumb.dimensions();
    let sx = f64::from(tw) / slide_w as f64;
    let sy = f64::from(th) / slide_h as f64;
    let lo = tiles.iter().map(|t| t.1).fold(f32::INFINITY, f32::min);
    let hi = tiles.iter().map(|t| t.1).fold(f32::NEG_INFINITY, f32::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 0.0) };
    let norm = |s: f32| {
        if hi > lo {
            f64::from((s - lo) / (hi - lo))
        } else {
            1.0
        }
    };
    let height = th.max(140);
    let mut out = RgbImage::from_pixel(tw + PANEL, height, Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, thumb, 0, 0);
    for (r, s) in tiles {
        let (x, y, w, h) = scaled(r, sx, sy);
        fill(&mut out, x, y, w, h, viridis(norm(*s)), 0.65);
    }
    // colour bar: best at the top
    let bar_x = i64::from(tw) + 12;
    let bar_top = 10i64;
    let bar_h = i64::from(height) - 20;
    for yy in 0..bar_h {
        let t = 1.0 - yy as f64 / (bar_h - 1).max(1) as f64;
        fill(&mut out, bar_x, bar_top + yy, 16, 1, viridis(t), 1.0);
    }
    outline(
        &mut out,
        bar_x - 1,
        bar_top - 1,
        18,
        bar_h + 2,
        1,
        [0, 0, 0],
    );
    for k in 0..5 {
        let t = k as f64 / 4.0;
        let y = bar_top + ((1.0 - t) * (bar_h - 1) as f64).round() as i64;
        fill(&mut out, bar_x + 17, y, 5, 1, [0, 0, 0], 1.0);
        let value = f64::from(lo) + t * f64::from(hi - lo);
        let label = format!("{value:.2}");
        draw_text(&mut out, bar_x + 25, y - 5, &label, 2, [0, 0, 0]);
    }
    (out, (lo, hi))
}

/// What the tiling check's legend says besides the colours.
pub(crate) struct PreviewLegend<'a> {
    /// The mask's name: "tissue", or "tissue (your mask)".
    pub(crate) tissue: &'a str,
    /// Tiles in the whole grid, kept or not.
    pub(crate) grid_tiles: usize,
}

/// Text scale and line height of the legend.
const LEGEND_SCALE: u32 = 2;
const LEGEND_LINE: i64 = 20;

/// The tiling check: the thumbnail with tissue tinted green, artifacts hatched orange and every
/// kept tile outlined in blue, over a legend strip that names the colours.
pub(crate) fn tiling_preview(
    thumb: &RgbImage,
    slide_w: u64,
    slide_h: u64,
    mask: Option<&TissueMask>,
    tiles: &[Region],
    legend: &PreviewLegend,
) -> RgbImage {
    let (tw, th) = thumb.dimensions();
    let sx = f64::from(tw) / slide_w as f64;
    let sy = f64::from(th) / slide_h as f64;
    let mut items: Vec<(Swatch, String)> = Vec::new();
    if mask.is_some() {
        items.push((Swatch::Fill(TISSUE_COLOR), legend.tissue.to_string()));
        items.push((Swatch::Fill(ARTIFACT_COLOR), "artifact".to_string()));
    }
    items.push((
        Swatch::Outline(TILE_COLOR),
        format!("kept tile ({} of {})", tiles.len(), legend.grid_tiles),
    ));
    let lines = layout(&items, i64::from(tw));
    let strip = (lines.iter().map(|l| l.1).max().unwrap_or(0) + 1) * LEGEND_LINE + 8;
    let mut out = RgbImage::from_pixel(tw, th + strip as u32, Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, thumb, 0, 0);
    if let Some(m) = mask {
        for y in 0..th {
            let my = ((f64::from(y) + 0.5) / sy / m.scale_y) as u64;
            for x in 0..tw {
                let mx = ((f64::from(x) + 0.5) / sx / m.scale_x) as u64;
                if mx >= u64::from(m.width) || my >= u64::from(m.height) {
                    continue;
                }
                // artifacts hatched, so they read as cut out whatever the stain
                let (color, alpha) = match m.data[(my * u64::from(m.width) + mx) as usize] {
                    TISSUE => (TISSUE_COLOR, 0.4),
                    ARTIFACT if (x + y) % 6 < 2 => (ARTIFACT_COLOR, 0.9),
                    ARTIFACT => (ARTIFACT_COLOR, 0.35),
                    _ => continue,
                };
                fill(&mut out, i64::from(x), i64::from(y), 1, 1, color, alpha);
            }
        }
    }
    for r in tiles {
        let (x, y, w, h) = scaled(r, sx, sy);
        outline(&mut out, x, y, w, h, 1, TILE_COLOR);
    }
    fill(&mut out, 0, i64::from(th), i64::from(tw), 1, [0, 0, 0], 1.0);
    for ((swatch, text), &(x, line)) in items.iter().zip(&lines) {
        let y = i64::from(th) + 6 + line * LEGEND_LINE;
        match *swatch {
            Swatch::Fill(c) => {
                fill(&mut out, x, y, 14, 12, [255, 255, 255], 1.0);
                fill(&mut out, x, y, 14, 12, c, 0.4);
                outline(&mut out, x, y, 14, 12, 1, c);
            }
            Swatch::Outline(c) => outline(&mut out, x, y, 14, 12, 2, c),
        }
        draw_text(&mut out, x + 20, y + 1, text, LEGEND_SCALE, [0, 0, 0]);
    }
    out
}

/// A legend entry's colour sample: a tinted box or an outline.
#[derive(Clone, Copy)]
enum Swatch {
    Fill([u8; 3]),
    Outline([u8; 3]),
}

/// Places legend items left to right, wrapping at `width`: each item's x and line.
fn layout(items: &[(Swatch, String)], width: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let (mut x, mut line) = (8i64, 0i64);
    for (_, text) in items {
        let w = 20 + text.chars().count() as i64 * 4 * i64::from(LEGEND_SCALE) + 16;
        if x > 8 && x + w > width {
            x = 8;
            line += 1;
        }
        out.push((x, line));
        x += w;
    }
    out
}

/// `thumb` with `boxes` (level-0 regions) outlined, thickest for the first.
pub(crate) fn boxed(thumb: &RgbImage, slide_w: u64, slide_h: u64, boxes: &[Region]) -> RgbImage {
    let mut out = thumb.clone();
    let (tw, th) = out.dimensions();
    let sx = f64::from(tw) / slide_w as f64;
    let sy = f64::from(th) / slide_h as f64;
    for (i, r) in boxes.iter().enumerate().rev() {
        let (x, y, w, h) = scaled(r, sx, sy);
        let t = if i == 0 { 3 } else { 2 };
        outline(
            &mut out,
            x - t,
            y - t,
            w + 2 * t,
            h + 2 * t,
            t,
            [230, 30, 30],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_middle() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        assert_eq!(viridis(0.5), [33, 144, 141]);
        assert_eq!(viridis(f64::NAN), [68, 1, 84]);
    }

    #[test]
    fn heatmap_keeps_the_thumbnail_and_adds_a_labelled_bar() {
        let thumb = RgbImage::from_pixel(200, 100, Rgb([255, 255, 255]));
        let r = |x| Region {
            x,
            y: 0,
            w: 100,
            h: 100,
            level: 0,
            mpp: 0.5,
        };
        let (img, (lo, hi)) = heatmap(&thumb, 2000, 1000, &[(r(0), 0.1), (r(1900), 0.3)]);
        assert_eq!(img.dimensions(), (200 + PANEL, 140));
        assert_eq!((lo, hi), (0.1, 0.3));
        // the low tile is dark purple-ish, the high one yellow-ish (blended over white)
        let a = img.get_pixel(2, 2).0;
        let b = img.get_pixel(195, 2).0;
        assert!(a[2] > a[1] && b[1] > b[2], "{a:?} {b:?}");
        // some black label pixels right of the bar
        let labels = (0..140)
            .flat_map(|y| (200 + 36..200 + PANEL).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 == [0, 0, 0])
            .count();
        assert!(labels > 20, "{labels}");
    }

    #[test]
    fn tiling_check_colours_tissue_artifacts_and_tiles_with_a_legend() {
        let thumb = RgbImage::from_pixel(200, 100, Rgb([255, 255, 255]));
        // left half tissue, right quarter artifact
        let data: Vec<u8> = (0..4 * 2).map(|i| [1, 1, 0, 2][i % 4]).collect();
        let mask = TissueMask::from_mask(4, 2, 500.0, 500.0, data);
        let tile = Region {
            x: 0,
            y: 0,
            w: 500,
            h: 500,
            level: 0,
            mpp: 0.5,
        };
        let legend = PreviewLegend {
            tissue: "tissue",
            grid_tiles: 8,
        };
        let img = tiling_preview(&thumb, 2000, 1000, Some(&mask), &[tile], &legend);
        assert_eq!(img.width(), 200);
        assert!(img.height() > 100, "a legend strip under the thumbnail");
        let tissue = img.get_pixel(75, 50).0;
        let artifact = img.get_pixel(175, 50).0;
        let glass = img.get_pixel(125, 50).0;
        assert!(tissue[1] > tissue[0] && tissue[1] > tissue[2], "{tissue:?}");
        // orange
        assert!(
            artifact[0] > artifact[1] && artifact[1] > artifact[2],
            "{artifact:?}"
        );
        assert_eq!(glass, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 10).0, TILE_COLOR, "the tile's outline");
        let text = (100..img.height())
            .flat_map(|y| (0..200).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 == [0, 0, 0])
            .count();
        assert!(text > 200, "{text}");
    }
}
