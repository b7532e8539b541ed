//! Dense layers (`x W^T + b`, with an optional residual or QuickGELU) laid out
//! for their matmul shape when the model is loaded: gemm for many rows, weights
//! packed into 64-wide panels for few rows (text prompts), and the bias, residual
//! and activation applied as the rows are stored, without extra passes.

use super::*;

/// Which layout a [`Dense`] layer keeps its weight in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightLayout {
    /// `[out, in]`, as stored in the checkpoint: few-row layers whose weight
    /// is not f32 on the CPU, which run through candle's matmul.
    AsStored,
    /// `[in, out]`, transposed once at load time.
    Transposed,
    /// Panels of [`PANEL`] output features, packed once at load time (see
    /// [`pack_panels`]) for [`panels_linear`].
    Panels,
    /// bf16 pairs in panels of [`PANEL`] output features, packed once at load
    /// time (see [`pack_panels_bf16`]) for [`bf16_linear`]: the
    /// [`Precision::Bf16`] layout, for any number of rows.
    Bf16Panels,
}

/// A dense layer `x W^T + b` that picks the faster matmul formulation for its
/// shape. candle's CPU matmul (the `gemm` crate) repacks its right-hand operand on
/// every call, and how much that costs depends on the operand's layout, measured
/// on the 2-core AVX-512 machine with `examples`-style timing of each shape:
///
/// * few rows (a text prompt is 3–77 tokens, the text tower's layers):
///   [`panels_linear`] on a weight packed at load time. gemm, built for large
///   products, reads a short prompt's 151 MB of weights at about 8 GB/s and
///   repacks them on every call; the panels are read once, as one stream per
///   thread. 4 rows by 512 → 2048: 0.24–0.45 ms against 1.0–1.6 ms; 77 rows:
///   0.8 against 1.9 ms;
/// * many rows (the vision tower, 50 rows per image): `x W^T` through gemm,
///   with `W^T` made contiguous at load time and the epilogue fused. gemm reads
///   a contiguous `W^T` faster than the stored `W`, in every layer's shape:
///   with one thread and 400 rows (8 images, what each core runs at batch 16),
///   `qkv` 149–154 against 144–146 GFLOP/s, `fc1` 152 against 145, `fc2` 153–155
///   against 127–131 (peak 171 on that machine). The whole tower at batch 16 ran
///   1.3–4.3% faster than with `W` as stored for `qkv` and `fc1` (bit for bit
///   the same vectors; 6 runs of 20 alternating batches).
///
/// In [`Precision::Bf16`] every layer keeps bf16 panels and runs
/// [`bf16_linear`], whatever its shape.
pub(crate) struct Dense {
    /// For [`WeightLayout::Panels`], the packed panels as a 1-D tensor; for
    /// [`WeightLayout::Bf16Panels`], the packed bf16 pairs as a 1-D `u32` tensor.
    weight: Tensor,
    layout: WeightLayout,
    bias: Option<Tensor>,
    /// `(out, in)`.
    features: (usize, usize),
}

/// Rows up to which `(W x^T)^T` is used for an [`WeightLayout::AsStored`] weight.
pub(crate) const FEW_ROWS: usize = 128;

/// Output features per panel of a [`WeightLayout::Panels`] weight: four AVX-512
/// registers.
pub(crate) const PANEL: usize = 64;

/// Rows of `x` that one pass over a panel serves: 6 rows by 4 registers of
/// accumulators, plus the 4 weight registers, fit AVX-512's 32.
pub(crate) const PANEL_ROWS: usize = 6;

/// How far ahead, in input features, [`panel_avx512`] prefetches the panel it
/// streams (8 KiB): the hardware prefetcher alone left a 4-row product at
/// 6–9 GB/s per core, against 14 for a plain read of the same memory.
#[cfg(target_arch = "x86_64")]
pub(crate) const PANEL_PREFETCH: usize = 32;

/// The values of the f32 CPU tensor `w`, re-laid out by `f`.
fn relaid<T>(w: &Tensor, f: impl FnOnce(&[f32]) -> Vec<T>) -> candle_core::Result<Vec<T>> {
    let flat = w.contiguous()?.flatten_all()?;
    let (storage, layout) = flat.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("dense layer: expected a CPU weight")
    };
    Ok(f(contiguous_f32("dense layer", cpu, layout)?))
}

/// The `[k, n]` transpose of the row-major `[n, k]` matrix `w`, in parallel
/// over 16-row strips of the result, 16 x 16 blocks at a time in registers on
/// AVX-512. candle's strided copy, single-threaded, was about two thirds of the
/// samples of a 0.65 s `plip index` start-up with PLIP's vision tower (perf).
pub(crate) fn transposed(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert_eq!(
        w.len(),
        n * k,
        "transposed: {n} x {k} matrix of {} values",
        w.len()
    );
    let mut t = zeroed_f32(n * k);
    if n == 0 {
        return t;
    }
    t.par_chunks_mut(16 * n).enumerate().for_each(|(s, strip)| {
        let k0 = s * 16;
        let rows = strip.len() / n;
        let mut c0 = 0;
        #[cfg(target_arch = "x86_64")]
        if rows == 16 && std::arch::is_x86_feature_detected!("avx512f") {
            while c0 + 16 <= n {
                // SAFETY: the CPU has avx512f; the block read starts at row c0,
                // column k0 of the n x k `w` (c0 + 15 < n, k0 + 15 < k), and
                // the block written at row 0, column c0 of this 16 x n strip.
                unsafe {
                    transpose16_avx512(
                        w.as_ptr().add(c0 * k + k0),
                        k,
                        strip.as_mut_ptr().add(c0),
                        n,
                    )
                };
                c0 += 16;
            }
        }
        for r in 0..rows {
            for c in c0..n {
                strip[r * n + c] = w[c * k + k0 + r];
            }
        }
    });
    t
}

/// Packs an `[out, in]` weight into panels: panel `p` holds, for each input
/// feature in turn, the weights of output features `64p .. 64p + 64` side by
/// side (zeros past `out`). A product then reads each panel front to back.
pub(crate) fn pack_panels(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut packed = zeroed_f32(n.div_ceil(PANEL) * k * PANEL);
    packed
        .par_chunks_mut(k * PANEL)
        .enumerate()
        .for_each(|(p, panel)| {
            let first = p * PANEL;
            let rows = PANEL.min(n - first);
            #[cfg(target_arch = "x86_64")]
            if rows == PANEL
                && k.is_multiple_of(16)
                && std::arch::is_x86_feature_detected!("avx512f")
            {
                for kk0 in (0..k).step_by(16) {
                    for c0 in (0..PANEL).step_by(16) {
                        // SAFETY: the CPU has avx512f; the 16 x 16 block read
                        // starts at row first + c0, column kk0 of the n x k
                        // `w` (rows first + c0 + 15 < n, kk0 + 15 < k), and the
                        // block written at row kk0, column c0 of the k x 64
                        // panel.
                        unsafe {
                            transpose16_avx512(
                                w.as_ptr().add((first + c0) * k + kk0),
                                k,
                                panel.as_mut_ptr().add(kk0 * PANEL + c0),
                                PANEL,
                            )
                        };
                    }
                }
                return;
            }
            // 16 input features at a time, so that the 64 x 16 block read and
            // the 16 x 64 block written stay in the L1 cache.
            for kk0 in (0..k).step_by(16) {
                let width = 16.min(k - kk0);
                for c in 0..rows {
                    let row = &w[(first + c) * k + kk0..][..width];
                    for (d, &v) in row.iter().enumerate() {
                        panel[(kk0 + d) * PANEL + c] = v;
                    }
                }
            }
        });
    packed
}

/// Writes the transpose of the 16 x 16 block at `src` (rows `src_stride`
/// apart) to `dst` (rows `dst_stride` apart), in registers: unpack pairs of
/// rows, then shuffle 64-bit pairs and 128-bit lanes.
///
/// # Safety
/// The CPU must have avx512f; both blocks must lie inside their allocations.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn transpose16_avx512(
    src: *const f32,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::*;
    let mut r = [_mm512_setzero_ps(); 16];
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..16 {
        // SAFETY: row i of the source block (see above).
        r[i] = unsafe { _mm512_loadu_ps(src.add(i * src_stride)) };
    }
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        r[4 * i] = _mm512_shuffle_ps::<0x44>(a, c);
        r[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
        r[4 * i + 2] = _mm512_shuffle_ps::<0x44>(b, d);
        r[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
    }
    for h in 0..2 {
        for j in 0..4 {
            let (a, b) = (r[8 * h + j], r[8 * h + 4 + j]);
            t[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
            t[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(a, b);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[8 + j]);
    }
    for i in 0..16 {
        // SAFETY: row i of the destination block (see above).
        unsafe { _mm512_storeu_ps(dst.add(i * dst_stride), r[i]) };
    }
}

/// A pointer to an output buffer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each task writes only its own elements (see `panels_linear`).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A method, so that closures capture the whole (Send) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// What [`panels_linear`] does to each output row after the product.
#[derive(Clone, Copy)]
pub(crate) struct PanelEpilogue<'a> {
    /// Added first (`n` values).
    pub(crate) bias: Option<&'a [f32]>,
    /// Added next (`m x n` values, row-major).
    pub(crate) res: Option<&'a [f32]>,
    /// QuickGELU last.
    pub(crate) gelu: bool,
}

/// `x W^T + b (+ res)`, then QuickGELU when `gelu`, for the `m x k` row-major `x`
/// and a weight packed by [`pack_panels`] (`n` outputs); in parallel over panels
/// unless [`with_serial_gemm`] is in force. Returns `m x n` row-major.
fn panels_linear(
    x: &[f32],
    m: usize,
    k: usize,
    packed: &[f32],
    n: usize,
    then: PanelEpilogue,
) -> Vec<f32> {
    debug_assert!(x.len() == m * k && packed.len() == n.div_ceil(PANEL) * k * PANEL);
    panels_apply(m, n, then, |p, i0, rows, acc| {
        let panel = &packed[p * k * PANEL..(p + 1) * k * PANEL];
        // The first pass brings the panel in from memory; later ones find it
        // in the core's cache.
        panel_block(&x[i0 * k..(i0 + rows) * k], k, panel, i0 == 0, acc);
    })
}

/// The loop of a packed-panel product around its kernel: for each panel `p`
/// (in parallel unless [`with_serial_gemm`] is in force) and each group of at
/// most [`PANEL_ROWS`] rows from `i0`, `block(p, i0, rows, acc)` fills
/// `acc[..rows]` with the products of those rows and the panel's outputs;
/// then the epilogue is applied and the rows stored. Returns `m x n`
/// row-major.
pub(crate) fn panels_apply(
    m: usize,
    n: usize,
    then: PanelEpilogue,
    block: impl Fn(usize, usize, usize, &mut [[f32; PANEL]]) + Sync,
) -> Vec<f32> {
    let PanelEpilogue { bias, res, gelu } = then;
    debug_assert!(bias.is_none_or(|b| b.len() == n) && res.is_none_or(|r| r.len() == m * n));
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let dst = SharedOut(out.as_mut_ptr());
    let task = |p: usize| {
        let first = p * PANEL;
        let cols = PANEL.min(n - first);
        let mut acc = [[0f32; PANEL]; PANEL_ROWS];
        for i0 in (0..m).step_by(PANEL_ROWS) {
            let rows = PANEL_ROWS.min(m - i0);
            block(p, i0, rows, &mut acc[..rows]);
            for (r, acc) in acc[..rows].iter_mut().enumerate() {
                let i = i0 + r;
                let acc = &mut acc[..cols];
                if let Some(b) = bias {
                    for (a, b) in acc.iter_mut().zip(&b[first..]) {
                        *a += b;
                    }
                }
                if let Some(res) = res {
                    for (a, r) in acc.iter_mut().zip(&res[i * n + first..]) {
                        *a += r;
                    }
                }
                if gelu {
                    quick_gelu_in_place(acc);
                }
                // SAFETY: row `i`, columns `first .. first + cols` lie inside the
                // m x n buffer, and only this task (panel `p`) writes them.
                unsafe {
                    std::ptr::copy_nonoverlapping(acc.as_ptr(), dst.get().add(i * n + first), cols)
                };
            }
        }
    };
    let panels = n.div_ceil(PANEL);
    if threads() > 1 && !SERIAL_GEMM.get() {
        (0..panels).into_par_iter().for_each(task);
    } else {
        (0..panels).for_each(task);
    }
    // SAFETY: the panels together wrote every column of every row.
    unsafe { out.set_len(m * n) };
    out
}

/// `acc[r][c] = x_r · W[c]` over one panel, for the `acc.len()` (at most
/// [`PANEL_ROWS`]) rows `x_r` of `x`.
pub(crate) fn panel_block(
    x: &[f32],
    k: usize,
    panel: &[f32],
    prefetch: bool,
    acc: &mut [[f32; PANEL]],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has avx512f; `x` holds `acc.len()` rows of `k` values
        // and `panel` `k` groups of PANEL, as the kernel requires.
        unsafe {
            match acc.len() {
                1 => panel_avx512::<1>(x, k, panel, prefetch, acc),
                2 => panel_avx512::<2>(x, k, panel, prefetch, acc),
                3 => panel_avx512::<3>(x, k, panel, prefetch, acc),
                4 => panel_avx512::<4>(x, k, panel, prefetch, acc),
                5 => panel_avx512::<5>(x, k, panel, prefetch, acc),
                _ => panel_avx512::<6>(x, k, panel, prefetch, acc),
            }
        }
        return;
    }
    let _ = prefetch;
    for (x, acc) in x.chunks_exact(k).zip(acc) {
        *acc = [0.0; PANEL];
        panel_row(x, panel, acc);
    }
}

/// `acc[c] += x · W[c]` over one panel.
#[inline(always)]
fn panel_row_generic(x: &[f32], panel: &[f32], acc: &mut [f32; PANEL]) {
    for (&xv, w) in x.iter().zip(panel.chunks_exact(PANEL)) {
        for (a, &w) in acc.iter_mut().zip(w) {
            *a += w * xv;
        }
    }
}

multiversion! {
    pub(crate) fn panel_row(x: &[f32], panel: &[f32], acc: &mut [f32; PANEL]) => panel_row_generic
}

/// Prefetches, into L1, the 256 bytes of a panel [`PANEL_PREFETCH`] input
/// features after `w` (one panel row of f32, or two of bf16 pairs): the
/// packed-panel kernels stream their weights through this. Prefetches never
/// fault, and the address is formed with wrapping arithmetic, so any `w` is
/// sound.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_panel_ahead<T>(w: *const T) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ahead = w.wrapping_add(PANEL_PREFETCH * PANEL) as *const i8;
    for offset in [0, 64, 128, 192] {
        // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(offset)) };
    }
}

/// [`panel_block`] for `MX` rows: `MX` x 4 registers of accumulators, each
/// 64-byte load of the panel used `MX` times.
///
/// # Safety
/// The CPU must have avx512f; `x` must hold `MX` rows of `k` values, `panel`
/// `k * PANEL` values and `acc` at least `MX` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
// Index loops over the register arrays unroll to fixed registers.
#[allow(clippy::needless_range_loop)]
unsafe fn panel_avx512<const MX: usize>(
    x: &[f32],
    k: usize,
    panel: &[f32],
    prefetch: bool,
    acc: &mut [[f32; PANEL]],
) {
    use std::arch::x86_64::*;
    assert!(x.len() >= MX * k && panel.len() >= k * PANEL && acc.len() >= MX);
    let (xp, wp) = (x.as_ptr(), panel.as_ptr());
    let mut sums = [[_mm512_setzero_ps(); 4]; MX];
    for kk in 0..k {
        // SAFETY: kk < k, so the 4 loads of the panel and the `MX` values of
        // `x` are in bounds (see above). Prefetches never fault, and their
        // addresses are formed with wrapping arithmetic.
        unsafe {
            let w = wp.add(kk * PANEL);
            if prefetch {
                prefetch_panel_ahead(w);
            }
            let wv = [
                _mm512_loadu_ps(w),
                _mm512_loadu_ps(w.add(16)),
                _mm512_loadu_ps(w.add(32)),
                _mm512_loadu_ps(w.add(48)),
            ];
            for i in 0..MX {
                let xv = _mm512_set1_ps(*xp.add(i * k + kk));
                for j in 0..4 {
                    sums[i][j] = _mm512_fmadd_ps(wv[j], xv, sums[i][j]);
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

impl Dense {
    /// Wraps a loaded linear layer, choosing the layout for a layer that will see
    /// many rows at once (`many_rows`) or only a few, in `precision`.
    pub(crate) fn new(
        linear: Linear,
        many_rows: bool,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let w = linear.weight();
        let (out, inp) = w.dims2()?;
        let cpu_f32 = w.device().is_cpu() && w.dtype() == DType::F32;
        let (weight, layout) = if precision == Precision::Bf16 && cpu_f32 {
            let packed = relaid(w, |w| pack_panels_bf16(w, out, inp))?;
            let len = packed.len();
            (
                Tensor::from_vec(packed, len, w.device())?,
                WeightLayout::Bf16Panels,
            )
        } else if !many_rows && cpu_f32 {
            let packed = relaid(w, |w| pack_panels(w, out, inp))?;
            let len = packed.len();
            (
                Tensor::from_vec(packed, len, w.device())?,
                WeightLayout::Panels,
            )
        } else if many_rows && cpu_f32 {
            let wt = relaid(w, |w| transposed(w, out, inp))?;
            (
                Tensor::from_vec(wt, (inp, out), w.device())?,
                WeightLayout::Transposed,
            )
        } else if many_rows {
            (w.t()?.contiguous()?, WeightLayout::Transposed)
        } else {
            (w.contiguous()?, WeightLayout::AsStored)
        };
        Ok(Self {
            weight,
            layout,
            bias: linear.bias().cloned(),
            features: (out, inp),
        })
    }

    /// The layout chosen at load time.
    #[cfg(test)]
    pub(crate) fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// `xs` is `[rows, in]`; returns `[rows, out]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(xs, Epilogue::None)
    }

    /// [`Dense::forward`] followed by `epilogue`. When the layer runs as one large
    /// CPU matmul, the epilogue is fused into it: the output starts as the bias
    /// (plus the residual) and gemm accumulates the product onto it, and
    /// QuickGELU runs in place. That replaces a zeroing pass, a bias-add pass,
    /// a residual-add pass and two allocations per layer with one filling pass.
    pub(crate) fn forward_with(
        &self,
        xs: &Tensor,
        epilogue: Epilogue,
    ) -> candle_core::Result<Tensor> {
        let (rows, _) = xs.dims2()?;
        let cpu_f32 = xs.device().is_cpu() && xs.dtype() == DType::F32;
        let out = match self.layout {
            WeightLayout::Panels | WeightLayout::Bf16Panels => {
                return self.panels_forward(xs, epilogue)
            }
            _ if cpu_f32 && self.weight.dtype() == DType::F32 => {
                return self.gemm_fused(xs, epilogue);
            }
            WeightLayout::AsStored if rows <= FEW_ROWS => {
                self.bias_add(self.weight.matmul(&xs.t()?)?.t()?)?
            }
            WeightLayout::Transposed => self.bias_add(xs.matmul(&self.weight)?)?,
            WeightLayout::AsStored => self.bias_add(xs.matmul(&self.weight.t()?)?)?,
        };
        match epilogue {
            Epilogue::None => Ok(out),
            Epilogue::QuickGelu => quick_gelu(&out),
            Epilogue::Add(residual) => {
                let shape = out.shape().clone();
                out + residual.reshape(shape)?
            }
        }
    }

    /// [`panels_linear`] (or [`bf16_linear`]) with the epilogue fused.
    fn panels_forward(&self, xs: &Tensor, epilogue: Epilogue) -> candle_core::Result<Tensor> {
        let (n, k) = self.features;
        let (m, k2) = xs.dims2()?;
        if k != k2 {
            candle_core::bail!("dense layer: input has {k2} features, the weight {k}");
        }
        if !xs.device().is_cpu() || xs.dtype() != DType::F32 {
            candle_core::bail!("dense layer: packed weights need f32 input on the CPU");
        }
        let residual = match epilogue {
            Epilogue::Add(r) => Some(r.reshape((m, n))?.contiguous()?.flatten_all()?),
            _ => None,
        };
        let x = xs.contiguous()?.flatten_all()?;
        let bias = self.bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;
        let (x_store, x_layout) = x.storage_and_layout();
        let (w_store, w_layout) = self.weight.storage_and_layout();
        let res_guard = residual.as_ref().map(|r| r.storage_and_layout());
        fn cpu<'a>(s: &'a candle_core::Storage, l: &Layout) -> candle_core::Result<&'a [f32]> {
            match s {
                candle_core::Storage::Cpu(c) => contiguous_f32("dense layer", c, l),
                _ => candle_core::bail!("dense layer: expected CPU tensors"),
            }
        }
        let res = match &res_guard {
            Some((st, l)) => Some(cpu(st, l)?),
            None => None,
        };
        let then = PanelEpilogue {
            bias: bias.as_deref(),
            res,
            gelu: matches!(epilogue, Epilogue::QuickGelu),
        };
        let x = cpu(&x_store, x_layout)?;
        let out = match (&*w_store, self.layout) {
            (candle_core::Storage::Cpu(CpuStorage::U32(packed)), WeightLayout::Bf16Panels) => {
                let packed = match w_layout.contiguous_offsets() {
                    Some((start, end)) => &packed[start..end],
                    None => candle_core::bail!("dense layer: bf16 panels are not contiguous"),
                };
                bf16_linear(x, m, k, packed, n, then)
            }
            _ => panels_linear(x, m, k, cpu(&w_store, w_layout)?, n, then),
        };
        drop((x_store, w_store, res_guard));
        Tensor::from_vec(out, (m, n), xs.device())
    }

    fn bias_add(&self, out: Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(b) => out.broadcast_add(b),
            None => Ok(out),
        }
    }

    /// `x W^T + b` and the epilogue as one gemm call on f32 CPU tensors, into
    /// a row-major product that starts as the bias (plus the residual).
    fn gemm_fused(&self, xs: &Tensor, epilogue: Epilogue) -> candle_core::Result<Tensor> {
        let xs = xs.contiguous()?;
        let (m, k) = xs.dims2()?;
        // Strides (row, column) of W^T as a k x n matrix.
        let (n, wt_rs, wt_cs) = match self.layout {
            // W^T[kk, nn] = W[nn, kk], W is [out, in]
            WeightLayout::AsStored => (self.weight.dim(0)?, 1, k as isize),
            // the stored [in, out] matrix is W^T itself
            WeightLayout::Transposed => (self.weight.dim(1)?, self.weight.dim(1)? as isize, 1),
            WeightLayout::Panels | WeightLayout::Bf16Panels => {
                unreachable!("packed weights go through panels_forward")
            }
        };
        if self.weight.elem_count() != n * k {
            candle_core::bail!(
                "dense layer: input has {k} features, the weight is {:?}",
                self.weight.shape()
            );
        }
        let residual = match epilogue {
            Epilogue::Add(r) => Some(r.reshape((m, n))?.contiguous()?),
            _ => None,
        };
        let (x_store, x_layout) = xs.storage_and_layout();
        let (w_store, w_layout) = self.weight.storage_and_layout();
        let (candle_core::Storage::Cpu(x_cpu), candle_core::Storage::Cpu(w_cpu)) =
            (&*x_store, &*w_store)
        else {
            candle_core::bail!("dense layer: expected CPU tensors");
        };
        let x = contiguous_f32("dense layer", x_cpu, x_layout)?;
        let w = contiguous_f32("dense layer", w_cpu, w_layout)?;
        let mut bias = self.bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;

        let res_guard = residual.as_ref().map(|r| r.storage_and_layout());
        let res = match &res_guard {
            Some((st, l)) => {
                let candle_core::Storage::Cpu(c) = &**st else {
                    candle_core::bail!("dense layer: expected a CPU residual");
                };
                Some(contiguous_f32("dense layer", c, l)?)
            }
            None => None,
        };
        let threads = threads();
        let parallelism = if threads > 1 && !SERIAL_GEMM.get() {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // Before QuickGELU, the bias is added in the activation's pass, which
        // saves a pass that writes the whole output.
        let gelu_bias = match epilogue {
            Epilogue::QuickGelu => bias.take(),
            _ => None,
        };
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        // The starting value of each output row: bias, plus the residual row.
        let read_dst = bias.is_some() || residual.is_some();
        if read_dst {
            prefill_rows(
                n,
                bias.as_deref(),
                res,
                &mut out.spare_capacity_mut()[..m * n],
            );
        }
        // SAFETY: `out` has room for m x n values, `x` holds m x k and `w`
        // k x n (checked above) read with in-bounds strides; with `read_dst`
        // every value of `out` was written above, without it gemm writes
        // them all.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                read_dst,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                wt_cs,
                wt_rs,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            );
            out.set_len(m * n);
        }
        drop(res_guard);
        match (epilogue, gelu_bias) {
            (Epilogue::QuickGelu, Some(bias)) => {
                let rows_per_task = (1 << 14) / n.max(1) + 1;
                out.par_chunks_mut(rows_per_task * n)
                    .with_min_len(min_len())
                    .for_each(|rows| quick_gelu_bias_in_place(rows, &bias));
            }
            (Epilogue::QuickGelu, None) => out
                .par_chunks_mut(1 << 14)
                .with_min_len(min_len())
                .for_each(quick_gelu_in_place),
            _ => {}
        }
        drop((x_store, w_store));
        Tensor::from_vec(out, (m, n), xs.device())
    }
}

/// Fills each `n`-wide row of `dst` with `bias` plus the matching row of `res`
/// (either may be absent, not both).
fn prefill_rows(
    n: usize,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    dst: &mut [std::mem::MaybeUninit<f32>],
) {
    let rows_per_task = (1 << 14) / n.max(1) + 1;
    dst.par_chunks_mut(rows_per_task * n)
        .with_min_len(min_len())
        .enumerate()
        .for_each(|(t, chunk)| {
            for (r, dst) in chunk.chunks_exact_mut(n).enumerate() {
                let i = t * rows_per_task + r;
                let res = res.map(|res| &res[i * n..(i + 1) * n]);
                // one loop per case, so that each vectorizes
                match (res, bias) {
                    (Some(res), Some(b)) => {
                        for ((d, &x), &b) in dst.iter_mut().zip(res).zip(b) {
                            d.write(x + b);
                        }
                    }
                    (Some(res), None) => {
                        for (d, &x) in dst.iter_mut().zip(res) {
                            d.write(x);
                        }
                    }
                    (None, Some(b)) => {
                        for (d, &b) in dst.iter_mut().zip(b) {
                            d.write(b);
                        }
                    }
                    (None, None) => unreachable!("prefill needs a bias or a residual"),
                }
            }
        });
}

/// What [`Dense::forward_with`] applies to `x W^T + b`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Epilogue<'a> {
    /// Nothing.
    None,
    /// QuickGELU, `y * sigmoid(1.702 y)` (CLIP's activation).
    QuickGelu,
    /// Adds this tensor (a residual), of `rows x out` elements.
    Add(&'a Tensor),
}
