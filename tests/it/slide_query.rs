//! Slides as queries (issue 32) end to end: `plip search --image SLIDE` ranks other
//! slides with their matched tiles (self and same-patient slides left out, or self
//! kept with `--include-self`), a slide that is not indexed is tiled on the fly, and
//! bad flags are refused before anything heavy.

use std::fs;
use std::path::PathBuf;

use crate::common::{fixtures, TestEnv};

const SLIDES: [&str; 5] = [
    "aperio_rgb.svs",
    "aperio_ycbcr.svs",
    "generic.tiff",
    "ome.ome.tiff",
    "lzw.tiff",
];

/// `s/` with five slides, indexed.
pub(crate) fn indexed_slides(env: &TestEnv) -> PathBuf {
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    for n in SLIDES {
        fs::copy(fixtures().join("slides").join(n), d.join(n)).unwrap();
    }
    env.ok(&["index", "s"]);
    d
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn paths(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_slide_query_ranks_the_other_slides_with_matched_tiles() {
    let env = TestEnv::new();
    indexed_slides(&env);
    for score in ["bag", "mean"] {
        let out = env.ok(&[
            "search",
            "--image",
            "s/aperio_rgb.svs",
            "--slide-score",
            score,
            "--json",
        ]);
        let rows = json_lines(&out);
        let p = paths(&rows);
        assert_eq!(p.len(), 4, "{out}");
        assert!(!p.contains(&"s/aperio_rgb.svs".to_string()), "{out}");
        // the same tissue, stored in another encoding, is the nearest slide
        assert_eq!(p[0], "s/aperio_ycbcr.svs", "{score}: {out}");
        let scores: Vec<f64> = rows.iter().map(|r| r["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{out}");
        let m = &rows[0]["matches"][0];
        for k in ["x", "y", "w", "h"] {
            assert!(m["query"][k].is_u64() && m["found"][k].is_u64(), "{out}");
        }
        assert!(rows[0]["matches"].as_array().unwrap().len() <= 5);
    }
    // The table prints one row per slide with its best pair.
    let table = env.ok(&["search", "--image", "s/aperio_rgb.svs", "-k", "2"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.contains("s/aperio_ycbcr.svs") && table.contains("->"),
        "{table}"
    );
}

#[test]
fn a_region_query_finds_its_own_slide_first_when_self_is_allowed() {
    let env = TestEnv::new();
    indexed_slides(&env);
    let out = env.ok(&[
        "search",
        "--image",
        "s/generic.tiff@224,0,224,224",
        "--include-self",
        "--json",
    ]);
    let rows = json_lines(&out);
    assert_eq!(rows[0]["path"], "s/generic.tiff", "{out}");
    assert_eq!(rows[0]["matches"][0]["query"]["x"], 224, "{out}");
    assert_eq!(rows[0]["matches"][0]["found"]["x"], 224, "{out}");
    // without --include-self, the same region query leaves its slide out
    let out = env.ok(&[
        "search",
        "--image",
        "s/generic.tiff@224,0,224,224",
        "--slide-score",
        "bag",
        "--json",
    ]);
    assert!(!paths(&json_lines(&out)).contains(&"s/generic.tiff".to_string()));
    // and without any slide flag a region is still a tile query, as before
    let out = env.ok(&[
        "search",
        "--image",
        "s/generic.tiff@224,0,224,224",
        "--json",
    ]);
    assert!(json_lines(&out)[0].get("x").is_some(), "{out}");
}

#[test]
fn group_by_leaves_out_every_slide_of_the_query_patient() {
    let env = TestEnv::new();
    indexed_slides(&env);
    fs::write(
        env.path().join("patients.csv"),
        "slide,patient\naperio_rgb.svs,p1\ns/aperio_ycbcr.svs,p1\ngeneric,p1\nome.ome.tiff,p2\ngone.svs,p1\n",
    )
    .unwrap();
    let run = env.run(&[
        "search",
        "--image",
        "s/aperio_rgb.svs",
        "--group-by",
        "patients.csv",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("not in the index") && err.contains("gone.svs"),
        "{err}"
    );
    let out = String::from_utf8(run.stdout).unwrap();
    let p = paths(&json_lines(&out));
    assert_eq!(p.len(), 2, "{out}");
    for gone in ["s/aperio_rgb.svs", "s/aperio_ycbcr.svs", "s/generic.tiff"] {
        assert!(!p.contains(&gone.to_string()), "{gone}: {out}");
    }
}

#[test]
fn a_slide_outside_the_index_is_tiled_with_the_index_tiling() {
    let env = TestEnv::new();
    indexed_slides(&env);
    fs::create_dir_all(env.path().join("q")).unwrap();
    fs::copy(
        fixtures().join("slides/aperio_rgb.svs"),
        env.path().join("q/new.svs"),
    )
    .unwrap();
    let out = env.run(&["search", "--image", "q/new.svs", "--json", "-k", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("embedded now"), "{err}");
    let rows = json_lines(&String::from_utf8(out.stdout).unwrap());
    // the same pixels as the indexed slide: it is found first, scoring 1
    assert_eq!(rows[0]["path"], "s/aperio_rgb.svs");
    assert!(rows[0]["score"].as_f64().unwrap() > 0.9999, "{rows:?}");
}

#[test]
fn bad_slide_query_flags_are_refused_with_advice() {
    let env = TestEnv::new();
    fs::write(env.path().join("a.png"), b"x").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["search", "--image", "missing.svs", "--include-self"],
            "no such file",
        ),
        (&["search", "tumor", "--include-self"], "--image SLIDE"),
        (
            &["search", "--image", "a.svs", "--slide-score", "max"],
            "`mean`",
        ),
        (
            &["search", "--image", "a.png", "--group-by", "g.csv"],
            "not one",
        ),
        (
            &["search", "--image", "s.svs@0,0,9,9", "--group-by", "g.csv"],
            "not a file",
        ),
    ];
    for (args, want) in cases {
        let out = env.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // a missing --group-by file is named before the index is opened
    fs::copy(
        fixtures().join("slides/lzw.tiff"),
        env.path().join("one.tiff"),
    )
    .unwrap();
    let out = env.run(&["search", "--image", "one.tiff", "--group-by", "nope.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.csv") && err.contains("slide,patient"),
        "{err}"
    );
}

fn eval_json(env: &TestEnv, labels: &str) -> serde_json::Value {
    fs::write(env.path().join("labels.csv"), labels).unwrap();
    let out = env.ok(&[
        "eval",
        "slide-retrieval",
        "--labels",
        "labels.csv",
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

fn retrieved_of(doc: &serde_json::Value, slide: &str) -> Vec<String> {
    let q = doc["per_query"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["slide"] == slide)
        .unwrap_or_else(|| panic!("no query {slide}: {doc}"));
    q["retrieved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["slide"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn leave_one_patient_out_excludes_the_whole_patient() {
    let env = TestEnv::new();
    indexed_slides(&env);
    let slides = "slide,label\naperio_rgb.svs,A\naperio_ycbcr.svs,A\ngeneric.tiff,A\n\
                  ome.ome.tiff,B\nlzw.tiff,B\n";
    let loso = eval_json(&env, slides);
    assert_eq!(loso["protocol"], "leave-one-slide-out");
    let r = retrieved_of(&loso, "s/aperio_rgb.svs");
    assert_eq!(r.len(), 4, "{r:?}");
    assert_eq!(r[0], "s/aperio_ycbcr.svs");
    // the same slides, with aperio_rgb, aperio_ycbcr and ome.ome.tiff one patient
    let lopo = eval_json(
        &env,
        "slide,label,patient\naperio_rgb.svs,A,p1\naperio_ycbcr.svs,A,p1\ngeneric.tiff,A,p2\n\
         ome.ome.tiff,B,p1\nlzw.tiff,B,p3\n",
    );
    assert_eq!(lopo["protocol"], "leave-one-patient-out");
    let mut r = retrieved_of(&lopo, "s/aperio_rgb.svs");
    r.sort();
    assert_eq!(r, vec!["s/generic.tiff", "s/lzw.tiff"], "{lopo}");
    // the headline figures are the means of the per-query verdicts
    let q = lopo["per_query"].as_array().unwrap();
    let mean = |k: &str| {
        q.iter()
            .map(|x| match x[k].as_bool() {
                Some(b) => f64::from(u8::from(b)),
                None => x[k].as_f64().unwrap(),
            })
            .sum::<f64>()
            / q.len() as f64
    };
    for (k, j) in [("top1", "top1"), ("mv5", "mv5"), ("ap5", "map5")] {
        assert!(
            (mean(k) - lopo[j].as_f64().unwrap()).abs() < 1e-12,
            "{k}: {lopo}"
        );
    }
}

#[test]
fn slide_retrieval_bad_labels_are_named_and_set_apart() {
    let env = TestEnv::new();
    indexed_slides(&env);
    fs::write(
        env.path().join("labels.csv"),
        "slide,label\naperio_rgb.svs,A\naperio_ycbcr.svs,A\nlzw.tiff,C\nnope.svs,A\n",
    )
    .unwrap();
    let out = env.run(&["eval", "slide-retrieval", "--labels", "labels.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("not in the index") && err.contains("nope.svs"),
        "{err}"
    );
    assert!(err.contains("\"C\" has one slide"), "{err}");
    assert!(
        text.contains("set apart") && text.contains("2 queries"),
        "{text}"
    );
    // nothing left to evaluate: a clear message, not a division by zero
    fs::write(
        env.path().join("labels.csv"),
        "slide,label\naperio_rgb.svs,A\nlzw.tiff,C\n",
    )
    .unwrap();
    let out = env.run(&["eval", "slide-retrieval", "--labels", "labels.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nothing to evaluate"), "{err}");
    fs::write(env.path().join("labels.csv"), "slide,label\nx.svs,A\n").unwrap();
    let err = String::from_utf8_lossy(
        &env.run(&["eval", "slide-retrieval", "--labels", "labels.csv"])
            .stderr,
    )
    .to_string();
    assert!(err.contains("none of the 1 slide(s)"), "{err}");
}

#[test]
fn slide_zero_shot_pools_tile_probabilities_per_slide() {
    let env = TestEnv::new();
    indexed_slides(&env);
    fs::write(
        env.path().join("labels.csv"),
        "slide,label\naperio_rgb.svs,TUM\naperio_ycbcr.svs,TUM\ngeneric.tiff,NORM\n\
         ome.ome.tiff,NORM\nlzw.tiff,NORM\n",
    )
    .unwrap();
    let out = env.ok(&[
        "eval",
        "slide-zero-shot",
        "--labels",
        "labels.csv",
        "--classes",
        "TUM=tumor|carcinoma,NORM=normal tissue",
        "--top-k",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["top_k"], 2);
    let per = v["per_slide"].as_array().unwrap();
    assert_eq!(per.len(), 5);
    // every prediction is the best of its class scores, and the figures follow from them
    let classes = v["classes"].as_array().unwrap();
    let mut right = [0usize; 2];
    let mut support = [0usize; 2];
    for p in per {
        let s: Vec<f64> = p["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let best = if s[1] > s[0] { 1 } else { 0 };
        assert_eq!(p["predicted"], classes[best], "{p}");
        let t = classes.iter().position(|c| *c == p["label"]).unwrap();
        support[t] += 1;
        right[t] += usize::from(p["predicted"] == p["label"]);
    }
    let balanced =
        (right[0] as f64 / support[0] as f64 + right[1] as f64 / support[1] as f64) / 2.0;
    assert!(
        (v["balanced_accuracy"].as_f64().unwrap() - balanced).abs() < 1e-12,
        "{v}"
    );
    assert!(v["weighted_f1"].is_f64());
}

#[test]
fn a_bag_query_with_ef_searches_the_graphs_and_ranks_as_exact() {
    let env = TestEnv::new();
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    for n in SLIDES {
        fs::copy(fixtures().join("slides").join(n), d.join(n)).unwrap();
    }
    // a graph even for the fixtures' few tiles
    let out = env
        .plip()
        .args(["index", "s"])
        .env("PLIP_HNSW_MIN_ROWS", "5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let search = |extra: &[&str]| {
        let mut args = vec![
            "search",
            "--image",
            "s/aperio_rgb.svs",
            "--slide-score",
            "bag",
        ];
        args.extend_from_slice(extra);
        let out = env.plip().args(&args).args(["--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (json_lines(&String::from_utf8_lossy(&out.stdout)), err)
    };
    let (exact, note) = search(&[]);
    assert!(!note.contains("HNSW"), "{note}");
    let (graph, note) = search(&["--ef", "64"]);
    assert!(note.contains("found by the HNSW graphs"), "{note}");
    assert_eq!(paths(&graph), paths(&exact));
    assert_eq!(graph, exact, "the same slides, scores and tile pairs");
}
