//! Index lifecycle: incremental re-runs, crashes (SIGKILL) and interrupts, the
//! writer lock, searching during a run, and corrupt files. Each test compares with
//! a fresh index of the same folder, the oracle for "correct".

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::{fixture_images, fixtures, PausedRun, TestEnv};

/// Every indexed path with its score for a fixed query: the index's full content
/// as search sees it.
fn snapshot(env: &TestEnv, query: &str) -> BTreeMap<String, f64> {
    let out = env.ok(&["search", query, "--json", "--top", "100000"]);
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let prev = m.insert(
            v["path"].as_str().unwrap().to_string(),
            v["score"].as_f64().unwrap(),
        );
        assert!(prev.is_none(), "{} returned twice", v["path"]);
    }
    m
}

fn assert_same(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in a {
        assert!((v - b[k]).abs() < 1e-4, "{k}: {v} vs {}", b[k]);
    }
}

/// A fresh index of a copy of `env`'s `s/` folder.
fn fresh_snapshot(env: &TestEnv, query: &str) -> BTreeMap<String, f64> {
    let fresh = TestEnv::new();
    copy_dir(&env.path().join("s"), &fresh.path().join("s"));
    fresh.ok(&["index", "s"]);
    snapshot(&fresh, query)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn all_images() -> Vec<String> {
    fixture_images()
}

/// A folder of `n` images (fixture images under many names), slow enough to
/// interrupt with the tiny model.
fn many_images(env: &TestEnv, n: usize) {
    let names = all_images();
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        let src = &names[i % names.len()];
        let ext = src.rsplit('.').next().unwrap();
        fs::copy(
            fixtures().join("images").join(src),
            d.join(format!("img{i:04}.{ext}")),
        )
        .unwrap();
    }
}

fn generation(env: &TestEnv) -> u64 {
    fs::read(env.path().join(".plip/MANIFEST"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["generation"].as_u64())
        .unwrap_or(0)
}

#[test]
fn incremental_reindex_equals_a_fresh_index() {
    let env = TestEnv::new();
    let names = all_images();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("s", &refs[..10]);
    env.ok(&["index", "s"]);

    // Unchanged: nothing is embedded again.
    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 added, 0 updated, 0 removed, 10 unchanged"),
        "{err}"
    );

    // Add two, change one (other content, same name), delete one.
    let d = env.path().join("s");
    for n in &refs[10..12] {
        fs::copy(fixtures().join("images").join(n), d.join(n)).unwrap();
    }
    fs::copy(fixtures().join("images").join(refs[12]), d.join(refs[0])).unwrap();
    fs::remove_file(d.join(refs[1])).unwrap();
    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("2 added, 1 updated, 1 removed, 8 unchanged"),
        "{err}"
    );
    for q in ["tumor", "lymphocytes"] {
        assert_same(&snapshot(&env, q), &fresh_snapshot(&env, q));
    }

    // A touched but identical file is not re-embedded.
    let f = fs::File::options()
        .write(true)
        .open(d.join(refs[2]))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let err = String::from_utf8_lossy(&env.run(&["index", "s"]).stderr).into_owned();
    assert!(
        err.contains("0 added, 0 updated, 0 removed, 11 unchanged"),
        "{err}"
    );

    // --rebuild starts over and gives the same index.
    let before = snapshot(&env, "tumor");
    let err = String::from_utf8_lossy(&env.run(&["index", "s", "--rebuild"]).stderr).into_owned();
    assert!(err.contains("11 added"), "{err}");
    assert_same(&snapshot(&env, "tumor"), &before);
}

#[test]
fn kill_during_index_loses_nothing() {
    // Before the first commit (vectors embedded, none committed), and after
    // the first and the third.
    for (spec, committed) in [
        ("before-commit:1", 0u64),
        ("after-commit:1", 1),
        ("after-commit:3", 3),
    ] {
        let env = TestEnv::new();
        many_images(&env, 60);
        PausedRun::start(&env, spec).kill();
        assert_eq!(generation(&env), committed, "{spec}");
        let kill_at_generation = committed;
        if generation(&env) > 0 {
            // The last commit is readable and searchable as it is.
            let partial = snapshot(&env, "tumor");
            assert!(partial.len() <= 60);
        }
        let out = env.run(&["index", "s"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = snapshot(&env, "tumor");
        assert_eq!(got.len(), 60, "killed at commit {kill_at_generation}");
        assert_same(&got, &fresh_snapshot(&env, "tumor"));
        // No file that a commit does not name is left behind.
        let stray: Vec<String> = fs::read_dir(env.path().join(".plip"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_commits_what_is_done() {
    let env = TestEnv::new();
    many_images(&env, 60);
    let (code, err) = PausedRun::start(&env, "after-commit:1").interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // At least the first commit's 4 images, and not all 60.
    let done = snapshot(&env, "tumor").len();
    assert!((4..60).contains(&done), "{done} images after Ctrl-C");
    env.ok(&["index", "s"]);
    assert_eq!(snapshot(&env, "tumor").len(), 60);
}

#[cfg(unix)]
#[test]
fn a_second_writer_is_refused_and_search_sees_the_last_commit() {
    let env = TestEnv::new();
    many_images(&env, 60);
    let first = PausedRun::start(&env, "after-commit:1");
    // Search works during the run and sees the committed state.
    let during = snapshot(&env, "tumor");
    assert_eq!(during.len(), 4, "the first commit holds 4 images");
    let second = env.run(&["index", "s"]);
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("locked"), "{err}");
    let (code, err) = first.interrupt();
    assert_eq!(code, Some(130), "{err}");
    env.ok(&["index", "s"]);
    assert_same(&snapshot(&env, "tumor"), &fresh_snapshot(&env, "tumor"));
}

#[test]
fn corrupt_index_files_give_a_clear_error() {
    let env = TestEnv::new();
    let names = all_images();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("s", &refs[..4]);
    env.ok(&["index", "s"]);
    let idx = env.path().join(".plip");
    let vec = fs::read_dir(&idx)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "vec"))
        .unwrap();
    let good = fs::read(&vec).unwrap();
    let check = |what: &str| {
        let out = env.run(&["search", "tumor"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("corrupt") && err.contains("--rebuild"),
            "{what}: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    };
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    fs::write(&vec, &flipped).unwrap();
    check("bit flip");
    fs::write(&vec, &good[..good.len() - 7]).unwrap();
    check("truncated");
    let manifest = fs::read(idx.join("MANIFEST")).unwrap();
    fs::write(&vec, &good).unwrap();
    fs::write(idx.join("MANIFEST"), &manifest[..manifest.len() / 2]).unwrap();
    check("truncated manifest");
    // --rebuild recovers.
    env.ok(&["index", "s", "--rebuild"]);
    assert_eq!(snapshot(&env, "tumor").len(), 4);
}

#[test]
fn info_reports_counts_model_and_skipped_files() {
    let env = TestEnv::new();
    let d = env.copy_images("s", &["png_rgb_224x224.png", "bmp_rgb_250x250.bmp"]);
    fs::write(d.join("broken.png"), b"nope").unwrap();
    env.ok(&["index", "s"]);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["info", "--json"])).unwrap();
    assert_eq!(v["images"], 2);
    assert_eq!(v["model"]["dim"], 16);
    assert_eq!(v["last_run"]["skipped"][0]["path"], "s/broken.png");
    assert!(v["bytes_on_disk"].as_u64().unwrap() > 0);
    let text = env.ok(&["info"]);
    assert!(
        text.contains("images:      2") && text.contains("broken.png"),
        "{text}"
    );
}

#[test]
fn graph_segments_are_built_and_searched_through_the_binary() {
    let env = TestEnv::new();
    many_images(&env, 60);
    let out = env
        .plip()
        .args(["index", "s"])
        .env("PLIP_HNSW_MIN_ROWS", "50")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graphs = fs::read_dir(env.path().join(".plip"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "ann")
        })
        .count();
    assert_eq!(graphs, 1, "the compacted 60-image segment has a graph");
    let scores = |extra: &[&str]| -> Vec<f64> {
        let mut args = vec!["search", "tumor", "--json", "--top", "20"];
        args.extend_from_slice(extra);
        env.ok(&args)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["score"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let exact = scores(&[]);
    let graph = scores(&["--ef", "64"]);
    assert_eq!(exact.len(), 20);
    // The fixture images repeat, so ties may swap paths; the scores may not.
    assert_eq!(exact, graph);
}
