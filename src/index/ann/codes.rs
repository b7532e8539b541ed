//! 8-bit codes of the vectors, which the graph walk scores instead of the f32
//! rows (a quarter of the memory traffic); the final candidates are rescored on
//! the f32 rows, so hits and scores stay exact.

use super::*;

/// 8-bit copies of the vectors, a quarter of their size, that the layer-0 walk
/// scores instead of the `f32` rows; the candidates it ends with are then
/// scored again on the `f32` rows (see [`AnnGraph::search`]).
///
/// Row `i` is `round(v_i * 127 / max|v_i|)`. A code's cosine with an `f32`
/// query, `q . c / |c|`, is within about `1e-3` of the exact one for 512-d
/// unit vectors; dividing by the code's own norm, computed along with the dot
/// product, needs no per-row scale, which would be one more cache miss per
/// row. At a million vectors nearly every row the walk reads misses the
/// caches, and a code is 8 cache lines where the `f32` row is 32.
///
/// A few dimensions much larger than the rest, as CLIP embeddings have,
/// coarsen the steps of every other value. With four such dimensions the walk
/// still matched the `f32` walk's recall@10 (30k points: 0.9979 vs 0.9978 at
/// ef 128; `benches/ann_study.rs measure` with `ANN_DATA=outliers`).
///
/// The codes live in an anonymous mapping that Linux is asked to back with
/// 2 MB pages: with 4 KB pages nearly every row read also missed the TLB, and
/// at 1M points the walk took 30% longer (alternating A/B runs on the bench
/// graph; the same advice for the `f32` rows had gained nothing).
pub(crate) struct Codes {
    pub(crate) dim: usize,
    map: memmap2::MmapMut,
}

impl Clone for Codes {
    fn clone(&self) -> Codes {
        let mut map = memmap2::MmapMut::map_anon(self.map.len())
            .unwrap_or_else(|e| panic!("cannot map {} bytes: {e}", self.map.len()));
        map.copy_from_slice(&self.map);
        Codes { dim: self.dim, map }
    }
}

impl PartialEq for Codes {
    fn eq(&self, other: &Codes) -> bool {
        self.dim == other.dim && self.map[..] == other.map[..]
    }
}

impl std::fmt::Debug for Codes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codes")
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Codes {
    /// The codes of `vectors`; `None` when `dim` is 0 or the memory cannot be
    /// mapped (the walk then reads the `f32` rows).
    pub(crate) fn new(vectors: &[f32], dim: usize) -> Option<Codes> {
        if dim == 0 {
            return None;
        }
        let len = vectors.len() / dim * dim;
        let mut map = memmap2::MmapMut::map_anon(len.max(1)).ok()?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage); // only a hint
        map[..len]
            .par_chunks_mut(dim)
            .zip(vectors.par_chunks(dim))
            .for_each(|(code, row)| encode(row, code));
        Some(Codes { dim, map })
    }

    #[inline(always)]
    pub(crate) fn row(&self, id: u32) -> &[i8] {
        let row = &self.map[id as usize * self.dim..(id as usize + 1) * self.dim];
        bytemuck::cast_slice(row)
    }

    /// Approximate cosine distance of `query` to point `id`.
    #[inline(always)]
    pub(crate) fn distance(&self, query: &[f32], id: u32) -> f32 {
        let (qc, cc) = dot_i8(query, self.row(id));
        if cc > 0.0 {
            1.0 - qc / cc.sqrt()
        } else {
            1.0
        }
    }
}

/// Writes `round(x * 127 / max|x|)` of each `x` in `row` to `code`, as `i8`
/// bits. Written so that both loops vectorize on baseline x86-64 (`f32::max`
/// and `as i32` do not: they handle NaN, which `row` never holds).
#[inline]
pub(crate) fn encode(row: &[f32], code: &mut [u8]) {
    let mut lanes = [0f32; LANES];
    for chunk in row.chunks_exact(LANES) {
        for (m, x) in lanes.iter_mut().zip(chunk) {
            let a = x.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let tail = row.chunks_exact(LANES).remainder();
    let max = lanes
        .iter()
        .chain(tail)
        .fold(0f32, |m, x| if x.abs() > m { x.abs() } else { m });
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    // Adding 1.5 * 2^23 rounds |y| <= 127.x to an integer (ties to even) in
    // the low mantissa bits, from which the integer is read back.
    const MAGIC: f32 = 12_582_912.0;
    for (c, x) in code.iter_mut().zip(row) {
        let y = (x * inv).clamp(-127.0, 127.0);
        *c = ((y + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as u8;
    }
}

/// `(q . c, c . c)` over `min(q.len(), c.len())` elements.
#[inline]
pub(crate) fn dot_i8(q: &[f32], c: &[i8]) -> (f32, f32) {
    let n = q.len().min(c.len());
    let (q, c) = (&q[..n], &c[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { dot_i8_avx512(q, c) };
        }
    }
    dot_i8_portable(q, c)
}

/// The products of the elements past the last full group of `width`.
#[inline(always)]
fn dot_i8_tail(q: &[f32], c: &[i8], width: usize) -> (f32, f32) {
    let full = q.len() / width * width;
    q[full..]
        .iter()
        .zip(&c[full..])
        .fold((0.0, 0.0), |(qc, cc), (x, &y)| {
            let y = f32::from(y);
            (qc + x * y, cc + y * y)
        })
}

#[inline(always)]
pub(crate) fn dot_i8_portable(q: &[f32], c: &[i8]) -> (f32, f32) {
    let (mut qc, mut cc) = ([0.0f32; LANES], [0.0f32; LANES]);
    for (x, y) in q.chunks_exact(LANES).zip(c.chunks_exact(LANES)) {
        for i in 0..LANES {
            let y = f32::from(y[i]);
            qc[i] += x[i] * y;
            cc[i] += y * y;
        }
    }
    let (tq, tc) = dot_i8_tail(q, c, LANES);
    (qc.iter().sum::<f32>() + tq, cc.iter().sum::<f32>() + tc)
}

/// [`dot_i8`] on AVX-512 registers.
///
/// # Safety
/// The CPU must have AVX-512F. `q` and `c` must have the same length
/// (checked: the loads below rely on it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_i8_avx512(q: &[f32], c: &[i8]) -> (f32, f32) {
    use std::arch::x86_64::*;
    assert_eq!(q.len(), c.len(), "dot_i8_avx512 needs equal lengths");
    let (mut q0, mut q1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (mut c0, mut c1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let pairs = q.len() / 32;
    for i in 0..pairs {
        // SAFETY: `i * 32 + 32 <= len` for both slices; unaligned loads.
        unsafe {
            let (qp, cp) = (q.as_ptr().add(i * 32), c.as_ptr().add(i * 32));
            let f0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(cp.cast())));
            let f1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(cp.add(16).cast())));
            q0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp), f0, q0);
            q1 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(16)), f1, q1);
            c0 = _mm512_fmadd_ps(f0, f0, c0);
            c1 = _mm512_fmadd_ps(f1, f1, c1);
        }
    }
    let (tq, tc) = dot_i8_tail(q, c, 32);
    (
        _mm512_reduce_add_ps(_mm512_add_ps(q0, q1)) + tq,
        _mm512_reduce_add_ps(_mm512_add_ps(c0, c1)) + tc,
    )
}
