//! Linear-time image operations of the detector: a 3x3 box blur, binary dilation and
//! erosion by a square (running counts, so the cost does not grow with the square),
//! and connected components (an explicit stack, 4-connected) to fill holes and drop
//! specks.

use super::{ARTIFACT, BACKGROUND, TISSUE};

/// 3x3 mean of an RGB image, borders replicated, rounded.
pub(super) fn box3(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut rows = vec![0u16; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (a, b) = (x.saturating_sub(1), (x + 1).min(w - 1));
            for k in 0..3 {
                let v = |xx: usize| u16::from(rgb[(y * w + xx) * 3 + k]);
                rows[(y * w + x) * 3 + k] = v(a) + v(x) + v(b);
            }
        }
    }
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        let (a, b) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for i in 0..w * 3 {
            let s = rows[a * w * 3 + i] + rows[y * w * 3 + i] + rows[b * w * 3 + i];
            out[y * w * 3 + i] = ((s + 4) / 9) as u8;
        }
    }
    out
}

/// Binary dilation by a `(2r+1)` square.
pub(super) fn dilate(m: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let pass = |src: &[u8], horizontal: bool| window_any(src, w, h, r, horizontal);
    pass(&pass(m, true), false)
}

/// Binary erosion by a `(2r+1)` square; outside the image counts as set, so tissue
/// touching the edge is not eroded from it.
pub(super) fn erode(m: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let inv: Vec<u8> = m.iter().map(|&v| v ^ 1).collect();
    dilate(&inv, w, h, r).iter().map(|&v| v ^ 1).collect()
}

/// 1 where any pixel within `r` along one axis is set (running count).
fn window_any(src: &[u8], w: usize, h: usize, r: usize, horizontal: bool) -> Vec<u8> {
    let (n, lines) = if horizontal { (w, h) } else { (h, w) };
    let at = |line: usize, i: usize| {
        if horizontal {
            line * w + i
        } else {
            i * w + line
        }
    };
    let mut out = vec![0u8; w * h];
    for line in 0..lines {
        let mut count = 0usize;
        for i in 0..r.min(n) {
            count += usize::from(src[at(line, i)]);
        }
        for i in 0..n {
            if i + r < n {
                count += usize::from(src[at(line, i + r)]);
            }
            if i > r {
                count -= usize::from(src[at(line, i - r - 1)]);
            }
            out[at(line, i)] = u8::from(count > 0);
        }
    }
    out
}

/// The pixels of `weak` 8-connected to a pixel of `seed` (`seed` within `weak`).
pub(super) fn grow(seed: &[u8], weak: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    let mut stack: Vec<usize> = (0..w * h).filter(|&i| seed[i] == 1).collect();
    for &i in &stack {
        out[i] = 1;
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        for yy in y.saturating_sub(1)..(y + 2).min(h) {
            for xx in x.saturating_sub(1)..(x + 2).min(w) {
                let j = yy * w + xx;
                if out[j] == 0 && weak[j] == 1 {
                    out[j] = 1;
                    stack.push(j);
                }
            }
        }
    }
    out
}

/// One 4-connected component of pixels labelled `label`, from `start`, marking `seen`.
/// Returns its pixels, whether it touches the image edge, and the labels next to it.
fn component(
    labels: &[u8],
    w: usize,
    h: usize,
    start: usize,
    seen: &mut [bool],
    stack: &mut Vec<usize>,
) -> (Vec<usize>, bool, [bool; 3]) {
    let label = labels[start];
    let mut pixels = Vec::new();
    let mut edge = false;
    let mut next_to = [false; 3];
    stack.clear();
    stack.push(start);
    seen[start] = true;
    while let Some(i) = stack.pop() {
        pixels.push(i);
        let (x, y) = (i % w, i / w);
        edge |= x == 0 || y == 0 || x + 1 == w || y + 1 == h;
        let mut visit = |j: usize| {
            if labels[j] == label {
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            } else {
                next_to[usize::from(labels[j]).min(2)] = true;
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < w {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - w);
        }
        if y + 1 < h {
            visit(i + w);
        }
    }
    (pixels, edge, next_to)
}

/// Background components smaller than `max_area` pixels, not touching the edge and
/// bordered by tissue only, become tissue.
pub(super) fn fill_holes(labels: &mut [u8], w: usize, h: usize, max_area: usize) {
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    for i in 0..w * h {
        if labels[i] != BACKGROUND || seen[i] {
            continue;
        }
        let (px, edge, next_to) = component(labels, w, h, i, &mut seen, &mut stack);
        if !edge && px.len() < max_area && !next_to[usize::from(ARTIFACT)] {
            for p in px {
                labels[p] = TISSUE;
            }
        }
    }
}

/// Components of `label` smaller than `min_area` pixels become background.
pub(super) fn drop_specks(labels: &mut [u8], w: usize, h: usize, label: u8, min_area: usize) {
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    for i in 0..w * h {
        if labels[i] != label || seen[i] {
            continue;
        }
        let (px, _, _) = component(labels, w, h, i, &mut seen, &mut stack);
        if px.len() < min_area {
            for p in px {
                labels[p] = BACKGROUND;
            }
        }
    }
}
