//! bf16 dense layers: weights stored as bf16, activations rounded to bf16 as
//! each layer reads them, products accumulated in f32.
//!
//! This is the `--precision bf16` path. On CPUs with AVX512_BF16 one
//! `vdpbf16ps` does 32 multiply-adds (16 lanes × a pair of bf16), twice an f32
//! FMA, and the weights take half the memory and bandwidth. Everything else
//! (layer norm, softmax, attention, the residual stream, the final
//! projections) stays f32, as mixed-precision inference does; only the inputs
//! of the dense layers lose precision, to 8 significant bits, each rounded to
//! nearest even.
//!
//! The layout follows the f32 text kernels ([`super::pack_panels`]): panels of
//! [`PANEL`] output features, but each element is a `u32` holding the bf16
//! weights of two consecutive input features (low half the even one), the
//! operand layout of `vdpbf16ps`. A row of activations becomes `k / 2` such
//! pairs, and the kernel broadcasts one pair against four panel registers.
//!
//! [`Precision::Bf16`] is only offered where [`bf16_supported`] says the CPU
//! can run it fast; the portable fallback below computes the same function up
//! to the order of f32 additions (for tests on any machine), slowly.

use super::*;

/// The arithmetic of the model's dense layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 weights and activations (the reference's arithmetic).
    #[default]
    F32,
    /// bf16 weights and dense-layer inputs, f32 accumulation; needs AVX512_BF16.
    Bf16,
}

impl Precision {
    /// The name used on the command line and in the index: `f32` or `bf16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Whether this CPU can run the precision at speed; for `bf16`, an error
    /// that says what is missing and what to use instead.
    pub fn check_supported(self) -> Result<(), UnsupportedPrecision> {
        match self {
            Precision::F32 => Ok(()),
            Precision::Bf16 if bf16_supported() || super::auto::portable_bf16_forced() => Ok(()),
            Precision::Bf16 => Err(UnsupportedPrecision),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision {s:?}: use f32 or bf16")),
        }
    }
}

/// `bf16` was asked for on a CPU without bf16 dot products.
#[derive(Debug, thiserror::Error)]
#[error(
    "--precision bf16 needs a CPU with AVX512_BF16 (bf16 dot products: Intel Cooper Lake \
     or Sapphire Rapids and later, AMD Zen 4 and later), and this one has none; \
     use --precision f32, or auto (the default), which picks f32 here"
)]
pub struct UnsupportedPrecision;

/// Whether the CPU has the instructions of the bf16 kernel (`vdpbf16ps` and
/// `vcvtne2ps2bf16`, with AVX-512 F and BW).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `v` rounded to the nearest bf16, ties to even (as `vcvtne2ps2bf16`); NaN
/// stays NaN.
#[inline]
pub(crate) fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
#[inline]
pub(crate) fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Two bf16 values as one operand lane of `vdpbf16ps`: `lo` in the low half.
#[inline]
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | (u32::from(to_bf16(hi)) << 16)
}

/// Packs an `[out, in]` f32 weight into bf16 panels: panel `p` holds, for each
/// pair of input features `2q, 2q + 1` in turn, the pairs of output features
/// `64p .. 64p + 64` side by side (zeros past `out`, and past `in` when `in`
/// is odd).
pub(crate) fn pack_panels_bf16(w: &[f32], n: usize, k: usize) -> Vec<u32> {
    let kq = k.div_ceil(2);
    let mut packed = vec![0u32; n.div_ceil(PANEL) * kq * PANEL];
    packed
        .par_chunks_mut(kq * PANEL)
        .enumerate()
        .for_each(|(p, panel)| {
            let first = p * PANEL;
            let cols = PANEL.min(n - first);
            // 32 input features (16 pairs) at a time, so that the block read
            // and the one written stay in the L1 cache.
            for q0 in (0..kq).step_by(16) {
                let q1 = (q0 + 16).min(kq);
                for c in 0..cols {
                    let row = &w[(first + c) * k..][..k];
                    for q in q0..q1 {
                        let hi = row.get(2 * q + 1).copied().unwrap_or(0.0);
                        panel[q * PANEL + c] = pair(row[2 * q], hi);
                    }
                }
            }
        });
    packed
}

/// The `m x k` row-major `x` as `m` rows of `k / 2` bf16 pairs (rounded up,
/// the odd last feature paired with zero).
pub(crate) fn rows_to_bf16(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    debug_assert_eq!(x.len(), m * k);
    let kq = k.div_ceil(2);
    let mut out = vec![0u32; m * kq];
    if k.is_multiple_of(2) {
        // The rows are back to back in both layouts: one flat conversion.
        let chunk = 1 << 14;
        out.par_chunks_mut(chunk / 2)
            .with_min_len(min_len())
            .zip(x.par_chunks(chunk))
            .for_each(|(dst, src)| flat_to_bf16(src, dst));
    } else {
        for (dst, src) in out.chunks_exact_mut(kq).zip(x.chunks_exact(k)) {
            for (q, d) in dst.iter_mut().enumerate() {
                *d = pair(src[2 * q], src.get(2 * q + 1).copied().unwrap_or(0.0));
            }
        }
    }
    out
}

/// Pairs of `src` (even length) into `dst`, 32 values per instruction where
/// the CPU has `vcvtne2ps2bf16`.
fn flat_to_bf16(src: &[f32], dst: &mut [u32]) {
    debug_assert_eq!(src.len(), 2 * dst.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if bf16_supported() {
        // SAFETY: the CPU has the kernel's features; lengths checked above.
        done = unsafe { flat_to_bf16_avx512(src, dst) };
    }
    for (d, s) in dst[done / 2..].iter_mut().zip(src[done..].chunks_exact(2)) {
        *d = pair(s[0], s[1]);
    }
}

/// [`flat_to_bf16`] for whole groups of 32 values; returns how many values of
/// `src` it converted.
///
/// # Safety
/// The CPU must have avx512bf16 and avx512f; `dst` must hold half as many
/// elements as `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bf16,avx512bw,avx512f")]
unsafe fn flat_to_bf16_avx512(src: &[f32], dst: &mut [u32]) -> usize {
    use std::arch::x86_64::*;
    let groups = src.len() / 32;
    for g in 0..groups {
        // SAFETY: 32 values from 32g lie inside `src`, 16 pairs from 16g
        // inside `dst` (half its length); unaligned loads and store.
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr().add(32 * g));
            let hi = _mm512_loadu_ps(src.as_ptr().add(32 * g + 16));
            // The second operand fills the low half.
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(16 * g).cast(), packed);
        }
    }
    groups * 32
}

/// `x W^T + b (+ res)`, then QuickGELU when `gelu`, for the `m x k` row-major
/// `x` and a weight packed by [`pack_panels_bf16`] (`n` outputs): `x` is
/// rounded to bf16 first. In parallel over panels unless [`with_serial_gemm`]
/// is in force. Returns `m x n` row-major.
pub(crate) fn bf16_linear(
    x: &[f32],
    m: usize,
    k: usize,
    packed: &[u32],
    n: usize,
    then: PanelEpilogue,
) -> Vec<f32> {
    let kq = k.div_ceil(2);
    debug_assert!(x.len() == m * k && packed.len() == n.div_ceil(PANEL) * kq * PANEL);
    let xb = rows_to_bf16(x, m, k);
    let fast = bf16_supported();
    panels_apply(m, n, then, |p, i0, rows, acc| {
        let panel = &packed[p * kq * PANEL..(p + 1) * kq * PANEL];
        bf16_block(
            &xb[i0 * kq..(i0 + rows) * kq],
            kq,
            panel,
            i0 == 0,
            fast,
            acc,
        );
    })
}

/// `acc[r][c] = x_r · W[c]` over one bf16 panel, for the `acc.len()` (at most
/// [`PANEL_ROWS`]) rows `x_r` of `x` (`kq` pairs each); `fast` picks the
/// AVX512_BF16 kernel, else the portable one.
pub(crate) fn bf16_block(
    x: &[u32],
    kq: usize,
    panel: &[u32],
    prefetch: bool,
    fast: bool,
    acc: &mut [[f32; PANEL]],
) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` means the CPU has the kernel's features; `x` holds
        // `acc.len()` rows of `kq` pairs and `panel` `kq` groups of PANEL.
        unsafe {
            match acc.len() {
                1 => bf16_panel_avx512::<1>(x, kq, panel, prefetch, acc),
                2 => bf16_panel_avx512::<2>(x, kq, panel, prefetch, acc),
                3 => bf16_panel_avx512::<3>(x, kq, panel, prefetch, acc),
                4 => bf16_panel_avx512::<4>(x, kq, panel, prefetch, acc),
                5 => bf16_panel_avx512::<5>(x, kq, panel, prefetch, acc),
                _ => bf16_panel_avx512::<6>(x, kq, panel, prefetch, acc),
            }
        }
        return;
    }
    let _ = (prefetch, fast);
    for (x, acc) in x.chunks_exact(kq).zip(acc) {
        *acc = [0.0; PANEL];
        for (&xp, w) in x.iter().zip(panel.chunks_exact(PANEL)) {
            let (x0, x1) = (from_bf16(xp as u16), from_bf16((xp >> 16) as u16));
            for (a, &wp) in acc.iter_mut().zip(w) {
                // The products are exact in f32 (8-bit significands); only
                // the order of the f32 additions differs from vdpbf16ps.
                *a += from_bf16(wp as u16) * x0 + from_bf16((wp >> 16) as u16) * x1;
            }
        }
    }
}

/// [`bf16_block`] for `MX` rows: `MX` x 4 registers of f32 accumulators;
/// each step loads four panel registers (64 outputs x one pair of inputs) and
/// broadcasts one pair of each row against them.
///
/// # Safety
/// The CPU must have avx512bf16 and avx512f; `x` must hold `MX` rows of `kq`
/// pairs, `panel` `kq * PANEL` pairs and `acc` at least `MX` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bf16,avx512bw,avx512f")]
// Index loops over the register arrays unroll to fixed registers.
#[allow(clippy::needless_range_loop)]
unsafe fn bf16_panel_avx512<const MX: usize>(
    x: &[u32],
    kq: usize,
    panel: &[u32],
    prefetch: bool,
    acc: &mut [[f32; PANEL]],
) {
    use std::arch::x86_64::*;
    assert!(x.len() >= MX * kq && panel.len() >= kq * PANEL && acc.len() >= MX);
    let (xp, wp) = (x.as_ptr(), panel.as_ptr());
    let mut sums = [[_mm512_setzero_ps(); 4]; MX];
    for q in 0..kq {
        // SAFETY: q < kq, so the 4 loads of the panel and the `MX` pairs of
        // `x` are in bounds (see above). Prefetches never fault, and their
        // addresses are formed with wrapping arithmetic. The transmutes
        // reinterpret 512 bits of packed bf16 pairs as the bf16 vector type.
        unsafe {
            let w = wp.add(q * PANEL);
            if prefetch {
                prefetch_panel_ahead(w);
            }
            let load =
                |o: usize| -> __m512bh { std::mem::transmute(_mm512_loadu_si512(w.add(o).cast())) };
            let wv = [load(0), load(16), load(32), load(48)];
            for i in 0..MX {
                let xv: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*xp.add(i * kq + q) as i32));
                for j in 0..4 {
                    sums[i][j] = _mm512_dpbf16_ps(sums[i][j], wv[j], xv);
                }
            }
        }
    }
    for i in 0..MX {
        for j in 0..4 {
            // SAFETY: acc[i] holds PANEL = 64 values.
            unsafe { _mm512_storeu_ps(acc[i].as_mut_ptr().add(16 * j), sums[i][j]) };
        }
    }
}
