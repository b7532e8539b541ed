//! A tiny BigTIFF writer for the slide tests whose tiles may share stored bytes, so that a
//! 100k x 80k pyramid costs a few MB on disk and a fraction of a second to write.

use std::io::Write;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, RgbImage};

/// One level: size, tile size and, per tile (row-major), which payload.
pub(super) struct LevelSpec {
    pub(super) width: u64,
    pub(super) height: u64,
    pub(super) tile: u32,
    pub(super) payload_of: Box<dyn Fn(u64, u64) -> usize>,
}

/// Encode an RGB tile as a self-contained JPEG (YCbCr, as the image crate
/// writes it).
pub(super) fn jpeg_tile(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

pub(super) fn solid_tile(size: u32, rgb: [u8; 3], noise: bool) -> RgbImage {
    RgbImage::from_fn(size, size, |x, y| {
        let n = if noise {
            ((x * 7 + y * 13) % 17) as u8
        } else {
            0
        };
        image::Rgb([
            rgb[0].saturating_sub(n),
            rgb[1].saturating_sub(n),
            rgb[2].saturating_sub(n),
        ])
    })
}

fn entry(buf: &mut Vec<u8>, tag: u16, ty: u16, count: u64, value: [u8; 8]) {
    buf.extend_from_slice(&tag.to_le_bytes());
    buf.extend_from_slice(&ty.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(&value);
}

fn v64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn v16s(vals: &[u16]) -> [u8; 8] {
    let mut b = [0u8; 8];
    for (i, v) in vals.iter().enumerate() {
        b[i * 2..i * 2 + 2].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Write a BigTIFF pyramid with JPEG (Photometric=YCbCr) tiles; each level gets resolution
/// tags for `mpp` µm/px at level 0 (ResolutionUnit centimetre), or none without `mpp`.
pub(super) fn write_bigtiff(
    path: &Path,
    payloads: &[Vec<u8>],
    levels: &[LevelSpec],
    mpp: Option<f64>,
) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut pos: u64 = 16;
    let mut payload_at = Vec::new();
    let mut body = Vec::new();
    for p in payloads {
        payload_at.push(pos);
        body.extend_from_slice(p);
        pos += p.len() as u64;
    }
    // level directories
    let mut ifd_offsets = Vec::new();
    let mut tail = Vec::new();
    for (li, l) in levels.iter().enumerate() {
        let across = l.width.div_ceil(u64::from(l.tile));
        let down = l.height.div_ceil(u64::from(l.tile));
        let n = across * down;
        let offs_at = pos;
        for r in 0..down {
            for c in 0..across {
                let p = (l.payload_of)(c, r);
                tail.extend_from_slice(&payload_at[p].to_le_bytes());
            }
        }
        pos += n * 8;
        let counts_at = pos;
        for r in 0..down {
            for c in 0..across {
                let p = (l.payload_of)(c, r);
                tail.extend_from_slice(&(payloads[p].len() as u64).to_le_bytes());
            }
        }
        pos += n * 8;
        let mut ifd = Vec::new();
        let entries = if mpp.is_some() { 15u64 } else { 12 };
        ifd.extend_from_slice(&entries.to_le_bytes());
        entry(&mut ifd, 254, 4, 1, v64(u64::from(li > 0)));
        entry(&mut ifd, 256, 16, 1, v64(l.width));
        entry(&mut ifd, 257, 16, 1, v64(l.height));
        entry(&mut ifd, 258, 3, 3, v16s(&[8, 8, 8]));
        entry(&mut ifd, 259, 3, 1, v16s(&[7]));
        entry(&mut ifd, 262, 3, 1, v16s(&[6]));
        entry(&mut ifd, 277, 3, 1, v16s(&[3]));
        if let Some(mpp) = mpp {
            let res = (10000.0 / (mpp * (levels[0].width as f64 / l.width as f64))).round() as u32;
            let mut r = [0u8; 8];
            r[..4].copy_from_slice(&res.to_le_bytes());
            r[4..].copy_from_slice(&1u32.to_le_bytes());
            entry(&mut ifd, 282, 5, 1, r);
            entry(&mut ifd, 283, 5, 1, r);
            entry(&mut ifd, 284, 3, 1, v16s(&[1]));
            entry(&mut ifd, 296, 3, 1, v16s(&[3]));
        } else {
            entry(&mut ifd, 284, 3, 1, v16s(&[1]));
        }
        entry(&mut ifd, 322, 3, 1, v16s(&[l.tile as u16]));
        entry(&mut ifd, 323, 3, 1, v16s(&[l.tile as u16]));
        entry(&mut ifd, 324, 16, n, v64(offs_at));
        entry(&mut ifd, 325, 16, n, v64(counts_at));
        let ifd_at = pos;
        ifd_offsets.push((ifd_at, tail.len() + ifd.len()));
        ifd.extend_from_slice(&0u64.to_le_bytes()); // next, patched below
        pos += ifd.len() as u64;
        tail.extend_from_slice(&ifd);
    }
    // patch next pointers
    for i in 0..ifd_offsets.len().saturating_sub(1) {
        let (_, next_field_rel) = ifd_offsets[i];
        let next = ifd_offsets[i + 1].0;
        tail[next_field_rel..next_field_rel + 8].copy_from_slice(&next.to_le_bytes());
    }
    f.write_all(b"II").unwrap();
    f.write_all(&43u16.to_le_bytes()).unwrap();
    f.write_all(&8u16.to_le_bytes()).unwrap();
    f.write_all(&0u16.to_le_bytes()).unwrap();
    f.write_all(&ifd_offsets[0].0.to_le_bytes()).unwrap();
    f.write_all(&body).unwrap();
    f.write_all(&tail).unwrap();
    f.flush().unwrap();
}
