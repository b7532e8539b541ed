//! `--precision auto` (issue 29): both of auto's answers, forced on any machine by
//! `PLIP_PRECISION_AUTO`, keep the parity bars against the transformers goldens
//! (images >= 0.9995, text >= 0.9999); the run says what it chose and why; the
//! measurement is cached per CPU.

use std::path::Path;

use crate::common::{cosine, fixtures, read_npy_f32, read_safetensors, tiny_model, TestEnv};

/// The bars of issue 29 with auto on.
const IMAGE_BAR: f32 = 0.9995;
const TEXT_BAR: f32 = 0.9999;

fn golden_list(key: &str) -> Vec<String> {
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("golden/golden.json")).unwrap())
            .unwrap();
    j[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `plip embed` with auto forced to `answer`, rows read back.
fn embed(
    env: &TestEnv,
    model: &Path,
    answer: &str,
    inputs: &[String],
    text: bool,
) -> Vec<Vec<f32>> {
    let mut args: Vec<String> = vec!["--model".into(), model.display().to_string()];
    args.extend(["embed".into(), "-o".into(), "out.npy".into()]);
    for i in inputs {
        if text {
            args.push("--text".into());
        }
        args.push(i.clone());
    }
    let out = env
        .plip()
        .args(&args)
        .env("PLIP_PRECISION_AUTO", answer)
        .env("XDG_CACHE_HOME", env.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (v, n, d) = read_npy_f32(&std::fs::read(env.path().join("out.npy")).unwrap()).unwrap();
    assert_eq!(n, inputs.len());
    v.chunks(d).map(<[f32]>::to_vec).collect()
}

fn check_parity(model: &Path, golden: &Path) {
    let env = TestEnv::new();
    let emb = read_safetensors(&golden.join("embeddings.safetensors"));
    let rows = |k: &str| -> Vec<Vec<f32>> {
        let t = &emb[k];
        t.1.chunks(t.0[1]).map(<[f32]>::to_vec).collect()
    };
    let images: Vec<String> = golden_list("images")
        .iter()
        .map(|n| fixtures().join("images").join(n).display().to_string())
        .collect();
    let prompts = golden_list("prompts");
    for answer in ["f32", "bf16"] {
        let got = embed(&env, model, answer, &images, false);
        for (i, (a, b)) in got.iter().zip(rows("image_embeds")).enumerate() {
            let c = cosine(a, &b);
            assert!(
                c >= IMAGE_BAR,
                "auto={answer}: image {}: cosine {c} to transformers",
                images[i]
            );
        }
        // `plip embed --text ""` is refused; the goldens hold an empty prompt.
        let (want, texts): (Vec<Vec<f32>>, Vec<String>) = rows("text_embeds")
            .into_iter()
            .zip(prompts.iter().cloned())
            .filter(|(_, p)| !p.trim().is_empty())
            .unzip();
        let got = embed(&env, model, answer, &texts, true);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let c = cosine(a, b);
            assert!(
                c >= TEXT_BAR,
                "auto={answer}: text {:?}: cosine {c} to transformers",
                texts[i]
            );
        }
    }
}

#[test]
fn both_auto_answers_keep_the_parity_bars_on_the_mid_size_model() {
    let dir = tempfile::tempdir().unwrap();
    crate::mid_model::write_mid_model(dir.path());
    check_parity(dir.path(), &fixtures().join("golden-mid"));
}

#[test]
fn both_auto_answers_keep_the_parity_bars_on_the_tiny_model() {
    check_parity(&tiny_model(), &fixtures().join("golden"));
}

#[test]
fn index_says_which_precision_auto_chose_and_why() {
    let env = TestEnv::new();
    env.copy_images("imgs", &["png_rgb_224x224.png"]);
    let cache = env.path().join("cache");
    for (answer, label) in [("bf16", "bf16"), ("f32", "f32")] {
        let out = env
            .plip()
            .args(["index", "imgs", "--rebuild"])
            .env("PLIP_PRECISION_AUTO", answer)
            .env("XDG_CACHE_HOME", &cache)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "precision {label} (auto, forced by PLIP_PRECISION_AUTO)"
            )),
            "{err}"
        );
        let info = env.ok(&["info"]);
        assert!(
            info.contains(&format!("precision:   {label}\n"))
                && info.contains(&format!(
                    "last run: {label} (auto, forced by PLIP_PRECISION_AUTO)"
                )),
            "{info}"
        );
    }
    // Not forced: this CPU's own answer, with its reason.
    let out = env
        .plip()
        .args(["index", "imgs", "--rebuild"])
        .env_remove("PLIP_PRECISION_AUTO")
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let cache_file = cache.join("plip/precision-auto.json");
    if plip::bf16_supported() {
        // measured, and the measurement cached under this CPU's name
        assert!(err.contains("(auto: bf16 runs "), "{err}");
        let c = std::fs::read_to_string(&cache_file).unwrap();
        assert!(c.contains(&plip::cpu_name()), "{c}");
    } else {
        assert!(
            err.contains("precision f32 (auto: no AVX512_BF16 on "),
            "{err}"
        );
        assert!(!cache_file.exists(), "nothing to measure, nothing cached");
    }
    // A fixed precision is taken as asked.
    let out = env.run(&["index", "imgs", "--rebuild", "--precision", "f32"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("precision f32 (asked for)"), "{err}");
    let out = env.run(&["index", "imgs", "--precision", "fast"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("auto, f32 or bf16"),
        "{err}"
    );
}
