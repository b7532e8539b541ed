//! Two studies of the HNSW graph, run by hand (they were ignored unit tests in
//! `src/index/ann/tests.rs`); both print to stderr.
//!
//! * `measure`: recall@10 and latency at many ef on synthetic data, for the serial and the
//!   parallel build, with findability, a filtered search and save/load times:
//!
//!       cargo bench --bench ann_study -- measure
//!
//!   Env: ANN_N (100000), ANN_DIM (512), ANN_CLUSTERS (20), ANN_Q (1000), ANN_DATA
//!   (lowrank|iso|outliers), ANN_BUILD (serial,parallel), ANN_M, ANN_EFC.
//! * `diagnose`: why plip does not use `Hnsw::search`: on the very same hnsw_rs graph
//!   (before repair), its recall and findability against plip's search:
//!
//!       cargo bench --bench ann_study -- diagnose
//!
//!   Env as for `measure`; default ANN_N = 50000, ANN_Q = 500.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it does nothing.

use std::time::Instant;

use plip::ann_study::{layer_sizes, HnswRsGraph, REPAIR_EF};
use plip::{exact_search, AnnGraph, AnnParams, DEFAULT_EF_SEARCH};
use rayon::prelude::*;

/// splitmix64: tiny seeded PRNG for reproducible data.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Standard normal (Box-Muller).
    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` unit vectors around `clusters` random unit centres; the noise
/// vector has expected norm `spread` before normalization.
fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut centres = vec![0f32; clusters * dim];
    for c in centres.chunks_exact_mut(dim) {
        c.iter_mut().for_each(|x| *x = rng.gauss());
        normalize(c);
    }
    let sigma = spread / (dim as f32).sqrt();
    let mut out = vec![0f32; n * dim];
    for row in out.chunks_exact_mut(dim) {
        let c = rng.below(clusters);
        let centre = &centres[c * dim..(c + 1) * dim];
        for (x, m) in row.iter_mut().zip(centre) {
            *x = m + sigma * rng.gauss();
        }
        normalize(row);
    }
    out
}

/// Clusters with low intrinsic dimension, closer to real image
/// embeddings: each point is its centre plus a combination of `rank`
/// cluster-specific directions (norm ~`spread`) plus small isotropic
/// noise (norm ~`spread / 4`).
fn clustered_lowrank(
    n: usize,
    dim: usize,
    clusters: usize,
    rank: usize,
    spread: f32,
    seed: u64,
) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut centres = vec![0f32; clusters * dim];
    let mut basis = vec![0f32; clusters * rank * dim];
    for c in centres.chunks_exact_mut(dim) {
        c.iter_mut().for_each(|x| *x = rng.gauss());
        normalize(c);
    }
    for b in basis.chunks_exact_mut(dim) {
        b.iter_mut().for_each(|x| *x = rng.gauss());
        normalize(b);
    }
    let coef = spread / (rank as f32).sqrt();
    let iso = spread / 4.0 / (dim as f32).sqrt();
    let mut out = vec![0f32; n * dim];
    let mut w = vec![0f32; rank];
    for row in out.chunks_exact_mut(dim) {
        let c = rng.below(clusters);
        row.copy_from_slice(&centres[c * dim..(c + 1) * dim]);
        w.iter_mut().for_each(|x| *x = coef * rng.gauss());
        for (j, wj) in w.iter().enumerate() {
            let b = &basis[(c * rank + j) * dim..(c * rank + j + 1) * dim];
            row.iter_mut().zip(b).for_each(|(x, y)| *x += wj * y);
        }
        row.iter_mut().for_each(|x| *x += iso * rng.gauss());
        normalize(row);
    }
    out
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

type Filter<'a> = Option<&'a (dyn Fn(usize) -> bool + Sync)>;

/// The ids of the exact top `k` of `q`.
fn exact_ids(data: &[f32], dim: usize, q: &[f32], k: usize, allow: Filter<'_>) -> Vec<usize> {
    exact_search(data, dim, q, k, allow)
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let diagnose = args.iter().any(|a| a == "diagnose");
    let measure = args.iter().any(|a| a == "measure");
    if !diagnose && !measure {
        eprintln!("name a study: cargo bench --bench ann_study -- measure|diagnose");
        return;
    }
    if measure {
        measure_recall_latency();
    }
    if diagnose {
        diagnose_hnsw_rs_search();
    }
}

/// The data of a study: `n + nq` rows of `ANN_DATA`'s kind, split into data and queries.
fn study_data(n: usize, nq: usize, dim: usize, clusters: usize, kind: &str) -> Vec<f32> {
    let mut all = match kind {
        "iso" | "outliers" => clustered(n + nq, dim, clusters, 0.8, 1234),
        _ => clustered_lowrank(n + nq, dim, clusters, 16, 0.8, 1234),
    };
    if kind == "outliers" {
        // CLIP embeddings have a few dimensions far larger than the rest,
        // which coarsens 8-bit codes scaled by the largest value
        for row in all.chunks_exact_mut(dim) {
            for (j, x) in row.iter_mut().take(4).enumerate() {
                *x += [0.5, -0.4, 0.3, 0.3][j];
            }
            normalize(row);
        }
    }
    all
}

/// One study's data, queries and exact top-`k` answers.
struct Study<'a> {
    data: &'a [f32],
    queries: &'a [f32],
    dim: usize,
    k: usize,
}

impl Study<'_> {
    /// Recall@k against `truth` (the first `truth.len()` queries) and latency p50 / p99
    /// in ms.
    fn recall_latency(
        &self,
        g: &AnnGraph,
        ef: usize,
        allow: Filter<'_>,
        truth: &[Vec<usize>],
    ) -> (f64, f64, f64) {
        let mut found = 0usize;
        let mut lat = Vec::with_capacity(truth.len());
        for (q, tr) in self.queries.chunks_exact(self.dim).zip(truth) {
            let t = Instant::now();
            let got = g.search(q, self.k, ef, allow);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            found += got.iter().filter(|h| tr.contains(&h.id)).count();
        }
        lat.sort_by(f64::total_cmp);
        (
            found as f64 / (truth.len() * self.k) as f64,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
        )
    }
}

/// Release-mode measurement of recall, latency, findability and file sizes.
fn measure_recall_latency() {
    let n = env_usize("ANN_N", 100_000);
    let dim = env_usize("ANN_DIM", 512);
    let clusters = env_usize("ANN_CLUSTERS", 20);
    let nq = env_usize("ANN_Q", 1000);
    let kind = std::env::var("ANN_DATA").unwrap_or_else(|_| "lowrank".into());
    let builds = std::env::var("ANN_BUILD").unwrap_or_else(|_| "serial,parallel".into());
    let params = AnnParams {
        max_connections: env_usize("ANN_M", AnnParams::default().max_connections),
        ef_construction: env_usize("ANN_EFC", AnnParams::default().ef_construction),
        parallel_insert: false,
    };
    let t = Instant::now();
    let all = study_data(n, nq, dim, clusters, &kind);
    let (data, queries) = all.split_at(n * dim);
    eprintln!(
        "data {kind}: n={n} dim={dim} clusters={clusters} queries={nq} \
         threads={} params={params:?} (gen {:.1}s)",
        rayon::current_num_threads(),
        t.elapsed().as_secs_f64()
    );
    let study = Study {
        data,
        queries,
        dim,
        k: 10,
    };
    let t = Instant::now();
    let truth: Vec<Vec<usize>> = queries
        .par_chunks_exact(dim)
        .map(|q| exact_ids(data, dim, q, study.k, None))
        .collect();
    let exact_ms = t.elapsed().as_secs_f64() * 1e3 / nq as f64;
    let mut lat = Vec::new();
    for q in queries.chunks_exact(dim).take(200) {
        let t = Instant::now();
        std::hint::black_box(exact_search(data, dim, q, study.k, None));
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    eprintln!(
        "exact_search: {exact_ms:.2} ms/query amortized over rayon; single query p50 {:.2} ms p99 {:.2} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    for mode in builds.split(',') {
        let params = AnnParams {
            parallel_insert: mode == "parallel",
            ..params
        };
        measure_build(&study, mode, &params, &truth);
    }
}

/// Builds one graph (`mode`: serial or parallel) and measures it.
fn measure_build(study: &Study<'_>, mode: &str, params: &AnnParams, truth: &[Vec<usize>]) {
    let (data, dim, n) = (study.data, study.dim, study.data.len() / study.dim);
    let t = Instant::now();
    let mut g = AnnGraph::build(data, dim, params).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let (levels, links) = layer_sizes(&g);
    eprintln!(
        "\n== build {mode}: {build_s:.1}s, {:?}, levels {levels}, layer-0 links {links} ({:.1}/point), RSS {} MiB",
        g.build_stats().unwrap(),
        links as f64 / n as f64,
        rss_mib()
    );
    // findability after repair: every point searched with its own vector
    for (fk, fef) in [(1usize, 10usize), (10, REPAIR_EF)] {
        let t = Instant::now();
        let missing: Vec<usize> = (0..n)
            .into_par_iter()
            .filter(|&i| {
                let q = &data[i * dim..(i + 1) * dim];
                !g.search(q, fk, fef, None).iter().any(|h| h.id == i)
            })
            .collect();
        eprintln!(
            "findability k={fk} ef={fef}: {} of {n} not found ({:.1}s) {:?}",
            missing.len(),
            t.elapsed().as_secs_f64(),
            &missing[..missing.len().min(10)]
        );
    }
    // the default walk last, for what follows
    for coded in [false, true] {
        g.set_coded_walk(coded);
        eprintln!(
            "layer-0 walk on {}",
            if coded { "8-bit codes" } else { "f32 rows" }
        );
        for ef in [10usize, 16, 24, 32, 48, 64, 96, 128, 200, 256] {
            let (r, p50, p99) = study.recall_latency(&g, ef, None, truth);
            eprintln!("ef={ef:4} recall@10={r:.4} latency p50={p50:.3}ms p99={p99:.3}ms");
        }
    }
    // filtered: 10% of ids hidden
    let allow = |id: usize| !id.is_multiple_of(10);
    let filtered: Vec<Vec<usize>> = study
        .queries
        .chunks_exact(dim)
        .take(200)
        .map(|q| exact_ids(data, dim, q, study.k, Some(&allow)))
        .collect();
    let (r, p50, p99) = study.recall_latency(&g, DEFAULT_EF_SEARCH, Some(&allow), &filtered);
    eprintln!(
        "filtered (10% hidden) ef={DEFAULT_EF_SEARCH}: recall@10={r:.4} p50={p50:.3}ms p99={p99:.3}ms"
    );
    if !params.parallel_insert {
        save_and_load(study, &g);
    }
}

/// Save and load times and file sizes; the loaded graph answers as the built one.
fn save_and_load(study: &Study<'_>, g: &AnnGraph) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let t = Instant::now();
    let files = g.save(dir, "bench").unwrap();
    let save_s = t.elapsed().as_secs_f64();
    let sizes: Vec<u64> = files.iter().map(|f| f.metadata().unwrap().len()).collect();
    let t = Instant::now();
    let l = AnnGraph::load(dir, "bench").unwrap();
    eprintln!(
        "save {save_s:.1}s load {:.1}s sizes {sizes:?}",
        t.elapsed().as_secs_f64()
    );
    let q = &study.queries[..study.dim];
    assert_eq!(
        l.search(q, study.k, 64, None),
        g.search(q, study.k, 64, None)
    );
}

/// Why we do not use `Hnsw::search`: on the very same hnsw_rs graph, compare it with our
/// search (before repair).
fn diagnose_hnsw_rs_search() {
    let n = env_usize("ANN_N", 50_000);
    let dim = env_usize("ANN_DIM", 512);
    let nq = env_usize("ANN_Q", 500);
    let p = AnnParams::default();
    let all = clustered_lowrank(n + nq, dim, env_usize("ANN_CLUSTERS", 20), 16, 0.8, 1234);
    let (data, queries) = all.split_at(n * dim);
    let graph = HnswRsGraph::build(data, dim, &p);
    let truth: Vec<Vec<usize>> = queries
        .par_chunks_exact(dim)
        .map(|q| exact_ids(data, dim, q, 10, None))
        .collect();
    for ef in [16usize, 32, 64, 128] {
        let (mut a, mut b) = (0, 0);
        for (q, tr) in queries.chunks_exact(dim).zip(&truth) {
            let hit = |id: &usize| tr.contains(id);
            a += graph
                .hnsw_rs_search(q, 10, ef)
                .iter()
                .filter(|id| hit(id))
                .count();
            b += graph
                .our_search(data, dim, q, 10, ef)
                .iter()
                .filter(|id| hit(id))
                .count();
        }
        eprintln!(
            "ef={ef}: recall@10 Hnsw::search {:.4}, ours on the same graph {:.4}",
            a as f64 / (nq * 10) as f64,
            b as f64 / (nq * 10) as f64
        );
    }
    let missed_rs = (0..n)
        .into_par_iter()
        .filter(|&i| {
            let q = &data[i * dim..(i + 1) * dim];
            !graph.hnsw_rs_search(q, 10, REPAIR_EF).contains(&i)
        })
        .count();
    let missed_ours = (0..n)
        .into_par_iter()
        .filter(|&i| !graph.found_by_our_check(data, dim, i))
        .count();
    eprintln!(
        "not found by own vector (k=10, ef={REPAIR_EF}): Hnsw::search {missed_rs}, ours {missed_ours} of {n}"
    );
}
