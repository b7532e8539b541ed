//! `plip tiles --geojson`: a slide's tissue and artifact outlines as a GeoJSON
//! FeatureCollection that QuPath opens by drag and drop, so that a pathologist can see
//! the mask on the slide, correct it, export it again and index with it
//! (`--tissue-mask`, read back by `source/slide/user_mask.rs`).
//!
//! The shape is what QuPath's own "Export objects as GeoJSON" writes: one Feature per
//! connected region (a Polygon, its holes as inner rings; never a one-element
//! MultiPolygon), `properties.objectType = "annotation"` and
//! `properties.classification = {"name": "Tissue" | "Artifact", "color": [r, g, b]}`.
//! Coordinates are level-0 pixels, origin top-left: the mask's pixel corners
//! ([`crate::source::slide::outline`]) times its scale, clamped to the slide. Rings
//! are closed; exteriors have a positive shoelace area in raw numbers and holes a
//! negative one (RFC 7946's right-hand rule, reading y as up).

use serde_json::{json, Value};

use crate::source::slide::outline::{self, Ring};
use crate::source::slide::tissue::{TissueMask, ARTIFACT, TISSUE};

/// Colours of the classes, as in the `plip tiles` picture.
pub(crate) const TISSUE_COLOR: [u8; 3] = [40, 170, 60];
/// Orange: far from eosin pink, haematoxylin blue and DAB brown.
pub(crate) const ARTIFACT_COLOR: [u8; 3] = [255, 140, 0];

/// The mask's outlines as a FeatureCollection over a `slide_w x slide_h` slide.
pub(crate) fn mask_features(mask: &TissueMask, slide_w: u64, slide_h: u64) -> Value {
    let (w, h) = (mask.width as usize, mask.height as usize);
    let scale = |r: &Ring| -> Value {
        r.iter()
            .map(|&(x, y)| {
                let x = (f64::from(x) * mask.scale_x).min(slide_w as f64);
                let y = (f64::from(y) * mask.scale_y).min(slide_h as f64);
                json!([round2(x), round2(y)])
            })
            .collect()
    };
    let mut features = Vec::new();
    for (label, name, color) in [
        (TISSUE, "Tissue", TISSUE_COLOR),
        (ARTIFACT, "Artifact", ARTIFACT_COLOR),
    ] {
        for o in outline::trace(&mask.data, w, h, label) {
            let rings: Vec<Value> = std::iter::once(&o.outer)
                .chain(&o.holes)
                .map(scale)
                .collect();
            features.push(json!({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": name, "color": color},
                },
            }));
        }
    }
    json!({"type": "FeatureCollection", "features": features})
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_region_has_its_level0_corners() {
        // 4x4 mask at 16 level-0 px per pixel, tissue at pixels 1..3, an artifact pixel
        let mut data = vec![0u8; 16];
        for (x, y) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
            data[y * 4 + x] = 1;
        }
        data[3 * 4 + 3] = 2;
        let m = TissueMask::from_mask(4, 4, 16.0, 16.0, data);
        let v = mask_features(&m, 64, 60);
        let f = v["features"].as_array().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0]["properties"]["classification"]["name"], "Tissue");
        assert_eq!(
            f[0]["geometry"]["coordinates"],
            json!([[
                [16.0, 16.0],
                [48.0, 16.0],
                [48.0, 48.0],
                [16.0, 48.0],
                [16.0, 16.0]
            ]])
        );
        // clamped to the 60 px slide height
        assert_eq!(f[1]["properties"]["classification"]["name"], "Artifact");
        assert_eq!(f[1]["geometry"]["coordinates"][0][2], json!([64.0, 60.0]));
    }
}
