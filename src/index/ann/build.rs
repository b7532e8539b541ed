//! Building a graph: hnsw_rs inserts the points, the links are copied into
//! compact arrays, and every point that a search for its own vector cannot find is
//! given extra links (the repair step, needed because contended parallel insertion
//! in hnsw_rs leaves points unfindable). Also the search entry points.

use super::*;

/// Number of own-vector results checked for findability.
const FINDABILITY_K: usize = 10;

impl AnnGraph {
    /// Builds the graph over the rows of a row-major `n x dim` matrix of
    /// L2-normalized vectors; ids are row indices.
    ///
    /// By default insertion into `hnsw_rs` is serial, so the graph is
    /// deterministic. Measured at 100k x 512-d clustered data on 2 busy
    /// cores: serial 390 s, parallel 275 s; points not found by their own
    /// vector before repair: serial 288, parallel 90; 0 for both after;
    /// recall@10 at ef=64: 0.9997 vs 0.9999. So parallel insertion is not
    /// less correct once checked and repaired (with `Hnsw::search` instead
    /// of ours both looked far worse: 3.8% / 4.4% unfound); it is opt-in
    /// ([`AnnParams::parallel_insert`]) only because it is not
    /// reproducible.
    ///
    /// After insertion every point is searched with its own vector
    /// (parallel; each pass costs about a tenth of the insertion time, and
    /// 2-3 passes are typical); points not returned get links from their
    /// nearest reachable neighbours until all are found (see [`BuildStats`],
    /// available from [`AnnGraph::build_stats`]).
    ///
    /// Errors if `dim == 0`, the length is not a multiple of `dim`, or a row
    /// is non-finite or not unit-norm (within 1e-2). Needs about twice the
    /// final memory while building (hnsw_rs's copy).
    pub fn build(vectors: &[f32], dim: usize, params: &AnnParams) -> Result<AnnGraph, AnnError> {
        Self::build_owned(vectors.to_vec(), dim, params)
    }

    /// [`AnnGraph::build`] taking the matrix by value, which the graph then
    /// keeps, so there is no second copy of it.
    pub fn build_owned(
        vectors: Vec<f32>,
        dim: usize,
        params: &AnnParams,
    ) -> Result<AnnGraph, AnnError> {
        let n = check_input(&vectors, dim)?;
        let params = params.clamped();
        if n == 0 {
            return Ok(AnnGraph {
                dim,
                params,
                vectors: Vectors::Owned(Vec::new()),
                base: Csr::from_lists(&[]),
                upper: Vec::new(),
                entry: 0,
                stats: Some(BuildStats::default()),
                codes: Codes::new(&[], dim),
            });
        }
        let mut lists = {
            let hnsw: Hnsw<'_, f32, UnitCosine> = Hnsw::new(
                params.max_connections,
                n,
                MAX_LEVELS + 1,
                params.ef_construction,
                UnitCosine,
            );
            if params.parallel_insert {
                let data: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..n).collect();
                hnsw.parallel_insert_slice(&data);
            } else {
                for (id, row) in vectors.chunks_exact(dim).enumerate() {
                    hnsw.insert_slice((row, id));
                }
            }
            extract(&hnsw, n)
        };
        let entry = lists.trim_top();
        let top = lists.adj.len() - 1;
        // hnsw_rs' copy is gone: the codes do not add to the peak
        let codes = Codes::new(&vectors, dim);
        let stats = repair(&mut lists, entry, &vectors, dim, codes.as_ref(), &params);
        let upper = (1..=top)
            .map(|l| {
                let nodes: Vec<u32> = (0..n as u32)
                    .filter(|&i| lists.level[i as usize] as usize >= l)
                    .collect();
                let rows: Vec<Vec<u32>> = nodes
                    .iter()
                    .map(|&i| std::mem::take(&mut lists.adj[l][i as usize]))
                    .collect();
                UpperLayer {
                    nodes,
                    adj: Csr::from_lists(&rows),
                }
            })
            .collect();
        Ok(AnnGraph {
            codes,
            dim,
            params,
            vectors: Vectors::Owned(vectors),
            base: Csr::from_lists(&lists.adj[0]),
            upper,
            entry,
            stats: Some(stats),
        })
    }

    /// Number of vectors in the graph.
    pub fn len(&self) -> usize {
        self.base.offsets.len() - 1
    }

    /// True when the graph holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Construction parameters (after clamping).
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Findability check results, for a graph built in this process (`None`
    /// after [`AnnGraph::load`]).
    pub fn build_stats(&self) -> Option<BuildStats> {
        self.stats
    }

    /// The stored vectors, row-major `len x dim` (row = id).
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Whether [`AnnGraph::search`] walks layer 0 on 8-bit codes of the
    /// vectors, then scores the `ef` candidates it found on the `f32` vectors.
    ///
    /// On by default. The walk is bound by memory reads, and a code is a
    /// quarter of a row: at ef 256 a query took 0.39 instead of 0.69 ms at
    /// 20k points, and 1.24 instead of 2.44 ms at 1M, with recall@10 within
    /// 0.001 of the `f32` walk (`benches/hnsw.rs`). The codes are built when
    /// the graph is built or loaded (0.4 s per million 512-d points on two
    /// cores) and are not stored in the file. The hits returned and their
    /// scores are exact for the candidates found; only which candidates the
    /// walk finds can differ.
    pub fn coded_walk(&self) -> bool {
        self.codes.is_some()
    }

    /// Turns the 8-bit walk of [`AnnGraph::coded_walk`] on (building the
    /// codes, a quarter of the vectors' memory) or off (freeing them). It
    /// stays off if the memory for the codes cannot be mapped.
    pub fn set_coded_walk(&mut self, on: bool) {
        match (on, &self.codes) {
            (true, None) => self.codes = Codes::new(&self.vectors, self.dim),
            (false, Some(_)) => self.codes = None,
            _ => {}
        }
    }

    /// Approximate top-`k` by cosine similarity.
    ///
    /// `ef` is the candidate list size (use [`DEFAULT_EF_SEARCH`]); it is
    /// raised to `k` when smaller. `allow` hides ids for which it returns
    /// false (e.g. tombstones); hidden ids are never returned. Layer 0 is
    /// walked on 8-bit codes when [`AnnGraph::coded_walk`] is on; scores are
    /// always computed on the `f32` vectors.
    ///
    /// Returns `min(k, number of allowed points)` hits, sorted by score
    /// descending then id ascending: when the graph walk yields fewer (heavy
    /// filtering), it falls back to [`exact_search`] over the stored
    /// vectors, O(n). Returns an empty vector if `k == 0`, the graph is
    /// empty, `query.len() != self.dim()` or the query is not finite.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<Hit> {
        if k == 0 || self.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Vec::new();
        }
        let want = k.min(self.len());
        let found = hnsw_search(
            self,
            &self.vectors,
            self.dim,
            self.codes.as_ref(),
            query,
            ef.max(want),
            allow,
        );
        if found.len() < want {
            return exact_search(&self.vectors, self.dim, query, want, allow);
        }
        let mut hits: Vec<Hit> = found
            .iter()
            .map(|c| Hit {
                id: c.id as usize,
                score: score_from_distance(c.d),
            })
            .collect();
        sort_hits(&mut hits);
        hits.truncate(want);
        hits
    }
}

/// Searches `id`'s own vector; `None` if it is found, else the nearest
/// points the search reached (all of them were expanded by the search, so
/// a link from them to `id` makes the same search find `id`).
pub(crate) fn missed_by_search<T: Topology>(
    g: &T,
    vectors: &[f32],
    dim: usize,
    codes: Option<&Codes>,
    id: u32,
    fan_in: usize,
) -> Option<Vec<u32>> {
    let i = id as usize;
    let q = &vectors[i * dim..(i + 1) * dim];
    let res = hnsw_search(g, vectors, dim, codes, q, REPAIR_EF, None);
    let top = &res[..res.len().min(FINDABILITY_K)];
    if top.iter().any(|c| c.id == id) {
        return None;
    }
    // duplicates: a full top-k at least as close as `id` itself is fine
    let own = UnitCosine.eval(q, q);
    if top.len() == FINDABILITY_K && top.iter().all(|c| c.d <= own) {
        return None;
    }
    Some(
        res.iter()
            .filter(|c| c.id != id)
            .take(fan_in)
            .map(|c| c.id)
            .collect(),
    )
}

/// Makes every point findable by its own vector: each point the search
/// misses gets links from the `M/2` nearest points that search reached, and
/// is searched again until it is found.
///
/// New links also change other points' searches (at 100k points, repairing
/// 288 points hid 8 others), so a full check of all points follows each
/// repair, up to [`MAX_FULL_CHECKS`]. Only the repaired points are re-checked
/// between full checks: at 1M points one full check is a million searches,
/// and checking everything after every round made the build hours long.
///
/// `codes` are those the finished graph walks on, so that the check is made
/// with the search the graph will answer with.
fn repair(
    lists: &mut Lists,
    entry: u32,
    vectors: &[f32],
    dim: usize,
    codes: Option<&Codes>,
    p: &AnnParams,
) -> BuildStats {
    /// Rounds of linking and re-checking the missed points, per full check.
    const MAX_ROUNDS: usize = 4;
    let n = lists.level.len() as u32;
    let fan_in = p.max_connections.div_ceil(2);
    let started = std::time::Instant::now();
    let mut searches = 0usize;
    let mut check = |lists: &Lists, ids: Vec<u32>| -> Vec<(u32, Vec<u32>)> {
        searches += ids.len();
        let view = ListsView { lists, entry };
        ids.into_par_iter()
            .filter_map(|id| {
                missed_by_search(&view, vectors, dim, codes, id, fan_in).map(|s| (id, s))
            })
            .collect()
    };
    let mut stats = BuildStats::default();
    for pass in 0..MAX_FULL_CHECKS {
        let mut todo = check(lists, (0..n).collect());
        stats.full_checks += 1;
        if pass == 0 {
            stats.unfindable_before_repair = todo.len();
        }
        stats.unfindable_after_repair = todo.len();
        if todo.is_empty() {
            break;
        }
        for _ in 0..MAX_ROUNDS {
            for (id, sources) in &todo {
                for &s in sources {
                    let list = &mut lists.adj[0][s as usize];
                    if !list.contains(id) {
                        list.push(*id);
                    }
                }
            }
            let ids = todo.iter().map(|t| t.0).collect();
            todo = check(lists, ids);
            if todo.is_empty() {
                break;
            }
        }
        stats.unfindable_after_repair = todo.len();
    }
    stats.searches = searches;
    stats.repair_ms = started.elapsed().as_millis() as u64;
    stats
}

//
// One file, `{basename}.ann`, little-endian:
//
//   magic "PLIPANN\0" | version u32 = 1 | flags u32 (bit 0: parallel_insert,
//                                                      bit 1: vectors kept elsewhere)
//   n u64 | dim u64 | max_connections u64 | ef_construction u64
//   entry u64 | levels u64 (number of upper layers)
//   layer 0:      offsets (n+1) x u64 | targets offsets[n] x u32
//   layer 1..=levels: count u64 | nodes count x u32
//                 | offsets (count+1) x u64 | targets x u32
//   vectors       n x dim x f32, or with flag bit 1 the crc32 u32 of their
//                 little-endian bytes (the caller stores them, see
//                 `AnnGraph::save_links`)
//   crc32 u32 of all bytes before it
//
// It is written to a temporary file in the same directory, fsynced, renamed
// over the final name, and the directory is fsynced: readers see the old or
// the new index, never a mix.
