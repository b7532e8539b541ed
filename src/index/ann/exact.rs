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
    exact_search_many(vectors, dim, &[query], k, &[allow])
        .pop()
        .unwrap_or_default()
}

/// A filter of rows by id, one per query of [`exact_search_many`].
pub(crate) type RowFilter<'a> = Option<&'a (dyn Fn(usize) -> bool + Sync)>;

/// [`exact_search`] for several queries in one pass over the rows: each row is
/// read from memory once and scored against every query while it is in cache,
/// so a batch of queries costs little more memory traffic than one (what
/// `plip serve` does with concurrent requests). Result `i` is exactly what
/// `exact_search` gives for `queries[i]` and `allow[i]`.
///
/// A filter is asked only about rows whose score would enter its query's top
/// `k`, so a costly filter (a path prefix, tombstones) runs on few rows.
pub(crate) fn exact_search_many(
    vectors: &[f32],
    dim: usize,
    queries: &[&[f32]],
    k: usize,
    allow: &[RowFilter<'_>],
) -> Vec<Vec<Hit>> {
    assert_eq!(queries.len(), allow.len(), "one filter per query");
    let mut out = vec![Vec::new(); queries.len()];
    let n = vectors.len().checked_div(dim).unwrap_or(0);
    let k = k.min(n);
    let live: Vec<usize> = (0..queries.len())
        .filter(|&i| {
            let q = queries[i];
            dim > 0 && k > 0 && q.len() == dim && q.iter().all(|x| x.is_finite())
        })
        .collect();
    if live.is_empty() {
        return out;
    }
    // The live queries, row-major, as `dot_rows` takes them.
    let flat: Vec<f32> = live.iter().flat_map(|&i| queries[i]).copied().collect();
    let filters: Vec<RowFilter<'_>> = live.iter().map(|&i| allow[i]).collect();
    let rows = &vectors[..n * dim];
    let scan = |chunk: &[f32], first_id: usize| scan_rows(chunk, first_id, &flat, dim, k, &filters);
    let tops = if n < EXACT_PAR_MIN_ROWS {
        scan(rows, 0)
    } else {
        rows.par_chunks(EXACT_CHUNK_ROWS * dim)
            .enumerate()
            .map(|(ci, chunk)| scan(chunk, ci * EXACT_CHUNK_ROWS))
            .reduce(
                || live.iter().map(|_| TopK::new(k)).collect(),
                |a, b| a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect(),
            )
    };
    for (i, top) in live.into_iter().zip(tops) {
        out[i] = top.finish();
    }
    out
}

/// Rows scored at a time by [`scan_rows`] (their scores stay in cache).
const SCORE_BLOCK_ROWS: usize = 256;

/// Top-`k` of the rows of `chunk` (ids from `first_id`) by dot product with
/// each query of `queries` (row-major, `dim` columns; one filter each).
fn scan_rows(
    chunk: &[f32],
    first_id: usize,
    queries: &[f32],
    dim: usize,
    k: usize,
    allow: &[RowFilter<'_>],
) -> Vec<TopK> {
    let nq = allow.len();
    let mut tops: Vec<TopK> = allow.iter().map(|_| TopK::new(k)).collect();
    let mut scores = vec![0.0f32; SCORE_BLOCK_ROWS * nq];
    for (b, block) in chunk.chunks(SCORE_BLOCK_ROWS * dim).enumerate() {
        let rows = block.len() / dim;
        let scores = &mut scores[..rows * nq];
        dot_rows(&block[..rows * dim], queries, dim, scores);
        for (r, row_scores) in scores.chunks_exact(nq).enumerate() {
            let id = first_id + b * SCORE_BLOCK_ROWS + r;
            for ((&d, top), filter) in row_scores.iter().zip(&mut tops).zip(allow) {
                let Some(score) = score_from_dot(d) else {
                    continue;
                };
                let hit = Hit { id, score };
                if top.admits(&hit) && filter.is_none_or(|f| f(id)) {
                    top.push(hit);
                }
            }
        }
    }
    tops
}
