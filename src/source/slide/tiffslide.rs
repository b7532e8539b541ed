//! Pure-Rust reader for TIFF slides: Aperio `.svs`, generic pyramidal
//! TIFF/BigTIFF and OME-TIFF with SubIFD pyramids.
//!
//! Level discovery follows OpenSlide 4.0.1 (commit
//! `fe79a9713bef2bfd64bbfefd15704060764b1274`):
//!
//! * Aperio ([`aperio_open`]): IFD 0 is tiled and its ImageDescription starts
//!   with `Aperio`; every tiled IFD of the main chain is a level, in file
//!   order; stripped IFDs (thumbnail = IFD 1, label = NewSubfileType 1,
//!   macro = 9) are never levels.
//!   <https://github.com/openslide/openslide/blob/fe79a9713bef2bfd64bbfefd15704060764b1274/src/openslide-vendor-aperio.c#L412-L527>
//! * Generic TIFF ([`generic_tiff_open`]): IFD 0 must be tiled; later IFDs
//!   count when tiled and NewSubfileType has the reduced-image bit; levels
//!   are sorted by width, largest first. An extension: a stripped IFD 0 (a
//!   big single-page TIFF, which OpenSlide refuses) is read with each strip
//!   as a full-width tile, when a strip decodes to at most 32 MiB.
//!   <https://github.com/openslide/openslide/blob/fe79a9713bef2bfd64bbfefd15704060764b1274/src/openslide-vendor-generic-tiff.c#L205-L266>
//! * OME-TIFF (an extension: OpenSlide 4.0.1 sees only IFD 0 of these): when
//!   IFD 0's description holds OME-XML and IFD 0 has SubIFDs (tag 330), the
//!   tiled SubIFDs are the reduced levels.
//!
//! The TIFF structure (header, IFD chain, one shared file handle) is read by
//! [`super::tiffdir`]; the codec steps done here by hand by [`super::codec`].
//! Tiles are decoded with the `tiff` crate (one decoder per level behind a
//! mutex, made on the level's first read, so a level's IFD and tile offsets are
//! parsed once and unread levels cost nothing). JPEG tiles come
//! back as raw components; as OpenSlide does, YCbCr is converted to RGB only
//! when Photometric=YCbCr, with libjpeg's fixed-point tables
//! ([`ycbcr_to_rgb`]). Decoded tiles are cached (see [`super::cache`]).
//! A panic inside the decoder is caught; the tile is reported as corrupt and
//! the level's decoder is rebuilt.
//!
//! Bombs: a stored tile (or strip) decodes to at most [`MAX_TILE_BYTES`] (as RGBA), or
//! the slide is refused at open with a message; a JPEG tile whose SOF disagrees with the
//! TIFF tile size is refused before it is decoded (OpenSlide: "Dimensional mismatch");
//! decoding runs under the `--decode-memory` budget ([`crate::source::reserve_decode`]);
//! a tile that failed once fails again from the cache, without being decoded again.
//!
//! LZW tiles are decoded here, not by the `tiff` crate: 0.11 with weezl 0.1
//! fails ("no lzw end code found") on valid tiles whose decoded size fills its
//! read buffer exactly (image-rs/image-tiff#395), which tifffile's LZW tiles
//! hit. [`decode_lzw_tile`] stops when the tile is full, as libtiff does.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tiff::decoder::DecodingResult;
use tiff::tags::Tag;

use super::cache::{Tile, TileCache};
use super::codec::{crop_rows, decode_lzw_tile, jpeg_declared_size, ycbcr_to_rgb};
use super::error::SlideError;
use super::tiffdir::{tiff_err, IfdInfo, LevelDecoder, TiffFile};
use super::MppSource;

const COMPRESSION_NONE: u16 = 1;
const COMPRESSION_LZW: u16 = 5;
const COMPRESSION_JPEG: u16 = 7;
const COMPRESSION_DEFLATE: u16 = 8;
const COMPRESSION_PACKBITS: u16 = 32773;
const COMPRESSION_OLD_DEFLATE: u16 = 32946;
/// Aperio JPEG 2000 with YCbCr components.
pub(crate) const APERIO_JP2K_YCBCR: u16 = 33003;
/// Aperio JPEG 2000 with RGB components.
pub(crate) const APERIO_JP2K_RGB: u16 = 33005;
const PHOTOMETRIC_MINISWHITE: u16 = 0;
const PHOTOMETRIC_RGB: u16 = 2;
const PHOTOMETRIC_YCBCR: u16 = 6;
/// Largest stored tile or strip, in bytes of decoded RGBA (8 Mpx, e.g. 2896 x 2896):
/// tiles are the decoded and cached unit, so one that holds a whole big image (no
/// RowsPerStrip, or an 8192 x 8192 tile) would put it all in memory for every read.
pub(crate) const MAX_TILE_BYTES: u64 = 32 << 20;
/// Largest compressed tile read (twice the largest decoded tile).
const MAX_STORED_BYTES: u64 = 2 * MAX_TILE_BYTES;

/// One pyramid level of a TIFF slide.
pub(crate) struct TiffLevel {
    pub(crate) width: u64,
    pub(crate) height: u64,
    pub(crate) tile_w: u32,
    pub(crate) tile_h: u32,
    pub(crate) across: u64,
    pub(crate) down: u64,
    ifd: u64,
    compression: u16,
    photometric: u16,
    spp: u16,
    offsets: Vec<u64>,
    byte_counts: Vec<u64>,
    /// Made on the level's first read (a file with 4,096 levels costs no decoder until read).
    decoder: Mutex<Option<LevelDecoder>>,
    /// LZW levels: the Predictor tag, for [`decode_lzw_tile`].
    lzw_predictor: Option<u16>,
    /// The level is a stripped page: its tiles are strips, and the last one
    /// holds only the rows left (tiles at the edge are padded to full size).
    strips: bool,
}

/// A TIFF slide: levels, metadata and the decoded-tile cache.
pub(crate) struct TiffSlide {
    file: TiffFile,
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

/// Plausible microscope resolutions, in µm per pixel. TIFF writers often put
/// a default 72 dpi (352 µm/px) in files that have no physical size.
fn plausible_mpp(m: f64) -> Option<f64> {
    (m.is_finite() && m > 0.0 && m < 100.0).then_some(m)
}

impl TiffSlide {
    pub(crate) fn open(path: &Path, cache_bytes: usize) -> Result<Self, SlideError> {
        let file = TiffFile::open(path)?;
        let mut dec = file.raw_decoder(file.first)?;
        let mut chain = file.walk_chain(&mut dec)?;
        let ifd0 = first_page(path, &mut chain.ifds)?;
        let desc0 = ifd0.description.clone().unwrap_or_default();

        let (vendor, chosen): (&'static str, Vec<IfdInfo>) = if desc0.starts_with("Aperio") {
            (
                "aperio",
                chain
                    .ifds
                    .iter()
                    .filter(|i| i.tile.is_some())
                    .cloned()
                    .collect(),
            )
        } else if desc0.contains("<OME") && !ifd0.subifds.is_empty() {
            let mut v = vec![ifd0.clone()];
            for &p in &ifd0.subifds {
                if chain.seen.insert(p) {
                    let (info, _) = file
                        .read_ifd(&mut dec, p)
                        .map_err(|e| tiff_err(path, format!("SubIFD at offset {p}: {e}")))?;
                    if info.tile.is_some() {
                        v.push(info);
                    }
                }
            }
            v.sort_by_key(|b| std::cmp::Reverse(b.width));
            ("ome-tiff", v)
        } else {
            let mut v: Vec<IfdInfo> = chain
                .ifds
                .iter()
                .enumerate()
                .filter(|(i, d)| d.tile.is_some() && (*i == 0 || d.subfile & 1 == 1))
                .map(|(_, d)| d.clone())
                .collect();
            // OpenSlide: g_ptr_array_sort(level_array, width_compare)
            v.sort_by_key(|b| std::cmp::Reverse(b.width));
            (
                if desc0.contains("<OME") {
                    "ome-tiff"
                } else {
                    "generic-tiff"
                },
                v,
            )
        };
        drop(dec);

        let levels = chosen
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
        Ok(Self {
            mpp: recorded_mpp(vendor, &ifd0, &desc0),
            file,
            levels,
            vendor,
            cache: TileCache::new(cache_bytes),
            jpeg_level0: chosen[0].compression == COMPRESSION_JPEG && !chosen[0].strips,
            warnings: chain.warnings,
        })
    }

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
        let i = index as usize;
        let spp = usize::from(l.spp);
        let w = (l.width - col * u64::from(l.tile_w)).min(u64::from(l.tile_w)) as u32;
        let h = (l.height - row * u64::from(l.tile_h)).min(u64::from(l.tile_h)) as u32;
        let stored = l.byte_counts[i];
        if stored > MAX_STORED_BYTES {
            return Err(TileFailure::Corrupt(format!(
                "its byte count ({stored}) is larger than any {}x{} tile needs",
                l.tile_w, l.tile_h
            )));
        }
        let coded = u64::from(l.tile_w) * u64::from(l.tile_h) * spp as u64;
        let _budget =
            crate::source::reserve_decode(stored + coded + u64::from(w) * u64::from(h) * 3);
        let read_stored = || {
            self.file
                .read_bytes(l.offsets[i], stored)
                .map_err(|e| TileFailure::Corrupt(format!("cannot read the tile's bytes: {e}")))
        };
        let ((dw, dh), data) = if let Some(predictor) = l.lzw_predictor {
            let raw = read_stored()?;
            let coded_rows = if l.strips { h } else { l.tile_h };
            let full = decode_lzw_tile(&raw, l.tile_w as usize * spp, coded_rows as usize)
                .map_err(TileFailure::Corrupt)?;
            let keep = w as usize * spp;
            let data = crop_rows(
                full,
                l.tile_w as usize * spp,
                keep,
                h as usize,
                predictor,
                spp,
            );
            ((w, h), data)
        } else {
            if l.compression == COMPRESSION_JPEG {
                let raw = read_stored()?;
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
        .is_some_and(|d| d.starts_with("Aperio") || d.contains("<OME"))
}

/// Why a tile did not decode: its data (remembered, so it is not decoded again), or
/// something else (the file could not be opened).
enum TileFailure {
    Corrupt(String),
    Other(SlideError),
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

/// `npx` pixels of `spp` interleaved samples as RGB (grey replicated, alpha dropped,
/// YCbCr converted as libjpeg does).
fn to_rgb(data: Vec<u8>, npx: usize, spp: usize, photometric: u16) -> Vec<u8> {
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

/// IFD 0, with a stripped first page set up to be read strip by strip (each strip a
/// full-width tile) when the strips are small enough to cache; any other stripped page
/// (a thumbnail, label or macro) is never a level.
fn first_page(path: &Path, ifds: &mut [IfdInfo]) -> Result<IfdInfo, SlideError> {
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
    match info.compression {
        COMPRESSION_NONE
        | COMPRESSION_LZW
        | COMPRESSION_JPEG
        | COMPRESSION_DEFLATE
        | COMPRESSION_OLD_DEFLATE
        | COMPRESSION_PACKBITS => {}
        APERIO_JP2K_YCBCR | APERIO_JP2K_RGB => {
            return Err(SlideError::Jpeg2000 {
                path: path.to_path_buf(),
                level: li,
                compression: info.compression,
            })
        }
        c => {
            return Err(unsupported(format!(
                "level {li} uses TIFF compression {c}, which the built-in reader does not \
                 decode (it reads none, LZW, deflate, PackBits and JPEG)"
            )))
        }
    }
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

/// Level `li` from its IFD: format checks, then its tile (or strip) offset and byte-count
/// tables, read through a decoder that is dropped afterwards.
fn build_level(file: &TiffFile, li: usize, info: &IfdInfo) -> Result<TiffLevel, SlideError> {
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
    // One entry per tile (or strip) of the level, or the level is broken.
    let mut table = |tag: Tag| -> Result<Vec<u64>, SlideError> {
        let v = d
            .find_tag_unsigned_vec::<u64>(tag)
            .map_err(|e| tiff_err(path, format!("level {li}: {tag:?}: {e}")))?
            .unwrap_or_default();
        if (v.len() as u64) < across.saturating_mul(down) {
            return Err(tiff_err(
                path,
                format!(
                    "level {li}: {} {tag:?} for {} tiles",
                    v.len(),
                    across.saturating_mul(down)
                ),
            ));
        }
        Ok(v)
    };
    let byte_counts = table(counts_tag)?;
    let offsets = table(offsets_tag)?;
    let lzw_predictor = if info.compression == COMPRESSION_LZW {
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
        Some(predictor)
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

/// The level-0 resolution the file records, in the documented order: Aperio `MPP`, TIFF
/// resolution in inches or centimetres, OME-XML `PhysicalSizeX`.
fn recorded_mpp(vendor: &str, ifd0: &IfdInfo, desc0: &str) -> Option<(f64, MppSource)> {
    let aperio = (vendor == "aperio")
        .then(|| {
            aperio_properties(desc0)
                .into_iter()
                .find(|(k, _)| k == "MPP")
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .and_then(plausible_mpp)
                .map(|m| (m, MppSource::Aperio))
        })
        .flatten();
    aperio
        .or_else(|| {
            let dividend = match ifd0.res_unit.unwrap_or(2) {
                2 => 25400.0,
                3 => 10000.0,
                _ => return None,
            };
            let x = ifd0.xres.filter(|r| *r > 0.0)?;
            ifd0.yres.filter(|r| *r > 0.0)?;
            plausible_mpp(dividend / x).map(|m| (m, MppSource::TiffResolution))
        })
        .or_else(|| {
            ome_physical_size_x(desc0)
                .and_then(plausible_mpp)
                .map(|m| (m, MppSource::OmeXml))
        })
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

    #[test]
    fn ome_physical_size() {
        let x = r#"<OME><Image><Pixels DimensionOrder="XYCZT" PhysicalSizeX="0.44" PhysicalSizeXUnit="nm" SizeX="1"></Pixels></Image></OME>"#;
        assert!((ome_physical_size_x(x).unwrap() - 0.00044).abs() < 1e-12);
        let d = r#"<Pixels PhysicalSizeX="0.5" SizeX="2">"#;
        assert_eq!(ome_physical_size_x(d), Some(0.5));
        assert_eq!(ome_physical_size_x("<Pixels SizeX=\"2\">"), None);
    }
}
