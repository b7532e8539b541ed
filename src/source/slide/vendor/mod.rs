//! The vendors of TIFF slides, as OpenSlide splits them (`openslide-vendor-*.c`): each
//! module says whether a file is its own, which of the parsed directories are its pyramid
//! levels, and the properties it records (the level-0 resolution). [`detect`] asks them in
//! OpenSlide's order: Aperio, then OME-TIFF (an extension), then generic TIFF.
//!
//! * [`aperio`]: IFD 0's ImageDescription starts with `Aperio`;
//! * [`ome`]: IFD 0's description holds OME-XML (its SubIFDs are levels);
//! * [`generic`]: any other TIFF, and the stripped first page every vendor may have.
//!
//! Level discovery follows OpenSlide 4.0.1 (commit
//! `fe79a9713bef2bfd64bbfefd15704060764b1274`); each module links the code it follows.
//!
//! Guarantees: the levels are returned largest first for OME-TIFF and generic TIFF (Aperio
//! keeps file order; the caller refuses a pyramid that is not ordered by size); the
//! resolution is taken in the documented order (Aperio `MPP`, TIFF resolution in inches or
//! centimetres, OME-XML `PhysicalSizeX`) and only when plausible ([`plausible_mpp`]).

pub(crate) mod aperio;
pub(crate) mod generic;
pub(crate) mod ome;

use std::path::Path;

use super::error::SlideError;
use super::tiffdir::{Chain, IfdInfo, LevelDecoder, TiffFile};
use super::MppSource;

/// What a vendor makes of a file's directories.
pub(crate) struct Layout {
    /// `aperio`, `ome-tiff` or `generic-tiff`.
    pub(crate) vendor: &'static str,
    /// The IFDs that are pyramid levels, level 0 first.
    pub(crate) levels: Vec<IfdInfo>,
    /// The level-0 resolution the file records.
    pub(crate) mpp: Option<(f64, MppSource)>,
}

/// The vendor of a parsed TIFF and its levels. `dec` reads the directories the main chain
/// does not hold (OME SubIFDs); IFD 0, when stripped, is first set up to be read strip by
/// strip ([`generic::first_page`]), whatever the vendor.
pub(crate) fn detect(
    file: &TiffFile,
    dec: &mut LevelDecoder,
    chain: &mut Chain,
) -> Result<Layout, SlideError> {
    let ifd0 = generic::first_page(&file.path, &mut chain.ifds)?;
    let desc0 = ifd0.description.as_deref().unwrap_or_default();
    let (vendor, levels) = if aperio::is_aperio(desc0) {
        ("aperio", aperio::levels(&chain.ifds))
    } else if ome::is_ome(desc0) {
        ("ome-tiff", ome::levels(file, dec, chain, &ifd0)?)
    } else {
        ("generic-tiff", generic::levels(&chain.ifds))
    };
    let own = if vendor == "aperio" {
        aperio::mpp(desc0)
    } else {
        None
    };
    let mpp = own
        .or_else(|| generic::resolution_mpp(&ifd0))
        .or_else(|| ome::mpp(desc0));
    Ok(Layout {
        vendor,
        levels,
        mpp,
    })
}

/// Whether the first IFD's description says Aperio or OME-XML (read even when the slide
/// itself cannot be opened).
pub(crate) fn described_as_slide(path: &Path) -> bool {
    let Ok(file) = TiffFile::open(path) else {
        return false;
    };
    let Ok(mut dec) = file.raw_decoder(file.first) else {
        return false;
    };
    file.read_ifd(&mut dec, file.first)
        .ok()
        .and_then(|(info, _)| info.description)
        .is_some_and(|d| aperio::is_aperio(&d) || ome::is_ome(&d))
}

/// Plausible microscope resolutions, in µm per pixel. TIFF writers often put
/// a default 72 dpi (352 µm/px) in files that have no physical size.
fn plausible_mpp(m: f64) -> Option<f64> {
    (m.is_finite() && m > 0.0 && m < 100.0).then_some(m)
}
