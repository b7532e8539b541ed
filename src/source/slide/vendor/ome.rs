//! OME-TIFF: a TIFF whose first ImageDescription holds OME-XML. OpenSlide 4.0.1 has no OME
//! vendor and reads these as generic TIFF, which sees only IFD 0 of a SubIFD pyramid; this
//! module is an extension.
//!
//! Rules:
//!
//! * when IFD 0 has SubIFDs (tag 330), IFD 0 and its tiled SubIFDs are the levels, largest
//!   first (a SubIFD already seen in the main chain is not read twice);
//! * without SubIFDs, the levels are generic TIFF's ([`super::generic::levels`]);
//! * the level-0 resolution is `PhysicalSizeX` of the first `<Pixels>` element, in its
//!   `PhysicalSizeXUnit` (µm by default), when the TIFF resolution tags give none.

use super::super::error::SlideError;
use super::super::tiffdir::{tiff_err, Chain, IfdInfo, LevelDecoder, TiffFile};
use super::super::MppSource;
use super::{generic, plausible_mpp};

/// Whether IFD 0's description makes the file an OME-TIFF.
pub(crate) fn is_ome(desc0: &str) -> bool {
    desc0.contains("<OME")
}

/// The levels: IFD 0 and its tiled SubIFDs, largest first, or generic TIFF's levels when
/// IFD 0 has no SubIFDs. SubIFDs are read through `dec` and recorded in `chain.seen`.
pub(crate) fn levels(
    file: &TiffFile,
    dec: &mut LevelDecoder,
    chain: &mut Chain,
    ifd0: &IfdInfo,
) -> Result<Vec<IfdInfo>, SlideError> {
    if ifd0.subifds.is_empty() {
        return Ok(generic::levels(&chain.ifds));
    }
    let mut v = vec![ifd0.clone()];
    for &p in &ifd0.subifds {
        if chain.seen.insert(p) {
            let (info, _) = file
                .read_ifd(dec, p)
                .map_err(|e| tiff_err(&file.path, format!("SubIFD at offset {p}: {e}")))?;
            if info.tile.is_some() {
                v.push(info);
            }
        }
    }
    v.sort_by_key(|b| std::cmp::Reverse(b.width));
    Ok(v)
}

/// `PhysicalSizeX` of the description (any TIFF's, OME or not), when plausible.
pub(crate) fn mpp(desc0: &str) -> Option<(f64, MppSource)> {
    ome_physical_size_x(desc0)
        .and_then(plausible_mpp)
        .map(|m| (m, MppSource::OmeXml))
}

/// Value of `PhysicalSizeX` in µm from OME-XML (first `<Pixels>`).
pub(crate) fn ome_physical_size_x(xml: &str) -> Option<f64> {
    let pixels = xml.find("<Pixels")?;
    let rest = &xml[pixels..];
    let end = rest.find('>')?;
    let tag = &rest[..end];
    let attr = |name: &str| -> Option<&str> {
        let key = format!(" {name}=\"");
        let i = tag.find(&key)? + key.len();
        let j = tag[i..].find('"')?;
        Some(&tag[i..i + j])
    };
    let v: f64 = attr("PhysicalSizeX")?.trim().parse().ok()?;
    let factor = match attr("PhysicalSizeXUnit").unwrap_or("µm") {
        "µm" | "um" | "\u{3bc}m" | "micron" => 1.0,
        "nm" => 1e-3,
        "mm" => 1e3,
        "cm" => 1e4,
        "m" => 1e6,
        "Å" => 1e-4,
        _ => return None,
    };
    Some(v * factor).filter(|m| m.is_finite() && *m > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ome_physical_size() {
        let x = r#"<OME><Image><Pixels DimensionOrder="XYCZT" PhysicalSizeX="0.44" PhysicalSizeXUnit="nm" SizeX="1"></Pixels></Image></OME>"#;
        assert!((ome_physical_size_x(x).unwrap() - 0.00044).abs() < 1e-12);
        let d = r#"<Pixels PhysicalSizeX="0.5" SizeX="2">"#;
        assert_eq!(ome_physical_size_x(d), Some(0.5));
        assert_eq!(ome_physical_size_x("<Pixels SizeX=\"2\">"), None);
    }
}
