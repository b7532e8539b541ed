//! Retrieval vector math: the bottom floor that every score goes through.
//!
//! - [`dot`] and [`dot_rows`]: the one dot product (and its batched form for many
//!   queries over a block of rows), with the same arithmetic in the same order on
//!   every CPU (`simd.rs`, which also holds the run-time SIMD dispatch the model's
//!   kernels use);
//! - [`combine`]: weighted query terms as rclip combines them (each term
//!   normalised, summed with its weight, the sum normalised);
//! - [`ensemble`]: CLIP's prompt ensemble (the mean of the normalised template
//!   embeddings, normalised);
//! - [`round_score`]: a cosine as every face prints it, 6 decimals.
//!
//! The index, queries, evaluation and `plip serve` all use these; none computes
//! them on its own.

#[macro_use]
pub(crate) mod simd;

pub(crate) use simd::{dot, dot_portable, dot_rows, LANES};

/// Why vectors could not be combined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum VectorError {
    /// There was nothing to combine.
    #[error("nothing to evaluate: {0} is empty")]
    Empty(&'static str),
    /// A row's length differs from the first row's.
    #[error("{what} {index}: embedding dimension {got}, expected {expected}")]
    Dimension {
        what: &'static str,
        index: usize,
        expected: usize,
        got: usize,
    },
    /// A row holds NaN or infinity.
    #[error("{what} {index}: embedding contains NaN or infinity")]
    NonFinite { what: &'static str, index: usize },
    /// A row (or the combination) is all zeros.
    #[error("{what} {index}: embedding is all zeros and cannot be normalised")]
    ZeroNorm { what: &'static str, index: usize },
    /// The weighted terms sum to zero.
    #[error("the query terms cancel out (their weighted sum is zero)")]
    Cancelled,
    /// A query term's embedding is all zeros.
    #[error("a query term has a zero embedding")]
    ZeroTerm,
}

/// A cosine score as `plip search --json`, the Python API and `plip serve` give
/// it: rounded to 6 decimals.
pub(crate) fn round_score(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

/// Checks that every row has `dim` finite values.
pub(crate) fn check_rows<R: AsRef<[f32]>>(
    what: &'static str,
    rows: &[R],
    dim: usize,
) -> Result<(), VectorError> {
    for (index, r) in rows.iter().enumerate() {
        let r = r.as_ref();
        if r.len() != dim {
            return Err(VectorError::Dimension {
                what,
                index,
                expected: dim,
                got: r.len(),
            });
        }
        if !r.iter().all(|x| x.is_finite()) {
            return Err(VectorError::NonFinite { what, index });
        }
    }
    Ok(())
}

/// Weighted combination as rclip does it: normalise each term's embedding, sum them
/// with their weights (in f64), normalise the sum.
pub(crate) fn combine(terms: &[(f32, Vec<f32>)]) -> Result<Vec<f32>, VectorError> {
    let dim = terms.first().map(|t| t.1.len()).unwrap_or(0);
    let mut sum = vec![0f64; dim];
    for (w, v) in terms {
        let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if n == 0.0 {
            return Err(VectorError::ZeroTerm);
        }
        for (s, &x) in sum.iter_mut().zip(v) {
            *s += *w as f64 * x as f64 / n;
        }
    }
    let n = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    if n.is_nan() || n <= 1e-12 {
        return Err(VectorError::Cancelled);
    }
    Ok(sum.iter().map(|x| (x / n) as f32).collect())
}

/// CLIP's prompt ensemble: the mean of the L2-normalised template embeddings,
/// L2-normalised again (computed in `f64`). Rows are normalised here, so raw
/// embeddings work too.
pub(crate) fn ensemble<R: AsRef<[f32]>>(
    template_embeddings: &[R],
) -> Result<Vec<f32>, VectorError> {
    let first = template_embeddings
        .first()
        .ok_or(VectorError::Empty("template embeddings"))?;
    let dim = first.as_ref().len();
    check_rows("template", template_embeddings, dim)?;
    let mut sum = vec![0f64; dim];
    for (index, row) in template_embeddings.iter().enumerate() {
        let row = row.as_ref();
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(VectorError::ZeroNorm {
                what: "template",
                index,
            });
        }
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += x as f64 / norm;
        }
    }
    let t = template_embeddings.len() as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / t).collect();
    let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(VectorError::ZeroNorm {
            what: "ensemble of templates",
            index: 0,
        });
    }
    Ok(mean.iter().map(|x| (x / norm) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_to_six_decimals() {
        assert_eq!(round_score(0.123_456_78), 0.123457);
        assert_eq!(round_score(-0.5), -0.5);
    }

    #[test]
    fn combine_normalises_terms_then_the_sum() {
        let q = combine(&[(1.0, vec![2.0, 0.0]), (1.0, vec![0.0, 5.0])]).unwrap();
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!((q[0] - s).abs() < 1e-7 && (q[1] - s).abs() < 1e-7);
        assert_eq!(
            combine(&[(1.0, vec![1.0, 0.0]), (-1.0, vec![3.0, 0.0])]),
            Err(VectorError::Cancelled)
        );
        assert_eq!(
            combine(&[(1.0, vec![0.0, 0.0])]),
            Err(VectorError::ZeroTerm)
        );
    }
}
