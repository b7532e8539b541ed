//! The batched image pipeline: files are read and preprocessed in parallel on the
//! rayon pool, one batch ahead of the model, through a bounded channel, so memory
//! stays flat however large the folder; results come back in input order.

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
    let batch_size = batch_size.max(1);
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<Vec<std::result::Result<LoadedImage, String>>>(2);
    std::thread::scope(|scope| -> Result<()> {
        let producer = scope.spawn(move || {
            for chunk in paths.chunks(batch_size) {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let loaded: Vec<_> = chunk.par_iter().map(|p| embedder.load_image(p)).collect();
                if tx.send(loaded).is_err() {
                    break;
                }
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
                    sink(FileResult {
                        index: start + j,
                        path: paths[start + j].clone(),
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
