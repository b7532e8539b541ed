//! `plip::eval` against fixtures/golden/eval.json: numbers computed independently with numpy +
//! scikit-learn by `python3 fixtures/generate.py eval` over the golden embeddings.

use std::path::PathBuf;

use plip::metrics::{self as eval, ClassificationReport, DirectionReport};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden")
}

fn golden() -> Value {
    let text =
        std::fs::read_to_string(golden_dir().join("eval.json")).expect("fixtures/golden/eval.json");
    serde_json::from_str(&text).unwrap()
}

/// (image_embeds, text_embeds) rows from embeddings.safetensors.
fn embeddings() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let bytes = std::fs::read(golden_dir().join("embeddings.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rows = |name: &str| -> Vec<Vec<f32>> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let [n, d] = t.shape() else {
            panic!("{name}: shape {:?}", t.shape())
        };
        let flat: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(flat.len(), n * d);
        flat.chunks(*d).map(<[f32]>::to_vec).collect()
    };
    (rows("image_embeds"), rows("text_embeds"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= TOL, "{what}: got {got}, want {want}");
}

fn pick(rows: &[Vec<f32>], idx: &[usize]) -> Vec<Vec<f32>> {
    idx.iter().map(|&i| rows[i].clone()).collect()
}

fn check_direction(got: &DirectionReport, want: &Value, what: &str) {
    assert_eq!(got.ranks, usizes(&want["ranks"]), "{what}: ranks");
    let recall = want["recall"].as_array().unwrap();
    assert_eq!(got.recall.len(), recall.len(), "{what}");
    for (g, w) in got.recall.iter().zip(recall) {
        assert_eq!(g.k, w["k"].as_u64().unwrap() as usize, "{what}");
        // recall = count / n, the same division in both: exact
        assert_eq!(g.recall, f(&w["recall"]), "{what}: recall@{}", g.k);
        assert_eq!(
            g.k_exceeds_candidates,
            w["k_exceeds_candidates"].as_bool().unwrap(),
            "{what}: recall@{}",
            g.k
        );
    }
    close(
        got.mean_rank,
        f(&want["mean_rank"]),
        &format!("{what}: mean rank"),
    );
    assert_eq!(
        got.median_rank,
        f(&want["median_rank"]),
        "{what}: median rank"
    );
}

#[test]
fn retrieval_matches_numpy() {
    let g = golden();
    let (img, txt) = embeddings();
    let cases = g["retrieval"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let images = pick(&img, &usizes(&case["image_rows"]));
        let captions = pick(&txt, &usizes(&case["caption_rows"]));
        let r = eval::retrieval(
            &images,
            &captions,
            &u64s(&case["image_groups"]),
            &u64s(&case["caption_groups"]),
            &usizes(&case["ks"]),
        )
        .unwrap();
        assert_eq!(r.n, case["n"].as_u64().unwrap() as usize, "{name}");
        check_direction(
            &r.text_to_image,
            &case["text_to_image"],
            &format!("{name} text->image"),
        );
        check_direction(
            &r.image_to_text,
            &case["image_to_text"],
            &format!("{name} image->text"),
        );
        let mut table = Vec::new();
        eval::print_retrieval_table(&mut table, &r).unwrap();
        let table = String::from_utf8(table).unwrap();
        println!("{table}");
        if name == "pairs" {
            assert!(table.contains("recall@50 (only 15 candidates)"), "{table}");
            assert!(table.contains("recall@10  "), "{table}");
        }
        // the JSON form carries the same numbers
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(
            j["text_to_image"]["ranks"], case["text_to_image"]["ranks"],
            "{name}"
        );
    }
}

fn check_report(got: &ClassificationReport, want: &Value, what: &str) {
    assert_eq!(got.n, want["n"].as_u64().unwrap() as usize, "{what}");
    for (name, v) in [
        ("accuracy", got.accuracy),
        ("macro_precision", got.macro_precision),
        ("macro_recall", got.macro_recall),
        ("macro_f1", got.macro_f1),
        ("weighted_precision", got.weighted_precision),
        ("weighted_recall", got.weighted_recall),
        ("weighted_f1", got.weighted_f1),
    ] {
        close(v, f(&want[name]), &format!("{what}: {name}"));
    }
    let per = want["per_class"].as_array().unwrap();
    assert_eq!(got.per_class.len(), per.len(), "{what}");
    assert_eq!(got.classes.len(), per.len(), "{what}");
    for (g, w) in got.per_class.iter().zip(per) {
        assert_eq!(g.name, w["name"].as_str().unwrap(), "{what}");
        close(
            g.precision,
            f(&w["precision"]),
            &format!("{what}: {} precision", g.name),
        );
        close(
            g.recall,
            f(&w["recall"]),
            &format!("{what}: {} recall", g.name),
        );
        close(g.f1, f(&w["f1"]), &format!("{what}: {} f1", g.name));
        assert_eq!(
            g.support,
            w["support"].as_u64().unwrap() as usize,
            "{what}: {} support",
            g.name
        );
    }
    let confusion: Vec<Vec<usize>> = want["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(usizes)
        .collect();
    assert_eq!(got.confusion, confusion, "{what}: confusion");
}

#[test]
fn zero_shot_matches_sklearn() {
    let g = golden();
    let zs = &g["zero_shot"];
    let (img, txt) = embeddings();
    let classes = zs["classes"].as_array().unwrap();
    let names: Vec<String> = classes
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let want_emb = zs["class_embeddings"].as_array().unwrap();
    let class_emb: Vec<Vec<f32>> = classes
        .iter()
        .zip(want_emb)
        .map(|(c, want)| {
            let e = eval::ensemble(&pick(&txt, &usizes(&c["template_rows"]))).unwrap();
            let want = want.as_array().unwrap();
            assert_eq!(e.len(), want.len());
            for (a, b) in e.iter().zip(want) {
                // f32 output of an f64 computation
                assert!(
                    (*a as f64 - f(b)).abs() < 1e-6,
                    "{}: ensemble {a} vs {b}",
                    c["name"]
                );
            }
            e
        })
        .collect();
    let images = pick(&img, &usizes(&zs["image_rows"]));
    let labels = usizes(&zs["labels"]);
    assert_eq!(
        eval::predict(&images, &class_emb).unwrap(),
        usizes(&zs["predicted"])
    );
    let r = eval::zero_shot(&images, &labels, &class_emb, &names).unwrap();
    check_report(&r, zs, "zero-shot");
    let mut table = Vec::new();
    eval::print_classification_table(&mut table, &r).unwrap();
    let table = String::from_utf8(table).unwrap();
    println!("{table}");
    assert!(
        table.contains("no items (recall and F1 counted as 0): smooth muscle"),
        "{table}"
    );
    assert_eq!(r.classes, names);
    // the case covers a class with no images and a class with images that is never predicted
    assert!(r.per_class.iter().any(|m| m.support == 0));
    assert!((0..names.len())
        .any(|k| r.per_class[k].support > 0 && r.confusion.iter().all(|row| row[k] == 0)));
}

#[test]
fn classification_report_matches_sklearn() {
    let g = golden();
    for (i, case) in g["classification"].as_array().unwrap().iter().enumerate() {
        let r = eval::classification_report(
            &usizes(&case["truth"]),
            &usizes(&case["predicted"]),
            &strings(&case["class_names"]),
        )
        .unwrap();
        check_report(&r, case, &format!("classification case {i}"));
    }
}

#[test]
fn ann_recall_and_percentiles_match_numpy() {
    let g = golden();
    let ann = &g["ann"];
    let exact: Vec<Vec<usize>> = ann["exact"]
        .as_array()
        .unwrap()
        .iter()
        .map(usizes)
        .collect();
    let approx: Vec<Vec<usize>> = ann["approx"]
        .as_array()
        .unwrap()
        .iter()
        .map(usizes)
        .collect();
    let k = ann["k"].as_u64().unwrap() as usize;
    close(
        eval::ann_recall(&exact, &approx, k).unwrap(),
        f(&ann["recall"]),
        "ann recall",
    );
    let lat: Vec<f64> = ann["latencies_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    for p in ann["percentiles"].as_array().unwrap() {
        let q = f(&p["q"]);
        close(
            eval::percentile(&lat, q).unwrap(),
            f(&p["value"]),
            &format!("p{q}"),
        );
    }
    for p in ann["single_value_percentiles"].as_array().unwrap() {
        let q = f(&p["q"]);
        close(
            eval::percentile(&[2.5], q).unwrap(),
            f(&p["value"]),
            &format!("single p{q}"),
        );
    }
    let s = eval::latency_summary(&lat).unwrap();
    let p = |q: f64| {
        ann["percentiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| f(&p["q"]) == q)
            .map(|p| f(&p["value"]))
    };
    close(s.p50, p(50.0).unwrap(), "summary p50");
    close(s.p99, p(99.0).unwrap(), "summary p99");
    close(s.max, p(100.0).unwrap(), "summary max");
}
