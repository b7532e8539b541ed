//! Seeing and correcting the tissue mask, and indexes made with an older detector
//! (issue 28, items 3 and 4): `plip tiles --geojson` read back as QuPath would,
//! `--tissue-mask DIR` (GeoJSON and PNG masks, missing and broken ones), and in-place
//! re-tiling after an edited mask or a detector upgrade, which embeds only the new
//! tiles and keeps the stored vectors of the others byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::common::{fixtures, TestEnv};

/// `s/a.svs`: the Aperio YCbCr fixture, 1990 x 1500 px at 0.252 µm/px, so a 4 x 3 grid
/// of 444-px tiles at the default tiling.
fn one_slide(env: &TestEnv) {
    fs::create_dir_all(env.path().join("s")).unwrap();
    fs::copy(
        fixtures().join("slides/aperio_ycbcr.svs"),
        env.path().join("s/a.svs"),
    )
    .unwrap();
}

fn manifest(env: &TestEnv) -> serde_json::Value {
    serde_json::from_slice(&fs::read(env.path().join(".plip/MANIFEST")).unwrap()).unwrap()
}

/// A 199 x 150 mask PNG (10 level-0 px per pixel) that is tissue for mask columns
/// `x0..x1`.
fn png_mask(path: &Path, x0: u32, x1: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::GrayImage::from_fn(199, 150, |x, _| {
        image::Luma([if (x0..x1).contains(&x) { 255 } else { 0 }])
    });
    img.save(path).unwrap();
}

/// Every stored vector of `path` by tile origin, as raw f32 bits (from `plip export`).
fn vectors(env: &TestEnv, path: &str) -> BTreeMap<(i64, i64), Vec<u32>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let out = env.path().join("ex");
    let _ = fs::remove_dir_all(&out);
    env.ok(&["export", "ex"]);
    let npy = fs::read(out.join("img_emb/img_emb_0.npy")).unwrap();
    let (values, _, dim) = crate::common::read_npy_f32(&npy).unwrap();
    let file = fs::File::open(out.join("metadata/metadata_0.parquet")).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let mut map = BTreeMap::new();
    for (i, row) in reader.get_row_iter(None).unwrap().enumerate() {
        let row = row.unwrap();
        // absolute paths in the export
        if row.get_string(0).unwrap().ends_with(&format!("/{path}")) {
            let v = values[i * dim..(i + 1) * dim].iter().map(|f| f.to_bits());
            map.insert(
                (row.get_long(1).unwrap(), row.get_long(2).unwrap()),
                v.collect(),
            );
        }
    }
    map
}

fn stderr_of(env: &TestEnv, args: &[&str]) -> String {
    let out = env.run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "plip {args:?}: {err}");
    err
}

/// Twice the shoelace area of a ring of `[x, y]` points.
fn area2(ring: &[serde_json::Value]) -> f64 {
    ring.windows(2)
        .map(|p| {
            let (x0, y0) = (p[0][0].as_f64().unwrap(), p[0][1].as_f64().unwrap());
            let (x1, y1) = (p[1][0].as_f64().unwrap(), p[1][1].as_f64().unwrap());
            x0 * y1 - x1 * y0
        })
        .sum()
}

#[test]
fn tiles_geojson_reads_back_as_qupath_annotations_and_as_a_tissue_mask() {
    let env = TestEnv::new();
    one_slide(&env);
    let err = stderr_of(
        &env,
        &[
            "tiles",
            "s/a.svs",
            "-o",
            "check.png",
            "--size",
            "300",
            "--geojson",
            "mask.geojson",
        ],
    );
    assert!(err.contains("drag it onto the slide in QuPath"), "{err}");
    // the picture: the thumbnail's width, a legend strip under it
    let (w, h) = image::image_dimensions(env.path().join("check.png")).unwrap();
    assert_eq!(w, 300);
    assert!(f64::from(h) > 300.0 * 1500.0 / 1990.0 + 10.0, "{h}");

    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(env.path().join("mask.geojson")).unwrap()).unwrap();
    assert_eq!(v["type"], "FeatureCollection");
    let features = v["features"].as_array().unwrap();
    assert!(!features.is_empty());
    for f in features {
        assert_eq!(f["type"], "Feature");
        assert_eq!(f["properties"]["objectType"], "annotation");
        let class = &f["properties"]["classification"];
        assert!(
            ["Tissue", "Artifact"].contains(&class["name"].as_str().unwrap()),
            "{f}"
        );
        assert_eq!(class["color"].as_array().unwrap().len(), 3);
        assert_eq!(
            f["geometry"]["type"], "Polygon",
            "no one-element MultiPolygon"
        );
        let rings = f["geometry"]["coordinates"].as_array().unwrap();
        for (i, ring) in rings.iter().enumerate() {
            let ring = ring.as_array().unwrap();
            assert!(ring.len() >= 5, "{ring:?}");
            assert_eq!(ring.first(), ring.last(), "closed ring");
            for p in ring {
                let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                assert!(
                    (0.0..=1990.0).contains(&x) && (0.0..=1500.0).contains(&y),
                    "{p}"
                );
            }
            // exterior positive, holes negative: one orientation throughout
            assert_eq!(area2(ring) > 0.0, i == 0, "ring {i} of {f}");
        }
    }

    // The same outlines, given back as the user's mask, keep the same tiles.
    let kept = |err: &str| {
        let i = err.find(" tiles kept").expect("the tiles line");
        err[..i].rsplit("; ").next().unwrap().to_string()
    };
    fs::create_dir_all(env.path().join("m")).unwrap();
    fs::copy(
        env.path().join("mask.geojson"),
        env.path().join("m/a.geojson"),
    )
    .unwrap();
    let again = stderr_of(
        &env,
        &["tiles", "s/a.svs", "-o", "c2.png", "--tissue-mask", "m"],
    );
    assert_eq!(kept(&again), kept(&err), "{again}\n{err}");
}

#[test]
fn an_edited_user_mask_retiles_in_place_and_reembeds_no_kept_tile() {
    let env = TestEnv::new();
    one_slide(&env);
    // mask columns 0..89: level-0 x < 890, the tile columns 0 and 1
    png_mask(&env.path().join("masks/a.png"), 0, 89);
    env.ok(&["index", "s", "--tissue-mask", "masks"]);
    let m = manifest(&env);
    let rec = &m["slides"]["s/a.svs"];
    assert_eq!(rec["tiles_kept"], 6);
    assert!(rec["tissue_mask"]["file"]
        .as_str()
        .unwrap()
        .ends_with("a.png"));
    assert!(m["tissue_masks"].as_str().unwrap().ends_with("masks"));
    let before = vectors(&env, "s/a.svs");
    let cols = |v: &BTreeMap<(i64, i64), Vec<u32>>| {
        let mut c: Vec<i64> = v.keys().map(|k| k.0 / 444).collect();
        c.dedup();
        c
    };
    assert_eq!(cols(&before), [0, 1]);

    // unchanged mask: nothing to do, and the folder is remembered
    let err = stderr_of(&env, &["index"]);
    assert!(
        err.contains("1 unchanged") && err.contains("(0 embedded"),
        "{err}"
    );

    // moved right by one tile column: 1 and 2
    png_mask(&env.path().join("masks/a.png"), 45, 134);
    let err = stderr_of(&env, &["index"]);
    assert!(
        err.contains("re-tiling 1 slide (tissue masks changed)"),
        "{err}"
    );
    assert!(
        err.contains("re-tiled 1 slide (tissue masks changed): +3 tiles, −3"),
        "{err}"
    );
    assert!(err.contains("(3 embedded"), "{err}");
    let after = vectors(&env, "s/a.svs");
    assert_eq!(cols(&after), [1, 2]);
    for (k, v) in &after {
        if k.0 / 444 == 1 {
            assert_eq!(Some(v), before.get(k), "kept tile {k:?} is byte-identical");
        }
    }
    assert_eq!(manifest(&env)["slides"]["s/a.svs"]["tiles_kept"], 3 * 2);

    // back to detection
    let err = stderr_of(&env, &["index", "--tissue-mask", "none"]);
    assert!(err.contains("re-tiling 1 slide"), "{err}");
    let m = manifest(&env);
    assert!(m.get("tissue_masks").is_none());
    assert!(m["slides"]["s/a.svs"].get("tissue_mask").is_none());
}

#[test]
fn an_index_from_an_older_detector_is_retiled_without_reembedding() {
    let env = TestEnv::new();
    one_slide(&env);
    let out = env
        .plip()
        .args(["index", "s"])
        .env("PLIP_TEST_DETECTOR_VERSION", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(manifest(&env)["slides"]["s/a.svs"]["detector"], 1);
    let before = vectors(&env, "s/a.svs");
    assert!(!before.is_empty());

    let err = stderr_of(&env, &["index", "s"]);
    let v = manifest(&env)["slides"]["s/a.svs"]["detector"]
        .as_u64()
        .unwrap();
    assert!(v >= 2, "{v}");
    assert!(
        err.contains(&format!("re-tiling 1 slide (tissue detector v{v})")),
        "{err}"
    );
    // the same detection: nothing added or removed, nothing embedded
    assert!(err.contains(": +0 tiles, −0"), "{err}");
    assert!(err.contains("(0 embedded"), "{err}");
    assert_eq!(vectors(&env, "s/a.svs"), before);
    let err = stderr_of(&env, &["index", "s"]);
    assert!(!err.contains("re-tiling"), "{err}");
}

#[test]
fn slides_without_a_mask_are_detected_and_a_broken_mask_keeps_the_slide_tiles() {
    let env = TestEnv::new();
    one_slide(&env);
    for n in ["b.svs", "c.svs"] {
        fs::copy(env.path().join("s/a.svs"), env.path().join("s").join(n)).unwrap();
    }
    png_mask(&env.path().join("masks/a.svs.png"), 0, 89);
    let err = stderr_of(&env, &["index", "s", "--tissue-mask", "masks"]);
    assert_eq!(err.matches("no mask for").count(), 1, "said once: {err}");
    assert!(err.contains("no mask for 2 slide(s)"), "{err}");
    let m = manifest(&env);
    assert_eq!(m["slides"]["s/a.svs"]["tiles_kept"], 6);
    assert!(m["slides"]["s/b.svs"].get("tissue_mask").is_none());

    // a broken mask: a warning naming it, the slide skipped, its tiles kept
    fs::write(env.path().join("masks/a.svs.png"), b"\x89PNG not really").unwrap();
    let err = stderr_of(&env, &["index", "s"]);
    assert!(
        err.contains("a.svs.png: cannot use this tissue mask"),
        "{err}"
    );
    assert!(err.contains("are kept as they were"), "{err}");
    assert!(err.contains("1 skipped"), "{err}");
    let m = manifest(&env);
    assert_eq!(m["slides"]["s/a.svs"]["tiles_kept"], 6);
    assert_eq!(vectors(&env, "s/a.svs").len(), 6);
}

#[test]
fn a_qupath_geojson_mask_keeps_the_tiles_inside_its_polygons() {
    let env = TestEnv::new();
    one_slide(&env);
    fs::create_dir_all(env.path().join("m")).unwrap();
    // tissue over tile columns 0-2 of row 0, minus an artifact over column 2
    let fc = serde_json::json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"objectType": "annotation",
            "classification": {"name": "Tumor", "color": [200, 0, 0]}},
         "geometry": {"type": "Polygon", "coordinates":
            [[[0, 0], [1332, 0], [1332, 444], [0, 444], [0, 0]]]}},
        {"type": "Feature", "properties": {"objectType": "annotation",
            "classification": {"name": "Artifact", "color": [0, 0, 0]}},
         "geometry": {"type": "MultiPolygon", "coordinates":
            [[[[888, 0], [1332, 0], [1332, 444], [888, 444], [888, 0]]]]}}
    ]});
    fs::write(env.path().join("m/a.geojson"), fc.to_string()).unwrap();
    env.ok(&["index", "s", "--tissue-mask", "m"]);
    let tiles: Vec<(i64, i64)> = vectors(&env, "s/a.svs").into_keys().collect();
    assert_eq!(tiles, [(0, 0), (444, 0)]);
}
