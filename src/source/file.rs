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
//!   runs by itself).
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

/// The budget for decoded pixels in flight, in bytes.
struct Budget {
    capacity: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Default for [`set_decode_budget`]: fits a laptop next to the model.
pub(crate) const DEFAULT_DECODE_BUDGET: u64 = 1 << 30;

/// Sets the decode memory budget; only the first call (before any decode) counts.
pub(crate) fn set_decode_budget(bytes: u64) {
    let _ = BUDGET.set(Budget {
        capacity: bytes.max(1),
        used: Mutex::new(0),
        freed: Condvar::new(),
    });
}

fn budget() -> &'static Budget {
    BUDGET.get_or_init(|| Budget {
        capacity: DEFAULT_DECODE_BUDGET,
        used: Mutex::new(0),
        freed: Condvar::new(),
    })
}

/// A reservation of decode memory, returned on drop.
struct Reservation(u64);

impl Reservation {
    fn take(bytes: u64) -> Reservation {
        let b = budget();
        let mut used = b.used.lock().unwrap_or_else(|e| e.into_inner());
        // Wait until it fits, or until nothing else is in flight.
        while *used > 0 && *used + bytes > b.capacity {
            used = b.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        Reservation(bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let b = budget();
        let mut used = b.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.0;
        b.freed.notify_all();
    }
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
    let rgb = guarded(|| preprocess::decode_rgb(&bytes, limits))?;
    Ok((rgb, crc32))
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
