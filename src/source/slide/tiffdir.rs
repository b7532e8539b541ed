//! The TIFF structure of a slide: the header, the IFD chain and each IFD's facts, read
//! through one shared file handle (OpenSlide's `openslide-decode-tiff.c` role).
//!
//! Guarantees:
//!
//! * One open file per slide, whatever the number of levels: every read is positional
//!   ([`TiffFile::read_exact_at`]), and the `tiff` crate's per-level decoders read through
//!   [`VirtualHeader`]s that share the handle.
//! * The IFD chain is walked once, with a cap of [`MAX_IFDS`]; a chain that loops (onto
//!   itself or onto any earlier IFD) keeps the IFDs before the loop, with a warning.
//! * ImageDescription is read as bytes and decoded lossily: a Latin-1 `User = Jörg` in an
//!   Aperio description does not make the slide unreadable (OpenSlide opens it too).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tiff::decoder::{ifd::Value, Decoder, Limits};
use tiff::tags::{IfdPointer, Tag};

use super::codec::PHOTOMETRIC_RGB;
use super::error::SlideError;

/// Most IFDs walked in one file (a guard against hostile chains).
const MAX_IFDS: usize = 4096;
/// Longest ImageDescription read (OME-XML of a big plate is a few MB).
const MAX_DESCRIPTION: u64 = 64 << 20;

/// What one IFD says about itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct IfdInfo {
    pub(crate) ptr: u64,
    pub(crate) width: u64,
    pub(crate) height: u64,
    /// TileWidth and TileLength, as recorded (checked when the IFD becomes a level).
    pub(crate) tile: Option<(u64, u64)>,
    /// RowsPerStrip of a stripped IFD (the image height when the tag is absent).
    pub(crate) rows_per_strip: Option<u64>,
    /// Whether `tile` is a stripped page's strips (full-width, the last one
    /// not padded).
    pub(crate) strips: bool,
    pub(crate) subfile: u32,
    pub(crate) compression: u16,
    pub(crate) photometric: u16,
    pub(crate) spp: u16,
    pub(crate) bps: u16,
    pub(crate) planar: u16,
    pub(crate) description: Option<String>,
    pub(crate) xres: Option<f64>,
    pub(crate) yres: Option<f64>,
    pub(crate) res_unit: Option<u16>,
    pub(crate) subifds: Vec<u64>,
}

pub(crate) type LevelDecoder = Decoder<BufReader<VirtualHeader>>;

#[derive(Clone, Copy)]
pub(crate) struct TiffHeader {
    pub(crate) little_endian: bool,
    pub(crate) bigtiff: bool,
    pub(crate) file_len: u64,
}

/// A `Read + Seek` view of the file in which the header points at a small
/// synthetic IFD placed just past the end of the file, whose "next IFD" is the
/// IFD we want. `tiff::Decoder::new` parses its first IFD with the default
/// limits (1 MiB of tag values, too little for the TileOffsets of a large
/// BigTIFF level); the dummy first IFD lets us raise the limits before the
/// real IFD is read, and lets a decoder start at any IFD, SubIFDs included.
///
/// It reads the shared file handle with positional reads (no handle per level), and can
/// hide one IFD's next-IFD pointer (`hide`), so that a decoder started at a level never
/// walks into the rest of the chain, nor into a loop there.
pub(crate) struct VirtualHeader {
    file: Arc<File>,
    pos: u64,
    hide: Option<(u64, u64)>,
    header: Vec<u8>,
    tail_at: u64,
    tail: Vec<u8>,
}

impl VirtualHeader {
    fn new(
        file: Arc<File>,
        h: TiffHeader,
        target: u64,
        hide: Option<(u64, u64)>,
    ) -> io::Result<Self> {
        // Place the dummy IFD at an even offset at or past the end of the file.
        let tail_at = (h.file_len + 1) & !1;
        let e = Endian(h.little_endian);
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(if h.little_endian { b"II" } else { b"MM" });
        let tail = if h.bigtiff {
            dummy_bigtiff(&e, &mut header, tail_at, target)
        } else {
            dummy_classic(&e, &mut header, tail_at, target)?
        };
        Ok(Self {
            file,
            pos: 0,
            hide,
            header,
            tail_at,
            tail,
        })
    }
}

/// The entries of the dummy IFD: a 1x1 8-bit grey uncompressed image, sorted by tag.
/// (tag, type SHORT=3 / LONG=4, value)
const DUMMY_ENTRIES: [(u16, u16, u32); 9] = [
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

/// Integers in the file's byte order (`true`: little-endian).
struct Endian(bool);

impl Endian {
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.0 {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    }

    fn u32(&self, v: u32) -> [u8; 4] {
        if self.0 {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    }

    fn u64(&self, v: u64) -> [u8; 8] {
        if self.0 {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    }
}

/// Completes a BigTIFF header pointing at `tail_at`, and returns the dummy IFD placed there,
/// whose next IFD is `target`.
fn dummy_bigtiff(e: &Endian, header: &mut Vec<u8>, tail_at: u64, target: u64) -> Vec<u8> {
    header.extend_from_slice(&e.u16(43));
    header.extend_from_slice(&e.u16(8));
    header.extend_from_slice(&e.u16(0));
    header.extend_from_slice(&e.u64(tail_at));
    let mut tail = Vec::with_capacity(256);
    tail.extend_from_slice(&e.u64(DUMMY_ENTRIES.len() as u64));
    for (tag, ty, v) in DUMMY_ENTRIES {
        tail.extend_from_slice(&e.u16(tag));
        tail.extend_from_slice(&e.u16(ty));
        tail.extend_from_slice(&e.u64(1));
        let mut val = [0u8; 8];
        if ty == 3 {
            val[..2].copy_from_slice(&e.u16(v as u16));
        } else {
            val[..4].copy_from_slice(&e.u32(v));
        }
        tail.extend_from_slice(&val);
    }
    tail.extend_from_slice(&e.u64(target));
    tail
}

/// Completes a classic TIFF header pointing at `tail_at`, and returns the dummy IFD placed
/// there, whose next IFD is `target`; an error when either offset is past 4 GiB.
fn dummy_classic(
    e: &Endian,
    header: &mut Vec<u8>,
    tail_at: u64,
    target: u64,
) -> io::Result<Vec<u8>> {
    let at =
        u32::try_from(tail_at).map_err(|_| io::Error::other("classic TIFF larger than 4 GiB"))?;
    let target = u32::try_from(target)
        .map_err(|_| io::Error::other("classic TIFF IFD offset past 4 GiB"))?;
    header.extend_from_slice(&e.u16(42));
    header.extend_from_slice(&e.u32(at));
    let mut tail = Vec::with_capacity(256);
    tail.extend_from_slice(&e.u16(DUMMY_ENTRIES.len() as u16));
    for (tag, ty, v) in DUMMY_ENTRIES {
        tail.extend_from_slice(&e.u16(tag));
        tail.extend_from_slice(&e.u16(ty));
        tail.extend_from_slice(&e.u32(1));
        let mut val = [0u8; 4];
        if ty == 3 {
            val[..2].copy_from_slice(&e.u16(v as u16));
        } else {
            val.copy_from_slice(&e.u32(v));
        }
        tail.extend_from_slice(&val);
    }
    tail.extend_from_slice(&e.u32(target));
    Ok(tail)
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
        let max = (self.tail_at - self.pos).min(buf.len() as u64) as usize;
        let n = pread(&self.file, &mut buf[..max], self.pos)?;
        if let Some((at, len)) = self.hide {
            // zero the bytes of [at, at + len) that this read returned
            let (lo, hi) = (self.pos.max(at), (self.pos + n as u64).min(at + len));
            if lo < hi {
                buf[(lo - self.pos) as usize..(hi - self.pos) as usize].fill(0);
            }
        }
        self.pos += n as u64;
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

/// One positional read (no shared cursor, so threads and levels share the handle).
#[cfg(unix)]
fn pread(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, at)
}

/// One positional read (no shared cursor, so threads and levels share the handle).
#[cfg(windows)]
fn pread(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, at)
}

fn limits() -> Limits {
    let mut l = Limits::default();
    // Tag values: TileOffsets of a 200k x 200k BigTIFF level are ~5 MB.
    l.ifd_value_size = 256 << 20;
    l
}

pub(crate) fn tiff_err(path: &Path, e: impl std::fmt::Display) -> SlideError {
    SlideError::Tiff {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// An open TIFF: its path, header and the one handle every read goes through.
pub(crate) struct TiffFile {
    pub(crate) path: PathBuf,
    pub(crate) header: TiffHeader,
    file: Arc<File>,
    pub(crate) first: u64,
}

/// The IFD chain: each IFD's facts, the offsets seen (for SubIFDs), and what was odd.
pub(crate) struct Chain {
    pub(crate) ifds: Vec<IfdInfo>,
    pub(crate) seen: HashSet<u64>,
    pub(crate) warnings: Vec<String>,
}

impl TiffFile {
    /// Opens `path` and reads its header.
    pub(crate) fn open(path: &Path) -> Result<TiffFile, SlideError> {
        let io_err = |source| SlideError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut t = TiffFile {
            path: path.to_path_buf(),
            header: TiffHeader {
                little_endian: true,
                bigtiff: false,
                file_len,
            },
            file: Arc::new(file),
            first: 0,
        };
        let mut b = [0u8; 16];
        t.read_exact_at(&mut b[..8], 0)
            .map_err(|_| tiff_err(path, "file shorter than a TIFF header"))?;
        t.header.little_endian = match &b[..2] {
            b"II" => true,
            b"MM" => false,
            _ => return Err(tiff_err(path, "no TIFF signature (II/MM)")),
        };
        t.header.bigtiff = match t.u16_at(&b[2..4]) {
            42 => false,
            43 => true,
            v => {
                return Err(tiff_err(
                    path,
                    format!("TIFF version {v} is neither 42 nor 43"),
                ))
            }
        };
        t.first = if t.header.bigtiff {
            t.read_exact_at(&mut b, 0)
                .map_err(|_| tiff_err(path, "truncated TIFF header"))?;
            t.u64_at(&b[8..16])
        } else {
            u64::from(t.u32_at(&b[4..8]))
        };
        Ok(t)
    }

    fn u16_at(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.header.little_endian {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }

    fn u32_at(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.header.little_endian {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }

    fn u64_at(&self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.header.little_endian {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }

    /// Fills `buf` from offset `at`; an error when the file ends first.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match pread(&self.file, &mut buf[done..], at + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ends {done} bytes into a {}-byte read", buf.len()),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `len` bytes at `at` (a tile's compressed bytes), refused when past the file's end.
    pub(crate) fn read_bytes(&self, at: u64, len: u64) -> io::Result<Vec<u8>> {
        if at
            .checked_add(len)
            .is_none_or(|end| end > self.header.file_len)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{len} bytes at offset {at} run past the end of the {}-byte file",
                    self.header.file_len
                ),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }

    /// A decoder positioned on the dummy IFD, with raised limits; used to read
    /// directories without interpreting them as images.
    pub(crate) fn raw_decoder(&self, ptr: u64) -> Result<LevelDecoder, SlideError> {
        self.decoder_with(ptr, None)
    }

    fn decoder_with(&self, ptr: u64, hide: Option<(u64, u64)>) -> Result<LevelDecoder, SlideError> {
        let v = VirtualHeader::new(Arc::clone(&self.file), self.header, ptr, hide)
            .map_err(|e| tiff_err(&self.path, e))?;
        Ok(Decoder::new(BufReader::with_capacity(64 << 10, v))
            .map_err(|e| tiff_err(&self.path, e))?
            .with_limits(limits()))
    }

    /// A decoder whose current image is the IFD at `ptr`, which it sees as the last of
    /// its chain.
    pub(crate) fn decoder_at(&self, ptr: u64) -> Result<LevelDecoder, SlideError> {
        let hide = self.next_field(ptr).ok();
        let mut d = self.decoder_with(ptr, hide)?;
        d.next_image()
            .map_err(|e| tiff_err(&self.path, format!("IFD at offset {ptr}: {e}")))?;
        Ok(d)
    }

    /// Where the next-IFD pointer of the IFD at `ptr` lies, and its length.
    fn next_field(&self, ptr: u64) -> io::Result<(u64, u64)> {
        let mut b = [0u8; 8];
        if self.header.bigtiff {
            self.read_exact_at(&mut b, ptr)?;
            let n = self.u64_at(&b);
            Ok((ptr + 8 + n.saturating_mul(20), 8))
        } else {
            self.read_exact_at(&mut b[..2], ptr)?;
            Ok((ptr + 2 + u64::from(self.u16_at(&b)) * 12, 4))
        }
    }

    /// The bytes of an ASCII (or BYTE/UNDEFINED) tag of the IFD at `ptr`, read raw.
    fn raw_tag_bytes(&self, ptr: u64, tag: u16) -> io::Result<Option<Vec<u8>>> {
        let big = self.header.bigtiff;
        let esize = if big { 20 } else { 12 };
        let entries_at = ptr + if big { 8 } else { 2 };
        let (next_at, _) = self.next_field(ptr)?;
        let n = (next_at - entries_at) / esize;
        let mut e = vec![0u8; esize as usize];
        for i in 0..n.min(1 << 16) {
            self.read_exact_at(&mut e, entries_at + i * esize)?;
            if self.u16_at(&e[0..2]) != tag {
                continue;
            }
            if !matches!(self.u16_at(&e[2..4]), 1 | 2 | 7) {
                return Ok(None);
            }
            let (count, inline) = if big {
                (self.u64_at(&e[4..12]), &e[12..20])
            } else {
                (u64::from(self.u32_at(&e[4..8])), &e[8..12])
            };
            if count > MAX_DESCRIPTION {
                return Ok(None);
            }
            if count <= inline.len() as u64 {
                return Ok(Some(inline[..count as usize].to_vec()));
            }
            let at = if big {
                self.u64_at(inline)
            } else {
                u64::from(self.u32_at(inline))
            };
            return self.read_bytes(at, count).map(Some);
        }
        Ok(None)
    }

    /// Walks the main IFD chain from the header. A loop (an IFD whose next pointer names
    /// itself or any IFD before it) ends the chain there, with a warning; so does
    /// [`MAX_IFDS`].
    pub(crate) fn walk_chain(&self, dec: &mut LevelDecoder) -> Result<Chain, SlideError> {
        let mut chain = Chain {
            ifds: Vec::new(),
            seen: HashSet::new(),
            warnings: Vec::new(),
        };
        let mut next = Some(self.first);
        while let Some(ptr) = next.filter(|&p| p != 0) {
            if chain.ifds.len() >= MAX_IFDS {
                chain.warnings.push(format!(
                    "{}: the TIFF has more than {MAX_IFDS} IFDs; the rest are ignored",
                    self.path.display()
                ));
                break;
            }
            if !chain.seen.insert(ptr) {
                chain.warnings.push(format!(
                    "{}: the TIFF's IFD chain loops back to offset {ptr} after {} IFD(s); the IFDs before the loop are read",
                    self.path.display(),
                    chain.ifds.len()
                ));
                break;
            }
            let (info, n) = self.read_ifd(dec, ptr).map_err(|e| {
                tiff_err(
                    &self.path,
                    format!("IFD {} at offset {ptr}: {e}", chain.ifds.len()),
                )
            })?;
            chain.ifds.push(info);
            next = n;
        }
        Ok(chain)
    }

    /// The facts of the IFD at `ptr`, and its next-IFD pointer.
    pub(crate) fn read_ifd(
        &self,
        dec: &mut LevelDecoder,
        ptr: u64,
    ) -> tiff::TiffResult<(IfdInfo, Option<u64>)> {
        let dir = dec.read_directory(IfdPointer(ptr))?;
        let next = dir.next().map(|p| p.0);
        let mut t = dec.read_directory_tags(&dir);
        let mut u = |tag: Tag| -> tiff::TiffResult<Option<u64>> {
            Ok(t.find_tag(tag)?.and_then(value_u64))
        };
        let mut info = IfdInfo {
            ptr,
            width: u(Tag::ImageWidth)?.unwrap_or(0),
            height: u(Tag::ImageLength)?.unwrap_or(0),
            subfile: u(Tag::NewSubfileType)?.unwrap_or(0) as u32,
            compression: u(Tag::Compression)?.unwrap_or(1) as u16,
            photometric: u(Tag::PhotometricInterpretation)?.unwrap_or(PHOTOMETRIC_RGB as u64)
                as u16,
            spp: u(Tag::SamplesPerPixel)?.unwrap_or(1) as u16,
            bps: u(Tag::BitsPerSample)?.unwrap_or(1) as u16,
            planar: u(Tag::PlanarConfiguration)?.unwrap_or(1) as u16,
            res_unit: u(Tag::ResolutionUnit)?.map(|v| v as u16),
            ..IfdInfo::default()
        };
        if let (Some(tw), Some(th)) = (u(Tag::TileWidth)?, u(Tag::TileLength)?) {
            info.tile = Some((tw, th));
        } else {
            info.rows_per_strip = Some(
                u(Tag::RowsPerStrip)?
                    .unwrap_or(info.height)
                    .min(info.height),
            );
        }
        info.xres = t.find_tag(Tag::XResolution)?.and_then(value_f64);
        info.yres = t.find_tag(Tag::YResolution)?.and_then(value_f64);
        info.subifds = t
            .find_tag(Tag::SubIfd)?
            .map(value_u64_vec)
            .unwrap_or_default();
        // Bytes, decoded lossily: the `tiff` crate refuses an ASCII value that is not UTF-8.
        info.description = self
            .raw_tag_bytes(ptr, Tag::ImageDescription.to_u16())?
            .map(|b| {
                let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
                String::from_utf8_lossy(&b[..end]).into_owned()
            });
        Ok((info, next))
    }
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
