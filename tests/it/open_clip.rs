//! Parity with open_clip itself (issue 33): the tiny random-weight checkpoints in
//! `fixtures/open_clip/` (ViT-B-32-like with QuickGELU in safetensors, ViT-B-16-like
//! with GELU and mean/std 0.5 in a PyTorch `.bin`) and the goldens open_clip 3.3.0
//! made from them (`fixtures/open_clip_fixtures.py`): token ids exactly, pixels
//! exactly, image embeddings at cosine ≥ 0.9995 and text at ≥ 0.9999.

use std::path::{Path, PathBuf};

use crate::common::{cosine, fixtures, read_safetensors, TestEnv};
use plip::{resolve_model, Embedder, ModelFamily, Towers};

const MIN_IMAGE: f32 = 0.9995;
const MIN_TEXT: f32 = 0.9999;

fn root() -> PathBuf {
    fixtures().join("open_clip")
}

fn golden() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root().join("golden/golden.json")).unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn image_path(name: &str) -> PathBuf {
    let own = root().join("golden").join(name);
    if own.is_file() {
        own
    } else {
        fixtures().join("images").join(name)
    }
}

fn load(name: &str) -> Embedder {
    let files = resolve_model(root().join(name).to_str().unwrap()).unwrap();
    assert_eq!(files.family, ModelFamily::OpenClip);
    Embedder::load(&files, Towers::BOTH).unwrap()
}

#[test]
fn open_clip_tokens_match_simple_tokenizer_exactly() {
    let e = load("b32");
    let tokens: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(root().join("golden/tokens.json")).unwrap()).unwrap();
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
            bad.push(format!("{text:?}:\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "ids differ from open_clip:\n{}",
        bad.join("\n")
    );
}

#[test]
fn open_clip_pixels_match_its_eval_transform_exactly() {
    let e = load("b32");
    let g = golden();
    let want = &read_safetensors(&root().join("golden/embeddings.safetensors"))["b32.pixels"];
    let plane = 3 * 224 * 224;
    for (i, name) in strings(&g["pixel_images"]).iter().enumerate() {
        let got = e.load_image(&image_path(name)).unwrap().pixels;
        let want = &want.1[i * plane..(i + 1) * plane];
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // JPEG decoders may differ by a level; everything else is exact.
        let tol = if name.ends_with(".jpg") { 0.05 } else { 0.0 };
        assert!(worst <= tol, "{name}: max |diff| {worst}");
    }
}

fn check_embeddings(name: &str) {
    let e = load(name);
    let g = golden();
    let emb = read_safetensors(&root().join("golden/embeddings.safetensors"));
    let rows = |key: &str| -> Vec<Vec<f32>> {
        let (shape, data) = &emb[&format!("{name}.{key}")];
        data.chunks(shape[1]).map(<[f32]>::to_vec).collect()
    };
    let prompts = strings(&g["prompts"]);
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let got = e.embed_texts(&refs).unwrap();
    let mut worst = 1f32;
    for (i, (a, b)) in got.iter().zip(rows("text_embeds")).enumerate() {
        let c = cosine(a, &b);
        worst = worst.min(c);
        assert!(c >= MIN_TEXT, "{name} text {:?}: cosine {c}", prompts[i]);
    }
    eprintln!(
        "{name}: {} prompts, worst text cosine {worst:.7}",
        prompts.len()
    );
    let mut worst = 1f32;
    for (img, want) in strings(&g["images"]).iter().zip(rows("image_embeds")) {
        let px = e.load_image(&image_path(img)).unwrap().pixels;
        let v = e.embed_pixels(px, 1).unwrap().remove(0);
        let c = cosine(&v, &want);
        worst = worst.min(c);
        assert!(c >= MIN_IMAGE, "{name} image {img}: cosine {c}");
    }
    eprintln!("{name}: worst image cosine {worst:.7}");
}

#[test]
fn open_clip_vit_b_32_matches_open_clip() {
    check_embeddings("b32");
}

#[test]
fn open_clip_vit_b_16_from_a_pytorch_bin_matches_open_clip() {
    check_embeddings("b16");
}

fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn unsupported_open_clip_tower_is_named_before_indexing() {
    let env = TestEnv::new();
    env.copy_images("imgs", &["png_rgb_224x224.png"]);
    let model = env.path().join("biomedclip");
    copy_model(&root().join("b32"), &model);
    let path = model.join("open_clip_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_base_patch16_224".into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = env.run(&["index", "imgs", "--model", model.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("timm vision tower `vit_base_patch16_224` is not supported"),
        "{err}"
    );
    assert!(!env.path().join(".plip").exists(), "nothing is indexed");
}

#[test]
fn checkpoint_not_matching_its_config_names_the_tensor_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(&root().join("b32"), dir.path());
    let path = dir.path().join("open_clip_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["model_cfg"]["embed_dim"] = 24.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let files = resolve_model(dir.path().to_str().unwrap()).unwrap();
    let err = format!(
        "{:#}",
        Embedder::load(&files, Towers::VISION).err().unwrap()
    );
    assert!(
        err.contains("tensor `visual.proj` is [32, 16] in the checkpoint")
            && err.contains("[32, 24]"),
        "{err}"
    );
}

#[test]
fn index_records_open_clip_family_and_info_names_it() {
    let env = TestEnv::new();
    env.copy_images("imgs", &["png_rgb_224x224.png", "jpeg_rgb_640x480_q90.jpg"]);
    let model = root().join("b32");
    let out = env.run(&["index", "imgs", "--model", model.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.run(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("family:      open_clip"), "{text}");
    // Another model, of the other family, is refused as any other model is.
    let out = env.run(&[
        "index",
        "imgs",
        "--model",
        fixtures().join("model").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

#[test]
fn eval_compares_models_in_one_table_and_caches_per_model() {
    let env = TestEnv::new();
    env.copy_images("ds/TUM", &["png_rgb_224x224.png", "bmp_rgb_250x250.bmp"]);
    env.copy_images("ds/LYM", &["gif_P_200x150.gif", "png_L_256x200.png"]);
    let plip_model = fixtures().join("model");
    let (a, b, c) = (
        plip_model.to_str().unwrap(),
        root().join("b32"),
        root().join("b16"),
    );
    let (b, c) = (b.to_str().unwrap(), c.to_str().unwrap());
    let args = |models: &[&str], extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["eval", "zero-shot", "ds", "--cache", "cache"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in models {
            v.extend(["--model".to_string(), m.to_string()]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        env.ok(&refs)
    };
    let table = run(args(&[a, b], &["--html", "cmp.html"]));
    assert!(
        table.contains("[1] ") && table.contains("(hf-clip)"),
        "{table}"
    );
    assert!(
        table.contains("[2] ") && table.contains("(open_clip)"),
        "{table}"
    );
    assert!(
        table.contains("accuracy") && table.contains("weighted_f1"),
        "{table}"
    );
    let page = std::fs::read_to_string(env.path().join("cmp.html")).unwrap();
    assert!(
        page.contains("open_clip") && page.contains("<table>"),
        "{page}"
    );
    assert_eq!(env.path().join("cache").read_dir().unwrap().count(), 2);

    // A third model adds its own cache; the others' reports are unchanged.
    let both: serde_json::Value =
        serde_json::from_str(&run(args(&[a, b, c], &["--json"]))).unwrap();
    assert_eq!(env.path().join("cache").read_dir().unwrap().count(), 3);
    let alone: serde_json::Value = serde_json::from_str(&run(args(&[b], &["--json"]))).unwrap();
    assert_eq!(both["models"][1]["report"]["accuracy"], alone["accuracy"]);
    assert_eq!(both["models"][2]["family"], "open_clip");

    // Other commands take one model.
    let out = env.run(&["search", "tumor", "--model", a, "--model", b]);
    assert!(!out.status.success());
}

#[test]
fn an_open_clip_repo_in_the_hugging_face_cache_is_found_offline() {
    let env = TestEnv::new();
    env.copy_images("s", &["png_rgb_224x224.png", "bmp_rgb_250x250.bmp"]);
    // HF_HOME/hub/models--org--quilt-tiny/snapshots/<rev>/, as huggingface_hub lays it out.
    let hub = env.path().join("hf/hub/models--org--quilt-tiny");
    let snap = hub.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(hub.join("refs")).unwrap();
    std::fs::write(hub.join("refs/main"), "0123abcd").unwrap();
    copy_model(&root().join("b16"), &snap);
    let out = env
        .plip()
        .env("HF_HOME", env.path().join("hf"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["--model", "org/quilt-tiny", "index", "s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = env.ok(&["info"]);
    assert!(
        info.contains("org/quilt-tiny") && info.contains("open_clip"),
        "{info}"
    );
}
