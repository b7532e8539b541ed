//! Tissue detection (detector version 2): tissue against glass, not stain against stain,
//! with pen ink and other artifacts labelled apart.
//!
//! Version 1 was CLAM's method: HSV saturation, a 7x7 median, the threshold
//! `max(otsu(saturation), 8)`, a 4x4 closing. On a slide with glass, light stain and dark
//! stain, Otsu splits light stain from dark stain (issue 28: a third of the tissue of IHC
//! slides, the pale hematoxylin between DAB, was lost), and CLAM's own fixed threshold 8
//! fails on tinted glass. Version 2 measures everything against the slide's own glass:
//!
//! 1. **View.** A low-resolution view at 8–16 µm/px ([`super::Slide::downsampled_view`]:
//!    one stored tile at a time, so a single-level slide is never decoded whole). The
//!    background is estimated on its 3x3 box blur (less JPEG noise), pixels are
//!    classified unblurred (a fat membrane is one pixel wide).
//! 2. **Background field** ([`background`]). Physically, tissue only absorbs light, so
//!    glass is the bright mode of the slide. A first reference is the mean colour of the
//!    brightest 1 % of pixels; glass candidates are pixels of nearly that hue (chroma in
//!    optical density below 0.08) and at most 0.4 OD darker, which admits vignetting and
//!    a darker border but not stained tissue. Per 32 px cell the brighter half of the
//!    candidates gives a local glass colour; a quadratic surface per channel is fitted to
//!    those cells with robust reweighting (cells beyond 2.5 robust standard deviations
//!    lose their weight: a pale tissue cell cannot pull the glass down, a dark stain is
//!    never a candidate), clamped to the range of glass seen (no extrapolation over a
//!    slide that is mostly tissue), and a cell keeps its own estimate where it lies
//!    within 0.04 OD of the surface (local shading). So tinted glass, vignetting and uneven illumination are divided
//!    out, whatever the stain.
//! 3. **Optical density against the glass** ([`classify`]). Per pixel
//!    `d = ln(glass) - ln(pixel)` per channel (Beer–Lambert: stain concentration times
//!    its absorption vector); `mean(d)` is the density, `|d - mean(d)|` the chroma.
//!    Every stain (hematoxylin, eosin, DAB, and their mixtures) has a chroma of at least
//!    a fifth of its density and a density of at least half its chroma; glass has
//!    neither, up to noise. Tissue: chroma above a threshold set from the glass's own
//!    noise (4.5x the first quartile of the chroma of glass-like pixels, clamped to
//!    0.02–0.05 OD), not brighter than glass, not neutral (chroma at least 0.12 of the
//!    density) and not colour without density (density at least 0.3 of the chroma:
//!    JPEG's chroma bleeds past stained edges, its luminance does not). No threshold is
//!    ever computed from the tissue's own histogram, so a dark stain cannot move it.
//! 4. **Artifacts**, by the hue of their absorption (the OD ratios: the analogue of the
//!    RGB/HSV ranges HistoQC and deep-histopath use for pen, measured against the glass
//!    so that a tint does not shift them). Blue/cyan ink absorbs red more than green
//!    (hematoxylin absorbs green more); green ink absorbs green least (no stain does);
//!    red ink absorbs green and blue alike and red hardly at all (eosin spares blue,
//!    DAB absorbs red); black ink, dark debris, slide and coverslip edges and dark
//!    scanner borders are neutral and dense (chroma under 0.12 of a density over 0.3).
//!    Where a stroke crosses tissue the two absorptions add up, so looser rules
//!    ([`classify::ink_over_tissue`]) follow a stroke from pixels the strict rules call
//!    ink (hysteresis), never starting inside tissue. Artifact specks under 0.001 mm²
//!    (JPEG noise on dark stain) are ignored, and the rest dilated by one pixel to take
//!    the ink's fringe. By default artifact pixels are never tissue; with
//!    [`DetectOptions::keep_artifacts`] a pixel that the tissue rule calls tissue stays
//!    tissue (coloured ink does, black ink does not).
//! 5. **Morphology** ([`morph`]): a 3x3 closing (gaps between nuclei), holes in tissue
//!    under 0.05 mm² filled when tissue alone surrounds them (fat, whose membranes are
//!    a pixel wide at this resolution, and lumens), tissue pieces under 0.01 mm²
//!    dropped (dust, speckle). No opening: it would erase those membranes.
//!
//! Not handled: blur (not needed for tiling); ink hues that a special stain shares
//! (Alcian blue, light green in a trichrome look like blue and green ink: use
//! `--keep-artifacts` for such slides); a slide without any glass, whose palest tissue
//! is then taken as the glass.
//!
//! Per-pixel work is linear (no sort, no per-pixel window wider than 3x3); on a
//! 100k x 80k pyramid the view is about 1,600 x 1,250 px. The [`TissueMask`] is a label
//! image (0 glass, 1 tissue, 2 artifact) that knows its scale to level 0;
//! [`TissueMask::fraction`] counts tissue only and answers in O(1) from a summed-area
//! table.

mod background;
mod classify;
mod morph;

use super::{Slide, SlideError};

/// The detector's version, recorded with an index's tiling: 1 was CLAM's Otsu method, 2 is
/// this module's glass-relative detector with artifacts.
pub(crate) const DETECTOR_VERSION: u32 = 2;

/// Label of glass / background in [`TissueMask::data`].
pub(crate) const BACKGROUND: u8 = 0;
/// Label of tissue.
pub(crate) const TISSUE: u8 = 1;
/// Label of an artifact: pen ink, dark debris, edge lines.
pub(crate) const ARTIFACT: u8 = 2;

/// Finest and coarsest resolution of the detection view, µm per pixel.
const VIEW_MPP: (f64, f64) = (8.0, 16.0);
/// Holes in tissue smaller than this are filled, mm².
const HOLE_MM2: f64 = 0.05;
/// Tissue pieces smaller than this are dropped, mm².
const SPECK_MM2: f64 = 0.01;
/// Artifact pieces smaller than this are ignored, mm² (JPEG noise on dark stain; a
/// speck this small cannot change a tile).
const ARTIFACT_SPECK_MM2: f64 = 0.001;

/// How [`detect`] treats artifacts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DetectOptions {
    /// Keep artifact pixels that the tissue rule calls tissue (ink over tissue, say) as
    /// tissue, instead of excluding every artifact.
    pub(crate) keep_artifacts: bool,
}

/// A label image over the slide: 0 glass, 1 tissue, 2 artifact.
#[derive(Debug, Clone)]
pub(crate) struct TissueMask {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Level-0 pixels per mask pixel, horizontally and vertically.
    pub(crate) scale_x: f64,
    pub(crate) scale_y: f64,
    /// The chroma threshold used, in thousandths of optical density (ln units), at most
    /// 255; 0 for a mask given from outside.
    pub(crate) threshold: u8,
    /// [`BACKGROUND`], [`TISSUE`] or [`ARTIFACT`] per pixel, row-major.
    pub(crate) data: Vec<u8>,
    /// Stored tiles that failed to decode while building the view.
    pub(crate) skipped_tiles: u64,
    sat: Vec<u32>,
}

impl TissueMask {
    /// Build from a label image (or a 0/1 mask) and its scale.
    pub(crate) fn from_mask(
        width: u32,
        height: u32,
        scale_x: f64,
        scale_y: f64,
        data: Vec<u8>,
    ) -> Self {
        let (w, h) = (width as usize, height as usize);
        let mut sat = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut run = 0u32;
            for x in 0..w {
                run += u32::from(data[y * w + x] == TISSUE);
                sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + run;
            }
        }
        Self {
            width,
            height,
            scale_x,
            scale_y,
            threshold: 0,
            data,
            skipped_tiles: 0,
            sat,
        }
    }

    /// Fraction of tissue in the level-0 rectangle `(x, y, w, h)`: the share
    /// of mask pixels whose centres fall inside it; if none does (a
    /// rectangle smaller than a mask pixel) the mask pixel under its centre.
    pub(crate) fn fraction(&self, x: f64, y: f64, w: f64, h: f64) -> f64 {
        if self.width == 0 || self.height == 0 || w <= 0.0 || h <= 0.0 {
            return 0.0;
        }
        let (mw, mh) = (self.width as i64, self.height as i64);
        // centre of mask pixel i is at (i + 0.5) * scale
        let x0 = ((x / self.scale_x - 0.5).ceil() as i64).clamp(0, mw);
        let x1 = (((x + w) / self.scale_x - 0.5).ceil() as i64).clamp(0, mw);
        let y0 = ((y / self.scale_y - 0.5).ceil() as i64).clamp(0, mh);
        let y1 = (((y + h) / self.scale_y - 0.5).ceil() as i64).clamp(0, mh);
        if x1 > x0 && y1 > y0 {
            let s = |xx: i64, yy: i64| i64::from(self.sat[(yy * (mw + 1) + xx) as usize]);
            let n = s(x1, y1) - s(x0, y1) - s(x1, y0) + s(x0, y0);
            return n as f64 / ((x1 - x0) * (y1 - y0)) as f64;
        }
        let cx = ((x + w / 2.0) / self.scale_x).floor() as i64;
        let cy = ((y + h / 2.0) / self.scale_y).floor() as i64;
        if cx < 0 || cy < 0 || cx >= mw || cy >= mh {
            return 0.0;
        }
        f64::from(u8::from(self.data[(cy * mw + cx) as usize] == TISSUE))
    }
}

/// Detect tissue and artifacts on `slide`, on a view at 8–16 µm/px (level-0 µm/px from
/// the slide, 0.25 if it records none).
pub(crate) fn detect(slide: &Slide, opts: &DetectOptions) -> Result<TissueMask, SlideError> {
    let mpp = slide.mpp().map(|m| m.0).unwrap_or(0.25);
    let level = slide.best_level_for_downsample(VIEW_MPP.1 / mpp);
    let l = slide.levels()[level];
    let level_mpp = mpp * l.downsample;
    let k = if level_mpp < VIEW_MPP.0 {
        (VIEW_MPP.1 / level_mpp).floor().max(1.0) as u32
    } else {
        1
    };
    let (view, skipped) = slide.downsampled_view(level, k)?;
    let l0 = slide.levels()[0];
    let scale_x = l0.width as f64 / l.width as f64 * f64::from(k);
    let scale_y = l0.height as f64 / l.height as f64 * f64::from(k);
    let (w, h) = view.dimensions();
    let view_mpp = level_mpp * f64::from(k);
    let seg = segment(view.as_raw(), w as usize, h as usize, view_mpp, opts);
    let mut m = TissueMask::from_mask(w, h, scale_x, scale_y, seg.labels);
    m.threshold = (seg.chroma_threshold * 1000.0).round().clamp(0.0, 255.0) as u8;
    m.skipped_tiles = skipped;
    Ok(m)
}

/// What [`segment`] found.
pub(crate) struct Segmentation {
    /// [`BACKGROUND`], [`TISSUE`] or [`ARTIFACT`] per pixel.
    pub(crate) labels: Vec<u8>,
    /// The tissue chroma threshold, OD (ln units).
    pub(crate) chroma_threshold: f32,
}

/// The detector on an RGB view of `w x h` pixels at `view_mpp` µm/px.
pub(crate) fn segment(
    rgb: &[u8],
    w: usize,
    h: usize,
    view_mpp: f64,
    opts: &DetectOptions,
) -> Segmentation {
    if w == 0 || h == 0 {
        return Segmentation {
            labels: Vec::new(),
            chroma_threshold: 0.0,
        };
    }
    let smooth = morph::box3(rgb, w, h);
    let bg = background::estimate(&smooth, w, h);
    let raw = classify::classify(rgb, w, h, &bg);
    let px_mm2 = (view_mpp / 1000.0).powi(2);
    let area = |mm2: f64| (mm2 / px_mm2).round() as usize;
    let mut art = morph::grow(&raw.artifact, &raw.weak_artifact, w, h);
    morph::drop_specks(&mut art, w, h, 1, area(ARTIFACT_SPECK_MM2));
    let art = morph::dilate(&art, w, h, 1);
    let excluded = |t: &[u8]| -> Vec<u8> {
        if opts.keep_artifacts {
            t.to_vec()
        } else {
            t.iter().zip(&art).map(|(&t, &a)| t & (a ^ 1)).collect()
        }
    };
    let tissue = excluded(&raw.tissue);
    let closed = morph::erode(&morph::dilate(&tissue, w, h, 1), w, h, 1);
    let tissue = excluded(&closed);
    let mut labels: Vec<u8> = tissue
        .iter()
        .zip(&art)
        .map(|(&t, &a)| match (t, a) {
            (1, _) => TISSUE,
            (_, 1) => ARTIFACT,
            _ => BACKGROUND,
        })
        .collect();
    morph::fill_holes(&mut labels, w, h, area(HOLE_MM2));
    morph::drop_specks(&mut labels, w, h, TISSUE, area(SPECK_MM2));
    Segmentation {
        labels,
        chroma_threshold: raw.chroma_threshold,
    }
}

/// OpenCV RGB2HSV saturation for 8-bit input (`S = round(255 * (max - min) / max)` through
/// OpenCV's 12-bit reciprocal table, 0 where `max == 0`); detector version 1 thresholded
/// it, the tests use it to look at pixels.
#[cfg(test)]
pub(crate) fn saturation(rgb: &[u8]) -> Vec<u8> {
    // sdiv_table[i] = saturate_cast<int>((255 << 12) / (double)i), rounded
    let mut table = [0i32; 256];
    for (i, t) in table.iter_mut().enumerate().skip(1) {
        *t = ((255.0 * 4096.0) / i as f64).round() as i32;
    }
    rgb.chunks_exact(3)
        .map(|p| {
            let v = p[0].max(p[1]).max(p[2]);
            let mn = p[0].min(p[1]).min(p[2]);
            let diff = i32::from(v - mn);
            ((diff * table[usize::from(v)] + (1 << 11)) >> 12).clamp(0, 255) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests;
