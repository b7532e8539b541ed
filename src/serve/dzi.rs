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

/// Renders tile `(col, row)` of Deep Zoom level `dz` of `slide`: `Ok(None)` when
/// there is no such tile.
pub(crate) fn render(
    slide: &Slide,
    dz: usize,
    col: u64,
    row: u64,
) -> Result<Option<RgbImage>, SlideError> {
    let Some(t) = plan(
        slide.levels(),
        |d| slide.best_level_for_downsample(d),
        dz,
        col,
        row,
    ) else {
        return Ok(None);
    };
    let img = slide.read_region(t.x0, t.y0, t.level, t.w, t.h)?;
    Ok(Some(if img.dimensions() == t.out {
        img
    } else {
        image::imageops::resize(&img, t.out.0, t.out.1, FilterType::Lanczos3)
    }))
}

/// Slides kept open, most recently used last.
pub(crate) struct Slides {
    open: Mutex<VecDeque<(PathBuf, std::time::SystemTime, Arc<Slide>)>>,
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
    pub(crate) fn get(&self, path: &Path) -> Result<Arc<Slide>, SlideError> {
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = open.iter().position(|(p, t, _)| p == path && *t == mtime) {
                let hit = open.remove(i).expect("index from position");
                let slide = hit.2.clone();
                open.push_back(hit);
                return Ok(slide);
            }
        }
        let slide = Arc::new(Slide::open(
            path,
            &OpenOptions {
                cache_bytes: SLIDE_CACHE_BYTES,
                ..OpenOptions::default()
            },
        )?);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(p, _, _)| p != path);
        open.push_back((path.to_path_buf(), mtime, slide.clone()));
        while open.len() > OPEN_SLIDES {
            open.pop_front();
        }
        Ok(slide)
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
        let tile = render(&slide, top, 1, 1).unwrap().unwrap();
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
        assert_eq!(render(&slide, top + 1, 0, 0).unwrap(), None);
    }
}
