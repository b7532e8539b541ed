//! Whole slides in queries (issue 17): a slide region as a query term
//! (`slide.svs@x,y,w,h`), and ranking slides by their tiles (`--by-slide`).
//!
//! `--by-slide` pools each slide's tile scores as CONCH's MI-Zero does (top-k mean
//! pooling): a slide's score is the mean of its 5 best tile scores (of all of them when
//! it has fewer), and its best tile is reported with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::index::{IndexHit, Region};

/// Tiles pooled per slide by `--by-slide`.
pub(crate) const TOP_TILES: usize = 5;

/// `PATH@X,Y,W,H`: a level-0 region of a slide file, if `raw` is one (the file must
/// exist). `None` when `raw` has no such suffix; an error when the suffix is there but
/// malformed or the file is missing.
pub(crate) fn parse_region(raw: &str) -> anyhow::Result<Option<(PathBuf, [u64; 4])>> {
    let Some((path, coords)) = raw.rsplit_once('@') else {
        return Ok(None);
    };
    let parts: Vec<&str> = coords.split(',').map(str::trim).collect();
    if parts.len() != 4
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(None);
    }
    let mut v = [0u64; 4];
    for (o, p) in v.iter_mut().zip(&parts) {
        *o = p
            .parse()
            .map_err(|_| anyhow::anyhow!("{raw:?}: coordinate {p} is too large"))?;
    }
    let p = Path::new(path);
    if !p.is_file() {
        anyhow::bail!(
            "{raw:?}: {path} is not a file (a region query is SLIDE@X,Y,W,H in level-0 pixels)"
        );
    }
    if v[2] == 0 || v[3] == 0 {
        anyhow::bail!("{raw:?}: the region's width and height must be at least 1 pixel");
    }
    // X+W and Y+H, checked: a wrapped sum would pass as a small right edge.
    let edge = |a: u64, b: u64| a.checked_add(b).filter(|&e| e <= i64::MAX as u64);
    if edge(v[0], v[2]).is_none() || edge(v[1], v[3]).is_none() {
        anyhow::bail!(
            "{raw:?}: the region's right or bottom edge (X+W, Y+H) is past any slide's size \
             (a region query is SLIDE@X,Y,W,H in level-0 pixels)"
        );
    }
    Ok(Some((p.to_path_buf(), v)))
}

/// One slide of a `--by-slide` ranking.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SlideHit {
    /// Stored path of the slide.
    pub(crate) path: String,
    /// Mean of the slide's best [`TOP_TILES`] tile scores.
    pub(crate) score: f32,
    /// Tiles of the slide that were scored.
    pub(crate) tiles: usize,
    /// Its best tiles, best first (at most [`TOP_TILES`]).
    pub(crate) best: Vec<(Region, f32)>,
}

/// Ranks slides by the mean of their top tile scores, best first (ties by path).
/// `hits` are tile and image hits in any order; images are ignored.
pub(crate) fn rank_slides(hits: &[IndexHit]) -> Vec<SlideHit> {
    let mut by: HashMap<&str, Vec<(Region, f32)>> = HashMap::new();
    for h in hits {
        if let Some(r) = h.region {
            by.entry(&h.path).or_default().push((r, h.score));
        }
    }
    let mut out: Vec<SlideHit> = by
        .into_iter()
        .map(|(path, mut tiles)| {
            tiles.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.key().cmp(&b.0.key())));
            let n = tiles.len();
            let top = &tiles[..n.min(TOP_TILES)];
            let score = (top.iter().map(|t| f64::from(t.1)).sum::<f64>() / top.len() as f64) as f32;
            SlideHit {
                path: path.to_string(),
                score,
                tiles: n,
                best: top.to_vec(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.path.cmp(&b.path))
    });
    out
}

/// `--by-slide` (CLI and server alike): every live item allowed by `allow` scored
/// exactly, slides ranked by [`rank_slides`], those under `threshold` dropped and the
/// best `top` kept. The flag says whether any slide tile was scored at all.
pub(crate) fn by_slide(
    index: &crate::index::Index,
    query: &[f32],
    allow: &(dyn Fn(&str) -> bool + Sync),
    threshold: Option<f32>,
    top: usize,
) -> (Vec<SlideHit>, bool) {
    let all = index.search(query, index.len().max(1), 0, Some(allow));
    let mut slides = rank_slides(&all);
    if let Some(t) = threshold {
        slides.retain(|s| s.score >= t);
    }
    slides.truncate(top);
    (slides, all.iter().any(|h| h.region.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(path: &str, x: u64, score: f32) -> IndexHit {
        IndexHit {
            score,
            path: path.into(),
            region: Some(Region {
                x,
                y: 0,
                w: 10,
                h: 10,
                level: 0,
                mpp: 0.5,
            }),
        }
    }

    #[test]
    fn slides_rank_by_the_mean_of_their_top_five_tiles() {
        let mut hits = vec![tile("a", 0, 0.9)];
        // b: one tile worse than a's best, but five good ones
        for (i, s) in [0.8, 0.8, 0.8, 0.8, 0.8, 0.1].iter().enumerate() {
            hits.push(tile("b", i as u64 * 10, *s));
        }
        for (i, s) in [0.1, 0.1, 0.1, 0.1].iter().enumerate() {
            hits.push(tile("a", 10 + i as u64 * 10, *s));
        }
        hits.push(IndexHit {
            score: 1.0,
            path: "img.png".into(),
            region: None,
        });
        let r = rank_slides(&hits);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].path, "b");
        assert!((r[0].score - 0.8).abs() < 1e-6);
        assert_eq!(r[0].tiles, 6);
        assert_eq!(r[1].path, "a");
        assert!((r[1].score - (0.9 + 0.4) / 5.0).abs() < 1e-6);
        assert_eq!(r[1].best[0].0.x, 0);
    }

    #[test]
    fn region_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.svs");
        std::fs::write(&f, b"x").unwrap();
        let raw = format!("{}@10,20,30,40", f.display());
        assert_eq!(
            parse_region(&raw).unwrap(),
            Some((f.clone(), [10, 20, 30, 40]))
        );
        assert_eq!(parse_region("tumor tissue").unwrap(), None);
        assert_eq!(parse_region("a@b").unwrap(), None);
        assert!(parse_region("/missing.svs@1,2,3,4").is_err());
        assert!(parse_region(&format!("{}@1,2,0,4", f.display())).is_err());
    }

    #[test]
    fn region_bounds_that_overflow_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.svs");
        std::fs::write(&f, b"x").unwrap();
        // x + w wraps around u64 to 100
        for r in [
            "18446744073709551516,0,200,200",
            "0,18446744073709551516,200,200",
            "9223372036854775807,0,1,1",
        ] {
            let e = parse_region(&format!("{}@{r}", f.display())).unwrap_err();
            assert!(e.to_string().contains("region"), "{e}");
        }
        assert!(parse_region(&format!("{}@9223372036854775806,0,1,1", f.display())).is_ok());
    }
}
