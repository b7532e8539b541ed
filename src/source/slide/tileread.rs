//! Reading a TIFF slide's pixels (OpenSlide's `_openslide_tiff_read_tile` and grid painting):
//! one stored tile of a level decoded to RGB, and a region of a level composed from its tiles
//! ([`super::compose`]).
//!
//! Tiles are decoded with the `tiff` crate (one decoder per level behind a mutex, made on the
//! level's first read, so a level's IFD and tile offsets are parsed once and unread levels
//! cost nothing), except LZW tiles ([`super::codec::decode_lzw_tile`]). JPEG tiles come back
//! as raw components; as OpenSlide does, YCbCr is converted to RGB only when
//! Photometric=YCbCr, with libjpeg's fixed-point tables ([`super::codec::to_rgb`]).
//!
//! Guarantees:
//!
//! * Decoded tiles are cached ([`super::cache`]), and a tile that failed once fails again
//!   from the cache, without being decoded again.
//! * A JPEG tile whose SOF disagrees with the TIFF tile size is refused before it is decoded
//!   (OpenSlide: "Dimensional mismatch"); a stored tile larger than twice
//!   [`MAX_TILE_BYTES`] is not read; decoding runs under the `--decode-memory` budget
//!   ([`crate::source::reserve_decode`]).
//! * A panic inside the decoder is caught; the tile is reported as corrupt and the level's
//!   decoder is rebuilt.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tiff::decoder::DecodingResult;

use super::cache::Tile;
use super::codec::{crop_rows, decode_lzw_tile, jpeg_declared_size, to_rgb, COMPRESSION_JPEG};
use super::compose::{self, Geom, TileSource};
use super::error::SlideError;
use super::level::{TiffLevel, MAX_TILE_BYTES};
use super::tiffslide::TiffSlide;

/// Largest compressed tile read (twice the largest decoded tile).
const MAX_STORED_BYTES: u64 = 2 * MAX_TILE_BYTES;

impl TileSource for TiffSlide {
    fn tile(&self, level: usize, col: u64, row: u64) -> Result<Arc<Tile>, SlideError> {
        TiffSlide::tile(self, level, col, row)
    }
}

impl TiffSlide {
    /// The decoded tile (col, row) of `level`, from the cache when present.
    pub(crate) fn tile(&self, level: usize, col: u64, row: u64) -> Result<Arc<Tile>, SlideError> {
        self.tile_inner(level, col, row, true)
    }

    /// Decode without storing in the cache (for one-pass scans of a level).
    pub(crate) fn tile_uncached(
        &self,
        level: usize,
        col: u64,
        row: u64,
    ) -> Result<Arc<Tile>, SlideError> {
        self.tile_inner(level, col, row, false)
    }

    /// OpenSlide's `read_region` on `level` (downsample `ds`) as premultiplied ARGB:
    /// `(x, y)` in level-0 pixels, `w x h` in pixels of the level (see [`super::compose`]).
    pub(crate) fn read_region_premul(
        &self,
        level: usize,
        ds: f64,
        x: i64,
        y: i64,
        w: u32,
        h: u32,
    ) -> Result<Vec<u32>, SlideError> {
        let tl = &self.levels[level];
        let g = Geom {
            tile_w: tl.tile_w,
            tile_h: tl.tile_h,
            across: tl.across,
            down: tl.down,
        };
        compose::read_region_premul(self, level, g, ds, x, y, w, h)
    }

    fn tile_inner(
        &self,
        level: usize,
        col: u64,
        row: u64,
        store: bool,
    ) -> Result<Arc<Tile>, SlideError> {
        let l = self
            .levels
            .get(level)
            .ok_or_else(|| SlideError::LevelOutOfRange {
                path: self.file.path.clone(),
                level,
                count: self.levels.len(),
            })?;
        let corrupt = |index: u64, msg: String| SlideError::CorruptTile {
            path: self.file.path.clone(),
            level,
            col,
            row,
            index,
            msg,
        };
        if col >= l.across || row >= l.down {
            return Err(corrupt(0, "tile outside the level".into()));
        }
        let index = row * l.across + col;
        if let Some(t) = self.cache.get((level, index)) {
            return Ok(t);
        }
        if let Some(msg) = self.cache.failure((level, index)) {
            return Err(corrupt(index, msg));
        }
        if l.byte_counts.get(index as usize).copied() == Some(0) {
            return Err(SlideError::MissingTile {
                path: self.file.path.clone(),
                level,
                col,
                row,
                index,
            });
        }
        self.cache.note_decode();
        match self.decode(l, col, row, index) {
            Ok(rgb) => {
                let t = Arc::new(rgb);
                if store {
                    self.cache.put((level, index), Arc::clone(&t));
                }
                Ok(t)
            }
            Err(TileFailure::Corrupt(msg)) => {
                self.cache.fail((level, index), &msg);
                Err(corrupt(index, msg))
            }
            Err(TileFailure::Other(e)) => Err(e),
        }
    }

    /// Decodes stored tile `index` (at `col`, `row`) of level `l` to RGB, under the
    /// decode-memory budget.
    fn decode(&self, l: &TiffLevel, col: u64, row: u64, index: u64) -> Result<Tile, TileFailure> {
        let spp = usize::from(l.spp);
        let w = (l.width - col * u64::from(l.tile_w)).min(u64::from(l.tile_w)) as u32;
        let h = (l.height - row * u64::from(l.tile_h)).min(u64::from(l.tile_h)) as u32;
        let stored = l.byte_counts[index as usize];
        if stored > MAX_STORED_BYTES {
            return Err(TileFailure::Corrupt(format!(
                "its byte count ({stored}) is larger than any {}x{} tile needs",
                l.tile_w, l.tile_h
            )));
        }
        let coded = u64::from(l.tile_w) * u64::from(l.tile_h) * spp as u64;
        let _budget =
            crate::source::reserve_decode(stored + coded + u64::from(w) * u64::from(h) * 3);
        let ((dw, dh), data) = if let Some(predictor) = l.lzw_predictor {
            let raw = self.read_stored(l, index)?;
            ((w, h), decode_lzw(&raw, l, (w, h), predictor)?)
        } else {
            if l.compression == COMPRESSION_JPEG {
                let raw = self.read_stored(l, index)?;
                check_jpeg_size(&raw, l, h).map_err(TileFailure::Corrupt)?;
            }
            self.decode_with_tiff(l, index)?
        };
        let npx = dw as usize * dh as usize;
        if npx == 0 || data.len() < npx * spp {
            return Err(TileFailure::Corrupt(format!(
                "decoded {} bytes for a {dw}x{dh} tile with {spp} samples",
                data.len()
            )));
        }
        Ok(Tile {
            w: dw,
            h: dh,
            rgb: to_rgb(data, npx, spp, l.photometric),
        })
    }

    /// The stored (compressed) bytes of tile `index` of level `l`.
    fn read_stored(&self, l: &TiffLevel, index: u64) -> Result<Vec<u8>, TileFailure> {
        let i = index as usize;
        self.file
            .read_bytes(l.offsets[i], l.byte_counts[i])
            .map_err(|e| TileFailure::Corrupt(format!("cannot read the tile's bytes: {e}")))
    }

    /// One chunk through the level's `tiff` decoder (made on first use; rebuilt after a
    /// panic, whose state is unknown).
    fn decode_with_tiff(
        &self,
        l: &TiffLevel,
        index: u64,
    ) -> Result<((u32, u32), Vec<u8>), TileFailure> {
        let chunk =
            u32::try_from(index).map_err(|_| TileFailure::Corrupt("tile index past u32".into()))?;
        let mut guard = l.decoder.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.file.decoder_at(l.ifd).map_err(TileFailure::Other)?);
        }
        let Some(dec) = guard.as_mut() else {
            return Err(TileFailure::Corrupt("no decoder".into()));
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            let dims = dec.chunk_data_dimensions(chunk);
            dec.read_chunk(chunk).map(|d| (dims, d))
        }));
        match r {
            Ok(Ok((dims, DecodingResult::U8(d)))) => Ok((dims, d)),
            Ok(Ok(_)) => Err(TileFailure::Corrupt("not 8-bit samples".into())),
            Ok(Err(e)) => Err(TileFailure::Corrupt(e.to_string())),
            Err(p) => {
                *guard = None;
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(TileFailure::Corrupt(format!("decoder panicked: {what}")))
            }
        }
    }
}

/// Why a tile did not decode: its data (remembered, so it is not decoded again), or
/// something else (the file could not be opened).
enum TileFailure {
    Corrupt(String),
    Other(SlideError),
}

/// An LZW tile (or strip) of level `l`, `w x h` valid pixels, decoded with `predictor`
/// undone and cropped to those pixels.
fn decode_lzw(
    raw: &[u8],
    l: &TiffLevel,
    (w, h): (u32, u32),
    predictor: u16,
) -> Result<Vec<u8>, TileFailure> {
    let spp = usize::from(l.spp);
    let coded_rows = if l.strips { h } else { l.tile_h };
    let full = decode_lzw_tile(raw, l.tile_w as usize * spp, coded_rows as usize)
        .map_err(TileFailure::Corrupt)?;
    Ok(crop_rows(
        full,
        l.tile_w as usize * spp,
        w as usize * spp,
        h as usize,
        predictor,
        spp,
    ))
}

/// The JPEG's declared size must be the TIFF tile's (for a strip: the strip's rows, or
/// the rows left in the last one), as OpenSlide requires; checked before decoding, so
/// that a small tile claiming 16384 x 16384 is never decoded.
fn check_jpeg_size(raw: &[u8], l: &TiffLevel, rows_left: u32) -> Result<(), String> {
    let Some((w, h)) = jpeg_declared_size(raw) else {
        return Err("the JPEG has no frame header (SOF) before its data".into());
    };
    let (w, h) = (u32::from(w), u32::from(h));
    if w == l.tile_w && (h == l.tile_h || (l.strips && h == rows_left)) {
        return Ok(());
    }
    Err(format!(
        "Dimensional mismatch reading JPEG, expected {}x{}, got {w}x{h}; not decoded",
        l.tile_w, l.tile_h
    ))
}
