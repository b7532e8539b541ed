//! Unit tests of the detector's parts on views built in code; whole slides from
//! `fixtures/slides/tissue/` are tested in `source/slide/tests.rs`.

use super::classify::{artifact, tissue, Artifact};
use super::*;

#[test]
fn saturation_matches_opencv_formula() {
    let s = saturation(&[255, 0, 0, 0, 0, 0, 200, 100, 50, 10, 10, 10]);
    assert_eq!(s, vec![255, 0, 191, 0]);
}

#[test]
fn fraction_uses_pixel_centres() {
    let m = TissueMask::from_mask(4, 2, 10.0, 10.0, vec![1, 1, 0, 0, 1, 1, 0, 0]);
    assert_eq!(m.fraction(0.0, 0.0, 20.0, 20.0), 1.0);
    assert_eq!(m.fraction(0.0, 0.0, 40.0, 20.0), 0.5);
    assert_eq!(m.fraction(20.0, 0.0, 20.0, 20.0), 0.0);
    // smaller than a mask pixel: the pixel under the centre
    assert_eq!(m.fraction(1.0, 1.0, 2.0, 2.0), 1.0);
    assert_eq!(m.fraction(1000.0, 0.0, 5.0, 5.0), 0.0);
}

#[test]
fn fraction_counts_tissue_label_only() {
    let m = TissueMask::from_mask(4, 1, 10.0, 10.0, vec![1, 2, 2, 0]);
    assert_eq!(m.fraction(0.0, 0.0, 40.0, 10.0), 0.25);
    assert_eq!(m.fraction(12.0, 2.0, 2.0, 2.0), 0.0);
}

/// Absorption of a stain vector at concentration `c`.
fn od(v: [f32; 3], c: f32) -> [f32; 3] {
    v.map(|x| x * c)
}

const HEMATOXYLIN: [f32; 3] = [0.650, 0.704, 0.286];
const EOSIN: [f32; 3] = [0.072, 0.990, 0.105];
const DAB: [f32; 3] = [0.268, 0.570, 0.776];

#[test]
fn stains_are_tissue_and_never_ink() {
    for c in [0.08f32, 0.15, 0.3, 0.6, 1.0, 2.0, 3.0] {
        for (name, v) in [("H", HEMATOXYLIN), ("E", EOSIN), ("DAB", DAB)] {
            assert_eq!(artifact(od(v, c)), None, "{name} at {c}");
            assert!(tissue(od(v, c), 0.02), "{name} at {c}");
        }
        let mix: [f32; 3] = std::array::from_fn(|k| HEMATOXYLIN[k] * c + EOSIN[k] * c * 0.7);
        assert_eq!(artifact(mix), None, "H&E at {c}");
        let ihc: [f32; 3] = std::array::from_fn(|k| HEMATOXYLIN[k] * c * 0.5 + DAB[k] * c);
        assert_eq!(artifact(ihc), None, "IHC at {c}");
    }
}

#[test]
fn ink_colours_are_artifacts_and_glass_is_nothing() {
    let blue = [1.2f32, 0.8, 0.2];
    let pure_blue = [1.5f32, 1.4, 0.15];
    let green = [0.9f32, 0.3, 0.8];
    let red = [0.15f32, 1.3, 1.1];
    let black = [1.6f32, 1.55, 1.5];
    for c in [0.5f32, 1.0, 2.0] {
        assert_eq!(artifact(od(blue, c)), Some(Artifact::BlueInk), "blue {c}");
        assert_eq!(
            artifact(od(pure_blue, c)),
            Some(Artifact::BlueInk),
            "pure {c}"
        );
        assert_eq!(
            artifact(od(green, c)),
            Some(Artifact::GreenInk),
            "green {c}"
        );
        assert_eq!(artifact(od(black, c)), Some(Artifact::Neutral), "black {c}");
        assert!(!tissue(od(black, c), 0.03), "black {c}");
    }
    assert_eq!(artifact(od(red, 1.0)), Some(Artifact::RedInk));
    // glass, a darker (neutral) border and noise: neither tissue nor artifact
    for d in [[0.0f32; 3], [0.2, 0.2, 0.2], [0.01, -0.005, 0.0]] {
        assert_eq!(artifact(d), None, "{d:?}");
        assert!(!tissue(d, 0.02), "{d:?}");
    }
}

fn brute_dilate(m: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut any = 0;
            for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                    any |= m[yy * w + xx];
                }
            }
            out[y * w + x] = any;
        }
    }
    out
}

#[test]
fn dilate_and_erode_match_brute_force() {
    let (w, h) = (23, 17);
    let m: Vec<u8> = (0..w * h)
        .map(|i| u8::from((i * 7919 + 3) % 11 < 3))
        .collect();
    for r in 0..4 {
        assert_eq!(
            morph::dilate(&m, w, h, r),
            brute_dilate(&m, w, h, r),
            "r={r}"
        );
        let inv: Vec<u8> = m.iter().map(|v| v ^ 1).collect();
        let want: Vec<u8> = brute_dilate(&inv, w, h, r).iter().map(|v| v ^ 1).collect();
        assert_eq!(morph::erode(&m, w, h, r), want, "r={r}");
    }
}

#[test]
fn holes_fill_only_when_tissue_surrounds_them() {
    // a 9x9 ring of tissue around a 3x3 hole; then the same with an ink pixel on the ring
    let (w, h) = (11, 11);
    let mut labels = vec![BACKGROUND; w * h];
    for y in 1..10 {
        for x in 1..10 {
            if !(4..7).contains(&x) || !(4..7).contains(&y) {
                labels[y * w + x] = TISSUE;
            }
        }
    }
    let mut filled = labels.clone();
    morph::fill_holes(&mut filled, w, h, 20);
    assert_eq!(filled[5 * w + 5], TISSUE);
    assert_eq!(filled[0], BACKGROUND);
    let mut small = labels.clone();
    morph::fill_holes(&mut small, w, h, 9);
    assert_eq!(
        small[5 * w + 5],
        BACKGROUND,
        "a hole of 9 px is not under 9"
    );
    let mut inked = labels.clone();
    inked[3 * w + 5] = ARTIFACT;
    morph::fill_holes(&mut inked, w, h, 20);
    assert_eq!(
        inked[5 * w + 5],
        BACKGROUND,
        "glass next to ink stays glass"
    );
    morph::drop_specks(&mut labels, w, h, TISSUE, 100);
    assert!(labels.iter().all(|&v| v == BACKGROUND));
}

/// A synthetic view: tinted, vignetted glass; a disc of pale eosin-only stroma; a disc of
/// dark DAB with faint hematoxylin around it; a band of blue ink on the glass.
fn synthetic_view(w: usize, h: usize) -> Vec<u8> {
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w as f32 - 0.5, y as f32 / h as f32 - 0.5);
            let illum = 1.0 - 0.5 * (u * u + v * v);
            let glass = [236.0f32, 228.0, 196.0].map(|g| g * illum);
            let disc = |cx: f32, cy: f32, r: f32| (u - cx).powi(2) + (v - cy).powi(2) < r * r;
            let mut d = [0f32; 3];
            if disc(-0.2, 0.0, 0.15) {
                d = od(EOSIN, 0.12);
            }
            if disc(0.2, 0.0, 0.2) {
                d = od(HEMATOXYLIN, 0.12);
                if disc(0.2, 0.0, 0.08) {
                    d = std::array::from_fn(|k| d[k] + DAB[k] * 1.5);
                }
            }
            if (0.3..0.38).contains(&v) {
                d = [1.1, 0.75, 0.2];
            }
            for k in 0..3 {
                rgb[(y * w + x) * 3 + k] = (glass[k] * (-d[k]).exp()).round() as u8;
            }
        }
    }
    rgb
}

#[test]
fn pale_stain_on_tinted_vignetted_glass_is_tissue_and_ink_is_not() {
    let (w, h) = (200, 160);
    let rgb = synthetic_view(w, h);
    let at = |seg: &Segmentation, u: f32, v: f32| {
        let x = ((u + 0.5) * w as f32) as usize;
        let y = ((v + 0.5) * h as f32) as usize;
        seg.labels[y * w + x]
    };
    let seg = segment(&rgb, w, h, 16.0, &DetectOptions::default());
    assert_eq!(at(&seg, -0.2, 0.0), TISSUE, "pale eosin stroma");
    assert_eq!(
        at(&seg, 0.2, 0.15),
        TISSUE,
        "faint hematoxylin counterstain"
    );
    assert_eq!(at(&seg, 0.2, 0.0), TISSUE, "dark DAB");
    assert_eq!(at(&seg, -0.45, -0.45), BACKGROUND, "vignetted corner");
    assert_eq!(at(&seg, 0.0, -0.3), BACKGROUND, "tinted glass");
    assert_eq!(at(&seg, -0.4, 0.34), ARTIFACT, "blue ink");
    let keep = segment(
        &rgb,
        w,
        h,
        16.0,
        &DetectOptions {
            keep_artifacts: true,
        },
    );
    // the ink has the chroma of a stain, so the tissue rule calls it tissue
    assert_eq!(at(&keep, -0.4, 0.34), TISSUE, "blue ink kept");
    assert_eq!(at(&keep, 0.2, 0.0), TISSUE);
}

#[test]
fn dark_stain_never_moves_the_tissue_threshold() {
    // glass with a faint hematoxylin square; then the same with a large, dark DAB area
    let (w, h) = (160, 120);
    let view = |dab: bool| -> Vec<u8> {
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let mut d = [0f32; 3];
                if (20..60).contains(&x) && (20..100).contains(&y) {
                    d = od(HEMATOXYLIN, 0.1);
                }
                if dab && (90..150).contains(&x) && (10..110).contains(&y) {
                    d = std::array::from_fn(|k| HEMATOXYLIN[k] * 0.3 + DAB[k] * 2.0);
                }
                for k in 0..3 {
                    rgb[(y * w + x) * 3 + k] = (241.0 * (-d[k]).exp()).round() as u8;
                }
            }
        }
        rgb
    };
    let opts = DetectOptions::default();
    let plain = segment(&view(false), w, h, 16.0, &opts);
    let dark = segment(&view(true), w, h, 16.0, &opts);
    assert_eq!(plain.chroma_threshold, dark.chroma_threshold);
    for y in 20..100 {
        for x in 20..60 {
            assert_eq!(plain.labels[y * w + x], TISSUE, "faint H at {x},{y}");
            assert_eq!(
                dark.labels[y * w + x],
                TISSUE,
                "faint H beside DAB at {x},{y}"
            );
        }
    }
    assert_eq!(dark.labels[60 * w + 120], TISSUE, "the DAB itself");
}

/// A rectangle of a fixture slide and what is in it (`fixtures/slides/tissue/zones.json`).
struct Zone {
    what: String,
    rect: [f64; 4],
}

fn tissue_fixture(name: &str, keep_artifacts: bool) -> (TissueMask, Vec<Zone>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/slides/tissue");
    let slide = Slide::open(&dir.join(name), &Default::default()).unwrap();
    let mask = detect(&slide, &DetectOptions { keep_artifacts }).unwrap();
    let zones: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("zones.json")).unwrap()).unwrap();
    let zones = zones[name]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| Zone {
            what: z["what"].as_str().unwrap().to_string(),
            rect: ["x", "y", "w", "h"].map(|k| z[k].as_f64().unwrap()),
        })
        .collect();
    (mask, zones)
}

/// Shares of background, tissue and artifact among the mask pixels whose centres lie in
/// `rect` shrunk by `margin` level-0 pixels on every side.
fn shares(m: &TissueMask, rect: [f64; 4], margin: f64) -> [f64; 3] {
    let [x, y, w, h] = rect;
    let (x0, x1) = (x + margin, x + w - margin);
    let (y0, y1) = (y + margin, y + h - margin);
    let mut n = [0usize; 3];
    for my in 0..m.height as usize {
        for mx in 0..m.width as usize {
            let cx = (mx as f64 + 0.5) * m.scale_x;
            let cy = (my as f64 + 0.5) * m.scale_y;
            if (x0..x1).contains(&cx) && (y0..y1).contains(&cy) {
                n[usize::from(m.data[my * m.width as usize + mx]).min(2)] += 1;
            }
        }
    }
    let total = n.iter().sum::<usize>().max(1) as f64;
    n.map(|v| v as f64 / total)
}

/// Every tissue zone at least 95 % tissue and every glass zone at most 2 %.
fn check_tissue_and_glass(name: &str) {
    let (m, zones) = tissue_fixture(name, false);
    for z in &zones {
        let s = shares(&m, z.rect, 24.0);
        match z.what.as_str() {
            "tissue" => assert!(s[1] >= 0.95, "{name}: tissue zone {:?}: {s:?}", z.rect),
            "glass" => assert!(s[1] <= 0.02, "{name}: glass zone {:?}: {s:?}", z.rect),
            _ => {}
        }
    }
}

#[test]
fn pale_stroma_and_fat_are_kept_and_tinted_vignetted_glass_dropped() {
    check_tissue_and_glass("he_tinted.svs");
}

#[test]
fn counterstain_only_is_kept_and_bluish_uneven_glass_and_dark_border_dropped() {
    check_tissue_and_glass("ihc_border.svs");
}

#[test]
fn faint_stain_is_tissue() {
    check_tissue_and_glass("he_faint.svs");
}

#[test]
fn each_ink_colour_is_an_artifact_and_no_tile_of_it_is_kept() {
    check_tissue_and_glass("inks.svs");
    let (m, zones) = tissue_fixture("inks.svs", false);
    let inks: Vec<&Zone> = zones
        .iter()
        .filter(|z| z.what.starts_with("ink:"))
        .collect();
    assert_eq!(inks.len(), 4);
    for z in &inks {
        let s = shares(&m, z.rect, 16.0);
        assert!(s[2] >= 0.9, "{}: {s:?}", z.what);
        // a tile inside the ink holds no tissue
        let [x, y, w, h] = z.rect;
        assert_eq!(
            m.fraction(x + 8.0, y + 8.0, w - 16.0, h - 16.0),
            0.0,
            "{}",
            z.what
        );
    }
    // --keep-artifacts: coloured ink has a stain's chroma, so it stays as tissue; black
    // ink has none and stays an artifact
    let (k, _) = tissue_fixture("inks.svs", true);
    for z in &inks {
        let s = shares(&k, z.rect, 16.0);
        if z.what == "ink:black" {
            assert!(s[2] >= 0.9, "kept {}: {s:?}", z.what);
        } else {
            assert!(s[1] >= 0.9, "kept {}: {s:?}", z.what);
        }
    }
}

#[test]
fn slide_covered_by_tissue_without_glass_is_all_tissue() {
    let (w, h) = (64, 48);
    let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 110, 170]).collect();
    let seg = segment(&rgb, w, h, 16.0, &DetectOptions::default());
    assert!(seg.labels.iter().all(|&v| v == TISSUE));
}
