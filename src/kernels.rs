//! CPU fast paths for the few operations where candle's generic kernels cost
//! measurable time in PLIP: dense layers laid out for their matmul shape, a
//! fused QuickGELU, and the allocator setting that keeps big activation buffers
//! from being returned to the kernel after every op.
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
}

/// A dense layer `x W^T + b` that picks the faster matmul formulation for its
/// shape. candle's CPU matmul (the `gemm` crate) repacks its right-hand operand on
/// every call, and how much that costs depends on the operand's layout, measured
/// on the 2-core AVX-512 machine with `examples`-style timing of each shape:
///
/// * few rows (a text prompt is 3–77 tokens): `(W x^T)^T` packs the small `x`
///   instead of all of `W`; a 4×512 by 512×2048 product takes 0.31 ms instead of
///   1.1 ms, a 77-row one 1.2 instead of 1.6 ms;
/// * many rows, more inputs than outputs (`fc2`, 3072 → 768, and the 768 → 768
///   `out_proj`): `x W^T` with `W^T` made contiguous at load time, 17.5 instead of
///   25.4 ms for 800 rows;
/// * many rows otherwise (`qkv`, `fc1`): candle's `Linear` as is.
pub struct Dense {
    weight: Tensor,
    layout: WeightLayout,
    bias: Option<Tensor>,
}

/// Rows up to which `(W x^T)^T` is used for an [`WeightLayout::AsStored`] weight.
const FEW_ROWS: usize = 128;

/// Rows up to which [`few_rows_linear`] is used (a prompt of up to 16 tokens).
const GEMV_ROWS: usize = 16;

/// `x W^T + b` for a few rows of `x` on the CPU, streaming each row of `W` (in its
/// stored `[out, in]` layout) once, in parallel over blocks of output features.
///
/// A short prompt's text tower is bound by reading its 151 MB of weights; gemm's
/// kernels, built for large products, read them at about 8 GB/s there (70% of a
/// 4-token prompt's time in `perf`).
pub fn few_rows_linear(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (m, k) = xs.dims2()?;
    let (n, k2) = weight.dims2()?;
    if k != k2 {
        candle_core::bail!("dense layer: input has {k} features, the weight {k2}");
    }
    if m == 0 {
        return Tensor::zeros((0, n), DType::F32, xs.device());
    }
    let x = xs.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let (storage, layout) = weight.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("dense layer: weight is not on the CPU");
    };
    let w = contiguous_f32("dense layer", cpu, layout)?;
    let b = bias.map(|b| b.to_vec1::<f32>()).transpose()?;

    const BLOCK: usize = 64;
    let blocks: Vec<Vec<f32>> = w
        .par_chunks(BLOCK * k)
        .map(|w| {
            let mut out_t = vec![0f32; w.len() / k * m];
            gemv_block(&x, m, k, w, &mut out_t);
            out_t
        })
        .collect();
    let mut out = vec![0f32; m * n];
    for (bi, out_t) in blocks.iter().enumerate() {
        for (r, col) in out_t.chunks_exact(m).enumerate() {
            let j = bi * BLOCK + r;
            let bias = b.as_ref().map_or(0.0, |b| b[j]);
            for (i, v) in col.iter().enumerate() {
                out[i * n + j] = v + bias;
            }
        }
    }
    Tensor::from_vec(out, (m, n), xs.device())
}

/// `out[r * m + i] = x_i · w_r` for the rows `w_r` of `w` and `i < m`.
fn gemv_block(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if k.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
        let rows = w.len() / k;
        let quads = rows / 4 * 4;
        for r in (0..quads).step_by(4) {
            let w4 = &w[r * k..(r + 4) * k];
            for i0 in (0..m).step_by(4) {
                let mx = (m - i0).min(4);
                let xs = &x[i0 * k..(i0 + mx) * k];
                let mut acc = [[0f32; 4]; 4];
                // SAFETY: the CPU has avx512f; `w4` holds 4 rows and `xs` `mx` rows
                // of `k` values, `k` a multiple of 16, as the kernel requires.
                unsafe {
                    match mx {
                        1 => dots4_avx512::<1>(xs, w4, k, &mut acc),
                        2 => dots4_avx512::<2>(xs, w4, k, &mut acc),
                        3 => dots4_avx512::<3>(xs, w4, k, &mut acc),
                        _ => dots4_avx512::<4>(xs, w4, k, &mut acc),
                    }
                }
                for (dr, acc) in acc.iter().enumerate() {
                    out[(r + dr) * m + i0..(r + dr) * m + i0 + mx].copy_from_slice(&acc[..mx]);
                }
            }
        }
        gemv_scalar(x, m, k, &w[quads * k..], &mut out[quads * m..]);
        return;
    }
    gemv_scalar(x, m, k, w, out)
}

fn gemv_scalar(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
    for (w_row, out) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = dot(&x[i * k..(i + 1) * k], w_row);
        }
    }
}

/// `acc[r][i] = x_i · w_r` for 4 rows of `w` and `MX` rows of `x`: 4·MX
/// accumulators in registers, each 64-byte load of `w` used `MX` times.
///
/// # Safety
/// The CPU must have avx512f; `w` must hold 4 and `x` `MX` rows of `k` values,
/// with `k` a multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
// Index loops over the register arrays unroll to fixed registers.
#[allow(clippy::needless_range_loop)]
unsafe fn dots4_avx512<const MX: usize>(x: &[f32], w: &[f32], k: usize, acc: &mut [[f32; 4]; 4]) {
    use std::arch::x86_64::*;
    debug_assert!(k.is_multiple_of(16) && w.len() >= 4 * k && x.len() >= MX * k);
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut sums = [[_mm512_setzero_ps(); MX]; 4];
    let mut kk = 0;
    while kk < k {
        // SAFETY: kk + 16 <= k, and the rows are within the slices (see above).
        unsafe {
            let wv = [
                _mm512_loadu_ps(wp.add(kk)),
                _mm512_loadu_ps(wp.add(k + kk)),
                _mm512_loadu_ps(wp.add(2 * k + kk)),
                _mm512_loadu_ps(wp.add(3 * k + kk)),
            ];
            for i in 0..MX {
                let xv = _mm512_loadu_ps(xp.add(i * k + kk));
                for r in 0..4 {
                    sums[r][i] = _mm512_fmadd_ps(wv[r], xv, sums[r][i]);
                }
            }
        }
        kk += 16;
    }
    for r in 0..4 {
        for i in 0..MX {
            acc[r][i] = _mm512_reduce_add_ps(sums[r][i]);
        }
    }
}

impl Dense {
    /// Wraps a loaded linear layer, choosing the layout for a layer that will see
    /// many rows at once (`many_rows`) or only a few.
    pub fn new(linear: Linear, many_rows: bool) -> candle_core::Result<Self> {
        let (out, inp) = linear.weight().dims2()?;
        let (weight, layout) = if many_rows && out <= inp {
            (linear.weight().t()?.contiguous()?, WeightLayout::Transposed)
        } else {
            (linear.weight().contiguous()?, WeightLayout::AsStored)
        };
        Ok(Self {
            weight,
            layout,
            bias: linear.bias().cloned(),
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
            WeightLayout::AsStored if rows <= GEMV_ROWS && cpu_f32 => {
                few_rows_linear(xs, &self.weight, self.bias.as_ref())?
            }
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
    /// the outputs instead: 110 ms for a 77-token prompt against 56-60 ms.
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
        let bias = self.bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;

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
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 && !SERIAL_GEMM.get() {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
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
        if let Epilogue::QuickGelu = epilogue {
            out.par_chunks_mut(1 << 14).for_each(quick_gelu_in_place);
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
            .map(|task| {
                let (seq, h) = (task / heads, task % heads);
                let mut block = vec![0f32; len * dh];
                let qkv = &qkv[seq * len * three_d..(seq + 1) * len * three_d];
                attend(qkv, &mut block, len, heads, dh, h, self.causal);
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

/// Softmax over the first `seen` scores of `s` (16 per entry); the rest become
/// zero weights.
#[inline(always)]
fn softmax_prefix(s: &mut [[f32; LANES]], seen: usize) {
    let mut max = f32::NEG_INFINITY;
    for (jb, v) in s.iter().enumerate() {
        for (l, &x) in v.iter().enumerate() {
            max = max.max(if jb * LANES + l < seen {
                x
            } else {
                f32::NEG_INFINITY
            });
        }
    }
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
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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
                let transposed = many_rows && out <= inp;
                assert_eq!(dense.layout() == WeightLayout::Transposed, transposed);
                for rows in [
                    1,
                    3,
                    5,
                    GEMV_ROWS,
                    GEMV_ROWS + 1,
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
                        let got = dense.forward_with(&x, epilogue).unwrap();
                        assert_eq!(got.dims(), &[rows, out]);
                        let d = max_abs_diff(&got, &want);
                        assert!(
                            d < 1e-4,
                            "{out}x{inp}, rows {rows}, many_rows {many_rows}, {epilogue:?}: {d}"
                        );
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
