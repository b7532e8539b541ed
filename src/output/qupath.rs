//! Scored tiles for the tools pathologists use: QuPath GeoJSON (`plip search
//! --geojson DIR`, `plip heatmap --geojson FILE`) and a plain CSV per slide (`--csv`),
//! for spreadsheets, R and WSInfer-style pipelines.
//!
//! **GeoJSON**, as QuPath 0.4+ writes and reads it ("Export objects as GeoJSON";
//! drag the file onto the open slide to import): a FeatureCollection with one Feature
//! per tile, `geometry` a closed Polygon ring of the tile's box in level-0 pixels,
//! origin top-left, integer coordinates, never a one-element MultiPolygon;
//! `properties.objectType = "tile"`, `properties.measurements` one number per query
//! (`"plip: tumor tissue": 0.2931`, QuPath's measurement maps colour by it) plus
//! `"plip rank"` where the tile is a search hit, and hits carry a classification
//! (`"plip hit"`, yellow) so that they stand out. Rings run (x,y) → (x+w,y) →
//! (x+w,y+h) → (x,y+h) → (x,y), a positive shoelace area in raw numbers, as the
//! tissue outlines of [`super::geojson`].
//!
//! **CSV**: `x,y,width,height,level,mpp`, then one score column per query (named by
//! the query) and `rank` for search hits; one row per tile, numbers as printed by
//! `--json`.

use serde_json::{json, Map, Value};

use crate::index::Region;

/// QuPath's measurement name for a query's score.
pub(crate) fn measurement(label: &str) -> String {
    format!("plip: {label}")
}

/// The classification of search hits: yellow, like the top of the heatmap's scale.
const HIT_CLASS: &str = "plip hit";
const HIT_COLOR: [u8; 3] = [250, 210, 30];

/// One tile with its score for each query, and its rank when it is a search hit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScoredTile {
    pub(crate) region: Region,
    pub(crate) scores: Vec<f64>,
    pub(crate) rank: Option<usize>,
}

/// The closed ring of a level-0 box.
fn ring(r: &Region) -> Value {
    let (x0, y0, x1, y1) = (r.x, r.y, r.x + r.w, r.y + r.h);
    json!([[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]])
}

/// The tiles as a QuPath FeatureCollection; `labels[i]` names `scores[i]`.
pub(crate) fn tiles_geojson(labels: &[String], tiles: &[ScoredTile]) -> Value {
    let names: Vec<String> = labels.iter().map(|l| measurement(l)).collect();
    let features: Vec<Value> = tiles
        .iter()
        .map(|t| {
            let mut m = Map::new();
            for (name, s) in names.iter().zip(&t.scores) {
                m.insert(name.clone(), json!(s));
            }
            let mut props = Map::new();
            props.insert("objectType".into(), json!("tile"));
            if let Some(rank) = t.rank {
                m.insert("plip rank".into(), json!(rank));
                props.insert("name".into(), json!(format!("plip #{rank}")));
                props.insert(
                    "classification".into(),
                    json!({"name": HIT_CLASS, "color": HIT_COLOR}),
                );
            }
            props.insert("measurements".into(), Value::Object(m));
            json!({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": ring(&t.region)},
                "properties": props,
            })
        })
        .collect();
    json!({"type": "FeatureCollection", "features": features})
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The tiles as CSV (see the module docs); `rank` is a column when any tile has one.
pub(crate) fn tiles_csv(labels: &[String], tiles: &[ScoredTile]) -> String {
    let ranked = tiles.iter().any(|t| t.rank.is_some());
    let mut out = String::from("x,y,width,height,level,mpp");
    for l in labels {
        out.push(',');
        out.push_str(&csv_field(l));
    }
    if ranked {
        out.push_str(",rank");
    }
    out.push('\n');
    for t in tiles {
        let r = &t.region;
        out.push_str(&format!(
            "{},{},{},{},{},{}",
            r.x, r.y, r.w, r.h, r.level, r.mpp
        ));
        for s in &t.scores {
            out.push_str(&format!(",{s}"));
        }
        if ranked {
            out.push(',');
            if let Some(rank) = t.rank {
                out.push_str(&rank.to_string());
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(x: u64, score: f64, rank: Option<usize>) -> ScoredTile {
        ScoredTile {
            region: Region {
                x,
                y: 448,
                w: 448,
                h: 448,
                level: 1,
                mpp: 0.5,
            },
            scores: vec![score, -score],
            rank,
        }
    }

    #[test]
    fn features_are_closed_boxes_with_one_measurement_per_query() {
        let labels = vec!["tumor tissue".to_string(), "fat".to_string()];
        let v = tiles_geojson(&labels, &[tile(0, 0.25, Some(1)), tile(448, 0.125, None)]);
        let f = v["features"].as_array().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0]["geometry"]["type"], "Polygon");
        let ring = f[0]["geometry"]["coordinates"][0].as_array().unwrap();
        assert_eq!(ring.len(), 5);
        assert_eq!(ring[0], ring[4]);
        assert_eq!(ring[2], json!([448, 896]));
        let m = &f[0]["properties"]["measurements"];
        assert_eq!(m["plip: tumor tissue"], 0.25);
        assert_eq!(m["plip: fat"], -0.25);
        assert_eq!(m["plip rank"], 1);
        assert_eq!(f[0]["properties"]["objectType"], "tile");
        assert_eq!(f[0]["properties"]["classification"]["name"], "plip hit");
        assert!(f[1]["properties"].get("classification").is_none());
        assert!(f[1]["properties"]["measurements"]
            .get("plip rank")
            .is_none());
    }

    #[test]
    fn csv_has_the_region_then_a_column_per_query() {
        let labels = vec!["a, b".to_string(), "c".to_string()];
        let csv = tiles_csv(&labels, &[tile(0, 0.5, Some(2)), tile(448, 0.25, None)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "x,y,width,height,level,mpp,\"a, b\",c,rank");
        assert_eq!(lines[1], "0,448,448,448,1,0.5,0.5,-0.5,2");
        assert_eq!(lines[2], "448,448,448,448,1,0.5,0.25,-0.25,");
        let plain = tiles_csv(&labels, &[tile(0, 0.5, None)]);
        assert!(!plain.lines().next().unwrap().ends_with("rank"));
    }
}
