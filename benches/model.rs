//! Model speed: image-embedding throughput by batch size, and text-embedding latency
//! for a short prompt and a 77-token one. Weights do not change speed, so the
//! full-size random-weight model from `python3 fixtures/generate.py full-size
//! fixtures/full-size` stands in for vinid/plip; `PLIP_BENCH_MODEL` picks another.
//!
//!     cargo bench --bench model
//!     PLIP_BENCH_PYTHON=0 cargo bench --bench model     # without the reference
//!     PLIP_BENCH_ROUNDS=9 cargo bench --bench model     # more side-by-side rounds
//!     PLIP_BENCH_BATCHES=1,8,32 cargo bench --bench model -- none  # those batches only
//!
//! After the criterion groups, image embedding at batch 16 (or each batch size
//! of `PLIP_BENCH_BATCHES`) runs side by side
//! with the PyTorch reference (`benches/reference.py pixels`: transformers
//! `CLIPModel`, same model folder, same thread count): rounds that alternate
//! plip and the reference, each the median of 4 timed batches after a warm-up.
//! This machine's speed drifts by a third within minutes, so a ratio is only
//! meaningful between runs made close together; the median of the per-round
//! ratios is the figure to report.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plip::Embedder;
use plip::Towers;

fn bench(c: &mut Criterion) {
    // As the plip binary does.
    plip::tune_allocator();
    let dir = std::env::var("PLIP_BENCH_MODEL")
        .unwrap_or_else(|_| format!("{}/fixtures/full-size", env!("CARGO_MANIFEST_DIR")));
    let Ok(files) = plip::resolve_model(&dir) else {
        eprintln!(
            "no model at {dir}: run `python3 fixtures/generate.py full-size fixtures/full-size`"
        );
        return;
    };
    let e = Embedder::load(&files, Towers::BOTH).unwrap();
    let (h, w) = e.preprocess_config().output_size();
    let one: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();

    let mut group = c.benchmark_group("image embedding");
    group.sample_size(10);
    for batch in [1usize, 8, 16, 32] {
        let pixels = repeat(&one, batch);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch {batch}"), |b| {
            b.iter(|| e.embed_pixels(black_box(pixels.clone()), batch).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("text embedding");
    for (name, prompt) in [
        ("short", "tumor tissue".to_string()),
        ("77 tokens", "cell ".repeat(100)),
    ] {
        let ids = e.tokenize(&prompt).unwrap();
        eprintln!("{name}: {} tokens", ids.len());
        group.bench_function(name, |b| {
            b.iter(|| e.embed_texts(black_box(&[prompt.as_str()])).unwrap())
        });
    }
    group.finish();

    side_by_side(&e, &one, &dir);
}

/// Image embedding at each batch size of `PLIP_BENCH_BATCHES` (default 16),
/// alternating with the PyTorch reference.
fn side_by_side(e: &Embedder, one: &[f32], dir: &str) {
    if std::env::var("PLIP_BENCH_PYTHON").as_deref() == Ok("0") {
        return;
    }
    let batches = std::env::var("PLIP_BENCH_BATCHES").unwrap_or_else(|_| "16".into());
    for batch in batches.split(',') {
        match batch.trim().parse() {
            Ok(b) if b > 0 => {
                if !side_by_side_batch(e, one, dir, b) {
                    return;
                }
            }
            _ => eprintln!("PLIP_BENCH_BATCHES: {batch:?} is not a batch size"),
        }
    }
}

/// [`side_by_side`] for one batch size; false when the reference did not run.
fn side_by_side_batch(e: &Embedder, one: &[f32], dir: &str, batch: usize) -> bool {
    const RUNS: usize = 4;
    let rounds: usize = std::env::var("PLIP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let threads = plip::threads();
    let script = format!("{}/benches/reference.py", env!("CARGO_MANIFEST_DIR"));
    let pixels = repeat(one, batch);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "side by side, image embedding at batch {batch}, {threads} threads \
         (plip | reference | ratio, images/s):"
    );
    let mut ratios = Vec::new();
    for round in 0..rounds {
        e.embed_pixels(pixels.clone(), batch).unwrap();
        let plip = median(
            (0..RUNS)
                .map(|_| {
                    let input = pixels.clone();
                    let t = std::time::Instant::now();
                    black_box(e.embed_pixels(input, batch).unwrap());
                    batch as f64 / t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        let out = std::process::Command::new("python3")
            .args([&script, "pixels", "--model", dir])
            .args(["--threads", &threads.to_string()])
            .args(["--batches", &batch.to_string(), "--runs", &RUNS.to_string()])
            .stderr(std::process::Stdio::null())
            .output();
        let reference = out.ok().filter(|o| o.status.success()).and_then(|o| {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v["images_per_s"][format!("batch {batch}")].as_f64()
        });
        let Some(reference) = reference else {
            eprintln!(
                "the reference did not run (pip install -r fixtures/requirements.txt); \
                 plip alone: {plip:.2} images/s"
            );
            return false;
        };
        println!(
            "  round {round}: {plip:6.2} | {reference:6.2} | {:.2}x",
            plip / reference
        );
        ratios.push(plip / reference);
    }
    if !ratios.is_empty() {
        println!(
            "  median ratio over {rounds} rounds: {:.2}x",
            median(ratios)
        );
    }
    true
}

/// `n` copies of one image's pixels, a batch.
fn repeat(one: &[f32], n: usize) -> Vec<f32> {
    one.iter().copied().cycle().take(one.len() * n).collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
