//! Thumbnails (of images, of slide tiles and of whole slides), made on demand
//! with plip's own decoder and slide reader and kept in two bounded
//! caches: memory (the most recent few thousand) and a folder on disk (survives
//! restarts).
//!
//! A thumbnail is keyed by the file's absolute path, size and modification
//! time, so an edited image gets a new one. The decoder runs with the same
//! limits as indexing and behind `catch_unwind`, so a hostile file is a 404-style
//! error, never a crash. The disk cache is written temp-then-rename, so a reader
//! never sees half a file, and trimmed oldest-first once it passes its budget.
//!
//! The disk cache owns its folder and never deletes a file it did not write: it
//! marks the folder as its own ([`MARKER`]) when it creates or adopts it, refuses
//! a folder that holds anything else and no marker (a photo folder, an indexed
//! folder), and trims only names of the form it writes (`<16 hex digits>.jpg`).

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::index::Region;
use crate::output::{by_slide, thumb};
use crate::preprocess::{self, DecodeLimits};
use crate::source::slide::{OpenOptions, Slide};

/// Longest side of a thumbnail, in pixels (cards show about 220 CSS pixels;
/// this stays sharp on a 1.5x laptop screen).
pub(crate) const THUMB_SIDE: u32 = 320;
const JPEG_QUALITY: u8 = 82;
/// Bump when the thumbnail recipe changes, so old cached files are not reused.
const RECIPE: u64 = 2;

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThumbError {
    /// The file is gone or unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The decoder refused the file.
    #[error("cannot decode {path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
}

/// A JPEG thumbnail and the key it is cached under (also its ETag).
#[derive(Clone, Debug)]
pub(crate) struct Thumb {
    /// JPEG bytes.
    pub jpeg: Arc<[u8]>,
    /// Cache key, as 16 hex digits.
    pub key: String,
}

/// The two caches.
pub(crate) struct Thumbs {
    mem: Mutex<MemCache>,
    disk: Option<DiskCache>,
    limits: DecodeLimits,
}

impl Thumbs {
    /// `mem_bytes` bounds the memory cache; `disk` is a folder and its byte budget.
    pub(crate) fn new(
        mem_bytes: usize,
        disk: Option<(PathBuf, u64)>,
        limits: DecodeLimits,
    ) -> Self {
        Thumbs {
            mem: Mutex::new(MemCache::new(mem_bytes)),
            disk: disk.and_then(|(dir, budget)| match DiskCache::open(dir.clone(), budget) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!(
                        "plip: warning: no on-disk thumbnail cache at {}: {e}; thumbnails are cached in memory only",
                        dir.display()
                    );
                    None
                }
            }),
            limits,
        }
    }

    /// The thumbnail of `what` in the file at `path` (blocking: decodes on a miss).
    pub(crate) fn get(&self, path: &Path, what: &ThumbOf) -> Result<Thumb, ThumbError> {
        let read_err = |source| ThumbError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(read_err)?;
        if !meta.is_file() {
            return Err(read_err(std::io::Error::other("not a regular file")));
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let key = fnv1a(&[
            path.as_os_str().as_encoded_bytes(),
            &meta.len().to_le_bytes(),
            &mtime.to_le_bytes(),
            &RECIPE.to_le_bytes(),
            &THUMB_SIDE.to_le_bytes(),
            &what.key_bytes(),
        ]);
        if let Some(jpeg) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(Thumb {
                jpeg,
                key: hex(key),
            });
        }
        let jpeg: Arc<[u8]> = match self.disk.as_ref().and_then(|d| d.get(key)) {
            Some(bytes) => bytes.into(),
            None => {
                let bytes = make(path, what, &self.limits)?;
                if let Some(d) = &self.disk {
                    d.put(key, &bytes);
                }
                bytes.into()
            }
        };
        self.mem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, jpeg.clone());
        Ok(Thumb {
            jpeg,
            key: hex(key),
        })
    }
}

/// What a thumbnail shows of a file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ThumbOf {
    /// The whole image.
    Image,
    /// One tile of a slide, read as it was for the model.
    Tile(Region),
    /// A whole slide, from its pyramid.
    Slide,
}

impl ThumbOf {
    /// Bytes that tell the kinds (and tiles) apart in a cache key.
    fn key_bytes(&self) -> Vec<u8> {
        match self {
            ThumbOf::Image => b"image".to_vec(),
            ThumbOf::Slide => b"slide".to_vec(),
            ThumbOf::Tile(r) => {
                let (x, y, w, h) = r.key();
                let mut v = b"tile".to_vec();
                for n in [x, y, w, h] {
                    v.extend_from_slice(&n.to_le_bytes());
                }
                v
            }
        }
    }
}

/// Decodes `path` with plip's readers and limits (the image decoder, or the slide
/// reader for a tile or a slide), shrinks it to fit [`THUMB_SIDE`] and encodes a JPEG.
pub(crate) fn make(
    path: &Path,
    what: &ThumbOf,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, ThumbError> {
    let decode_err = |message: String| ThumbError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let bytes = match what {
        ThumbOf::Image => fs::read(path).map_err(|source| ThumbError::Read {
            path: path.to_path_buf(),
            source,
        })?,
        _ => Vec::new(),
    };
    // Decoders see bytes from disk that anyone may have put there; a decoder
    // panic costs this thumbnail only.
    let made = std::panic::catch_unwind(|| -> Result<Vec<u8>, String> {
        let rgb = match what {
            ThumbOf::Image => preprocess::decode_rgb(&bytes, limits).map_err(|e| e.to_string())?,
            ThumbOf::Tile(r) => by_slide::tile_crop(path, r).map_err(|e| e.to_string())?,
            ThumbOf::Slide => Slide::open(path, &OpenOptions::default())
                .and_then(|s| s.thumbnail(THUMB_SIDE))
                .map_err(|e| e.to_string())?,
        };
        let small = thumb::shrink(rgb, THUMB_SIDE, thumb::Shrink::Triangle);
        encode_jpeg(&small).map_err(|e| e.to_string())
    });
    match made {
        Ok(Ok(jpeg)) => Ok(jpeg),
        Ok(Err(m)) => Err(decode_err(m)),
        Err(_) => Err(decode_err("the image decoder crashed on this file".into())),
    }
}

/// The server's JPEG encoding (thumbnails and deep-zoom tiles).
pub(crate) fn encode_jpeg(img: &image::RgbImage) -> image::ImageResult<Vec<u8>> {
    thumb::jpeg(img, JPEG_QUALITY)
}

/// Most recently added thumbnails, at most `budget` bytes, oldest dropped first.
struct MemCache {
    map: HashMap<u64, Arc<[u8]>>,
    order: VecDeque<u64>,
    bytes: usize,
    budget: usize,
}

impl MemCache {
    fn new(budget: usize) -> Self {
        MemCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    fn get(&self, key: u64) -> Option<Arc<[u8]>> {
        self.map.get(&key).cloned()
    }

    fn put(&mut self, key: u64, value: Arc<[u8]>) {
        if value.len() > self.budget || self.map.contains_key(&key) {
            return;
        }
        self.bytes += value.len();
        self.map.insert(key, value);
        self.order.push_back(key);
        while self.bytes > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.map.remove(&old) {
                self.bytes -= v.len();
            }
        }
    }
}

/// The file that marks a folder as plip's thumbnail cache.
pub(crate) const MARKER: &str = ".plip-thumb-cache";
const MARKER_TEXT: &str = "This folder is plip's thumbnail cache (`plip serve --thumb-cache`).\n\
plip deletes the <16 hex digits>.jpg files in it to stay within its budget, and nothing else.\n";

/// A name the cache writes: `<16 lowercase hex digits>.jpg` (a thumbnail).
fn is_thumb_name(name: &str) -> bool {
    name.strip_suffix(".jpg").is_some_and(|k| {
        k.len() == 16
            && k.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A temporary name the cache writes: `.<16 hex digits>.<pid>.tmp`.
fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(k, pid)| {
            is_thumb_name(&format!("{k}.jpg"))
                && !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Makes `dir` the thumbnail cache's own folder: creates it with a [`MARKER`],
/// keeps it when it has one, adopts it when it holds only names the cache
/// writes (an older cache), and refuses anything else, untouched.
pub(crate) fn claim_dir(dir: &Path) -> Result<(), String> {
    let ctx = |e: std::io::Error| format!("thumbnail cache {}: {e}", dir.display());
    fs::create_dir_all(dir).map_err(ctx)?;
    let marker = dir.join(MARKER);
    if marker.is_file() {
        return Ok(());
    }
    let foreign = fs::read_dir(dir)
        .map_err(ctx)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| !is_thumb_name(n) && !is_temp_name(n));
    if let Some(name) = foreign {
        return Err(format!(
            "{} is not a plip thumbnail cache: it holds other files (such as {name:?}) and no {MARKER} \
             marker. The cache deletes old files in its folder, so it needs one of its own: give \
             --thumb-cache a new or empty folder, or use --no-thumb-cache",
            dir.display()
        ));
    }
    fs::write(&marker, MARKER_TEXT).map_err(ctx)
}

/// A folder of `<key>.jpg` files, trimmed oldest-first to `budget` bytes.
struct DiskCache {
    dir: PathBuf,
    budget: u64,
    bytes: AtomicU64,
    trim: Mutex<()>,
}

impl DiskCache {
    fn open(dir: PathBuf, budget: u64) -> Result<Self, String> {
        claim_dir(&dir)?;
        let cache = DiskCache {
            bytes: AtomicU64::new(0),
            dir,
            budget,
            trim: Mutex::new(()),
        };
        cache.trim_to(budget);
        Ok(cache)
    }

    fn file(&self, key: u64) -> PathBuf {
        self.dir.join(format!("{}.jpg", hex(key)))
    }

    fn get(&self, key: u64) -> Option<Vec<u8>> {
        let bytes = fs::read(self.file(key)).ok()?;
        // A JPEG starts with SOI; anything else is not ours (or was cut short by
        // something outside plip) and is made again.
        bytes.starts_with(&[0xFF, 0xD8]).then_some(bytes)
    }

    fn put(&self, key: u64, bytes: &[u8]) {
        let path = self.file(key);
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", hex(key), std::process::id()));
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            // A full or read-only disk only costs the cache.
            let _ = fs::remove_file(&tmp);
            return;
        }
        let total =
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if total > self.budget {
            // Down to 90%, so a full cache is not rescanned on every miss.
            self.trim_to(self.budget / 10 * 9);
        }
    }

    /// Deletes the oldest files until the folder holds at most `target` bytes,
    /// and recounts what is there.
    fn trim_to(&self, target: u64) {
        let Ok(_guard) = self.trim.try_lock() else {
            return; // another thread is trimming
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            // Only the names the cache writes, never anything else in the folder.
            .filter(|e| is_thumb_name(&e.file_name().to_string_lossy()))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in &files {
            if total <= target {
                break;
            }
            if fs::remove_file(path).is_ok() {
                total -= len;
            }
        }
        self.bytes.store(total, Ordering::Relaxed);
    }
}

/// 64-bit FNV-1a over several byte strings (a cache key, not a security hash).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hex(key: u64) -> String {
    format!("{key:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cache_stays_within_its_budget() {
        let mut c = MemCache::new(100);
        for k in 0..10u64 {
            c.put(k, vec![0u8; 30].into());
            assert!(c.bytes <= 100);
        }
        assert!(c.get(9).is_some() && c.get(0).is_none());
        c.put(99, vec![0u8; 101].into());
        assert!(
            c.get(99).is_none(),
            "an entry larger than the budget is not kept"
        );
    }

    #[test]
    fn disk_cache_is_trimmed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path().join("t"), 1000).unwrap();
        for k in 0..30u64 {
            let mut jpeg = vec![0xFF, 0xD8];
            jpeg.resize(100, 7);
            cache.put(k, &jpeg);
        }
        let total: u64 = fs::read_dir(dir.path().join("t"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| is_thumb_name(&e.file_name().to_string_lossy()))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(total <= 1000, "{total} bytes on disk");
        assert!(cache.get(29).is_some());
    }

    #[test]
    fn a_thumbnail_fits_the_box_and_a_broken_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_pixel(640, 200, image::Rgb([200, 40, 90]));
        let png = dir.path().join("a.png");
        img.save(&png).unwrap();
        let thumbs = Thumbs::new(
            1 << 20,
            Some((dir.path().join("c"), 1 << 20)),
            DecodeLimits::default(),
        );
        let t = thumbs.get(&png, &ThumbOf::Image).unwrap();
        let back = image::load_from_memory(&t.jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (THUMB_SIDE, 100));
        assert_eq!(
            thumbs.get(&png, &ThumbOf::Image).unwrap().key,
            t.key,
            "cached under the same key"
        );
        let bad = dir.path().join("bad.png");
        fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        assert!(matches!(
            thumbs.get(&bad, &ThumbOf::Image),
            Err(ThumbError::Decode { .. })
        ));
        assert!(matches!(
            thumbs.get(&dir.path().join("gone.png"), &ThumbOf::Image),
            Err(ThumbError::Read { .. })
        ));
    }
}
