//! Model speed: image-embedding throughput by batch size, and text-embedding latency
//! for a short prompt and a 77-token one. Weights do not change speed, so the
//! full-size random-weight model from `python3 fixtures/generate.py full-size
//! fixtures/full-size` stands in for vinid/plip; `PLIP_BENCH_MODEL` picks another.
//!
//!     cargo bench --bench model

use std::hint::black_box;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plip::embed::Embedder;
use plip::model::Towers;

fn bench(c: &mut Criterion) {
    // As the plip binary does.
    plip::kernels::tune_allocator();
    let dir = std::env::var("PLIP_BENCH_MODEL")
        .unwrap_or_else(|_| format!("{}/fixtures/full-size", env!("CARGO_MANIFEST_DIR")));
    let Ok(files) = plip::hub::resolve(&dir) else {
        eprintln!(
            "no model at {dir}: run `python3 fixtures/generate.py full-size fixtures/full-size`"
        );
        return;
    };
    let e = Embedder::load(&files, Towers::BOTH, &Device::Cpu).unwrap();
    let (h, w) = e.preprocess_config().output_size();
    let one: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();

    let mut group = c.benchmark_group("image embedding");
    group.sample_size(10);
    for batch in [1usize, 8, 16, 32] {
        let pixels: Vec<f32> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * batch)
            .collect();
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
