//! The one place that picks SIMD code paths at run time (for the model's kernels in
//! `backend::cpu` too), and the one dot product.
//!
//! [`multiversion!`] compiles a plain-Rust kernel for AVX-512 and AVX2 and picks
//! the best the CPU has, once per call. [`dot`] is the dot product that every
//! score in plip goes through (exact search, the HNSW graph, eval), with the same
//! arithmetic in the same order on every CPU, so a score never depends on the
//! machine; [`dot_portable`] is the same function for kernels that are already
//! compiled for a target.

/// Defines `fn $name(args)` that runs `$generic(args)` compiled for AVX-512 or AVX2
/// when the CPU has them (checked at run time), else for the baseline target.
/// `$generic` must be `#[inline(always)]` and written so that it vectorizes.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $generic:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
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

/// Dot product with 16 independent partial sums, reduced pairwise.
/// Symmetric bit for bit: `dot(a, b) == dot(b, a)`.
///
/// On x86-64 it runs on AVX-512 or AVX2 registers when the CPU has them (the
/// crate is compiled for baseline x86-64, where this is four SSE registers).
/// Every variant does the same arithmetic in the same order, so scores do not
/// depend on the CPU.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// [`dot`] in plain Rust, which the compiler vectorizes for the target. Kernels
/// that are themselves compiled for AVX-512 or AVX2 call this one, so that it is
/// inlined with their target features instead of dispatching per call.
#[inline(always)]
pub(crate) fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    reduce(acc, a, b)
}

/// `out[r * nq + q] = dot(rows[r], queries[q])` for every row of `rows` and every
/// query of `queries` (both row-major with `dim` columns; `nq = queries.len() /
/// dim`), bit for bit what [`dot`] gives. On AVX-512, eight (then four) queries are
/// scored against a row at once as independent sums: one load of the row feeds
/// them all, and their additions overlap instead of waiting on one another
/// (exact search of many queries at once, `plip serve`).
pub(crate) fn dot_rows(rows: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    if dim == 0 {
        return;
    }
    let nq = queries.len() / dim;
    let n = (rows.len() / dim).min(out.len() / nq.max(1));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe {
            dot_rows_avx512(
                &rows[..n * dim],
                &queries[..nq * dim],
                dim,
                &mut out[..n * nq],
            )
        };
        return;
    }
    for (row, out) in rows.chunks_exact(dim).zip(out.chunks_exact_mut(nq)).take(n) {
        for (query, o) in queries.chunks_exact(dim).zip(out) {
            *o = dot(row, query);
        }
    }
}

/// [`dot_rows`] on AVX-512 registers.
///
/// # Safety
/// The CPU must have AVX-512F. `rows` holds `n * dim` values, `queries` `nq * dim`
/// and `out` `n * nq` (checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_rows_avx512(rows: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    let nq = queries.len() / dim;
    assert_eq!(queries.len(), nq * dim);
    assert_eq!(rows.len() / dim * nq, out.len());
    for (row, out) in rows.chunks_exact(dim).zip(out.chunks_exact_mut(nq)) {
        let mut q = 0;
        while q + 8 <= nq {
            // SAFETY: 8 whole queries from q; the CPU has AVX-512F.
            unsafe { dots_avx512::<8>(row, &queries[q * dim..(q + 8) * dim], &mut out[q..q + 8]) };
            q += 8;
        }
        while q + 4 <= nq {
            // SAFETY: as above, 4 queries.
            unsafe { dots_avx512::<4>(row, &queries[q * dim..(q + 4) * dim], &mut out[q..q + 4]) };
            q += 4;
        }
        while q < nq {
            // SAFETY: the CPU has AVX-512F.
            out[q] = unsafe { dot_avx512(row, &queries[q * dim..(q + 1) * dim]) };
            q += 1;
        }
    }
}

/// `Q` dot products of `row` with the `Q` rows of `qs`, each with the arithmetic
/// of [`dot_avx512`] (multiply, then add, per lane; then [`reduce`]).
///
/// # Safety
/// The CPU must have AVX-512F. `qs` holds `Q * row.len()` values and `out` `Q`
/// (checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dots_avx512<const Q: usize>(row: &[f32], qs: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = row.len();
    assert!(qs.len() == Q * dim && out.len() == Q);
    let mut acc = [_mm512_setzero_ps(); Q];
    let (r, y) = (row.as_ptr(), qs.as_ptr());
    for c in 0..dim / LANES {
        // SAFETY: lanes c*16..c*16+16 lie in `row` and in each query of `qs`
        // (lengths checked above); unaligned loads.
        unsafe {
            let x = _mm512_loadu_ps(r.add(c * LANES));
            for (j, acc) in acc.iter_mut().enumerate() {
                let yj = _mm512_loadu_ps(y.add(j * dim + c * LANES));
                *acc = _mm512_add_ps(*acc, _mm512_mul_ps(x, yj));
            }
        }
    }
    for (j, (acc, out)) in acc.into_iter().zip(out).enumerate() {
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` holds 16 f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        *out = reduce(lanes, row, &qs[j * dim..(j + 1) * dim]);
    }
}

/// The partial sums of [`dot`]: one AVX-512 register, or two AVX2 ones.
pub(crate) const LANES: usize = 16;

/// The pairwise sum of the 16 lanes, plus the products of the elements past the
/// last full group of 16.
#[inline(always)]
fn reduce(mut acc: [f32; LANES], a: &[f32], b: &[f32]) -> f32 {
    let full = a.len() / LANES * LANES;
    let mut tail = 0.0f32;
    for (x, y) in a[full..].iter().zip(&b[full..]) {
        tail += x * y;
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0] + tail
}

/// [`dot`] on one AVX-512 register: multiply, then add (no FMA, as in the
/// portable loop).
///
/// # Safety
/// The CPU must have AVX-512F. `a` and `b` must have the same length (checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert_eq!(a.len(), b.len());
    let mut acc = _mm512_setzero_ps();
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        // SAFETY: each chunk holds 16 f32; unaligned loads.
        let (x, y) = unsafe { (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(y.as_ptr())) };
        acc = _mm512_add_ps(acc, _mm512_mul_ps(x, y));
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: `lanes` holds 16 f32.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
    reduce(lanes, a, b)
}

/// [`dot`] on two AVX2 registers (lanes 0-7 and 8-15).
///
/// # Safety
/// The CPU must have AVX2. `a` and `b` must have the same length (checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert_eq!(a.len(), b.len());
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        // SAFETY: each chunk holds 16 f32; unaligned loads of 8 at 0 and 8.
        unsafe {
            let (x0, y0) = (_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
            let (x1, y1) = (
                _mm256_loadu_ps(x.as_ptr().add(8)),
                _mm256_loadu_ps(y.as_ptr().add(8)),
            );
            lo = _mm256_add_ps(lo, _mm256_mul_ps(x0, y0));
            hi = _mm256_add_ps(hi, _mm256_mul_ps(x1, y1));
        }
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: `lanes` holds 16 f32.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
    }
    reduce(lanes, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stand-in for normal samples (the sum of four uniforms).
    fn gauss(state: &mut u64) -> f32 {
        (0..4)
            .map(|_| {
                *state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .sum()
    }

    #[test]
    fn dot_rows_equals_dot_bit_for_bit() {
        let mut state = 5u64;
        for dim in [1, 16, 17, 512] {
            for nq in [1, 3, 4, 5, 8, 13, 16] {
                let rows: Vec<f32> = (0..7 * dim).map(|_| gauss(&mut state)).collect();
                let qs: Vec<f32> = (0..nq * dim).map(|_| gauss(&mut state)).collect();
                let mut out = vec![f32::NAN; 7 * nq];
                dot_rows(&rows, &qs, dim, &mut out);
                for (r, row) in rows.chunks_exact(dim).enumerate() {
                    for (q, query) in qs.chunks_exact(dim).enumerate() {
                        assert_eq!(
                            out[r * nq + q].to_bits(),
                            dot(row, query).to_bits(),
                            "dim {dim} nq {nq} row {r} query {q}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dot_is_the_same_on_every_instruction_set() {
        let mut state = 11u64;
        for len in [0, 1, 15, 16, 17, 100, 512, 515] {
            let a: Vec<f32> = (0..len).map(|_| gauss(&mut state)).collect();
            let b: Vec<f32> = (0..len).map(|_| gauss(&mut state)).collect();
            let want = dot_portable(&a, &b);
            assert_eq!(dot(&a, &b).to_bits(), want.to_bits(), "len {len}");
            assert_eq!(dot(&b, &a).to_bits(), want.to_bits(), "len {len}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: checked just above.
                assert_eq!(unsafe { dot_avx2(&a, &b) }.to_bits(), want.to_bits());
            }
        }
    }
}
