//! Deep Zoom (DZI) tiles of indexed slides, rendered by plip's own slide reader,
//! for the page's OpenSeadragon viewer.
//!
//! The pyramid is the one openslide-python's `DeepZoomGenerator` makes with its
//! defaults (`tile_size=254, overlap=1, limit_bounds=False`), ported from
//! openslide-python 1.3.1 `openslide/deepzoom.py` (`__init__` and
//! `_get_tile_info`, https://github.com/openslide/openslide-python/blob/v1.3.1/openslide/deepzoom.py):
//! Deep Zoom level `L` of `L_max + 1` is level 0 halved `L_max - L` times
//! (rounding up); a tile is read from the slide level that
//! `best_level_for_downsample(2^(L_max - L))` names, then resized to its Deep
//! Zoom size when they differ. Every address is checked before any pixel is
//! read: a bad level, column or row is `None`, never a panic or a huge read.
//!
//! Where that read would be large (the coarse levels of a slide without a
//! pyramid, where OpenSlide's generator reads level 0 whole), plip departs from
//! it: such a tile is cut from the slide's overview, box-averaged once per open
//! slide and kept, or else box-averaged from its region piece by piece; and no
//! tile reads more than [`MAX_TILE_READ`] stored pixels (a JSON 422 instead).
//!
//! Open slides are kept in a small cache ([`Slides`]), so neighbouring tiles
//! share a slide's decoded-tile cache instead of reopening the file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::imageops::FilterType;
use image::RgbImage;

use crate::source::slide::{Level, OpenOptions, Slide, SlideError};

/// Side of a Deep Zoom tile without its overlap (openslide-python's default).
pub(crate) const TILE: u64 = 254;
/// Pixels each tile shares with its neighbours.
pub(crate) const OVERLAP: u64 = 1;

/// Sizes of the Deep Zoom levels of a `w x h` image, smallest (1 x 1) first.
pub(crate) fn levels(w: u64, h: u64) -> Vec<(u64, u64)> {
    let mut z = vec![(w.max(1), h.max(1))];
    let (mut w, mut h) = z[0];
    while w > 1 || h > 1 {
        w = w.div_ceil(2).max(1);
        h = h.div_ceil(2).max(1);
        z.push((w, h));
    }
    z.reverse();
    z
}

/// The `.dzi` descriptor of a `w x h` image.
pub(crate) fn descriptor(w: u64, h: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Image xmlns=\"http://schemas.microsoft.com/deepzoom/2008\" Format=\"jpeg\" \
         Overlap=\"{OVERLAP}\" TileSize=\"{TILE}\"><Size Height=\"{h}\" Width=\"{w}\"/></Image>\n"
    )
}

/// How one Deep Zoom tile is read: `read_region((x0, y0), level, (w, h))`, then
/// resized to `out`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TileRead {
    pub(crate) x0: i64,
    pub(crate) y0: i64,
    pub(crate) level: usize,
    pub(crate) w: u32,
    pub(crate) h: u32,
    pub(crate) out: (u32, u32),
}

/// Where tile `(col, row)` of Deep Zoom level `dz` comes from, for a slide with
/// `slide_levels` (level 0 first) and OpenSlide's level choice `best`. `None`
/// when the level or the tile does not exist.
pub(crate) fn plan(
    slide_levels: &[Level],
    best: impl Fn(f64) -> usize,
    dz: usize,
    col: u64,
    row: u64,
) -> Option<TileRead> {
    let l0 = slide_levels.first()?;
    let z = levels(l0.width, l0.height);
    let &(zw, zh) = z.get(dz)?;
    let (tw, th) = (zw.div_ceil(TILE), zh.div_ceil(TILE));
    if col >= tw || row >= th {
        return None;
    }
    let l0_z = 2f64.powi(i32::try_from(z.len() - 1 - dz).ok()?);
    let level = best(l0_z).min(slide_levels.len() - 1);
    let sl = slide_levels[level];
    let l_z = l0_z / sl.downsample;
    // One axis of `_get_tile_info`.
    let axis = |t: u64, t_lim: u64, z_lim: u64, l_lim: u64| -> (i64, u32, u32) {
        let tl = if t != 0 { OVERLAP } else { 0 };
        let br = if t != t_lim - 1 { OVERLAP } else { 0 };
        let z_size = TILE.min(z_lim - TILE * t) + tl + br;
        let l = l_z * (TILE * t - tl) as f64;
        let l0 = (sl.downsample * l) as i64;
        let l_size = (l_z * z_size as f64).ceil().min(l_lim as f64 - l.ceil());
        (l0, l_size.max(1.0) as u32, z_size as u32)
    };
    let (x0, w, ow) = axis(col, tw, zw, sl.width);
    let (y0, h, oh) = axis(row, th, zh, sl.height);
    Some(TileRead {
        x0,
        y0,
        level,
        w,
        h,
        out: (ow, oh),
    })
}

/// Most stored slide pixels one Deep Zoom tile may read (16384 x 16384), when
/// it is made (or its slide's overview is): beyond it the tile is refused.
pub(crate) const MAX_TILE_READ: u64 = 1 << 28;

/// How much a tile may read, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// A region of at most this many stored pixels is read whole and resized
    /// (OpenSlide's way, for the fine levels).
    pub(crate) direct: u64,
    /// Longest side of a slide's overview.
    pub(crate) overview_side: u64,
    /// See [`MAX_TILE_READ`].
    pub(crate) max_read: u64,
}

/// The server's budget: a direct read is at most 2048 x 2048 stored pixels
/// (about 28 MB while it is composed).
pub(crate) const BUDGET: Budget = Budget {
    direct: 1 << 22,
    overview_side: 2048,
    max_read: MAX_TILE_READ,
};

/// A slide box-averaged once to at most [`Budget::overview_side`] pixels a side,
/// for the Deep Zoom levels coarser than it: a slide without a small stored
/// level would otherwise be read whole for each of them.
pub(crate) struct Overview {
    img: RgbImage,
    /// Level-0 pixels per overview pixel.
    ds: f64,
}

/// A slide's overview, made on first use (once, however many tiles ask at
/// once); `None` when making it would read more than the budget allows.
pub(crate) type OverviewSlot = std::sync::OnceLock<Option<Arc<Overview>>>;

/// Why a tile could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TileError {
    /// The slide reader failed.
    #[error(transparent)]
    Slide(#[from] SlideError),
    /// The tile would read more than [`Budget::max_read`] stored pixels.
    #[error(
        "this tile would read {pixels} pixels of the slide, over the server's limit of {limit} \
         per tile (the slide has no pyramid level small enough); zoom in further"
    )]
    TooLarge {
        /// Stored pixels the tile needs.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
}

/// Renders tile `(col, row)` of Deep Zoom level `dz` of `slide`: `Ok(None)` when
/// there is no such tile. A fine level reads its region and resizes it, as
/// OpenSlide's generator does; a coarser one is cut from the slide's overview,
/// or else box-averaged from the region piece by piece, so memory stays near
/// the tile's size; a tile that would read more than `budget.max_read` stored
/// pixels is refused.
pub(crate) fn render(
    slide: &Slide,
    overview: &OverviewSlot,
    budget: &Budget,
    dz: usize,
    col: u64,
    row: u64,
) -> Result<Option<RgbImage>, TileError> {
    let Some(t) = plan(
        slide.levels(),
        |d| slide.best_level_for_downsample(d),
        dz,
        col,
        row,
    ) else {
        return Ok(None);
    };
    let read = u64::from(t.w) * u64::from(t.h);
    if read <= budget.direct {
        let img = slide.read_region(t.x0, t.y0, t.level, t.w, t.h)?;
        return Ok(Some(fit(img, t.out)));
    }
    let l0 = slide.levels()[0];
    let l0_z = 2f64.powi((levels(l0.width, l0.height).len() - 1 - dz) as i32);
    if let Some(ov) = overview.get_or_init(|| make_overview(slide, budget)) {
        if ov.ds <= l0_z * (1.0 + 1e-9) {
            return Ok(Some(from_overview(ov, slide, &t)));
        }
    }
    if read > budget.max_read {
        return Err(TileError::TooLarge {
            pixels: read,
            limit: budget.max_read,
        });
    }
    Ok(Some(box_read(slide, &t)?))
}

fn fit(img: RgbImage, out: (u32, u32)) -> RgbImage {
    if img.dimensions() == out {
        img
    } else {
        image::imageops::resize(&img, out.0, out.1, FilterType::Lanczos3)
    }
}

/// The slide box-averaged (`Slide::downsampled_view`, one stored tile at a
/// time) from the smallest level that still gives `overview_side` pixels;
/// `None` if that level is over the read budget or cannot be read.
fn make_overview(slide: &Slide, budget: &Budget) -> Option<Arc<Overview>> {
    let l0 = slide.levels().first()?;
    let side = budget.overview_side.max(1);
    let long0 = l0.width.max(l0.height) as f64;
    let level = slide.best_level_for_downsample((long0 / side as f64).max(1.0));
    let l = slide.levels()[level];
    if l.width.saturating_mul(l.height) > budget.max_read {
        return None;
    }
    let k = l.width.max(l.height).div_ceil(side).max(1);
    let (img, _) = slide.downsampled_view(level, k as u32).ok()?;
    Some(Arc::new(Overview {
        img,
        ds: l.downsample * k as f64,
    }))
}

/// Tile `t` cut from the overview and resized to its Deep Zoom size.
fn from_overview(ov: &Overview, slide: &Slide, t: &TileRead) -> RgbImage {
    let ds = slide.levels()[t.level].downsample;
    let (ow, oh) = ov.img.dimensions();
    let span = |x0: i64, len: u32, lim: u32| -> (u32, u32) {
        let a = x0 as f64 / ov.ds;
        let b = (x0 as f64 + f64::from(len) * ds) / ov.ds;
        let a = (a.floor().max(0.0) as u32).min(lim - 1);
        let b = ((b - 1e-6).ceil() as u32).clamp(a + 1, lim);
        (a, b - a)
    };
    let (x, w) = span(t.x0, t.w, ow);
    let (y, h) = span(t.y0, t.h, oh);
    let crop = image::imageops::crop_imm(&ov.img, x, y, w, h).to_image();
    // A whole factor (the usual case: both are powers of two apart) is a box
    // average again, so the tile is the slide's box average; else a resize.
    let out_w = t.out.0.max(1);
    let r = ((w + out_w / 2) / out_w).max(1);
    if r >= 2 && w.div_ceil(r) == t.out.0 && h.div_ceil(r) == t.out.1 {
        return box_shrink(&crop, r);
    }
    fit(crop, t.out)
}

/// `img` box-averaged by `k` (edge cells over the pixels they have).
fn box_shrink(img: &RgbImage, k: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (ow, oh) = (w.div_ceil(k), h.div_ceil(k));
    RgbImage::from_fn(ow, oh, |ox, oy| {
        let (x1, y1) = (((ox + 1) * k).min(w), ((oy + 1) * k).min(h));
        let mut sum = [0u32; 3];
        for y in oy * k..y1 {
            for x in ox * k..x1 {
                for (s, v) in sum.iter_mut().zip(img.get_pixel(x, y).0) {
                    *s += u32::from(v);
                }
            }
        }
        let n = (x1 - ox * k) * (y1 - oy * k);
        image::Rgb(sum.map(|v| ((v + n / 2) / n) as u8))
    })
}

/// Tile `t` box-averaged from its region, read in pieces of about 1024 x 1024
/// stored pixels, then resized to its Deep Zoom size.
fn box_read(slide: &Slide, t: &TileRead) -> Result<RgbImage, SlideError> {
    let (w, h) = (u64::from(t.w), u64::from(t.h));
    let k = (w / u64::from(t.out.0).max(1))
        .min(h / u64::from(t.out.1).max(1))
        .max(1);
    let (aw, ah) = (w.div_ceil(k), h.div_ceil(k));
    let mut acc = vec![0u32; (aw * ah * 3) as usize];
    let chunk = k * (1024 / k).max(1);
    let ds = slide.levels()[t.level].downsample;
    let (lx, ly) = (t.x0 as f64 / ds, t.y0 as f64 / ds);
    for cy in (0..h).step_by(chunk as usize) {
        for cx in (0..w).step_by(chunk as usize) {
            let (cw, ch) = (chunk.min(w - cx), chunk.min(h - cy));
            let x0 = ((lx + cx as f64) * ds) as i64;
            let y0 = ((ly + cy as f64) * ds) as i64;
            let piece = slide.read_region(x0, y0, t.level, cw as u32, ch as u32)?;
            let raw = piece.as_raw();
            for yy in 0..ch {
                let row = ((cy + yy) / k) * aw;
                for xx in 0..cw {
                    let o = ((row + (cx + xx) / k) * 3) as usize;
                    let i = ((yy * cw + xx) * 3) as usize;
                    for c in 0..3 {
                        acc[o + c] += u32::from(raw[i + c]);
                    }
                }
            }
        }
    }
    let mut out = vec![0u8; acc.len()];
    for oy in 0..ah {
        let ch = k.min(h - oy * k);
        for ox in 0..aw {
            let n = (k.min(w - ox * k) * ch) as u32;
            let o = ((oy * aw + ox) * 3) as usize;
            for c in 0..3 {
                out[o + c] = ((acc[o + c] + n / 2) / n) as u8;
            }
        }
    }
    let img = RgbImage::from_raw(aw as u32, ah as u32, out).expect("sized above");
    Ok(fit(img, t.out))
}

/// An open slide and its overview slot.
pub(crate) struct OpenSlide {
    pub(crate) slide: Arc<Slide>,
    pub(crate) overview: Arc<OverviewSlot>,
}

type Entry = (
    PathBuf,
    std::time::SystemTime,
    Arc<Slide>,
    Arc<OverviewSlot>,
);

/// Slides kept open, most recently used last.
pub(crate) struct Slides {
    open: Mutex<VecDeque<Entry>>,
}

/// Slides kept open at once.
const OPEN_SLIDES: usize = 4;
/// Decoded-tile cache of each open slide, in bytes.
const SLIDE_CACHE_BYTES: usize = 32 << 20;

impl Slides {
    pub(crate) fn new() -> Self {
        Slides {
            open: Mutex::new(VecDeque::new()),
        }
    }

    /// The open slide at `path` (opened on a miss; blocking). A file changed on
    /// disk since it was opened is opened again.
    pub(crate) fn get(&self, path: &Path) -> Result<OpenSlide, SlideError> {
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = open
                .iter()
                .position(|(p, t, _, _)| p == path && *t == mtime)
            {
                let hit = open.remove(i).expect("index from position");
                let found = OpenSlide {
                    slide: hit.2.clone(),
                    overview: hit.3.clone(),
                };
                open.push_back(hit);
                return Ok(found);
            }
        }
        let slide = Arc::new(Slide::open(
            path,
            &OpenOptions {
                cache_bytes: SLIDE_CACHE_BYTES,
                ..OpenOptions::default()
            },
        )?);
        let overview = Arc::new(OverviewSlot::new());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(p, _, _, _)| p != path);
        open.push_back((path.to_path_buf(), mtime, slide.clone(), overview.clone()));
        while open.len() > OPEN_SLIDES {
            open.pop_front();
        }
        Ok(OpenSlide { slide, overview })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(width: u64, height: u64, downsample: f64) -> Level {
        Level {
            width,
            height,
            downsample,
            tile_w: 256,
            tile_h: 256,
        }
    }

    #[test]
    fn levels_halve_rounding_up_down_to_one_pixel() {
        let z = levels(1990, 1500);
        assert_eq!(z.first(), Some(&(1, 1)));
        assert_eq!(z.last(), Some(&(1990, 1500)));
        assert_eq!(z[z.len() - 2], (995, 750));
        assert_eq!(z.len(), 12);
        assert_eq!(levels(1, 1), vec![(1, 1)]);
    }

    #[test]
    fn tiles_match_openslide_pythons_deepzoom_generator() {
        // openslide-python's `_get_tile_info` for a 1990x1500 slide with levels
        // at downsample 1 and 4 (worked by hand from deepzoom.py).
        let sl = [lv(1990, 1500, 1.0), lv(497, 375, 4.0)];
        let best = |d: f64| if d < 4.0 { 0 } else { 1 };
        let top = levels(1990, 1500).len() - 1;
        // First tile at full resolution: no top/left overlap.
        let t = plan(&sl, best, top, 0, 0).unwrap();
        assert_eq!(
            (t.x0, t.y0, t.level, t.w, t.h, t.out),
            (0, 0, 0, 255, 255, (255, 255))
        );
        // An inner tile: overlap on both sides.
        let t = plan(&sl, best, top, 1, 1).unwrap();
        assert_eq!(
            (t.x0, t.y0, t.w, t.h, t.out),
            (253, 253, 256, 256, (256, 256))
        );
        // The last column: 1990 - 7*254 = 212 wide plus its left overlap.
        let t = plan(&sl, best, top, 7, 0).unwrap();
        assert_eq!((t.x0, t.w, t.out.0), (1777, 213, 213));
        // Out of range: the column after the last, a row, a level.
        assert!(plan(&sl, best, top, 8, 0).is_none());
        assert!(plan(&sl, best, top, 0, 6).is_none());
        assert!(plan(&sl, best, top + 1, 0, 0).is_none());
        assert!(plan(&[], best, 0, 0, 0).is_none());
        // Two levels down (downsample 4): read from slide level 1.
        let t = plan(&sl, best, top - 2, 0, 0).unwrap();
        assert_eq!((t.level, t.w, t.h, t.out), (1, 255, 255, (255, 255)));
        // The 1x1 level: all of level 1, scaled to one pixel.
        let t = plan(&sl, best, 0, 0, 0).unwrap();
        assert_eq!((t.level, t.w, t.h, t.out), (1, 497, 375, (1, 1)));
    }

    #[test]
    fn the_descriptor_names_the_level_0_size() {
        let d = descriptor(1990, 1500);
        assert!(d.contains("Width=\"1990\"") && d.contains("Height=\"1500\""));
        assert!(d.contains("TileSize=\"254\"") && d.contains("Overlap=\"1\""));
        assert!(d.contains("Format=\"jpeg\""));
    }
}

#[cfg(test)]
mod pixel_tests {
    use super::*;

    #[test]
    fn a_full_resolution_tile_is_plips_read_region_within_jpeg_noise() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/slides/aperio_ycbcr.svs");
        let slide = Slide::open(&path, &OpenOptions::default()).unwrap();
        let top = levels(slide.levels()[0].width, slide.levels()[0].height).len() - 1;
        let tile = render(&slide, &OverviewSlot::new(), &BUDGET, top, 1, 1)
            .unwrap()
            .unwrap();
        let jpeg = crate::serve::thumbs::encode_jpeg(&tile).unwrap();
        let served = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let want = slide.read_region(253, 253, 0, 256, 256).unwrap();
        assert_eq!(served.dimensions(), want.dimensions());
        let diffs: Vec<i32> = served
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        assert!(mean < 4.0, "mean abs difference {mean}");
        // A coarser level is read from a smaller pyramid level, never all of level 0.
        let t = plan(
            slide.levels(),
            |d| slide.best_level_for_downsample(d),
            top - 3,
            0,
            0,
        )
        .unwrap();
        assert!(t.level > 0, "{t:?}");
        assert!(render(&slide, &OverviewSlot::new(), &BUDGET, top + 1, 0, 0)
            .unwrap()
            .is_none());
    }
}
