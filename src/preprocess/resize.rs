//! A port of Pillow's `ImagingResample` for 8-bit RGB with the bicubic filter,
//! antialiased and fixed-point, so resized pixels equal Pillow's.

use super::*;

/// `bicubic_filter` support.
const BICUBIC_SUPPORT: f64 = 2.0;
/// `PRECISION_BITS`: 32 - 8 - 2 fractional bits for the 8-bit fixed-point passes.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Rounding offset every accumulator starts from (`1 << (PRECISION_BITS - 1)`).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// `bicubic_filter` with a = -0.5, evaluated in the same operation order as the C.
#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// `clip8`: drop the fraction bits and clamp (Pillow's lookup table does the same).
#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Fixed-point filter taps for a range of output positions along one axis.
struct AxisCoeffs {
    /// Stride of `weights`: the maximum tap count.
    ksize: usize,
    /// (first input index, tap count) per output position.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output position, zero beyond its tap count.
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for outputs `window` of an `in_size` ->
/// `out_size` resample over the full box (0, in_size). Each output's taps depend only on its
/// own index, so computing a sub-range gives exactly the rows of the full table.
fn precompute_coeffs(in_size: u32, out_size: u32, window: Range<u32>) -> AxisCoeffs {
    // The box edges are C floats in Pillow.
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    // Antialiasing: when downscaling, stretch the filter over `scale` input pixels.
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let n = window.len();
    let mut bounds = Vec::with_capacity(n);
    let mut weights = vec![0i32; n * ksize];
    let mut k = vec![0f64; ksize];
    for (xx, kw) in window.zip(weights.chunks_exact_mut(ksize)) {
        let center = f64::from(in0) + (f64::from(xx) + 0.5) * scale;
        // C `(int)` truncates toward zero, as `as i32` does.
        let xmin = ((center - support + 0.5) as i32).max(0);
        let xmax = ((center + support + 0.5) as i32).min(in_size as i32) - xmin;
        let taps = xmax.max(0) as usize;
        debug_assert!(taps <= ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(taps) {
            let w = bicubic((f64::from(x as i32 + xmin) - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (kx, out) in k.iter().zip(kw.iter_mut()).take(taps) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            // normalize_coeffs_8bpc: round half away from zero, then truncate toward zero.
            *out = if w < 0.0 {
                (-0.5 + w * f64::from(1u32 << PRECISION_BITS)) as i32
            } else {
                (0.5 + w * f64::from(1u32 << PRECISION_BITS)) as i32
            };
        }
        bounds.push((xmin as usize, taps));
    }
    AxisCoeffs {
        ksize,
        bounds,
        weights,
    }
}

/// `ImagingResampleHorizontal_8bpc` (3 bands) over rows `rows` of a packed RGB buffer of
/// `src_w` pixels per row whose first column is source column `col_base`.
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    col_base: usize,
    rows: Range<usize>,
    c: &AxisCoeffs,
) -> Vec<u8> {
    let row_out = c.bounds.len() * 3;
    let mut out = vec![0u8; rows.len() * row_out];
    if row_out == 0 {
        return out;
    }
    let stride = src_w * 3;
    for (dst, y) in out.chunks_exact_mut(row_out).zip(rows) {
        let line = &src[y * stride..(y + 1) * stride];
        for ((px, &(xmin, n)), k) in dst
            .chunks_exact_mut(3)
            .zip(&c.bounds)
            .zip(c.weights.chunks_exact(c.ksize))
        {
            let x0 = xmin - col_base;
            let taps = &line[x0 * 3..(x0 + n) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &w) in taps.chunks_exact(3).zip(&k[..n]) {
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
    out
}

/// `ImagingResampleVertical_8bpc`. Every byte of a row uses the same taps, so rows are
/// accumulated whole (integer sums are exact in any order, and the compiler vectorises this).
/// Source row `r` starts at `src[(r - row_base) * stride + col_off]` and is `row_bytes` long.
fn vertical_pass(
    src: &[u8],
    stride: usize,
    col_off: usize,
    row_bytes: usize,
    row_base: usize,
    c: &AxisCoeffs,
) -> Vec<u8> {
    let mut out = vec![0u8; c.bounds.len() * row_bytes];
    if row_bytes == 0 {
        return out;
    }
    let mut acc = vec![0i32; row_bytes];
    for (dst, (&(ymin, n), k)) in out
        .chunks_exact_mut(row_bytes)
        .zip(c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)))
    {
        acc.fill(HALF);
        for (t, &w) in k[..n].iter().enumerate() {
            let start = (ymin + t - row_base) * stride + col_off;
            let line = &src[start..start + row_bytes];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in dst.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// The `xs` x `ys` window of `img` resized to `out_w` x `out_h`, computed without the rest.
///
/// Follows `ImagingResampleInner`: each pass runs only when its dimension changes and the
/// intermediate is rounded to u8. The pass order matters for the result: Pillow 13 runs the
/// vertical pass first when the height shrinks by more than twice as many pixels as the
/// width does, and otherwise the horizontal pass first (over just the rows the vertical pass
/// reads). Each pass here also skips the rows/columns the window does not need, which leaves
/// every computed value unchanged.
pub(crate) fn resize_window(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    xs: Range<u32>,
    ys: Range<u32>,
) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let src = img.as_raw().as_slice();
    let (win_w, win_h) = (xs.len(), ys.len());
    let in_stride = in_w as usize * 3;
    let data = match (out_w != in_w, out_h != in_h) {
        (false, false) => {
            let mut v = Vec::with_capacity(win_w * win_h * 3);
            for y in ys.clone() {
                let start = y as usize * in_stride + xs.start as usize * 3;
                v.extend_from_slice(&src[start..start + win_w * 3]);
            }
            v
        }
        (true, false) => {
            let hc = precompute_coeffs(in_w, out_w, xs);
            horizontal_pass(
                src,
                in_w as usize,
                0,
                ys.start as usize..ys.end as usize,
                &hc,
            )
        }
        (false, true) => {
            let vc = precompute_coeffs(in_h, out_h, ys);
            vertical_pass(src, in_stride, xs.start as usize * 3, win_w * 3, 0, &vc)
        }
        (true, true) => {
            let vc = precompute_coeffs(in_h, out_h, ys);
            let hc = precompute_coeffs(in_w, out_w, xs);
            // `horizontal_first` in Pillow 13's ImagingResampleInner (C int arithmetic).
            let shrink_h = i64::from(in_h) - i64::from(out_h);
            let shrink_w = i64::from(in_w) - i64::from(out_w);
            if shrink_h > 0 && shrink_h > shrink_w * 2 {
                // Vertical first, over just the source columns the horizontal pass reads.
                let first = hc.bounds.first().map_or(0, |b| b.0);
                let last = hc.bounds.last().map_or(0, |b| b.0 + b.1);
                let tmp = vertical_pass(src, in_stride, first * 3, (last - first) * 3, 0, &vc);
                horizontal_pass(&tmp, last - first, first, 0..win_h, &hc)
            } else {
                // Horizontal first, over just the source rows the vertical pass reads.
                let first = vc.bounds.first().map_or(0, |b| b.0);
                let last = vc.bounds.last().map_or(0, |b| b.0 + b.1);
                let tmp = horizontal_pass(src, in_w as usize, 0, first..last, &hc);
                vertical_pass(&tmp, win_w * 3, 0, win_w * 3, first, &vc)
            }
        }
    };
    RgbImage::from_raw(win_w as u32, win_h as u32, data).expect("window buffer size")
}

/// Pillow 13 `Image.resize((width, height), Image.BICUBIC)` for an RGB image, bit-exact.
pub(crate) fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_window(img, width, height, 0..width, 0..height)
}

/// (height, width) after `get_resize_output_image_size(size=shortest_edge,
/// default_to_square=False)` from transformers' `image_transforms.py`.
pub(crate) fn resize_output_size(width: u32, height: u32, shortest_edge: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python: int(size * long / short); int * int is exact, `/` is a correctly rounded f64
    // division and int() truncates.
    let new_long = (f64::from(shortest_edge) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (new_long, shortest_edge)
    } else {
        (shortest_edge, new_long)
    }
}
