//! The graph's compact form (CSR adjacency for layer 0, sparse upper layers)
//! and the textbook HNSW search over it, generic over where the links live so
//! that the repair step can search the graph while it is still being built.

use super::*;

/// Adjacency lists in CSR form: the neighbours of node `i` are
/// `targets[offsets[i]..offsets[i + 1]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Csr {
    pub(crate) offsets: Vec<u64>,
    pub(crate) targets: Vec<u32>,
}

impl Csr {
    pub(crate) fn from_lists(lists: &[Vec<u32>]) -> Csr {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        let mut targets = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        offsets.push(0);
        for l in lists {
            targets.extend_from_slice(l);
            offsets.push(targets.len() as u64);
        }
        Csr { offsets, targets }
    }

    #[inline]
    pub(crate) fn row(&self, i: usize) -> &[u32] {
        &self.targets[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// An upper layer: the sorted ids present on it and their adjacency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UpperLayer {
    pub(crate) nodes: Vec<u32>,
    pub(crate) adj: Csr,
}

impl UpperLayer {
    #[inline]
    fn neighbours(&self, id: u32) -> &[u32] {
        match self.nodes.binary_search(&id) {
            Ok(i) => self.adj.row(i),
            Err(_) => &[],
        }
    }
}

/// Row-major vectors shared between a graph and their owner, for example the
/// mapped file of an index segment (see [`AnnGraph::load_with_shared_vectors`]).
pub(crate) type SharedVectors = Arc<dyn AsRef<[f32]> + Send + Sync>;

/// The vectors a graph searches: its own, or shared.
#[derive(Clone)]
pub(crate) enum Vectors {
    Owned(Vec<f32>),
    Shared(SharedVectors),
}

impl std::ops::Deref for Vectors {
    type Target = [f32];

    #[inline]
    fn deref(&self) -> &[f32] {
        match self {
            Vectors::Owned(v) => v,
            Vectors::Shared(v) => (**v).as_ref(),
        }
    }
}

impl PartialEq for Vectors {
    fn eq(&self, other: &Vectors) -> bool {
        **self == **other
    }
}

/// An HNSW graph over `n` unit vectors with ids `0..n`.
///
/// Owned, `'static`, `Send + Sync`; searches may run concurrently.
/// Memory: the vectors (`4 * dim` bytes per point) plus the links, about
/// 120 bytes per point at default parameters (measured 28 layer-0 links per
/// point at 100k; `hnsw_rs` keeps each link as an `Arc`, roughly 10x more),
/// plus `dim` bytes per point of 8-bit codes (see [`AnnGraph::coded_walk`]).
#[derive(Clone, PartialEq)]
pub struct AnnGraph {
    pub(crate) dim: usize,
    pub(crate) params: AnnParams,
    /// Row-major `len x dim`.
    pub(crate) vectors: Vectors,
    /// Layer 0, one row per id.
    pub(crate) base: Csr,
    /// `upper[l - 1]` is layer `l`; each layer's nodes are a subset of the
    /// layer below.
    pub(crate) upper: Vec<UpperLayer>,
    /// Search entry point: a node of the top layer (0 when empty).
    pub(crate) entry: u32,
    pub(crate) stats: Option<BuildStats>,
    /// What layer 0 is walked on, when not the `f32` rows.
    pub(crate) codes: Option<Codes>,
}

impl std::fmt::Debug for AnnGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnGraph")
            .field("len", &self.len())
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("levels", &self.upper.len())
            .field("links", &self.base.targets.len())
            .finish_non_exhaustive()
    }
}

/// Tolerance on `| ||v|| - 1 |` accepted by [`AnnGraph::build`].
const NORM_TOLERANCE: f32 = 1e-2;

pub(crate) fn check_input(vectors: &[f32], dim: usize) -> Result<usize, AnnError> {
    if dim == 0 {
        return Err(AnnError::InvalidInput("dimension is 0".into()));
    }
    if !vectors.len().is_multiple_of(dim) {
        return Err(AnnError::InvalidInput(format!(
            "{} values is not a multiple of the dimension {dim}",
            vectors.len()
        )));
    }
    let n = vectors.len() / dim;
    if n > u32::MAX as usize {
        return Err(AnnError::InvalidInput(format!(
            "{n} vectors is more than the supported {}",
            u32::MAX
        )));
    }
    for (i, row) in vectors.chunks_exact(dim).enumerate() {
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return Err(AnnError::InvalidInput(format!(
                "vector {i} has a non-finite value at position {j}; re-embed that image"
            )));
        }
        let norm = dot(row, row).sqrt();
        if (norm - 1.0).abs() > NORM_TOLERANCE {
            return Err(AnnError::InvalidInput(format!(
                "vector {i} has L2 norm {norm}, expected 1 (embeddings must be L2-normalized)"
            )));
        }
    }
    Ok(n)
}

/// Graph under construction: plain adjacency lists, before CSR packing.
pub(crate) struct Lists {
    pub(crate) level: Vec<u8>,
    /// `adj[l][id]`: neighbours of `id` on layer `l` (empty above its level).
    pub(crate) adj: Vec<Vec<Vec<u32>>>,
}

impl Lists {
    /// Drops empty top layers; returns the entry point, the lowest id on the
    /// top layer.
    pub(crate) fn trim_top(&mut self) -> u32 {
        while self.adj.len() > 1 && !self.level.iter().any(|&l| l as usize >= self.adj.len() - 1) {
            self.adj.pop();
        }
        let top = self.adj.len() - 1;
        self.level
            .iter()
            .position(|&l| l as usize == top)
            .unwrap_or(0) as u32
    }
}

/// Copies the graph out of `hnsw_rs` through its public accessors.
pub(crate) fn extract(hnsw: &Hnsw<'_, f32, UnitCosine>, n: usize) -> Lists {
    let pi = hnsw.get_point_indexation();
    let mut level = vec![0u8; n];
    let mut adj: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); n]];
    for l in 0..=MAX_LEVELS {
        if pi.get_layer_nb_point(l) == 0 {
            continue;
        }
        for p in pi.get_layer_iterator(l) {
            let id = p.get_origin_id();
            level[id] = l as u8;
            while adj.len() <= l {
                adj.push(vec![Vec::new(); n]);
            }
            // hnsw_rs also keeps links on layers above a point's level
            // (entry points met while inserting); search never uses them.
            for (layer, nbs) in p.get_neighborhood_id().iter().enumerate().take(l + 1) {
                let mut out: Vec<u32> = Vec::with_capacity(nbs.len());
                for nb in nbs {
                    let t = nb.d_id as u32;
                    if nb.d_id < n && nb.d_id != id && !out.contains(&t) {
                        out.push(t);
                    }
                }
                adj[layer][id] = out;
            }
        }
    }
    // a link on layer l must point to a node present on layer l
    for (l, layer) in adj.iter_mut().enumerate().skip(1) {
        for list in layer.iter_mut() {
            list.retain(|&t| level[t as usize] as usize >= l);
        }
    }
    Lists { level, adj }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) struct Cand {
    pub(crate) d: f32,
    pub(crate) id: u32,
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}

/// Read access to a graph in either form, for the shared search routine.
pub(crate) trait Topology {
    fn top_level(&self) -> usize;
    fn entry(&self) -> u32;
    fn upper(&self, level: usize, id: u32) -> &[u32];
    fn base(&self, id: u32) -> &[u32];
    /// Asks the CPU to start loading `base(id)`.
    fn prefetch_base(&self, _id: u32) {}
}

impl Topology for AnnGraph {
    fn top_level(&self) -> usize {
        self.upper.len()
    }
    fn entry(&self) -> u32 {
        self.entry
    }
    #[inline]
    fn upper(&self, level: usize, id: u32) -> &[u32] {
        self.upper[level - 1].neighbours(id)
    }
    #[inline]
    fn base(&self, id: u32) -> &[u32] {
        self.base.row(id as usize)
    }
    #[inline]
    fn prefetch_base(&self, id: u32) {
        prefetch::<_, TO_L1>(self.base.row(id as usize));
    }
}

pub(crate) struct ListsView<'a> {
    pub(crate) lists: &'a Lists,
    pub(crate) entry: u32,
}

impl Topology for ListsView<'_> {
    fn top_level(&self) -> usize {
        self.lists.adj.len() - 1
    }
    fn entry(&self) -> u32 {
        self.entry
    }
    fn upper(&self, level: usize, id: u32) -> &[u32] {
        &self.lists.adj[level][id as usize]
    }
    fn base(&self, id: u32) -> &[u32] {
        &self.lists.adj[0][id as usize]
    }
}

/// Prefetch into the L1 cache (`_MM_HINT_T0`).
pub(crate) const TO_L1: i32 = 3;
/// Prefetch into the L2 cache (`_MM_HINT_T1`).
pub(crate) const TO_L2: i32 = 2;

/// Asks the CPU to start loading the cache lines of `v` into L1 or L2
/// ([`TO_L1`], [`TO_L2`]).
///
/// The walk asks for the codes of a node's new neighbours into L2: in A/B runs
/// at 1M points that was 6% faster than into L1, perhaps because L1 has too few
/// slots for misses to keep a whole neighbourhood's 8 lines per code in flight.
#[inline(always)]
fn prefetch<T, const LEVEL: i32>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = v.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(v)).step_by(64) {
            // SAFETY: the address is inside `v`, and a prefetch is only a hint
            // that never faults.
            unsafe { std::arch::x86_64::_mm_prefetch::<LEVEL>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Textbook HNSW search (Malkov & Yashunin, alg. 2 and 5): greedy walk on
/// each upper layer, then a beam of width `ef` on layer 0. Hidden nodes are
/// traversed but never enter the result set. Returns up to `ef` allowed
/// candidates, closest first by exact distance.
///
/// With `codes`, layer 0 is walked on the codes' approximate distances, and
/// the candidates it ends with are then scored on the `f32` rows.
///
/// The neighbours of each expanded node are prefetched before their distances
/// are computed, so that the memory reads of a whole neighbourhood overlap: at
/// a million 512-d vectors (2 GB) nearly every vector read misses the caches.
pub(crate) fn hnsw_search<T: Topology>(
    g: &T,
    vectors: &[f32],
    dim: usize,
    codes: Option<&Codes>,
    query: &[f32],
    ef: usize,
    allow: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> Vec<Cand> {
    let n = vectors.len() / dim;
    let row = |id: u32| &vectors[id as usize * dim..(id as usize + 1) * dim];
    let exact = |id: u32| UnitCosine.eval(query, row(id));
    let dist = |id: u32| match codes {
        Some(c) => c.distance(query, id),
        None => exact(id),
    };
    let fetch = |id: u32| match codes {
        Some(c) => prefetch::<_, TO_L2>(c.row(id)),
        None => prefetch::<_, TO_L1>(row(id)),
    };
    let allowed = |id: u32| allow.is_none_or(|f| f(id as usize));
    let mut cur = g.entry();
    let mut dcur = dist(cur);
    for level in (1..=g.top_level()).rev() {
        loop {
            let mut moved = false;
            for &nb in g.upper(level, cur) {
                let d = dist(nb);
                if d < dcur {
                    dcur = d;
                    cur = nb;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }
    let mut visited = vec![0u64; n.div_ceil(64)];
    let mut visit = |id: u32| {
        let (w, b) = (id as usize / 64, id % 64);
        let fresh = visited[w] & (1 << b) == 0;
        visited[w] |= 1 << b;
        fresh
    };
    visit(cur);
    let mut candidates = BinaryHeap::new(); // min-heap via Reverse
    let mut results: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1); // max-heap
    let start = Cand { d: dcur, id: cur };
    candidates.push(Reverse(start));
    if allowed(cur) {
        results.push(start);
    }
    let mut fresh: Vec<u32> = Vec::new();
    while let Some(Reverse(c)) = candidates.pop() {
        if results.len() >= ef && results.peek().is_some_and(|w| c.d > w.d) {
            break;
        }
        fresh.clear();
        for &nb in g.base(c.id) {
            if visit(nb) {
                fetch(nb);
                fresh.push(nb);
            }
        }
        // most often the next node expanded
        if let Some(Reverse(next)) = candidates.peek() {
            g.prefetch_base(next.id);
        }
        for &nb in &fresh {
            let d = dist(nb);
            if results.len() < ef || results.peek().is_some_and(|w| d < w.d) {
                let cand = Cand { d, id: nb };
                candidates.push(Reverse(cand));
                if allowed(nb) {
                    results.push(cand);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
    }
    if codes.is_none() {
        return results.into_sorted_vec();
    }
    // score the walk's candidates on the exact rows
    let mut found = results.into_vec();
    const AHEAD: usize = 4;
    for c in found.iter().take(AHEAD) {
        prefetch::<_, TO_L1>(row(c.id));
    }
    for i in 0..found.len() {
        if let Some(next) = found.get(i + AHEAD) {
            prefetch::<_, TO_L1>(row(next.id));
        }
        found[i].d = exact(found[i].id);
    }
    found.sort_unstable();
    found
}
