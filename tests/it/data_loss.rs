//! Regression tests for issue 16: the data-loss, memory and wrong-result cases
//! found by trying plip adversarially. One test per numbered case, named after
//! what it guards.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{fixture_images, fixtures, PausedRun, TestEnv};

/// Paths and scores of `plip search QUERY --json` (all hits).
fn hits(env: &TestEnv, args: &[&str]) -> Vec<(String, f64)> {
    let mut a = vec!["search"];
    a.extend_from_slice(args);
    a.extend(["--json", "--top", "1000"]);
    env.ok(&a)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `n` fixture images under `dir` (names repeat the fixtures with a prefix).
fn images(env: &TestEnv, dir: &str, n: usize) {
    let names = fixture_images();
    let d = env.path().join(dir);
    fs::create_dir_all(&d).unwrap();
    for i in 0..n {
        let src = &names[i % names.len()];
        let ext = src.rsplit('.').next().unwrap();
        fs::copy(
            fixtures().join("images").join(src),
            d.join(format!("i{i:03}.{ext}")),
        )
        .unwrap();
    }
}

/// Peak resident memory (VmHWM, MiB) of a command, sampled until it exits.
#[cfg(target_os = "linux")]
fn peak_rss_mib(mut cmd: Command) -> (std::process::ExitStatus, u64, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let start = Instant::now();
    let status = loop {
        if let Ok(s) = fs::read_to_string(&status_path) {
            if let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kb / 1024);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "command hung");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, peak, err)
}

// 1 ------------------------------------------------------------------------------

#[test]
fn index_into_an_ordinary_folder_is_refused_and_deletes_nothing() {
    let env = TestEnv::new();
    images(&env, "masks", 3);
    let masks = env.path().join("masks");
    fs::write(masks.join("seg-0001.png"), b"not an image of plip's").unwrap();
    fs::write(masks.join("seg-notes.txt"), b"notes").unwrap();
    let before: Vec<_> = fs::read_dir(&masks)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for extra in [&[][..], &["--rebuild"][..]] {
        let mut args = vec!["--index", "masks", "index", "masks"];
        args.extend_from_slice(extra);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("not a plip index"),
            "{}",
            stderr(&out)
        );
    }
    let after: Vec<_> = fs::read_dir(&masks)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "{after:?}");
    assert_eq!(fs::read(masks.join("seg-notes.txt")).unwrap(), b"notes");

    // Someone else's MANIFEST is not plip's, even with --rebuild.
    let other = env.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("MANIFEST"), b"CACHE MANIFEST\n# a web app's\n").unwrap();
    let out = env.run(&["--index", "other", "index", "masks", "--rebuild"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        fs::read(other.join("MANIFEST")).unwrap(),
        b"CACHE MANIFEST\n# a web app's\n"
    );

    // An empty or new folder is fine.
    fs::create_dir_all(env.path().join("empty")).unwrap();
    env.ok(&["--index", "empty", "index", "masks"]);
    env.ok(&["--index", "new/idx", "index", "masks"]);
}

// 2 ------------------------------------------------------------------------------

#[test]
fn rebuild_keeps_the_old_index_searchable_until_its_first_commit() {
    let env = TestEnv::new();
    images(&env, "s", 30);
    env.ok(&["index", "s"]);
    let old = hits(&env, &["tumor"]);
    assert_eq!(old.len(), 30);
    let generation = |env: &TestEnv| -> u64 {
        let m: serde_json::Value =
            serde_json::from_slice(&fs::read(env.path().join(".plip/MANIFEST")).unwrap()).unwrap();
        m["generation"].as_u64().unwrap()
    };
    let old_generation = generation(&env);
    let run = {
        let mut c = env.plip();
        c.args([
            "index",
            "s",
            "--rebuild",
            "--batch-size",
            "2",
            "--commit-every",
            "4",
        ])
        .env(
            "PLIP_FAILPOINT",
            format!("before-commit:{}", old_generation + 1),
        );
        PausedRun::start_command(c)
    };
    assert_eq!(generation(&env), old_generation);
    // Paused before the rebuild's first commit: search sees the old index.
    assert_eq!(hits(&env, &["tumor"]), old);
    run.kill();
    assert_eq!(
        hits(&env, &["tumor"]),
        old,
        "kill -9 during --rebuild lost the index"
    );
    env.ok(&["index", "s"]);
    assert_eq!(hits(&env, &["tumor"]).len(), 30);
}

// 3 ------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn plain_index_keeps_what_was_indexed_from_outside_and_through_links() {
    let env = TestEnv::new();
    images(&env, "outside", 4);
    images(&env, "data", 3);
    let proj = env.path().join("proj");
    fs::create_dir_all(&proj).unwrap();
    std::os::unix::fs::symlink(env.path().join("data"), proj.join("linked")).unwrap();
    fs::create_dir_all(proj.join("local")).unwrap();
    fs::copy(
        fixtures().join("images/png_rgb_224x224.png"),
        proj.join("local/a.png"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = env.plip().current_dir(&proj).args(args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    run(&["index", "../outside"]);
    run(&["index", "linked"]);
    run(&["index", "local"]);
    let err = run(&["index"]);
    assert!(err.contains(" 0 removed"), "{err}");
    assert!(err.contains("8 unchanged"), "{err}");
    let out = env
        .plip()
        .current_dir(&proj)
        .args(["search", "x", "--json", "--top", "100"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 8);
}

// 4 ------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn file_names_that_are_not_utf8_stay_distinct_and_print_losslessly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    let img = fixtures().join("images/png_rgb_224x224.png");
    let a = d.join(OsStr::from_bytes(b"bad\xfe.png"));
    let b = d.join(OsStr::from_bytes(b"bad\xff.png"));
    fs::copy(&img, &a).unwrap();
    fs::copy(fixtures().join("images/jpeg_rgb_640x480_q90.jpg"), &b).unwrap();
    let out = env.run(&["index", "s"]);
    assert!(stderr(&out).contains("2 added"), "{}", stderr(&out));
    // --paths-only prints the bytes, which name the files that exist.
    let out = env
        .plip()
        .args(["search", "tumor", "--paths-only", "--null"])
        .output()
        .unwrap();
    let printed: Vec<&[u8]> = out
        .stdout
        .split(|&c| c == 0)
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(printed.len(), 2);
    for p in printed {
        assert!(
            env.path().join(OsStr::from_bytes(p)).is_file(),
            "{}",
            String::from_utf8_lossy(p)
        );
    }
    // JSON and the table escape them.
    let json = env.ok(&["search", "tumor", "--json"]);
    assert!(
        json.contains("bad\\\\xFE.png") && json.contains("bad\\\\xFF.png"),
        "{json}"
    );
    // A newline in a name is escaped in the table.
    fs::copy(&img, d.join("two\nlines.png")).unwrap();
    env.ok(&["index", "s"]);
    let table = env.ok(&["search", "tumor", "--top", "3"]);
    assert!(table.contains("two\\nlines.png"), "{table}");
}

// 5 ------------------------------------------------------------------------------

/// Runs `cmd` as an unprivileged user when the tests run as root (root reads
/// folders whatever their mode), else as is. None when that is not possible.
#[cfg(unix)]
fn unprivileged(env: &TestEnv, args: &[&str]) -> Option<std::process::Output> {
    let is_root = fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let mut cmd = env.plip();
    cmd.args(args);
    if is_root.unwrap_or(false) {
        if !Path::new("/usr/bin/setpriv").exists() {
            return None;
        }
        let mut wrapped = Command::new("/usr/bin/setpriv");
        wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        wrapped.arg(env!("CARGO_BIN_EXE_plip")).args(args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped.current_dir(env.path());
        cmd = wrapped;
    }
    Some(cmd.output().unwrap())
}

#[cfg(unix)]
#[test]
fn a_folder_that_cannot_be_read_keeps_its_entries() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    images(&env, "s/a", 2);
    images(&env, "s/b", 3);
    env.ok(&["index", "s"]);
    // Everyone may write the project (the run below may be another user's).
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(env.path())
        .status()
        .unwrap();
    fs::set_permissions(env.path().join("s/b"), fs::Permissions::from_mode(0o000)).unwrap();
    let out = unprivileged(&env, &["index", "s"]);
    fs::set_permissions(env.path().join("s/b"), fs::Permissions::from_mode(0o755)).unwrap();
    let Some(out) = out else {
        eprintln!("SKIPPED a_folder_that_cannot_be_read_keeps_its_entries: root without setpriv");
        return;
    };
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("0 removed"), "{err}");
    assert!(
        err.contains("is kept"),
        "the unreadable folder is reported: {err}"
    );
    assert_eq!(hits(&env, &["tumor"]).len(), 5);
}

// 6 ------------------------------------------------------------------------------

#[test]
fn segment_files_are_never_rewritten_and_ids_grow_across_rebuilds() {
    let env = TestEnv::new();
    images(&env, "s", 6);
    env.ok(&["index", "s"]);
    let idx = env.path().join(".plip");
    let segs = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("seg-"))
            .collect();
        v.sort();
        v
    };
    let first = segs(&idx);
    assert!(!first.is_empty());
    // A damaged manifest (still recognisably plip's) forgets next_segment.
    let m = fs::read_to_string(idx.join("MANIFEST")).unwrap();
    fs::write(idx.join("MANIFEST"), &m[..m.len() / 2]).unwrap();
    let out = env.run(&["search", "tumor"]);
    assert!(stderr(&out).contains("--rebuild"), "{}", stderr(&out));
    env.ok(&["index", "s", "--rebuild"]);
    let second = segs(&idx);
    assert!(
        second.iter().all(|n| !first.contains(n)),
        "a rebuild reused a segment name: {first:?} -> {second:?}"
    );
    assert_eq!(hits(&env, &["tumor"]).len(), 6);
}

// 7 ------------------------------------------------------------------------------

/// A minimal little-endian TIFF header for a `w` x `h` 8-bit grey image whose
/// (absent) pixels would follow; the file is then made sparse up to `len`.
fn huge_tiff(path: &Path, w: u32, h: u32, len: u64) {
    let mut b: Vec<u8> = b"II*\0".to_vec();
    b.extend_from_slice(&8u32.to_le_bytes());
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, w),
        (257, 4, h),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 4096),
        (277, 3, 1),
        (278, 4, h),
        (279, 4, w.saturating_mul(h)),
    ];
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, val) in entries {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&typ.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        if typ == 3 {
            b.extend_from_slice(&(val as u16).to_le_bytes());
            b.extend_from_slice(&[0, 0]);
        } else {
            b.extend_from_slice(&val.to_le_bytes());
        }
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    fs::write(path, &b).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn a_huge_file_is_refused_from_its_header_without_reading_it() {
    let env = TestEnv::new();
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    huge_tiff(&d.join("whole-slide.tif"), 50_000, 50_000, 2_600_000_000);
    fs::copy(
        fixtures().join("images/png_rgb_224x224.png"),
        d.join("a.png"),
    )
    .unwrap();
    let mut cmd = env.plip();
    cmd.args(["index", "s"]);
    let (status, peak, err) = peak_rss_mib(cmd);
    assert!(status.success(), "{err}");
    assert!(err.contains("megapixel limit"), "{err}");
    assert!(
        peak < 600,
        "peak RSS {peak} MiB while refusing a 2.6 GB file"
    );
}

// 8 ------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[test]
fn decoding_memory_does_not_grow_with_the_thread_count() {
    let env = TestEnv::new();
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    // 100-megapixel grey PNGs: tiny on disk, 400 MB each while decoded to RGB.
    let big =
        image::GrayImage::from_fn(10_000, 10_000, |x, y| image::Luma([((x ^ y) & 0xff) as u8]));
    big.save(d.join("big0.png")).unwrap();
    for i in 1..4 {
        fs::copy(d.join("big0.png"), d.join(format!("big{i}.png"))).unwrap();
    }
    let mut cmd = env.plip();
    cmd.args([
        "--threads",
        "4",
        "--decode-memory",
        "500",
        "index",
        "s",
        "--batch-size",
        "4",
    ]);
    let (status, peak, err) = peak_rss_mib(cmd);
    assert!(status.success(), "{err}");
    assert!(err.contains("4 added"), "{err}");
    // One decode in flight (about 400 MB) plus the process; four at once would be 1.6 GB.
    assert!(
        peak < 900,
        "peak RSS {peak} MiB with 4 threads and a 500 MiB budget"
    );
}

// 9 ------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn a_fifo_or_device_in_a_csv_is_skipped_not_waited_on() {
    let env = TestEnv::new();
    images(&env, "img", 3);
    let fifo = env.path().join("img/fifo.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    fs::write(
        env.path().join("pairs.csv"),
        "image,caption\nimg/i000.bmp,tumor\nimg/i001.gif,necrosis\nimg/i002.jpg,mucus\n\
         img/fifo.png,stroma\n/dev/zero,fat\n",
    )
    .unwrap();
    let mut child = env
        .plip()
        .args(["eval", "retrieval", "--pairs", "pairs.csv", "--no-cache"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("eval retrieval hangs on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("fifo.png") && err.contains("/dev/zero"),
        "{err}"
    );
    assert!(err.contains("not a regular file"), "{err}");
}

// 10 -----------------------------------------------------------------------------

#[test]
fn truncated_jpegs_are_skipped_as_pillow_refuses_them() {
    let env = TestEnv::new();
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    let jpg = fs::read(fixtures().join("images/jpeg_rgb_640x480_q90.jpg")).unwrap();
    fs::write(d.join("cut.jpg"), &jpg[..jpg.len() * 6 / 10]).unwrap();
    fs::write(d.join("whole.jpg"), &jpg).unwrap();
    let out = env.run(&["index", "s"]);
    let err = stderr(&out);
    assert!(
        err.contains("1 added") && err.contains("1 skipped"),
        "{err}"
    );
    assert!(err.contains("truncated"), "{err}");
}

// 11 -----------------------------------------------------------------------------

#[test]
fn a_term_naming_a_file_with_a_colon_is_that_file() {
    let env = TestEnv::new();
    images(&env, "s", 5);
    env.ok(&["index", "s"]);
    fs::copy(
        fixtures().join("images/png_rgb_224x224.png"),
        env.path().join("12:30.png"),
    )
    .unwrap();
    let as_named = hits(&env, &["tumor", "--add", "12:30.png"]);
    let explicit = hits(&env, &["tumor", "--add", "1:./12:30.png"]);
    assert_eq!(as_named, explicit);
    // And negative weights parse for --add as for --subtract.
    env.ok(&["search", "tumor", "--add", "-1:necrosis"]);
}

// 12 -----------------------------------------------------------------------------

#[test]
fn a_relative_model_folder_works_from_anywhere() {
    let env = TestEnv::new();
    images(&env, "s", 3);
    let m = env.path().join("m");
    fs::create_dir_all(&m).unwrap();
    for f in fs::read_dir(crate::common::tiny_model()).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), m.join(f.file_name())).unwrap();
    }
    let out = env
        .plip()
        .env_remove("PLIP_MODEL")
        .args(["--model", "./m", "index", "s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    fs::create_dir_all(env.path().join("sub")).unwrap();
    for dir in [env.path().join("sub"), env.path().to_path_buf()] {
        let out = env
            .plip()
            .env_remove("PLIP_MODEL")
            .current_dir(&dir)
            .args([
                "--index",
                &env.path().join(".plip").display().to_string(),
                "search",
                "tumor",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "from {}: {}",
            dir.display(),
            stderr(&out)
        );
    }
}

// 13 -----------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn symbolic_links_are_followed_and_loops_reported() {
    let env = TestEnv::new();
    images(&env, "s/real", 2);
    let s = env.path().join("s");
    std::os::unix::fs::symlink(s.join("real"), s.join("linked")).unwrap();
    std::os::unix::fs::symlink(s.join("real/i000.bmp"), s.join("one.bmp")).unwrap();
    std::os::unix::fs::symlink(&s, s.join("real/loop")).unwrap();
    let out = env.run(&["index", "s"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("loop"), "{err}");
    assert!(
        err.contains("5 added"),
        "2 real, 2 through the folder link, 1 file link: {err}"
    );
}

// 14 -----------------------------------------------------------------------------

#[test]
fn eval_ann_counts_tied_neighbours_as_hits() {
    let env = TestEnv::new();
    let d = env.path().join("s");
    fs::create_dir_all(&d).unwrap();
    for i in 0..40 {
        fs::copy(
            fixtures().join("images/png_rgb_224x224.png"),
            d.join(format!("tile{i:02}.png")),
        )
        .unwrap();
    }
    env.ok(&["index", "s"]);
    let out = env.ok(&["eval", "ann", "--json", "--queries", "10", "-k", "10"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for row in v["rows"].as_array().unwrap() {
        assert_eq!(row["recall"].as_f64().unwrap(), 1.0, "{row}");
    }
}

// 15 -----------------------------------------------------------------------------

#[test]
fn label_csv_gaps_are_errors_or_warnings() {
    let env = TestEnv::new();
    images(&env, "data/TUM", 2);
    images(&env, "data/NORM", 2);
    let zero_shot = |labels: &str| {
        fs::write(env.path().join("labels.csv"), labels).unwrap();
        env.run(&[
            "eval",
            "zero-shot",
            "data",
            "--labels",
            "labels.csv",
            "--no-cache",
        ])
    };
    let out = zero_shot("TUM,tumor\nNORM,\n");
    assert_eq!(out.status.code(), Some(2), "empty name: {}", stderr(&out));
    let out = zero_shot("TUM,tissue\nNORM,tissue\n");
    assert_eq!(
        out.status.code(),
        Some(2),
        "duplicate names: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("tissue"), "{}", stderr(&out));
    let out = zero_shot("TUM,tumor\nNORM,normal\nLYM,lymphocytes\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("LYM"),
        "a label for a missing folder warns: {}",
        stderr(&out)
    );
}

// Smaller cases ---------------------------------------------------------------------

#[test]
fn smaller_cases_messages_and_arguments() {
    let env = TestEnv::new();
    images(&env, "s", 3);
    env.ok(&["index", "s"]);
    for (args, want) in [
        (&["search", "x", "--threshold", "NaN"][..], "cosine score"),
        (&["search", "x", "--top", "0"][..], "0"),
        (&["search", "--image", "s"][..], "a folder"),
        (
            &["search", "--image", "/dev/null"][..],
            "not a regular file",
        ),
        (&["--index", "missing", "search", "x"][..], "no plip index"),
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // The index is checked before any model is looked for: no Hub message.
    let out = env
        .plip()
        .env("PLIP_MODEL", "vinid/plip")
        .args(["--index", "missing", "search", "x"])
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("Hugging Face"), "{}", stderr(&out));
    // plip info prints a date, not a Unix time.
    let info = env.ok(&["info"]);
    assert!(!info.contains("unix time"), "{info}");
    // A missing segment file suggests --rebuild, and an I/O cause is printed once.
    let idx = env.path().join(".plip");
    let vec = fs::read_dir(&idx)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "vec"))
        .unwrap();
    fs::remove_file(&vec).unwrap();
    let out = env.run(&["index", "s"]);
    assert!(stderr(&out).contains("--rebuild"), "{}", stderr(&out));
}
