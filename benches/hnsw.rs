//! HNSW on clustered 512-d unit vectors (not uniform random, which is unlike real
//! embeddings): build time, query latency p50/p99 and recall@10 against exact search
//! at several ef, with the parameters the index uses.
//!
//!     cargo bench --bench hnsw                       # 100k vectors
//!     PLIP_BENCH_N=1000000 cargo bench --bench hnsw  # 1M (about 2 GB of vectors)
//!     PLIP_BENCH_PARALLEL=1 …                          # parallel build (not deterministic)
//!     PLIP_BENCH_REBUILD=1 …                           # ignore the graph kept in target/plip-bench
//!     PLIP_BENCH_WALK=coded|f32 …                      # measure one layer-0 walk only (default: both)

use std::time::Instant;

use plip::{exact_search, AnnGraph, AnnParams, DEFAULT_EF_SEARCH};
use rayon::prelude::*;

#[path = "common/mod.rs"]
mod common;
use common::clustered;

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let Some(n) = common::bench_size(100_000) else {
        return;
    };
    let (dim, nq, k) = (512, 500, 10);
    let t = Instant::now();
    let all = clustered(n + nq, dim, 7);
    let (data, queries) = all.split_at(n * dim);
    eprintln!(
        "{n} clustered {dim}-d vectors generated in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // Building takes minutes at 100k and nearly two hours at 1M on two cores, so the
    // graph is kept under target/plip-bench/ and reused; PLIP_BENCH_REBUILD=1
    // builds it again.
    let parallel = std::env::var("PLIP_BENCH_PARALLEL").as_deref() == Ok("1");
    let params = AnnParams {
        parallel_insert: parallel,
        ..AnnParams::default()
    };
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plip-bench");
    let base = format!(
        "hnsw-{n}-m{}-efc{}-{}",
        params.max_connections,
        params.ef_construction,
        if parallel { "parallel" } else { "serial" }
    );
    let build_log = cache.join(format!("{base}.txt"));
    let rebuild = std::env::var("PLIP_BENCH_REBUILD").as_deref() == Ok("1");
    let t = Instant::now();
    let loaded = AnnGraph::load(&cache, &base);
    let load_s = t.elapsed().as_secs_f64();
    let (graph, build_note) = match loaded {
        Ok(g) if !rebuild && g.len() == n => {
            let note = std::fs::read_to_string(&build_log).unwrap_or_default();
            eprintln!(
                "reusing {}/{base}.ann (PLIP_BENCH_REBUILD=1 rebuilds)",
                cache.display()
            );
            let codes = if g.coded_walk() {
                ", 8-bit codes included"
            } else {
                ""
            };
            (
                g,
                format!(
                    "cached graph loaded in {load_s:.2} s{codes}; {}",
                    note.trim()
                ),
            )
        }
        _ => {
            let t = Instant::now();
            let g = AnnGraph::build(data, dim, &params).unwrap();
            let build = t.elapsed().as_secs_f64();
            let note = format!(
                "{} build {build:.1}s ({:.0} vectors/s), {:?}",
                if parallel { "parallel" } else { "serial" },
                n as f64 / build,
                g.build_stats().unwrap_or_default()
            );
            std::fs::create_dir_all(&cache).unwrap();
            g.save(&cache, &base).unwrap();
            std::fs::write(&build_log, &note).unwrap();
            (g, note)
        }
    };
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
    println!("n={n} dim={dim} params={params:?}: {build_note}");
    println!("exact search: p50 {:.2} ms", pct(&lat_exact, 0.5));
    // the walk the graph uses at this size first, then the other one
    let mut graph = graph;
    let default_walk = graph.coded_walk();
    let walks = match std::env::var("PLIP_BENCH_WALK").as_deref() {
        Ok("f32") => vec![false],
        Ok("coded") => vec![true],
        _ => vec![default_walk, !default_walk],
    };
    if default_walk {
        graph.set_coded_walk(false);
        let t = Instant::now();
        graph.set_coded_walk(true);
        println!("8-bit codes built in {:.2} s", t.elapsed().as_secs_f64());
    }
    for coded in walks {
        graph.set_coded_walk(coded);
        println!(
            "layer-0 walk on {}{}",
            if coded { "8-bit codes" } else { "f32 rows" },
            if coded == default_walk {
                " (the default)"
            } else {
                ""
            }
        );
        println!(
            "{:>5} {:>9} {:>9} {:>9}",
            "ef", "recall@10", "p50 ms", "p99 ms"
        );
        for ef in [16, 32, 64, 128, 192, 256] {
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
}
