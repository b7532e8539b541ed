//! `plip merge` at scale: S shards of N vectors each (default 10 x 100k, 512-d),
//! merged by the real binary, then searched exactly and with `--ef`.
//!
//!     python3 fixtures/generate.py tiny-512 fixtures/tiny-512
//!     cargo bench --bench merge                          # 10 x 100k
//!     PLIP_BENCH_N=20000 PLIP_BENCH_SHARDS=4 cargo bench --bench merge
//!     PLIP_BENCH_GRAPHS=0 cargo bench --bench merge      # shards without HNSW graphs
//!
//! Embedding a million images would take days on two cores and does not change
//! what a merge does, so each shard holds clustered unit vectors (the generator
//! of `benches/hnsw.rs`, another seed per shard) under distinct file names,
//! written through the `IndexWriter` that `plip index` uses, with the tiny-512
//! model's fingerprint (tiny towers, PLIP's 512-d embeddings), and compacted as
//! `plip index` compacts them: with an HNSW graph per shard unless
//! `PLIP_BENCH_GRAPHS=0`. The shards are kept in `target/plip-bench/merge-*` and
//! reused. Reported: the wall time and peak RSS of each `plip merge` process
//! (three runs into fresh folders), and `plip search` on the merged index as a new
//! process (model load, index open with its checksums, query, print), exact and
//! with `--ef 256`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use plip::Index;

#[path = "common/mod.rs"]
mod common;
use common::clustered;

fn main() {
    let Some(n) = common::bench_size(100_000) else {
        return;
    };
    let shards: usize = env_num("PLIP_BENCH_SHARDS", 10);
    let graphs = std::env::var("PLIP_BENCH_GRAPHS").as_deref() != Ok("0");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some((model, embedder)) =
        common::bench_model("fixtures/tiny-512", "tiny-512 fixtures/tiny-512")
    else {
        return;
    };
    let info = embedder.info().clone();
    if !graphs {
        // set before the first writer reads it
        std::env::set_var("PLIP_HNSW_MIN_ROWS", usize::MAX.to_string());
    }
    let work = root.join(format!(
        "target/plip-bench/merge-{shards}x{n}{}",
        if graphs { "" } else { "-exact" }
    ));
    let dim = info.dim;
    let mut shard_dirs = Vec::new();
    for s in 0..shards {
        let dir = work.join(format!("shards/{s}"));
        let reusable = Index::open(&dir).is_ok_and(|i| i.len() == n && i.model() == &info);
        if !reusable {
            let _ = std::fs::remove_dir_all(&dir);
            let t = Instant::now();
            let vectors = clustered(n, dim, 1000 + s as u64);
            common::write_index(&dir, &info, &vectors, |i| {
                format!("../../slides/shard{s:02}/case{:03}/tile{i:06}.jpg", i % 500)
            });
            eprintln!(
                "built shard {s} ({n} vectors{}) in {:.1} s",
                if graphs { ", with its graph" } else { "" },
                t.elapsed().as_secs_f64()
            );
        }
        shard_dirs.push(dir);
    }
    let bytes: u64 = shard_dirs
        .iter()
        .map(|d| Index::open(d).unwrap().stats().bytes_on_disk)
        .sum();
    println!(
        "{shards} shards x {n} vectors ({dim}-d), {:.2} GB on disk{}",
        bytes as f64 / 1e9,
        if graphs {
            ", HNSW graph per shard"
        } else {
            ", no graphs"
        }
    );

    let plip = env!("CARGO_BIN_EXE_plip");
    let out = work.join(".plip");
    let mut merge_times = Vec::new();
    for run in 0..3 {
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = Command::new(plip);
        cmd.arg("merge").args(&shard_dirs).arg("--index").arg(&out);
        let (secs, rss) = timed(&mut cmd);
        println!(
            "plip merge run {run}: {secs:.3} s, peak RSS {:.1} MB",
            rss as f64 / 1e6
        );
        merge_times.push(secs);
    }
    let merged = Index::open(&out).unwrap();
    assert_eq!(merged.len(), shards * n);
    drop(merged);

    for extra in [&[][..], &["--ef", "256"][..]] {
        let mut times = Vec::new();
        let mut rss = 0;
        for _ in 0..6 {
            let mut cmd = Command::new(plip);
            cmd.current_dir(&work)
                .args([
                    "--model",
                    &model.to_string_lossy(),
                    "search",
                    "tumor tissue",
                ])
                .args(["-k", "10", "--index"])
                .arg(&out)
                .args(extra);
            let (s, r) = timed(&mut cmd);
            times.push(s);
            rss = rss.max(r);
        }
        times.remove(0); // the first run warms the page cache
        times.sort_by(f64::total_cmp);
        println!(
            "plip search {}(new process, {} vectors): median {:.3} s, min {:.3}, max {:.3}, peak RSS {:.0} MB",
            if extra.is_empty() { "exact " } else { "--ef 256 " },
            shards * n,
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            rss as f64 / 1e6
        );
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cmd` to success; returns its wall time and its peak RSS in bytes (0
/// where it cannot be measured). The RSS comes from GNU time
/// (`/usr/bin/time -f %M`) wrapped around the command: the rusage of a child
/// spawned from this process would include this process's own peak, which
/// Linux carries over the child's exec.
fn timed(cmd: &mut Command) -> (f64, u64) {
    let gnu_time = Path::new("/usr/bin/time");
    let mut wrapped;
    let run: &mut Command = if gnu_time.exists() {
        wrapped = Command::new(gnu_time);
        wrapped
            .args(["-f", "%M"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        &mut wrapped
    } else {
        cmd
    };
    let t = Instant::now();
    let out = run.output().expect("starting plip");
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{run:?}: {stderr}");
    let kib: u64 = if gnu_time.exists() {
        stderr
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    (secs, kib * 1024)
}
