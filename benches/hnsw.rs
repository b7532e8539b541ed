//! HNSW on clustered 512-d unit vectors (not uniform random, which is unlike real
//! embeddings): build time, query latency p50/p99 and recall@10 against exact search
//! at several ef, with the parameters the index uses.
//!
//!     cargo bench --bench hnsw                       # 100k vectors
//!     PLIP_BENCH_N=1000000 cargo bench --bench hnsw  # 1M (about 2 GB of vectors)

use std::time::Instant;

use plip::ann::{exact_search, AnnGraph, AnnParams, DEFAULT_EF_SEARCH};
use rayon::prelude::*;

/// splitmix64, so the data is the same on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn gauss(&mut self) -> f32 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64 + 1e-12;
        let v = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// `n` unit vectors around 100 cluster centres, with spread like CLIP embeddings
/// of one tissue type (cosine to the centre around 0.8).
fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let centres: Vec<f32> = (0..100 * dim).map(|_| rng.gauss()).collect();
    let mut out = vec![0f32; n * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
        let mut r = Rng(seed ^ (i as u64).wrapping_mul(0x2545F4914F6CDD1D));
        let c = (r.next() % 100) as usize;
        for (j, x) in row.iter_mut().enumerate() {
            *x = centres[c * dim + j] + 0.75 * r.gauss();
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    });
    out
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that fast.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("PLIP_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let (dim, nq, k) = (512, 500, 10);
    let t = Instant::now();
    let all = clustered(n + nq, dim, 7);
    let (data, queries) = all.split_at(n * dim);
    eprintln!(
        "{n} clustered {dim}-d vectors generated in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let graph = AnnGraph::build(data, dim, &AnnParams::default()).unwrap();
    let build = t.elapsed().as_secs_f64();
    let truth: Vec<Vec<usize>> = queries
        .par_chunks_exact(dim)
        .map(|q| {
            exact_search(data, dim, q, k, None)
                .into_iter()
                .map(|h| h.id)
                .collect()
        })
        .collect();
    let mut lat_exact: Vec<f64> = queries
        .chunks_exact(dim)
        .take(50)
        .map(|q| {
            let t = Instant::now();
            std::hint::black_box(exact_search(data, dim, q, k, None));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    lat_exact.sort_by(f64::total_cmp);
    println!(
        "n={n} dim={dim} params={:?} build {build:.1}s ({:.0} vectors/s)",
        AnnParams::default(),
        n as f64 / build
    );
    println!("exact search: p50 {:.2} ms", pct(&lat_exact, 0.5));
    println!(
        "{:>5} {:>9} {:>9} {:>9}",
        "ef", "recall@10", "p50 ms", "p99 ms"
    );
    for ef in [16, 32, 64, 128, 256] {
        let mut lat = Vec::new();
        let mut found = 0usize;
        for (q, want) in queries.chunks_exact(dim).zip(&truth) {
            let t = Instant::now();
            let hits = graph.search(q, k, ef, None);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            found += hits.iter().filter(|h| want.contains(&h.id)).count();
        }
        lat.sort_by(f64::total_cmp);
        let mark = if ef == DEFAULT_EF_SEARCH {
            " (default)"
        } else {
            ""
        };
        println!(
            "{ef:>5} {:>9.4} {:>9.3} {:>9.3}{mark}",
            found as f64 / (nq * k) as f64,
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
    }
}
