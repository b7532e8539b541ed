//! A tiny classic-TIFF writer for crafted (hostile) slides: any tags, tile payloads shared
//! between tiles, raw description bytes, and next-IFD pointers that may loop. Files stay a
//! few KB, so the tests write them into a temp folder.

use std::path::Path;

/// A tag value.
pub(super) enum Val {
    Shorts(Vec<u16>),
    Longs(Vec<u32>),
    /// ASCII bytes as given (a NUL is appended), not checked for UTF-8.
    Ascii(Vec<u8>),
    /// Numerator and denominator.
    Rational(u32, u32),
    /// Offsets of these payloads (one LONG each).
    Offsets(Vec<usize>),
    /// Byte counts of these payloads (one LONG each).
    Counts(Vec<usize>),
}

/// One IFD: its tags (any order; written sorted) and where its next pointer goes.
pub(super) struct Ifd {
    pub(super) tags: Vec<(u16, Val)>,
    /// `None`: the following IFD (or 0 for the last); `Some(i)`: IFD `i` (a loop, when
    /// `i` is this one or an earlier one).
    pub(super) next: Option<usize>,
}

/// The tags of a tiled 8-bit level: `w x h`, square `tile`, `spp` samples, the given
/// compression and photometric interpretation, `payload_of(tile index)`.
pub(super) fn tiled(
    (w, h): (u32, u32),
    tile: u32,
    (compression, photometric, spp): (u16, u16, u16),
    subfile: u32,
    payload_of: impl Fn(usize) -> usize,
) -> Vec<(u16, Val)> {
    let n = (w.div_ceil(tile) * h.div_ceil(tile)) as usize;
    let tiles: Vec<usize> = (0..n).map(payload_of).collect();
    vec![
        (254, Val::Longs(vec![subfile])),
        (256, Val::Longs(vec![w])),
        (257, Val::Longs(vec![h])),
        (258, Val::Shorts(vec![8; usize::from(spp)])),
        (259, Val::Shorts(vec![compression])),
        (262, Val::Shorts(vec![photometric])),
        (277, Val::Shorts(vec![spp])),
        (284, Val::Shorts(vec![1])),
        (322, Val::Longs(vec![tile])),
        (323, Val::Longs(vec![tile])),
        (324, Val::Offsets(tiles.clone())),
        (325, Val::Counts(tiles)),
    ]
}

/// Resolution tags for `mpp` µm/px (ResolutionUnit centimetre).
pub(super) fn resolution(mpp: f64) -> Vec<(u16, Val)> {
    let per_cm = (10_000.0 / mpp * 1000.0).round() as u32;
    vec![
        (282, Val::Rational(per_cm, 1000)),
        (283, Val::Rational(per_cm, 1000)),
        (296, Val::Shorts(vec![3])),
    ]
}

/// Writes a little-endian classic TIFF of `ifds` with the tile `payloads`.
pub(super) fn write_tiff(path: &Path, payloads: &[Vec<u8>], ifds: &[Ifd]) {
    let mut out: Vec<u8> = b"II*\0\0\0\0\0".to_vec();
    let mut payload_at = Vec::new();
    for p in payloads {
        payload_at.push(out.len() as u32);
        out.extend_from_slice(p);
        if out.len() % 2 == 1 {
            out.push(0);
        }
    }
    let mut ifd_at = Vec::new();
    let mut next_fields = Vec::new();
    for ifd in ifds {
        let mut tags: Vec<&(u16, Val)> = ifd.tags.iter().collect();
        tags.sort_by_key(|t| t.0);
        // values first, then the directory
        let mut entries = Vec::new();
        for (tag, val) in tags {
            let (ty, count, bytes): (u16, u32, Vec<u8>) = match val {
                Val::Shorts(v) => (
                    3,
                    v.len() as u32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                Val::Longs(v) => (
                    4,
                    v.len() as u32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                Val::Ascii(b) => {
                    let mut b = b.clone();
                    b.push(0);
                    (2, b.len() as u32, b)
                }
                Val::Rational(n, d) => (5, 1, [n.to_le_bytes(), d.to_le_bytes()].concat()),
                Val::Offsets(v) => (
                    4,
                    v.len() as u32,
                    v.iter()
                        .flat_map(|&p| payload_at[p].to_le_bytes())
                        .collect(),
                ),
                Val::Counts(v) => (
                    4,
                    v.len() as u32,
                    v.iter()
                        .flat_map(|&p| (payloads[p].len() as u32).to_le_bytes())
                        .collect(),
                ),
            };
            let field = if bytes.len() <= 4 {
                let mut f = [0u8; 4];
                f[..bytes.len()].copy_from_slice(&bytes);
                f
            } else {
                let at = out.len() as u32;
                out.extend_from_slice(&bytes);
                if out.len() % 2 == 1 {
                    out.push(0);
                }
                at.to_le_bytes()
            };
            entries.push((*tag, ty, count, field));
        }
        ifd_at.push(out.len() as u32);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, ty, count, field) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&field);
        }
        next_fields.push(out.len());
        out.extend_from_slice(&[0; 4]);
    }
    out[4..8].copy_from_slice(&ifd_at[0].to_le_bytes());
    for (i, ifd) in ifds.iter().enumerate() {
        let next = match ifd.next {
            Some(j) => ifd_at[j],
            None => ifd_at.get(i + 1).copied().unwrap_or(0),
        };
        out[next_fields[i]..next_fields[i] + 4].copy_from_slice(&next.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}
