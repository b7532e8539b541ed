//! open_clip checkpoints (`open_clip_config.json` + `open_clip_model.safetensors`
//! or `open_clip_pytorch_model.bin`), read natively: QuiltNet, and the OpenAI,
//! LAION and DataComp CLIPs that open_clip publishes.
//!
//! The standard open_clip `CLIP` (a `VisionTransformer` and a `TextTransformer`,
//! <https://github.com/mlfoundations/open_clip/blob/v3.3.0/src/open_clip/model.py>
//! and `transformer.py`) computes what transformers' `CLIPModel` computes: class-token
//! pooling after `ln_post`, text pooled at the argmax of the token ids (the first
//! `<end_of_text>`) after `ln_final`, projections without bias. So this module maps
//! the config onto plip's [`ClipConfig`], open_clip's preprocessing onto an
//! [`ImageProcessorConfig`], and its tensor names onto the Hugging Face names the
//! towers read ([`names`]); the towers themselves are shared.
//!
//! It guarantees that a config plip cannot run exactly (a timm or Hugging Face
//! tower, a ResNet, attentional or mean pooling, layer scale, a non-`lower`
//! tokenizer …) is refused when the model is loaded, before anything is indexed,
//! with the part named.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::config::{Activation, ClipConfig, TextConfig, TowerConfig, VisionConfig};
use crate::preprocess::{ImageProcessorConfig, PixelPipeline};

mod clean;
pub(crate) mod names;
#[cfg(test)]
mod tests;
pub(crate) mod tokenizer;

/// The config file of an open_clip checkpoint.
pub(crate) const CONFIG: &str = "open_clip_config.json";
/// Weight files open_clip writes, in the order its loader prefers them.
pub(crate) const WEIGHTS: [&str; 2] =
    ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// `<end_of_text>` in open_clip's vocabulary.
const EOT: u32 = 49407;

/// Reads `open_clip_config.json`: the model and its preprocessing.
pub(crate) fn read_config(path: &Path) -> Result<(ClipConfig, ImageProcessorConfig)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_config(&text).with_context(|| format!("{} is not a model plip can run", path.display()))
}

/// Parses the text of `open_clip_config.json`.
pub(crate) fn parse_config(text: &str) -> Result<(ClipConfig, ImageProcessorConfig)> {
    let root: Value = serde_json::from_str(text).context("open_clip_config.json is not JSON")?;
    let model = root
        .get("model_cfg")
        .and_then(Value::as_object)
        .context("open_clip_config.json has no \"model_cfg\" object")?;
    if model.get("multimodal_cfg").is_some_and(|v| !v.is_null()) {
        bail!("CoCa models (\"multimodal_cfg\") are not supported");
    }
    let empty = Map::new();
    let section = |key: &str| -> Result<&Map<String, Value>> {
        match model.get(key) {
            None | Some(Value::Null) => Ok(&empty),
            Some(Value::Object(m)) => Ok(m),
            Some(other) => bail!("model_cfg.{key} must be an object, got {other}"),
        }
    };
    let (vision_cfg, text_cfg) = (section("vision_cfg")?, section("text_cfg")?);
    let act = if get_bool(model, "model_cfg", "quick_gelu")?.unwrap_or(false) {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    let vision = vision_config(vision_cfg, act)?;
    let text = text_config(text_cfg, act)?;
    let projection_dim = get_usize(model, "model_cfg", "embed_dim", None)?;
    let config = ClipConfig {
        text,
        vision,
        projection_dim,
    };
    config.validate()?;
    let pre = match root.get("preprocess_cfg") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => bail!("preprocess_cfg must be an object, got {other}"),
    };
    let preprocess = preprocess_config(pre, config.vision.image_size as u32)?;
    Ok((config, preprocess))
}

/// Settings with one value plip computes (and the ones that change nothing at
/// inference); anything else is named in the refusal.
fn refuse_unless_default(
    cfg: &Map<String, Value>,
    tower: &str,
    keys: &[(&str, Value)],
) -> Result<()> {
    for (key, default) in keys {
        match cfg.get(*key) {
            None | Some(Value::Null) => {}
            Some(v) if v == default => {}
            Some(v) => bail!("open_clip {tower} tower setting `{key}: {v}` is not supported"),
        }
    }
    Ok(())
}

/// The custom-block options of open_clip 3.x (`block_type` "custom" and its
/// switches), layer scale, and act/norm overrides: none is ported.
fn block_defaults() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![
        ("ls_init_value", Value::Null),
        ("act_kwargs", Value::Null),
        ("norm_kwargs", Value::Null),
        ("block_type", json!("default")),
        ("qk_norm", json!(false)),
        ("scaled_cosine_attn", json!(false)),
        ("scale_heads", json!(false)),
        ("scale_attn_inner", json!(false)),
        ("scale_attn", json!(false)),
        ("scale_fc", json!(false)),
    ]
}

fn vision_config(cfg: &Map<String, Value>, act: Activation) -> Result<VisionConfig> {
    use serde_json::json;
    if let Some(name) = cfg.get("timm_model_name").and_then(Value::as_str) {
        if !name.is_empty() {
            bail!("timm vision tower `{name}` is not supported");
        }
    }
    if let Some(layers @ Value::Array(_)) = cfg.get("layers") {
        bail!("ModifiedResNet vision tower (layers {layers}) is not supported");
    }
    let mut keys = block_defaults();
    keys.extend([
        ("attentional_pool", json!(false)),
        ("no_ln_pre", json!(false)),
        ("pos_embed_type", json!("learnable")),
        ("pool_type", json!("tok")),
        ("input_patchnorm", json!(false)),
    ]);
    refuse_unless_default(cfg, "vision", &keys)?;
    let width = get_usize(cfg, "vision_cfg", "width", Some(768))?;
    let head_width = get_usize(cfg, "vision_cfg", "head_width", Some(64))?;
    if head_width == 0 || !width.is_multiple_of(head_width) {
        bail!("vision_cfg.width {width} is not a multiple of head_width {head_width}");
    }
    let image_size = match cfg.get("image_size") {
        Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => as_usize(&a[0], "image_size")?,
        Some(Value::Array(a)) => bail!("non-square vision_cfg.image_size {a:?} is not supported"),
        None | Some(Value::Null) => 224,
        Some(v) => as_usize(v, "vision_cfg.image_size")?,
    };
    Ok(VisionConfig {
        tower: TowerConfig {
            hidden_size: width,
            intermediate_size: mlp_width(cfg, "vision_cfg", width)?,
            num_attention_heads: width / head_width,
            num_hidden_layers: get_usize(cfg, "vision_cfg", "layers", Some(12))?,
            hidden_act: act,
            layer_norm_eps: 1e-5,
        },
        image_size,
        patch_size: get_usize(cfg, "vision_cfg", "patch_size", Some(16))?,
        num_channels: 3,
    })
}

fn text_config(cfg: &Map<String, Value>, act: Activation) -> Result<TextConfig> {
    use serde_json::json;
    for key in ["hf_model_name", "hf_tokenizer_name"] {
        if let Some(name) = cfg.get(key).and_then(Value::as_str) {
            if !name.is_empty() {
                let what = if key == "hf_model_name" {
                    "text tower"
                } else {
                    "tokenizer"
                };
                bail!("Hugging Face {what} `{name}` is not supported (only open_clip's own text transformer and tokenizer are)");
            }
        }
    }
    let mut keys = block_defaults();
    keys.extend([
        ("embed_cls", json!(false)),
        ("no_causal_mask", json!(false)),
        ("pool_type", json!("argmax")),
        ("proj_bias", json!(false)),
        ("proj_type", json!("linear")),
    ]);
    refuse_unless_default(cfg, "text", &keys)?;
    match cfg.get("tokenizer_kwargs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.iter().all(|(k, v)| k == "clean" && v == "lower") => {}
        Some(v) => bail!("open_clip tokenizer_kwargs {v} are not supported (only the default cleaning, `lower`, is)"),
    }
    let width = get_usize(cfg, "text_cfg", "width", Some(512))?;
    Ok(TextConfig {
        tower: TowerConfig {
            hidden_size: width,
            intermediate_size: mlp_width(cfg, "text_cfg", width)?,
            num_attention_heads: get_usize(cfg, "text_cfg", "heads", Some(8))?,
            num_hidden_layers: get_usize(cfg, "text_cfg", "layers", Some(12))?,
            hidden_act: act,
            layer_norm_eps: 1e-5,
        },
        vocab_size: get_usize(cfg, "text_cfg", "vocab_size", Some(49408))?,
        max_position_embeddings: get_usize(cfg, "text_cfg", "context_length", Some(77))?,
        eos_token_id: EOT,
    })
}

/// `int(width * mlp_ratio)`, as open_clip's `ResidualAttentionBlock` sizes its MLP.
fn mlp_width(cfg: &Map<String, Value>, section: &str, width: usize) -> Result<usize> {
    let ratio = match cfg.get("mlp_ratio") {
        None | Some(Value::Null) => 4.0,
        Some(v) => v
            .as_f64()
            .filter(|r| *r > 0.0)
            .with_context(|| format!("{section}.mlp_ratio must be a positive number, got {v}"))?,
    };
    Ok((width as f64 * ratio) as usize)
}

/// open_clip's eval transform from `preprocess_cfg`: resize the shortest edge to
/// the model's image size (bicubic), centre crop, to tensor, normalise.
fn preprocess_config(cfg: &Map<String, Value>, image_size: u32) -> Result<ImageProcessorConfig> {
    match cfg.get("resize_mode").and_then(Value::as_str) {
        None | Some("shortest") => {}
        Some(mode) => {
            bail!("preprocess_cfg resize_mode `{mode}` is not supported (only `shortest`)")
        }
    }
    match cfg.get("interpolation").and_then(Value::as_str) {
        // "random" is a training setting; open_clip evaluates with bicubic then.
        None | Some("bicubic") | Some("random") => {}
        Some(other) => {
            bail!("preprocess_cfg interpolation `{other}` is not supported (only `bicubic`)")
        }
    }
    let mut out = ImageProcessorConfig {
        shortest_edge: image_size,
        crop_height: image_size,
        crop_width: image_size,
        pipeline: PixelPipeline::OpenClip,
        ..ImageProcessorConfig::default()
    };
    for (key, slot) in [("mean", &mut out.image_mean), ("std", &mut out.image_std)] {
        match cfg.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.len() == 3 => {
                for (s, v) in slot.iter_mut().zip(a) {
                    *s = v
                        .as_f64()
                        .filter(|f| f.is_finite())
                        .with_context(|| format!("preprocess_cfg.{key} must hold numbers"))?
                        as f32;
                }
            }
            Some(v) => bail!("preprocess_cfg.{key} must be 3 numbers (RGB), got {v}"),
        }
    }
    if out.image_std.contains(&0.0) {
        bail!("preprocess_cfg.std contains 0");
    }
    Ok(out)
}

fn get_bool(map: &Map<String, Value>, section: &str, key: &str) -> Result<Option<bool>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .with_context(|| format!("{section}.{key} must be true or false, got {v}")),
    }
}

fn get_usize(
    map: &Map<String, Value>,
    section: &str,
    key: &str,
    default: Option<usize>,
) -> Result<usize> {
    match (map.get(key), default) {
        (None | Some(Value::Null), Some(d)) => Ok(d),
        (None | Some(Value::Null), None) => bail!("{section}.{key} is missing"),
        (Some(v), _) => as_usize(v, &format!("{section}.{key}")),
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize> {
    v.as_u64()
        .map(|n| n as usize)
        .with_context(|| format!("{what} must be a non-negative integer, got {v}"))
}
