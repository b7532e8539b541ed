//! The tiling grid: which level-0 squares become model inputs, and how to
//! read each one.
//!
//! For a slide at `slide_mpp` µm/px and a target of `tile_px` pixels at
//! `target_mpp` µm/px:
//!
//! * a tile covers `s0 = round(tile_px * target_mpp / slide_mpp)` level-0
//!   pixels per side; tiles sit at `(i*s0, j*s0)` and only whole tiles are
//!   kept (no partial tiles at the right and bottom edges);
//! * the read level is the coarsest whose downsample is `<= s0 / tile_px`
//!   (OpenSlide's `best_level_for_downsample`), so reads never upsample;
//! * at that level the read is `read_px = round(s0 / downsample)` pixels per
//!   side, then resized to `tile_px` by the caller. The read covers
//!   `read_px * downsample` level-0 pixels: within half a level pixel of
//!   `s0`, the closest a whole-pixel read at that level can get (reading
//!   `ceil` instead would add up to one level pixel of context, `floor`
//!   drop one). `read_px >= tile_px` always, as `downsample <= s0/tile_px`.
//! * a tile is kept when the tissue mask covers at least `min_tissue` of it.

use super::tissue::TissueMask;
use super::Slide;

/// Grid parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GridParams {
    /// µm per pixel of the model input (default 0.5).
    pub(crate) target_mpp: f64,
    /// Model input side in pixels (default 224).
    pub(crate) tile_px: u32,
    /// Least tissue fraction of a kept tile (default 0.5).
    pub(crate) min_tissue: f64,
}

impl Default for GridParams {
    fn default() -> Self {
        Self {
            target_mpp: 0.5,
            tile_px: 224,
            min_tissue: 0.5,
        }
    }
}

/// One tile to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GridTile {
    /// Column and row in the grid.
    pub(crate) col: u32,
    pub(crate) row: u32,
    /// Level-0 origin, for `read_region`.
    pub(crate) x0: i64,
    pub(crate) y0: i64,
    /// Tissue fraction (1.0 when no mask was given).
    pub(crate) tissue: f64,
}

/// The planned grid.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Grid {
    /// Level-0 side of a tile.
    pub(crate) s0: u64,
    /// Level to read from.
    pub(crate) level: usize,
    /// Pixels to read per side at that level (then resize to `tile_px`).
    pub(crate) read_px: u32,
    pub(crate) cols: u32,
    pub(crate) rows: u32,
    /// Kept tiles, row-major.
    pub(crate) tiles: Vec<GridTile>,
}

/// Plan the grid for `slide`; `slide_mpp` is level-0 µm/px. With a mask,
/// tiles below `min_tissue` are dropped. A slide smaller than one tile gets an
/// empty grid. Returns `None` when the numbers are not finite and positive.
pub(crate) fn plan(
    slide: &Slide,
    slide_mpp: f64,
    params: &GridParams,
    mask: Option<&TissueMask>,
) -> Option<Grid> {
    if !(slide_mpp.is_finite() && slide_mpp > 0.0 && params.target_mpp > 0.0) {
        return None;
    }
    let tile = f64::from(params.tile_px.max(1));
    let s0 = (tile * params.target_mpp / slide_mpp).round();
    if !(s0.is_finite() && s0 >= 1.0) {
        return None;
    }
    let s0u = s0 as u64;
    let level = slide.best_level_for_downsample(s0 / tile);
    let ds = slide.levels()[level].downsample;
    let read_px = u32::try_from((s0 / ds).round() as u64).ok()?.max(1);
    let l0 = slide.levels()[0];
    let cols = u32::try_from(l0.width / s0u).ok()?;
    let rows = u32::try_from(l0.height / s0u).ok()?;
    let mut tiles = Vec::new();
    for row in 0..rows {
        for col in 0..cols {
            let x0 = u64::from(col) * s0u;
            let y0 = u64::from(row) * s0u;
            let tissue = match mask {
                Some(m) => m.fraction(x0 as f64, y0 as f64, s0, s0),
                None => 1.0,
            };
            if mask.is_none() || tissue >= params.min_tissue {
                tiles.push(GridTile {
                    col,
                    row,
                    x0: x0 as i64,
                    y0: y0 as i64,
                    tissue,
                });
            }
        }
    }
    Some(Grid {
        s0: s0u,
        level,
        read_px,
        cols,
        rows,
        tiles,
    })
}
