//! Generic TIFF (OpenSlide's `openslide-vendor-generic-tiff.c`): any tiled TIFF or BigTIFF
//! pyramid, and (an extension) a big stripped single-page TIFF.
//!
//! Rules, as OpenSlide 4.0.1 applies them:
//!
//! * IFD 0 must be tiled; a later IFD is a level when it is tiled and its NewSubfileType
//!   has the reduced-image bit; levels are sorted by width, largest first;
//!   <https://github.com/openslide/openslide/blob/fe79a9713bef2bfd64bbfefd15704060764b1274/src/openslide-vendor-generic-tiff.c#L205-L266>
//! * the level-0 resolution is XResolution (and a YResolution) in inches or centimetres.
//!
//! The extension: a stripped IFD 0 (which OpenSlide refuses) is read with each strip as a
//! full-width tile, when a strip decodes to at most [`MAX_TILE_BYTES`] ([`first_page`]);
//! any other stripped IFD (a thumbnail, label or macro) is never a level.

use std::path::Path;

use super::super::error::SlideError;
use super::super::level::MAX_TILE_BYTES;
use super::super::tiffdir::{tiff_err, IfdInfo};
use super::super::MppSource;
use super::plausible_mpp;

/// The levels: IFD 0 and the tiled reduced-resolution IFDs, largest first.
pub(crate) fn levels(ifds: &[IfdInfo]) -> Vec<IfdInfo> {
    let mut v: Vec<IfdInfo> = ifds
        .iter()
        .enumerate()
        .filter(|(i, d)| d.tile.is_some() && (*i == 0 || d.subfile & 1 == 1))
        .map(|(_, d)| d.clone())
        .collect();
    // OpenSlide: g_ptr_array_sort(level_array, width_compare)
    v.sort_by_key(|b| std::cmp::Reverse(b.width));
    v
}

/// IFD 0, with a stripped first page set up to be read strip by strip (each strip a
/// full-width tile) when the strips are small enough to cache; any other stripped page
/// (a thumbnail, label or macro) is never a level.
pub(crate) fn first_page(path: &Path, ifds: &mut [IfdInfo]) -> Result<IfdInfo, SlideError> {
    let ifd0 = ifds.first_mut().ok_or_else(|| tiff_err(path, "no IFD"))?;
    if ifd0.tile.is_none() {
        let rows = ifd0.rows_per_strip.unwrap_or(ifd0.height).max(1);
        let strip_bytes = ifd0.width.saturating_mul(rows).saturating_mul(4);
        if ifd0.width > u64::from(u32::MAX) || strip_bytes > MAX_TILE_BYTES {
            return Err(SlideError::Unsupported {
                path: path.to_path_buf(),
                msg: format!(
                    "the TIFF is stripped with strips of {}x{rows} pixels, too large to \
                     read region by region; convert it to a tiled pyramid, e.g. `vips \
                     tiffsave in.tif out.tif --tile --pyramid --compression jpeg`",
                    ifd0.width
                ),
            });
        }
        ifd0.tile = Some((ifd0.width, rows));
        ifd0.strips = true;
    }
    Ok(ifd0.clone())
}

/// The resolution of IFD 0's resolution tags (ResolutionUnit inch, the default, or
/// centimetre), when plausible.
pub(crate) fn resolution_mpp(ifd0: &IfdInfo) -> Option<(f64, MppSource)> {
    let dividend = match ifd0.res_unit.unwrap_or(2) {
        2 => 25400.0,
        3 => 10000.0,
        _ => return None,
    };
    let x = ifd0.xres.filter(|r| *r > 0.0)?;
    ifd0.yres.filter(|r| *r > 0.0)?;
    plausible_mpp(dividend / x).map(|m| (m, MppSource::TiffResolution))
}
