//! Cosine distance and score for unit vectors, as hnsw_rs builds with it and as
//! plip reports it. Scores come from the one dot product in `crate::vectors`.

use super::*;

/// Cosine distance for unit vectors: `1 - dot`, clamped to `[0, 2]`.
///
/// Unlike `anndists::DistDot` it never asserts (identical vectors can have a
/// dot product slightly above 1) and never returns NaN (NaN maps to 2, the
/// largest distance): `hnsw_rs` panics on NaN distances.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnitCosine;

impl Distance<f32> for UnitCosine {
    #[inline(always)]
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        let d = 1.0 - dot(va, vb);
        if d >= 0.0 {
            d.min(2.0)
        } else if d < 0.0 {
            0.0
        } else {
            2.0
        }
    }
}

/// Score reported for a [`UnitCosine`] distance: `1 - d`, the dot product
/// clamped to `[-1, 1]` (bit-exact for dot >= 0.5, by Sterbenz' lemma).
#[inline]
pub(crate) fn score_from_distance(d: f32) -> f32 {
    1.0 - d
}

/// Score of a raw dot product, `None` for NaN.
#[inline]
pub(crate) fn score_from_dot(dot: f32) -> Option<f32> {
    if dot.is_nan() {
        None
    } else {
        Some(score_from_distance((1.0 - dot).clamp(0.0, 2.0)))
    }
}
