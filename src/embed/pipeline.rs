//! The batched image pipeline: items (image files, or tiles of a slide) are read and
//! preprocessed in parallel on the rayon pool, one batch ahead of the model, through a
//! bounded channel, so memory stays flat however large the folder; results come back
//! in input order.
//!
//! [`embed_items`] does not know where pixels come from: the caller's `load(i)` reads
//! item `i` (a file through `source::load_image`, a tile through a shared open slide,
//! whose decoded-tile cache then serves neighbouring tiles). [`embed_files`] is the
//! file case.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use rayon::prelude::*;

use super::Embedder;
use crate::source::LoadedImage;

/// The outcome for one input file of [`embed_files`].
pub(crate) struct FileResult {
    /// Position in the input list.
    pub index: usize,
    /// The file.
    pub path: PathBuf,
    /// The unit vector and file facts, or why the file was skipped.
    pub outcome: std::result::Result<(Vec<f32>, LoadedImage), String>,
}

/// The outcome for one item of [`embed_items`].
pub(crate) struct ItemResult {
    /// Position in the input list.
    pub index: usize,
    /// The unit vector and the item's facts, or why it was skipped.
    pub outcome: std::result::Result<(Vec<f32>, LoadedImage), String>,
}

/// Embeds `paths` in batches of `batch_size`, calling `sink` once per file in input
/// order. Decoding of the next batch overlaps the model's work on this one. Stops
/// early (without error) when `cancel` is set; `sink` returning an error stops too.
pub(crate) fn embed_files(
    embedder: &Embedder,
    paths: &[PathBuf],
    batch_size: usize,
    cancel: &AtomicBool,
    mut sink: impl FnMut(FileResult) -> Result<()>,
) -> Result<()> {
    embed_items(
        embedder,
        paths.len(),
        |i| embedder.load_image(&paths[i]),
        batch_size,
        cancel,
        |r| {
            sink(FileResult {
                index: r.index,
                path: paths[r.index].clone(),
                outcome: r.outcome,
            })
        },
    )
}

/// Embeds items `0..count`, reading item `i` with `load(i)` (on the rayon pool), in
/// batches of `batch_size`, calling `sink` once per item in order. Same overlap,
/// cancellation and error rules as [`embed_files`].
pub(crate) fn embed_items<L>(
    embedder: &Embedder,
    count: usize,
    load: L,
    batch_size: usize,
    cancel: &AtomicBool,
    mut sink: impl FnMut(ItemResult) -> Result<()>,
) -> Result<()>
where
    L: Fn(usize) -> std::result::Result<LoadedImage, String> + Sync,
{
    let batch_size = batch_size.max(1);
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<Vec<std::result::Result<LoadedImage, String>>>(2);
    let load = &load;
    std::thread::scope(|scope| -> Result<()> {
        let producer = scope.spawn(move || {
            let mut start = 0;
            while start < count {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let end = (start + batch_size).min(count);
                let loaded: Vec<_> = (start..end).into_par_iter().map(load).collect();
                if tx.send(loaded).is_err() {
                    break;
                }
                start = end;
            }
        });
        let mut start = 0;
        let result = (|| -> Result<()> {
            for loaded in rx.iter() {
                let n = loaded.len();
                let mut pixels = Vec::new();
                let mut ok = 0;
                for img in loaded.iter().flatten() {
                    pixels.extend_from_slice(&img.pixels);
                    ok += 1;
                }
                let mut vectors = if ok > 0 {
                    embedder.embed_pixels(pixels, ok)?.into_iter()
                } else {
                    Vec::new().into_iter()
                };
                for (j, img) in loaded.into_iter().enumerate() {
                    let outcome =
                        img.map(|img| (vectors.next().expect("one vector per image"), img));
                    sink(ItemResult {
                        index: start + j,
                        outcome,
                    })?;
                }
                start += n;
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
            }
            Ok(())
        })();
        drop(rx);
        producer.join().expect("decoder thread panicked");
        result
    })
}
