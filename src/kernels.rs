//! CPU fast paths for the few operations where candle's generic kernels cost
//! measurable time in PLIP: dense layers laid out for their matmul shape, fused
//! attention, layer norm and QuickGELU, and the allocator setting that keeps big
//! activation buffers from being returned to the kernel after every op.
//!
//! Every path here computes the same function as the candle ops it replaces, in
//! f32; only the order of floating-point additions differs. The parity tests in
//! `tests/parity.rs` run through them.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

/// Defines `fn $name(args)` that runs `$generic(args)` compiled for AVX-512 or AVX2
/// when the CPU has them (checked at run time), else for the baseline target.
/// `$generic` must be `#[inline(always)]` and written so that it vectorizes.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $generic:ident) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the feature the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// The threads that the model's kernels split work over: rayon's pool, at most
/// one per physical core as candle counts them. candle's count is read once here:
/// candle reads it from the environment and `/proc/cpuinfo` on every call, about
/// 5% of a short prompt's time when every layer asked.
pub fn threads() -> usize {
    static PHYSICAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let physical = *PHYSICAL.get_or_init(candle_core::utils::get_num_threads);
    rayon::current_num_threads().min(physical)
}

/// Keeps freed activation buffers in the process instead of unmapping them.
///
/// glibc returns every free chunk above its mmap threshold to the kernel, so each
/// of the ~200 ops in a ViT-B/32 forward pass maps fresh pages and faults them in
/// again (about 10% of image-embedding time on the 2-core machine). Raising the
/// thresholds to their maximum makes later batches reuse the same memory. Peak
/// memory is unchanged: the buffers are the same, they are just kept.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, takes plain integers and
    // is thread-safe (it takes the arena locks).
    unsafe {
        // 32 MiB is glibc's largest allowed mmap threshold on 64-bit targets.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Returns freed heap memory to the operating system. [`tune_allocator`] keeps
/// freed buffers for reuse, which is right while embedding; but once the model
/// is dropped, its weights (600 MB for PLIP) would otherwise stay resident
/// through the index's compaction.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of the heap to the kernel;
    // it is thread-safe and leaves every live allocation in place.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A zeroed `Vec<f32>` of `len` values whose memory the kernel is asked to back
/// with transparent huge pages (Linux, where THP is in `madvise` mode, the common
/// default). Filling a 200 MB buffer of 4 KiB pages costs 50,000 page faults,
/// most of the time it takes to load 100k stored vectors or the text tower's
/// weights; with 2 MiB pages it is a hundred. The advice is only a hint: where it
/// is not honoured, nothing changes.
pub fn zeroed_f32(len: usize) -> Vec<f32> {
    let v = vec![0f32; len];
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const HUGE: usize = 2 << 20;
        let bytes = len * 4;
        if bytes >= 4 * HUGE {
            let start = v.as_ptr() as usize;
            let first = start.next_multiple_of(HUGE);
            let end = (start + bytes) / HUGE * HUGE;
            if end > first {
                // SAFETY: the range lies inside the vector's allocation, which is
                // not yet touched (calloc maps large blocks fresh); MADV_HUGEPAGE
                // changes only how pages are backed, never their contents.
                unsafe {
                    libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    v
}

/// Which layout a [`Dense`] layer keeps its weight in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in]`, as stored in the checkpoint.
    AsStored,
    /// `[in, out]`, transposed once at load time.
    Transposed,
    /// Panels of [`PANEL`] output features, packed once at load time (see
    /// [`pack_panels`]) for [`panels_linear`].
    Panels,
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
/// * many rows, more inputs than outputs (`fc2`, 3072 → 768, and the 768 → 768
///   `out_proj`): `x W^T` with `W^T` made contiguous at load time, 17.5 instead of
///   25.4 ms for 800 rows;
/// * many rows otherwise (`qkv`, `fc1`): candle's `Linear` as is, through gemm
///   with the epilogue fused.
pub struct Dense {
    /// For [`WeightLayout::Panels`], the packed panels as a 1-D tensor.
    weight: Tensor,
    layout: WeightLayout,
    bias: Option<Tensor>,
    /// `(out, in)`.
    features: (usize, usize),
}

/// Rows up to which `(W x^T)^T` is used for an [`WeightLayout::AsStored`] weight.
const FEW_ROWS: usize = 128;

/// Output features per panel of a [`WeightLayout::Panels`] weight: four AVX-512
/// registers.
const PANEL: usize = 64;

/// Rows of `x` that one pass over a panel serves: 6 rows by 4 registers of
/// accumulators, plus the 4 weight registers, fit AVX-512's 32.
const PANEL_ROWS: usize = 6;

/// How far ahead, in input features, [`panel_avx512`] prefetches the panel it
/// streams (8 KiB): the hardware prefetcher alone left a 4-row product at
/// 6–9 GB/s per core, against 14 for a plain read of the same memory.
const PANEL_PREFETCH: usize = 32;

/// Packs an `[out, in]` weight into panels: panel `p` holds, for each input
/// feature in turn, the weights of output features `64p .. 64p + 64` side by
/// side (zeros past `out`). A product then reads each panel front to back.
fn pack_panels(w: &[f32], n: usize, k: usize) -> Vec<f32> {
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
unsafe fn transpose16_avx512(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
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
struct PanelEpilogue<'a> {
    /// Added first (`n` values).
    bias: Option<&'a [f32]>,
    /// Added next (`m x n` values, row-major).
    res: Option<&'a [f32]>,
    /// QuickGELU last.
    gelu: bool,
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
    let PanelEpilogue { bias, res, gelu } = then;
    debug_assert!(x.len() == m * k && packed.len() == n.div_ceil(PANEL) * k * PANEL);
    debug_assert!(bias.is_none_or(|b| b.len() == n) && res.is_none_or(|r| r.len() == m * n));
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let dst = SharedOut(out.as_mut_ptr());
    let task = |p: usize| {
        let panel = &packed[p * k * PANEL..(p + 1) * k * PANEL];
        let first = p * PANEL;
        let cols = PANEL.min(n - first);
        let mut acc = [[0f32; PANEL]; PANEL_ROWS];
        for i0 in (0..m).step_by(PANEL_ROWS) {
            let rows = PANEL_ROWS.min(m - i0);
            // The first pass brings the panel in from memory; later ones find it
            // in the core's cache.
            panel_block(
                &x[i0 * k..(i0 + rows) * k],
                k,
                panel,
                i0 == 0,
                &mut acc[..rows],
            );
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
fn panel_block(x: &[f32], k: usize, panel: &[f32], prefetch: bool, acc: &mut [[f32; PANEL]]) {
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
    fn panel_row(x: &[f32], panel: &[f32], acc: &mut [f32; PANEL]) => panel_row_generic
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
    debug_assert!(x.len() >= MX * k && panel.len() >= k * PANEL && acc.len() >= MX);
    let (xp, wp) = (x.as_ptr(), panel.as_ptr());
    let mut sums = [[_mm512_setzero_ps(); 4]; MX];
    for kk in 0..k {
        // SAFETY: kk < k, so the 4 loads of the panel and the `MX` values of
        // `x` are in bounds (see above). Prefetches never fault, and their
        // addresses are formed with wrapping arithmetic.
        unsafe {
            let w = wp.add(kk * PANEL);
            if prefetch {
                let ahead = w.wrapping_add(PANEL_PREFETCH * PANEL) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(192));
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
    /// many rows at once (`many_rows`) or only a few.
    pub fn new(linear: Linear, many_rows: bool) -> candle_core::Result<Self> {
        let w = linear.weight();
        let (out, inp) = w.dims2()?;
        let (weight, layout) = if !many_rows && w.device().is_cpu() && w.dtype() == DType::F32 {
            let flat = w.contiguous()?.flatten_all()?;
            let packed = {
                let (storage, layout) = flat.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else {
                    unreachable!("checked to be on the CPU")
                };
                pack_panels(contiguous_f32("dense layer", cpu, layout)?, out, inp)
            };
            let len = packed.len();
            (
                Tensor::from_vec(packed, len, w.device())?,
                WeightLayout::Panels,
            )
        } else if many_rows && out <= inp {
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
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// `xs` is `[rows, in]`; returns `[rows, out]`.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(xs, Epilogue::None)
    }

    /// [`Dense::forward`] followed by `epilogue`. When the layer runs as one large
    /// CPU matmul, the epilogue is fused into it: the output starts as the bias
    /// (plus the residual) and gemm accumulates the product onto it, and
    /// QuickGELU runs in place. That replaces a zeroing pass, a bias-add pass,
    /// a residual-add pass and two allocations per layer with one filling pass.
    pub fn forward_with(&self, xs: &Tensor, epilogue: Epilogue) -> candle_core::Result<Tensor> {
        let (rows, _) = xs.dims2()?;
        let cpu_f32 = xs.device().is_cpu() && xs.dtype() == DType::F32;
        let out = match self.layout {
            WeightLayout::Panels => return self.panels_forward(xs, epilogue),
            _ if cpu_f32 && self.weight.dtype() == DType::F32 => {
                let few = self.layout == WeightLayout::AsStored && rows <= FEW_ROWS;
                return self.gemm_fused(xs, epilogue, few);
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

    /// [`panels_linear`] with the epilogue fused.
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
        let out = panels_linear(
            cpu(&x_store, x_layout)?,
            m,
            k,
            cpu(&w_store, w_layout)?,
            n,
            PanelEpilogue {
                bias: bias.as_deref(),
                res,
                gelu: matches!(epilogue, Epilogue::QuickGelu),
            },
        );
        drop((x_store, w_store, res_guard));
        Tensor::from_vec(out, (m, n), xs.device())
    }

    fn bias_add(&self, out: Tensor) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(b) => out.broadcast_add(b),
            None => Ok(out),
        }
    }

    /// `x W^T + b` and the epilogue as one gemm call on f32 CPU tensors.
    ///
    /// `few_rows` has gemm write the product column-major, the orientation in
    /// which its kernels run along the few rows of `x` (what candle's
    /// `(W x^T)^T` route did; see [`Dense`]), and then transposes it while
    /// adding bias and residual. With a row-major destination gemm runs along
    /// the outputs instead: 110 ms for a 77-token prompt against 56-60 ms,
    /// measured when prompts took this path (now only one or two images do).
    fn gemm_fused(
        &self,
        xs: &Tensor,
        epilogue: Epilogue,
        few_rows: bool,
    ) -> candle_core::Result<Tensor> {
        let xs = xs.contiguous()?;
        let (m, k) = xs.dims2()?;
        // Strides (row, column) of W^T as a k x n matrix.
        let (n, wt_rs, wt_cs) = match self.layout {
            // W^T[kk, nn] = W[nn, kk], W is [out, in]
            WeightLayout::AsStored => (self.weight.dim(0)?, 1, k as isize),
            // the stored [in, out] matrix is W^T itself
            WeightLayout::Transposed => (self.weight.dim(1)?, self.weight.dim(1)? as isize, 1),
            WeightLayout::Panels => unreachable!("packed weights go through panels_forward"),
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
        // Before QuickGELU on a row-major product, the bias is added in the
        // activation's pass, which saves a pass that writes the whole output.
        let gelu_bias = match epilogue {
            Epilogue::QuickGelu if !few_rows => bias.take(),
            _ => None,
        };
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        if few_rows {
            // gemm into a column-major product, then one pass that transposes
            // it and adds bias and residual
            let mut t: Vec<f32> = Vec::with_capacity(m * n);
            // SAFETY: `t` has room for m x n values and gemm writes them all
            // (read_dst false); `x` holds m x k and `w` k x n (checked above),
            // read with in-bounds strides.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    t.as_mut_ptr(),
                    m as isize,
                    1,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    wt_cs,
                    wt_rs,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    parallelism,
                );
                t.set_len(m * n);
            }
            from_columns(&t, m, n, bias.as_deref(), res, out.spare_capacity_mut());
            // SAFETY: `from_columns` wrote all m x n values.
            unsafe { out.set_len(m * n) };
        } else {
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

/// `dst[i][j] = cols[j][i] + bias[j] + res[i][j]` for the column-major `m x n`
/// product `cols`, 16 rows at a time, so that both sides are read and written
/// in runs.
fn from_columns(
    cols: &[f32],
    m: usize,
    n: usize,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    dst: &mut [std::mem::MaybeUninit<f32>],
) {
    const BLOCK: usize = 16;
    dst[..m * n]
        .par_chunks_mut(BLOCK * n)
        .with_min_len(min_len())
        .enumerate()
        .for_each(|(blk, rows)| {
            let i0 = blk * BLOCK;
            let h = rows.len() / n;
            for j in 0..n {
                let col = &cols[j * m + i0..j * m + i0 + h];
                let b = bias.map_or(0.0, |b| b[j]);
                for (r, &v) in col.iter().enumerate() {
                    let at = r * n + j;
                    let add = res.map_or(0.0, |res| res[(i0 + r) * n + j]);
                    rows[at].write(v + b + add);
                }
            }
        });
}

thread_local! {
    static SERIAL_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Layer normalization over the last dimension, as `torch.nn.LayerNorm`
/// computes it: the mean first, then the variance of the centred values.
///
/// candle's fused layer norm sums each row in one sequential chain, which does
/// not vectorize (2% of image-embedding time), and takes the variance as
/// `E[x²] − mean²`, which loses digits when the mean is large next to the spread.
/// Here both passes keep 16 partial sums. Tensors other than contiguous f32
/// CPU tensors go through candle's layer norm.
pub struct Norm {
    inner: candle_nn::LayerNorm,
    /// The weight and bias as f32 values, when the layer's parameters are f32
    /// CPU tensors.
    params: Option<(Vec<f32>, Vec<f32>)>,
}

impl Norm {
    /// Wraps a layer norm with a bias, which subtracts the mean (CLIP's).
    pub fn new(inner: candle_nn::LayerNorm) -> candle_core::Result<Self> {
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
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
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

/// Runs `f` with [`Dense`]'s gemm calls on the calling thread only.
///
/// For callers that already keep every core busy with independent work, such
/// as the vision tower running one slice of a batch per core: splitting each
/// matmul across cores as well would only add synchronization.
pub fn with_serial_gemm<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SERIAL_GEMM.set(self.0);
        }
    }
    let _reset = Reset(SERIAL_GEMM.replace(true));
    f()
}

/// The least number of pieces of a parallel loop that one task takes: all of
/// them under [`with_serial_gemm`], so that the loop stays on the calling
/// thread, else one.
///
/// A core that is running its own slice of a batch would otherwise hand pieces
/// of its layer norms and activations to the other core whenever it waits, and
/// then wait for that core's pieces in turn.
fn min_len() -> usize {
    if SERIAL_GEMM.get() {
        usize::MAX
    } else {
        1
    }
}

/// What [`Dense::forward_with`] applies to `x W^T + b`.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// Nothing.
    None,
    /// QuickGELU, `y * sigmoid(1.702 y)` (CLIP's activation).
    QuickGelu,
    /// Adds this tensor (a residual), of `rows x out` elements.
    Add(&'a Tensor),
}

/// `x * sigmoid(1.702 x)` in one pass over f32 CPU tensors; other tensors go
/// through candle's ops. Same formula and rounding steps as candle's sigmoid path.
pub fn quick_gelu(xs: &Tensor) -> candle_core::Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&QuickGelu)
    } else {
        xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?
    }
}

/// The values of a contiguous f32 CPU tensor, for the kernels here.
fn contiguous_f32<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
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
    fn quick_gelu_in_place(xs: &mut [f32]) => quick_gelu_in_place_generic
}

#[inline(always)]
fn quick_gelu_in_place_generic(xs: &mut [f32]) {
    for x in xs {
        *x = quick_gelu_one(*x);
    }
}

multiversion! {
    /// `x = quick_gelu(x + bias)` on whole rows of `bias.len()` values.
    fn quick_gelu_bias_in_place(xs: &mut [f32], bias: &[f32]) => quick_gelu_bias_in_place_generic
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
fn exp(x: f32) -> f32 {
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
pub fn attention(
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
    fn attend(
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
            *pj = dot(q, row(j, 1));
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
const LANES: usize = 16;
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
const TILE_DH: usize = 64;

/// Runs [`attend_tiled_avx512`] when the CPU and the shape allow it; returns
/// whether it did.
fn attend_tiled(
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
    const DB: usize = TILE_DH / LANES;
    const R: usize = QUERY_BLOCK;
    debug_assert!(len <= KB * LANES && out.len() >= len * TILE_DH);
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

/// Dot product with 16 independent partial sums, so it vectorizes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ac = a.chunks_exact(LANES);
    let mut bc = b.chunks_exact(LANES);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Module};

    /// The largest absolute difference between two tensors of one shape.
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn dense_matches_candle_linear_in_every_layout_and_row_count() {
        let dev = Device::Cpu;
        // 70 and 45 inputs take the scalar path, 64 the AVX-512 one; 45 and 70
        // outputs are not multiples of the 4-row blocks.
        for (out, inp) in [(45, 70), (70, 45), (70, 64), (45, 128)] {
            let w = Tensor::randn(0f32, 1.0, (out, inp), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
            let reference = Linear::new(w.clone(), Some(b.clone()));
            for many_rows in [false, true] {
                let dense = Dense::new(reference.clone(), many_rows).unwrap();
                let layout = match (many_rows, out <= inp) {
                    (false, _) => WeightLayout::Panels,
                    (true, true) => WeightLayout::Transposed,
                    (true, false) => WeightLayout::AsStored,
                };
                assert_eq!(dense.layout(), layout);
                for rows in [
                    1,
                    3,
                    5,
                    PANEL_ROWS,
                    PANEL_ROWS + 1,
                    FEW_ROWS,
                    FEW_ROWS + 1,
                    300,
                ] {
                    let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev).unwrap();
                    let want = reference.forward(&x).unwrap();
                    let residual = Tensor::randn(0f32, 1.0, (rows, out), &dev).unwrap();
                    for (epilogue, want) in [
                        (Epilogue::None, want.clone()),
                        (
                            Epilogue::QuickGelu,
                            (&want * candle_nn::ops::sigmoid(&(&want * 1.702).unwrap()).unwrap())
                                .unwrap(),
                        ),
                        (Epilogue::Add(&residual), (&want + &residual).unwrap()),
                    ] {
                        let parallel = dense.forward_with(&x, epilogue).unwrap();
                        let serial = with_serial_gemm(|| dense.forward_with(&x, epilogue));
                        for got in [parallel, serial.unwrap()] {
                            assert_eq!(got.dims(), &[rows, out]);
                            let d = max_abs_diff(&got, &want);
                            assert!(
                                d < 1e-4,
                                "{out}x{inp}, rows {rows}, {layout:?}, {epilogue:?}: {d}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packing_puts_every_weight_in_its_place() {
        // 128 x 64: the AVX-512 transposes; 70 x 37 and 64 x 40: the scalar loop.
        for (n, k) in [(128, 64), (70, 37), (64, 40)] {
            let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
            let packed = pack_panels(&w, n, k);
            assert_eq!(packed.len(), n.div_ceil(PANEL) * k * PANEL);
            for (i, &v) in packed.iter().enumerate() {
                let (p, kk, c) = (i / (k * PANEL), i / PANEL % k, i % PANEL);
                let j = p * PANEL + c;
                let want = if j < n { w[j * k + kk] } else { 0.0 };
                assert_eq!(v, want, "{n}x{k}: panel {p}, input {kk}, column {c}");
            }
        }
    }

    /// The portable kernel (what CPUs without AVX-512 run) against the
    /// AVX-512 one, and both against a plain sum.
    #[test]
    fn panel_kernels_agree() {
        let (k, n) = (37, 70);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
            .collect();
        let packed = pack_panels(&w, n, k);
        assert_eq!(packed.len(), 2 * k * PANEL);
        for rows in 1..=PANEL_ROWS {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 104_729) % 19) as f32 / 5.0 - 2.0)
                .collect();
            for p in 0..2 {
                let panel = &packed[p * k * PANEL..(p + 1) * k * PANEL];
                let mut fast = vec![[f32::NAN; PANEL]; rows];
                panel_block(&x, k, panel, p == 0, &mut fast);
                for (r, fast) in fast.iter().enumerate() {
                    let mut portable = [0f32; PANEL];
                    panel_row(&x[r * k..(r + 1) * k], panel, &mut portable);
                    for c in 0..PANEL {
                        let j = p * PANEL + c;
                        let want: f32 = if j < n {
                            (0..k).map(|kk| x[r * k + kk] * w[j * k + kk]).sum()
                        } else {
                            0.0
                        };
                        for got in [fast[c], portable[c]] {
                            assert!(
                                (got - want).abs() < 1e-4,
                                "rows {rows} r {r} col {j}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dense_without_bias_and_with_a_3d_residual() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (48, 40), &dev).unwrap();
        let reference = Linear::new(w, None);
        let dense = Dense::new(reference.clone(), true).unwrap();
        let x = Tensor::randn(0f32, 1.0, (200, 40), &dev).unwrap();
        let residual = Tensor::randn(0f32, 1.0, (4, 50, 48), &dev).unwrap();
        let want = (reference.forward(&x).unwrap() + residual.reshape((200, 48)).unwrap()).unwrap();
        for epilogue in [Epilogue::None, Epilogue::Add(&residual)] {
            let got = dense.forward_with(&x, epilogue).unwrap();
            let want = match epilogue {
                Epilogue::None => reference.forward(&x).unwrap(),
                _ => want.clone(),
            };
            assert!(max_abs_diff(&got, &want) < 1e-4, "{epilogue:?}");
        }
    }

    /// The op-by-op route (what runs off the CPU) against the fused kernel.
    fn attention_reference(qkv: &Tensor, len: usize, heads: usize, causal: bool) -> Tensor {
        let cpu_free = qkv.to_dtype(DType::F64).unwrap();
        attention(&cpu_free, len, heads, causal)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    }

    #[test]
    fn fused_attention_matches_the_op_by_op_route() {
        let dev = Device::Cpu;
        // Vision-like (no mask), text-like (causal, up to 77 tokens), lengths
        // that are not a multiple of the query block or the lanes, a single
        // token, and a head width that is not a multiple of the lanes (the
        // unblocked route).
        for (b, len, heads, dh, causal) in [
            (3, 50, 4, 64, false),
            (2, 7, 8, 64, true),
            (1, 77, 8, 64, true),
            (2, 17, 2, 32, false),
            (1, 1, 2, 16, true),
            (2, 5, 3, 20, false),
            // The tiled kernel's edges: one token, whole blocks of 16, its
            // largest length (80) and one past it (the blocked route).
            (1, 1, 2, 64, false),
            (2, 32, 2, 64, true),
            (1, 80, 2, 64, false),
            (1, 81, 1, 64, true),
        ] {
            // Scores of unit variance, as after the model's 1/sqrt(Dh) scaling.
            let std = (dh as f32).powf(-0.25);
            let qkv = Tensor::randn(0f32, std, (b * len, 3 * heads * dh), &dev).unwrap();
            let got = attention(&qkv, len, heads, causal).unwrap();
            assert_eq!(got.dims(), &[b * len, heads * dh]);
            let want = attention_reference(&qkv, len, heads, causal);
            let d = max_abs_diff(&got, &want);
            assert!(
                d < 1e-5,
                "b {b} len {len} heads {heads} dh {dh} causal {causal}: {d}"
            );
        }
    }

    #[test]
    fn tiled_attention_agrees_with_the_blocked_kernel() {
        let (heads, dh) = (3, 64);
        for len in [1, 2, 15, 16, 17, 50, 64, 77, 80] {
            for causal in [false, true] {
                let qkv: Vec<f32> = (0..len * 3 * heads * dh)
                    .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 0.7)
                    .collect();
                for h in 0..heads {
                    let mut tiled = vec![f32::NAN; len * dh];
                    if !attend_tiled(&qkv, &mut tiled, len, heads, dh, h, causal) {
                        // No AVX-512 here: nothing to compare.
                        return;
                    }
                    let mut blocked = vec![0f32; len * dh];
                    attend(&qkv, &mut blocked, len, heads, dh, h, causal);
                    for (a, b) in tiled.iter().zip(&blocked) {
                        assert!(
                            (a - b).abs() < 1e-6,
                            "len {len} causal {causal}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn layer_norm_matches_a_two_pass_f64_reference() {
        let dev = Device::Cpu;
        // 768 is a multiple of the lanes, 37 is not; the offset rows have a
        // mean 1000 times their spread, where E[x²] − mean² in f32 loses the
        // variance.
        for (d, offset) in [(768, 0f32), (37, 0.0), (64, 1000.0)] {
            let rows = 70;
            let x = (Tensor::randn(0f32, 1.0, (2, rows / 2, d), &dev).unwrap() + offset as f64)
                .unwrap();
            let w = Tensor::randn(0f32, 1.0, d, &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, d, &dev).unwrap();
            let eps = 1e-5;
            let norm = Norm::new(candle_nn::LayerNorm::new(w.clone(), b.clone(), eps)).unwrap();
            let got = norm.forward(&x).unwrap();
            assert_eq!(got.dims(), x.dims());
            let (xv, wv, bv) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                w.to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
            );
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (row, out) in xv.chunks(d).zip(got.chunks(d)) {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                for (i, (&v, &o)) in row.iter().zip(out).enumerate() {
                    let want = (v as f64 - mean) / (var + eps).sqrt() * wv[i] as f64 + bv[i] as f64;
                    // An f32 mean of values near 1000 is itself off by ~1e-4.
                    let tol = 1e-4 * (1.0 + want.abs()) * (1.0 + offset as f64 / 100.0);
                    assert!(
                        (o as f64 - want).abs() < tol,
                        "d {d} offset {offset}: {o} vs {want}"
                    );
                }
            }
            // A transposed view is made contiguous first; serial runs agree.
            let t = x.transpose(0, 1).unwrap();
            let want = norm.forward(&t.contiguous().unwrap()).unwrap();
            assert_eq!(max_abs_diff(&norm.forward(&t).unwrap(), &want), 0.0);
            let serial = with_serial_gemm(|| norm.forward(&t).unwrap());
            assert_eq!(max_abs_diff(&serial, &want), 0.0);
        }
    }

    #[test]
    fn layer_norm_without_f32_parameters_falls_back_to_candle() {
        let dev = Device::Cpu;
        let f16 = |t: Tensor| t.to_dtype(DType::F16).unwrap();
        let w = f16(Tensor::randn(0f32, 1.0, 16, &dev).unwrap());
        let b = f16(Tensor::randn(0f32, 1.0, 16, &dev).unwrap());
        let inner = candle_nn::LayerNorm::new(w, b, 1e-5);
        let norm = Norm::new(inner.clone()).unwrap();
        assert!(norm.params.is_none());
        let x = f16(Tensor::randn(0f32, 1.0, (3, 16), &dev).unwrap());
        let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        let got = f32(norm.forward(&x).unwrap());
        assert_eq!(max_abs_diff(&got, &f32(inner.forward(&x).unwrap())), 0.0);
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs() / f32::EPSILON);
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert!(exp(-200.0) < 2e-38 && exp(-200.0) >= 0.0);
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn quick_gelu_matches_the_op_by_op_formula() {
        // Wide enough to reach the clamped ends of the exponential.
        let x = (Tensor::randn(0f32, 4.0, (3, 70_000), &Device::Cpu).unwrap() * 20.0).unwrap();
        let reference = (&x * candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap()).unwrap();
        let got = quick_gelu(&x).unwrap();
        let scale = (x.abs().unwrap() + 1.0).unwrap();
        let rel = ((&got - &reference).unwrap().abs().unwrap() / scale).unwrap();
        let d = rel
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6, "{d}");
        // Non-contiguous input goes through a copy, not an error.
        let xt = x.t().unwrap();
        assert_eq!(quick_gelu(&xt).unwrap().dims(), &[70_000, 3]);
    }
}
