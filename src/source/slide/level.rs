//! One pyramid level of a TIFF slide, made from the IFD a vendor module chose (OpenSlide's
//! `_openslide_tiff_level_init` role): the format checks, then the tile (or strip) offset and
//! byte-count tables.
//!
//! Guarantees: a level that is returned has a non-zero size, tiles (or strips) that decode to
//! at most [`MAX_TILE_BYTES`] as RGBA, a compression, sample layout and photometric
//! interpretation the reader decodes, and one offset and byte count per tile; anything else
//! is refused at open, with a message that names the level and, where there is one, the fix.
//! JPEG 2000 levels are refused with [`SlideError::Jpeg2000`], so that the caller can hand
//! the slide to OpenSlide.

use std::path::Path;
use std::sync::Mutex;

use tiff::tags::Tag;

use super::codec::{
    APERIO_JP2K_RGB, APERIO_JP2K_YCBCR, COMPRESSION_DEFLATE, COMPRESSION_JPEG, COMPRESSION_LZW,
    COMPRESSION_NONE, COMPRESSION_OLD_DEFLATE, COMPRESSION_PACKBITS, PHOTOMETRIC_RGB,
    PHOTOMETRIC_YCBCR,
};
use super::error::SlideError;
use super::tiffdir::{tiff_err, IfdInfo, LevelDecoder, TiffFile};

/// Largest stored tile or strip, in bytes of decoded RGBA (8 Mpx, e.g. 2896 x 2896):
/// tiles are the decoded and cached unit, so one that holds a whole big image (no
/// RowsPerStrip, or an 8192 x 8192 tile) would put it all in memory for every read.
pub(crate) const MAX_TILE_BYTES: u64 = 32 << 20;

/// One pyramid level of a TIFF slide.
pub(crate) struct TiffLevel {
    pub(crate) width: u64,
    pub(crate) height: u64,
    pub(crate) tile_w: u32,
    pub(crate) tile_h: u32,
    pub(crate) across: u64,
    pub(crate) down: u64,
    pub(super) ifd: u64,
    pub(super) compression: u16,
    pub(super) photometric: u16,
    pub(super) spp: u16,
    pub(super) offsets: Vec<u64>,
    pub(super) byte_counts: Vec<u64>,
    /// Made on the level's first read (a file with 4,096 levels costs no decoder until read).
    pub(super) decoder: Mutex<Option<LevelDecoder>>,
    /// LZW levels: the Predictor tag, for [`super::codec::decode_lzw_tile`].
    pub(super) lzw_predictor: Option<u16>,
    /// The level is a stripped page: its tiles are strips, and the last one
    /// holds only the rows left (tiles at the edge are padded to full size).
    pub(super) strips: bool,
}

/// Level `li` from its IFD: format checks, then its tile (or strip) offset and byte-count
/// tables, read through a decoder that is dropped afterwards.
pub(crate) fn build_level(
    file: &TiffFile,
    li: usize,
    info: &IfdInfo,
) -> Result<TiffLevel, SlideError> {
    let path = file.path.as_path();
    check_level_format(path, li, info)?;
    let (tw, th) = info.tile.unwrap_or((1, 1));
    let (tile_w, tile_h) = (tw as u32, th as u32);
    let across = info.width.div_ceil(tw);
    let down = info.height.div_ceil(th);
    let mut d = file.decoder_at(info.ptr)?;
    let (counts_tag, offsets_tag) = if info.strips {
        (Tag::StripByteCounts, Tag::StripOffsets)
    } else {
        (Tag::TileByteCounts, Tag::TileOffsets)
    };
    let tiles = across.saturating_mul(down);
    let byte_counts = tile_table(&mut d, path, li, counts_tag, tiles)?;
    let offsets = tile_table(&mut d, path, li, offsets_tag, tiles)?;
    let lzw_predictor = if info.compression == COMPRESSION_LZW {
        Some(lzw_predictor(&mut d, path, li)?)
    } else {
        None
    };
    Ok(TiffLevel {
        width: info.width,
        height: info.height,
        tile_w,
        tile_h,
        across,
        down,
        ifd: info.ptr,
        compression: info.compression,
        photometric: info.photometric,
        spp: info.spp,
        offsets,
        byte_counts,
        decoder: Mutex::new(None),
        lzw_predictor,
        strips: info.strips,
    })
}

/// One entry per tile (or strip) of the level, or the level is broken.
fn tile_table(
    d: &mut LevelDecoder,
    path: &Path,
    li: usize,
    tag: Tag,
    tiles: u64,
) -> Result<Vec<u64>, SlideError> {
    let v = d
        .find_tag_unsigned_vec::<u64>(tag)
        .map_err(|e| tiff_err(path, format!("level {li}: {tag:?}: {e}")))?
        .unwrap_or_default();
    if (v.len() as u64) < tiles {
        return Err(tiff_err(
            path,
            format!("level {li}: {} {tag:?} for {tiles} tiles", v.len()),
        ));
    }
    Ok(v)
}

/// The Predictor of an LZW level: none (1) or horizontal differencing (2).
fn lzw_predictor(d: &mut LevelDecoder, path: &Path, li: usize) -> Result<u16, SlideError> {
    let predictor = d
        .find_tag_unsigned::<u16>(Tag::Predictor)
        .map_err(|e| tiff_err(path, format!("level {li}: Predictor: {e}")))?
        .unwrap_or(1);
    if !matches!(predictor, 1 | 2) {
        return Err(SlideError::Unsupported {
            path: path.to_path_buf(),
            msg: format!(
                "level {li} is LZW with predictor {predictor}; only none (1) and \
                 horizontal differencing (2) are read for 8-bit samples"
            ),
        });
    }
    Ok(predictor)
}

/// The checks OpenSlide's readers make of a level's format, and the ones against bombs.
fn check_level_format(path: &Path, li: usize, info: &IfdInfo) -> Result<(), SlideError> {
    let unsupported = |msg: String| SlideError::Unsupported {
        path: path.to_path_buf(),
        msg,
    };
    if info.width == 0 || info.height == 0 {
        return Err(tiff_err(path, format!("level {li} has zero size")));
    }
    let (tw, th) = info.tile.unwrap_or((0, 0));
    if tw == 0 || th == 0 || tw.saturating_mul(th).saturating_mul(4) > MAX_TILE_BYTES {
        let what = if info.strips { "strips" } else { "tiles" };
        return Err(unsupported(format!(
            "level {li} stores {what} of {tw}x{th} pixels; the reader decodes tiles of at most \
             {} pixels ({} MiB as RGBA), so that one tile cannot exhaust memory; re-tile it, \
             e.g. `vips tiffsave in.tif out.tif --tile --tile-width 512 --tile-height 512 \
             --pyramid`",
            MAX_TILE_BYTES / 4,
            MAX_TILE_BYTES >> 20
        )));
    }
    check_compression(path, li, info.compression)?;
    if info.bps != 8 || !matches!(info.spp, 1 | 3 | 4) || info.planar != 1 {
        return Err(unsupported(format!(
            "level {li} has {} samples of {} bits (planar config {}); only 8-bit interleaved \
             grey, RGB or RGBA is read",
            info.spp, info.bps, info.planar
        )));
    }
    // Grey is white- or black-is-zero (the tag's default is taken as RGB, so an untagged
    // grey page passes); colour is RGB or YCbCr. Palette, CMYK, CIELab and the rest would
    // be read as grey or RGB, wrongly.
    let colour_ok = match info.spp {
        1 => info.photometric <= PHOTOMETRIC_RGB,
        _ => matches!(info.photometric, PHOTOMETRIC_RGB | PHOTOMETRIC_YCBCR),
    };
    if !colour_ok {
        return Err(unsupported(format!(
            "level {li} has photometric interpretation {} with {} samples; only grey, RGB \
             and YCbCr are read",
            info.photometric, info.spp
        )));
    }
    if info.photometric == PHOTOMETRIC_YCBCR && info.compression != COMPRESSION_JPEG {
        return Err(unsupported(format!(
            "level {li} is YCbCr without JPEG compression"
        )));
    }
    Ok(())
}

/// The compressions the reader decodes; JPEG 2000 is its own error (OpenSlide reads it).
fn check_compression(path: &Path, li: usize, compression: u16) -> Result<(), SlideError> {
    match compression {
        COMPRESSION_NONE
        | COMPRESSION_LZW
        | COMPRESSION_JPEG
        | COMPRESSION_DEFLATE
        | COMPRESSION_OLD_DEFLATE
        | COMPRESSION_PACKBITS => Ok(()),
        APERIO_JP2K_YCBCR | APERIO_JP2K_RGB => Err(SlideError::Jpeg2000 {
            path: path.to_path_buf(),
            level: li,
            compression,
        }),
        c => Err(SlideError::Unsupported {
            path: path.to_path_buf(),
            msg: format!(
                "level {li} uses TIFF compression {c}, which the built-in reader does not \
                 decode (it reads none, LZW, deflate, PackBits and JPEG)"
            ),
        }),
    }
}
