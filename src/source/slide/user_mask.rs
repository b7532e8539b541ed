//! A user's own tissue mask (`--tissue-mask DIR`), read in place of tissue detection:
//! a GeoJSON drawn or corrected in QuPath (or exported by another tool), or a binary PNG
//! at any downsample.
//!
//! Files, for slide `a.svs`, looked up in this order: `DIR/a.svs.geojson`,
//! `DIR/a.geojson`, `DIR/a.svs.png`, `DIR/a.png` ([`find`]).
//!
//! * GeoJSON: a FeatureCollection (or one Feature, a list of Features, or a bare
//!   geometry) of Polygons and MultiPolygons in level-0 pixels, origin top-left, as
//!   QuPath exports them (and `plip tiles --geojson` writes them). A feature whose
//!   classification (`properties.classification.name`, or a plain string) is
//!   `Artifact` is an exclusion labelled artifact; `Ignore*`, `Other` and
//!   `Background` are exclusions labelled glass; any other class, or none, is tissue.
//!   Each polygon is filled even-odd (so its holes stay holes) at the centres of a grid
//!   of at most [`MAX_SIDE`] pixels per side; exclusions win over tissue.
//! * PNG: any size; its scale to level 0 is the slide's size over the PNG's, per axis
//!   (the two must agree within 10 %, or the PNG is for another slide). Nonzero is
//!   tissue. A PNG larger than [`MAX_SIDE`] is reduced by majority over blocks.
//!
//! Guarantees: a mask that cannot be used is an error naming the file and the fix,
//! never a panic; the mask's CRC32 is that of the bytes actually read, so the indexing
//! job can tell when the user edits it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::tissue::{TissueMask, ARTIFACT, BACKGROUND, TISSUE};

/// Longest side of a rasterised mask, in mask pixels.
pub(crate) const MAX_SIDE: u64 = 4096;

/// The mask file for `slide` in `dir`, if there is one.
pub(crate) fn find(dir: &Path, slide: &Path) -> Option<PathBuf> {
    candidates(dir, slide).into_iter().find(|p| p.is_file())
}

/// The file names [`find`] tries, in order.
pub(crate) fn candidates(dir: &Path, slide: &Path) -> Vec<PathBuf> {
    let name = slide
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = slide
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `x.ome.tiff`: the stem is `x.ome`; `x` is tried too.
    let short = stem.strip_suffix(".ome").map(str::to_string);
    let mut out = Vec::new();
    for ext in ["geojson", "png"] {
        for base in std::iter::once(&name)
            .chain(Some(&stem))
            .chain(short.as_ref())
        {
            let p = dir.join(format!("{base}.{ext}"));
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Reads the mask at `path` for a `width x height` (level-0) slide. Returns the mask and
/// the CRC32 of the file's bytes.
pub(crate) fn load(path: &Path, width: u64, height: u64) -> Result<(TissueMask, u32), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let crc = crc32fast::hash(&bytes);
    if width == 0 || height == 0 {
        return Err("the slide is empty".into());
    }
    let is_png = bytes.starts_with(b"\x89PNG");
    let mask = if is_png {
        from_png(&bytes, width, height)?
    } else {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!("neither a PNG nor valid GeoJSON ({e}); export it from QuPath with File > Export objects as GeoJSON")
        })?;
        from_geojson(&v, width, height)?
    };
    Ok((mask, crc))
}

/// A binary PNG: nonzero is tissue.
fn from_png(bytes: &[u8], width: u64, height: u64) -> Result<TissueMask, String> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .map_err(|e| format!("not a readable PNG: {e}"))?
        .to_luma8();
    let (pw, ph) = (u64::from(img.width()), u64::from(img.height()));
    if pw == 0 || ph == 0 {
        return Err("the PNG is empty".into());
    }
    let (sx, sy) = (width as f64 / pw as f64, height as f64 / ph as f64);
    if (sx / sy - 1.0).abs() > 0.1 {
        return Err(format!(
            "the PNG is {pw}x{ph}, not the shape of the {width}x{height} slide; a mask PNG \
             covers the whole slide at one downsample"
        ));
    }
    // Reduce a large PNG by an integer factor, a block being tissue when most of it is.
    let f = pw.max(ph).div_ceil(MAX_SIDE).max(1);
    let (mw, mh) = (pw.div_ceil(f), ph.div_ceil(f));
    let mut data = vec![BACKGROUND; (mw * mh) as usize];
    if f == 1 {
        for (d, p) in data.iter_mut().zip(img.as_raw()) {
            *d = if *p != 0 { TISSUE } else { BACKGROUND };
        }
    } else {
        let mut count = vec![(0u32, 0u32); (mw * mh) as usize];
        for (y, row) in img.as_raw().chunks_exact(pw as usize).enumerate() {
            for (x, &p) in row.iter().enumerate() {
                let c = &mut count[(y as u64 / f * mw + x as u64 / f) as usize];
                c.0 += u32::from(p != 0);
                c.1 += 1;
            }
        }
        for (d, (on, all)) in data.iter_mut().zip(count) {
            if 2 * on >= all && on > 0 {
                *d = TISSUE;
            }
        }
    }
    let scale_x = width as f64 / pw as f64 * f as f64;
    let scale_y = height as f64 / ph as f64 * f as f64;
    Ok(TissueMask::from_mask(
        mw as u32, mh as u32, scale_x, scale_y, data,
    ))
}

/// What a feature's classification makes of its polygons.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Tissue,
    Artifact,
    Ignore,
}

fn kind_of(feature: &Value) -> Kind {
    let class = &feature["properties"]["classification"];
    let name = class
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| class.as_str())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if name == "artifact" || name == "artefact" {
        Kind::Artifact
    } else if name.starts_with("ignore") || name == "other" || name == "background" {
        Kind::Ignore
    } else {
        Kind::Tissue
    }
}

/// A polygon: its rings (outer first), level-0 coordinates.
type Polygon = Vec<Vec<(f64, f64)>>;

fn ring(v: &Value) -> Option<Vec<(f64, f64)>> {
    v.as_array()?
        .iter()
        .map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .collect()
}

fn polygon(v: &Value) -> Option<Polygon> {
    v.as_array()?.iter().map(ring).collect()
}

/// The polygons of one geometry (Polygon, MultiPolygon, GeometryCollection); other
/// geometries (points, lines) have no area and add none.
fn polygons(geometry: &Value, out: &mut Vec<Polygon>) -> Result<(), String> {
    let coords = &geometry["coordinates"];
    let bad = |t: &str| format!("a {t} with malformed coordinates");
    match geometry["type"].as_str().unwrap_or("") {
        "Polygon" => out.push(polygon(coords).ok_or_else(|| bad("Polygon"))?),
        "MultiPolygon" => {
            for p in coords.as_array().ok_or_else(|| bad("MultiPolygon"))? {
                out.push(polygon(p).ok_or_else(|| bad("MultiPolygon"))?);
            }
        }
        "GeometryCollection" => {
            for g in geometry["geometries"].as_array().into_iter().flatten() {
                polygons(g, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The features of a GeoJSON document, whatever its top-level shape.
fn features(v: &Value) -> Vec<Value> {
    match (v["type"].as_str(), v.as_array()) {
        (_, Some(list)) => list.clone(),
        (Some("FeatureCollection"), _) => v["features"].as_array().cloned().unwrap_or_default(),
        (Some("Feature"), _) => vec![v.clone()],
        (Some(_), _) => vec![serde_json::json!({ "type": "Feature", "geometry": v })],
        _ => Vec::new(),
    }
}

/// Sets the pixels of `grid` (`mw x mh` at `scale` level-0 px per pixel) whose centres
/// lie inside `poly` (even-odd over all its rings, so holes stay out) to `label`.
fn fill(grid: &mut [u8], mw: usize, mh: usize, scale: f64, poly: &Polygon, label: u8) {
    let ys = poly.iter().flatten().map(|p| p.1);
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return;
    }
    let j0 = ((lo / scale - 0.5).ceil().max(0.0) as usize).min(mh);
    let j1 = ((hi / scale - 0.5).ceil().max(0.0) as usize).min(mh);
    let mut xs = Vec::new();
    for j in j0..j1 {
        let yc = (j as f64 + 0.5) * scale;
        xs.clear();
        for r in poly {
            for k in 0..r.len() {
                // rings are closed in GeoJSON, but an open one is closed here
                let (a, b) = (r[k], r[(k + 1) % r.len()]);
                if (a.1 <= yc) != (b.1 <= yc) {
                    xs.push(a.0 + (yc - a.1) * (b.0 - a.0) / (b.1 - a.1));
                }
            }
        }
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            let i0 = ((pair[0] / scale - 0.5).ceil().max(0.0) as usize).min(mw);
            let i1 = ((pair[1] / scale - 0.5).ceil().max(0.0) as usize).min(mw);
            grid[j * mw + i0..j * mw + i1.max(i0)].fill(label);
        }
    }
}

/// Rasterises the GeoJSON's polygons onto a grid over the slide.
fn from_geojson(v: &Value, width: u64, height: u64) -> Result<TissueMask, String> {
    let feats = features(v);
    let mut shapes: Vec<(Kind, Polygon)> = Vec::new();
    for (i, f) in feats.iter().enumerate() {
        let mut ps = Vec::new();
        polygons(&f["geometry"], &mut ps).map_err(|e| format!("feature {i}: {e}"))?;
        let k = kind_of(f);
        shapes.extend(ps.into_iter().map(|p| (k, p)));
    }
    if shapes.is_empty() {
        return Err(
            "it holds no Polygon or MultiPolygon feature; draw the tissue as areas (QuPath: \
             brush, wand or polygon annotations), not points or lines"
                .into(),
        );
    }
    let scale = (width.max(height) as f64 / MAX_SIDE as f64).max(1.0);
    let mw = (width as f64 / scale).ceil() as usize;
    let mh = (height as f64 / scale).ceil() as usize;
    let mut data = vec![BACKGROUND; mw * mh];
    // Tissue first, then the exclusions over it.
    for (kind, label) in [
        (Kind::Tissue, TISSUE),
        (Kind::Ignore, BACKGROUND),
        (Kind::Artifact, ARTIFACT),
    ] {
        for (_, p) in shapes.iter().filter(|s| s.0 == kind) {
            fill(&mut data, mw, mh, scale, p, label);
        }
    }
    Ok(TissueMask::from_mask(
        mw as u32, mh as u32, scale, scale, data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> Value {
        json!([[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]])
    }

    fn feature(class: Option<&str>, coords: Value) -> Value {
        let mut f = json!({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coords},
                           "properties": {"objectType": "annotation"}});
        if let Some(c) = class {
            f["properties"]["classification"] = json!({"name": c, "color": [1, 2, 3]});
        }
        f
    }

    #[test]
    fn geojson_tissue_minus_artifact_and_holes() {
        let mut outer = square(0.0, 0.0, 800.0, 800.0);
        // a hole 200..400 in the tissue polygon
        outer.as_array_mut().unwrap().push(json!([
            [200.0, 200.0],
            [200.0, 400.0],
            [400.0, 400.0],
            [400.0, 200.0],
            [200.0, 200.0]
        ]));
        let fc = json!({"type": "FeatureCollection", "features": [
            feature(None, outer),
            feature(Some("Artifact"), square(600.0, 600.0, 800.0, 800.0)),
            feature(Some("Ignore*"), square(0.0, 600.0, 200.0, 800.0)),
        ]});
        let m = from_geojson(&fc, 1000, 1000).unwrap();
        assert_eq!((m.scale_x, m.width), (1.0, 1000));
        assert_eq!(m.fraction(0.0, 0.0, 200.0, 200.0), 1.0);
        assert_eq!(m.fraction(200.0, 200.0, 200.0, 200.0), 0.0, "the hole");
        assert_eq!(m.fraction(600.0, 600.0, 200.0, 200.0), 0.0, "artifact");
        assert_eq!(m.data[700 * 1000 + 700], ARTIFACT);
        assert_eq!(m.fraction(0.0, 600.0, 200.0, 200.0), 0.0, "ignored");
        assert_eq!(m.fraction(800.0, 0.0, 200.0, 200.0), 0.0, "outside");
        assert_eq!(m.fraction(400.0, 0.0, 200.0, 200.0), 1.0);
    }

    #[test]
    fn a_large_slide_is_rasterised_on_a_bounded_grid() {
        let fc = json!([feature(Some("Tumor"), square(0.0, 0.0, 50_000.0, 40_000.0))]);
        let m = from_geojson(&fc, 100_000, 80_000).unwrap();
        assert_eq!(m.width as u64, MAX_SIDE);
        assert_eq!(m.height, 3277);
        assert!((m.fraction(0.0, 0.0, 100_000.0, 80_000.0) - 0.25).abs() < 0.01);
    }

    #[test]
    fn geojson_without_areas_is_an_error() {
        let fc = json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}]});
        let e = from_geojson(&fc, 100, 100).unwrap_err();
        assert!(e.contains("no Polygon"), "{e}");
    }

    #[test]
    fn png_scale_is_slide_over_png_size() {
        let mut img = image::GrayImage::new(20, 10);
        for y in 0..10 {
            for x in 0..10 {
                img.put_pixel(x, y, image::Luma([255]));
            }
        }
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        let m = from_png(&bytes, 2000, 1000).unwrap();
        assert_eq!((m.scale_x, m.scale_y), (100.0, 100.0));
        assert_eq!(m.fraction(0.0, 0.0, 1000.0, 1000.0), 1.0);
        assert_eq!(m.fraction(1000.0, 0.0, 1000.0, 1000.0), 0.0);
        let e = from_png(&bytes, 1000, 2000).unwrap_err();
        assert!(e.contains("not the shape"), "{e}");
    }

    #[test]
    fn mask_names_are_tried_full_name_first() {
        let c = candidates(Path::new("m"), Path::new("/s/a.ome.tiff"));
        let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "m/a.ome.tiff.geojson",
                "m/a.ome.geojson",
                "m/a.geojson",
                "m/a.ome.tiff.png",
                "m/a.ome.png",
                "m/a.png"
            ]
        );
    }
}
