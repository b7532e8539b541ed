//! A whole slide as the query at scale (issue 32): `plip search --image SLIDE
//! --slide-score bag -k 10` as a new process, on a synthetic index of many slides of
//! many tiles, with its wall time and peak RSS (`/usr/bin/time`); and the recall of
//! the graph route (mosaic tiles searched in the HNSW graphs, candidates scored
//! exactly) against exact `bag` over every slide.
//!
//!     cargo bench --bench slide_query                               # 1000 x 1000 tiles
//!     PLIP_BENCH_SLIDES=200 PLIP_BENCH_TILES=400 PLIP_BENCH_RECALL=1 \
//!         cargo bench --bench slide_query                           # recall vs exact
//!
//! `PLIP_BENCH_SEGMENT` rows (default 1,000,000) go into each segment, each with its
//! own HNSW graph, as `plip index` runs of that size would leave them. The vectors
//! are 16-d (the tiny fixture model's size, `fixtures/model`): each slide holds 4
//! tissue kinds of 40, one per quadrant, each tile its kind's prototype plus noise.
//! The query slides are in the index, so no model runs; the slide files are empty
//! placeholders. The index is kept in `target/plip-bench/` and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use plip::{FileEntry, Index, IndexWriter, Region};
use rayon::prelude::*;

#[path = "common/mod.rs"]
mod common;
use common::Rng;

const KINDS: usize = 40;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The tiles of slide `s`: `(region, unit vector)`, on a square grid.
fn slide_tiles(s: usize, tiles: usize, protos: &[Vec<f32>], dim: usize) -> Vec<(Region, Vec<f32>)> {
    let mut rng = Rng(0x5EED ^ (s as u64).wrapping_mul(0x9E37_79B9));
    let kinds: Vec<usize> = (0..4)
        .map(|_| (rng.next() % KINDS as u64) as usize)
        .collect();
    let side = (tiles as f64).sqrt().ceil() as usize;
    (0..tiles)
        .map(|t| {
            let (x, y) = (t % side, t / side);
            let k = kinds[2 * (y * 2 / side) + x * 2 / side];
            let mut v: Vec<f32> = (0..dim)
                .map(|j| protos[k][j] + 0.15 * rng.gauss())
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            let region = Region {
                x: (x * 224) as u64,
                y: (y * 224) as u64,
                w: 224,
                h: 224,
                level: 0,
                mpp: 0.5,
            };
            (region, v)
        })
        .collect()
}

fn slide_path(s: usize) -> String {
    format!("slides/s{s:05}.svs")
}

/// Writes the index (once) and the placeholder slide files.
fn build(work: &Path, info: &plip::ModelInfo, slides: usize, tiles: usize, per_segment: usize) {
    let dim = info.dim;
    let mut rng = Rng(40);
    let protos: Vec<Vec<f32>> = (0..KINDS)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| rng.gauss()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect();
    std::fs::create_dir_all(work.join("slides")).unwrap();
    let mut w = IndexWriter::open(&work.join(".plip"), info, true).unwrap();
    let per = (per_segment / tiles).max(1);
    for first in (0..slides).step_by(per) {
        let last = (first + per).min(slides);
        let t = Instant::now();
        let rows: Vec<Vec<(Region, Vec<f32>)>> = (first..last)
            .into_par_iter()
            .map(|s| slide_tiles(s, tiles, &protos, dim))
            .collect();
        for (s, rows) in (first..last).zip(rows) {
            std::fs::write(work.join(slide_path(s)), b"").unwrap();
            for (region, v) in rows {
                let entry = FileEntry {
                    path: slide_path(s),
                    size: 0,
                    mtime_ns: 0,
                    crc32: 0,
                    region: Some(region),
                };
                w.add(entry, &v);
            }
        }
        w.compact().unwrap();
        eprintln!(
            "slides {first}..{last}: a segment of {} rows with its graph in {:.1} s",
            (last - first) * tiles,
            t.elapsed().as_secs_f64()
        );
    }
}

/// One `plip search` run: (wall seconds, peak RSS in MiB, the slides found).
fn search(work: &Path, model: &Path, query: usize, extra: &[&str]) -> (f64, f64, Vec<String>) {
    let plip = env!("CARGO_BIN_EXE_plip");
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .current_dir(work)
        .args(["-f", "%M", plip, "--threads", "2", "--model"])
        .arg(model)
        .args([
            "search",
            "--image",
            &slide_path(query),
            "--slide-score",
            "bag",
        ])
        .args(["-k", "10", "--paths-only"])
        .args(extra)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plip search failed: {err}");
    let rss_kb: f64 = err.lines().last().unwrap().trim().parse().unwrap();
    let found = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (secs, rss_kb / 1024.0, found)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if common::bench_size(0).is_none() {
        return;
    }
    let (slides, tiles) = (
        env("PLIP_BENCH_SLIDES", 1000),
        env("PLIP_BENCH_TILES", 1000),
    );
    let per_segment = env("PLIP_BENCH_SEGMENT", 1_000_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some((model, embedder)) = common::bench_model("fixtures/model", "the tiny fixtures") else {
        return;
    };
    let info = embedder.info().clone();
    drop(embedder);
    let work: PathBuf = root.join(format!(
        "target/plip-bench/slides-{slides}x{tiles}-{per_segment}"
    ));
    let n = slides * tiles;
    let reusable = Index::open(&work.join(".plip")).is_ok_and(|i| i.len() == n);
    if !reusable {
        let _ = std::fs::remove_dir_all(&work);
        let t = Instant::now();
        build(&work, &info, slides, tiles, per_segment);
        eprintln!("built {n} rows in {:.1} s", t.elapsed().as_secs_f64());
    }
    let bytes: u64 = std::fs::read_dir(work.join(".plip"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "index: {slides} slides x {tiles} tiles = {n} rows, {}-d, {:.1} MiB on disk",
        info.dim,
        bytes as f64 / (1 << 20) as f64
    );
    let queries: Vec<usize> = (0..env("PLIP_BENCH_QUERIES", 10))
        .map(|q| q * slides / env("PLIP_BENCH_QUERIES", 10))
        .collect();
    let recall = std::env::var("PLIP_BENCH_RECALL").as_deref() == Ok("1");
    let mut routes: Vec<(&str, Vec<&str>)> = vec![("default route", vec![])];
    if recall {
        routes = vec![
            ("exact bag", vec![]),
            ("graph route, --ef 64", vec!["--ef", "64"]),
            ("graph route, --ef 256", vec!["--ef", "256"]),
        ];
    }
    // a warm-up run, so the index is in the page cache
    search(&work, &model, queries[0], &routes[0].1);
    let mut exact: Vec<Vec<String>> = Vec::new();
    for (r, (name, extra)) in routes.iter().enumerate() {
        let (mut secs, mut rss, mut hits) = (Vec::new(), Vec::new(), 0usize);
        for (qi, &q) in queries.iter().enumerate() {
            let (s, m, found) = search(&work, &model, q, extra);
            secs.push(s);
            rss.push(m);
            if r == 0 {
                exact.push(found);
            } else {
                hits += found.iter().filter(|f| exact[qi].contains(f)).count();
            }
        }
        let max_rss = rss.iter().copied().fold(0.0, f64::max);
        print!(
            "{name}: median {:.3} s, max {:.3} s over {} queries; peak RSS up to {max_rss:.0} MiB",
            median(secs.clone()),
            secs.iter().copied().fold(0.0, f64::max),
            queries.len()
        );
        if r > 0 {
            let total: usize = exact.iter().map(Vec::len).sum();
            print!("; recall@10 vs exact bag {:.3}", hits as f64 / total as f64);
        }
        println!();
    }
}
