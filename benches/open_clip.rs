//! An open_clip ViT-B-32 checkpoint embeds at PLIP's speed (issue 33): both are
//! the same architecture, and plip maps the open_clip tensors onto the same towers
//! at load time. Full-size random weights stand in for both (weights do not change
//! speed):
//!
//!     python3 fixtures/generate.py full-size fixtures/full-size
//!     python3 fixtures/open_clip_fixtures.py full-size fixtures/open_clip-full
//!     cargo bench --bench open_clip
//!
//! Rounds alternate the two models (the first one alternating too); each round
//! times the median of 4 batches of 16 images after a warm-up, and one 77-token
//! prompt (median of 8). This machine drifts by a third within minutes, so the
//! figure to report is the median of the per-round ratios. `PLIP_BENCH_ROUNDS`
//! sets the rounds (default 7).

use std::time::Instant;

use plip::{Embedder, Towers};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per batch of 16 images, and per 77-token prompt.
fn time(e: &Embedder, pixels: &[f32], n: usize, prompt: &str) -> (f64, f64) {
    let batches = (0..4)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(e.embed_pixels(pixels.to_vec(), n).unwrap());
            t.elapsed().as_secs_f64()
        })
        .collect();
    let texts = (0..8)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(e.embed_texts(&[prompt]).unwrap());
            t.elapsed().as_secs_f64()
        })
        .collect();
    (median(batches), median(texts))
}

fn main() {
    plip::tune_allocator();
    let root = env!("CARGO_MANIFEST_DIR");
    let load = |dir: &str| {
        let files = plip::resolve_model(&format!("{root}/{dir}")).ok()?;
        Some((files.family, Embedder::load(&files, Towers::BOTH).unwrap()))
    };
    let (Some(plip_model), Some(oc_model)) =
        (load("fixtures/full-size"), load("fixtures/open_clip-full"))
    else {
        eprintln!("missing models: see the command lines at the top of benches/open_clip.rs");
        return;
    };
    let n = 16;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pixels: Vec<f32> = (0..n * 3 * 224 * 224)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let prompt = "cell ".repeat(80);
    let rounds: usize = std::env::var("PLIP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let models = [plip_model, oc_model];
    for (_, e) in &models {
        time(e, &pixels, n, &prompt);
    }
    println!(
        "threads {}, batch {n}; {} vs {}",
        rayon::current_num_threads(),
        models[0].0.name(),
        models[1].0.name()
    );
    let (mut img_ratios, mut txt_ratios) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut got = [(0.0, 0.0); 2];
        for i in order {
            got[i] = time(&models[i].1, &pixels, n, &prompt);
        }
        let (img, txt) = (got[1].0 / got[0].0, got[1].1 / got[0].1);
        println!(
            "round {r}: images/s hf-clip {:.1}, open_clip {:.1} (time ratio {img:.3}); \
             77-token prompt {:.1} ms vs {:.1} ms (ratio {txt:.3})",
            n as f64 / got[0].0,
            n as f64 / got[1].0,
            got[0].1 * 1e3,
            got[1].1 * 1e3
        );
        img_ratios.push(img);
        txt_ratios.push(txt);
    }
    println!(
        "median open_clip/hf-clip time ratio: images {:.3}, text {:.3}",
        median(img_ratios),
        median(txt_ratios)
    );
}
