//! Reading one image file for embedding: its identity facts (size, mtime, CRC32)
//! and its pixels, decoded with limits and guarded against decoder panics.

use std::path::Path;
use std::time::UNIX_EPOCH;

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

/// CRC32 of a file's bytes.
pub(crate) fn file_crc(path: &Path) -> std::io::Result<u32> {
    Ok(crc32fast::hash(&std::fs::read(path)?))
}

pub(crate) fn load_image(
    path: &Path,
    cfg: &ImageProcessorConfig,
    limits: &DecodeLimits,
) -> std::result::Result<LoadedImage, String> {
    let (size, mtime_ns) = stat(path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let crc32 = crc32fast::hash(&bytes);
    // Decoders are fed untrusted bytes; should one of them panic on a malformed file
    // (a bug there), that file is skipped rather than the whole run lost.
    let decoded = std::panic::catch_unwind(|| {
        preprocess::decode_rgb(&bytes, limits).map(|rgb| preprocess::preprocess(&rgb, cfg))
    });
    let pixels = match decoded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("the image decoder crashed on this file".into()),
    };
    Ok(LoadedImage {
        pixels,
        size,
        mtime_ns,
        crc32,
    })
}
