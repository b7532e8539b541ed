//! `plip eval` end to end on the fixture model: the CLI's numbers equal the metric
//! code's on the reference (golden) embeddings, bad rows are named, caches reused.

use std::fs;

use crate::common::TestEnv;

#[test]
fn retrieval_matches_metrics_on_reference_embeddings() {
    let env = TestEnv::new();
    let names = [
        "png_rgb_224x224.png",
        "bmp_rgb_250x250.bmp",
        "gif_P_200x150.gif",
        "webp_rgb_230x500_lossless.webp",
    ];
    let caps = ["lymphocytes", "necrosis", "adipose tissue", "mucus"];
    env.copy_images("data", &names);
    let mut csv = String::from("image,caption\n");
    for (n, c) in names.iter().zip(caps) {
        csv.push_str(&format!("{n},\"{c}\"\n"));
    }
    csv.push_str("missing.png,debris\n");
    fs::write(env.path().join("data/pairs.csv"), csv).unwrap();
    let out = env.run(&[
        "eval",
        "retrieval",
        "--pairs",
        "data/pairs.csv",
        "--json",
        "--cache",
        "cache",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("row 6") && err.contains("missing.png"),
        "{err}"
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["n"], 4);
    assert_eq!(got["skipped"], 1);

    // The same metric on the reference's embeddings of the same items.
    let gold = crate::common::GoldenEmbeddings::load();
    let imgs: Vec<Vec<f32>> = names.iter().map(|n| gold.image(n).to_vec()).collect();
    let txts: Vec<Vec<f32>> = caps.iter().map(|c| gold.text(c).to_vec()).collect();
    let want = plip::metrics::retrieval(
        &imgs,
        &txts,
        &[1, 2, 3, 4],
        &[1, 2, 3, 4],
        &plip::metrics::DEFAULT_KS,
    )
    .unwrap();
    assert_eq!(
        got["text_to_image"]["ranks"],
        serde_json::json!(want.text_to_image.ranks)
    );
    assert_eq!(
        got["image_to_text"]["ranks"],
        serde_json::json!(want.image_to_text.ranks)
    );

    // Second run hits the cache and gives the same table.
    assert!(env.path().join("cache").read_dir().unwrap().count() == 1);
    let again = env.run(&[
        "eval",
        "retrieval",
        "--pairs",
        "data/pairs.csv",
        "--json",
        "--cache",
        "cache",
    ]);
    assert_eq!(again.stdout, out.stdout);
    let table = env.ok(&[
        "eval",
        "retrieval",
        "--pairs",
        "data/pairs.csv",
        "--no-cache",
    ]);
    assert!(table.contains("only 4 candidates"), "{table}");
}

#[test]
fn zero_shot_reports_classes_and_empty_folders() {
    let env = TestEnv::new();
    env.copy_images("ds/TUM", &["png_rgb_224x224.png", "bmp_rgb_250x250.bmp"]);
    env.copy_images("ds/LYM", &["gif_P_200x150.gif"]);
    fs::create_dir_all(env.path().join("ds/EMPTY")).unwrap();
    fs::write(
        env.path().join("labels.csv"),
        "folder,name\nTUM,tumor epithelium\nLYM,lymphocytes\n",
    )
    .unwrap();
    let out = env.run(&[
        "eval",
        "zero-shot",
        "ds",
        "--labels",
        "labels.csv",
        "--template",
        "An H&E image patch of {}.",
        "--template",
        "a histopathology image of {}",
        "--json",
        "--no-cache",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("EMPTY") && err.contains("no images"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], 3);
    assert_eq!(
        v["classes"],
        serde_json::json!(["EMPTY", "lymphocytes", "tumor epithelium"])
    );
    assert_eq!(v["confusion"].as_array().unwrap().len(), 3);
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
}

#[test]
fn ann_eval_reports_recall_per_ef() {
    let env = TestEnv::new();
    let names: Vec<String> = crate::common::fixture_images();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("s", &refs);
    env.ok(&["index", "s"]);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["eval", "ann", "--json", "-k", "5"])).unwrap();
    assert_eq!(v["n"], 14);
    for row in v["rows"].as_array().unwrap() {
        assert!(row["recall"].as_f64().unwrap() > 0.9, "{row}");
    }
}
