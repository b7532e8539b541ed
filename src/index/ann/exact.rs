//! Exact top-k search by scanning every row: what `plip search` uses unless
//! `--ef` is given, and the oracle the graph is tested against.

use super::*;

/// Rows per rayon task in [`exact_search`].
const EXACT_CHUNK_ROWS: usize = 8192;
/// Below this many rows [`exact_search`] stays on the calling thread.
const EXACT_PAR_MIN_ROWS: usize = 32768;

/// Brute-force top-`k` by dot product over a row-major `n x dim` matrix.
///
/// Same ordering and score rules as [`AnnGraph::search`]. Rows whose score is
/// NaN are skipped; a trailing partial row is ignored. Returns an empty vector
/// when `dim == 0`, `k == 0`, `query.len() != dim` or the query is not finite.
/// Runs on the rayon pool when `n >= 32768`.
pub fn exact_search(
    vectors: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> Vec<Hit> {
    if dim == 0 || k == 0 || query.len() != dim || query.iter().any(|x| !x.is_finite()) {
        return Vec::new();
    }
    let n = vectors.len() / dim;
    let rows = &vectors[..n * dim];
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let scan = |chunk: &[f32], first_id: usize| scan_rows(chunk, first_id, query, k, allow);
    if n < EXACT_PAR_MIN_ROWS {
        return scan(rows, 0).finish();
    }
    rows.par_chunks(EXACT_CHUNK_ROWS * dim)
        .enumerate()
        .map(|(ci, chunk)| scan(chunk, ci * EXACT_CHUNK_ROWS))
        .reduce(|| TopK::new(k), TopK::merge)
        .finish()
}

/// Top-`k` of the rows of `chunk` (ids from `first_id`) by dot product with
/// `query`.
fn scan_rows(
    chunk: &[f32],
    first_id: usize,
    query: &[f32],
    k: usize,
    allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> TopK {
    let mut top = TopK::new(k);
    for (i, row) in chunk.chunks_exact(query.len()).enumerate() {
        let id = first_id + i;
        if allow.is_some_and(|f| !f(id)) {
            continue;
        }
        if let Some(score) = score_from_dot(dot(row, query)) {
            top.push(Hit { id, score });
        }
    }
    top
}
