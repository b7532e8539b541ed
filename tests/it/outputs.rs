//! Every command's output on one fixture index, recorded (issue 30): a refactor of
//! the layers under the faces must leave what users and scripts read as it was.
//!
//! The record is `tests/it/outputs.txt`: each command, then its stdout. On the
//! machine that recorded it the outputs are compared byte for byte; elsewhere
//! (another CPU may round the last bit of an f32 embedding differently) every
//! number must be within 2e-6 and everything else byte for byte, so a changed
//! rank, path, field, key order or format still fails. `PLIP_BLESS=1` rewrites
//! the record (then review the diff).

use std::fs;
use std::path::PathBuf;

use crate::common::{fixtures, TestEnv};

const IMAGES: [&str; 6] = [
    "png_rgb_224x224.png",
    "bmp_rgb_250x250.bmp",
    "gif_P_200x150.gif",
    "jpeg_rgb_640x480_q90.jpg",
    "png_L_256x200.png",
    "webp_rgb_230x500_lossless.webp",
];

/// The commands whose stdout is recorded, in order.
fn commands() -> Vec<Vec<&'static str>> {
    let t = "--template";
    vec![
        vec!["search", "tumor tissue", "--json", "-k", "5"],
        vec!["search", "tumor tissue", "-k", "5"],
        vec![
            "search",
            "lymphocytes",
            "--paths-only",
            "-k",
            "4",
            "--under",
            "imgs",
        ],
        vec!["search", "mucus", "--threshold", "-1", "-k", "3", "--json"],
        vec![
            "search",
            "--image",
            "imgs/png_rgb_224x224.png",
            "--add",
            "2:lymphocytes",
            "--subtract",
            "necrosis",
            t,
            "a photo of {}",
            t,
            "an H&E patch of {}",
            "--json",
            "-k",
            "5",
        ],
        vec![
            "search",
            "--image",
            "s/aperio_rgb.svs@0,0,444,444",
            "--json",
            "-k",
            "3",
        ],
        vec!["search", "s/aperio_rgb.svs@444,0,444,444", "-k", "3"],
        vec!["search", "tissue", "--by-slide", "--json"],
        vec!["search", "tissue", "--by-slide"],
        vec![
            "search",
            "tissue",
            "--by-slide",
            "--top",
            "1",
            "--under",
            "s",
        ],
        vec![
            "embed",
            "imgs/gif_P_200x150.gif",
            "s/aperio_rgb.svs",
            "--jsonl",
        ],
        vec!["embed", "-t", "tumor", "-t", "lymphocytes", "--jsonl"],
        vec![
            "eval",
            "zero-shot",
            "ds",
            "--labels",
            "labels.csv",
            t,
            "An H&E image patch of {}.",
            "--json",
            "--no-cache",
        ],
        vec![
            "eval",
            "retrieval",
            "--pairs",
            "pairs.csv",
            "--json",
            "--no-cache",
        ],
        vec!["info", "--json"],
    ]
}

fn build(env: &TestEnv) {
    env.copy_images("imgs", &IMAGES);
    fs::create_dir_all(env.path().join("s")).unwrap();
    let slide = fixtures().join("slides/aperio_rgb.svs");
    fs::copy(slide, env.path().join("s/aperio_rgb.svs")).unwrap();
    env.ok(&["index", "imgs", "s"]);
    env.copy_images("ds/TUM", &IMAGES[..2]);
    env.copy_images("ds/LYM", &IMAGES[2..4]);
    fs::write(
        env.path().join("labels.csv"),
        "folder,name\nTUM,tumor epithelium\nLYM,lymphocytes\n",
    )
    .unwrap();
    let caps = ["tumor", "lymphocytes", "necrosis", "mucus"];
    let mut pairs = String::from("image,caption\n");
    for (n, c) in IMAGES.iter().zip(caps) {
        pairs.push_str(&format!("imgs/{n},{c}\n"));
    }
    fs::write(env.path().join("pairs.csv"), pairs).unwrap();
}

/// `info --json` fields that name the moment or the temporary folder.
fn stable_info(out: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(out).unwrap();
    let o = v.as_object_mut().unwrap();
    // The manifest records the model's path, so its size depends on where the repository is.
    for key in [
        "index",
        "updated",
        "updated_unix",
        "size_bytes",
        "bytes_on_disk",
        "last_run",
    ] {
        if o.contains_key(key) {
            o.insert(key.into(), "(varies)".into());
        }
    }
    if let Some(slides) = o.get_mut("slides").and_then(|s| s.as_object_mut()) {
        for s in slides.values_mut() {
            s["mtime_ns"] = "(varies)".into();
        }
    }
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

fn record(env: &TestEnv) -> String {
    let mut text = String::new();
    for args in commands() {
        let mut out = env.ok(&args);
        if args[0] == "info" {
            out = stable_info(&out);
        }
        // Where the repository and the project folder are is not an output.
        let out = out
            .replace(&env.path().display().to_string(), "<project>")
            .replace(env!("CARGO_MANIFEST_DIR"), "<repo>");
        text.push_str(&format!("$ plip {}\n{out}", shell_words(&args)));
    }
    text
}

fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.contains([' ', '{', '&']) {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits `s` into (text, number) runs; numbers are compared by value.
fn tokens(s: &str) -> Vec<Result<f64, String>> {
    let mut out = Vec::new();
    let mut text = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts_number = (b[i].is_ascii_digit()
            || (b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
            && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'));
        if starts_number {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.' || b[j] == b'e') {
                j += 1;
            }
            if let Ok(x) = s[i..j].parse::<f64>() {
                if !text.is_empty() {
                    out.push(Err(std::mem::take(&mut text)));
                }
                out.push(Ok(x));
                i = j;
                continue;
            }
        }
        text.push(b[i] as char);
        i += 1;
    }
    if !text.is_empty() {
        out.push(Err(text));
    }
    out
}

fn record_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/outputs.txt")
}

#[test]
fn outputs_on_the_fixture_index_are_as_recorded() {
    let env = TestEnv::new();
    build(&env);
    let got = record(&env);
    if std::env::var_os("PLIP_BLESS").is_some() {
        fs::write(record_path(), &got).unwrap();
        return;
    }
    let want = fs::read_to_string(record_path()).unwrap();
    if got == want {
        return;
    }
    let (g, w) = (tokens(&got), tokens(&want));
    let first_diff = g.iter().zip(&w).position(|(a, b)| match (a, b) {
        (Ok(x), Ok(y)) => (x - y).abs() > 2e-6,
        _ => a != b,
    });
    if first_diff.is_none() && g.len() == w.len() {
        return; // only the last digit of some scores moved (another CPU)
    }
    let at = first_diff.unwrap_or(g.len().min(w.len()));
    panic!(
        "the outputs changed (PLIP_BLESS=1 re-records them):\n got: {:?}\nwant: {:?}\n\
         (token {at}; the full output is below)\n{got}",
        &g[at.saturating_sub(3)..(at + 3).min(g.len())],
        &w[at.saturating_sub(3)..(at + 3).min(w.len())],
    );
}
