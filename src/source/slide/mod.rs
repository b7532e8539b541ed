//! Whole-slide images (WSI): a pure-Rust reader for tiled TIFF slides (Aperio `.svs`,
//! generic pyramidal TIFF/BigTIFF, OME-TIFF), OpenSlide loaded at run time for every other
//! format, tissue detection ([`tissue`]), the tiling grid ([`grid`]) and the tile plan the
//! indexing job reads model inputs from ([`tiles`]). `job/slides.rs` indexes slides through
//! it; `cli/slides.rs` (heatmap, tile previews) and `query` (a region as a query) read it too.
//!
//! The TIFF reader is split as OpenSlide's is: [`tiffslide`] opens a slide by running
//! [`tiffdir`] (the TIFF structure), [`vendor`] (Aperio, OME-TIFF, generic TIFF: which IFDs
//! are levels, the recorded resolution) and [`level`] (each level's checks and tile tables);
//! [`tileread`] reads and decodes one tile ([`codec`], [`cache`]) and [`compose`] paints a
//! region from tiles as OpenSlide does.
//!
//! Guarantees:
//!
//! * [`Slide::read_region`] has OpenSlide's semantics and, for the TIFF formats, reproduces
//!   OpenSlide 4.0.1's pixels: tile placement, clipping, the bilinear resampling cairo applies
//!   when the level coordinates are fractional, and the un-premultiply + `convert("RGB")` of
//!   openslide-python (pixels outside the image are black). The only expected differences
//!   come from the JPEG decoder (zune-jpeg vs libjpeg-turbo); `tests.rs` states the bounds.
//! * No call decodes a whole level: regions decode only the tiles they touch;
//!   [`Slide::thumbnail`] and [`Slide::downsampled_view`] stream one tile at a time into a
//!   small accumulator.
//! * Decoded tiles live in a bounded LRU cache (bytes), shared by threads: [`Slide`] is
//!   `Send + Sync`, each level's TIFF decoder sits behind its own mutex.
//! * A corrupt or empty stored tile fails only the regions that touch it, with an error naming
//!   the file and the tile ([`SlideError::CorruptTile`], [`SlideError::MissingTile`]);
//!   decoder panics are caught.
//! * Bounded work whatever the file claims: a read returns at most [`MAX_REGION_PIXELS`], a
//!   view at most [`MAX_VIEW_PIXELS`]; a stored tile decodes to at most 32 MiB, after its
//!   JPEG header is checked against the TIFF tile size, under the `--decode-memory` budget;
//!   a tile that failed is not decoded again; one file handle serves every level.
//! * The reader's warnings (an IFD chain that loops) are kept in [`Slide::warnings`].
//!
//! Differences from OpenSlide, on purpose: a zero-length tile is an error (OpenSlide paints it
//! transparent, or for Aperio re-renders it from the level above); OME-TIFF SubIFD pyramids
//! are levels (OpenSlide 4.0.1 sees one level); implausible TIFF resolutions (>= 100 µm/px,
//! such as the 72 dpi default) are ignored.

mod cache;
mod codec;
mod compose;
pub(crate) mod coords;
mod error;
pub(crate) mod grid;
mod level;
pub(crate) mod openslide;
pub(crate) mod outline;
#[cfg(test)]
mod tests;
mod tiffdir;
mod tiffslide;
mod tileread;
pub(crate) mod tiles;
pub(crate) mod tiling;
pub(crate) mod tissue;
pub(crate) mod user_mask;
mod vendor;

use std::path::{Path, PathBuf};

#[cfg(test)]
pub(crate) use cache::CacheStats;
pub(crate) use error::SlideError;
use image::RgbImage;
pub(crate) use tiles::TilePlan;
pub(crate) use tiling::{Tiling, TilingOverrides};

use tiffslide::TiffSlide;

/// Most pixels one [`Slide::read_region`] may return (64 Mpx: 256 MiB of ARGB plus the
/// RGB copy), so that no single request can exhaust memory.
pub(crate) const MAX_REGION_PIXELS: u64 = 1 << 26;
/// Most pixels of a [`Slide::downsampled_view`] (32 Mpx: a whole 75 x 25 mm glass slide at
/// 7.5 µm/px, the finest view tissue detection asks for), so that planning a slide is
/// bounded in memory and time whatever its header claims.
pub(crate) const MAX_VIEW_PIXELS: u64 = 1 << 25;

/// Where the resolution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MppSource {
    /// `MPP = ...` in an Aperio ImageDescription.
    Aperio,
    /// TIFF XResolution with ResolutionUnit inch or centimetre.
    TiffResolution,
    /// `PhysicalSizeX` in OME-XML.
    OmeXml,
    /// OpenSlide's `openslide.mpp-x` property (OpenSlide-read formats).
    OpenSlide,
    /// [`OpenOptions::user_mpp`], used when the file has none.
    User,
}

/// A short name of where a resolution came from, for messages.
pub(crate) fn mpp_source_label(s: MppSource) -> &'static str {
    match s {
        MppSource::Aperio => "the Aperio description's MPP",
        MppSource::TiffResolution => "the TIFF resolution tags",
        MppSource::OmeXml => "the OME-XML PhysicalSizeX",
        MppSource::OpenSlide => "OpenSlide's mpp-x",
        MppSource::User => "--slide-mpp",
    }
}

/// One pyramid level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Level {
    pub(crate) width: u64,
    pub(crate) height: u64,
    /// OpenSlide's downsample: the mean of the two axis ratios to level 0.
    pub(crate) downsample: f64,
    pub(crate) tile_w: u32,
    pub(crate) tile_h: u32,
}

/// How to open a slide.
#[derive(Debug, Clone)]
pub(crate) struct OpenOptions {
    /// Microns per pixel to use when the file records none.
    pub(crate) user_mpp: Option<f64>,
    /// Budget of the decoded-tile cache, in bytes of RGB pixels.
    pub(crate) cache_bytes: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            user_mpp: None,
            cache_bytes: 64 << 20,
        }
    }
}

/// File extensions always handed to OpenSlide.
pub(crate) const OPENSLIDE_EXTENSIONS: &[&str] =
    &["ndpi", "mrxs", "scn", "bif", "vms", "vmu", "svslide", "dcm"];

/// Extensions of files that are always slides (TIFF-based `.svs` and the OpenSlide formats).
const SLIDE_EXTENSIONS: &[&str] = &[
    "svs", "ndpi", "mrxs", "scn", "bif", "vms", "vmu", "svslide", "dcm",
];

/// Whether `path` has the extension of a slide format that is never an ordinary image
/// (`.svs` and the OpenSlide formats).
pub(crate) fn has_slide_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SLIDE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Whether `path` should be indexed as a whole slide rather than as one image.
///
/// By extension for `.svs` and the OpenSlide formats (a broken one is still a slide, so that
/// the user gets the slide reader's error). A `.tif`/`.tiff` is a slide when it is pyramidal
/// (more than one level), an Aperio or OME-TIFF file, tiled JPEG (which the image path cannot
/// decode), or too big to decode as one image (over Pillow's decompression-bomb limit, which
/// the image path applies; tiled or stripped); any other TIFF, and any TIFF this reader cannot
/// parse, stays an ordinary image (unless its first description says Aperio or OME-XML).
pub(crate) fn is_slide(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if SLIDE_EXTENSIONS.contains(&ext.as_str()) {
        return true;
    }
    if ext != "tif" && ext != "tiff" {
        return false;
    }
    match TiffSlide::open(path, 0) {
        Ok(t) => {
            let l0 = &t.levels[0];
            t.levels.len() > 1
                || t.vendor != "generic-tiff"
                || t.jpeg_level0
                || l0.width * l0.height > crate::preprocess::DecodeLimits::default().max_pixels
        }
        Err(SlideError::Jpeg2000 { .. }) => true,
        // An Aperio or OME-TIFF file the reader refuses is still a slide, so that the user
        // sees the slide reader's error rather than the image decoder's.
        Err(_) => vendor::described_as_slide(path),
    }
}

enum Backend {
    Tiff(Box<TiffSlide>),
    OpenSlide(openslide::OpenSlide),
}

/// An open whole-slide image.
pub(crate) struct Slide {
    path: PathBuf,
    vendor: String,
    levels: Vec<Level>,
    mpp: Option<(f64, MppSource)>,
    backend: Backend,
    /// What the reader found odd but could read past (an IFD chain that loops).
    warnings: Vec<String>,
}

/// OpenSlide's downsample of a level: mean of the height and width ratios
/// (openslide.c, `openslide_open`).
fn openslide_downsample(l0: (u64, u64), l: (u64, u64)) -> f64 {
    ((l0.1 as f64 / l.1 as f64) + (l0.0 as f64 / l.0 as f64)) / 2.0
}

impl Slide {
    /// Open a slide. TIFF-based files are read natively; the extensions in
    /// [`OPENSLIDE_EXTENSIONS`] and JPEG 2000 Aperio files go to OpenSlide.
    pub(crate) fn open(path: &Path, opts: &OpenOptions) -> Result<Slide, SlideError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let mut slide = if OPENSLIDE_EXTENSIONS.contains(&ext.as_str()) {
            Self::open_openslide(path, &format!(".{ext} files"))?
        } else {
            match TiffSlide::open(path, opts.cache_bytes) {
                Ok(t) => Self::from_tiff(path, t),
                Err(e @ SlideError::Jpeg2000 { .. }) => {
                    if openslide::available() {
                        Self::open_openslide(path, "JPEG 2000 Aperio slides")?
                    } else {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if slide.mpp.is_none() {
            slide.mpp = opts
                .user_mpp
                .filter(|m| m.is_finite() && *m > 0.0)
                .map(|m| (m, MppSource::User));
        }
        Ok(slide)
    }

    /// Open with OpenSlide whatever the format (for the comparisons in the tests).
    #[cfg(test)]
    pub(crate) fn open_with_openslide(path: &Path) -> Result<Slide, SlideError> {
        Self::open_openslide(path, "this slide")
    }

    fn open_openslide(path: &Path, what: &str) -> Result<Slide, SlideError> {
        let os = openslide::OpenSlide::open(path, what)?;
        let levels = os.levels().to_vec();
        let mpp = os.mpp().map(|m| (m, MppSource::OpenSlide));
        Ok(Slide {
            path: path.to_path_buf(),
            vendor: format!("openslide:{}", os.vendor()),
            levels,
            mpp,
            backend: Backend::OpenSlide(os),
            warnings: Vec::new(),
        })
    }

    fn from_tiff(path: &Path, t: TiffSlide) -> Slide {
        let l0 = (t.levels[0].width, t.levels[0].height);
        let levels = t
            .levels
            .iter()
            .enumerate()
            .map(|(i, l)| Level {
                width: l.width,
                height: l.height,
                downsample: if i == 0 {
                    1.0
                } else {
                    openslide_downsample(l0, (l.width, l.height))
                },
                tile_w: l.tile_w,
                tile_h: l.tile_h,
            })
            .collect();
        Slide {
            path: path.to_path_buf(),
            vendor: t.vendor.to_string(),
            levels,
            mpp: t.mpp,
            warnings: t.warnings.clone(),
            backend: Backend::Tiff(Box::new(t)),
        }
    }

    /// The file this slide was opened from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `aperio`, `generic-tiff`, `ome-tiff`, or `openslide:<vendor>`.
    pub(crate) fn vendor(&self) -> &str {
        &self.vendor
    }

    /// Levels, level 0 (full resolution) first.
    pub(crate) fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// What the reader found odd in the file but read past, one message each (naming the
    /// file); the caller prints them as warnings.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The same slide with its level-0 resolution replaced (a tile plan's, when the user's
    /// `--slide-mpp` replaces an implausible recorded one).
    pub(crate) fn with_mpp(mut self, mpp: f64, source: MppSource) -> Slide {
        self.mpp = Some((mpp, source));
        self
    }

    /// Microns per pixel at level 0 and where the value came from.
    pub(crate) fn mpp(&self) -> Option<(f64, MppSource)> {
        self.mpp
    }

    /// Decoded-tile cache counters (zero for OpenSlide-read slides).
    #[cfg(test)]
    pub(crate) fn cache_stats(&self) -> CacheStats {
        match &self.backend {
            Backend::Tiff(t) => t.cache.stats(),
            Backend::OpenSlide(_) => CacheStats::default(),
        }
    }

    fn level(&self, level: usize) -> Result<&Level, SlideError> {
        self.levels
            .get(level)
            .ok_or_else(|| SlideError::LevelOutOfRange {
                path: self.path.clone(),
                level,
                count: self.levels.len(),
            })
    }

    /// OpenSlide's `read_region`: `(x0, y0)` in level-0 pixels (may be
    /// negative), `w x h` in pixels of `level`. Outside the image is black.
    pub(crate) fn read_region(
        &self,
        x0: i64,
        y0: i64,
        level: usize,
        w: u32,
        h: u32,
    ) -> Result<RgbImage, SlideError> {
        let l = *self.level(level)?;
        let n = u64::from(w) * u64::from(h);
        if n > MAX_REGION_PIXELS {
            return Err(SlideError::RegionTooLarge {
                path: self.path.clone(),
                w,
                h,
                limit: MAX_REGION_PIXELS,
            });
        }
        let argb = match &self.backend {
            Backend::Tiff(t) => t.read_region_premul(level, l.downsample, x0, y0, w, h)?,
            Backend::OpenSlide(os) => os.read_region_argb(x0, y0, level, w, h)?,
        };
        let rgb = compose::unpremultiply_to_rgb(&argb);
        RgbImage::from_raw(w, h, rgb).ok_or_else(|| SlideError::RegionTooLarge {
            path: self.path.clone(),
            w,
            h,
            limit: MAX_REGION_PIXELS,
        })
    }

    /// OpenSlide's `get_best_level_for_downsample`: the last level whose
    /// downsample is <= `ds` (level 0 if `ds` is below every level).
    pub(crate) fn best_level_for_downsample(&self, ds: f64) -> usize {
        if self.levels.is_empty() || ds < self.levels[0].downsample {
            return 0;
        }
        for i in 1..self.levels.len() {
            if ds < self.levels[i].downsample {
                return i - 1;
            }
        }
        self.levels.len() - 1
    }

    /// `level` box-averaged by the integer factor `k` (output
    /// `ceil(w/k) x ceil(h/k)`, edge cells averaged over the pixels they
    /// have). Reads one stored tile (or, with OpenSlide, one 1024-px block)
    /// at a time without caching it, and sums into the output rows the current
    /// row of tiles touches, so memory stays at the output size (at most
    /// [`MAX_VIEW_PIXELS`], else [`SlideError::ViewTooLarge`]). Tiles that fail to
    /// decode are counted in the second value and contribute white (glass).
    pub(crate) fn downsampled_view(
        &self,
        level: usize,
        k: u32,
    ) -> Result<(RgbImage, u64), SlideError> {
        let l = *self.level(level)?;
        let k = u64::from(k.max(1));
        let ow = l.width.div_ceil(k);
        let oh = l.height.div_ceil(k);
        if ow.saturating_mul(oh) > MAX_VIEW_PIXELS {
            return Err(SlideError::ViewTooLarge {
                path: self.path.clone(),
                level,
                w: ow,
                h: oh,
                limit: MAX_VIEW_PIXELS,
            });
        }
        let (bw, bh) = match &self.backend {
            Backend::Tiff(_) => (u64::from(l.tile_w), u64::from(l.tile_h)),
            Backend::OpenSlide(_) => (1024, 1024),
        };
        let mut out = vec![0u8; (ow * oh * 3) as usize];
        // Sums of the output rows band0.. that the current row of blocks touches.
        let band_rows = bh.div_ceil(k) + 1;
        let mut acc = vec![0u64; (band_rows * ow * 3) as usize];
        let mut band0 = 0u64;
        let mut skipped = 0u64;
        let across = l.width.div_ceil(bw);
        let down = l.height.div_ceil(bh);
        for row in 0..down {
            let by = row * bh;
            let h = bh.min(l.height - by);
            for col in 0..across {
                let bx = col * bw;
                let w = bw.min(l.width - bx);
                match self.view_block(level, &l, (col, row), (bx, by, w, h)) {
                    Ok(rgb) => add_block(&mut acc, band0, ow, k, (bx, by, w, h), Some(&rgb)),
                    Err(SlideError::CorruptTile { .. } | SlideError::MissingTile { .. }) => {
                        skipped += 1;
                        add_block(&mut acc, band0, ow, k, (bx, by, w, h), None);
                    }
                    Err(e) => return Err(e),
                }
            }
            // Output rows whose input rows have all been read.
            let done = if by + h == l.height { oh } else { (by + h) / k };
            for oy in band0..done {
                let ch = k.min(l.height - oy * k);
                for ox in 0..ow {
                    let n = k.min(l.width - ox * k) * ch;
                    let a = (((oy - band0) * ow + ox) * 3) as usize;
                    let o = ((oy * ow + ox) * 3) as usize;
                    for c in 0..3 {
                        out[o + c] = ((acc[a + c] + n / 2) / n) as u8;
                    }
                }
            }
            let shift = ((done - band0) * ow * 3) as usize;
            acc.copy_within(shift.., 0);
            let keep = acc.len() - shift;
            acc[keep..].fill(0);
            band0 = done;
        }
        let img = RgbImage::from_raw(ow as u32, oh as u32, out).ok_or_else(|| {
            SlideError::ViewTooLarge {
                path: self.path.clone(),
                level,
                w: ow,
                h: oh,
                limit: MAX_VIEW_PIXELS,
            }
        })?;
        Ok((img, skipped))
    }

    /// The RGB pixels of one block of a view: a stored tile (cropped or padded to
    /// `w x h`), or with OpenSlide a region read.
    fn view_block(
        &self,
        level: usize,
        l: &Level,
        (col, row): (u64, u64),
        (bx, by, w, h): (u64, u64, u64, u64),
    ) -> Result<Vec<u8>, SlideError> {
        match &self.backend {
            Backend::Tiff(t) => t.tile_uncached(level, col, row).map(|tile| {
                if u64::from(tile.w) == w && u64::from(tile.h) == h {
                    tile.rgb.clone()
                } else {
                    // crop/pad a tile whose data size disagrees
                    let mut out = vec![255u8; (w * h * 3) as usize];
                    for yy in 0..h.min(u64::from(tile.h)) {
                        let n = w.min(u64::from(tile.w)) as usize * 3;
                        let s = (yy * u64::from(tile.w) * 3) as usize;
                        let d = (yy * w * 3) as usize;
                        out[d..d + n].copy_from_slice(&tile.rgb[s..s + n]);
                    }
                    out
                }
            }),
            Backend::OpenSlide(_) => {
                let x0 = (bx as f64 * l.downsample) as i64;
                let y0 = (by as f64 * l.downsample) as i64;
                self.read_region(x0, y0, level, w as u32, h as u32)
                    .map(|im| im.into_raw())
            }
        }
    }

    /// A thumbnail whose longer side is `max_side` (or the slide's, if
    /// smaller), made from the lowest level that is still large enough,
    /// box-averaged tile by tile and then resized (triangle filter).
    pub(crate) fn thumbnail(&self, max_side: u32) -> Result<RgbImage, SlideError> {
        let max_side = max_side.max(1);
        let l0 = *self.level(0)?;
        let long0 = l0.width.max(l0.height) as f64;
        let ds = (long0 / f64::from(max_side)).max(1.0);
        let level = self.best_level_for_downsample(ds);
        let l = self.levels[level];
        let k = ((l.width.max(l.height) as f64 / f64::from(max_side)).floor() as u32).max(1);
        let (view, _) = self.downsampled_view(level, k)?;
        let scale = f64::from(max_side) / long0;
        if scale >= 1.0 {
            return Ok(view);
        }
        let tw = ((l0.width as f64 * scale).round() as u32).max(1);
        let th = ((l0.height as f64 * scale).round() as u32).max(1);
        if (tw, th) == view.dimensions() {
            return Ok(view);
        }
        Ok(image::imageops::resize(
            &view,
            tw,
            th,
            image::imageops::FilterType::Triangle,
        ))
    }
}

/// Adds a `w x h` block at level pixel `(bx, by)` (white where `rgb` is `None`) into the
/// sums `acc` of output rows `band0..` of a view `ow` cells wide, box factor `k`.
fn add_block(
    acc: &mut [u64],
    band0: u64,
    ow: u64,
    k: u64,
    (bx, by, w, h): (u64, u64, u64, u64),
    rgb: Option<&[u8]>,
) {
    for yy in 0..h {
        let orow = ((by + yy) / k - band0) * ow;
        for xx in 0..w {
            let o = ((orow + (bx + xx) / k) * 3) as usize;
            match rgb {
                Some(p) => {
                    let i = ((yy * w + xx) * 3) as usize;
                    acc[o] += u64::from(p[i]);
                    acc[o + 1] += u64::from(p[i + 1]);
                    acc[o + 2] += u64::from(p[i + 2]);
                }
                None => {
                    acc[o] += 255;
                    acc[o + 1] += 255;
                    acc[o + 2] += 255;
                }
            }
        }
    }
}
