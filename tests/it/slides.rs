//! Whole slides end to end (issue 17): indexing a folder of slides and images, tile hits
//! in the search output, `--by-slide`, region queries, incremental runs per slide, a kill
//! in the middle of a slide, bad slides, `plip heatmap` / `plip tiles` / `plip embed
//! SLIDE`, the compatibility of an index written before tiles existed, and the parity of
//! tile embeddings with OpenSlide + Pillow + transformers (`fixtures/slide_embeddings.py`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::{cosine, fixtures, TestEnv};

fn slide_fixture(name: &str) -> PathBuf {
    fixtures().join("slides").join(name)
}

/// `s/` with two slides, a single-level tiled JPEG TIFF and two images.
fn mixed_folder(env: &TestEnv) -> PathBuf {
    let d = env.copy_images("s", &["jpeg_rgb_640x480_q90.jpg", "png_LA_180x180.png"]);
    for n in ["aperio_ycbcr.svs", "generic.tiff", "single.tiff"] {
        fs::copy(slide_fixture(n), d.join(n)).unwrap();
    }
    d
}

/// `s/a.svs` in `env`: the Aperio YCbCr fixture.
fn one_slide(env: &TestEnv) {
    fs::create_dir_all(env.path().join("s")).unwrap();
    fs::copy(
        slide_fixture("aperio_ycbcr.svs"),
        env.path().join("s/a.svs"),
    )
    .unwrap();
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every indexed item as (path, x, y, w, h) (x.. = -1 for images), with its score for
/// a fixed query.
fn all_items(env: &TestEnv) -> Vec<(String, i64, i64, i64, i64, String)> {
    let out = env.ok(&["search", "tissue", "--json", "-k", "100000"]);
    let mut v: Vec<_> = json_lines(&out)
        .into_iter()
        .map(|h| {
            let n = |k: &str| h.get(k).and_then(|x| x.as_i64()).unwrap_or(-1);
            (
                h["path"].as_str().unwrap().to_string(),
                n("x"),
                n("y"),
                n("w"),
                n("h"),
                format!("{:.5}", h["score"].as_f64().unwrap()),
            )
        })
        .collect();
    v.sort();
    v
}

fn manifest(env: &TestEnv) -> serde_json::Value {
    serde_json::from_slice(&fs::read(env.path().join(".plip/MANIFEST")).unwrap()).unwrap()
}

#[test]
fn a_folder_of_slides_and_images_is_searched_tile_by_tile() {
    let env = TestEnv::new();
    mixed_folder(&env);
    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("5 added"), "{err}");

    let m = manifest(&env);
    assert_eq!(m["tiling"]["mpp"], 0.5);
    assert_eq!(m["tiling"]["tile"], 224);
    let slides = m["slides"].as_object().unwrap();
    assert_eq!(slides.len(), 3, "{slides:?}");
    let ycbcr = &slides["s/aperio_ycbcr.svs"];
    assert_eq!(ycbcr["vendor"], "aperio");
    assert_eq!(ycbcr["mpp_source"], "aperio-description");
    // s0 = round(224 * 0.5 / 0.252) = 444: a 4 x 3 grid
    assert_eq!(ycbcr["tiles_total"], 12);
    assert!(ycbcr["complete"].as_bool().unwrap());

    let hits = json_lines(&env.ok(&["search", "tissue", "--json", "-k", "1000"]));
    let kept: u64 = slides
        .values()
        .map(|s| s["tiles_kept"].as_u64().unwrap())
        .sum();
    assert_eq!(hits.len() as u64, kept + 2);
    for h in &hits {
        let p = h["path"].as_str().unwrap();
        let keys: BTreeSet<&str> = h.as_object().unwrap().keys().map(String::as_str).collect();
        if p.ends_with(".jpg") || p.ends_with(".png") {
            assert_eq!(keys, BTreeSet::from(["rank", "score", "path"]), "{h}");
        } else {
            assert_eq!(
                keys,
                BTreeSet::from(["rank", "score", "path", "x", "y", "w", "h", "level", "mpp"]),
                "{h}"
            );
            if p.ends_with("aperio_ycbcr.svs") {
                assert_eq!(h["w"], 444);
                assert_eq!(h["x"].as_u64().unwrap() % 444, 0);
                assert!((h["mpp"].as_f64().unwrap() - 0.5).abs() < 0.001);
            }
        }
    }
    let table = env.ok(&["search", "tissue", "-k", "1000"]);
    assert!(table.contains("s/aperio_ycbcr.svs @ "), "{table}");
    assert!(table.contains("(444x444)"), "{table}");

    let info = env.ok(&["info"]);
    assert!(
        info.contains("s/aperio_ycbcr.svs: 1990x1500 px, 3 level(s), 0.2520 µm/px (aperio-description), aperio"),
        "{info}"
    );
    assert!(info.contains("of 12 tiles kept"), "{info}");

    // --by-slide: one row per slide, best tile included
    let rows = json_lines(&env.ok(&["search", "tissue", "--by-slide", "--json"]));
    assert_eq!(rows.len(), 3);
    for (i, r) in rows.iter().enumerate() {
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["rank", "score", "path", "tiles", "best"])
        );
        assert_eq!(r["rank"], i + 1);
        let best = r["best"].as_object().unwrap();
        assert_eq!(best.len(), 5);
        assert!(best["score"].as_f64().unwrap() >= r["score"].as_f64().unwrap() - 1e-6);
    }
    assert!(rows[0]["score"].as_f64() >= rows[1]["score"].as_f64());

    // a stored tile as the query finds itself first
    let t = hits
        .iter()
        .find(|h| h["path"] == "s/aperio_ycbcr.svs")
        .unwrap();
    let q = format!(
        "s/aperio_ycbcr.svs@{},{},{},{}",
        t["x"], t["y"], t["w"], t["h"]
    );
    let top = json_lines(&env.ok(&["search", "--image", &q, "--json", "-k", "1"]));
    assert_eq!(top[0]["path"], "s/aperio_ycbcr.svs");
    assert_eq!(
        (top[0]["x"].clone(), top[0]["y"].clone()),
        (t["x"].clone(), t["y"].clone())
    );
    assert!(top[0]["score"].as_f64().unwrap() > 0.9999, "{:?}", top[0]);
    // ... and works as a weighted term
    env.ok(&["search", "tissue", "--add", &format!("0.5:{q}")]);

    // HTML pages: tile crops with coordinates, slide thumbnails
    env.ok(&["search", "tissue", "--html", "r.html", "-k", "3"]);
    let page = fs::read_to_string(env.path().join("r.html")).unwrap();
    assert!(page.contains(" @ "), "tile coordinates in captions");
    assert!(!page.contains("no preview"));
    env.ok(&["search", "tissue", "--by-slide", "--html", "s.html"]);
    let page = fs::read_to_string(env.path().join("s.html")).unwrap();
    assert_eq!(page.matches("class=\"slide\"").count(), 3);
    assert!(!page.contains("no preview"));
}

#[test]
fn slides_are_incremental_per_slide() {
    let env = TestEnv::new();
    let d = mixed_folder(&env);
    env.ok(&["index", "s"]);
    let before = all_items(&env);

    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 added, 0 updated, 0 removed, 5 unchanged"),
        "{err}"
    );
    assert_eq!(all_items(&env), before);

    // same name, other slide: re-tiled
    fs::copy(slide_fixture("aperio_rgb.svs"), d.join("aperio_ycbcr.svs")).unwrap();
    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 added, 1 updated, 0 removed, 4 unchanged"),
        "{err}"
    );
    let m = manifest(&env);
    // aperio_rgb is 1280 x 960: a 2 x 2 grid of 444-px tiles
    assert_eq!(m["slides"]["s/aperio_ycbcr.svs"]["tiles_total"], 4);
    let tiles = |items: &[(String, i64, i64, i64, i64, String)], p: &str| {
        items.iter().filter(|i| i.0 == p).count()
    };
    let now = all_items(&env);
    assert_eq!(
        tiles(&now, "s/aperio_ycbcr.svs") as u64,
        m["slides"]["s/aperio_ycbcr.svs"]["tiles_kept"]
            .as_u64()
            .unwrap()
    );

    // deleted: all its tiles go
    fs::remove_file(d.join("generic.tiff")).unwrap();
    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 removed"), "{err}");
    let now = all_items(&env);
    assert_eq!(tiles(&now, "s/generic.tiff"), 0);
    assert!(manifest(&env)["slides"].get("s/generic.tiff").is_none());
    assert!(tiles(&now, "s/single.tiff") > 0);

    // other tiling flags re-tile, and are recorded
    let out = env.run(&["index", "s", "--tile", "112", "--mpp", "1.0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tiled again"), "{err}");
    assert!(err.contains("2 updated"), "{err}");
    assert_eq!(manifest(&env)["tiling"]["tile"], 112);
    // a plain re-run keeps the recorded tiling
    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 updated"), "{err}");

    // --rebuild starts over with the default tiling
    env.ok(&["index", "--rebuild", "s"]);
    assert_eq!(manifest(&env)["tiling"]["tile"], 224);
}

#[test]
fn kill_in_the_middle_of_a_slide_then_rerun_equals_a_fresh_index() {
    // aperio_ycbcr at 64-px tiles of 0.5 µm/px, every tile kept: 15 x 11 = 165 tiles
    let flags = [
        "--tile",
        "64",
        "--min-tissue",
        "0",
        "--batch-size",
        "8",
        "--commit-every",
        "16",
    ];
    let fresh = TestEnv::new();
    one_slide(&fresh);
    let mut args = vec!["index", "s"];
    args.extend(flags);
    fresh.ok(&args);
    let want = all_items(&fresh);
    assert_eq!(want.len(), 165);

    let env = TestEnv::new();
    one_slide(&env);
    let mut child = env
        .plip()
        .args(&args)
        .env("PLIP_FAILPOINT", "after-commit:3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        for line in lines {
            let line = line.unwrap();
            seen += &line;
            if line.contains("failpoint") {
                break;
            }
        }
        assert!(seen.contains("failpoint"), "{seen}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // the slide is half done: some tiles committed, the record unfinished
    let m = manifest(&env);
    assert_eq!(m["slides"]["s/a.svs"]["complete"], false);
    let partial = all_items(&env).len();
    assert!(partial > 0 && partial < 165, "{partial}");
    assert!(env.ok(&["info"]).contains("unfinished"));

    let out = env.run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        all_items(&env),
        want,
        "resumed index differs from a fresh one"
    );
    assert_eq!(manifest(&env)["slides"]["s/a.svs"]["complete"], true);
}

#[test]
fn bad_slides_are_skipped_by_name_and_nothing_indexed_is_lost() {
    let env = TestEnv::new();
    let d = env.copy_images("s", &["jpeg_rgb_640x480_q90.jpg"]);
    fs::copy(slide_fixture("generic.tiff"), d.join("good.tiff")).unwrap();
    env.ok(&["index", "s"]);
    let before = all_items(&env);

    let bytes = fs::read(slide_fixture("aperio_ycbcr.svs")).unwrap();
    fs::write(d.join("truncated.svs"), &bytes[..bytes.len() / 3]).unwrap();
    fs::write(d.join("empty.svs"), b"").unwrap();
    fs::write(d.join("junk.svs"), b"II*\0 this is not a slide at all").unwrap();
    // a corrupt stored tile: zero the middle of the file (tile data), keep the header
    let mut corrupt = bytes.clone();
    let (a, b) = (bytes.len() / 4, bytes.len() / 4 + 4000);
    corrupt[a..b].iter_mut().for_each(|x| *x = 0xFF);
    fs::write(d.join("corrupt.svs"), &corrupt).unwrap();

    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for name in ["empty.svs", "junk.svs"] {
        assert!(err.contains(name), "no warning names {name}: {err}");
    }
    // the truncated and corrupt slides are either skipped or indexed without their bad
    // tiles; either way a warning names them
    assert!(err.contains("truncated.svs"), "{err}");
    assert!(err.contains("corrupt.svs"), "{err}");
    let now = all_items(&env);
    for item in &before {
        assert!(now.contains(item), "lost {item:?}");
    }
    let info = env.ok(&["info"]);
    assert!(info.contains("skipped s/empty.svs"), "{info}");
}

#[test]
fn heatmap_and_tiles_pictures_keep_the_slide_aspect() {
    let env = TestEnv::new();
    one_slide(&env);
    let dims = |p: &Path| image::image_dimensions(p).unwrap();

    // not indexed: embedded on the fly
    let out = env.run(&[
        "heatmap",
        "s/a.svs",
        "tumor",
        "-o",
        "heat1.png",
        "--size",
        "400",
        "--tile",
        "64",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("embedded now"), "{err}");
    // 1990 x 1500 at 400 px: a 400 x 302 thumbnail (rounded) and a 90-px colour bar
    let (w, h) = dims(&env.path().join("heat1.png"));
    assert_eq!(w, 400 + 90);
    assert!((f64::from(h) - 400.0 * 1500.0 / 1990.0).abs() <= 1.0, "{h}");

    env.ok(&["index", "s", "--tile", "64"]);
    let out = env.run(&[
        "heatmap",
        "s/a.svs",
        "tumor",
        "-o",
        "heat2.png",
        "--size",
        "400",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stored in the index"), "{err}");
    assert_eq!(dims(&env.path().join("heat2.png")), (w, h));
    // the same tiles and vectors: the same picture
    assert_eq!(
        image::open(env.path().join("heat1.png")).unwrap().to_rgb8(),
        image::open(env.path().join("heat2.png")).unwrap().to_rgb8()
    );

    let out = env.run(&["tiles", "s/a.svs", "-o", "check.png", "--size", "300"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("tiles kept"), "{err}");
    let (w, h) = dims(&env.path().join("check.png"));
    assert_eq!(w, 300);
    // the thumbnail (aspect kept), then the legend strip under it
    let thumb_h = 300.0 * 1500.0 / 1990.0;
    assert!(
        f64::from(h) > thumb_h + 10.0 && f64::from(h) < thumb_h + 80.0,
        "{h}"
    );
}

#[test]
fn embed_a_slide_gives_one_row_per_tissue_tile() {
    let env = TestEnv::new();
    let slide = slide_fixture("generic.tiff");
    let out = env.ok(&["embed", slide.to_str().unwrap(), "--jsonl", "--tile", "64"]);
    let rows = json_lines(&out);
    assert!(rows.len() > 10);
    for r in &rows {
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["input", "x", "y", "w", "h", "level", "embedding"])
        );
        assert_eq!(r["w"], 64);
    }
    let mut pos: Vec<_> = rows
        .iter()
        .map(|r| (r["y"].as_u64(), r["x"].as_u64()))
        .collect();
    let n = pos.len();
    pos.dedup();
    assert_eq!(pos.len(), n, "one row per tile");
}

/// Tiles read and embedded by plip vs OpenSlide `read_region` + Pillow bicubic +
/// transformers' CLIPImageProcessor and CLIPModel (`fixtures/slide_embeddings.py`).
#[test]
fn tile_embeddings_match_openslide_pillow_and_transformers() {
    let env = TestEnv::new();
    let mut checked = 0;
    for slide in [
        "aperio_ycbcr.svs",
        "aperio_rgb.svs",
        "generic.tiff",
        "single.tiff",
    ] {
        let golden = slide_fixture("golden")
            .join(slide)
            .join("tile_embeddings.json");
        let golden: Vec<serde_json::Value> =
            serde_json::from_slice(&fs::read(&golden).unwrap()).unwrap();
        let path = slide_fixture(slide);
        let mut runs: Vec<(serde_json::Value, serde_json::Value)> = golden
            .iter()
            .map(|g| (g["mpp"].clone(), g["tile"].clone()))
            .collect();
        runs.dedup();
        for (mpp_v, tile_v) in runs {
            let (mpp, tile) = (mpp_v.to_string(), tile_v.to_string());
            let out = env.ok(&[
                "embed",
                path.to_str().unwrap(),
                "--jsonl",
                "--mpp",
                &mpp,
                "--tile",
                &tile,
                "--min-tissue",
                "0",
            ]);
            let rows = json_lines(&out);
            for g in golden
                .iter()
                .filter(|g| g["mpp"] == mpp_v && g["tile"] == tile_v)
            {
                let row = rows
                    .iter()
                    .find(|r| r["x"] == g["x"] && r["y"] == g["y"])
                    .unwrap_or_else(|| panic!("{slide}: no tile at {}, {}", g["x"], g["y"]));
                assert_eq!(row["level"], g["level"], "{slide}");
                let v = |x: &serde_json::Value| -> Vec<f32> {
                    x.as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_f64().unwrap() as f32)
                        .collect()
                };
                let c = cosine(&v(&row["embedding"]), &v(&g["embedding"]));
                assert!(c >= 0.9995, "{slide} tile {}: cosine {c}", g["png"]);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 9);
}

/// An index written by plip before tiles existed (`fixtures/compat/v1`, made by the
/// binary of the commit before regions were added) still opens, searches and updates.
#[test]
fn an_index_written_before_slide_tiles_still_opens() {
    let env = TestEnv::new();
    let src = fixtures().join("compat/v1");
    for sub in [".plip", "images"] {
        fs::create_dir_all(env.path().join(sub)).unwrap();
        for e in fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), env.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    let want = fs::read_to_string(src.join("expected-search.jsonl")).unwrap();
    assert_eq!(env.ok(&["search", "tumor", "--json"]), want);
    assert!(env.ok(&["info"]).contains("images:      2"));
    // a run over it: the images are unchanged (same bytes), a slide is added
    fs::copy(
        slide_fixture("generic.tiff"),
        env.path().join("images/g.tiff"),
    )
    .unwrap();
    let out = env.run(&["index", "images"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 added, 0 updated, 0 removed, 2 unchanged"),
        "{err}"
    );
    let hits = json_lines(&env.ok(&["search", "tumor", "--json", "-k", "100"]));
    assert!(hits
        .iter()
        .any(|h| h["path"] == "images/g.tiff" && h.get("x").is_some()));
    assert_eq!(hits.iter().filter(|h| h.get("x").is_none()).count(), 2);
}

/// Sets every value of TIFF tag `tag` (a SHORT) in every IFD of a little-endian classic
/// TIFF or BigTIFF to `value`; the number of entries changed.
fn set_tiff_short(bytes: &mut [u8], tag: u16, value: u16) -> usize {
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&bytes[..2], b"II", "little-endian TIFF expected");
    let big = u16_at(bytes, 2) == 43;
    let mut ifd = if big {
        u64_at(bytes, 8)
    } else {
        u32_at(bytes, 4) as u64
    } as usize;
    let mut changed = 0;
    while ifd != 0 {
        let (count, head, entry) = if big {
            (u64_at(bytes, ifd) as usize, 8, 20)
        } else {
            (u16_at(bytes, ifd) as usize, 2, 12)
        };
        for i in 0..count {
            let e = ifd + head + i * entry;
            if u16_at(bytes, e) == tag {
                assert_eq!(u16_at(bytes, e + 2), 3, "tag {tag} is not a SHORT");
                let v = e + if big { 12 } else { 8 };
                bytes[v..v + 2].copy_from_slice(&value.to_le_bytes());
                changed += 1;
            }
        }
        let next = ifd + head + count * entry;
        ifd = if big {
            u64_at(bytes, next)
        } else {
            u32_at(bytes, next) as u64
        } as usize;
    }
    changed
}

#[test]
fn a_slide_without_a_resolution_is_skipped_with_advice_then_indexed_with_slide_mpp() {
    let env = TestEnv::new();
    let d = env.copy_images("s", &["jpeg_rgb_640x480_q90.jpg"]);
    // generic.tiff (768 x 512) records 0.5 um/px in its resolution tags; ResolutionUnit 1
    // ("no absolute unit") takes that away, and it has no description or OME-XML.
    let mut bytes = fs::read(slide_fixture("generic.tiff")).unwrap();
    assert_eq!(set_tiff_short(&mut bytes, 296, 1), 3);
    fs::write(d.join("no-mpp.tiff"), &bytes).unwrap();

    let out = env.run(&["index", "s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("no-mpp.tiff"))
        .unwrap_or_else(|| panic!("no warning names the slide: {err}"));
    assert!(warning.contains("--slide-mpp"), "no advice: {warning}");
    let paths: BTreeSet<String> = all_items(&env).into_iter().map(|i| i.0).collect();
    assert_eq!(
        paths,
        BTreeSet::from(["s/jpeg_rgb_640x480_q90.jpg".to_string()])
    );
    let info = env.ok(&["info"]);
    assert!(info.contains("s/no-mpp.tiff"), "{info}");

    // With the resolution given, the slide is tiled at it: s0 = round(224 * 0.5 / 0.25)
    // = 448, one whole tile in 768 x 512.
    let out = env.run(&["index", "s", "--slide-mpp", "0.25", "--min-tissue", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let m = manifest(&env);
    let slide = &m["slides"]["s/no-mpp.tiff"];
    assert_eq!(slide["mpp_source"], "--slide-mpp", "{slide}");
    assert_eq!(slide["tiles_total"], 1, "{slide}");
    let tiles: Vec<_> = all_items(&env)
        .into_iter()
        .filter(|i| i.0 == "s/no-mpp.tiff")
        .collect();
    assert_eq!(tiles.len(), 1, "{tiles:?}");
    assert_eq!(
        (tiles[0].1, tiles[0].2, tiles[0].3, tiles[0].4),
        (0, 0, 448, 448)
    );
}
