//! Queries people use: image queries, query arithmetic, prompt ensembles, filters,
//! and the HTML results page.

use std::fs;

use crate::common::{fixture_images, TestEnv};

fn indexed_env() -> TestEnv {
    let env = TestEnv::new();
    let names = fixture_images();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("slides", &refs);
    env.ok(&["index", "slides"]);
    env
}

fn hits(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn indexed_images_retrieve_themselves_at_rank_one() {
    let env = indexed_env();
    for name in fixture_images() {
        let p = format!("slides/{name}");
        let got = hits(&env.ok(&["search", "--image", &p, "--json", "--top", "3"]));
        assert_eq!(got[0].0, p);
        assert!((got[0].1 - 1.0).abs() < 1e-4, "{name}: {}", got[0].1);
        // The image as the positional query works the same way.
        let again = hits(&env.ok(&["search", &p, "--json", "--top", "1"]));
        assert_eq!(again[0], got[0]);
    }
}

/// Reference: the golden (transformers) embeddings combined by hand.
#[test]
fn arithmetic_equals_a_reference_computation() {
    let env = indexed_env();
    let gold = crate::common::GoldenEmbeddings::load();
    let d = gold.dim;
    let text = |p: &str| gold.text(p).to_vec();
    let image = |n: &str| gold.image(n).to_vec();
    let terms: Vec<(f64, Vec<f32>)> = vec![
        (1.0, text("mucus")),
        (2.0, text("lymphocytes")),
        (-1.0, text("necrosis")),
        (0.5, image("png_rgb_224x224.png")),
    ];
    let mut q = vec![0f64; d];
    for (w, v) in &terms {
        let n = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        for (s, &x) in q.iter_mut().zip(v) {
            *s += w * x as f64 / n;
        }
    }
    let n = q.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut want: Vec<(f64, String)> = gold
        .images
        .iter()
        .map(|name| {
            let s: f64 = image(name)
                .iter()
                .zip(&q)
                .map(|(&a, b)| a as f64 * b / n)
                .sum();
            (s, format!("slides/{name}"))
        })
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));

    let got = hits(&env.ok(&[
        "search",
        "mucus",
        "--add",
        "2:lymphocytes",
        "--subtract",
        "necrosis",
        "--add",
        "0.5:slides/png_rgb_224x224.png",
        "--json",
        "--top",
        "14",
    ]));
    assert_eq!(got.len(), 14);
    for ((path, score), (ws, wp)) in got.iter().zip(&want) {
        assert!(
            (score - ws).abs() < 2e-3,
            "{path}: {score} vs reference {ws}"
        );
        // Ranks agree wherever the reference scores are not near-ties.
        if path != wp {
            let other = want.iter().find(|w| &w.1 == path).unwrap().0;
            assert!((other - ws).abs() < 2e-3, "{path} at the rank of {wp}");
        }
    }
}

#[test]
fn ensembled_query_equals_evals_class_embedding() {
    let files = plip::resolve_model(crate::common::tiny_model().to_str().unwrap()).unwrap();
    let e = plip::Embedder::load(
        &files,
        plip::Towers {
            text: true,
            vision: false,
        },
    )
    .unwrap();
    let templates = vec![
        "An H&E image patch of {}.".to_string(),
        "a histopathology image of {}".to_string(),
    ];
    let terms = vec![plip::QueryTerm {
        weight: 1.0,
        kind: plip::TermKind::Text("tumor".into()),
    }];
    let q = plip::build_query(&e, &terms, &templates).unwrap();
    let filled = e
        .embed_texts(&[
            "An H&E image patch of tumor.",
            "a histopathology image of tumor",
        ])
        .unwrap();
    let class = plip::metrics::ensemble(&filled).unwrap();
    for (a, b) in q.iter().zip(&class) {
        assert!((a - b).abs() < 1e-6);
    }
    let plain = e.embed_texts(&["tumor"]).unwrap().remove(0);
    assert!(
        crate::common::cosine(&q, &plain) < 0.99999,
        "templates must change the query"
    );
}

#[test]
fn threshold_and_under_filter_results() {
    let env = TestEnv::new();
    env.copy_images("slides/a", &["png_rgb_224x224.png", "bmp_rgb_250x250.bmp"]);
    env.copy_images("slides/b", &["gif_P_200x150.gif", "png_L_256x200.png"]);
    env.ok(&["index", "slides"]);
    let all = hits(&env.ok(&["search", "tumor", "--json"]));
    assert_eq!(all.len(), 4);
    let under = hits(&env.ok(&["search", "tumor", "--json", "--under", "slides/b"]));
    assert_eq!(under.len(), 2);
    assert!(
        under.iter().all(|h| h.0.starts_with("slides/b/")),
        "{under:?}"
    );
    // Printed scores are rounded to 6 decimals; stay just below the second one.
    let cut = all[1].1 - 1e-5;
    let kept = hits(&env.ok(&["search", "tumor", "--json", "--threshold", &cut.to_string()]));
    assert!(
        kept.iter().all(|h| h.1 >= cut) && kept.len() >= 2 && kept.len() < 4,
        "{kept:?}"
    );
    let paths = env.ok(&[
        "search",
        "--image",
        "slides/a/png_rgb_224x224.png",
        "--paths-only",
        "--under",
        "slides/a",
    ]);
    assert_eq!(paths.lines().count(), 2);
}

#[test]
fn html_page_is_self_contained_escaped_and_in_order() {
    let env = TestEnv::new();
    let d = env.copy_images(
        "s",
        &[
            "png_rgb_224x224.png",
            "bmp_rgb_250x250.bmp",
            "gif_P_200x150.gif",
        ],
    );
    let evil = "<img src=x onerror=alert(1)>.png";
    fs::copy(d.join("png_rgb_224x224.png"), d.join(evil)).unwrap();
    env.ok(&["index", "s"]);
    // A missing folder for the page is created.
    env.ok(&[
        "search",
        "tumor <b>",
        "--json",
        "--html",
        "out/results.html",
    ]);
    assert!(env.path().join("out/results.html").is_file());
    let out = env.run(&["search", "tumor <b>", "--json", "--html", "results.html"]);
    assert!(out.status.success());
    let order = hits(&String::from_utf8(out.stdout).unwrap());
    let page = fs::read_to_string(env.path().join("results.html")).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external requests"
    );
    assert!(!page.contains("<img src=x"), "file names must be escaped");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;.png"));
    assert!(page.contains("tumor &lt;b&gt;"));
    assert_eq!(page.matches("<figure class=\"hit\"").count(), 4);
    assert_eq!(page.matches("src=\"data:image/jpeg;base64,").count(), 4);
    // Hits appear in rank order.
    let mut last = 0;
    for (path, _) in &order {
        let esc = path
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let at = page[last..]
            .find(&format!("<span class=\"path\">{esc}</span>"))
            .map(|i| i + last);
        let at = at.unwrap_or_else(|| panic!("{path} missing or out of order"));
        last = at;
    }
}

#[test]
fn bad_query_inputs_get_clear_errors() {
    let env = indexed_env();
    let run = |args: &[&str]| {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["search", "--image", "nope.png"]).contains("does not exist"));
    fs::write(env.path().join("bad.png"), b"garbage").unwrap();
    assert!(run(&["search", "--image", "bad.png"]).contains("bad.png"));
    assert!(run(&["search", "tumor", "--add", "x:lymphocytes"]).contains("malformed weight"));
    let empty = TestEnv::new();
    fs::create_dir(empty.path().join("none")).unwrap();
    empty.ok(&["index", "none"]);
    let out = empty.run(&["search", "tumor"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}
