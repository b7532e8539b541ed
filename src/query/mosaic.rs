//! A mosaic of a big query slide (issue 32), as Yottixel builds one: a few tiles that
//! stand for all of them, so that a 10,000-tile query does not cost 10,000 searches.
//!
//! Yottixel clusters a slide's tiles by colour histogram, then each colour cluster by
//! tile position, and keeps one tile per position cluster (about 5–10 % of the tiles).
//! plip has no colour histograms of stored tiles, only their embeddings, so the first
//! stage clusters the embeddings instead (which separate tissue types better than
//! colour does); the second stage is Yottixel's, over the tiles' level-0 centres. Each
//! position cluster keeps its tile nearest the cluster's centre. Deterministic: k-means
//! starts from evenly spaced members (in tile order) and runs a fixed number of rounds.

use crate::index::Region;

/// Colour (here: embedding) clusters, as Yottixel's 9.
const FIRST_CLUSTERS: usize = 9;
/// Lloyd rounds per k-means.
const ROUNDS: usize = 10;

/// Plain k-means of `points` (all of one dimension) into `k` clusters; the cluster of
/// each point. Squared Euclidean distance; an emptied cluster keeps its centre.
fn kmeans(points: &[Vec<f64>], k: usize) -> Vec<usize> {
    let n = points.len();
    let k = k.clamp(1, n.max(1));
    if n == 0 {
        return Vec::new();
    }
    let mut centres: Vec<Vec<f64>> = (0..k).map(|i| points[i * n / k].clone()).collect();
    let mut assign = vec![0usize; n];
    let d2 = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
    for _ in 0..ROUNDS {
        for (p, a) in points.iter().zip(assign.iter_mut()) {
            let mut best = (0, f64::INFINITY);
            for (c, centre) in centres.iter().enumerate() {
                let d = d2(p, centre);
                if d < best.1 {
                    best = (c, d);
                }
            }
            *a = best.0;
        }
        for (c, centre) in centres.iter_mut().enumerate() {
            let members: Vec<&Vec<f64>> = points
                .iter()
                .zip(&assign)
                .filter(|(_, &a)| a == c)
                .map(|(p, _)| p)
                .collect();
            if members.is_empty() {
                continue;
            }
            for (j, x) in centre.iter_mut().enumerate() {
                *x = members.iter().map(|m| m[j]).sum::<f64>() / members.len() as f64;
            }
        }
    }
    assign
}

/// The tiles of a mosaic of `rows` (with their `regions`): about `fraction` of them
/// (at least one per embedding cluster), at most `cap`, as indices in tile order.
pub(crate) fn mosaic(regions: &[Region], rows: &[&[f32]], fraction: f64, cap: usize) -> Vec<usize> {
    let n = rows.len();
    if n == 0 {
        return Vec::new();
    }
    let emb: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let first = kmeans(&emb, FIRST_CLUSTERS.min(n));
    let mut picked = Vec::new();
    for c in 0..FIRST_CLUSTERS.min(n) {
        let members: Vec<usize> = (0..n).filter(|&i| first[i] == c).collect();
        if members.is_empty() {
            continue;
        }
        let k = ((members.len() as f64 * fraction).round() as usize).max(1);
        let pos: Vec<Vec<f64>> = members
            .iter()
            .map(|&i| {
                let r = &regions[i];
                vec![(r.x + r.w / 2) as f64, (r.y + r.h / 2) as f64]
            })
            .collect();
        let second = kmeans(&pos, k);
        for g in 0..k.min(members.len()) {
            let group: Vec<usize> = (0..members.len()).filter(|&j| second[j] == g).collect();
            if group.is_empty() {
                continue;
            }
            let cx = group.iter().map(|&j| pos[j][0]).sum::<f64>() / group.len() as f64;
            let cy = group.iter().map(|&j| pos[j][1]).sum::<f64>() / group.len() as f64;
            let best = group
                .iter()
                .copied()
                .min_by(|&a, &b| {
                    let da = (pos[a][0] - cx).powi(2) + (pos[a][1] - cy).powi(2);
                    let db = (pos[b][0] - cx).powi(2) + (pos[b][1] - cy).powi(2);
                    da.total_cmp(&db).then(a.cmp(&b))
                })
                .expect("a non-empty group");
            picked.push(members[best]);
        }
    }
    picked.sort_unstable();
    picked.dedup();
    if picked.len() > cap.max(1) {
        // Evenly thinned, so that every cluster keeps its share.
        let m = picked.len();
        let keep = cap.max(1);
        picked = (0..keep).map(|i| picked[i * m / keep]).collect();
    }
    picked
}

/// How close the best matches of a mosaic are to those of all tiles: the mean over all
/// tiles of the cosine to their nearest mosaic tile (1 when the mosaic is every tile).
#[cfg(test)]
pub(crate) fn coverage(rows: &[&[f32]], picked: &[usize]) -> f64 {
    let sum: f64 = rows
        .iter()
        .map(|r| {
            picked
                .iter()
                .map(|&p| f64::from(crate::vectors::dot(r, rows[p])))
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum();
    sum / rows.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(x: u64, y: u64) -> Region {
        Region {
            x,
            y,
            w: 100,
            h: 100,
            level: 0,
            mpp: 0.5,
        }
    }

    #[test]
    fn a_mosaic_keeps_a_few_tiles_from_every_kind_and_place() {
        // 400 tiles on a 20x20 grid: two tissue kinds, left half and right half
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let mut regions = Vec::new();
        let mut rows: Vec<&[f32]> = Vec::new();
        for y in 0..20u64 {
            for x in 0..20u64 {
                regions.push(region(x * 100, y * 100));
                rows.push(if x < 10 { &a } else { &b });
            }
        }
        let m = mosaic(&regions, &rows, 0.05, 1000);
        assert!((15..=30).contains(&m.len()), "{}", m.len());
        assert!(m.iter().any(|&i| regions[i].x < 1000));
        assert!(m.iter().any(|&i| regions[i].x >= 1000));
        // both kinds are covered exactly
        assert!((coverage(&rows, &m) - 1.0).abs() < 1e-9);
        // spread over the slide: tiles in the top and the bottom half
        assert!(m.iter().any(|&i| regions[i].y < 1000) && m.iter().any(|&i| regions[i].y >= 1000));
        // the cap thins, deterministically
        let c = mosaic(&regions, &rows, 0.05, 4);
        assert_eq!(c.len(), 4);
        assert_eq!(c, mosaic(&regions, &rows, 0.05, 4));
        assert!(mosaic(&[], &[], 0.05, 10).is_empty());
    }
}
