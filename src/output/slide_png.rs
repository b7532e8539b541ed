//! PNG pictures of a whole slide: the tile heatmap of `plip heatmap` and the tiling check
//! of `plip tiles`, plus thumbnails with boxes for the `--by-slide` HTML page.
//!
//! Everything is drawn on the slide's thumbnail ([`Slide::thumbnail`], which keeps the
//! slide's aspect ratio and never decodes a whole level). The heatmap uses viridis
//! (matplotlib's perceptually uniform map, interpolated from 9 samples) scaled from the
//! lowest to the highest tile score, with a colour bar at the right whose 5 ticks are
//! labelled with their cosine values in a tiny built-in 3x5 bitmap font (digits, `.` and
//! `-` only), so no font file or text crate is needed.

use image::{Rgb, RgbImage};

use crate::index::Region;
use crate::source::slide::tissue::TissueMask;

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

/// 3x5 glyphs, one row per `u8` (bits 2..0 = left to right).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
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

/// Draws `text` (digits, `.`, `-`) with its top-left at `(x, y)`, each font pixel a
/// `scale x scale` block.
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

/// The tiling check: the thumbnail with the tissue mask tinted green and every kept tile
/// outlined in blue.
pub(crate) fn tiling_preview(
    thumb: &RgbImage,
    slide_w: u64,
    slide_h: u64,
    mask: Option<&TissueMask>,
    tiles: &[Region],
) -> RgbImage {
    let mut out = thumb.clone();
    let (tw, th) = out.dimensions();
    let sx = f64::from(tw) / slide_w as f64;
    let sy = f64::from(th) / slide_h as f64;
    if let Some(m) = mask {
        for y in 0..th {
            let my = ((f64::from(y) + 0.5) / sy / m.scale_y) as u64;
            for x in 0..tw {
                let mx = ((f64::from(x) + 0.5) / sx / m.scale_x) as u64;
                if mx < u64::from(m.width)
                    && my < u64::from(m.height)
                    && m.data[(my * u64::from(m.width) + mx) as usize] != 0
                {
                    fill(
                        &mut out,
                        i64::from(x),
                        i64::from(y),
                        1,
                        1,
                        [0, 200, 0],
                        0.35,
                    );
                }
            }
        }
    }
    for r in tiles {
        let (x, y, w, h) = scaled(r, sx, sy);
        outline(&mut out, x, y, w, h, 1, [20, 60, 230]);
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
}
