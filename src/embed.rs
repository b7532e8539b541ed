//! Turning prompts and image files into unit vectors, in batches.
//!
//! [`Embedder`] bundles the model, its tokenizer and its preprocessing, so every
//! caller (index, search, eval, embed) embeds the same way. [`embed_files`] is the
//! image pipeline: files are read, hashed, decoded and preprocessed in parallel on
//! the rayon pool, one batch ahead of the model, through a bounded channel so
//! memory stays flat however large the folder; results come back in input order.
//! A file that cannot be decoded is reported, never fatal.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::hub::ModelFiles;
use crate::model::{l2_normalize, ClipConfig, ClipModel, Towers};
use crate::preprocess::{self, DecodeLimits, ImageProcessorConfig};
use crate::store::ModelInfo;
use crate::text::PromptTokenizer;

/// A model ready to embed text and images.
pub struct Embedder {
    model: ClipModel,
    tokenizer: Option<PromptTokenizer>,
    preprocess: ImageProcessorConfig,
    limits: DecodeLimits,
    device: Device,
    info: ModelInfo,
}

impl Embedder {
    /// Loads the requested towers of the model in `files`.
    pub fn load(files: &ModelFiles, towers: Towers, device: &Device) -> Result<Self> {
        let config = ClipConfig::from_file(&files.config)?;
        let preprocess = ImageProcessorConfig::from_file(&files.preprocessor)
            .with_context(|| format!("reading {}", files.preprocessor.display()))?;
        let (h, w) = preprocess.output_size();
        let s = config.vision.image_size as u32;
        if towers.vision && (h, w) != (s, s) {
            bail!("preprocessor_config.json crops to {h}x{w}, but the model takes {s}x{s} images");
        }
        // Parsing tokenizer.json (about 50 ms) and reading and packing the text
        // tower's weights (longer) overlap, which a cold `plip search` feels.
        let (tokenizer, model) = std::thread::scope(|s| {
            let tokenizer = s.spawn(|| {
                towers
                    .text
                    .then(|| {
                        PromptTokenizer::from_file(
                            &files.tokenizer,
                            config.text.max_position_embeddings,
                        )
                    })
                    .transpose()
            });
            let model = ClipModel::load(&files.weights, &config, towers, device);
            let tokenizer = tokenizer.join().expect("tokenizer thread panicked");
            (tokenizer, model)
        });
        let (tokenizer, model) = (tokenizer?, model?);
        let info = ModelInfo {
            source: files.source.clone(),
            fingerprint: fingerprint(files, &preprocess)?,
            dim: config.projection_dim,
        };
        Ok(Self {
            model,
            tokenizer,
            preprocess,
            limits: DecodeLimits::default(),
            device: device.clone(),
            info,
        })
    }

    /// Identity of the model, as recorded in an index.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.info.dim
    }

    /// The preprocessing settings.
    pub fn preprocess_config(&self) -> &ImageProcessorConfig {
        &self.preprocess
    }

    /// Decode limits used for every image.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Token ids of a prompt, as the model sees them.
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .as_ref()
            .context("internal error: text tower not loaded")?
            .encode(prompt)
    }

    /// Unit embeddings of prompts, in order.
    pub fn embed_texts(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = prompts
            .iter()
            .map(|p| self.tokenize(p))
            .collect::<Result<Vec<_>>>()?;
        self.embed_token_ids(&ids)
    }

    /// Unit embeddings of tokenized prompts, in order. Prompts are cut after their
    /// first `<|endoftext|>` and grouped by length, so no padding is computed and a
    /// prompt's embedding cannot depend on its batch.
    pub fn embed_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let tower = self
            .model
            .text
            .as_ref()
            .context("internal error: text tower not loaded")?;
        let cut: Vec<&[u32]> = ids.iter().map(|s| &s[..tower.pooled_len(s)]).collect();
        let mut order: Vec<usize> = (0..cut.len()).collect();
        order.sort_by_key(|&i| cut[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for group in order.chunk_by(|&a, &b| cut[a].len() == cut[b].len()) {
            for chunk in group.chunks(64) {
                let batch: Vec<&[u32]> = chunk.iter().map(|&i| cut[i]).collect();
                if batch[0].is_empty() {
                    bail!("a prompt tokenized to nothing");
                }
                let emb = l2_normalize(&tower.forward_same_len(&batch, &self.device)?)?;
                for (&i, row) in chunk.iter().zip(emb.to_vec2::<f32>()?) {
                    out[i] = row;
                }
            }
        }
        Ok(out)
    }

    /// Unit embeddings of preprocessed images (`n` CHW tensors back to back).
    pub fn embed_pixels(&self, pixels: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
        let tower = self
            .model
            .vision
            .as_ref()
            .context("internal error: vision tower not loaded")?;
        let (h, w) = self.preprocess.output_size();
        let t = Tensor::from_vec(pixels, (n, 3, h as usize, w as usize), &self.device)?;
        Ok(l2_normalize(&tower.forward(&t)?)?.to_vec2::<f32>()?)
    }

    /// Reads, decodes and preprocesses one image file.
    pub fn load_image(&self, path: &Path) -> std::result::Result<LoadedImage, String> {
        load_image(path, &self.preprocess, &self.limits)
    }
}

/// Hash of everything that changes what the model computes: config, tokenizer,
/// preprocessing and weights (size plus the first and last MiB, which always
/// differ between trainings, so a 600 MB checkpoint is not read in full).
fn fingerprint(files: &ModelFiles, pre: &ImageProcessorConfig) -> Result<String> {
    let mut h = crc32fast::Hasher::new();
    for p in [&files.config, &files.tokenizer] {
        h.update(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    h.update(pre.fingerprint().as_bytes());
    let path = files.weights.path();
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    f.read_exact(&mut buf)?;
    h.update(&buf);
    f.seek(SeekFrom::Start(len - buf.len() as u64))?;
    f.read_exact(&mut buf)?;
    h.update(&buf);
    Ok(format!("{:08x}-{len}", h.finalize()))
}

/// One image, read and preprocessed.
pub struct LoadedImage {
    /// CHW pixels.
    pub pixels: Vec<f32>,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch (taken before reading).
    pub mtime_ns: i128,
    /// CRC32 of the bytes that were decoded.
    pub crc32: u32,
}

/// Size and mtime of a file, as stored in the index.
pub fn stat(path: &Path) -> std::io::Result<(u64, i128)> {
    let m = std::fs::metadata(path)?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    Ok((m.len(), mtime))
}

/// CRC32 of a file's bytes.
pub fn file_crc(path: &Path) -> std::io::Result<u32> {
    Ok(crc32fast::hash(&std::fs::read(path)?))
}

fn load_image(
    path: &Path,
    cfg: &ImageProcessorConfig,
    limits: &DecodeLimits,
) -> std::result::Result<LoadedImage, String> {
    let (size, mtime_ns) = stat(path).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let crc32 = crc32fast::hash(&bytes);
    // Decoders are fed untrusted bytes; should one of them panic on a malformed file
    // (a bug there), that file is skipped rather than the whole run lost.
    let decoded = std::panic::catch_unwind(|| {
        preprocess::decode_rgb(&bytes, limits).map(|rgb| preprocess::preprocess(&rgb, cfg))
    });
    let pixels = match decoded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("the image decoder crashed on this file".into()),
    };
    Ok(LoadedImage {
        pixels,
        size,
        mtime_ns,
        crc32,
    })
}

/// The outcome for one input file of [`embed_files`].
pub struct FileResult {
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
pub fn embed_files(
    embedder: &Embedder,
    paths: &[PathBuf],
    batch_size: usize,
    cancel: &AtomicBool,
    mut sink: impl FnMut(FileResult) -> Result<()>,
) -> Result<()> {
    let batch_size = batch_size.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Vec<std::result::Result<LoadedImage, String>>>(2);
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
