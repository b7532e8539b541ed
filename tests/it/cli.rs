//! End-to-end tests of the real `plip` binary on temp folders: index then search,
//! output formats, bad input, model resolution without network.

use std::fs;
use std::path::Path;

use crate::common::{fixture_images, fixtures, read_safetensors, TestEnv};

const SOME: &[&str] = &[
    "jpeg_rgb_640x480_q90.jpg",
    "png_rgb_224x224.png",
    "png_rgba_300x400_alpha.png",
    "tiff_rgb_260x300_raw.tif",
    "webp_rgb_230x500_lossless.webp",
];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A PNG whose header claims 100000 x 100000 pixels: decoding it naively would
/// allocate 30 GB.
fn png_bomb() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        v.extend_from_slice(&body);
        v.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    v
}

#[test]
fn index_then_search_ranks_like_the_reference() {
    let env = TestEnv::new();
    let names: Vec<String> = fixture_images();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("slides", &refs);
    env.ok(&["index", "slides"]);
    assert!(env.path().join(".plip/MANIFEST").is_file());

    // The reference ranking: golden image embeddings by dot with the golden text.
    let gold = crate::common::GoldenEmbeddings::load();
    for query in ["lymphocytes", "necrosis", "adipose tissue"] {
        let q = gold.text(query);
        let mut want: Vec<(f32, &str)> = gold
            .images
            .iter()
            .map(|name| {
                (
                    gold.image(name).iter().zip(q).map(|(a, b)| a * b).sum(),
                    name.as_str(),
                )
            })
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));

        let out = env.ok(&["search", query, "--json", "--top", "5"]);
        let got: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), 5);
        for (rank, (hit, (score, name))) in got.iter().zip(&want).enumerate() {
            assert_eq!(hit["rank"], rank + 1);
            assert_eq!(
                hit["path"],
                format!("slides/{name}"),
                "query {query:?} rank {}",
                rank + 1
            );
            let s = hit["score"].as_f64().unwrap() as f32;
            assert!(
                (s - score).abs() < 2e-3,
                "{query:?} {name}: score {s} vs reference {score}"
            );
        }
    }
}

#[test]
fn output_formats_and_paths_relative_to_the_current_folder() {
    let env = TestEnv::new();
    env.copy_images("slides/a", SOME);
    env.ok(&["index", "slides"]);
    let table = env.ok(&["search", "tumor tissue"]);
    assert!(table.lines().next().unwrap().contains("rank"), "{table}");
    assert_eq!(table.lines().count(), 1 + SOME.len());
    let paths = env.ok(&["search", "tumor tissue", "--paths-only", "--top", "3"]);
    assert_eq!(paths.lines().count(), 3);
    for p in paths.lines() {
        assert!(env.path().join(p).is_file(), "{p}");
    }
    // From a subfolder the index is found upward and paths still open from there.
    let sub = env.path().join("slides/a");
    let out = env
        .plip()
        .current_dir(&sub)
        .args(["search", "tumor tissue", "--paths-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for p in String::from_utf8(out.stdout).unwrap().lines() {
        assert!(sub.join(p).is_file(), "{p}");
        assert!(!p.starts_with("slides"), "{p}");
    }
}

#[test]
fn moving_the_project_keeps_the_index_valid() {
    let env = TestEnv::new();
    let proj = env.path().join("proj");
    fs::create_dir(&proj).unwrap();
    let sub = TestEnv {
        dir: tempfile::tempdir_in(&proj).unwrap(),
    };
    sub.copy_images("slides", SOME);
    sub.ok(&["index", "slides"]);
    let before = sub.ok(&["search", "stroma", "--json"]);
    let moved = env.path().join("moved");
    fs::rename(sub.path(), &moved).unwrap();
    let out = env
        .plip()
        .current_dir(&moved)
        .args(["search", "stroma", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), before);
}

#[test]
fn bad_files_are_skipped_with_a_warning_and_counted() {
    let env = TestEnv::new();
    let d = env.copy_images("slides", SOME);
    fs::write(d.join("empty.png"), b"").unwrap();
    let jpg = fs::read(fixtures().join("images/jpeg_rgb_640x480_q90.jpg")).unwrap();
    fs::write(d.join("truncated.jpg"), &jpg[..jpg.len() / 3]).unwrap();
    fs::write(d.join("notes.jpg"), b"this is not an image").unwrap();
    fs::write(d.join("whole-slide.png"), png_bomb()).unwrap();
    fs::write(d.join("readme.txt"), b"ignored: not an image extension").unwrap();
    let out = env.run(&["index", "slides"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    for bad in ["empty.png", "notes.jpg", "whole-slide.png"] {
        assert!(
            err.lines()
                .any(|l| l.contains("warning") && l.contains(bad)),
            "no warning for {bad}:\n{err}"
        );
    }
    assert!(
        err.lines()
            .any(|l| l.contains("whole-slide.png") && l.contains("megapixel")),
        "{err}"
    );
    assert!(!err.contains("readme.txt"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A truncated JPEG may decode partially (as Pillow's does); it must not crash.
    let skipped = if err.lines().any(|l| l.contains("truncated.jpg")) {
        4
    } else {
        3
    };
    assert!(err.contains(&format!("{skipped} skipped")), "{err}");
    let paths = env.ok(&["search", "tissue", "--paths-only", "--top", "50"]);
    assert_eq!(paths.lines().count(), SOME.len() + 4 - skipped);
}

#[test]
fn clear_errors_for_missing_folder_empty_query_and_missing_index() {
    let env = TestEnv::new();
    let out = env.run(&["index", "no-such-folder"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no-such-folder"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        !env.path().join(".plip/MANIFEST").exists(),
        "no half-written index"
    );

    let out = env.run(&["search", "tumor"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("plip index"), "{}", stderr(&out));

    env.copy_images("s", SOME);
    env.ok(&["index", "s"]);
    let out = env.run(&["search", "  "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
}

#[test]
fn offline_without_a_cached_model_fails_fast_with_advice() {
    let env = TestEnv::new();
    env.copy_images("s", SOME);
    let start = std::time::Instant::now();
    let out = env
        .plip()
        .env_remove("PLIP_MODEL")
        .args(["index", "s"])
        .output()
        .unwrap();
    assert!(start.elapsed().as_secs() < 20);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("vinid/plip") && err.contains("HF_HUB_OFFLINE") && err.contains("--model"),
        "{err}"
    );
}

#[test]
fn a_model_in_the_hugging_face_cache_is_found_offline() {
    let env = TestEnv::new();
    env.copy_images("s", SOME);
    // Lay out HF_HOME/hub/models--org--tiny/snapshots/<rev>/ as huggingface_hub does.
    let hub = env.path().join("hf/hub/models--org--tiny");
    let snap = hub.join("snapshots/0123abcd");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(hub.join("refs")).unwrap();
    fs::write(hub.join("refs/main"), "0123abcd").unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    ] {
        fs::copy(crate::common::tiny_model().join(f), snap.join(f)).unwrap();
    }
    let out = env
        .plip()
        .env("HF_HOME", env.path().join("hf"))
        .args(["--model", "org/tiny", "index", "s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The index remembers the model, so search needs no --model.
    let out = env
        .plip()
        .env_remove("PLIP_MODEL")
        .env("HF_HOME", env.path().join("hf"))
        .args(["search", "x", "--paths-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        SOME.len()
    );
}

#[test]
fn embed_writes_npy_rows_in_input_order() {
    let env = TestEnv::new();
    let g: serde_json::Value =
        serde_json::from_slice(&fs::read(fixtures().join("golden/golden.json")).unwrap()).unwrap();
    let prompts: Vec<&str> = g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let emb = read_safetensors(&fixtures().join("golden/embeddings.safetensors"));
    let d = emb["text_embeds"].0[1];
    let mut args = vec!["embed", "-o", "t.npy"];
    for p in &prompts[..5] {
        args.push("--text");
        args.push(p);
    }
    env.ok(&args);
    let (v, n, dim) =
        crate::common::read_npy_f32(&fs::read(env.path().join("t.npy")).unwrap()).unwrap();
    assert_eq!((n, dim), (5, d));
    for i in 0..5 {
        let c = crate::common::cosine(
            &v[i * d..(i + 1) * d],
            &emb["text_embeds"].1[i * d..(i + 1) * d],
        );
        assert!(c >= 0.9999, "row {i}: {c}");
    }
    let imgs = env.copy_images("i", &["png_rgb_224x224.png", "bmp_rgb_250x250.bmp"]);
    let out = env.ok(&[
        "embed",
        "--jsonl",
        imgs.join("bmp_rgb_250x250.bmp").to_str().unwrap(),
        imgs.join("png_rgb_224x224.png").to_str().unwrap(),
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["input"]
        .as_str()
        .unwrap()
        .ends_with("bmp_rgb_250x250.bmp"));
    let norm: f64 = rows[1]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum();
    assert!((norm - 1.0).abs() < 1e-4);
    let out = env.run(&[
        "embed",
        "-o",
        "x.npy",
        imgs.join("missing.png").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn duplicate_images_do_not_panic_and_both_names_are_found() {
    let env = TestEnv::new();
    let d = env.copy_images("s", SOME);
    fs::copy(d.join("png_rgb_224x224.png"), d.join("copy-of-png.png")).unwrap();
    env.ok(&["index", "s"]);
    let out = env.ok(&["search", "tissue", "--paths-only", "--top", "50"]);
    assert!(
        out.contains("s/copy-of-png.png") && out.contains("s/png_rgb_224x224.png"),
        "{out}"
    );
}

#[test]
fn help_states_intended_use_and_language() {
    let env = TestEnv::new();
    let help = env.ok(&["--help"]);
    assert!(
        help.contains("research")
            && help.contains("English")
            && help.contains("not medical advice"),
        "{help}"
    );
    let _ = Path::new("");
}
