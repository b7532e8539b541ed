//! QuickGELU (`x * sigmoid(1.702 x)`, CLIP's activation) in one vectorized pass,
//! with the same formula and rounding steps as candle's op-by-op path.

use super::*;

/// `x * sigmoid(1.702 x)` in one pass over f32 CPU tensors; other tensors go
/// through candle's ops. Same formula and rounding steps as candle's sigmoid path.
pub(crate) fn quick_gelu(xs: &Tensor) -> candle_core::Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&QuickGelu)
    } else {
        xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?
    }
}

/// The values of a contiguous f32 CPU tensor, for the kernels here.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: expected f32");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    Ok(&data[start..end])
}

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32("quick-gelu", s, l)?;
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(1 << 14)
            .zip(src.par_chunks(1 << 14))
            .with_min_len(min_len())
            .for_each(|(o, i)| quick_gelu_slice(i, o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

multiversion! {
    /// `dst[i] = x * sigmoid(1.702 x)` for `x = src[i]`, vectorized for the CPU.
    fn quick_gelu_slice(src: &[f32], dst: &mut [f32]) => quick_gelu_generic
}

/// Plain arithmetic only, so the loop vectorizes for the caller's target features.
#[inline(always)]
fn quick_gelu_generic(src: &[f32], dst: &mut [f32]) {
    for (o, &x) in dst.iter_mut().zip(src) {
        *o = quick_gelu_one(x);
    }
}

#[inline(always)]
fn quick_gelu_one(x: f32) -> f32 {
    x * (1.0 / (1.0 + exp(-(x * 1.702))))
}

multiversion! {
    /// [`quick_gelu_slice`] in place.
    pub(crate) fn quick_gelu_in_place(xs: &mut [f32]) => quick_gelu_in_place_generic
}

#[inline(always)]
fn quick_gelu_in_place_generic(xs: &mut [f32]) {
    for x in xs {
        *x = quick_gelu_one(*x);
    }
}

multiversion! {
    /// `x = quick_gelu(x + bias)` on whole rows of `bias.len()` values.
    pub(crate) fn quick_gelu_bias_in_place(xs: &mut [f32], bias: &[f32]) => quick_gelu_bias_in_place_generic
}

#[inline(always)]
fn quick_gelu_bias_in_place_generic(xs: &mut [f32], bias: &[f32]) {
    for row in xs.chunks_exact_mut(bias.len()) {
        for (x, &b) in row.iter_mut().zip(bias) {
            *x = quick_gelu_one(*x + b);
        }
    }
}

/// `e^x` in f32 within 2 ulp of `f32::exp` (Cephes' `expf`: `x = n ln 2 + r`, a
/// degree-6 polynomial for `e^r`, `2^n` built in the exponent bits). libm's scalar
/// `expf` took most of the time of QuickGELU, which runs on 2.5M values per layer
/// for a batch of 16 images. Inputs are clamped to where `e^x` is a normal f32:
/// below -87.3 the result is ~1e-38 instead of smaller, above 88.3 it stays at
/// 2.1e38 instead of overflowing, which for a sigmoid makes no difference.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n + 127 + 2^23 holds n + 127 (1..=254) in its low mantissa bits; shifted up
    // they become the exponent of 2^n. (An `as i32` cast would not vectorize.)
    er * f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}
