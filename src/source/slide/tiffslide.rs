//! A TIFF slide opened by the pure-Rust reader (Aperio `.svs`, generic pyramidal
//! TIFF/BigTIFF, OME-TIFF): [`TiffSlide::open`] runs the steps OpenSlide's `openslide_open`
//! runs for a TIFF vendor, each in its own module:
//!
//! 1. parse the TIFF structure: header, IFD chain, one shared file handle
//!    ([`super::tiffdir`]);
//! 2. detect the vendor, which picks the IFDs that are levels and reads its metadata
//!    (Aperio's ImageDescription, OME-XML, TIFF resolution; [`super::vendor`]);
//! 3. build each level from its IFD: format checks and tile tables ([`super::level`]);
//! 4. set up the decoded-tile cache ([`super::cache`]); tiles are then read and decoded by
//!    [`super::tileread`], with the codec steps of [`super::codec`].
//!
//! Guarantees: an opened slide has at least one level, its levels are ordered by size
//! (OpenSlide refuses a pyramid whose downsamples are not increasing), and every level
//! passed [`super::level::build_level`]'s checks. What was odd but readable (an IFD chain
//! that loops) is kept in [`TiffSlide::warnings`].

use std::path::Path;

use super::cache::TileCache;
use super::codec::COMPRESSION_JPEG;
use super::error::SlideError;
use super::level::{build_level, TiffLevel};
use super::tiffdir::{tiff_err, TiffFile};
use super::vendor;
use super::MppSource;

/// A TIFF slide: levels, metadata and the decoded-tile cache.
pub(crate) struct TiffSlide {
    pub(super) file: TiffFile,
    pub(crate) levels: Vec<TiffLevel>,
    pub(crate) vendor: &'static str,
    pub(crate) mpp: Option<(f64, MppSource)>,
    pub(crate) cache: TileCache,
    /// Level 0 is tiled JPEG (tiled JPEG TIFFs are read as slides: the image
    /// path does not decode them).
    pub(crate) jpeg_level0: bool,
    /// What was odd but readable (an IFD chain that loops), for the caller to print.
    pub(crate) warnings: Vec<String>,
}

impl TiffSlide {
    /// Opens the TIFF at `path`, with a decoded-tile cache of `cache_bytes`.
    pub(crate) fn open(path: &Path, cache_bytes: usize) -> Result<Self, SlideError> {
        let file = TiffFile::open(path)?;
        let mut dec = file.raw_decoder(file.first)?;
        let mut chain = file.walk_chain(&mut dec)?;
        let layout = vendor::detect(&file, &mut dec, &mut chain)?;
        drop(dec);

        let levels = layout
            .levels
            .iter()
            .enumerate()
            .map(|(li, info)| build_level(&file, li, info))
            .collect::<Result<Vec<_>, _>>()?;
        // OpenSlide refuses slides whose downsamples are not increasing.
        for w in levels.windows(2) {
            if w[1].width > w[0].width || w[1].height > w[0].height {
                return Err(tiff_err(path, "pyramid levels are not ordered by size"));
            }
        }
        let l0 = &layout.levels[0];
        Ok(Self {
            mpp: layout.mpp,
            file,
            levels,
            vendor: layout.vendor,
            cache: TileCache::new(cache_bytes),
            jpeg_level0: l0.compression == COMPRESSION_JPEG && !l0.strips,
            warnings: chain.warnings,
        })
    }
}
