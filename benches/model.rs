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
//!
//! On a CPU with AVX512_BF16 each round also times plip in `--precision
//! bf16` and the reference under `torch.autocast("cpu", dtype=torch.bfloat16)`
//! (`PLIP_BENCH_BF16=0` leaves them out), and prints the GFLOP/s of the dense
//! layers (the matmuls, counted from the model's config).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plip::Towers;
use plip::{Embedder, LoadOptions, Precision};

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
    text_precisions(&files, &e);

    let bf16 = (plip::bf16_supported() && std::env::var("PLIP_BENCH_BF16").as_deref() != Ok("0"))
        .then(|| {
            let options = LoadOptions {
                precision: Precision::Bf16,
                text_f32: false,
            };
            Embedder::load_with(&files, Towers::VISION, options).unwrap()
        });
    let gflop = dense_gflop_per_image(&files.config);
    side_by_side(&e, bf16.as_ref(), gflop, &one, &dir);
}

/// Issue 29: would a bf16 text tower make a query faster? On a CPU with
/// AVX512_BF16, a short and a 77-token prompt in f32 and in bf16, in 5
/// alternating rounds (each the median of 30 calls after 5 warm-ups), and the
/// cosine of bf16 against f32 text embeddings over 20 prompts.
fn text_precisions(files: &plip::ModelFiles, f32_model: &Embedder) {
    if !plip::bf16_supported() || std::env::var("PLIP_BENCH_BF16").as_deref() == Ok("0") {
        return;
    }
    let options = LoadOptions {
        precision: Precision::Bf16,
        text_f32: false,
    };
    let b = Embedder::load_with(files, Towers::TEXT, options).unwrap();
    let median_ms = |e: &Embedder, p: &str| {
        for _ in 0..5 {
            e.embed_texts(&[p]).unwrap();
        }
        let mut t: Vec<f64> = (0..30)
            .map(|_| {
                let s = std::time::Instant::now();
                black_box(e.embed_texts(black_box(&[p])).unwrap());
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let long = "cell ".repeat(100);
    for (name, prompt) in [("short", "tumor tissue"), ("77 tokens", long.as_str())] {
        let mut line = format!("text {name}, ms per query (f32 / bf16):");
        for _ in 0..5 {
            let a = median_ms(f32_model, prompt);
            let c = median_ms(&b, prompt);
            line.push_str(&format!(" {a:.2}/{c:.2}"));
        }
        eprintln!("{line}");
    }
    let prompts = [
        "tumor tissue",
        "lymphocytes",
        "necrosis",
        "adipose tissue",
        "mucus",
        "debris",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "background",
        "an H&E image of adenocarcinoma",
        "mitotic figures",
        "keratin pearls",
        "signet ring cells",
        "granuloma with giant cells",
        "fibrosis",
        "hemorrhage",
        "a histopathology image of benign glands",
        "Ki-67 positive nuclei",
        &long,
    ];
    let x = f32_model.embed_texts(&prompts).unwrap();
    let y = b.embed_texts(&prompts).unwrap();
    let cos: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(u, v)| {
            let d: f32 = u.iter().zip(v).map(|(a, b)| a * b).sum();
            let n = |w: &Vec<f32>| w.iter().map(|a| a * a).sum::<f32>().sqrt();
            d / (n(u) * n(v))
        })
        .collect();
    let min = cos.iter().copied().fold(f32::INFINITY, f32::min);
    eprintln!(
        "text bf16 vs f32 cosine over {} prompts: min {min:.6}",
        cos.len()
    );
}

/// The multiply-adds (x2) of one image's dense layers, in GFLOP, as plip runs
/// them: the patch embedding, every layer's four matmuls over all tokens but
/// the last layer's three after attention, which plip runs for the class token
/// only, and the projection.
fn dense_gflop_per_image(config: &std::path::Path) -> f64 {
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    let v = &c["vision_config"];
    let get = |k: &str, default: f64| v[k].as_f64().unwrap_or(default);
    let (d, i) = (get("hidden_size", 768.0), get("intermediate_size", 3072.0));
    let layers = get("num_hidden_layers", 12.0);
    let (size, patch) = (get("image_size", 224.0), get("patch_size", 32.0));
    let proj = c["projection_dim"].as_f64().unwrap_or(512.0);
    let patches = (size / patch).floor().powi(2);
    let t = patches + 1.0;
    let full = t * d * (3.0 * d + d + 2.0 * i);
    let last = t * d * 3.0 * d + d * (d + 2.0 * i);
    let macs = patches * 3.0 * patch * patch * d + (layers - 1.0) * full + last + d * proj;
    2.0 * macs / 1e9
}

/// Image embedding at each batch size of `PLIP_BENCH_BATCHES` (default 16),
/// alternating with the PyTorch reference (and, with `bf16`, plip's bf16
/// path and torch's bf16 autocast).
fn side_by_side(e: &Embedder, bf16: Option<&Embedder>, gflop: f64, one: &[f32], dir: &str) {
    if std::env::var("PLIP_BENCH_PYTHON").as_deref() == Ok("0") {
        return;
    }
    let batches = std::env::var("PLIP_BENCH_BATCHES").unwrap_or_else(|_| "16".into());
    for batch in batches.split(',') {
        match batch.trim().parse() {
            Ok(b) if b > 0 => {
                if !side_by_side_batch(e, bf16, gflop, one, dir, b) {
                    return;
                }
            }
            _ => eprintln!("PLIP_BENCH_BATCHES: {batch:?} is not a batch size"),
        }
    }
}

/// [`side_by_side`] for one batch size; false when the reference did not run.
fn side_by_side_batch(
    e: &Embedder,
    bf16: Option<&Embedder>,
    gflop: f64,
    one: &[f32],
    dir: &str,
    batch: usize,
) -> bool {
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
    // Images per second: the median of RUNS timed batches after a warm-up.
    let time = |e: &Embedder| {
        e.embed_pixels(pixels.clone(), batch).unwrap();
        median(
            (0..RUNS)
                .map(|_| {
                    let input = pixels.clone();
                    let t = std::time::Instant::now();
                    black_box(e.embed_pixels(input, batch).unwrap());
                    batch as f64 / t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    if bf16.is_some() {
        println!(
            "side by side, image embedding at batch {batch}, {threads} threads, images/s \
             (plip f32 | plip bf16 | torch f32 | torch bf16 autocast; \
             bf16/f32, bf16/torch bf16; dense GFLOP/s of plip f32, bf16):"
        );
    } else {
        println!(
            "side by side, image embedding at batch {batch}, {threads} threads \
             (plip | reference | ratio, images/s):"
        );
    }
    let mut ratios = Vec::new();
    let mut bf16_ratios = Vec::new();
    let mut bf16_vs_torch = Vec::new();
    for round in 0..rounds {
        let plip = time(e);
        let plip_bf16 = bf16.map(time);
        let precisions = if bf16.is_some() { "f32,bf16" } else { "f32" };
        let out = std::process::Command::new("python3")
            .args([&script, "pixels", "--model", dir])
            .args(["--threads", &threads.to_string()])
            .args(["--batches", &batch.to_string(), "--runs", &RUNS.to_string()])
            .args(["--precision", precisions])
            .stderr(std::process::Stdio::null())
            .output();
        let json = out
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        let rate = |key: &str| json.as_ref()?[key][format!("batch {batch}")].as_f64();
        let Some(reference) = rate("images_per_s") else {
            eprintln!(
                "the reference did not run (pip install -r fixtures/requirements.txt); \
                 plip alone: {plip:.2} images/s"
            );
            return false;
        };
        ratios.push(plip / reference);
        match (plip_bf16, rate("images_per_s_bf16")) {
            (Some(b), Some(torch_b)) => {
                println!(
                    "  round {round}: {plip:6.2} | {b:6.2} | {reference:6.2} | {torch_b:6.2}; \
                     {:.2}x, {:.2}x; {:.0}, {:.0} GFLOP/s",
                    b / plip,
                    b / torch_b,
                    plip * gflop,
                    b * gflop,
                );
                bf16_ratios.push(b / plip);
                bf16_vs_torch.push(b / torch_b);
            }
            _ => println!(
                "  round {round}: {plip:6.2} | {reference:6.2} | {:.2}x",
                plip / reference
            ),
        }
    }
    println!(
        "  median ratio over {rounds} rounds: plip f32 / torch f32 {:.2}x",
        median(ratios)
    );
    if !bf16_ratios.is_empty() {
        println!(
            "  median ratios: plip bf16 / plip f32 {:.2}x, plip bf16 / torch bf16 {:.2}x",
            median(bf16_ratios),
            median(bf16_vs_torch)
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
