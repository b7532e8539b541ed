//! `plip eval linear-probe`, `--templates`/`--labels kather` and `--html` end to end on the
//! fixture model: the CLI's probe on the 14 fixture images predicts what scipy's exact
//! minimiser predicts on the reference embeddings (fixtures/golden/linear_probe.json), and
//! every `--json` carries the run record.

use std::fs;

use serde_json::Value;

use crate::common::{fixtures, TestEnv};

fn golden() -> Value {
    serde_json::from_str(&fs::read_to_string(fixtures().join("golden/linear_probe.json")).unwrap())
        .unwrap()
}

fn image_names() -> Vec<String> {
    let g: Value =
        serde_json::from_str(&fs::read_to_string(fixtures().join("golden/golden.json")).unwrap())
            .unwrap();
    g["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn check_run_record(v: &Value, command: &str) {
    let run = &v["run"];
    assert_eq!(run["command"], command, "{v}");
    assert_eq!(run["plip_version"], env!("CARGO_PKG_VERSION"));
    assert!(run["model_fingerprint"]
        .as_str()
        .is_some_and(|f| !f.is_empty()));
    assert!(run.get("templates").is_some() && run.get("seed").is_some());
    assert!(run["split"].is_object());
}

#[test]
fn linear_probe_csv_predicts_like_the_exact_minimiser_on_reference_embeddings() {
    let env = TestEnv::new();
    let names = image_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("data", &refs);
    let case = golden()["fixed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["alpha"].as_f64() == Some(0.01))
        .unwrap()
        .clone();
    let labels: Vec<u64> = case["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // every image trains, and is tested again (the golden fits and predicts all 14)
    let mut csv = String::from("image,label,split\n");
    for split in ["train", "test"] {
        for (n, l) in names.iter().zip(&labels) {
            csv.push_str(&format!("{n},class{l},{split}\n"));
        }
    }
    fs::write(env.path().join("data/probe.csv"), csv).unwrap();
    let out = env.ok(&[
        "eval",
        "linear-probe",
        "data/probe.csv",
        "--alpha",
        "0.01",
        "--json",
        "--cache",
        "cache",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    check_run_record(&v, "linear-probe");
    assert_eq!(v["alpha"], 0.01);
    assert_eq!(v["run"]["split"]["train"], 14);
    assert_eq!(v["run"]["split"]["test"], 14);
    assert_eq!(v["run"]["seed"], 1);
    let predicted: Vec<usize> = case["predicted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let mut want = vec![vec![0u64; 4]; 4];
    for (&t, &p) in labels.iter().zip(&predicted) {
        want[t as usize][p] += 1;
    }
    assert_eq!(v["test"]["confusion"], serde_json::json!(want));
    assert!(v["solver"]["grad_norm"].as_f64().unwrap() < 1e-8);
}

#[test]
fn linear_probe_folders_split_sweep_and_html() {
    let env = TestEnv::new();
    let names = image_names();
    let labels = [0, 0, 2, 1, 0, 2, 3, 3, 0, 3, 0, 0, 1, 3];
    for (n, l) in names.iter().zip(labels) {
        env.copy_images(&format!("data/c{l}"), &[n.as_str()]);
    }
    // a hostile class name must come out escaped in the page
    fs::rename(env.path().join("data/c3"), env.path().join("data/<b>c3")).unwrap();
    let out = env.run(&[
        "eval",
        "linear-probe",
        "data",
        "--json",
        "--html",
        "probe.html",
        "--cache",
        "cache",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_run_record(&v, "linear-probe");
    // per class int(n * 0.7) to training: 6 -> 4, 2 -> 1, 2 -> 1, 4 -> 2
    assert_eq!(v["sizes"]["train"], 8);
    assert_eq!(v["sizes"]["test"], 6);
    assert_eq!(v["sweep"].as_array().unwrap().len(), 4);
    let page = fs::read_to_string(env.path().join("probe.html")).unwrap();
    assert!(page.contains("Confusion matrix") && page.contains("Choice of α"));
    assert!(page.contains("&lt;b&gt;c3") && !page.contains("<b>c3"));
    // the same run again reads the cache and gives the same numbers
    let again = env.ok(&["eval", "linear-probe", "data", "--json", "--cache", "cache"]);
    let w: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(w["test"], v["test"]);
}

#[test]
fn linear_probe_bad_input_is_named() {
    let env = TestEnv::new();
    env.copy_images("data", &["png_rgb_224x224.png"]);
    fs::write(
        env.path().join("data/a.csv"),
        "image,label,split\npng_rgb_224x224.png,x,train\npng_rgb_224x224.png,y,\n",
    )
    .unwrap();
    let out = env.run(&["eval", "linear-probe", "data/a.csv", "--no-cache"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("a.csv row 3") && err.contains("split"),
        "{err}"
    );
    fs::write(
        env.path().join("data/b.csv"),
        "image,label\npng_rgb_224x224.png,x,extra\n",
    )
    .unwrap();
    let out = env.run(&["eval", "linear-probe", "data/b.csv", "--no-cache"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("b.csv"));
}

#[test]
fn zero_shot_kather_names_pathology_templates_and_html() {
    let env = TestEnv::new();
    env.copy_images(
        "kather/TUM",
        &["png_rgb_224x224.png", "bmp_rgb_250x250.bmp"],
    );
    env.copy_images("kather/ADI", &["gif_P_200x150.gif", "png_L_256x200.png"]);
    let out = env.ok(&[
        "eval",
        "zero-shot",
        "kather",
        "--labels",
        "kather",
        "--templates",
        "pathology",
        "--json",
        "--html",
        "zs.html",
        "--cache",
        "cache",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    check_run_record(&v, "zero-shot");
    assert_eq!(v["run"]["templates"].as_array().unwrap().len(), 20);
    assert_eq!(
        v["classes"],
        serde_json::json!(["adipose tissue", "colorectal adenocarcinoma epithelium"])
    );
    let page = fs::read_to_string(env.path().join("zs.html")).unwrap();
    assert!(page.contains("<svg") && page.contains("Most confident mistakes"));
    let bad = env.run(&[
        "eval",
        "zero-shot",
        "kather",
        "--templates",
        "nope",
        "--no-cache",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown template set `nope`"));
}

#[test]
fn retrieval_json_has_run_record_and_html_page() {
    let env = TestEnv::new();
    let names = [
        "png_rgb_224x224.png",
        "bmp_rgb_250x250.bmp",
        "gif_P_200x150.gif",
    ];
    env.copy_images("data", &names);
    fs::write(
        env.path().join("data/pairs.csv"),
        "image,caption\npng_rgb_224x224.png,tumor <i>cells</i>\nbmp_rgb_250x250.bmp,stroma\ngif_P_200x150.gif,fat\n",
    )
    .unwrap();
    let out = env.ok(&[
        "eval",
        "retrieval",
        "--pairs",
        "data/pairs.csv",
        "--json",
        "--html",
        "r.html",
        "--cache",
        "cache",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    check_run_record(&v, "retrieval");
    assert_eq!(v["run"]["split"]["pairs"], 3);
    let page = fs::read_to_string(env.path().join("r.html")).unwrap();
    assert!(page.contains("<polyline") && page.contains("Recall@K"));
    assert!(!page.contains("<i>cells"));
}
