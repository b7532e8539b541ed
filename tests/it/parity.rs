//! Parity with the Python reference (transformers `CLIPModel`, `CLIPTokenizerFast`
//! and the PIL `CLIPImageProcessor`), on golden values made by
//! `fixtures/generate.py`. Tolerance: cosine of at least 0.9999 for embeddings,
//! exact ids for tokens.

use std::path::{Path, PathBuf};

use crate::common::{cosine, fixtures, read_safetensors};
use plip::Embedder;
use plip::{resolve_model, ModelFiles, Towers, WeightsFile};

const MIN_COSINE: f32 = 0.9999;

struct Golden {
    images: Vec<String>,
    prompts: Vec<String>,
    dir: PathBuf,
}

fn golden(dir: &Path) -> Golden {
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
    let strings = |k: &str| -> Vec<String> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    Golden {
        images: strings("images"),
        prompts: strings("prompts"),
        dir: dir.to_path_buf(),
    }
}

fn files_with(model_dir: &Path, weights: WeightsFile) -> ModelFiles {
    let mut f = resolve_model(model_dir.to_str().unwrap()).unwrap();
    f.weights = weights;
    f
}

fn rows(t: &(Vec<usize>, Vec<f32>)) -> Vec<Vec<f32>> {
    let d = t.0[1];
    t.1.chunks(d).map(<[f32]>::to_vec).collect()
}

fn check_tokens(model_dir: &Path, g: &Golden) {
    let e = Embedder::load(
        &resolve_model(model_dir.to_str().unwrap()).unwrap(),
        Towers {
            text: true,
            vision: false,
        },
    )
    .unwrap();
    let tokens: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(g.dir.join("tokens.json")).unwrap()).unwrap();
    assert!(tokens.len() >= 30, "at least 30 prompts");
    let mut bad = Vec::new();
    for t in &tokens {
        let text = t["text"].as_str().unwrap();
        let want: Vec<u32> = t["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = e.tokenize(text).unwrap();
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "token ids differ from CLIPTokenizerFast:\n{}",
        bad.join("\n")
    );
}

fn check_embeddings(files: &ModelFiles, g: &Golden, images_dir: &Path) {
    let e = Embedder::load(files, Towers::BOTH).unwrap();
    let emb = read_safetensors(&g.dir.join("embeddings.safetensors"));
    let want_text = rows(&emb["text_embeds"]);
    let want_image = rows(&emb["image_embeds"]);

    // Text: all prompts in one call (the reference padded them in one batch).
    let prompts: Vec<&str> = g.prompts.iter().map(String::as_str).collect();
    let got = e.embed_texts(&prompts).unwrap();
    for (i, (a, b)) in got.iter().zip(&want_text).enumerate() {
        let c = cosine(a, b);
        assert!(c >= MIN_COSINE, "text {:?}: cosine {c}", g.prompts[i]);
    }
    // And one at a time: the batch must not matter.
    for (i, p) in prompts.iter().enumerate().step_by(7) {
        let alone = e.embed_texts(&[p]).unwrap().remove(0);
        let c = cosine(&alone, &got[i]);
        assert!(c >= 0.999999, "prompt {p:?} depends on its batch: {c}");
    }

    // Images from the reference's own pixel tensors: isolates the model.
    let pre = e.preprocess_config();
    // The reference's pixels do not depend on the model: every golden set uses
    // the same images and preprocessing.
    let pixels =
        crate::common::golden_pixels(&fixtures().join("golden"), pre.image_mean, pre.image_std);
    let mut flat = Vec::new();
    for name in &g.images {
        flat.extend_from_slice(&pixels[name.as_str()]);
    }
    let got = e.embed_pixels(flat, g.images.len()).unwrap();
    for (i, (a, b)) in got.iter().zip(&want_image).enumerate() {
        let c = cosine(a, b);
        assert!(
            c >= MIN_COSINE,
            "image {} from reference pixels: cosine {c}",
            g.images[i]
        );
    }

    // Images through plip's own decoding and preprocessing: the whole pipeline.
    for (i, name) in g.images.iter().enumerate() {
        let img = e.load_image(&images_dir.join(name)).unwrap();
        let v = e.embed_pixels(img.pixels, 1).unwrap().remove(0);
        let c = cosine(&v, &want_image[i]);
        eprintln!("{name}: pipeline cosine {c:.7}");
        assert!(
            c >= MIN_COSINE,
            "image {name} through plip's pipeline: cosine {c}"
        );
    }
}

/// The tiny model's heads are 4 and 8 wide, so only the mid-size model (64-wide
/// heads, hidden 128) reaches the AVX-512 attention and packed dense kernels.
/// Its weights are generated, not committed (`tests/it/mid_model.rs`).
#[test]
fn mid_size_model_reaches_the_fast_kernels_and_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    crate::mid_model::write_mid_model(dir.path());
    let mut g = golden(&fixtures().join("golden"));
    g.dir = fixtures().join("golden-mid");
    let files = resolve_model(dir.path().to_str().unwrap()).unwrap();
    check_embeddings(&files, &g, &fixtures().join("images"));
}

#[test]
fn token_ids_equal_clip_tokenizer_fast() {
    check_tokens(
        &crate::common::tiny_model(),
        &golden(&fixtures().join("golden")),
    );
}

#[test]
fn safetensors_embeddings_match_reference() {
    let dir = crate::common::tiny_model();
    let files = files_with(
        &dir,
        WeightsFile::Safetensors(dir.join("model.safetensors")),
    );
    check_embeddings(
        &files,
        &golden(&fixtures().join("golden")),
        &fixtures().join("images"),
    );
}

#[test]
fn pytorch_bin_embeddings_match_reference() {
    let dir = crate::common::tiny_model();
    let files = files_with(&dir, WeightsFile::Pth(dir.join("pytorch_model.bin")));
    check_embeddings(
        &files,
        &golden(&fixtures().join("golden")),
        &fixtures().join("images"),
    );
}

/// Full-size parity: `PLIP_TEST_MODEL=/path/to/plip cargo test --release -- --ignored`.
/// Goldens come from `python3 fixtures/generate.py golden $PLIP_TEST_MODEL
/// $PLIP_TEST_MODEL/plip-golden` (or set `PLIP_TEST_GOLDEN`).
#[test]
#[ignore = "needs a full-size model folder in PLIP_TEST_MODEL"]
fn full_size_model_matches_reference() {
    let model = PathBuf::from(std::env::var("PLIP_TEST_MODEL").expect("set PLIP_TEST_MODEL"));
    let golden_dir = std::env::var("PLIP_TEST_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| model.join("plip-golden"));
    let g = golden(&golden_dir);
    check_tokens(&model, &g);
    let files = resolve_model(model.to_str().unwrap()).unwrap();
    check_embeddings(&files, &g, &fixtures().join("images"));
    if let WeightsFile::Safetensors(_) = files.weights {
        let bin = model.join("pytorch_model.bin");
        if bin.is_file() {
            check_embeddings(
                &files_with(&model, WeightsFile::Pth(bin)),
                &g,
                &fixtures().join("images"),
            );
        }
    }
}
