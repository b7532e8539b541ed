//! Per-pixel rules: optical density against the local glass, then tissue (stain-coloured
//! absorption above the glass's noise) and artifacts (ink hues, neutral dark matter).
//!
//! `d = ln(glass) - ln(pixel)` per channel (R, G, B). Reference absorption vectors
//! (Ruifrok & Johnston 2001, as `skimage.color` uses them): hematoxylin (0.65, 0.70,
//! 0.29), eosin (0.07, 0.99, 0.11), DAB (0.27, 0.57, 0.78). In all three green absorbs
//! more than red, and the chroma is more than half the density; the ink rules below
//! sit outside those cones with a margin.

use super::background::{density_chroma, ln_table, Background};

/// The chroma threshold is this many times the first quartile of the chroma of
/// glass-like pixels (about 3.5 sigma of Rayleigh-distributed noise; the quartile stays
/// on glass while up to three quarters of those pixels are pale tissue) ...
const NOISE_FACTOR: f32 = 4.5;
/// ... within these bounds (OD, ln units).
const CHROMA_BOUNDS: (f32, f32) = (0.02, 0.05);
/// Tissue is not brighter than glass by more than this (mean OD).
const BRIGHTER_TOL: f32 = -0.03;
/// Neutral dark matter: density above this ...
const NEUTRAL_DENSITY: f32 = 0.3;
/// ... with a chroma under this share of the density (a hematoxylin–DAB mixture, the
/// most neutral stain, has 0.22).
const NEUTRAL_SHARE: f32 = 0.12;
/// Tissue has a density of at least this share of its chroma (eosin, the most
/// chromatic stain, has 0.53); JPEG's chroma bleeding next to stained edges has
/// chroma without density.
const DENSITY_SHARE: f32 = 0.3;

/// Raw per-pixel decisions, before morphology (0/1 per pixel).
pub(super) struct Raw {
    pub(super) tissue: Vec<u8>,
    /// [`artifact`] holds.
    pub(super) artifact: Vec<u8>,
    /// [`ink_over_tissue`] or [`artifact`] holds: artifact where connected to one.
    pub(super) weak_artifact: Vec<u8>,
    pub(super) chroma_threshold: f32,
}

/// Which artifact, if any, an absorption `d` looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Artifact {
    BlueInk,
    GreenInk,
    RedInk,
    /// Black ink, dark debris, edges and borders: dense and colourless.
    Neutral,
}

/// The artifact rule on one absorption vector.
pub(super) fn artifact(d: [f32; 3]) -> Option<Artifact> {
    let [r, g, b] = d;
    let (m, c) = density_chroma(d);
    if m > NEUTRAL_DENSITY && c < NEUTRAL_SHARE * m {
        return Some(Artifact::Neutral);
    }
    // blue/cyan marker: red absorbed clearly more than green, blue spared
    let cyan = r >= 0.25 && r >= 1.15 * g && b <= 0.5 * r;
    // pure blue marker: red and green absorbed, blue hardly
    let blue = r.min(g) >= 0.6 && b <= 0.25 * r.min(g);
    if cyan || blue {
        return Some(Artifact::BlueInk);
    }
    if r.max(b) >= 0.25 && g <= 0.7 * r.min(b) {
        return Some(Artifact::GreenInk);
    }
    if g.min(b) >= 0.7 && r <= 0.3 * g.min(b) && b >= 0.6 * g {
        return Some(Artifact::RedInk);
    }
    None
}

/// Ink over tissue: the ink's absorption plus the stain's. Looser than [`artifact`],
/// and only taken where connected to pixels [`artifact`] calls ink, so that the stroke
/// is followed across the tissue but never started inside it.
pub(super) fn ink_over_tissue(d: [f32; 3]) -> bool {
    let [r, g, b] = d;
    let (m, c) = density_chroma(d);
    // blue: red absorbed about as much as green (no H&E mixture reaches pure
    // hematoxylin's 0.93), blue spared, dense
    let blue =
        (r >= 0.98 * g && b <= 0.5 * r && r >= 0.5) || (r >= 0.85 * g && b <= 0.45 * r && r >= 0.8);
    let green = g <= 1.1 * r.min(b) && r.min(b) >= 0.5;
    let red = r <= 0.45 * g.min(b) && b >= 0.5 * g && g.min(b) >= 0.6;
    let black = m >= 0.8 && r.min(g).min(b) >= 0.6 && c < 0.35 * m;
    blue || green || red || black
}

/// The tissue rule on one absorption vector, for chroma threshold `t`.
pub(super) fn tissue(d: [f32; 3], t: f32) -> bool {
    let (m, c) = density_chroma(d);
    c > t && m > BRIGHTER_TOL && c >= NEUTRAL_SHARE * m && m >= DENSITY_SHARE * c
}

/// Apply both rules to every pixel of the `w x h` view.
pub(super) fn classify(rgb: &[u8], w: usize, h: usize, bg: &Background) -> Raw {
    let ln = ln_table();
    let absorb = |x: usize, y: usize| -> [f32; 3] {
        let g = bg.at(x, y);
        let i = (y * w + x) * 3;
        std::array::from_fn(|k| g[k] - ln[usize::from(rgb[i + k])])
    };
    // the glass's own chroma noise: first quartile over glass-like pixels, 0.001 OD bins
    let mut hist = [0u64; 201];
    for y in 0..h {
        for x in 0..w {
            let d = absorb(x, y);
            let (m, c) = density_chroma(d);
            if m.abs() < 0.1 && c < 0.2 {
                hist[((c * 1000.0) as usize).min(200)] += 1;
            }
        }
    }
    let total: u64 = hist.iter().sum();
    let mut acc = 0u64;
    let mut quartile = 0usize;
    for (i, &n) in hist.iter().enumerate() {
        acc += n;
        if 4 * acc >= total {
            quartile = i;
            break;
        }
    }
    let t =
        (NOISE_FACTOR * (quartile as f32 + 0.5) / 1000.0).clamp(CHROMA_BOUNDS.0, CHROMA_BOUNDS.1);
    let mut tissue_px = vec![0u8; w * h];
    let mut artifact_px = vec![0u8; w * h];
    let mut weak_px = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let d = absorb(x, y);
            let i = y * w + x;
            tissue_px[i] = u8::from(tissue(d, t));
            artifact_px[i] = u8::from(artifact(d).is_some());
            weak_px[i] = artifact_px[i] | u8::from(ink_over_tissue(d));
        }
    }
    Raw {
        tissue: tissue_px,
        artifact: artifact_px,
        weak_artifact: weak_px,
        chroma_threshold: t,
    }
}
