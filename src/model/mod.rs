//! PLIP (a CLIP ViT-B/32) on candle: config parsing, weight loading and the two towers.
//!
//! This is a port of transformers' `CLIPModel`
//! (<https://github.com/huggingface/transformers/blob/v4.46.3/src/transformers/models/clip/modeling_clip.py>).
//! Weight names mirror the checkpoint (`vb.pp("text_model")` …), so reading a
//! checkpoint's tensor list tells you this code. It guarantees that a model either
//! loads completely, with every tensor the architecture needs, or fails with an error
//! naming what is missing: candle-transformers' own CLIP silently draws random values
//! for a missing `class_embedding`, which would ruin every search without a sign.
//!
//! Differences from candle-transformers' CLIP, all for speed without changing results:
//! Q, K and V are fused into one matmul at load time; the text tower runs each prompt
//! only up to its first `<|endoftext|>` (the causal mask makes later tokens
//! irrelevant to the pooled output), so no padding is ever computed; the vision
//! tower's patch convolution is one matmul over the image's patches, and its last
//! layer computes only the class token's row, the one that is pooled.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Embedding, Linear, VarBuilder};

use crate::backend::cpu::{self, Dense, Epilogue, Norm, Precision};
use rayon::prelude::*;
use serde_json::Value;

mod config;
pub(crate) mod hub;
mod layers;
pub(crate) mod openclip;
#[cfg(test)]
mod tests;
mod text;
pub(crate) mod tokenizer;
mod vision;
mod weights;
pub(crate) use config::{Activation, ClipConfig, TextConfig, TowerConfig, VisionConfig};
pub(crate) use layers::{norm, Encoder};
pub(crate) use text::TextTower;
pub(crate) use vision::VisionTower;
pub use weights::WeightsFile;
pub(crate) use weights::{check_complete, TokenRows};

/// Which towers to load: `plip search` with a text query needs only the text tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Towers {
    /// Load the text tower.
    pub text: bool,
    /// Load the vision tower.
    pub vision: bool,
}

impl Towers {
    /// Both towers.
    pub const BOTH: Towers = Towers {
        text: true,
        vision: true,
    };
    /// The vision tower only (indexing images).
    pub const VISION: Towers = Towers {
        text: false,
        vision: true,
    };
    /// The text tower only (text queries).
    pub const TEXT: Towers = Towers {
        text: true,
        vision: false,
    };
}
/// How a checkpoint lays out its files and tensors; the architecture is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModelFamily {
    /// A Hugging Face `CLIPModel` (`config.json`, `tokenizer.json`,
    /// `preprocessor_config.json`), as `vinid/plip`.
    #[default]
    HfClip,
    /// An open_clip checkpoint (`open_clip_config.json`), as QuiltNet ([`openclip`]).
    OpenClip,
}

impl ModelFamily {
    /// The name stored in an index and shown by `plip info`.
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::HfClip => "hf-clip",
            ModelFamily::OpenClip => "open_clip",
        }
    }
}

/// A loaded PLIP/CLIP model: either tower may be absent when not needed.
pub(crate) struct ClipModel {
    /// The text tower, when loaded.
    pub text: Option<TextTower>,
    /// The vision tower, when loaded.
    pub vision: Option<VisionTower>,
}

impl ClipModel {
    /// Builds the requested towers from a `VarBuilder`, checking first that every
    /// tensor they need is present.
    #[cfg(test)]
    pub(crate) fn new(vb: VarBuilder, config: &ClipConfig, towers: Towers) -> Result<Self> {
        Self::build(vb, config, towers, None, (Precision::F32, Precision::F32))
    }

    /// Loads the requested towers from a checkpoint. From a safetensors file the
    /// token-embedding table is not loaded: its rows are read as prompts need
    /// them ([`TokenRows`]). The dense layers of the vision and text towers run in
    /// `precision.0` and `precision.1`; the final projections always in f32.
    pub(crate) fn load(
        weights: &WeightsFile,
        family: ModelFamily,
        config: &ClipConfig,
        towers: Towers,
        device: &Device,
        precision: (Precision, Precision),
    ) -> Result<Self> {
        let (vb, table) = match family {
            ModelFamily::HfClip => (weights.var_builder(device)?, weights::TOKEN_EMBEDDING),
            ModelFamily::OpenClip => {
                let inner = weights.var_builder(device)?;
                let table = openclip::names::OpenClipNames::token_embedding_name(&inner);
                (
                    openclip::names::OpenClipNames::var_builder(inner, device),
                    table,
                )
            }
        };
        let rows = (towers.text && device.is_cpu())
            .then(|| {
                TokenRows::open(
                    weights,
                    table,
                    config.text.vocab_size,
                    config.text.tower.hidden_size,
                )
            })
            .flatten();
        Self::build(vb, config, towers, rows, precision)
            .with_context(|| format!("loading {}", weights.path().display()))
    }

    fn build(
        vb: VarBuilder,
        config: &ClipConfig,
        towers: Towers,
        rows: Option<TokenRows>,
        (vision_precision, text_precision): (Precision, Precision),
    ) -> Result<Self> {
        check_complete(&vb, config, towers)?;
        let p = config.projection_dim;
        let text = if towers.text {
            let proj = Linear::new(
                vb.pp("text_projection")
                    .get((p, config.text.tower.hidden_size), "weight")?,
                None,
            );
            Some(TextTower::new(
                vb.pp("text_model"),
                proj,
                &config.text,
                rows,
                text_precision,
            )?)
        } else {
            None
        };
        let vision = if towers.vision {
            let proj = Linear::new(
                vb.pp("visual_projection")
                    .get((p, config.vision.tower.hidden_size), "weight")?,
                None,
            );
            Some(VisionTower::new(
                vb.pp("vision_model"),
                proj,
                &config.vision,
                vision_precision,
            )?)
        } else {
            None
        };
        Ok(Self { text, vision })
    }
}

/// L2-normalizes each row of a `[N, D]` tensor.
pub(crate) fn l2_normalize(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norm)
}
