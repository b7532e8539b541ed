//! Results where pathologists work (issue 31): QuPath GeoJSON and CSV of search hits
//! and heatmaps read back and compared with `--json`; TRIDENT / CLAM feature files
//! (`plip export --format trident|clam`) checked with the HDF5 tools; others' tilings
//! (`plip index --coords`) from coordinate files written by h5py as TRIDENT and CLAM
//! write them (`fixtures/make_coords.py`), embedded at the reference's bar.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use crate::common::{cosine, fixtures, read_npy_f32, TestEnv};

/// `s/aperio_rgb.svs` (1280 x 960 at 0.252 µm/px) and `s/generic.tiff` (768 x 512 at
/// 0.5 µm/px), and two images.
fn slides(env: &TestEnv) {
    fs::create_dir_all(env.path().join("s")).unwrap();
    for n in ["aperio_rgb.svs", "generic.tiff"] {
        fs::copy(
            fixtures().join("slides").join(n),
            env.path().join("s").join(n),
        )
        .unwrap();
    }
    env.copy_images("s", &["png_rgb_224x224.png", "jpeg_rgb_640x480_q90.jpg"]);
}

fn stderr_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "plip {args:?}: {err}");
    err
}

fn hdf5_installed() -> bool {
    let ok = Command::new("h5dump").arg("--version").output().is_ok();
    if !ok {
        eprintln!(
            "SKIPPED: h5dump (hdf5-tools) and libhdf5 are not installed; .ci/run installs them"
        );
    }
    ok
}

/// `--json` rows of a search: (path, x, y, w, h) -> (score, rank).
/// A slide tile: the slide's file name and its box.
type TileKey = (String, u64, u64, u64, u64);

fn json_hits(out: &str) -> BTreeMap<TileKey, (f64, u64)> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("x").is_some())
        .map(|v| {
            let n = |k: &str| v[k].as_u64().unwrap();
            let name = v["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            (
                (name, n("x"), n("y"), n("w"), n("h")),
                (v["score"].as_f64().unwrap(), n("rank")),
            )
        })
        .collect()
}

/// The closed box ring of a tile Feature as (x, y, w, h), checked.
fn tile_box(f: &serde_json::Value) -> (u64, u64, u64, u64) {
    assert_eq!(f["type"], "Feature");
    assert_eq!(
        f["geometry"]["type"], "Polygon",
        "never a one-element MultiPolygon"
    );
    let rings = f["geometry"]["coordinates"].as_array().unwrap();
    assert_eq!(rings.len(), 1);
    let ring = rings[0].as_array().unwrap();
    assert_eq!(ring.len(), 5);
    assert_eq!(ring[0], ring[4], "closed ring");
    let p = |i: usize, j: usize| ring[i][j].as_u64().expect("integer pixel coordinates");
    let (x0, y0, x1, y1) = (p(0, 0), p(0, 1), p(2, 0), p(2, 1));
    assert_eq!((p(1, 0), p(1, 1), p(3, 0), p(3, 1)), (x1, y0, x0, y1));
    (x0, y0, x1 - x0, y1 - y0)
}

#[test]
fn search_geojson_and_csv_hold_the_hits_of_json() {
    let env = TestEnv::new();
    slides(&env);
    env.ok(&["index", "s", "-q"]);
    let args = ["search", "tumor tissue", "-k", "8", "--json"];
    let hits = json_hits(&env.ok(&args));
    assert!(hits.len() >= 4, "{hits:?}");
    let err = stderr_ok(
        &env,
        &[&args[..], &["--geojson", "gj", "--csv", "cs"]].concat(),
    );
    assert!(err.contains("gj") && err.contains("cs"), "{err}");
    let mut from_geojson = BTreeMap::new();
    for (slide, id) in [
        ("aperio_rgb.svs", "aperio_rgb"),
        ("generic.tiff", "generic"),
    ] {
        let path = env.path().join("gj").join(format!("{id}.geojson"));
        if !hits.keys().any(|k| k.0 == slide) {
            assert!(!path.exists());
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["type"], "FeatureCollection");
        for f in v["features"].as_array().unwrap() {
            let (x, y, w, h) = tile_box(f);
            let p = &f["properties"];
            assert_eq!(p["objectType"], "tile");
            assert_eq!(p["classification"]["name"], "plip hit");
            let m = p["measurements"].as_object().unwrap();
            assert_eq!(m.len(), 2, "one score and the rank: {m:?}");
            let score = m["plip: tumor tissue"].as_f64().unwrap();
            let rank = m["plip rank"].as_u64().unwrap();
            from_geojson.insert((slide.to_string(), x, y, w, h), (score, rank));
        }
        // The CSV of the same slide: the same rows.
        let csv = fs::read_to_string(env.path().join("cs").join(format!("{id}.csv"))).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "x,y,width,height,level,mpp,tumor tissue,rank"
        );
        for line in lines {
            let c: Vec<&str> = line.split(',').collect();
            let n = |i: usize| c[i].parse::<u64>().unwrap();
            let key = (slide.to_string(), n(0), n(1), n(2), n(3));
            let (score, rank) = hits[&key];
            assert_eq!(
                (c[6].parse::<f64>().unwrap(), n(7)),
                (score, rank),
                "{line}"
            );
        }
    }
    assert_eq!(from_geojson, hits);
    let mapping = fs::read_to_string(env.path().join("gj/slides.csv")).unwrap();
    assert!(
        mapping.starts_with("slide_id,file,path,items\n"),
        "{mapping}"
    );

    // A folder holding someone else's file is refused before anything is written.
    fs::write(env.path().join("cs/notes.txt"), b"mine").unwrap();
    let out = env.run(&[&args[..], &["--csv", "cs"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("notes.txt"), "{err}");
    assert!(out.stdout.is_empty(), "nothing searched before the check");
}

#[test]
fn heatmap_geojson_has_every_tile_with_a_measurement_per_query() {
    let env = TestEnv::new();
    slides(&env);
    env.ok(&["index", "s", "-q"]);
    let stored: BTreeSet<(u64, u64, u64, u64)> =
        json_hits(&env.ok(&["search", "x", "-k", "100", "--json"]))
            .into_keys()
            .filter(|k| k.0 == "aperio_rgb.svs")
            .map(|k| (k.1, k.2, k.3, k.4))
            .collect();
    let err = stderr_ok(
        &env,
        &[
            "heatmap",
            "s/aperio_rgb.svs",
            "tumor tissue",
            "fat",
            "--geojson",
            "h.geojson",
            "--csv",
            "h.csv",
        ],
    );
    assert!(err.contains("QuPath"), "{err}");
    assert!(!env.path().join("h.png").exists());
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(env.path().join("h.geojson")).unwrap()).unwrap();
    let features = v["features"].as_array().unwrap();
    let boxes: BTreeSet<_> = features.iter().map(tile_box).collect();
    assert_eq!(boxes, stored, "every stored tile, once");
    // The scores are the search's cosines for each query alone.
    let tumor = json_hits(&env.ok(&["search", "tumor tissue", "-k", "100", "--json"]));
    for f in features {
        let m = f["properties"]["measurements"].as_object().unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m.contains_key("plip: fat"));
        let (x, y, w, h) = tile_box(f);
        let key = ("aperio_rgb.svs".to_string(), x, y, w, h);
        // Scores are rounded to 6 decimals; the search's scan may differ in the last bit.
        assert!((m["plip: tumor tissue"].as_f64().unwrap() - tumor[&key].0).abs() <= 2e-6);
        assert!(f["properties"].get("classification").is_none());
    }
    let csv = fs::read_to_string(env.path().join("h.csv")).unwrap();
    assert!(
        csv.starts_with("x,y,width,height,level,mpp,tumor tissue,fat\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), stored.len() + 1);
    // Without -o, --geojson or --csv there is nothing to write: a usage error.
    let out = env.run(&["heatmap", "s/aperio_rgb.svs", "fat"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `h5dump -H` of a file, asserting success.
fn h5_header(path: &std::path::Path) -> String {
    let out = Command::new("h5dump").arg("-H").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "h5dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn trident_and_clam_exports_open_in_h5dump_and_refuse_foreign_folders() {
    if !hdf5_installed() {
        return;
    }
    let env = TestEnv::new();
    slides(&env);
    env.ok(&["index", "s", "-q"]);
    let err = stderr_ok(&env, &["export", "--format", "trident", "tr"]);
    assert!(
        err.contains("2 slide(s)") && err.contains("2 whole image(s) left out"),
        "{err}"
    );
    let head = h5_header(&env.path().join("tr/aperio_rgb.h5"));
    for needle in [
        "DATASET \"coords\"",
        "H5T_STD_I64LE",
        "DATASET \"features\"",
        "H5T_IEEE_F32LE",
        "ATTRIBUTE \"patch_size_level0\"",
        "ATTRIBUTE \"level0_magnification\"",
        "ATTRIBUTE \"target_magnification\"",
        "ATTRIBUTE \"encoder\"",
    ] {
        assert!(head.contains(needle), "{needle} in {head}");
    }
    // 4 tiles of 444 px at the default tiling
    assert!(
        head.contains("( 4, 2 )") && head.contains("( 4, 16 )"),
        "{head}"
    );
    let full = Command::new("h5dump")
        .args(["-d", "coords"])
        .arg(env.path().join("tr/aperio_rgb.h5"))
        .output()
        .unwrap();
    let full = String::from_utf8_lossy(&full.stdout);
    let hits = json_hits(&env.ok(&["search", "x", "-k", "100", "--json"]));
    for k in hits.keys().filter(|k| k.0 == "aperio_rgb.svs") {
        assert!(
            full.contains(&format!("{}, {}", k.1, k.2)),
            "{k:?} in {full}"
        );
    }
    let mapping = fs::read_to_string(env.path().join("tr/slides.csv")).unwrap();
    assert!(
        mapping.contains("aperio_rgb,aperio_rgb.h5,") && mapping.contains("generic,generic.h5,"),
        "{mapping}"
    );

    // Again: a finished export is not overwritten without --replace.
    let out = env.run(&["export", "--format", "trident", "tr"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));
    stderr_ok(&env, &["export", "--format", "trident", "tr", "--replace"]);

    env.ok(&["export", "--format", "clam", "cl"]);
    h5_header(&env.path().join("cl/h5_files/generic.h5"));
    // Someone else's .h5 files: refused, with or without --replace, and kept.
    fs::create_dir_all(env.path().join("theirs")).unwrap();
    fs::write(env.path().join("theirs/slide.h5"), b"not ours").unwrap();
    for extra in [&[][..], &["--replace"][..]] {
        let out = env.run(&[&["export", "--format", "trident", "theirs"][..], extra].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("never deletes"),
            "{err}"
        );
    }
    assert_eq!(
        fs::read(env.path().join("theirs/slide.h5")).unwrap(),
        b"not ours"
    );
    // Format options of the other layout are refused.
    let out = env.run(&["export", "--format", "clam", "x", "--relative"]);
    assert!(!out.status.success() && !env.path().join("x").exists());
}

#[test]
fn a_killed_h5_export_never_looks_complete_and_resumes() {
    if !hdf5_installed() {
        return;
    }
    let env = TestEnv::new();
    slides(&env);
    env.ok(&["index", "s", "-q"]);
    let mut cmd = env.plip();
    cmd.args(["export", "--format", "trident", "tr"])
        .env("PLIP_FAILPOINT", "h5-export-before-rename:0");
    // Stopped with the first slide's file written under its temporary name: kill -9.
    crate::common::PausedRun::start_command(cmd).kill();
    let marker: serde_json::Value =
        serde_json::from_slice(&fs::read(env.path().join("tr/plip-export.json")).unwrap()).unwrap();
    assert_eq!(marker["complete"], false);
    let names: Vec<String> = fs::read_dir(env.path().join("tr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "aperio_rgb.h5" || n == "slides.csv"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with(".aperio_rgb.h5.tmp-")),
        "{names:?}"
    );
    // Without --resume or --replace it is refused; --resume finishes it cleanly.
    let out = env.run(&["export", "--format", "trident", "tr"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    stderr_ok(&env, &["export", "--format", "trident", "tr", "--resume"]);
    let mut names: Vec<String> = fs::read_dir(env.path().join("tr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aperio_rgb.h5",
            "generic.h5",
            "plip-export.json",
            "slides.csv"
        ]
    );
    h5_header(&env.path().join("tr/aperio_rgb.h5"));
}

/// Every stored vector of slide `name`, by (x, y, w, h), from the clip-retrieval export.
fn stored_vectors(env: &TestEnv, name: &str) -> BTreeMap<(i64, i64, i64, i64), Vec<f32>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let out = env.path().join("ex");
    let _ = fs::remove_dir_all(&out);
    env.ok(&["export", "ex"]);
    let (values, _, dim) =
        read_npy_f32(&fs::read(out.join("img_emb/img_emb_0.npy")).unwrap()).unwrap();
    let reader =
        SerializedFileReader::new(fs::File::open(out.join("metadata/metadata_0.parquet")).unwrap())
            .unwrap();
    let mut map = BTreeMap::new();
    for (i, row) in reader.get_row_iter(None).unwrap().enumerate() {
        let row = row.unwrap();
        if row.get_string(0).unwrap().ends_with(&format!("/{name}")) {
            let g = |j: usize| row.get_long(j).unwrap();
            map.insert(
                (g(1), g(2), g(3), g(4)),
                values[i * dim..(i + 1) * dim].to_vec(),
            );
        }
    }
    map
}

#[test]
fn coords_files_of_trident_and_clam_give_exactly_their_patches() {
    if !hdf5_installed() {
        return;
    }
    let env = TestEnv::new();
    slides(&env);
    let coords = fixtures().join("slides/coords");
    let golden: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(coords.join("golden.json")).unwrap()).unwrap();
    let check = |slide: &str| {
        let stored = stored_vectors(&env, slide);
        let want: Vec<&serde_json::Value> = golden.iter().filter(|g| g["slide"] == slide).collect();
        let keys: BTreeSet<_> = want
            .iter()
            .map(|g| {
                let n = |k: &str| g[k].as_i64().unwrap();
                (n("x"), n("y"), n("w"), n("h"))
            })
            .collect();
        assert_eq!(
            stored.keys().copied().collect::<BTreeSet<_>>(),
            keys,
            "{slide}"
        );
        for g in want {
            let n = |k: &str| g[k].as_i64().unwrap();
            let reference: Vec<f32> = g["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let c = cosine(&stored[&(n("x"), n("y"), n("w"), n("h"))], &reference);
            assert!(
                c >= 0.9995,
                "{slide} patch {},{}: cosine {c} to OpenSlide + Pillow + transformers",
                n("x"),
                n("y")
            );
        }
    };
    let trident = coords.join("trident");
    let err = stderr_ok(&env, &["index", "s", "--coords", trident.to_str().unwrap()]);
    assert!(
        err.contains("no coordinate file for 1 of 2 slide(s)") && err.contains("generic.tiff"),
        "{err}"
    );
    assert!(
        err.contains("missing_slide_patches.h5"),
        "a file naming no slide is said: {err}"
    );
    assert!(
        err.contains("1 of the 4 patch(es)") && err.contains("2000,0"),
        "{err}"
    );
    check("aperio_rgb.svs");
    // A later run without --coords keeps them; one with CLAM's folder adds generic's.
    let err = stderr_ok(&env, &["index", "s"]);
    assert!(err.contains("0 updated"), "{err}");
    let clam = coords.join("clam");
    stderr_ok(&env, &["index", "s", "--coords", clam.to_str().unwrap()]);
    check("aperio_rgb.svs");
    check("generic.tiff");
    // A folder that is not there: refused before anything is written.
    let out = env.run(&["index", "s", "--coords", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--coords") && err.contains("nope"),
        "{err}"
    );
}
