//! Layer normalization as `torch.nn.LayerNorm` computes it (the mean, then the
//! variance of the centred values), with 16 partial sums so that it vectorizes.

use super::*;

/// Layer normalization over the last dimension, as `torch.nn.LayerNorm`
/// computes it: the mean first, then the variance of the centred values.
///
/// candle's fused layer norm sums each row in one sequential chain, which does
/// not vectorize (2% of image-embedding time), and takes the variance as
/// `E[x²] − mean²`, which loses digits when the mean is large next to the spread.
/// Here both passes keep 16 partial sums. Tensors other than contiguous f32
/// CPU tensors go through candle's layer norm.
pub(crate) struct Norm {
    inner: candle_nn::LayerNorm,
    /// The weight and bias as f32 values, when the layer's parameters are f32
    /// CPU tensors.
    pub(crate) params: Option<(Vec<f32>, Vec<f32>)>,
}

impl Norm {
    /// Wraps a layer norm with a bias, which subtracts the mean (CLIP's).
    pub(crate) fn new(inner: candle_nn::LayerNorm) -> candle_core::Result<Self> {
        let w = inner.weight();
        let params = match inner.bias() {
            Some(b)
                if inner.remove_mean()
                    && w.device().is_cpu()
                    && w.dtype() == DType::F32
                    && b.dtype() == DType::F32
                    && w.dims().len() == 1
                    && b.dims() == w.dims() =>
            {
                Some((w.to_vec1()?, b.to_vec1()?))
            }
            _ => None,
        };
        Ok(Self { inner, params })
    }

    /// Normalizes each row of `xs` (the last dimension).
    pub(crate) fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        use candle_nn::Module;
        match &self.params {
            Some((w, _))
                if xs.device().is_cpu()
                    && xs.dtype() == DType::F32
                    && xs.dims().last() == Some(&w.len()) =>
            {
                xs.contiguous()?.apply_op1_no_bwd(self)
            }
            _ => self.inner.forward(xs),
        }
    }
}

impl CustomOp1 for Norm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32("layer-norm", s, l)?;
        let Some((w, b)) = &self.params else {
            candle_core::bail!("layer-norm: parameters are not f32 CPU tensors");
        };
        let eps = self.inner.eps() as f32;
        let mut out = vec![0f32; src.len()];
        // 32 rows per task: long enough to amortize a task, and a 77-token
        // prompt still spreads over the cores.
        let chunk = 32 * w.len();
        out.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .with_min_len(min_len())
            .for_each(|(o, i)| layer_norm_rows(i, o, w, b, eps));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

multiversion! {
    /// [`Norm`] on whole rows of `w.len()` values, vectorized for the CPU.
    fn layer_norm_rows(src: &[f32], dst: &mut [f32], w: &[f32], b: &[f32], eps: f32)
        => layer_norm_rows_generic
}

#[inline(always)]
fn layer_norm_rows_generic(src: &[f32], dst: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    for (x, y) in src.chunks_exact(d).zip(dst.chunks_exact_mut(d)) {
        let mean = lane_sum(x, |v| v) / d as f32;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / d as f32;
        let inv_std = 1.0 / (var + eps).sqrt();
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = (x - mean) * inv_std * w + b;
        }
    }
}

/// `Σ f(x)` over `xs` with [`LANES`] partial sums, so that the loop vectorizes.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}
