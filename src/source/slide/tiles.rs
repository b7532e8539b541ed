//! The tile plan of one slide: which level-0 squares become model inputs, and their pixels.
//!
//! This is what the indexing job calls (issue 17, "Tiling"): [`TilePlan::new`] opens the
//! slide, takes its resolution (from the file, else [`Tiling::slide_mpp`], else an error
//! that says to pass `--slide-mpp`), detects tissue when `min_tissue > 0`, and keeps the grid
//! tiles with enough of it ([`super::grid`] documents the grid). [`TilePlan::read_tile`]
//! reads one kept tile at the chosen level and resizes it to `tile x tile` with the crate's
//! Pillow-exact bicubic, so that it equals
//! `OpenSlide.read_region((x, y), level, (read_px, read_px)).convert("RGB")
//! .resize((tile, tile), Image.BICUBIC)` up to the JPEG decoder's noise
//! (`tests.rs::tiles_match_openslide_plus_pillow` measures it). The result then goes through
//! the usual CLIP preprocessing like any image.
//!
//! A slide whose resolution would make a model input an upsampling of more than 2x (the
//! level-0 side of a tile under `tile / 2` pixels) is refused with advice, before tissue
//! detection: an Aperio `MPP = 99` would otherwise make 786,432 one-pixel tiles of a
//! 1024 x 768 file. The user's `--slide-mpp` replaces a recorded value this implausible.
//!
//! Guarantees: planning never decodes a whole level (tissue detection streams one stored tile
//! at a time); a plan is `Send + Sync`, so tiles can be read from several threads, sharing
//! the slide's decoded-tile cache; every error names the file.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::grid::{self, GridParams};
use super::tiling::Tiling;
use super::{tissue, MppSource, OpenOptions, Slide, SlideError};

/// One kept tile, in level-0 pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TileRect {
    pub(crate) x: u64,
    pub(crate) y: u64,
    pub(crate) w: u64,
    pub(crate) h: u64,
    /// Share of the tile the tissue mask covers (1.0 when detection did not run).
    pub(crate) tissue: f64,
}

/// The kept tiles of one slide and how to read them.
pub(crate) struct TilePlan {
    slide: Slide,
    /// The options the plan was made with.
    pub(crate) options: Tiling,
    /// Level-0 resolution, µm per pixel, and where it came from.
    pub(crate) slide_mpp: f64,
    pub(crate) mpp_source: MppSource,
    /// Level read for every tile, its resolution (µm/px) and the pixels read per side there.
    pub(crate) level: usize,
    #[cfg(test)]
    pub(crate) level_mpp: f64,
    pub(crate) read_px: u32,
    /// Grid size (all whole tiles, kept or not).
    pub(crate) cols: u32,
    pub(crate) rows: u32,
    /// Kept tiles, row-major.
    pub(crate) tiles: Vec<TileRect>,
    /// Stored tiles that failed to decode while detecting tissue (counted as glass).
    pub(crate) skipped_stored_tiles: u64,
    /// The mask the tiles were kept by (`None` when `min_tissue` is 0 and no user mask).
    pub(crate) mask: Option<tissue::TissueMask>,
    /// The user's mask file (`--tissue-mask`) and its CRC32, when it replaced detection.
    pub(crate) user_mask: Option<(PathBuf, u32)>,
    /// The coordinate file the tiles came from (`--coords`), and what to say about it.
    pub(crate) coords: Option<(PathBuf, Vec<String>)>,
}

impl TilePlan {
    /// Open `path` and plan its tiles.
    #[cfg(test)]
    pub(crate) fn new(path: &Path, opts: &Tiling) -> Result<TilePlan, SlideError> {
        Self::with_mask_file(path, opts, None)
    }

    /// Open `path` and plan its tiles, keeping them by the user's mask file
    /// ([`super::user_mask`]) instead of tissue detection when one is given. A mask that
    /// cannot be used is [`SlideError::Mask`].
    pub(crate) fn with_mask_file(
        path: &Path,
        opts: &Tiling,
        mask_file: Option<&Path>,
    ) -> Result<TilePlan, SlideError> {
        let bad = |msg: String| SlideError::BadTiling {
            path: path.to_path_buf(),
            msg,
        };
        opts.validate().map_err(bad)?;
        let slide = Slide::open(
            path,
            &OpenOptions {
                user_mpp: opts.slide_mpp,
                ..OpenOptions::default()
            },
        )?;
        let Some(file) = mask_file else {
            return Self::from_slide(slide, opts);
        };
        let slide = Self::plausible_resolution(slide, opts)?;
        let l0 = slide.levels()[0];
        let (mask, crc) =
            super::user_mask::load(file, l0.width, l0.height).map_err(|msg| SlideError::Mask {
                path: file.to_path_buf(),
                msg,
            })?;
        let mut plan = Self::from_slide_with_mask(slide, opts, Some(mask))?;
        plan.user_mask = Some((file.to_path_buf(), crc));
        Ok(plan)
    }

    /// Plan the tiles of an already open slide. A resolution so coarse that a model input
    /// would be upsampled more than 2x is refused ([`SlideError::CoarseResolution`]) before
    /// tissue detection, unless [`Tiling::slide_mpp`] replaces it.
    pub(crate) fn from_slide(slide: Slide, opts: &Tiling) -> Result<TilePlan, SlideError> {
        let slide = Self::plausible_resolution(slide, opts)?;
        let mask = if opts.min_tissue > 0.0 {
            Some(tissue::detect(
                &slide,
                &tissue::DetectOptions {
                    keep_artifacts: opts.keep_artifacts,
                },
            )?)
        } else {
            None
        };
        Self::from_slide_with_mask(slide, opts, mask)
    }

    /// The slide with the resolution to plan with: its own, or the user's `--slide-mpp`
    /// where its own is so coarse that a tile would be upsampled more than 2x
    /// ([`SlideError::CoarseResolution`] when neither is plausible).
    fn plausible_resolution(slide: Slide, opts: &Tiling) -> Result<Slide, SlideError> {
        let path: PathBuf = slide.path().to_path_buf();
        let recorded = slide
            .mpp()
            .ok_or(SlideError::NoMpp { path: path.clone() })?;
        let (slide_mpp, mpp_source) = match check_resolution(&path, recorded, opts) {
            Ok(()) => recorded,
            Err(e) => match opts.slide_mpp.filter(|m| m.is_finite() && *m > 0.0) {
                // the user's --slide-mpp replaces a recorded value this implausible
                Some(user) if recorded.1 != MppSource::User => {
                    check_resolution(&path, (user, MppSource::User), opts)?;
                    (user, MppSource::User)
                }
                _ => return Err(e),
            },
        };
        Ok(slide.with_mpp(slide_mpp, mpp_source))
    }

    /// Plan the tiles of an open slide, keeping those that `mask` covers at least
    /// `min_tissue` of (every tile without a mask).
    fn from_slide_with_mask(
        slide: Slide,
        opts: &Tiling,
        mask: Option<tissue::TissueMask>,
    ) -> Result<TilePlan, SlideError> {
        let path: PathBuf = slide.path().to_path_buf();
        let (slide_mpp, mpp_source) = slide
            .mpp()
            .ok_or(SlideError::NoMpp { path: path.clone() })?;
        let skipped = mask.as_ref().map_or(0, |m| m.skipped_tiles);
        let params = GridParams {
            target_mpp: opts.mpp,
            tile_px: opts.tile,
            min_tissue: opts.min_tissue,
        };
        let g = grid::plan(&slide, slide_mpp, &params, mask.as_ref()).ok_or_else(|| {
            SlideError::BadTiling {
                path: path.clone(),
                msg: format!(
                    "a {} px tile at {} µm/px is not a whole number of level-0 pixels at {} µm/px",
                    opts.tile, opts.mpp, slide_mpp
                ),
            }
        })?;
        #[cfg(test)]
        let level_mpp = slide_mpp * slide.levels()[g.level].downsample;
        let tiles = g
            .tiles
            .iter()
            .map(|t| TileRect {
                x: t.x0 as u64,
                y: t.y0 as u64,
                w: g.s0,
                h: g.s0,
                tissue: t.tissue,
            })
            .collect();
        Ok(TilePlan {
            slide,
            options: *opts,
            slide_mpp,
            mpp_source,
            level: g.level,
            #[cfg(test)]
            level_mpp,
            read_px: g.read_px,
            cols: g.cols,
            rows: g.rows,
            tiles,
            skipped_stored_tiles: skipped,
            mask,
            user_mask: None,
            coords: None,
        })
    }

    /// Open `path` and take its tiles from a coordinate file of TRIDENT or CLAM
    /// ([`super::coords`]) instead of the grid: every patch inside the slide, in the
    /// file's order, no tissue detection. `opts` gives `--slide-mpp`; the plan's
    /// options are the file's patch size and the resolution it makes. A file that
    /// cannot be used is [`SlideError::Coords`].
    pub(crate) fn with_coords_file(
        path: &Path,
        opts: &Tiling,
        file: &Path,
    ) -> Result<TilePlan, SlideError> {
        let slide = Slide::open(
            path,
            &OpenOptions {
                user_mpp: opts.slide_mpp,
                ..OpenOptions::default()
            },
        )?;
        let (slide_mpp, mpp_source) = slide.mpp().ok_or(SlideError::NoMpp {
            path: path.to_path_buf(),
        })?;
        let l0 = slide.levels()[0];
        let ds: Vec<f64> = slide.levels().iter().map(|l| l.downsample).collect();
        let c = super::coords::load(file, (l0.width, l0.height), &ds).map_err(|msg| {
            SlideError::Coords {
                path: file.to_path_buf(),
                msg,
            }
        })?;
        let spec = &c.spec;
        let options = Tiling {
            mpp: slide_mpp * spec.side0 as f64 / f64::from(spec.px),
            tile: spec.px,
            min_tissue: 0.0,
            ..*opts
        };
        let mut warnings = Vec::new();
        if let (n, Some((x, y))) = c.outside {
            warnings.push(format!(
                "{}: {n} of the {} patch(es) in {} start outside the {}x{} slide (first: {x},{y}) \
                 and were left out",
                path.display(),
                n + c.corners.len(),
                file.display(),
                l0.width,
                l0.height
            ));
        }
        Ok(TilePlan {
            options,
            slide_mpp,
            mpp_source,
            level: spec.level,
            #[cfg(test)]
            level_mpp: slide_mpp * slide.levels()[spec.level].downsample,
            read_px: spec.read_px,
            cols: c.corners.len() as u32,
            rows: 1,
            tiles: c
                .corners
                .iter()
                .map(|&(x, y)| TileRect {
                    x,
                    y,
                    w: spec.side0,
                    h: spec.side0,
                    tissue: 1.0,
                })
                .collect(),
            skipped_stored_tiles: 0,
            mask: None,
            user_mask: None,
            coords: Some((file.to_path_buf(), warnings)),
            slide,
        })
    }

    /// What a user should hear about this plan (`plip index` and `plip tiles` say the
    /// same): the reader's warnings (an IFD loop, ...) and the stored tiles that tissue
    /// detection could not decode.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut v: Vec<String> = self.slide.warnings().to_vec();
        v.extend(self.coords.iter().flat_map(|(_, w)| w.iter().cloned()));
        if self.skipped_stored_tiles > 0 {
            v.push(format!(
                "{}: {} stored tile(s) could not be decoded for tissue detection (counted as glass)",
                self.slide.path().display(),
                self.skipped_stored_tiles
            ));
        }
        v
    }

    /// The open slide (levels, vendor, thumbnail).
    pub(crate) fn slide(&self) -> &Slide {
        &self.slide
    }

    /// Kept tile `i` as a `tile x tile` RGB image: `read_px` square at [`Self::level`], then
    /// Pillow's bicubic resize. A corrupt stored tile under it is an error for this tile only.
    pub(crate) fn read_tile(&self, i: usize) -> Result<RgbImage, SlideError> {
        let t = self.tiles.get(i).ok_or_else(|| SlideError::BadTiling {
            path: self.slide.path().to_path_buf(),
            msg: format!("tile {i} of a plan with {} tiles", self.tiles.len()),
        })?;
        let region = self.slide.read_region(
            t.x as i64,
            t.y as i64,
            self.level,
            self.read_px,
            self.read_px,
        )?;
        let side = self.options.tile;
        Ok(if region.dimensions() == (side, side) {
            region
        } else {
            crate::preprocess::resize_bicubic(&region, side, side)
        })
    }
}

/// Refuses a level-0 resolution at which a `tile` px input at `mpp` µm/px covers fewer
/// than `tile / 2` level-0 pixels (an upsampling of more than 2x: an Aperio `MPP = 99`
/// would make 1-pixel tiles, and millions of them).
fn check_resolution(
    path: &Path,
    (slide_mpp, source): (f64, MppSource),
    opts: &Tiling,
) -> Result<(), SlideError> {
    let tile = f64::from(opts.tile.max(1));
    let s0 = (tile * opts.mpp / slide_mpp).round();
    if s0 * 2.0 >= tile {
        return Ok(());
    }
    Err(SlideError::CoarseResolution {
        path: path.to_path_buf(),
        mpp: slide_mpp,
        source_name: super::mpp_source_label(source),
        tile: opts.tile,
        target: opts.mpp,
        s0: s0 as u64,
        factor: tile / s0.max(1.0),
        min_mpp: slide_mpp / 2.0,
    })
}

/// The pixels of a level-0 region `(x, y, w, h)` of the slide at `path`, read as a tile
/// would be (a region as a search query): the coarsest level whose downsample is at most
/// `min(w, h) / side`, then, for a square, Pillow's bicubic resize to `side x side`. A
/// region equal to a stored tile (with `side` the index's `--tile`) gives that tile's
/// pixels. Non-square regions are returned at the level's resolution, for the CLIP
/// preprocessing to resize and center-crop.
pub(crate) fn read_region_as_tile(
    path: &Path,
    (x, y, w, h): (u64, u64, u64, u64),
    side: u32,
    user_mpp: Option<f64>,
) -> Result<RgbImage, SlideError> {
    let slide = Slide::open(
        path,
        &OpenOptions {
            user_mpp,
            ..OpenOptions::default()
        },
    )?;
    let l0 = slide.levels()[0];
    check_region(path, (x, y, w, h), (l0.width, l0.height))?;
    let side = side.max(1);
    let level = slide.best_level_for_downsample(w.min(h) as f64 / f64::from(side));
    let ds = slide.levels()[level].downsample;
    let rw = ((w as f64 / ds).round() as u32).max(1);
    let rh = ((h as f64 / ds).round() as u32).max(1);
    let region = slide.read_region(x as i64, y as i64, level, rw, rh)?;
    Ok(if w == h && region.dimensions() != (side, side) {
        crate::preprocess::resize_bicubic(&region, side, side)
    } else {
        region
    })
}

/// A level-0 region must be non-empty and inside the slide; its bounds are added with
/// checked arithmetic (`x + w` must not wrap around to a small number).
pub(crate) fn check_region(
    path: &Path,
    (x, y, w, h): (u64, u64, u64, u64),
    (width, height): (u64, u64),
) -> Result<(), SlideError> {
    let right = x.checked_add(w).filter(|&r| r <= width);
    let bottom = y.checked_add(h).filter(|&b| b <= height);
    if w == 0 || h == 0 || right.is_none() || bottom.is_none() {
        return Err(SlideError::BadRegion {
            path: path.to_path_buf(),
            msg: format!(
                "region {x},{y},{w},{h} is not inside the {width}x{height} slide (a region is \
                 X,Y,W,H in level-0 pixels, with W and H at least 1 and X+W, Y+H at most the \
                 slide's size)"
            ),
        });
    }
    Ok(())
}
