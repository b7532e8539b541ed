//! `config.json` parsing: the current `text_config` / `vision_config` layout and
//! the legacy `*_config_dict` keys of the 2023 `vinid/plip` checkpoint.

use super::*;

/// Activation used inside the encoder MLPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `x * sigmoid(1.702 x)`, what OpenAI CLIP and PLIP use.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            other => bail!("unsupported hidden_act {other:?} in config.json"),
        })
    }

    pub(crate) fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => cpu::quick_gelu(xs),
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

/// Hyper-parameters of one transformer tower.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TowerConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
}

/// The text tower's configuration.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TextConfig {
    /// Encoder sizes.
    pub tower: TowerConfig,
    /// Vocabulary size of the token embedding.
    pub vocab_size: usize,
    /// Context length (77 for CLIP).
    pub max_position_embeddings: usize,
    /// Id of `<|endoftext|>`, where the text is pooled.
    pub eos_token_id: u32,
}

/// The vision tower's configuration.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VisionConfig {
    /// Encoder sizes.
    pub tower: TowerConfig,
    /// Input resolution (224 for PLIP).
    pub image_size: usize,
    /// Patch size (32 for ViT-B/32).
    pub patch_size: usize,
    /// Number of input channels.
    pub num_channels: usize,
}

/// Everything needed to build a [`ClipModel`], parsed from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClipConfig {
    /// Text tower.
    pub text: TextConfig,
    /// Vision tower.
    pub vision: VisionConfig,
    /// Size of the shared embedding space.
    pub projection_dim: usize,
}

impl ClipConfig {
    /// Parses a Hugging Face `config.json` for `CLIPModel`.
    ///
    /// candle's config structs are not serde types, and real checkpoints come in two
    /// layouts: the current one (`text_config`/`vision_config`) and the legacy one that
    /// `vinid/plip` uses, where `text_config_dict`/`vision_config_dict` hold the
    /// values that differ from the defaults. Like transformers' `CLIPConfig.__init__`,
    /// we start from CLIP's defaults, apply `*_config`, then let `*_config_dict` win.
    pub(crate) fn from_json_str(text: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        let root = root
            .as_object()
            .context("config.json must hold a JSON object")?;
        let section = |name: &str| -> HashMap<String, Value> {
            let mut merged = HashMap::new();
            for key in [format!("{name}_config"), format!("{name}_config_dict")] {
                if let Some(Value::Object(map)) = root.get(&key) {
                    merged.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            merged
        };
        let text = section("text");
        let vision = section("vision");

        let text_tower = tower(&text, "text", 512, 2048, 8, 12)?;
        let vision_tower = tower(&vision, "vision", 768, 3072, 12, 12)?;
        let projection_dim = match root.get("projection_dim") {
            Some(v) => as_usize(v, "projection_dim")?,
            None => get_usize(&text, "text", "projection_dim", 512)?,
        };
        let config = ClipConfig {
            text: TextConfig {
                tower: text_tower,
                vocab_size: get_usize(&text, "text", "vocab_size", 49408)?,
                max_position_embeddings: get_usize(&text, "text", "max_position_embeddings", 77)?,
                eos_token_id: get_usize(&text, "text", "eos_token_id", 49407)? as u32,
            },
            vision: VisionConfig {
                tower: vision_tower,
                image_size: get_usize(&vision, "vision", "image_size", 224)?,
                patch_size: get_usize(&vision, "vision", "patch_size", 32)?,
                num_channels: get_usize(&vision, "vision", "num_channels", 3)?,
            },
            projection_dim,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses `config.json`.
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (name, t) in [("text", &self.text.tower), ("vision", &self.vision.tower)] {
            if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
                bail!(
                    "{name} hidden_size {} is not divisible by num_attention_heads {}",
                    t.hidden_size,
                    t.num_attention_heads
                );
            }
        }
        let v = &self.vision;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            bail!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size,
                v.patch_size
            );
        }
        // The legacy default eos id (2) is not a CLIP BPE id; transformers then pools at
        // the highest id, which for CLIP's vocabulary is <|endoftext|> (49407).
        Ok(())
    }
}

fn tower(
    map: &HashMap<String, Value>,
    section: &str,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    layers: usize,
) -> Result<TowerConfig> {
    let act = match map.get("hidden_act") {
        Some(Value::String(s)) => Activation::parse(s)?,
        Some(other) => bail!("{section}_config.hidden_act must be a string, got {other}"),
        None => Activation::QuickGelu,
    };
    let eps = match map.get("layer_norm_eps") {
        Some(v) => v
            .as_f64()
            .with_context(|| format!("{section}_config.layer_norm_eps must be a number"))?,
        None => 1e-5,
    };
    Ok(TowerConfig {
        hidden_size: get_usize(map, section, "hidden_size", hidden)?,
        intermediate_size: get_usize(map, section, "intermediate_size", intermediate)?,
        num_attention_heads: get_usize(map, section, "num_attention_heads", heads)?,
        num_hidden_layers: get_usize(map, section, "num_hidden_layers", layers)?,
        hidden_act: act,
        layer_norm_eps: eps,
    })
}

fn get_usize(
    map: &HashMap<String, Value>,
    section: &str,
    key: &str,
    default: usize,
) -> Result<usize> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => as_usize(v, &format!("{section}_config.{key}")),
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize> {
    v.as_u64()
        .map(|n| n as usize)
        .with_context(|| format!("{what} must be a non-negative integer, got {v}"))
}
