//! Embedding a list of images into one row-major buffer, for callers that want
//! a matrix rather than a stream: `plip embed` and the Python package.
//!
//! Files go through the same batched pipeline as indexing ([`embed_files`]), so
//! a row is bit for bit the vector the index stores for that file. In-memory
//! RGB images go through the same preprocessing and model, in batches of the
//! same size. Rows come back in input order; one bad input fails the call,
//! because a row must line up with its input. Both stop between batches when
//! `cancel` is set and then return [`Interrupted`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use image::RgbImage;
use rayon::prelude::*;

use super::{embed_files, Embedder};
use crate::preprocess::preprocess;

/// The call was cancelled before every row was computed.
#[derive(Debug, thiserror::Error)]
#[error("interrupted before all images were embedded")]
pub struct Interrupted;

/// Unit embeddings of image files, `paths.len() * embedder.dim()` values, one
/// row per file in input order. Decoding runs on the rayon pool one batch ahead
/// of the model. A file that cannot be read or decoded fails the whole call,
/// naming the file.
pub fn embed_image_files(
    embedder: &Embedder,
    paths: &[PathBuf],
    batch_size: usize,
    cancel: &AtomicBool,
) -> Result<Vec<f32>> {
    let dim = embedder.dim();
    let mut out = vec![0f32; paths.len() * dim];
    let mut done = 0usize;
    embed_files(embedder, paths, batch_size, cancel, |r| match r.outcome {
        Ok((v, _)) => {
            out[r.index * dim..(r.index + 1) * dim].copy_from_slice(&v);
            done += 1;
            Ok(())
        }
        Err(reason) => bail!("cannot embed {}: {reason}", r.path.display()),
    })?;
    if done < paths.len() {
        return Err(Interrupted.into());
    }
    Ok(out)
}

/// Unit embeddings of decoded RGB images, `images.len() * embedder.dim()`
/// values in input order: each image is preprocessed exactly as a decoded file
/// is (the CLIP pipeline of `preprocess`), in parallel, and embedded in batches
/// of `batch_size`. `load` turns input `i` into pixels; it is called batch by
/// batch, so only one batch of decoded images is held at a time.
pub fn embed_rgb_images(
    embedder: &Embedder,
    count: usize,
    batch_size: usize,
    cancel: &AtomicBool,
    mut load: impl FnMut(std::ops::Range<usize>) -> Result<Vec<RgbImage>>,
) -> Result<Vec<f32>> {
    let dim = embedder.dim();
    let batch_size = batch_size.max(1);
    let cfg = embedder.preprocess_config();
    let mut out = vec![0f32; count * dim];
    let mut start = 0;
    while start < count {
        if cancel.load(Ordering::Relaxed) {
            return Err(Interrupted.into());
        }
        let end = (start + batch_size).min(count);
        let images = load(start..end)?;
        if images.len() != end - start {
            bail!(
                "internal error: {} images loaded for {} inputs",
                images.len(),
                end - start
            );
        }
        let pixels: Vec<f32> = images
            .par_iter()
            .map(|img| preprocess(img, cfg))
            .collect::<Vec<_>>()
            .concat();
        drop(images);
        for (i, row) in embedder
            .embed_pixels(pixels, end - start)?
            .iter()
            .enumerate()
        {
            out[(start + i) * dim..(start + i + 1) * dim].copy_from_slice(row);
        }
        start = end;
    }
    Ok(out)
}
