//! Hooks for the study in `benches/ann_study.rs`, which measures why plip searches the
//! graph itself rather than with `Hnsw::search`: an `hnsw_rs` graph kept as built (before
//! the repair step), searched both ways. Not a stable API (hidden from the docs); nothing
//! in plip calls it.

use super::build::missed_by_search;
use super::*;

/// `ef` of the build-time findability check (see [`BuildStats`]).
pub const REPAIR_EF: usize = super::REPAIR_EF;

/// Upper layers of `g` and its layer-0 links (both directions counted).
pub fn layer_sizes(g: &AnnGraph) -> (usize, usize) {
    (g.upper.len(), g.base.targets.len())
}

/// An `hnsw_rs` graph built serially over `n x dim` unit vectors, as [`AnnGraph::build`]
/// builds it, with its links copied out as that build copies them (not repaired).
pub struct HnswRsGraph {
    hnsw: Hnsw<'static, f32, UnitCosine>,
    lists: Lists,
    entry: u32,
}

impl HnswRsGraph {
    /// Inserts the rows of `data` one at a time, with `params`' M and ef_construction.
    pub fn build(data: &[f32], dim: usize, params: &AnnParams) -> HnswRsGraph {
        let n = data.len() / dim;
        let hnsw: Hnsw<'static, f32, UnitCosine> = Hnsw::new(
            params.max_connections,
            n,
            MAX_LEVELS + 1,
            params.ef_construction,
            UnitCosine,
        );
        for (id, row) in data.chunks_exact(dim).enumerate() {
            hnsw.insert_slice((row, id));
        }
        let mut lists = extract(&hnsw, n);
        let entry = lists.trim_top();
        HnswRsGraph { hnsw, lists, entry }
    }

    /// The ids `Hnsw::search` returns.
    pub fn hnsw_rs_search(&self, q: &[f32], k: usize, ef: usize) -> Vec<usize> {
        self.hnsw
            .search(q, k, ef)
            .iter()
            .map(|nb| nb.d_id)
            .collect()
    }

    /// The ids plip's search (on the `f32` rows) returns on the same links.
    pub fn our_search(
        &self,
        data: &[f32],
        dim: usize,
        q: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<usize> {
        let view = ListsView {
            lists: &self.lists,
            entry: self.entry,
        };
        hnsw_search(&view, data, dim, None, q, ef, None)
            .iter()
            .take(k)
            .map(|c| c.id as usize)
            .collect()
    }

    /// Whether plip's findability check (k = 10, ef = [`REPAIR_EF`]) finds row `id` by its
    /// own vector on these links.
    pub fn found_by_our_check(&self, data: &[f32], dim: usize, id: usize) -> bool {
        let view = ListsView {
            lists: &self.lists,
            entry: self.entry,
        };
        missed_by_search(&view, data, dim, None, id as u32, 1).is_none()
    }
}
