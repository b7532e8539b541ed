//! Many machines (issue 18): `plip index --shard`, `plip merge` and `plip export`,
//! end to end on the fixture images with the real binary.
//!
//! The oracle is a single-process index of the same images: a merge of the
//! shards must answer every query with the same hits and scores (to 1e-5).

use std::path::Path;
use std::process::Command;

use crate::common::{fixture_images, PausedRun, TestEnv};

const SLURM_VARS: &[&str] = &[
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
];

/// A `plip` command with no scheduler variables inherited (the suite may itself
/// run inside a Slurm job).
fn plip(env: &TestEnv) -> Command {
    let mut c = env.plip();
    for v in SLURM_VARS {
        c.env_remove(v);
    }
    c
}

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = plip(env).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "plip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(env: &TestEnv, args: &[&str]) -> String {
    let out = plip(env).args(args).output().unwrap();
    assert!(!out.status.success(), "plip {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The project with all fixture images under `imgs/`, indexed in `n` shards at
/// `shards/K` and as one index at `single/.plip`.
fn sharded(n: usize) -> TestEnv {
    let env = TestEnv::new();
    let names = fixture_images();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    env.copy_images("imgs", &names);
    for k in 0..n {
        let spec = format!("{k}/{n}");
        let index = format!("shards/{k}");
        ok(
            &env,
            &["index", "imgs", "--shard", &spec, "--index", &index, "-q"],
        );
    }
    ok(&env, &["index", "imgs", "--index", "single/.plip", "-q"]);
    env
}

/// (path, score) of every hit of `query`, as `plip search --json` prints them.
fn hits(env: &TestEnv, index: &str, query: &str) -> Vec<(String, f32)> {
    let out = ok(
        env,
        &["search", query, "--index", index, "--json", "-k", "50"],
    );
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v["score"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

fn assert_same_hits(a: &[(String, f32)], b: &[(String, f32)]) {
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{a:?}\n{b:?}");
        assert!((x.1 - y.1).abs() <= 1e-5, "{x:?} vs {y:?}");
    }
}

fn images_in(env: &TestEnv, index: &str) -> usize {
    let info = ok(env, &["info", "--index", index, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    v["images"].as_u64().unwrap() as usize
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn shards_merged_equal_a_single_index() {
    let env = sharded(4);
    let total = fixture_images().len();
    let sizes: Vec<usize> = (0..4)
        .map(|k| images_in(&env, &format!("shards/{k}")))
        .collect();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        total,
        "shards overlap or miss: {sizes:?}"
    );
    assert!(sizes.iter().filter(|&&n| n > 0).count() >= 2, "{sizes:?}");

    let shards: Vec<String> = (0..4).map(|k| format!("shards/{k}")).collect();
    let mut args = vec!["merge"];
    args.extend(shards.iter().map(String::as_str));
    args.extend(["--index", "merged/.plip"]);
    ok(&env, &args);
    assert_eq!(images_in(&env, "merged/.plip"), total);
    for q in ["tumor tissue", "lymphocytes", "a photo"] {
        assert_same_hits(
            &hits(&env, "single/.plip", q),
            &hits(&env, "merged/.plip", q),
        );
    }
    // Paths were rebased from the shards' root (shards/) to merged/: every hit
    // names an existing file.
    for (p, _) in hits(&env, "merged/.plip", "tumor") {
        assert!(env.path().join(&p).is_file(), "{p} does not resolve");
    }
    // An ordinary index: an incremental run finds nothing to do, eval reads it.
    let out = plip(&env)
        .args(["index", "--index", "merged/.plip"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("0 added, 0 updated, 0 removed, {total} unchanged")),
        "{err}"
    );
    assert_same_hits(
        &hits(&env, "single/.plip", "tumor"),
        &hits(&env, "merged/.plip", "tumor"),
    );
    ok(
        &env,
        &["eval", "ann", "--queries", "3", "--index", "merged/.plip"],
    );
}

#[test]
fn merge_rebases_paths_when_shards_sit_far_from_the_images() {
    let env = sharded(1);
    // Shards in a deep scratch folder, the merged index in yet another place.
    let far = env.path().join("cluster/scratch/job-7/shards");
    let mut merge = vec!["merge".to_string()];
    for k in 0..2 {
        let index = far.join(k.to_string());
        let index = index.to_str().unwrap();
        ok(
            &env,
            &[
                "index",
                "imgs",
                "--shard",
                &format!("{k}/2"),
                "--index",
                index,
                "-q",
            ],
        );
        merge.push(index.to_string());
    }
    merge.extend(["--index".into(), "out/idx/.plip".into()]);
    let merge: Vec<&str> = merge.iter().map(String::as_str).collect();
    ok(&env, &merge);
    let merged = hits(&env, "out/idx/.plip", "tumor");
    assert_same_hits(&hits(&env, "single/.plip", "tumor"), &merged);
    for (p, _) in merged {
        assert!(env.path().join(&p).is_file(), "{p} does not resolve");
    }
}

#[test]
fn merge_refuses_shards_of_another_model() {
    let env = sharded(2);
    let other = env.path().join("other-model");
    std::fs::create_dir_all(&other).unwrap();
    for e in std::fs::read_dir(crate::common::tiny_model()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), other.join(e.file_name())).unwrap();
    }
    // Same weights, another config file: another fingerprint.
    let mut config = std::fs::read_to_string(other.join("config.json")).unwrap();
    config.push('\n');
    std::fs::write(other.join("config.json"), config).unwrap();
    let out = plip(&env)
        .args([
            "index", "imgs", "--shard", "1/2", "--index", "shards/x", "-q",
        ])
        .env("PLIP_MODEL", &other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = fails(
        &env,
        &["merge", "shards/0", "shards/x", "--index", "m/.plip"],
    );
    assert!(
        err.contains("different models") && err.contains("other-model"),
        "{err}"
    );
    assert!(
        err.contains("shards/0") && err.contains("shards/x"),
        "{err}"
    );
    assert!(!env.path().join("m").exists(), "refused merge created OUT");
}

#[test]
fn item_in_two_shards_is_kept_once_and_reported() {
    let env = sharded(2);
    // A full index overlaps both shards.
    let out = plip(&env)
        .args([
            "merge",
            "single/.plip",
            "shards/0",
            "shards/1",
            "--index",
            "m/.plip",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let total = fixture_images().len();
    assert!(
        err.contains(&format!("{total} duplicate(s) dropped")),
        "{err}"
    );
    assert!(err.contains("kept the first"), "{err}");
    assert_eq!(images_in(&env, "m/.plip"), total);
    assert_same_hits(
        &hits(&env, "single/.plip", "tumor"),
        &hits(&env, "m/.plip", "tumor"),
    );
}

#[test]
fn bad_merge_inputs_are_clear_errors_that_change_nothing() {
    let env = sharded(2);
    let err = fails(
        &env,
        &["merge", "shards/0", "shards/9", "--index", "m/.plip"],
    );
    assert!(err.contains("shards/9 does not exist"), "{err}");
    let err = fails(
        &env,
        &["merge", "shards/0", "shards/0", "--index", "m/.plip"],
    );
    assert!(err.contains("given twice"), "{err}");
    let err = fails(&env, &["merge", "shards/0", "imgs", "--index", "m/.plip"]);
    assert!(
        err.contains("no plip index at") && err.contains("imgs"),
        "{err}"
    );
    assert!(!env.path().join("m").exists());

    // OUT is a folder of someone else's files.
    let before = listing(&env.path().join("imgs"));
    let err = fails(&env, &["merge", "shards/0", "shards/1", "--index", "imgs"]);
    assert!(err.contains("not a plip index"), "{err}");
    assert_eq!(listing(&env.path().join("imgs")), before);

    // OUT already holds an index: only with --replace.
    let err = fails(
        &env,
        &["merge", "shards/0", "shards/1", "--index", "single/.plip"],
    );
    assert!(err.contains("--replace"), "{err}");
    ok(
        &env,
        &[
            "merge",
            "shards/0",
            "shards/1",
            "--index",
            "single/.plip",
            "--replace",
        ],
    );
    assert_eq!(images_in(&env, "single/.plip"), fixture_images().len());

    // A corrupt shard: one flipped byte in a vector file.
    let vec = listing(&env.path().join("shards/1"))
        .into_iter()
        .find(|n| n.ends_with(".vec"))
        .unwrap();
    let path = env.path().join("shards/1").join(vec);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = fails(
        &env,
        &["merge", "shards/0", "shards/1", "--index", "m/.plip"],
    );
    assert!(err.contains("shards/1") && err.contains("corrupt"), "{err}");
    assert!(!env.path().join("m").exists());
}

#[test]
fn a_shard_still_being_indexed_is_refused() {
    let env = sharded(2);
    let mut cmd = plip(&env);
    cmd.args([
        "index",
        "imgs",
        "--index",
        "busy",
        "--batch-size",
        "2",
        "--commit-every",
        "2",
    ])
    .env("PLIP_FAILPOINT", "after-commit:1");
    let run = PausedRun::start_command(cmd);
    let err = fails(&env, &["merge", "shards/0", "busy", "--index", "m/.plip"]);
    run.kill();
    assert!(err.contains("locked") && err.contains("busy"), "{err}");
    assert!(!env.path().join("m").exists());
}

#[test]
fn shard_auto_reads_slurm_and_kubernetes_variables() {
    let env = sharded(4);
    let paths = |index: &str| -> Vec<String> {
        let mut v: Vec<String> = ok(
            &env,
            &["search", "x", "--index", index, "--paths-only", "-k", "100"],
        )
        .lines()
        .map(str::to_string)
        .collect();
        v.sort();
        v
    };
    let expected = paths("shards/2");
    // Slurm: --array=10-13 makes task 12 the third of four.
    let out = plip(&env)
        .args(["index", "imgs", "--shard", "auto", "--index", "slurm", "-q"])
        .env("SLURM_ARRAY_TASK_ID", "12")
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .env("SLURM_ARRAY_TASK_COUNT", "4")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(paths("slurm"), expected);
    // Kubernetes Indexed Job: JOB_COMPLETION_INDEX plus --shards.
    let out = plip(&env)
        .args([
            "index", "imgs", "--shard", "auto", "--shards", "4", "--index", "k8s", "-q",
        ])
        .env("JOB_COMPLETION_INDEX", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(paths("k8s"), expected);
    // Neither: a clear error, and no index.
    let err = fails(
        &env,
        &["index", "imgs", "--shard", "auto", "--index", "none"],
    );
    assert!(
        err.contains("no scheduler") && err.contains("--shard K/N"),
        "{err}"
    );
    let out = plip(&env)
        .args(["index", "imgs", "--shard", "auto", "--index", "none"])
        .env("JOB_COMPLETION_INDEX", "2")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards N"));
    assert!(!env.path().join("none").exists());
}

#[cfg(unix)]
#[test]
fn merge_killed_before_its_manifest_leaves_out_as_it_was() {
    let env = sharded(2);
    ok(&env, &["merge", "shards/0", "--index", "m/.plip"]);
    let before = hits(&env, "m/.plip", "tumor");
    let manifest = std::fs::read(env.path().join("m/.plip/MANIFEST")).unwrap();
    let mut cmd = plip(&env);
    cmd.args([
        "merge",
        "shards/0",
        "shards/1",
        "--index",
        "m/.plip",
        "--replace",
    ])
    .env("PLIP_FAILPOINT", "merge-before-manifest:0");
    PausedRun::start_command(cmd).kill();
    assert_eq!(
        std::fs::read(env.path().join("m/.plip/MANIFEST")).unwrap(),
        manifest
    );
    assert_eq!(hits(&env, "m/.plip", "tumor"), before);
    // Into a new folder: no index at all, and a later merge succeeds there.
    let mut cmd = plip(&env);
    cmd.args(["merge", "shards/0", "shards/1", "--index", "n/.plip"])
        .env("PLIP_FAILPOINT", "merge-before-manifest:0");
    PausedRun::start_command(cmd).kill();
    assert!(!env.path().join("n/.plip/MANIFEST").exists());
    ok(
        &env,
        &["merge", "shards/0", "shards/1", "--index", "n/.plip"],
    );
    ok(
        &env,
        &[
            "merge",
            "shards/0",
            "shards/1",
            "--index",
            "m/.plip",
            "--replace",
        ],
    );
    assert_same_hits(
        &hits(&env, "single/.plip", "tumor"),
        &hits(&env, "m/.plip", "tumor"),
    );
    assert_same_hits(
        &hits(&env, "single/.plip", "tumor"),
        &hits(&env, "n/.plip", "tumor"),
    );
    // The leftovers of the killed merges are gone after the next commit.
    let files = listing(&env.path().join("n/.plip"));
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".vec")).count(),
        2,
        "{files:?}"
    );
}

#[test]
fn export_writes_aligned_npy_and_parquet_parts() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let env = sharded(2);
    ok(
        &env,
        &["merge", "shards/0", "shards/1", "--index", "m/.plip"],
    );
    ok(
        &env,
        &["export", "ex", "--index", "m/.plip", "--rows-per-part", "5"],
    );
    let total = fixture_images().len();
    let parts = total.div_ceil(5);
    let mut rows = 0;
    let mut paths = Vec::new();
    for i in 0..parts {
        let npy = std::fs::read(env.path().join(format!("ex/img_emb/img_emb_{i}.npy"))).unwrap();
        let (values, n, dim) = crate::common::read_npy_f32(&npy).expect("a float32 2-d npy");
        assert_eq!(dim, 16);
        assert_eq!(n, (total - i * 5).min(5), "part {i}");
        for row in values.chunks_exact(dim) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "part {i}: norm {norm}");
        }
        let file =
            std::fs::File::open(env.path().join(format!("ex/metadata/metadata_{i}.parquet")))
                .unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let meta = reader.metadata().file_metadata();
        assert_eq!(
            meta.num_rows() as usize,
            n,
            "part {i}: parquet rows vs npy rows"
        );
        assert_eq!(meta.schema_descr().column(0).name(), "image_path");
        for row in reader.get_row_iter(None).unwrap() {
            paths.push(row.unwrap().get_string(0).unwrap().clone());
        }
        rows += n;
    }
    assert_eq!(rows, total);
    assert!(!env
        .path()
        .join(format!("ex/img_emb/img_emb_{parts}.npy"))
        .exists());
    for p in &paths {
        assert!(Path::new(p).is_absolute() && Path::new(p).is_file(), "{p}");
    }
    // A second export into the same folder is refused rather than mixed.
    let err = fails(&env, &["export", "ex", "--index", "m/.plip"]);
    assert!(
        err.contains("finished export") && err.contains("--replace"),
        "{err}"
    );
}

/// `slides/` with whole slides and two images.
fn slide_folder(env: &TestEnv) {
    let d = env.copy_images(
        "slides",
        &["jpeg_rgb_640x480_q90.jpg", "png_LA_180x180.png"],
    );
    for n in ["aperio_ycbcr.svs", "generic.tiff", "single.tiff"] {
        let from = crate::common::fixtures().join("slides").join(n);
        std::fs::copy(from, d.join(n)).unwrap();
    }
}

/// Every hit of `query` as JSON with its score cut off, and the scores apart.
fn tile_hits(env: &TestEnv, index: &str, query: &str) -> (Vec<String>, Vec<f64>) {
    let out = ok(
        env,
        &["search", query, "--index", index, "--json", "-k", "1000"],
    );
    let mut items = Vec::new();
    let mut scores = Vec::new();
    for l in out.lines() {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        scores.push(v["score"].as_f64().unwrap());
        let o = v.as_object_mut().unwrap();
        o.remove("score");
        o.remove("rank");
        items.push(v.to_string());
    }
    (items, scores)
}

#[test]
fn slide_tiles_stay_in_one_shard_and_merge_like_a_single_index() {
    let env = TestEnv::new();
    slide_folder(&env);
    for k in 0..3 {
        let (spec, index) = (format!("{k}/3"), format!("shards/{k}"));
        ok(
            &env,
            &["index", "slides", "--shard", &spec, "--index", &index, "-q"],
        );
    }
    ok(&env, &["index", "slides", "--index", "single/.plip", "-q"]);
    ok(
        &env,
        &[
            "merge", "shards/0", "shards/1", "shards/2", "--index", "m/.plip",
        ],
    );
    let (single, s_scores) = tile_hits(&env, "single/.plip", "tumor");
    let (merged, m_scores) = tile_hits(&env, "m/.plip", "tumor");
    assert!(single.len() > 5, "{single:?}");
    let mut a = single.clone();
    let mut b = merged.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same items");
    for (x, y) in s_scores.iter().zip(&m_scores) {
        assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
    }
    // The slides' records and tiling came along: a plain re-run has nothing to do.
    let out = plip(&env)
        .args(["index", "--index", "m/.plip"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("0 added, 0 updated, 0 removed"),
        "{err}"
    );

    // Tiles export with their regions.
    ok(&env, &["export", "ex", "--index", "m/.plip"]);
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(env.path().join("ex/metadata/metadata_0.parquet")).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let meta = reader.metadata().file_metadata();
    let names: Vec<&str> = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(names, ["image_path", "x", "y", "w", "h", "level", "mpp"]);
    assert_eq!(meta.num_rows() as usize, single.len());

    // Another tiling is refused, naming both.
    ok(
        &env,
        &[
            "index", "slides", "--shard", "0/3", "--index", "other", "--tile", "112", "-q",
        ],
    );
    let err = fails(&env, &["merge", "shards/1", "other", "--index", "n/.plip"]);
    assert!(
        err.contains("tiled their slides differently") && err.contains("--tile 112"),
        "{err}"
    );
}
