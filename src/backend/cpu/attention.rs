//! Fused multi-head attention for one image or prompt at a time: scores,
//! softmax and the weighted sum of values in one kernel per head, with a tiled
//! AVX-512 path for 64-wide heads (CLIP's) and a portable blocked path for the
//! rest. Same function as candle's matmul/softmax/matmul, in f32.

use super::*;

/// Multi-head self-attention on the fused projection `qkv` (`[B·L, 3·D]`, laid out
/// `[B, L, 3, H, Dh]`, queries already scaled), returning `[B·L, D]` with heads
/// concatenated, ready for the output projection. `causal` hides later tokens
/// (the text tower's mask).
///
/// On f32 CPU tensors this is one pass per image and head over 50 tokens, with no
/// intermediate tensors: candle's route (three strided copies for q, k and v, a
/// batched matmul per image and head, a mask add, softmax, another batched
/// matmul and a transposing copy) spent most of its time moving memory. Other
/// tensors take that route.
pub(crate) fn attention(
    qkv: &Tensor,
    seq_len: usize,
    heads: usize,
    causal: bool,
) -> candle_core::Result<Tensor> {
    let (rows, three_d) = qkv.dims2()?;
    let d = three_d / 3;
    let head_dim = d / heads;
    if rows % seq_len != 0 || three_d != 3 * d || d != heads * head_dim {
        candle_core::bail!(
            "attention: bad shape {rows}x{three_d} for {heads} heads of length {seq_len}"
        );
    }
    if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
        return qkv.contiguous()?.apply_op1_no_bwd(&Attention {
            seq_len,
            heads,
            causal,
        });
    }
    let b = rows / seq_len;
    let qkv = qkv
        .reshape((b, seq_len, 3, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?;
    let q = qkv.get(0)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let mut scores = q.matmul(&k.t()?)?;
    if causal && seq_len > 1 {
        let mask: Vec<f32> = (0..seq_len)
            .flat_map(|i| (0..seq_len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, seq_len, seq_len), qkv.device())?
            .to_dtype(qkv.dtype())?;
        scores = scores.broadcast_add(&mask)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, d))
}

struct Attention {
    seq_len: usize,
    heads: usize,
    causal: bool,
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32("attention", s, l)?;
        let (rows, three_d) = l.shape().dims2()?;
        let d = three_d / 3;
        let len = self.seq_len;
        let (heads, dh) = (self.heads, d / self.heads);
        // One task per sequence and head, so that a single prompt still uses
        // every core; each writes its own [L, Dh] block, scattered afterwards.
        let blocks: Vec<Vec<f32>> = (0..rows / len * heads)
            .into_par_iter()
            .with_min_len(min_len())
            .map(|task| {
                let (seq, h) = (task / heads, task % heads);
                let mut block = vec![0f32; len * dh];
                let qkv = &qkv[seq * len * three_d..(seq + 1) * len * three_d];
                if !attend_tiled(qkv, &mut block, len, heads, dh, h, self.causal) {
                    attend(qkv, &mut block, len, heads, dh, h, self.causal);
                }
                block
            })
            .collect();
        let mut out = vec![0f32; rows * d];
        for (task, block) in blocks.iter().enumerate() {
            let (seq, h) = (task / heads, task % heads);
            for (i, src) in block.chunks_exact(dh).enumerate() {
                let at = (seq * len + i) * d + h * dh;
                out[at..at + dh].copy_from_slice(src);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }
}

multiversion! {
    /// Head `h` of one sequence: `qkv` is `[L, 3, H, Dh]`, `out` is `[L, Dh]`.
    pub(crate) fn attend(
        qkv: &[f32],
        out: &mut [f32],
        len: usize,
        heads: usize,
        dh: usize,
        h: usize,
        causal: bool,
    ) => attend_generic
}

#[inline(always)]
fn attend_generic(
    qkv: &[f32],
    out: &mut [f32],
    len: usize,
    heads: usize,
    dh: usize,
    h: usize,
    causal: bool,
) {
    let d = heads * dh;
    let row = |i: usize, part: usize| {
        let at = i * 3 * d + part * d + h * dh;
        &qkv[at..at + dh]
    };
    if dh.is_multiple_of(LANES) {
        return attend_blocked(qkv, out, len, d, dh, h, causal);
    }
    let mut p = vec![0f32; len];
    for (i, o) in out.chunks_exact_mut(dh).enumerate() {
        let q = row(i, 0);
        let visible = if causal { i + 1 } else { len };
        let mut max = f32::NEG_INFINITY;
        for (j, pj) in p[..visible].iter_mut().enumerate() {
            *pj = dot_portable(q, row(j, 1));
            max = max.max(*pj);
        }
        let mut sum = 0f32;
        for pj in &mut p[..visible] {
            *pj = exp(*pj - max);
            sum += *pj;
        }
        o.fill(0.0);
        for (j, &pj) in p[..visible].iter().enumerate() {
            let w = pj / sum;
            for (o, v) in o.iter_mut().zip(row(j, 2)) {
                *o += w * v;
            }
        }
    }
}

/// Vector width the kernels are written for (one AVX-512 register of f32).
/// Query rows scored together, so that each loaded key vector serves several.
const QUERY_BLOCK: usize = 4;

/// [`attend_generic`] for head widths that are a multiple of [`LANES`], with
/// no horizontal sums: the head's keys are transposed once into `[Dh, L']` (L
/// padded to the lanes), so a block of query rows is scored against 16 keys
/// at a time by broadcast multiply-adds, and the weighted sum of values runs
/// 16 output columns at a time. About 8x faster than one dot product per
/// query and key at ViT-B/32's 50 tokens and 64-wide heads.
#[inline(always)]
fn attend_blocked(
    qkv: &[f32],
    out: &mut [f32],
    len: usize,
    d: usize,
    dh: usize,
    h: usize,
    causal: bool,
) {
    let padded = len.next_multiple_of(LANES);
    let row = |i: usize, part: usize| {
        let at = i * 3 * d + part * d + h * dh;
        &qkv[at..at + dh]
    };
    let mut kt = vec![0f32; dh * padded];
    for j in 0..len {
        for (c, &k) in row(j, 1).iter().enumerate() {
            kt[c * padded + j] = k;
        }
    }
    let mut scores = vec![[0f32; LANES]; QUERY_BLOCK * padded / LANES];
    for i0 in (0..len).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(len - i0);
        let mut q = [[0f32; QUERY_BLOCK]; 1].repeat(dh);
        for (r, i) in (i0..i0 + rows).enumerate() {
            for (c, &x) in row(i, 0).iter().enumerate() {
                q[c][r] = x;
            }
        }
        // Keys visible to the last row of the block; earlier rows of a causal
        // block mask theirs below.
        let visible = if causal { i0 + rows } else { len };
        let blocks = visible.div_ceil(LANES);
        for jb in 0..blocks {
            let mut acc = [[0f32; LANES]; QUERY_BLOCK];
            for (c, qc) in q.iter().enumerate() {
                let k: &[f32; LANES] = kt[c * padded + jb * LANES..][..LANES]
                    .try_into()
                    .expect("LANES keys");
                for r in 0..QUERY_BLOCK {
                    for l in 0..LANES {
                        acc[r][l] = qc[r].mul_add(k[l], acc[r][l]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                scores[r * padded / LANES + jb] = *a;
            }
        }
        for r in 0..rows {
            let i = i0 + r;
            let seen = if causal { i + 1 } else { len };
            let s = &mut scores[r * padded / LANES..][..blocks];
            softmax_prefix(s, seen);
            let o = &mut out[i * dh..(i + 1) * dh];
            let mut cols = o.chunks_exact_mut(4 * LANES);
            for (cb, o) in (&mut cols).enumerate() {
                weighted_sum::<4>(s, seen, |j| &row(j, 2)[cb * 4 * LANES..], o);
            }
            let done = dh - cols.into_remainder().len();
            for (cb, o) in out[i * dh + done..(i + 1) * dh]
                .chunks_exact_mut(LANES)
                .enumerate()
            {
                weighted_sum::<1>(s, seen, |j| &row(j, 2)[done + cb * LANES..], o);
            }
        }
    }
}

/// The head width [`attend_tiled_avx512`] is written for (CLIP's text and
/// vision heads, ViT-B/32 and PLIP alike).
#[cfg(target_arch = "x86_64")]
const TILE_DH: usize = 64;

/// Runs [`attend_tiled_avx512`] when the CPU and the shape allow it; returns
/// whether it did.
pub(crate) fn attend_tiled(
    qkv: &[f32],
    out: &mut [f32],
    len: usize,
    heads: usize,
    dh: usize,
    h: usize,
    causal: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if dh == TILE_DH && std::arch::is_x86_feature_detected!("avx512f") {
        let d = heads * dh;
        // SAFETY: the CPU has avx512f; `qkv` holds `len` rows of 3·d values
        // and `out` `len` rows of 64, as `attend` requires.
        unsafe {
            match len.div_ceil(LANES) {
                1 => attend_tiled_avx512::<1>(qkv, out, len, d, h, causal),
                2 => attend_tiled_avx512::<2>(qkv, out, len, d, h, causal),
                3 => attend_tiled_avx512::<3>(qkv, out, len, d, h, causal),
                4 => attend_tiled_avx512::<4>(qkv, out, len, d, h, causal),
                5 => attend_tiled_avx512::<5>(qkv, out, len, d, h, causal),
                _ => return false,
            }
        }
        return true;
    }
    let _ = (qkv, out, len, heads, dh, h, causal);
    false
}

/// [`attend_blocked`] for 64-wide heads and at most `16·KB` tokens (ViT-B/32's
/// 50, a text prompt's 77), with the accumulators in registers: a block of
/// [`QUERY_BLOCK`] query rows is scored against all the keys at once
/// (`QUERY_BLOCK·KB` accumulators, each key vector loaded once for the
/// block), and the block's weighted sums of values are formed together too,
/// each value vector loaded once for all its rows. In [`attend_blocked`]
/// each row's sum had 4 accumulators in one dependency chain, which held the
/// multiply-adds to half the rate a core can issue them.
///
/// # Safety
/// The CPU must have avx512f; `qkv` must hold `len` rows of `3·d` values
/// with head `h`'s 64 values at `h·64` in each part, `out` `len` rows of 64,
/// and `len <= 16·KB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn attend_tiled_avx512<const KB: usize>(
    qkv: &[f32],
    out: &mut [f32],
    len: usize,
    d: usize,
    h: usize,
    causal: bool,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees AVX-512F; every pointer below stays inside
    // `qkv` (the assert above bounds the last row read), `kt`, `tail` or `out`.
    unsafe {
        const DB: usize = TILE_DH / LANES;
        const R: usize = QUERY_BLOCK;
        assert!(len <= KB * LANES && out.len() >= len * TILE_DH);
        let at = |i: usize, part: usize| i * 3 * d + part * d + h * TILE_DH;
        assert!(qkv.len() >= at(len - 1, 2) + TILE_DH);
        let base = qkv.as_ptr();
        // Keys transposed: kt[c][j] is value c of key j, the lanes past `len` zero;
        // 16 keys by 16 values at a time, in registers. The last, partial block of
        // keys is copied out first, so that no row past the sequence is read.
        let mut kt = vec![[[0f32; LANES]; KB]; TILE_DH];
        let kt_ptr = kt.as_mut_ptr() as *mut f32;
        let mut tail = [[0f32; TILE_DH]; LANES];
        for kb in 0..KB {
            let keys = LANES.min(len - kb * LANES);
            let (src, stride) = if keys == LANES {
                (base.add(at(kb * LANES, 1)), 3 * d)
            } else {
                for (j, t) in tail.iter_mut().enumerate().take(keys) {
                    t.copy_from_slice(&qkv[at(kb * LANES + j, 1)..][..TILE_DH]);
                }
                (tail.as_ptr() as *const f32, TILE_DH)
            };
            for cb in 0..TILE_DH / LANES {
                // Rows cb·16.. of kt, lanes kb·16..: each kt row is KB·16 wide.
                transpose16_avx512(
                    src.add(cb * LANES),
                    stride,
                    kt_ptr.add(cb * LANES * KB * LANES + kb * LANES),
                    KB * LANES,
                );
            }
        }
        let mut probs = [[[0f32; LANES]; KB]; R];
        for i0 in (0..len).step_by(R) {
            let rows = R.min(len - i0);
            // Rows past the end repeat the last one; their results are dropped.
            let mut q = [base; R];
            for (r, q) in q.iter_mut().enumerate() {
                *q = base.add(at((i0 + r).min(len - 1), 0));
            }
            let mut acc = [[_mm512_setzero_ps(); KB]; R];
            for (c, kc) in kt.iter().enumerate() {
                let mut k = [_mm512_setzero_ps(); KB];
                for kb in 0..KB {
                    k[kb] = _mm512_loadu_ps(kc[kb].as_ptr());
                }
                for r in 0..R {
                    let qc = _mm512_set1_ps(*q[r].add(c));
                    for kb in 0..KB {
                        acc[r][kb] = _mm512_fmadd_ps(qc, k[kb], acc[r][kb]);
                    }
                }
            }
            for r in 0..R {
                for kb in 0..KB {
                    _mm512_storeu_ps(probs[r][kb].as_mut_ptr(), acc[r][kb]);
                }
            }
            for (r, p) in probs.iter_mut().enumerate().take(rows) {
                softmax_prefix(p, if causal { i0 + r + 1 } else { len });
            }
            // Keys that some row of the block sees; the others' weights are zero.
            let seen = if causal { i0 + rows } else { len };
            let mut o = [[_mm512_setzero_ps(); DB]; R];
            for j in 0..seen {
                let v = base.add(at(j, 2));
                let mut vv = [_mm512_setzero_ps(); DB];
                for cb in 0..DB {
                    vv[cb] = _mm512_loadu_ps(v.add(cb * LANES));
                }
                for r in 0..R {
                    let w = _mm512_set1_ps(probs[r][j / LANES][j % LANES]);
                    for cb in 0..DB {
                        o[r][cb] = _mm512_fmadd_ps(w, vv[cb], o[r][cb]);
                    }
                }
            }
            for (r, o) in o.iter().enumerate().take(rows) {
                let dst = &mut out[(i0 + r) * TILE_DH..][..TILE_DH];
                for (cb, o) in o.iter().enumerate() {
                    _mm512_storeu_ps(dst[cb * LANES..].as_mut_ptr(), *o);
                }
            }
        }
    }
}

/// Softmax over the first `seen` scores of `s` (16 per entry); the rest become
/// zero weights.
#[inline(always)]
fn softmax_prefix(s: &mut [[f32; LANES]], seen: usize) {
    // Per-lane maxima first, with a comparison rather than `f32::max` (whose
    // NaN rule keeps the loop scalar); the scores are finite.
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for (jb, v) in s.iter().enumerate() {
        for l in 0..LANES {
            let x = if jb * LANES + l < seen {
                v[l]
            } else {
                f32::NEG_INFINITY
            };
            maxes[l] = if x > maxes[l] { x } else { maxes[l] };
        }
    }
    let max = maxes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sums = [0f32; LANES];
    for (jb, v) in s.iter_mut().enumerate() {
        for l in 0..LANES {
            let keep = if jb * LANES + l < seen { 1.0 } else { 0.0 };
            v[l] = exp(v[l] - max) * keep;
            sums[l] += v[l];
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for v in s.iter_mut() {
        for x in v.iter_mut() {
            *x *= inv;
        }
    }
}

/// `o[..NB·16] = Σ_j w_j · v_j[..NB·16]` over the first `seen` weights.
#[inline(always)]
fn weighted_sum<'a, const NB: usize>(
    w: &[[f32; LANES]],
    seen: usize,
    v: impl Fn(usize) -> &'a [f32],
    o: &mut [f32],
) {
    let mut acc = [[0f32; LANES]; NB];
    for j in 0..seen {
        let wj = w[j / LANES][j % LANES];
        let vj = v(j);
        for (b, a) in acc.iter_mut().enumerate() {
            let vb: &[f32; LANES] = vj[b * LANES..][..LANES].try_into().expect("LANES values");
            for l in 0..LANES {
                a[l] = wj.mul_add(vb[l], a[l]);
            }
        }
    }
    for (o, a) in o.chunks_exact_mut(LANES).zip(&acc) {
        o.copy_from_slice(a);
    }
}
