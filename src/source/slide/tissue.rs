//! Tissue detection, the CLAM / slideflow method, on a low-resolution view.
//!
//! Steps, each replicating the OpenCV call CLAM makes
//! (`create_patches_fp.py` / `WholeSlideImage.segmentTissue`):
//!
//! 1. a view at 8–16 µm/px: the coarsest level whose resolution is at most
//!    16 µm/px, box-averaged by an integer factor when that level is finer
//!    than 8 µm/px ([`super::Slide::downsampled_view`]: one stored tile at a
//!    time, so a single-level slide is never decoded whole);
//! 2. HSV saturation as `cv2.cvtColor(RGB2HSV)` on uint8 computes it:
//!    `S = round(255 * (max - min) / max)` through OpenCV's 12-bit
//!    reciprocal table, 0 where `max == 0`;
//! 3. `cv2.medianBlur(s, 7)` (replicated border);
//! 4. threshold `max(otsu(s_med), 8)`, pixels strictly above it are tissue
//!    (OpenCV's Otsu, `THRESH_BINARY`);
//! 5. `cv2.morphologyEx(MORPH_CLOSE, ones(4, 4))`: dilate then erode, anchor
//!    (2, 2), borders ignored.
//!
//! The [`TissueMask`] knows its scale to level 0; [`TissueMask::fraction`]
//! answers in O(1) from a summed-area table.

use super::{Slide, SlideError};

pub(crate) const DETECTOR_VERSION: u32 = 2;

/// Saturation threshold floor (CLAM's `sthresh`).
pub(crate) const MIN_THRESHOLD: u8 = 8;
/// Median kernel (CLAM's `mthresh`).
pub(crate) const MEDIAN_KSIZE: usize = 7;
/// Closing kernel side (CLAM's `close`).
pub(crate) const CLOSE_KSIZE: usize = 4;

/// A binary tissue mask over the slide.
#[derive(Debug, Clone)]
pub(crate) struct TissueMask {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Level-0 pixels per mask pixel, horizontally and vertically.
    pub(crate) scale_x: f64,
    pub(crate) scale_y: f64,
    /// The Otsu/floor threshold used.
    pub(crate) threshold: u8,
    /// Labels, row-major: 0 = background (glass), 1 = tissue, 2 = artifact (pen
    /// ink, debris). Only 1 counts as tissue.
    pub(crate) data: Vec<u8>,
    /// Stored tiles that failed to decode while building the view.
    pub(crate) skipped_tiles: u64,
    sat: Vec<u32>,
}

impl TissueMask {
    /// Build from a label mask (0 background, 1 tissue, 2 artifact) and its scale.
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
                run += u32::from(data[y * w + x] == LABEL_TISSUE);
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
        f64::from(u8::from(self.data[(cy * mw + cx) as usize] == LABEL_TISSUE))
    }
}

/// Detect tissue on `slide`. `mpp` is level-0 µm/px (the slide's, or a
/// guess; 0.25 if unknown).
pub(crate) fn detect(slide: &Slide) -> Result<TissueMask, SlideError> {
    let mpp = slide.mpp().map(|m| m.0).unwrap_or(0.25);
    let level = slide.best_level_for_downsample(16.0 / mpp);
    let l = slide.levels()[level];
    let level_mpp = mpp * l.downsample;
    let k = if level_mpp < 8.0 {
        (16.0 / level_mpp).floor().max(1.0) as u32
    } else {
        1
    };
    let (view, skipped) = slide.downsampled_view(level, k)?;
    let l0 = slide.levels()[0];
    let scale_x = l0.width as f64 / l.width as f64 * f64::from(k);
    let scale_y = l0.height as f64 / l.height as f64 * f64::from(k);
    let (w, h) = view.dimensions();
    let (data, threshold) = segment(view.as_raw(), w as usize, h as usize);
    let mut m = TissueMask::from_mask(w, h, scale_x, scale_y, data);
    m.threshold = threshold;
    m.skipped_tiles = skipped;
    Ok(m)
}

/// The CLAM pipeline on an RGB buffer; returns the 0/1 mask and threshold.
pub(crate) fn segment(rgb: &[u8], w: usize, h: usize) -> (Vec<u8>, u8) {
    let s = saturation(rgb);
    let med = median_blur(&s, w, h, MEDIAN_KSIZE);
    let t = otsu(&med).max(MIN_THRESHOLD);
    let bin: Vec<u8> = med.iter().map(|&v| u8::from(v > t)).collect();
    (close(&bin, w, h, CLOSE_KSIZE), t)
}

/// OpenCV RGB2HSV saturation for 8-bit input.
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

/// `cv2.medianBlur` with an odd kernel and replicated borders, using a
/// sliding 256-bin histogram with a 16-bin coarse level.
pub(crate) fn median_blur(src: &[u8], w: usize, h: usize, k: usize) -> Vec<u8> {
    let r = (k / 2) as isize;
    let mut out = vec![0u8; w * h];
    if w == 0 || h == 0 {
        return out;
    }
    let half = (k * k / 2) as u32; // the median is the (half+1)-th value
    let clampx = |x: isize| x.clamp(0, w as isize - 1) as usize;
    let clampy = |y: isize| y.clamp(0, h as isize - 1) as usize;
    for y in 0..h {
        let mut fine = [0u32; 256];
        let mut coarse = [0u32; 16];
        let rows: Vec<usize> = (-r..=r).map(|d| clampy(y as isize + d)).collect();
        let add = |fine: &mut [u32; 256], coarse: &mut [u32; 16], v: u8, s: i32| {
            if s > 0 {
                fine[v as usize] += 1;
                coarse[(v >> 4) as usize] += 1;
            } else {
                fine[v as usize] -= 1;
                coarse[(v >> 4) as usize] -= 1;
            }
        };
        for dx in -r..=r {
            let x = clampx(dx);
            for &yy in &rows {
                add(&mut fine, &mut coarse, src[yy * w + x], 1);
            }
        }
        for x in 0..w {
            if x > 0 {
                let xo = clampx(x as isize - 1 - r);
                let xi = clampx(x as isize + r);
                for &yy in &rows {
                    add(&mut fine, &mut coarse, src[yy * w + xo], -1);
                    add(&mut fine, &mut coarse, src[yy * w + xi], 1);
                }
            }
            let mut acc = 0u32;
            let mut c = 0usize;
            while c < 16 && acc + coarse[c] <= half {
                acc += coarse[c];
                c += 1;
            }
            let mut v = c * 16;
            while v < 256 && acc + fine[v] <= half {
                acc += fine[v];
                v += 1;
            }
            out[y * w + x] = v.min(255) as u8;
        }
    }
    out
}

/// OpenCV's `getThreshVal_Otsu_8u`.
pub(crate) fn otsu(src: &[u8]) -> u8 {
    let mut hist = [0u64; 256];
    for &v in src {
        hist[v as usize] += 1;
    }
    if src.is_empty() {
        return 0;
    }
    let scale = 1.0 / src.len() as f64;
    let mu: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum::<f64>()
        * scale;
    let (mut mu1, mut q1) = (0.0f64, 0.0f64);
    let (mut max_sigma, mut max_val) = (0.0f64, 0u8);
    for (i, &c) in hist.iter().enumerate() {
        let p_i = c as f64 * scale;
        mu1 *= q1;
        q1 += p_i;
        let q2 = 1.0 - q1;
        if q1.min(q2) < f64::from(f32::EPSILON) || q1.max(q2) > 1.0 - f64::from(f32::EPSILON) {
            continue;
        }
        mu1 = (mu1 + i as f64 * p_i) / q1;
        let mu2 = (mu - q1 * mu1) / q2;
        let sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
        if sigma > max_sigma {
            max_sigma = sigma;
            max_val = i as u8;
        }
    }
    max_val
}

/// Morphological close with a `k x k` square of ones, anchor `k/2`
/// (OpenCV's default), borders not taking part.
pub(crate) fn close(src: &[u8], w: usize, h: usize, k: usize) -> Vec<u8> {
    let dil = morph(src, w, h, k, true);
    morph(&dil, w, h, k, false)
}

fn morph(src: &[u8], w: usize, h: usize, k: usize, dilate: bool) -> Vec<u8> {
    // offsets -a .. k-1-a with a = k/2
    let a = (k / 2) as isize;
    let lo = -a;
    let hi = k as isize - 1 - a;
    let pick = |acc: u8, v: u8| if dilate { acc.max(v) } else { acc.min(v) };
    let init = if dilate { 0u8 } else { 1u8 };
    let mut tmp = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut acc = init;
            for d in lo..=hi {
                let xx = x as isize + d;
                if xx >= 0 && (xx as usize) < w {
                    acc = pick(acc, src[y * w + xx as usize]);
                }
            }
            tmp[y * w + x] = acc;
        }
    }
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut acc = init;
            for d in lo..=hi {
                let yy = y as isize + d;
                if yy >= 0 && (yy as usize) < h {
                    acc = pick(acc, tmp[yy as usize * w + x]);
                }
            }
            out[y * w + x] = acc;
        }
    }
    out
}

/// [`TissueMask::data`] labels: glass, tissue, artifact.
pub(crate) const LABEL_BACKGROUND: u8 = 0;
pub(crate) const LABEL_TISSUE: u8 = 1;
pub(crate) const LABEL_ARTIFACT: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_matches_opencv_formula() {
        let s = saturation(&[255, 0, 0, 0, 0, 0, 200, 100, 50, 10, 10, 10]);
        assert_eq!(s, vec![255, 0, 191, 0]);
    }

    #[test]
    fn median_of_constant_and_impulse() {
        let mut img = vec![10u8; 9 * 9];
        img[4 * 9 + 4] = 200;
        let m = median_blur(&img, 9, 9, 7);
        assert!(m.iter().all(|&v| v == 10));
        // brute force comparison on a random-ish image
        let w = 13;
        let h = 11;
        let src: Vec<u8> = (0..w * h).map(|i| ((i * 73 + 11) % 251) as u8).collect();
        let fast = median_blur(&src, w, h, 7);
        for y in 0..h {
            for x in 0..w {
                let mut v = Vec::new();
                for dy in -3i32..=3 {
                    for dx in -3i32..=3 {
                        let xx = (x as i32 + dx).clamp(0, w as i32 - 1) as usize;
                        let yy = (y as i32 + dy).clamp(0, h as i32 - 1) as usize;
                        v.push(src[yy * w + xx]);
                    }
                }
                v.sort_unstable();
                assert_eq!(fast[y * w + x], v[24], "at {x},{y}");
            }
        }
    }

    #[test]
    fn otsu_splits_two_modes() {
        let mut v = vec![20u8; 500];
        v.extend(std::iter::repeat_n(180u8, 500));
        let t = otsu(&v);
        assert!((20..180).contains(&t));
    }

    #[test]
    fn close_fills_one_pixel_gap() {
        let w = 10;
        let mut m = vec![0u8; w * w];
        for y in 2..8 {
            for x in 2..8 {
                m[y * w + x] = 1;
            }
        }
        m[5 * w + 5] = 0;
        let c = close(&m, w, w, 4);
        assert_eq!(c[5 * w + 5], 1);
        assert_eq!(c[0], 0);
    }

    #[test]
    fn fraction_uses_pixel_centres() {
        let m = TissueMask::from_mask(4, 2, 10.0, 10.0, vec![1, 1, 0, 0, 1, 1, 0, 0]);
        assert_eq!(m.fraction(0.0, 0.0, 20.0, 20.0), 1.0);
        assert_eq!(m.fraction(0.0, 0.0, 40.0, 20.0), 0.5);
        assert_eq!(m.fraction(20.0, 0.0, 20.0, 20.0), 0.0);
        // smaller than a mask pixel: the pixel under the centre
        assert_eq!(m.fraction(1.0, 1.0, 2.0, 2.0), 1.0);
        assert_eq!(m.fraction(1000.0, 0.0, 5.0, 5.0), 0.0);
    }

    #[test]
    fn artifact_pixels_are_not_tissue() {
        let m = TissueMask::from_mask(4, 1, 10.0, 10.0, vec![1, 2, 2, 0]);
        assert_eq!(m.fraction(0.0, 0.0, 40.0, 10.0), 0.25);
        assert_eq!(m.fraction(10.0, 0.0, 20.0, 10.0), 0.0);
        assert_eq!(m.fraction(11.0, 1.0, 2.0, 2.0), 0.0);
    }
}
