//! `plip search` as a whole process, cold: start, load the text tower, open the
//! index, embed the prompt, search and print, on an index of 100k images. Next to
//! it, the Python route (`benches/reference.py search`: import torch and
//! transformers, load CLIPModel, embed the prompt, rank the same vectors).
//!
//!     cargo bench --bench cold_search                     # 100k images
//!     PLIP_BENCH_N=20000 cargo bench --bench cold_search   # smaller
//!     PLIP_BENCH_PYTHON=0 cargo bench --bench cold_search  # plip only
//!
//! plip runs twice in turns: exact, as by default, and with `--ef 256`, which
//! loads the HNSW graph and searches it.
//!
//! Embedding 100k real images would take hours on two cores and does not change
//! what search does, so the index holds 100k clustered unit vectors (the same
//! generator as `benches/hnsw.rs`) under file names, written through the same
//! `IndexWriter` that `plip index` uses, with the model's real fingerprint; its
//! HNSW graph is built exactly as `plip index` builds it. The index is kept in
//! `target/plip-bench/` and reused by later runs. "Cold" means a new process each
//! time; the files are in the OS page cache, as they are for a user's second search.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use plip::Index;

#[path = "common/mod.rs"]
mod common;
use common::clustered;

const PROMPT: &str = "tumor tissue";

fn main() {
    let Some(n) = common::bench_size(100_000) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some((model, embedder)) =
        common::bench_model("fixtures/full-size", "full-size fixtures/full-size")
    else {
        return;
    };
    let info = embedder.info().clone();

    let work = root.join(format!("target/plip-bench/cold-{n}"));
    let index_dir = work.join(".plip");
    let matrix = work.join("vectors.npy");
    // an index from before the `.ann` graph format is searched exactly even
    // with --ef, so it is rebuilt
    let current_graph = std::fs::read_dir(&index_dir).is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".hnsw.ann"))
    });
    let reusable = Index::open(&index_dir)
        .map(|i| i.len() == n && i.model() == &info)
        .unwrap_or(false)
        && matrix.exists()
        && current_graph;
    if !reusable {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        eprintln!("building a {n}-image index in {} (once)", work.display());
        let t = Instant::now();
        let dim = info.dim;
        let vectors = clustered(n, dim, 7);
        common::write_index(&index_dir, &info, &vectors, |i| {
            format!("slides/case{:03}/tile{i:06}.jpg", i % 500)
        });
        let rows: Vec<Vec<f32>> = vectors.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        let f = std::fs::File::create(&matrix).unwrap();
        plip::write_npy(std::io::BufWriter::new(f), &rows, dim).unwrap();
        eprintln!("built in {:.1} s", t.elapsed().as_secs_f64());
    }
    let stats = Index::open(&index_dir).unwrap().stats();
    eprintln!("index: {stats:?}");

    let plip = env!("CARGO_BIN_EXE_plip");
    let search = |extra: &[&str]| {
        let mut cmd = Command::new(plip);
        cmd.current_dir(&work)
            .args([
                "--model",
                &model.to_string_lossy(),
                "search",
                PROMPT,
                "-k",
                "10",
            ])
            .args(extra);
        cmd
    };
    // exact (the default) and with the HNSW graph, run alternately
    let mut timed = time_alternating(&mut [search(&[]), search(&["--ef", "256"])], 10);
    let ef_s = timed.pop().unwrap_or_default();
    let plip_s = timed.pop().unwrap_or_default();
    report("plip search (new process)", &plip_s);
    report("plip search --ef 256 (new process, HNSW graph)", &ef_s);

    if std::env::var("PLIP_BENCH_PYTHON").as_deref() == Ok("0") {
        return;
    }
    let mut python = Command::new("python3");
    python.args([
        &root.join("benches/reference.py").to_string_lossy(),
        "search",
        PROMPT,
        "--model",
        &model.to_string_lossy(),
        "--matrix",
        &matrix.to_string_lossy(),
    ]);
    let py_s = time_alternating(std::slice::from_mut(&mut python), 3)
        .pop()
        .unwrap_or_default();
    if py_s.is_empty() {
        return;
    }
    report("Python route (new process)", &py_s);
    println!(
        "ratio (median): {:.1}x faster",
        median(&py_s) / median(&plip_s)
    );
}

/// Wall-clock seconds of `runs` runs of each command, sorted, after one warm-up
/// each; the commands take turns, so that the machine's slow and fast minutes
/// fall on all of them. Empty if a command fails.
fn time_alternating(cmds: &mut [Command], runs: usize) -> Vec<Vec<f64>> {
    let ok = |cmd: &mut Command| match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("{cmd:?} could not start: {e}");
            false
        }
    };
    if !cmds.iter_mut().all(ok) {
        return Vec::new();
    }
    let mut times = vec![Vec::new(); cmds.len()];
    for _ in 0..runs {
        for (cmd, times) in cmds.iter_mut().zip(&mut times) {
            let t = Instant::now();
            assert!(ok(cmd));
            times.push(t.elapsed().as_secs_f64());
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    times
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

fn report(what: &str, sorted: &[f64]) {
    if sorted.is_empty() {
        return;
    }
    println!(
        "{what}: median {:.3} s, min {:.3} s, max {:.3} s over {} runs",
        median(sorted),
        sorted[0],
        sorted[sorted.len() - 1],
        sorted.len()
    );
}
