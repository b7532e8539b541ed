//! The graph route of a `bag` slide query (issue 32, Yottixel's search): instead of
//! scoring the query's tiles against every tile of every slide, each tile of the
//! query's mosaic searches the index's HNSW graphs for its nearest tiles, the slides
//! those tiles belong to become the candidates, and only the candidates are scored
//! exactly by `bag` (over all their tiles). So the result is exact `bag` over a
//! short list; what the route can lose is a slide none of whose tiles comes near a
//! mosaic tile, which `bag` (the median of best matches) would rank low anyway.
//!
//! **When.** A `bag` query takes this route when `--ef` is given (as a tile search
//! uses the graphs only with `--ef`) or when the index holds at least
//! [`GRAPH_FROM_ROWS`] rows, and only when at least one segment has a graph
//! (segments of `PLIP_HNSW_MIN_ROWS` rows, default 20,000, or more); segments without
//! one are searched exactly by the same call. `mean` never takes it: it is one dot
//! product per slide with the slides' means, which the graphs cannot beat.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use super::slides_like::IndexedSlides;
use crate::index::Index;
use crate::query::slide_match::SlideScore;

/// From this many rows in the index, a `bag` query searches the graphs without
/// `--ef`. Exact `bag` costs mosaic tiles (up to 250) × index rows dot products; at
/// 80,000 rows it was as fast as the graph route (BENCHMARKS.md, "Slides as
/// queries"), and the graph route answered a 10⁶-row query in 0.53 s. The exact cost
/// at 10⁶ rows was not measured: the threshold is a judgement, not a crossover.
pub(crate) const GRAPH_FROM_ROWS: usize = 1_000_000;
/// Nearest tiles each mosaic tile asks the graphs for.
pub(crate) const TILES_PER_QUERY_TILE: usize = 100;
/// Candidate slides scored exactly: this many per slide asked for, at least
/// [`MIN_CANDIDATES`].
pub(crate) const CANDIDATES_PER_RESULT: usize = 5;
/// The least number of candidate slides kept.
pub(crate) const MIN_CANDIDATES: usize = 50;

/// Whether a query scored by `how`, with `ef` given or not, over the index at
/// `dir`, should open the graphs (the manifest alone is read).
pub(crate) fn wanted(dir: &Path, how: SlideScore, ef: Option<usize>) -> Result<bool> {
    if how != SlideScore::Bag {
        return Ok(false);
    }
    Ok(ef.is_some() || crate::index::recorded_rows(dir)? >= GRAPH_FROM_ROWS)
}

/// The index at `dir`, with its graphs when a query scored by `how` (with `ef` or
/// not) takes the graph route; and whether it does (some segment has a graph).
pub(crate) fn open(dir: &Path, how: SlideScore, ef: Option<usize>) -> Result<(Index, bool)> {
    if wanted(dir, how, ef)? {
        let index = Index::open_with_graphs(dir)?;
        let graphs = has_graphs(&index);
        Ok((index, graphs))
    } else {
        Ok((Index::open(dir)?, false))
    }
}

/// The candidates (positions in `cands`, ascending) worth scoring exactly for the
/// `top` best slides: the slides whose tiles the graphs return for the mosaic tiles
/// `query`, those found by the most query tiles first (ties by the best tile's
/// cosine), at most `max(CANDIDATES_PER_RESULT * top, MIN_CANDIDATES)`. `ef`
/// defaults to [`crate::index::ann::DEFAULT_EF_SEARCH`].
pub(crate) fn candidates(
    index: &Index,
    query: &[&[f32]],
    all: &IndexedSlides,
    cands: &[usize],
    top: usize,
    ef: Option<usize>,
) -> Vec<usize> {
    let ef = ef.unwrap_or(crate::index::ann::DEFAULT_EF_SEARCH);
    let allowed: HashSet<&str> = cands.iter().map(|&i| all.paths[i].as_str()).collect();
    let allow = |p: &str| allowed.contains(p);
    let filters: Vec<crate::index::PathFilter<'_>> = query
        .iter()
        .map(|_| Some(&allow as &(dyn Fn(&str) -> bool + Sync)))
        .collect();
    let hits = index.search_many(query, TILES_PER_QUERY_TILE, ef, &filters);
    // Per candidate position: (query tiles that found one of its tiles, best
    // cosine). Counting query tiles, not returned tiles, follows `bag`, whose median
    // asks how many query tiles have a close match in the slide; a slide with many
    // tiles near one query tile gets one vote from it.
    let mut votes: Vec<(usize, f32)> = vec![(0, f32::NEG_INFINITY); cands.len()];
    let mut voted_by: Vec<usize> = vec![usize::MAX; cands.len()];
    for (qi, hits) in hits.iter().enumerate() {
        for hit in hits.iter().filter(|h| h.region.is_some()) {
            let Some(c) = all
                .find(&hit.path)
                .and_then(|i| cands.binary_search(&i).ok())
            else {
                continue;
            };
            if voted_by[c] != qi {
                voted_by[c] = qi;
                votes[c].0 += 1;
            }
            votes[c].1 = votes[c].1.max(hit.score);
        }
    }
    let mut found: Vec<usize> = (0..cands.len()).filter(|&c| votes[c].0 > 0).collect();
    found.sort_by(|&a, &b| {
        votes[b]
            .0
            .cmp(&votes[a].0)
            .then(votes[b].1.total_cmp(&votes[a].1))
            .then(a.cmp(&b))
    });
    found.truncate((CANDIDATES_PER_RESULT * top).max(MIN_CANDIDATES));
    found.sort_unstable();
    found
}

/// Whether any segment of `index` has a graph loaded.
pub(crate) fn has_graphs(index: &Index) -> bool {
    index.segments.iter().any(|s| s.ann.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::slides_like::{run, SlideQuery};
    use crate::index::{FileEntry, IndexWriter, ModelInfo, Region};
    use crate::model::ModelFamily;

    /// 200 slides of 64 tiles, 16-d: each slide 4 tissue kinds of 40 (quadrants),
    /// each tile its kind plus noise; one segment with a graph.
    fn index_with_graphs(dir: &Path) {
        let dim = 16;
        let mut seed = 11u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let unit = |v: Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let protos: Vec<Vec<f32>> = (0..40)
            .map(|_| unit((0..dim).map(|_| rnd()).collect()))
            .collect();
        let info = ModelInfo {
            source: "test".into(),
            fingerprint: "fp".into(),
            dim,
            family: ModelFamily::HfClip,
        };
        let mut w = IndexWriter::open(dir, &info, false).unwrap();
        w.set_hnsw_min_rows(1000);
        for s in 0..200 {
            let kinds: Vec<usize> = (0..4)
                .map(|_| ((rnd() + 1.0) * 20.0) as usize % 40)
                .collect();
            for t in 0..64u64 {
                let (x, y) = (t % 8, t / 8);
                let k = kinds[(2 * (y / 4) + x / 4) as usize];
                let v = unit(protos[k].iter().map(|p| p + 0.3 * rnd()).collect());
                let region = Region {
                    x: x * 224,
                    y: y * 224,
                    w: 224,
                    h: 224,
                    level: 0,
                    mpp: 0.5,
                };
                let entry = FileEntry {
                    path: format!("slides/s{s:03}.svs"),
                    size: 0,
                    mtime_ns: 0,
                    crc32: 0,
                    region: Some(region),
                };
                w.add(entry, &v);
            }
        }
        w.compact().unwrap();
    }

    #[test]
    fn the_graph_route_finds_the_same_top_slides_as_exact_bag() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".plip");
        index_with_graphs(&dir);
        let graphs = Index::open_with_graphs(&dir).unwrap();
        assert!(has_graphs(&graphs), "the segment has a graph");
        assert!(
            !wanted(&dir, SlideScore::Bag, None).unwrap(),
            "small: exact"
        );
        assert!(wanted(&dir, SlideScore::Bag, Some(64)).unwrap());
        assert!(!wanted(&dir, SlideScore::Mean, Some(64)).unwrap());
        let (mut same, mut total) = (0, 0);
        for s in (0..200).step_by(20) {
            let q = |ef| SlideQuery {
                slide: tmp.path().join(format!("slides/s{s:03}.svs")),
                region: None,
                score: SlideScore::Bag,
                top: 10,
                include_self: false,
                group_by: None,
                under: None,
                threshold: None,
                ef,
            };
            let cwd = tmp.path();
            std::fs::create_dir_all(cwd.join("slides")).unwrap();
            std::fs::write(&q(None).slide, b"").unwrap();
            let exact = run(&dir, "", Default::default(), &q(None), cwd).unwrap();
            let graph = run(&dir, "", Default::default(), &q(Some(64)), cwd).unwrap();
            assert_eq!(exact.candidates, None);
            let c = graph.candidates.expect("the graph route was taken");
            assert!((10..=MIN_CANDIDATES).contains(&c), "{c} candidates of 199");
            assert_eq!(graph.slides.len(), 10);
            // the best slide, and its score, are exact bag's
            assert_eq!(graph.slides[0], exact.slides[0]);
            let want: Vec<_> = exact.slides.iter().map(|m| &m.path).collect();
            same += graph
                .slides
                .iter()
                .filter(|m| want.contains(&&m.path))
                .count();
            total += want.len();
        }
        // every slide the graph route returns is scored exactly, so a slide it
        // finds sits where exact bag puts it; what it may miss is a tail slide
        assert!(same * 100 >= total * 95, "recall@10 {same}/{total}");
    }
}
