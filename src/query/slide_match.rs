//! Slide-to-slide similarity (issue 32): how alike two whole slides (or a region and a
//! slide) are, from their tiles' unit embeddings. Pure arithmetic on borrowed rows.
//!
//! - **mean**: the cosine of the two slides' mean tile embeddings (each mean
//!   L2-normalised). One dot product per candidate once the means are known.
//! - **bag**: Yottixel's "median of minimum distances": for every query tile, its best
//!   match (highest cosine, i.e. smallest cosine distance) among the candidate's tiles;
//!   the slide's score is the median of those best matches over the query's tiles
//!   (numpy's median: the mean of the two middle values for an even count). As cosine
//!   distance is `1 - cosine`, the median of the minimum distances is `1 - ` this score,
//!   so the order is Yottixel's.
//!
//! Ties between candidates are broken by their order in the caller's list (sorted by
//! path), so rankings are deterministic.

use rayon::prelude::*;

use crate::vectors::dot;

/// How two slides are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlideScore {
    /// Cosine of the mean tile embeddings.
    Mean,
    /// Median over query tiles of the best cosine in the candidate (Yottixel).
    Bag,
}

impl SlideScore {
    /// The default for a query: `mean` for a whole slide (better than `bag` in every
    /// noisy setting of the study below, and one dot product per slide), `bag` for a
    /// region (a region is a small part of a slide: the question is whether a slide
    /// holds tissue like it, which a mean over the whole slide dilutes).
    pub(crate) fn default_for(region: bool) -> Self {
        if region {
            SlideScore::Bag
        } else {
            SlideScore::Mean
        }
    }

    /// The flag value: `mean` or `bag`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SlideScore::Mean => "mean",
            SlideScore::Bag => "bag",
        }
    }
}

impl std::str::FromStr for SlideScore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mean" => Ok(SlideScore::Mean),
            "bag" => Ok(SlideScore::Bag),
            other => Err(format!(
                "unknown slide score {other:?}: use `mean` (cosine of mean tile embeddings) \
                 or `bag` (median of each query tile's best match, as Yottixel)"
            )),
        }
    }
}

/// The L2-normalised mean of `rows`; `None` for no rows or a zero mean.
pub(crate) fn mean_unit(rows: &[&[f32]]) -> Option<Vec<f32>> {
    let first = rows.first()?;
    let mut sum = vec![0f64; first.len()];
    for r in rows {
        for (s, x) in sum.iter_mut().zip(r.iter()) {
            *s += f64::from(*x);
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm <= 0.0 || !norm.is_finite() {
        return None;
    }
    Some(sum.iter().map(|x| (x / norm) as f32).collect())
}

/// For each query row, `(index of its best candidate row, cosine)`; the lowest index
/// wins a tie. Empty when `cand` is empty.
pub(crate) fn best_matches(query: &[&[f32]], cand: &[&[f32]]) -> Vec<(usize, f32)> {
    if cand.is_empty() {
        return Vec::new();
    }
    query
        .iter()
        .map(|q| {
            let mut best = (0, f32::NEG_INFINITY);
            for (j, c) in cand.iter().enumerate() {
                let s = dot(q, c);
                if s > best.1 {
                    best = (j, s);
                }
            }
            best
        })
        .collect()
}

/// numpy's median of `values` (`None` when empty).
pub(crate) fn median(values: &[f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2] as f32
    } else {
        ((v[n / 2 - 1] + v[n / 2]) / 2.0) as f32
    })
}

/// The bag score of `cand` for `query`: the median of each query row's best cosine in
/// `cand`. `None` when either is empty.
pub(crate) fn bag_score(query: &[&[f32]], cand: &[&[f32]]) -> Option<f32> {
    let best: Vec<f32> = best_matches(query, cand).iter().map(|b| b.1).collect();
    median(&best)
}

/// One slide's tiles: the rows to score (borrowed), and its normalised mean.
pub(crate) struct TileBag<'a> {
    /// Unit tile embeddings.
    pub(crate) rows: Vec<&'a [f32]>,
    /// Their normalised mean (for `mean`); `None` when it has no tiles.
    pub(crate) mean: Option<Vec<f32>>,
}

impl<'a> TileBag<'a> {
    /// A bag of `rows`, with its mean computed once.
    pub(crate) fn new(rows: Vec<&'a [f32]>) -> Self {
        let mean = mean_unit(&rows);
        TileBag { rows, mean }
    }
}

/// The score of every candidate for `query` by `how`, in candidate order (rayon
/// over candidates). A candidate or query without tiles scores `None`.
pub(crate) fn score_all(query: &TileBag, cands: &[&TileBag], how: SlideScore) -> Vec<Option<f32>> {
    cands
        .par_iter()
        .map(|c| match how {
            SlideScore::Mean => match (&query.mean, &c.mean) {
                (Some(a), Some(b)) => Some(dot(a, b)),
                _ => None,
            },
            SlideScore::Bag => bag_score(&query.rows, &c.rows),
        })
        .collect()
}

/// Indices of `scores` ranked best first (ties by index), `None`s left out.
pub(crate) fn rank(scores: &[Option<f32>]) -> Vec<(usize, f32)> {
    let mut out: Vec<(usize, f32)> = scores
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// The `n` best tile pairs between `query` and `cand`: `(query row, candidate row,
/// cosine)`, best first: each query row with its best match, the best `n` of those
/// (ties by query row).
pub(crate) fn top_pairs(query: &[&[f32]], cand: &[&[f32]], n: usize) -> Vec<(usize, usize, f32)> {
    let mut pairs: Vec<(usize, usize, f32)> = best_matches(query, cand)
        .into_iter()
        .enumerate()
        .map(|(q, (c, s))| (q, c, s))
        .collect();
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    pairs.truncate(n);
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn bag_is_the_median_of_each_query_tiles_best_match() {
        let q = [vec![1.0, 0.0], vec![0.0, 1.0], unit(&[1.0, 1.0])];
        let c = [vec![1.0, 0.0], unit(&[1.0, 1.0])];
        let qr: Vec<&[f32]> = q.iter().map(Vec::as_slice).collect();
        let cr: Vec<&[f32]> = c.iter().map(Vec::as_slice).collect();
        // best matches: 1.0 (c0), 0.7071 (c1), 1.0 (c1); median = 1.0
        let b = best_matches(&qr, &cr);
        assert_eq!(b[0].0, 0);
        assert_eq!(b[1].0, 1);
        assert!((b[1].1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((bag_score(&qr, &cr).unwrap() - 1.0).abs() < 1e-6);
        // an even count takes the mean of the two middle values
        assert!(
            (bag_score(&qr[..2], &cr).unwrap() - (1.0 + std::f32::consts::FRAC_1_SQRT_2) / 2.0)
                .abs()
                < 1e-6
        );
        assert_eq!(bag_score(&qr, &[]), None);
        let pairs = top_pairs(&qr, &cr, 2);
        assert_eq!((pairs[0].0, pairs[0].1), (0, 0));
        assert_eq!((pairs[1].0, pairs[1].1), (2, 1));
    }

    #[test]
    fn mean_is_the_cosine_of_the_normalised_means() {
        let a = [vec![1.0, 0.0], vec![0.0, 1.0]];
        let b = [vec![1.0, 0.0]];
        let ar: Vec<&[f32]> = a.iter().map(Vec::as_slice).collect();
        let br: Vec<&[f32]> = b.iter().map(Vec::as_slice).collect();
        let (qa, qb) = (TileBag::new(ar), TileBag::new(br));
        let s = score_all(&qa, &[&qb], SlideScore::Mean);
        assert!((s[0].unwrap() - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let empty = TileBag::new(Vec::new());
        assert_eq!(score_all(&qa, &[&empty], SlideScore::Mean), vec![None]);
        assert_eq!(
            rank(&[Some(0.5), None, Some(0.9), Some(0.5)]),
            vec![(2, 0.9), (0, 0.5), (3, 0.5)]
        );
    }

    #[test]
    fn score_names_parse_and_bad_ones_say_what_to_use() {
        assert_eq!("Mean".parse::<SlideScore>(), Ok(SlideScore::Mean));
        assert_eq!("bag".parse::<SlideScore>(), Ok(SlideScore::Bag));
        let e = "max".parse::<SlideScore>().unwrap_err();
        assert!(e.contains("mean") && e.contains("bag"), "{e}");
    }
}

/// A study, not a check: `cargo test --lib --release -- --ignored slide_score_study
/// --nocapture` compares `mean` and `bag` leave-one-slide-out on synthetic slides whose
/// tiles mix class-specific tissue (a fraction `f` of the tiles) with tissue every class
/// shares, and prints top-1, MV@5 and mAP@5 (docs/slide-retrieval.md quotes it).
#[cfg(test)]
mod study {
    use super::*;
    use crate::eval::slides::metrics::slide_retrieval;

    fn rng(seed: &mut u64) -> f32 {
        // xorshift64*, uniform in [-1, 1)
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        let x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        x as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    #[ignore]
    fn slide_score_study() {
        let (dim, classes, per_class, tiles) = (64, 4, 15, 60);
        for (noise, f) in [
            (0.9f32, 0.1f32),
            (0.9, 0.3),
            (2.0, 0.1),
            (2.0, 0.3),
            (2.0, 0.6),
            (3.0, 0.3),
            (3.0, 0.6),
        ] {
            let mut s = 32u64;
            let proto = |s: &mut u64| unit((0..dim).map(|_| rng(s)).collect());
            let shared: Vec<Vec<f32>> = (0..6).map(|_| proto(&mut s)).collect();
            let own: Vec<Vec<Vec<f32>>> = (0..classes)
                .map(|_| (0..3).map(|_| proto(&mut s)).collect())
                .collect();
            let mut slides: Vec<Vec<Vec<f32>>> = Vec::new();
            let mut labels = Vec::new();
            for (c, own) in own.iter().enumerate() {
                for _ in 0..per_class {
                    let rows = (0..tiles)
                        .map(|t| {
                            let u = (rng(&mut s) + 1.0) / 2.0;
                            let p = if (t as f32) < f * tiles as f32 {
                                &own[(u * 3.0) as usize % 3]
                            } else {
                                &shared[(u * 6.0) as usize % 6]
                            };
                            unit(
                                p.iter()
                                    .map(|x| x + noise * rng(&mut s) / (dim as f32).sqrt() * 3.0)
                                    .collect(),
                            )
                        })
                        .collect();
                    slides.push(rows);
                    labels.push(c);
                }
            }
            let bags: Vec<TileBag> = slides
                .iter()
                .map(|r| TileBag::new(r.iter().map(Vec::as_slice).collect()))
                .collect();
            let names: Vec<String> = (0..classes).map(|c| c.to_string()).collect();
            for how in [SlideScore::Mean, SlideScore::Bag] {
                let retrieved: Vec<Vec<usize>> = (0..bags.len())
                    .map(|q| {
                        let cands: Vec<usize> = (0..bags.len()).filter(|&j| j != q).collect();
                        let cb: Vec<&TileBag> = cands.iter().map(|&j| &bags[j]).collect();
                        rank(&score_all(&bags[q], &cb, how))
                            .into_iter()
                            .take(5)
                            .map(|(c, _)| labels[cands[c]])
                            .collect()
                    })
                    .collect();
                let r = slide_retrieval(&labels, &retrieved, &names).unwrap();
                println!(
                    "noise {noise:.1}  class tissue {:>3.0}%  {:<4}  top-1 {:.3}  MV@5 {:.3}  mAP@5 {:.3}",
                    f * 100.0,
                    how.name(),
                    r.top1,
                    r.mv5,
                    r.map5
                );
            }
        }
    }

    /// Recall@10 of the mosaic's bag ranking against the exact bag ranking, and the
    /// time of each: `cargo test --lib --release -- --ignored mosaic_recall_study
    /// --nocapture` (BENCHMARKS.md quotes it).
    #[test]
    #[ignore]
    fn mosaic_recall_study() {
        use crate::index::Region;
        use crate::query::mosaic::mosaic;
        let (dim, slides, tiles, side) = (64, 200, 400, 20u64);
        let mut s = 7u64;
        let protos: Vec<Vec<f32>> = (0..40)
            .map(|_| unit((0..dim).map(|_| rng(&mut s)).collect()))
            .collect();
        // each slide: 4 tissue kinds of the 40, in patches over its grid, with noise
        let data: Vec<Vec<Vec<f32>>> = (0..slides)
            .map(|_| {
                let kinds: Vec<usize> = (0..4)
                    .map(|_| (((rng(&mut s) + 1.0) / 2.0 * 40.0) as usize).min(39))
                    .collect();
                (0..tiles)
                    .map(|t| {
                        let (x, y) = (t as u64 % side, t as u64 / side);
                        let k = kinds[(2 * (y * 2 / side) + x * 2 / side) as usize];
                        unit(protos[k].iter().map(|v| v + 0.25 * rng(&mut s)).collect())
                    })
                    .collect()
            })
            .collect();
        let regions: Vec<Region> = (0..tiles as u64)
            .map(|t| Region {
                x: (t % side) * 224,
                y: (t / side) * 224,
                w: 224,
                h: 224,
                level: 0,
                mpp: 0.5,
            })
            .collect();
        let bags: Vec<TileBag> = data
            .iter()
            .map(|r| TileBag::new(r.iter().map(Vec::as_slice).collect()))
            .collect();
        for fraction in [0.05, 0.1] {
            let (mut recall, mut t_exact, mut t_mosaic, mut picked) = (0.0, 0.0, 0.0, 0);
            let queries = 20;
            for q in 0..queries {
                let cands: Vec<&TileBag> =
                    (0..slides).filter(|&j| j != q).map(|j| &bags[j]).collect();
                let t0 = std::time::Instant::now();
                let exact: Vec<usize> = rank(&score_all(&bags[q], &cands, SlideScore::Bag))
                    .iter()
                    .take(10)
                    .map(|r| r.0)
                    .collect();
                t_exact += t0.elapsed().as_secs_f64();
                let t0 = std::time::Instant::now();
                let m = mosaic(&regions, &bags[q].rows, fraction, 250);
                let mq = TileBag::new(m.iter().map(|&i| bags[q].rows[i]).collect());
                let approx: Vec<usize> = rank(&score_all(&mq, &cands, SlideScore::Bag))
                    .iter()
                    .take(10)
                    .map(|r| r.0)
                    .collect();
                t_mosaic += t0.elapsed().as_secs_f64();
                picked += m.len();
                recall += exact.iter().filter(|e| approx.contains(e)).count() as f64 / 10.0;
            }
            println!(
                "fraction {fraction}: {slides} slides x {tiles} tiles, {dim}-d, {queries} queries: mosaic {:.1} tiles, \
                 recall@10 of mosaic bag vs exact bag {:.3}; exact {:.1} ms, mosaic {:.1} ms per query",
                picked as f64 / queries as f64,
                recall / queries as f64,
                t_exact * 1e3 / queries as f64,
                t_mosaic * 1e3 / queries as f64
            );
        }
    }
}
