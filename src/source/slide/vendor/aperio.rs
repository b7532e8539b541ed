//! Aperio `.svs` (OpenSlide's `openslide-vendor-aperio.c`): a TIFF whose first
//! ImageDescription starts with `Aperio`, and whose `|`-separated `key = value` pairs record
//! the scan (`MPP`, `AppMag`, ...).
//!
//! Rules, as OpenSlide 4.0.1 applies them:
//!
//! * every tiled IFD of the main chain is a level, in file order;
//! * stripped IFDs are the associated images (thumbnail = IFD 1, label = NewSubfileType 1,
//!   macro = 9) and never levels; the reader does not expose them;
//! * the level-0 resolution is the description's `MPP` (µm per pixel); `AppMag` is not read.
//!
//! <https://github.com/openslide/openslide/blob/fe79a9713bef2bfd64bbfefd15704060764b1274/src/openslide-vendor-aperio.c#L412-L527>
//!
//! JPEG 2000 levels (compression 33003 / 33005) are refused at open, and the slide handed
//! to OpenSlide (see [`super::super::level`]).

use super::super::tiffdir::IfdInfo;
use super::super::MppSource;
use super::plausible_mpp;

/// Whether IFD 0's description makes the file an Aperio slide.
pub(crate) fn is_aperio(desc0: &str) -> bool {
    desc0.starts_with("Aperio")
}

/// The levels: every tiled IFD of the main chain, in file order.
pub(crate) fn levels(ifds: &[IfdInfo]) -> Vec<IfdInfo> {
    ifds.iter().filter(|i| i.tile.is_some()).cloned().collect()
}

/// The description's `MPP`, when plausible.
pub(crate) fn mpp(desc0: &str) -> Option<(f64, MppSource)> {
    aperio_properties(desc0)
        .into_iter()
        .find(|(k, _)| k == "MPP")
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .and_then(plausible_mpp)
        .map(|m| (m, MppSource::Aperio))
}

/// Aperio ImageDescription properties: split on `|`, skip the first
/// element, `key = value` pairs trimmed, as in OpenSlide's `read_properties`.
pub(crate) fn aperio_properties(desc: &str) -> Vec<(String, String)> {
    desc.split('|')
        .skip(1)
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aperio_description_parsing() {
        let p = aperio_properties("Aperio Image Library v1\r\n3000x2000|AppMag = 40|MPP = 0.2520");
        assert_eq!(p[0], ("AppMag".into(), "40".into()));
        assert_eq!(p[1], ("MPP".into(), "0.2520".into()));
    }
}
