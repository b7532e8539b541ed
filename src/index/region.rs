//! Items that are regions of a file: the tiles of a whole-slide image (issue 17).
//!
//! An indexed item is a file, or a square of a slide. Its identity is the path plus
//! the region `(x, y, w, h)` in level-0 pixels; the level read and its resolution
//! travel with it. Every tile of a slide carries the slide file's size, mtime and
//! CRC32, so change detection stays per slide.
//!
//! On disk the regions are an optional per-segment file, `seg-NNNNNN.reg` (framed like
//! every index file: magic, version, bincode `Vec<Option<Region>>` with one row per
//! entry, CRC32), named by the segment's manifest record. The `.meta` payload is not
//! changed, so an index written before regions existed, or one with images only, is
//! byte for byte what older plips wrote and read (`fixtures/compat/` checks that it
//! still opens). The manifest also records, per slide, what the run found
//! ([`SlideRecord`]) and the tiling settings the index was built with
//! ([`Tiling`]); both fields are absent when empty, so a manifest without slides
//! is unchanged too. A slide record also says how its tissue was found (detector
//! version, or the user's mask file and its CRC32), so an upgrade or an edited mask
//! re-tiles just that slide.

use super::*;

pub(crate) const REG_MAGIC: &[u8; 8] = b"PLIPREG\0";

/// A square (or rectangle) of a slide, in level-0 pixels, and how it was read.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Region {
    /// Left edge, level-0 pixels.
    pub x: u64,
    /// Top edge, level-0 pixels.
    pub y: u64,
    /// Width, level-0 pixels.
    pub w: u64,
    /// Height, level-0 pixels.
    pub h: u64,
    /// The pyramid level the pixels were read from.
    pub level: u32,
    /// Microns per pixel of the model input (level-0 mpp times `w / tile`).
    pub mpp: f64,
}

// `mpp` is never NaN (it comes from a validated resolution), so equality is total.
impl Eq for Region {}

/// The identity part of a region: `(x, y, w, h)`.
pub(crate) type RegionKey = (u64, u64, u64, u64);

impl Region {
    /// The identity part of the region.
    pub(crate) fn key(&self) -> RegionKey {
        (self.x, self.y, self.w, self.h)
    }
}

/// What a run found in one slide, for change detection and `plip info`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct SlideRecord {
    /// `aperio`, `generic-tiff`, `ome-tiff` or `openslide:<vendor>`.
    pub(crate) vendor: String,
    /// Level-0 size in pixels.
    pub(crate) width: u64,
    pub(crate) height: u64,
    /// Number of pyramid levels.
    pub(crate) levels: usize,
    /// Level-0 microns per pixel and where the value came from.
    pub(crate) mpp: f64,
    pub(crate) mpp_source: String,
    /// The level tiles are read from.
    pub(crate) level: usize,
    /// Tiles kept (tissue) out of the whole grid.
    pub(crate) tiles_kept: usize,
    pub(crate) tiles_total: usize,
    /// Kept tiles that could not be read (a corrupt stored tile under them).
    #[serde(default)]
    pub(crate) tiles_failed: usize,
    /// The tiling the tiles were cut with.
    pub(crate) tiling: Tiling,
    /// Every kept tile was embedded (or failed); false while a run is in the middle of
    /// the slide, so that the next run finishes it.
    pub(crate) complete: bool,
    /// The slide file's size, mtime (ns) and CRC32 when it was tiled.
    pub(crate) size: u64,
    pub(crate) mtime_ns: i128,
    pub(crate) crc32: u32,
    /// The tissue detector version that chose the tiles
    /// (`source::slide::tissue::DETECTOR_VERSION`); 1 in manifests written before it
    /// was recorded. A newer detector re-tiles the slide, keeping the tiles it keeps.
    #[serde(default = "detector_v1")]
    pub(crate) detector: u32,
    /// The user's mask file the tiles were chosen by (`--tissue-mask`), instead of
    /// detection; editing it re-tiles the slide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tissue_mask: Option<MaskRecord>,
    /// The coordinate file (TRIDENT's or CLAM's) the tiles were read from
    /// (`--coords`), instead of plip's grid; editing it re-tiles the slide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) coords: Option<MaskRecord>,
}

fn detector_v1() -> u32 {
    1
}

/// A user's tissue mask file, as a slide was tiled with it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MaskRecord {
    /// The file, absolute.
    pub(crate) file: String,
    /// Its CRC32.
    pub(crate) crc32: u32,
}

/// Writes the regions of a segment's entries, when any entry has one.
pub(crate) fn write_regions(
    dir: &Path,
    base: &str,
    entries: &[FileEntry],
) -> Result<Option<FileRef>> {
    if entries.iter().all(|e| e.region.is_none()) {
        return Ok(None);
    }
    let regions: Vec<Option<Region>> = entries.iter().map(|e| e.region).collect();
    let bytes =
        bincode::serde::encode_to_vec(&regions, bincode_config()).expect("regions serialize");
    write_framed(dir, &format!("{base}.reg"), REG_MAGIC, &bytes).map(Some)
}

/// Reads a segment's regions file into its entries.
pub(crate) fn read_regions(dir: &Path, r: &FileRef, entries: &mut [FileEntry]) -> Result<()> {
    let bytes = read_framed(dir, r, REG_MAGIC)?;
    let path = dir.join(&r.name);
    let (regions, _): (Vec<Option<Region>>, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode_config())
            .map_err(|e| corrupt(&path, format!("undecodable regions: {e}")))?;
    if regions.len() != entries.len() {
        return Err(corrupt(&path, "region count does not match the manifest"));
    }
    for (e, r) in entries.iter_mut().zip(regions) {
        e.region = r;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slide_record_from_before_detector_versions_reads_as_v1() {
        let old = serde_json::json!({
            "vendor": "aperio", "width": 1990, "height": 1500, "levels": 3, "mpp": 0.252,
            "mpp_source": "aperio-description", "level": 0, "tiles_kept": 5,
            "tiles_total": 12, "tiles_failed": 0,
            "tiling": {"mpp": 0.5, "tile": 224, "min_tissue": 0.5},
            "complete": true, "size": 10, "mtime_ns": 1, "crc32": 7
        });
        let mut r: SlideRecord = serde_json::from_value(old).unwrap();
        assert_eq!(r.detector, 1);
        assert_eq!(r.tissue_mask, None);
        r.detector = 2;
        r.tissue_mask = Some(MaskRecord {
            file: "/m/a.png".into(),
            crc32: 9,
        });
        let back: SlideRecord = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
