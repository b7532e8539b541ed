//! Regression tests for issue 27's data-loss cases in the index and the export: a
//! tiling flag that is not finite or out of range, a slide that cannot be planned, a
//! slide replaced during an unfinished record, and an interrupted export. Each test is
//! named after the case it guards.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::common::{fixtures, TestEnv};

/// `s/a.svs` (the Aperio YCbCr fixture) and one image.
fn slide_and_image(env: &TestEnv) {
    let d = env.copy_images("s", &["jpeg_rgb_640x480_q90.jpg"]);
    fs::copy(fixtures().join("slides/aperio_ycbcr.svs"), d.join("a.svs")).unwrap();
}

fn manifest_bytes(env: &TestEnv) -> Vec<u8> {
    fs::read(env.path().join(".plip/MANIFEST")).unwrap()
}

/// Every indexed item as a `--json` line without its score, sorted.
fn items(env: &TestEnv) -> Vec<String> {
    let out = env.ok(&["search", "tissue", "--json", "-k", "100000"]);
    let mut v: Vec<String> = out
        .lines()
        .map(|l| {
            let mut h: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = h.as_object_mut().unwrap();
            o.remove("score");
            o.remove("rank");
            h.to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn non_finite_or_out_of_range_tiling_flags_are_refused_and_the_index_is_untouched() {
    let env = TestEnv::new();
    slide_and_image(&env);
    env.ok(&["index", "s"]);
    let before = manifest_bytes(&env);
    let items_before = items(&env);
    assert!(
        items_before.len() > 2,
        "the slide has tiles: {items_before:?}"
    );
    let cases: &[(&str, &str)] = &[
        ("--mpp", "NaN"),
        ("--mpp", "inf"),
        ("--mpp", "-1"),
        ("--mpp", "1e-320"),
        ("--min-tissue", "NaN"),
        ("--min-tissue", "5"),
        ("--min-tissue", "-0.1"),
        ("--slide-mpp", "NaN"),
        ("--slide-mpp", "inf"),
        ("--slide-mpp", "0"),
        ("--tile", "0"),
        ("--tile", "100000"),
        ("--mpp", "half"),
    ];
    for (flag, value) in cases {
        let arg = format!("{flag}={value}");
        let out = env.run(&["index", "s", &arg]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted: {err}");
        assert!(
            err.contains(flag) && err.contains(value),
            "{flag} {value}: the message names neither: {err}"
        );
        assert_eq!(
            manifest_bytes(&env),
            before,
            "{flag} {value} changed the index"
        );
        // the single-slide commands check the same flags the same way
        let out = env.run(&["tiles", "s/a.svs", "-o", "t.png", &arg]);
        assert!(!out.status.success(), "tiles {flag} {value} was accepted");
    }
    // the index still opens and holds everything
    env.ok(&["info"]);
    assert_eq!(items(&env), items_before);
}

#[test]
fn a_slide_that_cannot_be_planned_keeps_its_indexed_tiles() {
    let env = TestEnv::new();
    slide_and_image(&env);
    env.ok(&["index", "s"]);
    let before = items(&env);
    // The slide becomes unreadable (truncated): the run says why and loses nothing.
    let path = env.path().join("s/a.svs");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("a.svs") && err.contains("indexed tile(s) are kept"),
        "{err}"
    );
    assert!(err.contains("0 removed"), "{err}");
    assert_eq!(items(&env), before);
    // Restored, it is indexed again as it was.
    fs::write(&path, &bytes).unwrap();
    env.ok(&["index", "s"]);
    assert_eq!(items(&env), before);
}

/// Sets `path`'s modification time to a fixed day in the past, so that plip's change
/// detection trusts size and mtime (a file modified during a run is checksummed).
fn set_old_mtime(path: &Path) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn a_slide_replaced_with_same_size_and_mtime_is_not_resumed_with_mixed_tiles() {
    let env = TestEnv::new();
    fs::create_dir_all(env.path().join("s")).unwrap();
    let path = env.path().join("s/a.svs");
    let original = fs::read(fixtures().join("slides/aperio_ycbcr.svs")).unwrap();
    fs::write(&path, &original).unwrap();
    set_old_mtime(&path);
    // 165 tiles of 64 px; stop (and kill) the run after its third commit
    let args = [
        "index",
        "s",
        "--tile",
        "64",
        "--min-tissue",
        "0",
        "--batch-size",
        "8",
        "--commit-every",
        "16",
    ];
    let mut child = env
        .plip()
        .args(args)
        .env("PLIP_FAILPOINT", "after-commit:3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines {
            if line.unwrap().contains("failpoint") {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest_bytes(&env)).unwrap();
    assert_eq!(m["slides"]["s/a.svs"]["complete"], false);

    // Another file of the same size and mtime: one byte of its description differs.
    let mut other = original.clone();
    let at = other
        .windows(8)
        .position(|w| w == b"v12.0.15")
        .expect("the fixture names its Aperio library version");
    other[at + 7] = b'6';
    fs::write(&path, &other).unwrap();
    set_old_mtime(&path);

    let out = env.run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("CRC32 differs"), "{err}");
    // every tile was embedded again from the new file, none kept from the old one
    assert!(err.contains("(165 embedded"), "{err}");
    let m: serde_json::Value = serde_json::from_slice(&manifest_bytes(&env)).unwrap();
    assert_eq!(m["slides"]["s/a.svs"]["complete"], true);
    assert_eq!(
        m["slides"]["s/a.svs"]["crc32"].as_u64().unwrap(),
        u64::from(crc32fast::hash(&other))
    );
    assert_eq!(items(&env).len(), 165);
}

#[test]
fn an_interrupted_export_is_marked_incomplete_and_resumes_to_the_same_files() {
    let env = TestEnv::new();
    env.copy_images(
        "imgs",
        &[
            "jpeg_rgb_640x480_q90.jpg",
            "png_LA_180x180.png",
            "png_rgb_224x224.png",
            "bmp_rgb_250x250.bmp",
            "gif_P_200x150.gif",
        ],
    );
    env.ok(&["index", "imgs"]);
    env.ok(&["export", "full", "--rows-per-part", "2"]);
    let marker = |dir: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(env.path().join(dir).join("plip-export.json")).unwrap())
            .unwrap()
    };
    let done = marker("full");
    assert_eq!(done["complete"], true);
    assert_eq!(done["rows"], 5);
    assert_eq!(done["parts"], 3);

    // An export stopped after its first part: the marker says incomplete.
    env.ok(&["export", "cut", "--rows-per-part", "2"]);
    let cut = env.path().join("cut");
    let mut m = marker("cut");
    m["complete"] = false.into();
    fs::write(cut.join("plip-export.json"), m.to_string()).unwrap();
    for i in [1, 2] {
        fs::remove_file(cut.join(format!("img_emb/img_emb_{i}.npy"))).unwrap();
        fs::remove_file(cut.join(format!("metadata/metadata_{i}.parquet"))).unwrap();
    }
    fs::write(cut.join("img_emb/.img_emb_1.npy.tmp-99"), b"half").unwrap();

    let out = env.run(&["export", "cut", "--rows-per-part", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("interrupted export") && err.contains("--resume"),
        "{err}"
    );
    // another --rows-per-part is another export: not resumable
    let out = env.run(&["export", "cut", "--rows-per-part", "3", "--resume"]);
    assert!(!out.status.success());
    env.ok(&["export", "cut", "--rows-per-part", "2", "--resume"]);
    assert_eq!(marker("cut"), done);
    assert!(!cut.join("img_emb/.img_emb_1.npy.tmp-99").exists());
    for f in [
        "img_emb/img_emb_0.npy",
        "img_emb/img_emb_1.npy",
        "img_emb/img_emb_2.npy",
        "metadata/metadata_2.parquet",
    ] {
        assert_eq!(
            fs::read(cut.join(f)).unwrap(),
            fs::read(env.path().join("full").join(f)).unwrap(),
            "{f}"
        );
    }
    // a finished export is refused without --replace, and --replace writes it anew
    let out = env.run(&["export", "full", "--rows-per-part", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("finished export"));
    env.ok(&["export", "full", "--replace"]);
    assert_eq!(marker("full")["parts"], 1);
    assert!(!env.path().join("full/img_emb/img_emb_1.npy").exists());
}

#[test]
fn export_replace_never_deletes_files_plip_did_not_write() {
    let env = TestEnv::new();
    env.copy_images("imgs", &["png_rgb_224x224.png"]);
    env.ok(&["index", "imgs"]);
    let emb = env.path().join("out/img_emb");
    fs::create_dir_all(&emb).unwrap();
    fs::write(emb.join("notes.txt"), b"mine").unwrap();
    for mode in [&[][..], &["--replace"][..], &["--resume"][..]] {
        let mut args = vec!["export", "out"];
        args.extend_from_slice(mode);
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode:?}: {err}");
        assert!(err.contains("notes.txt"), "{err}");
    }
    assert_eq!(fs::read(emb.join("notes.txt")).unwrap(), b"mine");
}
