//! Synthetic data shared by the benchmarks.

use rayon::prelude::*;

/// splitmix64, so the data is the same on every machine.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn gauss(&mut self) -> f32 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64 + 1e-12;
        let v = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// `n` unit vectors around 100 cluster centres, with spread like CLIP embeddings
/// of one tissue type (cosine to the centre around 0.8).
#[allow(dead_code)] // not every bench uses it
pub fn clustered(n: usize, dim: usize, seed: u64) -> Vec<f32> {
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

/// The number of vectors to use (`PLIP_BENCH_N`, else `default`), or `None` when
/// run by `cargo test --benches`, which passes no `--bench` and should stay fast.
pub fn bench_size(default: usize) -> Option<usize> {
    if !std::env::args().any(|a| a == "--bench") {
        return None;
    }
    Some(
        std::env::var("PLIP_BENCH_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

/// The folder and the text tower of the model that `PLIP_BENCH_MODEL` names, by default
/// `default_dir` under the repository; `None`, with how to make it, when
/// there is none. `make` is the `fixtures/generate.py` command that writes it.
#[allow(dead_code)] // not every bench loads a model
pub fn bench_model(default_dir: &str, make: &str) -> Option<(std::path::PathBuf, plip::Embedder)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = std::env::var("PLIP_BENCH_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(default_dir));
    let Ok(files) = plip::resolve_model(&model.to_string_lossy()) else {
        eprintln!(
            "no model at {}: run `python3 fixtures/generate.py {make}`",
            model.display()
        );
        return None;
    };
    let embedder = plip::Embedder::load(&files, plip::Towers::TEXT).expect("loading the model");
    Some((model, embedder))
}

/// Writes `vectors` (rows of `info.dim` values) as a new, compacted index at `dir`,
/// row `i` stored under the path `path(i)` (no region, zero size and mtime).
#[allow(dead_code)] // not every bench writes an index
pub fn write_index(
    dir: &std::path::Path,
    info: &plip::ModelInfo,
    vectors: &[f32],
    mut path: impl FnMut(usize) -> String,
) {
    let mut w = plip::IndexWriter::open(dir, info, true).unwrap();
    for (i, v) in vectors.chunks_exact(info.dim).enumerate() {
        let entry = plip::FileEntry {
            path: path(i),
            size: 0,
            mtime_ns: 0,
            crc32: 0,
            region: None,
        };
        w.add(entry, v);
    }
    w.compact().unwrap();
}
