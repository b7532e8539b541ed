//! Reading one image file: its identity facts (size, mtime, CRC32) and its
//! pixels, with every guard an untrusted file needs.
//!
//! * Only regular files are opened: a FIFO or a device named by a CSV would
//!   block or never end.
//! * The header is read first, and an image over the pixel or memory limits is
//!   refused before the file is read whole (a 3 GB TIFF costs a few KB).
//! * Decoded pixels in flight share one memory budget (`--decode-memory`), so
//!   peak memory does not grow with the thread count: a decode that does not
//!   fit waits until others finish (one that alone is larger than the budget
//!   runs by itself). Slide tiles take their share too ([`reserve_decode`]).
//! * A decoder panic (a bug in a decoder fed a hostile file) skips the file; it
//!   never ends the run.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::UNIX_EPOCH;

use image::RgbImage;

use crate::preprocess::{self, DecodeLimits, ImageProcessorConfig};

/// One image, read and preprocessed.
pub struct LoadedImage {
    /// CHW pixels.
    pub pixels: Vec<f32>,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch (taken before reading).
    pub mtime_ns: i128,
    /// CRC32 of the bytes that were decoded.
    pub crc32: u32,
}

/// Size and mtime of a file, as stored in the index.
pub(crate) fn stat(path: &Path) -> std::io::Result<(u64, i128)> {
    let m = std::fs::metadata(path)?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    Ok((m.len(), mtime))
}

/// Opens `path` for reading if it is a regular file (after following links).
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            std::io::Error::new(e.kind(), "does not exist")
        } else {
            e
        }
    })?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a pipe, socket or device)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}; only image files can be read"),
        ));
    }
    File::open(path)
}

/// CRC32 of a file's bytes, read in chunks.
pub(crate) fn file_crc(path: &Path) -> std::io::Result<u32> {
    let mut f = open_regular(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

/// The budget for decoded pixels in flight, in bytes. Its capacity is a value a
/// run sets (`--decode-memory`, Python's `decode_memory=`), not a first-caller-wins
/// setting: a later run in the same process (a Python session) may set another.
struct Budget {
    capacity: std::sync::atomic::AtomicU64,
    used: Mutex<u64>,
    freed: Condvar,
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Default for [`set_decode_budget`]: fits a laptop next to the model.
pub(crate) const DEFAULT_DECODE_BUDGET: u64 = 1 << 30;

/// Sets the decode memory budget from now on; decodes in flight keep what they hold,
/// and waiting ones are woken to check against the new capacity.
pub(crate) fn set_decode_budget(bytes: u64) {
    let b = budget();
    let _used = b.used.lock().unwrap_or_else(|e| e.into_inner());
    b.capacity
        .store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
    b.freed.notify_all();
}

fn budget() -> &'static Budget {
    BUDGET.get_or_init(|| Budget {
        capacity: std::sync::atomic::AtomicU64::new(DEFAULT_DECODE_BUDGET),
        used: Mutex::new(0),
        freed: Condvar::new(),
    })
}

/// A reservation of decode memory, returned on drop.
pub(crate) struct Reservation(u64);

thread_local! {
    /// Reservations this thread holds (a slide tile decoded inside an image decode, by the
    /// TIFF fallback, must not wait for the memory its own thread holds).
    static HELD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl Reservation {
    fn take(bytes: u64) -> Reservation {
        let b = budget();
        let mut used = b.used.lock().unwrap_or_else(|e| e.into_inner());
        // Wait until it fits, or until nothing else is in flight (or this thread holds
        // some of what is).
        let nested = HELD.with(|h| h.get() > 0);
        while !nested
            && *used > 0
            && *used + bytes > b.capacity.load(std::sync::atomic::Ordering::Relaxed)
        {
            used = b.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        HELD.with(|h| h.set(h.get() + 1));
        Reservation(bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
        let b = budget();
        let mut used = b.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.0;
        b.freed.notify_all();
    }
}

/// The `--decode-memory` budget, in bytes.
#[cfg(test)]
pub(crate) fn decode_budget_bytes() -> u64 {
    budget().capacity.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reserves `bytes` of the `--decode-memory` budget for a decode outside this module (a
/// slide's stored tile), waiting as an image decode waits; returned when dropped.
pub(crate) fn reserve_decode(bytes: u64) -> Reservation {
    Reservation::take(bytes)
}

/// Reads and decodes `path` to RGB as Pillow's `Image.open(p).convert("RGB")`
/// would, with every guard of this module. Returns the pixels and the CRC32 of
/// the bytes decoded.
pub(crate) fn read_rgb(path: &Path, limits: &DecodeLimits) -> Result<(RgbImage, u32), String> {
    let mut file = open_regular(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Err(preprocess::ImageError::Empty.to_string());
    }
    // The header alone says whether the image fits the limits, and how much
    // memory decoding it takes.
    let needed = guarded(|| preprocess::probe(BufReader::new(&mut file), limits))?;
    let _reservation = Reservation::take(needed.saturating_add(len));
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let crc32 = crc32fast::hash(&bytes);
    let rgb = match guarded(|| preprocess::decode_rgb(&bytes, limits)) {
        Ok(rgb) => rgb,
        Err(e) if is_tiff(&bytes) => tiff_by_tiles(path).map_err(|slide_err| {
            // The slide reader's message says what is wrong with a TIFF slide; the image
            // decoder's (such as "color type Unknown(24)") rarely does.
            format!("{slide_err}; as an image: {e}")
        })?,
        Err(e) => return Err(e),
    };
    Ok((rgb, crc32))
}

/// Whether `bytes` start with a TIFF or BigTIFF header.
fn is_tiff(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(..4),
        Some(b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+")
    )
}

/// A TIFF the image crate could not decode, read with the whole-slide reader
/// instead: its first page, in strips of [`STRIP_ROWS`] rows. The `tiff` crate
/// 0.11 fails on valid LZW tiles whose decoded data fills its buffer
/// (image-rs/image-tiff#395), which the slide reader decodes itself; pixels are
/// the file's own (the codecs it reads are lossless or JPEG, decoded as
/// libjpeg does), alpha dropped as Pillow's `convert("RGB")` drops it.
/// The slide reader's error when it cannot read the file either.
fn tiff_by_tiles(path: &Path) -> Result<RgbImage, String> {
    use crate::source::slide::{OpenOptions, Slide};
    const STRIP_ROWS: u32 = 512;
    let read = || -> Result<RgbImage, String> {
        let opts = OpenOptions {
            user_mpp: None,
            cache_bytes: 16 << 20,
        };
        let slide = Slide::open(path, &opts).map_err(|e| e.to_string())?;
        let l0 = slide.levels().first().ok_or("the TIFF has no level")?;
        let too_big = || format!("{}x{} pixels is too large an image", l0.width, l0.height);
        let w = u32::try_from(l0.width).map_err(|_| too_big())?;
        let h = u32::try_from(l0.height).map_err(|_| too_big())?;
        let mut out = RgbImage::new(w, h);
        let row_bytes = w as usize * 3;
        for y in (0..h).step_by(STRIP_ROWS as usize) {
            let rows = STRIP_ROWS.min(h - y);
            let strip = slide
                .read_region(0, i64::from(y), 0, w, rows)
                .map_err(|e| e.to_string())?;
            let at = y as usize * row_bytes;
            out.as_mut()[at..at + strip.as_raw().len()].copy_from_slice(strip.as_raw());
        }
        Ok(out)
    };
    std::panic::catch_unwind(read)
        .unwrap_or_else(|_| Err("the slide reader crashed on this file".into()))
}

/// Runs a decoder step, turning its error or its panic into a message.
fn guarded<T>(f: impl FnOnce() -> Result<T, preprocess::ImageError>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the image decoder crashed on this file".into()),
    }
}

/// Reads, decodes and preprocesses one image file for the model.
pub(crate) fn load_image(
    path: &Path,
    cfg: &ImageProcessorConfig,
    limits: &DecodeLimits,
) -> Result<LoadedImage, String> {
    let (size, mtime_ns) = stat(path).map_err(|e| e.to_string())?;
    let (rgb, crc32) = read_rgb(path, limits)?;
    let pixels = std::panic::catch_unwind(|| preprocess::preprocess(&rgb, cfg))
        .map_err(|_| "preprocessing crashed on this image".to_string())?;
    Ok(LoadedImage {
        pixels,
        size,
        mtime_ns,
        crc32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/tiff")
            .join(name)
    }

    #[test]
    fn a_tiled_lzw_tiff_the_image_crate_fails_on_is_read_by_the_slide_reader() {
        // One 64 x 64 LZW tile holding an 8 x 64 image (fixtures/make_slides.py).
        let tif = fixture("plain_lzw.tif");
        let limits = DecodeLimits::default();
        let bytes = std::fs::read(&tif).unwrap();
        let (png, _) = read_rgb(&fixture("plain_lzw.png"), &limits).unwrap();
        assert_eq!(png.dimensions(), (8, 64));
        let by_tiles = tiff_by_tiles(&tif).expect("the slide reader reads it");
        assert!(
            by_tiles.as_raw() == png.as_raw(),
            "pixels differ from the PNG"
        );
        let (rgb, crc) = read_rgb(&tif, &limits).unwrap();
        assert!(
            rgb.as_raw() == png.as_raw(),
            "read_rgb's pixels differ from the PNG"
        );
        assert_eq!(crc, crc32fast::hash(&bytes));
        // What the fallback is for; when the `tiff` crate is fixed, this
        // fails and the fallback can go.
        assert!(preprocess::decode_rgb(&bytes, &limits).is_err());
    }

    #[test]
    fn a_tiff_neither_decoder_reads_shows_the_slide_readers_message_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.tif");
        let bytes = std::fs::read(fixture("plain_lzw.tif")).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_rgb(&path, &DecodeLimits::default()).unwrap_err();
        assert!(
            err.contains("cut.tif: "),
            "the slide reader's error first: {err}"
        );
        assert!(err.contains("; as an image: "), "{err}");
        assert!(err.contains("decode"), "{err}");
    }
}
