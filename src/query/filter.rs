//! The search step shared by `plip search` and `plip serve`: top-k over the
//! index, restricted to a folder (`--under`) and a minimum score
//! (`--threshold`).
//!
//! Both commands call [`search_filtered`], so a query gives the same hits, in the
//! same order, whichever one answers it.

use crate::index::{Index, IndexHit};

/// Whether a stored path (relative to the index root, `/`-separated) lies under
/// `prefix` (also root-relative). `None`, `""` and `"."` allow everything; a
/// prefix matches the folder itself and whatever is below it, never a sibling
/// that only starts with the same letters (`slides/a` does not allow `slides/ab`).
pub(crate) fn under(prefix: Option<&str>, path: &str) -> bool {
    match prefix {
        Some(pre) if !pre.is_empty() => crate::index::paths::is_under(path, pre),
        _ => true,
    }
}

/// The top `k` hits for the unit vector `query`, best first, among the stored
/// paths [`under`] `prefix`, keeping only scores of at least `threshold`.
pub(crate) fn search_filtered(
    index: &Index,
    query: &[f32],
    k: usize,
    ef: usize,
    prefix: Option<&str>,
    threshold: Option<f32>,
) -> Vec<IndexHit> {
    let allow = |p: &str| under(prefix, p);
    let mut hits = index.search(query, k, ef, Some(&allow));
    if let Some(t) = threshold {
        hits.retain(|h| h.score >= t);
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn under_matches_the_folder_and_below_never_a_sibling_prefix() {
        assert!(under(None, "a/b.png"));
        assert!(under(Some("."), "a/b.png"));
        assert!(!under(Some("."), "../outside/b.png"));
        assert!(under(Some("slides/a"), "slides/a/x.png"));
        assert!(under(Some("slides/a"), "slides/a"));
        assert!(!under(Some("slides/a"), "slides/ab/x.png"));
        assert!(!under(Some("slides/a"), "other/x.png"));
    }
}
