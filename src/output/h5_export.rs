//! `plip export --format trident|clam OUT`: one HDF5 feature file per slide, in the
//! layouts slide-level pipelines read (TRIDENT's slide encoders, CLAM's attention MIL).
//!
//! ```text
//! trident: OUT/<slide>.h5           features float32 (N, dim), coords int64 (N, 2)
//! clam:    OUT/h5_files/<slide>.h5  the same two datasets
//! both:    OUT/slides.csv           slide id -> h5 file, the slide's path, tiles, size
//!          OUT/plip-export.json     complete or not (see export_marker)
//! ```
//!
//! Row `i` of `features` is the stored embedding of the tile whose level-0 top-left
//! corner is row `i` of `coords` (the `x, y` of `plip search --json`), in the index's
//! order. The attributes are TRIDENT's (`IO.coords_to_h5`, `WSI.extract_patch_features`):
//! on `coords` `patch_size` (the model-input side, `--tile`), `patch_size_level0`,
//! `level0_magnification` (TRIDENT's rounding of the slide's µm/px: < 0.16 -> 80,
//! < 0.2 -> 60, < 0.3 -> 40, < 0.6 -> 20, < 1.2 -> 10, < 2.4 -> 5),
//! `target_magnification`, `overlap` (0), `name`, `level0_width`, `level0_height`, and
//! plip's own `mpp`, `level0_mpp`, `patch_level`; on `features` `encoder = "plip"`,
//! `name` and `model` (the model the index was built with). CLAM's files carry the
//! same (CLAM reads only the datasets).
//!
//! Slide ids are [`crate::output::slide_files`]'s (the file name without its last
//! extension, made safe and distinct, in the order of the stored paths); `slides.csv`
//! writes the mapping down. Whole images (not slides) have no coordinates and are left
//! out (counted in the summary).
//!
//! Every file is written under a temporary name and renamed into place, so a killed
//! export leaves the old file or the new one; the marker says whether the set is
//! complete. OUT may hold only what such an export writes; anything else is refused
//! before the first write.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::hdf5::{Attr, H5File};
use crate::index::paths;
use crate::index::{write_atomic, write_atomic_with, Index, Region, SlideRecord};
use crate::output::export_marker::{self, Marker, Mode};
use crate::output::qupath::csv_field;
use crate::output::slide_files::{distinct_ids, SLIDES_CSV};

/// Which pipeline's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum H5Layout {
    Trident,
    Clam,
}

impl H5Layout {
    fn name(self) -> &'static str {
        match self {
            H5Layout::Trident => "trident",
            H5Layout::Clam => "clam",
        }
    }

    /// The folder, under OUT, that holds the `.h5` files.
    fn subdir(self) -> &'static str {
        match self {
            H5Layout::Trident => "",
            H5Layout::Clam => "h5_files",
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Default)]
pub(crate) struct H5Summary {
    pub(crate) slides: usize,
    pub(crate) tiles: usize,
    /// Whole images left out (they have no coordinates).
    pub(crate) images_left_out: usize,
    /// Files kept from an interrupted export (`--resume`).
    pub(crate) resumed: usize,
}

/// One slide's rows, gathered from the index.
struct SlideRows<'a> {
    stored: &'a str,
    record: Option<&'a SlideRecord>,
    regions: Vec<Region>,
    vectors: Vec<&'a [f32]>,
}

/// TRIDENT's magnification for a level-0 resolution (`WSI._fetch_magnification`).
pub(crate) fn magnification(mpp: f64) -> Option<i64> {
    [
        (0.16, 80),
        (0.2, 60),
        (0.3, 40),
        (0.6, 20),
        (1.2, 10),
        (2.4, 5),
    ]
    .iter()
    .find(|(below, _)| mpp < *below)
    .map(|&(_, mag)| mag)
}

/// Writes every slide of `index` to `out` (see the module docs).
pub(crate) fn export(index: &Index, out: &Path, layout: H5Layout, mode: Mode) -> Result<H5Summary> {
    let mut summary = H5Summary::default();
    let mut slides: BTreeMap<&str, SlideRows> = BTreeMap::new();
    for (entry, vector) in index.iter() {
        let Some(region) = entry.region else {
            summary.images_left_out += 1;
            continue;
        };
        let rows = slides
            .entry(entry.path.as_str())
            .or_insert_with(|| SlideRows {
                stored: &entry.path,
                record: index.slides().get(&entry.path),
                regions: Vec::new(),
                vectors: Vec::new(),
            });
        rows.regions.push(region);
        rows.vectors.push(vector);
    }
    let ids = distinct_ids(slides.keys().copied());
    let format = format!("plip-export-{}", layout.name());
    let mut marker = Marker::new(index.commit_id(), 0, false);
    marker.format = format.clone();
    let h5_dir = out.join(layout.subdir());
    let names: Vec<String> = ids.iter().map(|id| format!("{id}.h5")).collect();
    let keep_done = export_marker::prepare_files(out, layout.subdir(), mode, &marker)?;
    fs::create_dir_all(&h5_dir).with_context(|| format!("creating {}", h5_dir.display()))?;
    marker.store(out)?;
    let model = index.model();
    let mut csv = String::from("slide_id,h5,path,tiles,width,height,mpp\n");
    for ((rows, id), name) in slides.values().zip(&ids).zip(&names) {
        let target = h5_dir.join(name);
        if keep_done && target.is_file() {
            summary.resumed += 1;
        } else {
            write_atomic_with(&h5_dir, name, |tmp| {
                write_slide(tmp, rows, id, &model.source).map_err(std::io::Error::other)?;
                fs::File::open(tmp)?.sync_all()?;
                crate::index::failpoint("h5-export-before-rename");
                Ok(())
            })
            .with_context(|| format!("writing {}", target.display()))?;
        }
        let rel = Path::new(layout.subdir()).join(name);
        let (w, h, mpp) = rows
            .record
            .map_or((String::new(), String::new(), String::new()), |r| {
                (r.width.to_string(), r.height.to_string(), r.mpp.to_string())
            });
        let path = paths::resolve(&index.root(), rows.stored);
        csv.push_str(&format!(
            "{},{},{},{},{w},{h},{mpp}\n",
            csv_field(id),
            csv_field(&rel.to_string_lossy()),
            csv_field(&path.to_string_lossy()),
            rows.regions.len(),
        ));
        summary.slides += 1;
        summary.tiles += rows.regions.len();
    }
    write_atomic(out, SLIDES_CSV, csv.as_bytes())?;
    marker.complete = true;
    marker.parts = summary.slides;
    marker.rows = summary.tiles;
    marker.dim = model.dim;
    marker.store(out)?;
    Ok(summary)
}

/// One slide's `.h5` file at `path`.
fn write_slide(path: &Path, rows: &SlideRows, id: &str, model: &str) -> Result<()> {
    let n = rows.regions.len();
    let dim = rows.vectors.first().map_or(0, |v| v.len());
    let features: Vec<f32> = rows
        .vectors
        .iter()
        .flat_map(|v| v.iter().copied())
        .collect();
    let coords: Vec<i64> = rows
        .regions
        .iter()
        .flat_map(|r| [r.x as i64, r.y as i64])
        .collect();
    let first = rows.regions[0];
    let level0_mpp = rows.record.map(|r| r.mpp);
    let tile = rows.record.map_or(
        // Without a record (an index from before records): the region's own scale.
        (first.w as f64 * level0_mpp.unwrap_or(first.mpp) / first.mpp).round() as i64,
        |r| i64::from(r.tiling.tile),
    );
    let mut attrs = vec![
        ("patch_size", Attr::Int(tile)),
        ("patch_size_level0", Attr::Int(first.w as i64)),
        ("overlap", Attr::Int(0)),
        ("name", Attr::Str(id.to_string())),
        ("mpp", Attr::Float(first.mpp)),
        ("patch_level", Attr::Int(i64::from(first.level))),
    ];
    if let Some(r) = rows.record {
        if let Some(mag) = magnification(r.mpp) {
            let target = (mag as f64 * tile as f64 / first.w as f64).round() as i64;
            attrs.push(("level0_magnification", Attr::Int(mag)));
            attrs.push(("target_magnification", Attr::Int(target)));
        }
        attrs.push(("level0_width", Attr::Int(r.width as i64)));
        attrs.push(("level0_height", Attr::Int(r.height as i64)));
        attrs.push(("level0_mpp", Attr::Float(r.mpp)));
    }
    let f = H5File::create(path)?;
    f.write_f32(
        "features",
        (n, dim),
        &features,
        &[
            ("encoder", Attr::Str("plip".into())),
            ("name", Attr::Str(id.to_string())),
            ("model", Attr::Str(model.to_string())),
        ],
    )?;
    f.write_i64("coords", (n, 2), &coords, &attrs)?;
    f.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnification_follows_tridents_rounding() {
        assert_eq!(magnification(0.2527), Some(40));
        assert_eq!(magnification(0.5), Some(20));
        assert_eq!(magnification(0.15), Some(80));
        assert_eq!(magnification(1.0), Some(10));
        assert_eq!(magnification(3.0), None);
    }
}
