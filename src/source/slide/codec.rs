//! The codecs of TIFF slides: the compression and photometric values the reader knows, and
//! the codec steps it does itself, outside the `tiff` crate: libjpeg's YCbCr -> RGB
//! conversion, decoded samples to RGB ([`to_rgb`]), the declared size of a JPEG tile (its SOF
//! marker), and the LZW decoder for tiles.
//!
//! Guarantees: nothing here allocates more than the caller's tile size. A JPEG tile is
//! checked against the TIFF tile size before it is decoded ([`jpeg_declared_size`]), as
//! OpenSlide refuses a mismatch ("Dimensional mismatch reading JPEG"), so a 30 KB tile whose
//! SOF says 16384 x 16384 is never decoded. LZW decoding stops once the tile is full
//! ([`decode_lzw_tile`]), whatever the stream says.
//!
//! LZW tiles are decoded here, not by the `tiff` crate: 0.11 with weezl 0.1 fails ("no lzw
//! end code found") on valid tiles whose decoded size fills its read buffer exactly
//! (image-rs/image-tiff#395), which tifffile's LZW tiles hit. [`decode_lzw_tile`] stops when
//! the tile is full, as libtiff does.

pub(crate) const COMPRESSION_NONE: u16 = 1;
pub(crate) const COMPRESSION_LZW: u16 = 5;
pub(crate) const COMPRESSION_JPEG: u16 = 7;
pub(crate) const COMPRESSION_DEFLATE: u16 = 8;
pub(crate) const COMPRESSION_PACKBITS: u16 = 32773;
pub(crate) const COMPRESSION_OLD_DEFLATE: u16 = 32946;
/// Aperio JPEG 2000 with YCbCr components.
pub(crate) const APERIO_JP2K_YCBCR: u16 = 33003;
/// Aperio JPEG 2000 with RGB components.
pub(crate) const APERIO_JP2K_RGB: u16 = 33005;
pub(crate) const PHOTOMETRIC_MINISWHITE: u16 = 0;
pub(crate) const PHOTOMETRIC_RGB: u16 = 2;
pub(crate) const PHOTOMETRIC_YCBCR: u16 = 6;

/// libjpeg's YCbCr -> RGB tables (jdcolor.c `build_ycc_rgb_table`), 16-bit
/// fixed point with the 5-digit constants libjpeg uses, so results match
/// libjpeg-turbo bit for bit given the same Y, Cb, Cr samples.
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

const fn ycc_tables() -> YccTables {
    const SCALEBITS: i32 = 16;
    const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
    const fn fix(x1e5: i64) -> i64 {
        // FIX(x) = (INT32)(x * 65536 + 0.5), with x given in 1e-5 units.
        (x1e5 * 65536 + 50_000) / 100_000
    }
    let mut t = YccTables {
        cr_r: [0; 256],
        cb_b: [0; 256],
        cr_g: [0; 256],
        cb_g: [0; 256],
    };
    let mut i = 0;
    while i < 256 {
        let x = i as i64 - 128;
        t.cr_r[i] = ((fix(140_200) * x + ONE_HALF) >> SCALEBITS) as i32;
        t.cb_b[i] = ((fix(177_200) * x + ONE_HALF) >> SCALEBITS) as i32;
        t.cr_g[i] = (-fix(71_414) * x) as i32;
        t.cb_g[i] = (-fix(34_414) * x + ONE_HALF) as i32;
        i += 1;
    }
    t
}

static YCC: YccTables = ycc_tables();

/// Convert interleaved full-range YCbCr (JFIF, BT.601) to RGB in place,
/// exactly as libjpeg's `ycc_rgb_convert`.
pub(crate) fn ycbcr_to_rgb(buf: &mut [u8]) {
    for p in buf.chunks_exact_mut(3) {
        let y = i32::from(p[0]);
        let cb = usize::from(p[1]);
        let cr = usize::from(p[2]);
        p[0] = (y + YCC.cr_r[cr]).clamp(0, 255) as u8;
        p[1] = (y + ((YCC.cb_g[cb] + YCC.cr_g[cr]) >> 16)).clamp(0, 255) as u8;
        p[2] = (y + YCC.cb_b[cb]).clamp(0, 255) as u8;
    }
}

/// `npx` pixels of `spp` interleaved samples as RGB (grey replicated, alpha dropped,
/// YCbCr converted as libjpeg does).
pub(crate) fn to_rgb(data: Vec<u8>, npx: usize, spp: usize, photometric: u16) -> Vec<u8> {
    match spp {
        3 => {
            let mut d = data;
            d.truncate(npx * 3);
            if photometric == PHOTOMETRIC_YCBCR {
                ycbcr_to_rgb(&mut d);
            }
            d
        }
        4 => data
            .chunks_exact(4)
            .take(npx)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        _ => {
            let inv = photometric == PHOTOMETRIC_MINISWHITE;
            data.iter()
                .take(npx)
                .flat_map(|&g| {
                    let g = if inv { 255 - g } else { g };
                    [g, g, g]
                })
                .collect()
        }
    }
}

/// Decodes one LZW tile (TIFF flavour: MSB first, early code-size switch) of
/// `rows` rows of `row_bytes` bytes. Decoding stops once the tile is full, with
/// or without an end-of-information code after it, as libtiff does; a stream
/// that ends before the tile is full is an error.
pub(crate) fn decode_lzw_tile(
    raw: &[u8],
    row_bytes: usize,
    rows: usize,
) -> Result<Vec<u8>, String> {
    use weezl::{decode::Decoder as LzwDecoder, BitOrder, LzwStatus};
    let mut out = vec![0u8; row_bytes * rows];
    let mut dec = LzwDecoder::with_tiff_size_switch(BitOrder::Msb, 8);
    let (mut i, mut o) = (0, 0);
    while o < out.len() {
        let r = dec.decode_bytes(&raw[i..], &mut out[o..]);
        i += r.consumed_in;
        o += r.consumed_out;
        match r.status {
            Ok(LzwStatus::Ok) if r.consumed_in + r.consumed_out > 0 => {}
            Ok(_) => break,
            Err(e) if o < out.len() => return Err(format!("LZW data is corrupt: {e}")),
            Err(_) => break,
        }
    }
    if o < out.len() {
        return Err(format!(
            "LZW data ends after {o} of the tile's {} bytes",
            out.len()
        ));
    }
    Ok(out)
}

/// Undoes horizontal differencing (`predictor` 2, 8-bit samples) over each full
/// row of a decoded tile, then keeps the first `rows` rows of `keep` bytes.
pub(crate) fn crop_rows(
    mut full: Vec<u8>,
    row_bytes: usize,
    keep: usize,
    rows: usize,
    predictor: u16,
    spp: usize,
) -> Vec<u8> {
    if predictor == 2 {
        for row in full.chunks_exact_mut(row_bytes) {
            for j in spp..row_bytes {
                row[j] = row[j].wrapping_add(row[j - spp]);
            }
        }
    }
    if keep == row_bytes {
        full.truncate(row_bytes * rows);
        return full;
    }
    full.chunks_exact(row_bytes)
        .take(rows)
        .flat_map(|r| &r[..keep])
        .copied()
        .collect()
}

/// The frame size (width, height) a JPEG stream declares in its first SOF marker (any of
/// SOF0..SOF15 but DHT, JPG and DAC). `None` when the stream is not JPEG or ends before an
/// SOF. Only marker headers are read, never entropy-coded data.
pub(crate) fn jpeg_declared_size(data: &[u8]) -> Option<(u16, u16)> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        // Markers may be padded with any number of 0xFF bytes.
        while *data.get(i)? == 0xFF && *data.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *data.get(i)? != 0xFF {
            return None;
        }
        let marker = *data.get(i + 1)?;
        i += 2;
        match marker {
            // standalone markers: TEM, RSTn
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => return None, // EOI or SOS before any SOF
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
        if len < 2 {
            return None;
        }
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let s = data.get(i + 3..i + 7)?;
            let h = u16::from_be_bytes([s[0], s[1]]);
            let w = u16::from_be_bytes([s[2], s[3]]);
            return Some((w, h));
        }
        i += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycc_matches_float_formula_within_one() {
        for y in (0..256).step_by(17) {
            for cb in (0..256).step_by(5) {
                for cr in (0..256).step_by(7) {
                    let mut p = [y as u8, cb as u8, cr as u8];
                    ycbcr_to_rgb(&mut p);
                    let (yf, cbf, crf) = (y as f64, cb as f64 - 128.0, cr as f64 - 128.0);
                    let r = (yf + 1.402 * crf).round().clamp(0.0, 255.0);
                    let g = (yf - 0.344136 * cbf - 0.714136 * crf)
                        .round()
                        .clamp(0.0, 255.0);
                    let b = (yf + 1.772 * cbf).round().clamp(0.0, 255.0);
                    assert!((f64::from(p[0]) - r).abs() <= 1.0);
                    assert!((f64::from(p[1]) - g).abs() <= 1.0);
                    assert!((f64::from(p[2]) - b).abs() <= 1.0);
                }
            }
        }
        // libjpeg values checked by hand: Cr = 255 -> +178 on red.
        assert_eq!(YCC.cr_r[255], 178);
        assert_eq!(YCC.cb_b[0], -227);
    }

    #[test]
    fn jpeg_declared_size_reads_the_sof_of_an_encoded_tile() {
        let img = image::RgbImage::from_pixel(40, 24, image::Rgb([200, 10, 30]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut out)
            .encode(img.as_raw(), 40, 24, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(jpeg_declared_size(&out), Some((40, 24)));
        assert_eq!(jpeg_declared_size(b"not a jpeg"), None);
        assert_eq!(jpeg_declared_size(&out[..20]), None);
    }

    #[test]
    fn lzw_decoding_stops_at_the_tile_size() {
        // A stream that would decode to 1 MB, read as a 16-byte tile.
        let big = vec![7u8; 1 << 20];
        let coded = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(&big)
            .unwrap();
        let tile = decode_lzw_tile(&coded, 4, 4).unwrap();
        assert_eq!(tile, vec![7u8; 16]);
    }
}
