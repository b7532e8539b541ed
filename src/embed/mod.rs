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
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::backend::cpu::{Chosen, Precision, PrecisionChoice, UnsupportedPrecision};
use crate::index::ModelInfo;
use crate::model::hub::ModelFiles;
use crate::model::tokenizer::PromptTokenizer;
use crate::model::{l2_normalize, openclip, ClipConfig, ClipModel, ModelFamily, Towers};
use crate::preprocess::{DecodeLimits, ImageProcessorConfig};
use crate::source::{load_image, LoadedImage};

/// A model ready to embed text and images.
pub struct Embedder {
    model: ClipModel,
    tokenizer: Option<PromptTokenizer>,
    preprocess: ImageProcessorConfig,
    limits: DecodeLimits,
    device: Device,
    info: ModelInfo,
    precision: Precision,
}

/// How [`Embedder::load_with`] loads a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The arithmetic of the dense layers (default f32).
    pub precision: Precision,
    /// Keep the text tower in f32 whatever `precision` says (`--precision auto`
    /// does: a query is one short run, and f32 keeps text at the parity bar).
    pub text_f32: bool,
}

impl LoadOptions {
    /// The options for `--precision choice` when loading `towers`, and what was
    /// chosen, with why. `auto` decides for the image tower and keeps the text tower
    /// in f32; a text tower alone (a search's query) is f32 without measuring. A
    /// fixed choice applies to both towers, and bf16 is refused where the CPU
    /// cannot run it.
    pub fn resolve(
        choice: PrecisionChoice,
        towers: Towers,
    ) -> std::result::Result<(LoadOptions, Chosen), UnsupportedPrecision> {
        let chosen = if choice == PrecisionChoice::Auto && !towers.vision {
            Chosen {
                precision: Precision::F32,
                why: "auto: text runs in f32".into(),
            }
        } else {
            choice.resolve()?
        };
        let options = LoadOptions {
            precision: chosen.precision,
            text_f32: choice == PrecisionChoice::Auto,
        };
        Ok((options, chosen))
    }
}

impl Embedder {
    /// Loads the requested towers of the model in `files`, in f32.
    pub fn load(files: &ModelFiles, towers: Towers) -> Result<Self> {
        Self::load_with(files, towers, LoadOptions::default())
    }

    /// Loads the requested towers of the model in `files` with `options`.
    /// Fails, before reading any weights, when the CPU cannot run the
    /// requested precision. The model's identity ([`Embedder::info`]) does not
    /// depend on the precision: an index built in bf16 takes f32 queries and
    /// f32 additions, and the reverse.
    pub fn load_with(files: &ModelFiles, towers: Towers, options: LoadOptions) -> Result<Self> {
        let precision = options.precision;
        precision.check_supported()?;
        // Only the CPU has fast paths; a GPU backend would be chosen here.
        let device = &Device::Cpu;
        let (config, preprocess) = match files.family {
            ModelFamily::HfClip => (
                ClipConfig::from_file(&files.config)?,
                ImageProcessorConfig::from_file(&files.preprocessor)
                    .with_context(|| format!("reading {}", files.preprocessor.display()))?,
            ),
            ModelFamily::OpenClip => openclip::read_config(&files.config)?,
        };
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
                        let len = config.text.max_position_embeddings;
                        match files.family {
                            ModelFamily::HfClip => {
                                PromptTokenizer::from_file(&files.tokenizer, len)
                            }
                            ModelFamily::OpenClip => PromptTokenizer::open_clip(len),
                        }
                    })
                    .transpose()
            });
            let text_precision = if options.text_f32 {
                Precision::F32
            } else {
                precision
            };
            let model = ClipModel::load(
                &files.weights,
                files.family,
                &config,
                towers,
                device,
                (precision, text_precision),
            );
            let tokenizer = tokenizer.join().expect("tokenizer thread panicked");
            (tokenizer, model)
        });
        let (tokenizer, model) = (tokenizer?, model?);
        let info = ModelInfo {
            source: files.source.clone(),
            fingerprint: fingerprint(files, &preprocess)?,
            dim: config.projection_dim,
            family: files.family,
        };
        Ok(Self {
            model,
            tokenizer,
            preprocess,
            limits: DecodeLimits::default(),
            device: device.clone(),
            info,
            precision,
        })
    }

    /// The arithmetic the image tower's dense layers run in (what an index records).
    pub fn precision(&self) -> Precision {
        self.precision
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

    /// CLIP preprocessing of pixels already in memory (a slide tile), as for files.
    pub(crate) fn preprocess_rgb(&self, rgb: &image::RgbImage) -> Vec<f32> {
        crate::preprocess::preprocess(rgb, &self.preprocess)
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

mod images;
mod pipeline;
pub use images::{embed_image_files, embed_rgb_images, Interrupted};
pub(crate) mod tiles;
pub(crate) use pipeline::*;
