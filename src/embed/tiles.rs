//! Embedding the tissue tiles of one slide on the fly (`plip embed SLIDE`, `plip heatmap`
//! on a slide that is not indexed), through the same batched pipeline as indexing: tiles
//! are read from the plan's shared open slide, so each stored tile is decoded once.

use std::sync::atomic::AtomicBool;

use anyhow::Result;

use super::{embed_items, Embedder};
use crate::index::Region;
use crate::source::slide::TilePlan;
use crate::source::LoadedImage;

/// The index region of kept tile `i` of `plan`: level-0 square, level read, and the
/// resolution of the model input.
pub(crate) fn tile_region(plan: &TilePlan, i: usize) -> Region {
    let t = &plan.tiles[i];
    Region {
        x: t.x,
        y: t.y,
        w: t.w,
        h: t.h,
        level: plan.level as u32,
        mpp: plan.slide_mpp * t.w as f64 / f64::from(plan.options.tile.max(1)),
    }
}

/// Embedded tiles (region and unit vector, in plan order) and the errors of the tiles
/// that could not be read.
pub(crate) type EmbeddedTiles = (Vec<(Region, Vec<f32>)>, Vec<String>);

/// Unit embeddings of every kept tile of `plan`, in plan order; a tile that cannot be
/// read is left out and its error returned beside.
pub(crate) fn embed_tiles(
    embedder: &Embedder,
    plan: &TilePlan,
    batch_size: usize,
) -> Result<EmbeddedTiles> {
    let cancel = AtomicBool::new(false);
    let mut rows = Vec::with_capacity(plan.tiles.len());
    let mut failed = Vec::new();
    embed_items(
        embedder,
        plan.tiles.len(),
        |i| {
            let rgb = plan.read_tile(i).map_err(|e| e.to_string())?;
            Ok(LoadedImage {
                pixels: embedder.preprocess_rgb(&rgb),
                size: 0,
                mtime_ns: 0,
                crc32: 0,
            })
        },
        batch_size,
        &cancel,
        |r| {
            match r.outcome {
                Ok((v, _)) => rows.push((tile_region(plan, r.index), v)),
                Err(e) => failed.push(e),
            }
            Ok(())
        },
    )?;
    Ok((rows, failed))
}
