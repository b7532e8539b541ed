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
//!   as a full-width tile, when a strip decodes to at most 32 MB.
//!   <https://github.com/openslide/openslide/blob/fe79a9713bef2bfd64bbfefd15704060764b1274/src/openslide-vendor-generic-tiff.c#L205-L266>
//! * OME-TIFF (an extension: OpenSlide 4.0.1 sees only IFD 0 of these): when
//!   IFD 0's description holds OME-XML and IFD 0 has SubIFDs (tag 330), the
//!   tiled SubIFDs are the reduced levels.
//!
//! Tiles are decoded with the `tiff` crate (one decoder per level behind a
//! mutex, so a level's IFD and tile offsets are parsed once). JPEG tiles come
//! back as raw components; as OpenSlide does, YCbCr is converted to RGB only
//! when Photometric=YCbCr, with libjpeg's fixed-point tables
//! ([`ycbcr_to_rgb`]). Decoded tiles are cached (see [`super::cache`]).
//! A panic inside the decoder is caught; the tile is reported as corrupt and
//! the level's decoder is rebuilt.
//!
//! LZW tiles are decoded here, not by the `tiff` crate: 0.11 with weezl 0.1
//! fails ("no lzw end code found") on valid tiles whose decoded size fills its
//! read buffer exactly (image-rs/image-tiff#395), which tifffile's LZW tiles
//! hit. [`decode_lzw_tile`] stops when the tile is full, as libtiff does.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tiff::decoder::{ifd::Value, Decoder, DecodingResult, Limits};
use tiff::tags::{IfdPointer, Tag};

use super::cache::{Tile, TileCache};
use super::error::SlideError;
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
/// Largest strip, in bytes of decoded RGBA, of a stripped page read as a
/// slide: strips are the cached unit, so one that holds the whole image (no
/// RowsPerStrip) would put it all in memory.
const MAX_STRIP_BYTES: u64 = 32 << 20;

/// Most IFDs walked in one file (a guard against hostile chains).
const MAX_IFDS: usize = 4096;

/// What one IFD says about itself.
#[derive(Debug, Clone, Default)]
struct IfdInfo {
    ptr: u64,
    width: u64,
    height: u64,
    tile: Option<(u32, u32)>,
    /// RowsPerStrip of a stripped IFD (the image height when the tag is absent).
    rows_per_strip: Option<u64>,
    /// Whether `tile` is a stripped page's strips (full-width, the last one
    /// not padded).
    strips: bool,
    subfile: u32,
    compression: u16,
    photometric: u16,
    spp: u16,
    bps: u16,
    planar: u16,
    description: Option<String>,
    xres: Option<f64>,
    yres: Option<f64>,
    res_unit: Option<u16>,
    subifds: Vec<u64>,
}

/// One pyramid level of a TIFF slide.
pub(crate) struct TiffLevel {
    pub(crate) width: u64,
    pub(crate) height: u64,
    pub(crate) tile_w: u32,
    pub(crate) tile_h: u32,
    pub(crate) across: u64,
    pub(crate) down: u64,
    ifd: u64,
    photometric: u16,
    spp: u16,
    byte_counts: Vec<u64>,
    decoder: Mutex<Option<LevelDecoder>>,
    /// LZW levels: tile offsets and the Predictor tag, for [`decode_lzw_tile`].
    lzw: Option<LzwLevel>,
    /// The level is a stripped page: its tiles are strips, and the last one
    /// holds only the rows left (tiles at the edge are padded to full size).
    strips: bool,
}

struct LzwLevel {
    offsets: Vec<u64>,
    predictor: u16,
}

type LevelDecoder = Decoder<BufReader<VirtualHeader>>;

/// A TIFF slide: levels, metadata and the decoded-tile cache.
pub(crate) struct TiffSlide {
    path: PathBuf,
    header: TiffHeader,
    pub(crate) levels: Vec<TiffLevel>,
    pub(crate) vendor: &'static str,
    pub(crate) mpp: Option<(f64, MppSource)>,
    pub(crate) cache: TileCache,
    /// Level 0 is tiled JPEG (tiled JPEG TIFFs are read as slides: the image
    /// path does not decode them).
    pub(crate) jpeg_level0: bool,
}

#[derive(Clone, Copy)]
struct TiffHeader {
    little_endian: bool,
    bigtiff: bool,
    file_len: u64,
}

/// A `Read + Seek` view of the file in which the header points at a small
/// synthetic IFD placed just past the end of the file, whose "next IFD" is the
/// IFD we want. `tiff::Decoder::new` parses its first IFD with the default
/// limits (1 MiB of tag values, too little for the TileOffsets of a large
/// BigTIFF level); the dummy first IFD lets us raise the limits before the
/// real IFD is read, and lets a decoder start at any IFD, SubIFDs included.
struct VirtualHeader {
    file: File,
    file_pos: Option<u64>,
    pos: u64,
    header: Vec<u8>,
    tail_at: u64,
    tail: Vec<u8>,
}

impl VirtualHeader {
    fn new(file: File, h: TiffHeader, target: u64) -> io::Result<Self> {
        // Place the dummy IFD at an even offset at or past the end of the file.
        let tail_at = (h.file_len + 1) & !1;
        let mut header = Vec::with_capacity(16);
        let mut tail = Vec::with_capacity(256);
        let e16 = |v: u16| {
            if h.little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let e32 = |v: u32| {
            if h.little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let e64 = |v: u64| {
            if h.little_endian {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        header.extend_from_slice(if h.little_endian { b"II" } else { b"MM" });
        // Entries of a 1x1 8-bit grey uncompressed image, sorted by tag.
        // (tag, type SHORT=3 / LONG=4, value)
        let entries: [(u16, u16, u32); 9] = [
            (256, 4, 1),
            (257, 4, 1),
            (258, 3, 8),
            (259, 3, 1),
            (262, 3, 1),
            (273, 4, 0),
            (277, 3, 1),
            (278, 4, 1),
            (279, 4, 1),
        ];
        if h.bigtiff {
            header.extend_from_slice(&e16(43));
            header.extend_from_slice(&e16(8));
            header.extend_from_slice(&e16(0));
            header.extend_from_slice(&e64(tail_at));
            tail.extend_from_slice(&e64(entries.len() as u64));
            for (tag, ty, v) in entries {
                tail.extend_from_slice(&e16(tag));
                tail.extend_from_slice(&e16(ty));
                tail.extend_from_slice(&e64(1));
                let mut val = [0u8; 8];
                if ty == 3 {
                    val[..2].copy_from_slice(&e16(v as u16));
                } else {
                    val[..4].copy_from_slice(&e32(v));
                }
                tail.extend_from_slice(&val);
            }
            tail.extend_from_slice(&e64(target));
        } else {
            let at = u32::try_from(tail_at)
                .map_err(|_| io::Error::other("classic TIFF larger than 4 GiB"))?;
            let target = u32::try_from(target)
                .map_err(|_| io::Error::other("classic TIFF IFD offset past 4 GiB"))?;
            header.extend_from_slice(&e16(42));
            header.extend_from_slice(&e32(at));
            tail.extend_from_slice(&e16(entries.len() as u16));
            for (tag, ty, v) in entries {
                tail.extend_from_slice(&e16(tag));
                tail.extend_from_slice(&e16(ty));
                tail.extend_from_slice(&e32(1));
                let mut val = [0u8; 4];
                if ty == 3 {
                    val[..2].copy_from_slice(&e16(v as u16));
                } else {
                    val.copy_from_slice(&e32(v));
                }
                tail.extend_from_slice(&val);
            }
            tail.extend_from_slice(&e32(target));
        }
        Ok(Self {
            file,
            file_pos: None,
            pos: 0,
            header,
            tail_at,
            tail,
        })
    }
}

impl Read for VirtualHeader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let hlen = self.header.len() as u64;
        if self.pos < hlen {
            let start = self.pos as usize;
            let n = buf.len().min(self.header.len() - start);
            buf[..n].copy_from_slice(&self.header[start..start + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        if self.pos >= self.tail_at {
            let start = (self.pos - self.tail_at) as usize;
            if start >= self.tail.len() {
                return Ok(0);
            }
            let n = buf.len().min(self.tail.len() - start);
            buf[..n].copy_from_slice(&self.tail[start..start + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        if self.file_pos != Some(self.pos) {
            self.file.seek(SeekFrom::Start(self.pos))?;
        }
        let max = (self.tail_at - self.pos).min(buf.len() as u64) as usize;
        let n = self.file.read(&mut buf[..max])?;
        self.pos += n as u64;
        self.file_pos = Some(self.pos);
        Ok(n)
    }
}

impl Seek for VirtualHeader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let end = self.tail_at + self.tail.len() as u64;
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => end.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::other("seek before the start of the file"))?;
        Ok(self.pos)
    }
}

fn limits() -> Limits {
    let mut l = Limits::default();
    // Tag values: TileOffsets of a 200k x 200k BigTIFF level are ~5 MB.
    l.ifd_value_size = 256 << 20;
    l
}

fn tiff_err(path: &Path, e: impl std::fmt::Display) -> SlideError {
    SlideError::Tiff {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn read_header(path: &Path) -> Result<TiffHeader, SlideError> {
    let io_err = |source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let file_len = f.metadata().map_err(io_err)?.len();
    let mut b = [0u8; 4];
    f.read_exact(&mut b)
        .map_err(|_| tiff_err(path, "file shorter than a TIFF header"))?;
    let little_endian = match &b[..2] {
        b"II" => true,
        b"MM" => false,
        _ => return Err(tiff_err(path, "no TIFF signature (II/MM)")),
    };
    let version = if little_endian {
        u16::from_le_bytes([b[2], b[3]])
    } else {
        u16::from_be_bytes([b[2], b[3]])
    };
    let bigtiff = match version {
        42 => false,
        43 => true,
        v => {
            return Err(tiff_err(
                path,
                format!("TIFF version {v} is neither 42 nor 43"),
            ))
        }
    };
    let mut first = [0u8; 12];
    let n = if bigtiff { 12 } else { 4 };
    f.read_exact(&mut first[..n])
        .map_err(|_| tiff_err(path, "truncated TIFF header"))?;
    Ok(TiffHeader {
        little_endian,
        bigtiff,
        file_len,
    })
}

fn first_ifd(path: &Path, h: TiffHeader) -> Result<u64, SlideError> {
    let mut f = File::open(path).map_err(|source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut b = [0u8; 16];
    f.read_exact(&mut b[..if h.bigtiff { 16 } else { 8 }])
        .map_err(|_| tiff_err(path, "truncated TIFF header"))?;
    Ok(if h.bigtiff {
        let a: [u8; 8] = b[8..16].try_into().unwrap_or_default();
        if h.little_endian {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    } else {
        let a: [u8; 4] = b[4..8].try_into().unwrap_or_default();
        u64::from(if h.little_endian {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    })
}

/// A decoder positioned on the dummy IFD, with raised limits; used to read
/// directories without interpreting them as images.
fn raw_decoder(path: &Path, h: TiffHeader, ptr: u64) -> Result<LevelDecoder, SlideError> {
    let file = File::open(path).map_err(|source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let v = VirtualHeader::new(file, h, ptr).map_err(|e| tiff_err(path, e))?;
    Ok(Decoder::new(BufReader::with_capacity(64 << 10, v))
        .map_err(|e| tiff_err(path, e))?
        .with_limits(limits()))
}

/// A decoder whose current image is the IFD at `ptr`.
fn decoder_at(path: &Path, h: TiffHeader, ptr: u64) -> Result<LevelDecoder, SlideError> {
    let mut d = raw_decoder(path, h, ptr)?;
    d.next_image()
        .map_err(|e| tiff_err(path, format!("IFD at offset {ptr}: {e}")))?;
    Ok(d)
}

fn value_f64(v: Value) -> Option<f64> {
    #[allow(deprecated)]
    match v {
        Value::Rational(n, d) if d != 0 => Some(f64::from(n) / f64::from(d)),
        Value::RationalBig(n, d) if d != 0 => Some(n as f64 / d as f64),
        Value::Float(f) => Some(f64::from(f)),
        Value::Double(f) => Some(f),
        Value::Short(s) => Some(f64::from(s)),
        Value::Unsigned(u) => Some(f64::from(u)),
        Value::List(mut l) if !l.is_empty() => value_f64(l.swap_remove(0)),
        _ => None,
    }
}

fn value_u64(v: Value) -> Option<u64> {
    match v {
        Value::Byte(b) => Some(u64::from(b)),
        Value::Short(s) => Some(u64::from(s)),
        Value::Unsigned(u) => Some(u64::from(u)),
        Value::UnsignedBig(u) => Some(u),
        Value::Ifd(u) => Some(u64::from(u)),
        Value::IfdBig(u) => Some(u),
        Value::List(mut l) if !l.is_empty() => value_u64(l.swap_remove(0)),
        _ => None,
    }
}

fn value_u64_vec(v: Value) -> Vec<u64> {
    match v {
        Value::List(l) => l.into_iter().filter_map(value_u64).collect(),
        other => value_u64(other).into_iter().collect(),
    }
}

fn read_ifd(dec: &mut LevelDecoder, ptr: u64) -> tiff::TiffResult<(IfdInfo, Option<u64>)> {
    let dir = dec.read_directory(IfdPointer(ptr))?;
    let next = dir.next().map(|p| p.0);
    let mut t = dec.read_directory_tags(&dir);
    let mut u =
        |tag: Tag| -> tiff::TiffResult<Option<u64>> { Ok(t.find_tag(tag)?.and_then(value_u64)) };
    let mut info = IfdInfo {
        ptr,
        width: u(Tag::ImageWidth)?.unwrap_or(0),
        height: u(Tag::ImageLength)?.unwrap_or(0),
        subfile: u(Tag::NewSubfileType)?.unwrap_or(0) as u32,
        compression: u(Tag::Compression)?.unwrap_or(1) as u16,
        photometric: u(Tag::PhotometricInterpretation)?.unwrap_or(PHOTOMETRIC_RGB as u64) as u16,
        spp: u(Tag::SamplesPerPixel)?.unwrap_or(1) as u16,
        bps: u(Tag::BitsPerSample)?.unwrap_or(1) as u16,
        planar: u(Tag::PlanarConfiguration)?.unwrap_or(1) as u16,
        res_unit: u(Tag::ResolutionUnit)?.map(|v| v as u16),
        ..IfdInfo::default()
    };
    if let (Some(tw), Some(th)) = (u(Tag::TileWidth)?, u(Tag::TileLength)?) {
        if tw > 0 && th > 0 && tw <= 1 << 16 && th <= 1 << 16 {
            info.tile = Some((tw as u32, th as u32));
        }
    } else {
        info.rows_per_strip = Some(
            u(Tag::RowsPerStrip)?
                .unwrap_or(info.height)
                .min(info.height),
        );
    }
    info.description = match t.find_tag(Tag::ImageDescription)? {
        Some(Value::Ascii(s)) => Some(s),
        _ => None,
    };
    info.xres = t.find_tag(Tag::XResolution)?.and_then(value_f64);
    info.yres = t.find_tag(Tag::YResolution)?.and_then(value_f64);
    info.subifds = t
        .find_tag(Tag::SubIfd)?
        .map(value_u64_vec)
        .unwrap_or_default();
    Ok((info, next))
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
        let header = read_header(path)?;
        let first = first_ifd(path, header)?;
        let mut dec = raw_decoder(path, header, first)?;

        // Walk the main IFD chain.
        let mut ifds = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(first);
        while let Some(ptr) = next {
            if ptr == 0 || !seen.insert(ptr) || ifds.len() >= MAX_IFDS {
                break;
            }
            let (info, n) = read_ifd(&mut dec, ptr)
                .map_err(|e| tiff_err(path, format!("IFD {} at offset {ptr}: {e}", ifds.len())))?;
            ifds.push(info);
            next = n;
        }
        let ifd0 = ifds
            .first()
            .cloned()
            .ok_or_else(|| tiff_err(path, "no IFD"))?;
        // A stripped first page is read strip by strip, each strip a full-width
        // tile, when the strips are small enough to cache; any other stripped
        // page (a thumbnail, label or macro) is never a level.
        let mut ifd0 = ifd0;
        if ifd0.tile.is_none() {
            let rows = ifd0.rows_per_strip.unwrap_or(ifd0.height).max(1);
            let strip_bytes = ifd0.width.saturating_mul(rows).saturating_mul(4);
            if ifd0.width > u64::from(u32::MAX) || strip_bytes > MAX_STRIP_BYTES {
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
            ifd0.tile = Some((ifd0.width as u32, rows as u32));
            ifd0.strips = true;
            ifds[0] = ifd0.clone();
        }
        let desc0 = ifd0.description.clone().unwrap_or_default();

        let (vendor, chosen): (&'static str, Vec<IfdInfo>) = if desc0.starts_with("Aperio") {
            (
                "aperio",
                ifds.iter().filter(|i| i.tile.is_some()).cloned().collect(),
            )
        } else if desc0.contains("<OME") && !ifd0.subifds.is_empty() {
            let mut v = vec![ifd0.clone()];
            for &p in &ifd0.subifds {
                if seen.insert(p) {
                    let (info, _) = read_ifd(&mut dec, p)
                        .map_err(|e| tiff_err(path, format!("SubIFD at offset {p}: {e}")))?;
                    if info.tile.is_some() {
                        v.push(info);
                    }
                }
            }
            v.sort_by_key(|b| std::cmp::Reverse(b.width));
            ("ome-tiff", v)
        } else {
            let mut v: Vec<IfdInfo> = ifds
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

        let mut levels = Vec::with_capacity(chosen.len());
        for (li, info) in chosen.iter().enumerate() {
            let (tile_w, tile_h) = info.tile.unwrap_or((1, 1));
            if info.width == 0 || info.height == 0 {
                return Err(tiff_err(path, format!("level {li} has zero size")));
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
                    return Err(SlideError::Unsupported {
                        path: path.to_path_buf(),
                        msg: format!(
                            "level {li} uses TIFF compression {c}, which the built-in reader does \
                             not decode (it reads none, LZW, deflate, PackBits and JPEG)"
                        ),
                    })
                }
            }
            if info.bps != 8 || !matches!(info.spp, 1 | 3 | 4) || info.planar != 1 {
                return Err(SlideError::Unsupported {
                    path: path.to_path_buf(),
                    msg: format!(
                        "level {li} has {} samples of {} bits (planar config {}); only 8-bit \
                         interleaved grey, RGB or RGBA is read",
                        info.spp, info.bps, info.planar
                    ),
                });
            }
            // Grey is white- or black-is-zero (the tag's default is taken as RGB,
            // so an untagged grey page passes); colour is RGB or YCbCr. Palette,
            // CMYK, CIELab and the rest would be read as grey or RGB, wrongly.
            let colour_ok = match info.spp {
                1 => info.photometric <= PHOTOMETRIC_RGB,
                _ => matches!(info.photometric, PHOTOMETRIC_RGB | PHOTOMETRIC_YCBCR),
            };
            if !colour_ok {
                return Err(SlideError::Unsupported {
                    path: path.to_path_buf(),
                    msg: format!(
                        "level {li} has photometric interpretation {} with {} samples; only \
                         grey, RGB and YCbCr are read",
                        info.photometric, info.spp
                    ),
                });
            }
            if info.photometric == PHOTOMETRIC_YCBCR && info.compression != COMPRESSION_JPEG {
                return Err(SlideError::Unsupported {
                    path: path.to_path_buf(),
                    msg: format!("level {li} is YCbCr without JPEG compression"),
                });
            }
            let across = info.width.div_ceil(u64::from(tile_w));
            let down = info.height.div_ceil(u64::from(tile_h));
            let mut d = decoder_at(path, header, info.ptr)?;
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
                if (v.len() as u64) < across * down {
                    return Err(tiff_err(
                        path,
                        format!(
                            "level {li}: {} {tag:?} for {} tiles",
                            v.len(),
                            across * down
                        ),
                    ));
                }
                Ok(v)
            };
            let byte_counts = table(counts_tag)?;
            let lzw = if info.compression == COMPRESSION_LZW {
                let offsets = table(offsets_tag)?;
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
                Some(LzwLevel { offsets, predictor })
            } else {
                None
            };
            levels.push(TiffLevel {
                width: info.width,
                height: info.height,
                tile_w,
                tile_h,
                across,
                down,
                ifd: info.ptr,
                photometric: info.photometric,
                spp: info.spp,
                byte_counts,
                decoder: Mutex::new(Some(d)),
                lzw,
                strips: info.strips,
            });
        }
        // OpenSlide refuses slides whose downsamples are not increasing.
        for w in levels.windows(2) {
            if w[1].width > w[0].width || w[1].height > w[0].height {
                return Err(tiff_err(path, "pyramid levels are not ordered by size"));
            }
        }

        // Resolution, in the documented order.
        let mpp = if vendor == "aperio" {
            aperio_properties(&desc0)
                .into_iter()
                .find(|(k, _)| k == "MPP")
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .and_then(plausible_mpp)
                .map(|m| (m, MppSource::Aperio))
        } else {
            None
        };
        let mpp = mpp.or_else(|| {
            let dividend = match ifd0.res_unit.unwrap_or(2) {
                2 => 25400.0,
                3 => 10000.0,
                _ => return None,
            };
            let x = ifd0.xres.filter(|r| *r > 0.0)?;
            ifd0.yres.filter(|r| *r > 0.0)?;
            plausible_mpp(dividend / x).map(|m| (m, MppSource::TiffResolution))
        });
        let mpp = mpp.or_else(|| {
            ome_physical_size_x(&desc0)
                .and_then(plausible_mpp)
                .map(|m| (m, MppSource::OmeXml))
        });

        Ok(Self {
            path: path.to_path_buf(),
            header,
            levels,
            vendor,
            mpp,
            cache: TileCache::new(cache_bytes),
            jpeg_level0: chosen[0].compression == COMPRESSION_JPEG && !chosen[0].strips,
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
                path: self.path.clone(),
                level,
                count: self.levels.len(),
            })?;
        let index = row * l.across + col;
        if let Some(t) = self.cache.get((level, index)) {
            return Ok(t);
        }
        let corrupt = |msg: String| SlideError::CorruptTile {
            path: self.path.clone(),
            level,
            col,
            row,
            index,
            msg,
        };
        if col >= l.across || row >= l.down {
            return Err(corrupt("tile outside the level".into()));
        }
        if l.byte_counts.get(index as usize).copied() == Some(0) {
            return Err(SlideError::MissingTile {
                path: self.path.clone(),
                level,
                col,
                row,
                index,
            });
        }
        let chunk = u32::try_from(index).map_err(|_| corrupt("tile index past u32".into()))?;
        let decoded = if let Some(lzw) = &l.lzw {
            let i = index as usize;
            let raw = read_at(&self.path, lzw.offsets[i], l.byte_counts[i])
                .map_err(|e| corrupt(format!("cannot read the tile's bytes: {e}")))?;
            let spp = usize::from(l.spp);
            let w = (l.width - col * u64::from(l.tile_w)).min(u64::from(l.tile_w)) as u32;
            let h = (l.height - row * u64::from(l.tile_h)).min(u64::from(l.tile_h)) as u32;
            let coded_rows = if l.strips { h } else { l.tile_h };
            let full = decode_lzw_tile(&raw, l.tile_w as usize * spp, coded_rows as usize)
                .map_err(corrupt)?;
            let data = crop_rows(
                full,
                l.tile_w as usize * spp,
                w as usize * spp,
                h as usize,
                lzw.predictor,
                spp,
            );
            ((w, h), DecodingResult::U8(data))
        } else {
            let mut guard = l.decoder.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                *guard = Some(decoder_at(&self.path, self.header, l.ifd)?);
            }
            let Some(dec) = guard.as_mut() else {
                return Err(corrupt("no decoder".into()));
            };
            let r = catch_unwind(AssertUnwindSafe(|| {
                let dims = dec.chunk_data_dimensions(chunk);
                dec.read_chunk(chunk).map(|d| (dims, d))
            }));
            match r {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(corrupt(e.to_string())),
                Err(p) => {
                    // The decoder's state is unknown after a panic: rebuild it.
                    *guard = None;
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(corrupt(format!("decoder panicked: {what}")));
                }
            }
        };
        self.cache.note_decode();
        let ((w, h), data) = decoded;
        let DecodingResult::U8(data) = data else {
            return Err(corrupt("not 8-bit samples".into()));
        };
        let npx = w as usize * h as usize;
        let spp = usize::from(l.spp);
        if npx == 0 || data.len() < npx * spp {
            return Err(corrupt(format!(
                "decoded {} bytes for a {w}x{h} tile with {spp} samples",
                data.len()
            )));
        }
        let rgb = match spp {
            3 => {
                let mut d = data;
                d.truncate(npx * 3);
                if l.photometric == PHOTOMETRIC_YCBCR {
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
                let inv = l.photometric == PHOTOMETRIC_MINISWHITE;
                data.iter()
                    .take(npx)
                    .flat_map(|&g| {
                        let g = if inv { 255 - g } else { g };
                        [g, g, g]
                    })
                    .collect()
            }
        };
        let t = Arc::new(Tile { w, h, rgb });
        if store {
            self.cache.put((level, index), Arc::clone(&t));
        }
        Ok(t)
    }
}

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

/// Reads `len` bytes at `offset` of `path` (a tile's compressed bytes).
fn read_at(path: &Path, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ends {} bytes into a {len}-byte tile", buf.len()),
        ));
    }
    Ok(buf)
}

/// Decodes one LZW tile (TIFF flavour: MSB first, early code-size switch) of
/// `rows` rows of `row_bytes` bytes. Decoding stops once the tile is full, with
/// or without an end-of-information code after it, as libtiff does; a stream
/// that ends before the tile is full is an error.
fn decode_lzw_tile(raw: &[u8], row_bytes: usize, rows: usize) -> Result<Vec<u8>, String> {
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
fn crop_rows(
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
