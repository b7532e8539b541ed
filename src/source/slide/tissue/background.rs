//! The glass colour at every pixel of the detection view, in ln units per channel.
//!
//! Tissue only absorbs light, so glass is the slide's bright mode; but glass may be
//! tinted, the illumination uneven, the border darker. The estimate (steps in the
//! module docs of [`super`]): a reference from the brightest 1 % of pixels, glass
//! candidates of nearly its hue, per-cell estimates from the brighter half of the
//! candidates, a robustly reweighted quadratic surface through the cells, clamped to
//! the range of the glass seen, and the cell's own estimate where it agrees with the
//! surface. Nothing here looks at stained pixels: they are not candidates (chroma), and
//! pale tissue that is one loses its weight in the fit (an outlier from the surface), so no
//! stain can move the glass.

/// Side of a cell, view pixels.
const CELL: usize = 32;
/// Share of the view's pixels, brightest first, that make the first reference.
const BRIGHT_SHARE: f64 = 0.01;
/// Glass is at least this bright in every channel ...
const GLASS_MIN: f32 = 150.0;
/// ... and has at most this chroma against white (OD, ln units).
const GLASS_MAX_CHROMA: f32 = 0.25;
/// The glass assumed when the view has none.
const GLASS_DEFAULT: f32 = 245.0;
/// A glass candidate's chroma against the reference is below this (OD, ln units).
const CAND_CHROMA: f32 = 0.08;
/// ... and its density against the reference lies in this range.
const CAND_DENSITY: (f32, f32) = (-0.25, 0.4);
/// Least share of a cell's pixels that must be candidates for the cell to count.
const CELL_MIN_SHARE: f64 = 0.1;
/// A cell farther from the fitted surface than 2.5 robust standard deviations of the
/// cells' residuals loses its weight; the deviation is taken as at least this.
const FIT_SCALE_MIN: f32 = 0.01;
/// A cell keeps its own estimate where every channel is within this of the surface.
const LOCAL_TOL: f32 = 0.04;

/// `ln(v)` for `v` in 0..=255 (0 read as 0.5).
pub(super) fn ln_table() -> [f32; 256] {
    std::array::from_fn(|v| (v as f32).max(0.5).ln())
}

/// The density (mean OD) and chroma (norm of OD minus its mean) of `d`.
pub(super) fn density_chroma(d: [f32; 3]) -> (f32, f32) {
    let m = (d[0] + d[1] + d[2]) / 3.0;
    let c = ((d[0] - m).powi(2) + (d[1] - m).powi(2) + (d[2] - m).powi(2)).sqrt();
    (m, c)
}

/// The glass colour, per cell, bilinearly interpolated between cell centres.
pub(super) struct Background {
    cols: usize,
    rows: usize,
    /// ln glass per channel, per cell, row-major.
    cells: Vec<[f32; 3]>,
}

impl Background {
    /// ln glass per channel at view pixel `(x, y)`.
    pub(super) fn at(&self, x: usize, y: usize) -> [f32; 3] {
        let f = |p: usize, n: usize| {
            let t = ((p as f32 + 0.5) / CELL as f32 - 0.5).clamp(0.0, (n - 1) as f32);
            let i = (t.floor() as usize).min(n.saturating_sub(2));
            (i, (i + 1).min(n - 1), t - i as f32)
        };
        let (x0, x1, ax) = f(x, self.cols);
        let (y0, y1, ay) = f(y, self.rows);
        let c = |cx: usize, cy: usize| self.cells[cy * self.cols + cx];
        std::array::from_fn(|k| {
            let top = c(x0, y0)[k] * (1.0 - ax) + c(x1, y0)[k] * ax;
            let bot = c(x0, y1)[k] * (1.0 - ax) + c(x1, y1)[k] * ax;
            top * (1.0 - ay) + bot * ay
        })
    }

    /// Whether `p` (ln RGB) is a glass candidate against the glass `g` (ln RGB).
    pub(super) fn candidate(g: [f32; 3], p: [f32; 3]) -> bool {
        let (m, c) = density_chroma(std::array::from_fn(|k| g[k] - p[k]));
        c < CAND_CHROMA && (CAND_DENSITY.0..CAND_DENSITY.1).contains(&m)
    }
}

/// Estimate the glass of a `w x h` RGB view (`w, h > 0`).
pub(super) fn estimate(rgb: &[u8], w: usize, h: usize) -> Background {
    let ln = ln_table();
    let lnp = |i: usize| -> [f32; 3] { std::array::from_fn(|k| ln[usize::from(rgb[i * 3 + k])]) };
    let mut reference = brightest_mean(rgb, &ln);
    if !glass_like(reference) {
        // no glass on this view (a slide covered by tissue): measure against white glass
        reference = [GLASS_DEFAULT.ln(); 3];
    }
    let (cols, rows) = (w.div_ceil(CELL), h.div_ceil(CELL));
    let cell_of = |i: usize| (i / w / CELL) * cols + (i % w) / CELL;
    // pass 1: mean brightness of each cell's candidates
    let mut count = vec![0u32; cols * rows];
    let mut bright = vec![0f64; cols * rows];
    for i in 0..w * h {
        let p = lnp(i);
        if Background::candidate(reference, p) {
            let c = cell_of(i);
            count[c] += 1;
            bright[c] += f64::from(p[0] + p[1] + p[2]);
        }
    }
    // pass 2: mean colour of the candidates at least that bright
    let mut sums = vec![[0f64; 4]; cols * rows];
    for i in 0..w * h {
        let c = cell_of(i);
        if count[c] == 0 {
            continue;
        }
        let p = lnp(i);
        let b = f64::from(p[0] + p[1] + p[2]);
        if b >= bright[c] / f64::from(count[c]) - 1e-9 && Background::candidate(reference, p) {
            for k in 0..3 {
                sums[c][k] += f64::from(p[k]);
            }
            sums[c][3] += 1.0;
        }
    }
    let mut cells: Vec<Cell> = Vec::new();
    for cy in 0..rows {
        for cx in 0..cols {
            let c = cy * cols + cx;
            let area = ((w - cx * CELL).min(CELL) * (h - cy * CELL).min(CELL)) as f64;
            if f64::from(count[c]) >= CELL_MIN_SHARE * area && sums[c][3] > 0.0 {
                let n = sums[c][3];
                cells.push(Cell {
                    index: c,
                    u: norm(cx, cols),
                    v: norm(cy, rows),
                    weight: f64::from(count[c]),
                    ln: std::array::from_fn(|k| (sums[c][k] / n) as f32),
                });
            }
        }
    }
    let (fit, lo, hi) = fit_surface(&cells, reference);
    // clamped to the glass actually seen: a surface extrapolated over a slide that is
    // mostly tissue must not invent a brighter or darker glass
    let mut out: Vec<[f32; 3]> = (0..cols * rows)
        .map(|c| {
            let s = fit.eval(norm(c % cols, cols), norm(c / cols, rows));
            std::array::from_fn(|k| s[k].clamp(lo[k], hi[k]))
        })
        .collect();
    for cell in &cells {
        let s = out[cell.index];
        if (0..3).all(|k| (cell.ln[k] - s[k]).abs() < LOCAL_TOL) {
            out[cell.index] = cell.ln;
        }
    }
    Background {
        cols,
        rows,
        cells: out,
    }
}

/// Cell coordinate `i` of `n` mapped to -1..=1.
fn norm(i: usize, n: usize) -> f64 {
    if n <= 1 {
        0.0
    } else {
        2.0 * i as f64 / (n - 1) as f64 - 1.0
    }
}

/// Whether the brightest pixels can be glass: bright in every channel and at most
/// tinted (yellowish glass has a chroma of about 0.17 against white; stained tissue
/// bright enough to be the brightest thing on a slide without glass has more, or a
/// darker channel).
fn glass_like(g: [f32; 3]) -> bool {
    let (_, chroma) = density_chroma(g);
    chroma <= GLASS_MAX_CHROMA && g.iter().all(|&v| v >= GLASS_MIN.ln())
}

/// Mean ln colour of the brightest [`BRIGHT_SHARE`] of the pixels (by R + G + B).
fn brightest_mean(rgb: &[u8], ln: &[f32; 256]) -> [f32; 3] {
    let n = rgb.len() / 3;
    let mut hist = vec![0usize; 766];
    for p in rgb.chunks_exact(3) {
        hist[usize::from(p[0]) + usize::from(p[1]) + usize::from(p[2])] += 1;
    }
    let want = ((n as f64 * BRIGHT_SHARE).ceil() as usize).max(1);
    let (mut cut, mut seen) = (765usize, 0usize);
    while cut > 0 && seen + hist[cut] < want {
        seen += hist[cut];
        cut -= 1;
    }
    let mut sum = [0f64; 3];
    let mut m = 0f64;
    for p in rgb.chunks_exact(3) {
        if usize::from(p[0]) + usize::from(p[1]) + usize::from(p[2]) >= cut {
            for k in 0..3 {
                sum[k] += f64::from(ln[usize::from(p[k])]);
            }
            m += 1.0;
        }
    }
    std::array::from_fn(|k| (sum[k] / m.max(1.0)) as f32)
}

/// One cell with enough glass candidates.
struct Cell {
    index: usize,
    u: f64,
    v: f64,
    weight: f64,
    ln: [f32; 3],
}

/// `a + b u + c v + d u² + e uv + f v²` per channel.
struct Surface([[f64; 6]; 3]);

impl Surface {
    fn eval(&self, u: f64, v: f64) -> [f32; 3] {
        let b = basis(u, v);
        std::array::from_fn(|k| (0..6).map(|j| self.0[k][j] * b[j]).sum::<f64>() as f32)
    }
}

fn basis(u: f64, v: f64) -> [f64; 6] {
    [1.0, u, v, u * u, u * v, v * v]
}

/// Quadratic surface through the cells, robustly reweighted so that cells far from it
/// (pale tissue that passed as a candidate, a darker border) lose their weight. Fewer than 12 cells: a constant; none:
/// the reference. Also returns the per-channel range of the cells that kept their weight.
fn fit_surface(cells: &[Cell], reference: [f32; 3]) -> (Surface, [f32; 3], [f32; 3]) {
    let constant = |c: [f64; 3]| {
        Surface(std::array::from_fn(|k| {
            let mut s = [0.0; 6];
            s[0] = c[k];
            s
        }))
    };
    if cells.is_empty() {
        return (constant(reference.map(f64::from)), reference, reference);
    }
    let terms = if cells.len() >= 12 { 6 } else { 1 };
    let mut weights: Vec<f64> = cells.iter().map(|c| c.weight).collect();
    let mut surface = constant([0.0; 3]);
    for _ in 0..6 {
        surface = Surface(std::array::from_fn(|k| {
            weighted_lsq(cells, &weights, terms, |c| f64::from(c.ln[k]))
        }));
        let resid: Vec<f32> = cells
            .iter()
            .map(|c| {
                let s = surface.eval(c.u, c.v);
                (0..3).map(|k| c.ln[k] - s[k]).sum::<f32>() / 3.0
            })
            .collect();
        // robust scale of the residuals (1.4826 x their median absolute value)
        let mut abs: Vec<f32> = resid.iter().map(|r| r.abs()).collect();
        abs.sort_unstable_by(f32::total_cmp);
        let scale = (1.4826 * abs[abs.len() / 2]).max(FIT_SCALE_MIN);
        for ((w, c), r) in weights.iter_mut().zip(cells).zip(&resid) {
            *w = if r.abs() > 2.5 * scale {
                c.weight * 1e-3
            } else {
                c.weight
            };
        }
    }
    let (mut lo, mut hi) = ([f32::MAX; 3], [f32::MIN; 3]);
    for (c, &w) in cells.iter().zip(&weights) {
        if w == c.weight {
            for k in 0..3 {
                lo[k] = lo[k].min(c.ln[k]);
                hi[k] = hi[k].max(c.ln[k]);
            }
        }
    }
    if lo[0] > hi[0] {
        // every cell lost its weight: the brightest cell's glass
        let best = cells
            .iter()
            .max_by(|a, b| (a.ln[0] + a.ln[1] + a.ln[2]).total_cmp(&(b.ln[0] + b.ln[1] + b.ln[2])))
            .map_or(reference, |c| c.ln);
        return (constant(best.map(f64::from)), best, best);
    }
    (surface, lo, hi)
}

/// Weighted least squares of `y(cell)` on the first `terms` basis functions, by the
/// normal equations (a touch of ridge keeps them solvable).
fn weighted_lsq(
    cells: &[Cell],
    weights: &[f64],
    terms: usize,
    y: impl Fn(&Cell) -> f64,
) -> [f64; 6] {
    let mut a = [[0.0f64; 7]; 6];
    for (c, &w) in cells.iter().zip(weights) {
        let b = basis(c.u, c.v);
        let yv = y(c);
        for i in 0..terms {
            for j in 0..terms {
                a[i][j] += w * b[i] * b[j];
            }
            a[i][6] += w * b[i] * yv;
        }
    }
    let scale = a[0][0].max(1e-12);
    for (i, row) in a.iter_mut().enumerate().take(terms) {
        row[i] += 1e-6 * scale;
    }
    // Gaussian elimination with partial pivoting on the terms x terms system
    for col in 0..terms {
        let piv = (col..terms)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            continue;
        }
        let pivot = a[col];
        for (r, row) in a.iter_mut().enumerate().take(terms) {
            if r != col {
                let f = row[col] / d;
                for (x, p) in row.iter_mut().zip(pivot.iter()).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut out = [0.0; 6];
    for i in 0..terms {
        out[i] = if a[i][i].abs() < 1e-300 {
            0.0
        } else {
            a[i][6] / a[i][i]
        };
    }
    out
}
