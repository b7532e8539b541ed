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

use crate::kernels::{self, Dense, Epilogue, Norm};
use rayon::prelude::*;
use serde_json::Value;

/// Activation used inside the encoder MLPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
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

    fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => kernels::quick_gelu(xs),
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

/// Hyper-parameters of one transformer tower.
#[derive(Clone, Debug, PartialEq)]
pub struct TowerConfig {
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
pub struct TextConfig {
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
pub struct VisionConfig {
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
pub struct ClipConfig {
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
    pub fn from_json_str(text: &str) -> Result<Self> {
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
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    fn validate(&self) -> Result<()> {
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

/// Which weights file a model folder provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsFile {
    /// `model.safetensors`, loaded by mmap.
    Safetensors(std::path::PathBuf),
    /// `pytorch_model.bin`, a pickled state dict.
    Pth(std::path::PathBuf),
}

impl WeightsFile {
    /// Picks `model.safetensors` when present, else `pytorch_model.bin`.
    pub fn find(dir: &Path) -> Result<Self> {
        let st = dir.join("model.safetensors");
        if st.is_file() {
            return Ok(WeightsFile::Safetensors(st));
        }
        let pth = dir.join("pytorch_model.bin");
        if pth.is_file() {
            return Ok(WeightsFile::Pth(pth));
        }
        bail!(
            "{} has neither model.safetensors nor pytorch_model.bin",
            dir.display()
        )
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            WeightsFile::Safetensors(p) | WeightsFile::Pth(p) => p,
        }
    }

    /// Opens the weights as a candle `VarBuilder` in f32.
    pub fn var_builder(&self, device: &Device) -> Result<VarBuilder<'static>> {
        let vb = match self {
            // SAFETY: the file is mapped read-only; plip never writes model files, and a
            // concurrent writer replacing a checkpoint in place is outside what any
            // safetensors loader can defend against.
            WeightsFile::Safetensors(p) => unsafe {
                candle_core::safetensors::MmapedSafetensors::new(p).map(|st| {
                    let backend: Box<dyn SimpleBackend> = Box::new(HugePageSafetensors {
                        reader: TensorReader::open(p),
                        st,
                    });
                    VarBuilder::from_backend(backend, DType::F32, device.clone())
                })
            },
            WeightsFile::Pth(p) => VarBuilder::from_pth(p, DType::F32, device),
        };
        vb.with_context(|| format!("reading weights {}", self.path().display()))
    }
}

/// Memory-mapped safetensors whose f32 tensors are read into buffers backed by
/// huge pages ([`kernels::zeroed_f32`]): candle's own loader copies into 4 KiB
/// pages, and faulting those in was most of the 0.2 s that loading the text tower
/// took in a cold `plip search`. Other dtypes and devices use candle's path.
struct HugePageSafetensors {
    st: candle_core::safetensors::MmapedSafetensors,
    /// Reads tensors with `pread` where possible: copying them out of the
    /// mapping instead faults in the file's pages 4 KiB at a time (63,000
    /// faults for the text tower's 252 MB).
    reader: Option<TensorReader>,
}

/// The byte range of every tensor in a safetensors file, from its header.
struct TensorReader {
    file: std::fs::File,
    /// Byte range in the file and dtype name (`"F32"` …) of each tensor.
    ranges: std::collections::HashMap<String, (u64, u64, String)>,
}

impl TensorReader {
    /// `None` when the header cannot be read here; the mapping is used then.
    fn open(path: &Path) -> Option<TensorReader> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).ok()?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return None;
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header).ok()?;
        let header: serde_json::Map<String, Value> = serde_json::from_slice(&header).ok()?;
        let data_start = 8 + len;
        let ranges = header
            .iter()
            .filter(|(name, _)| name.as_str() != "__metadata__")
            .map(|(name, info)| {
                let offsets = info.get("data_offsets")?.as_array()?;
                let begin = offsets.first()?.as_u64()?;
                let end = offsets.get(1)?.as_u64()?;
                let dtype = info.get("dtype")?.as_str()?.to_string();
                Some((name.clone(), (data_start + begin, data_start + end, dtype)))
            })
            .collect::<Option<_>>()?;
        Some(TensorReader { file, ranges })
    }

    /// Reads `name`'s bytes into `dst` when its stored size is `dst.len()`.
    fn read_into(&self, name: &str, dst: &mut [u8]) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            if let Some(&(begin, end, _)) = self.ranges.get(name) {
                return end - begin == dst.len() as u64
                    && self.file.read_exact_at(dst, begin).is_ok();
            }
        }
        let _ = (name, dst);
        false
    }
}

/// The token-embedding table of a safetensors checkpoint, read a row at a time.
///
/// A prompt needs a handful of the table's 49,408 rows; reading them where they
/// are keeps a cold `plip search` from copying the whole 101 MB table into
/// memory first. The values are the stored f32s, exactly as a loaded table holds
/// them.
pub struct TokenRows {
    file: std::fs::File,
    /// Where row 0 starts.
    offset: u64,
    vocab: usize,
    dim: usize,
}

/// The token-embedding weight's name in a CLIP checkpoint.
const TOKEN_EMBEDDING: &str = "text_model.embeddings.token_embedding.weight";

impl TokenRows {
    /// The table in `weights`, when it is a safetensors file that stores it as
    /// `vocab x dim` f32 values; `None` otherwise (then the table is loaded whole).
    pub fn open(weights: &WeightsFile, vocab: usize, dim: usize) -> Option<Self> {
        let WeightsFile::Safetensors(path) = weights else {
            return None;
        };
        if !cfg!(unix) {
            return None;
        }
        let reader = TensorReader::open(path)?;
        let (begin, end, dtype) = reader.ranges.get(TOKEN_EMBEDDING)?;
        if dtype != "F32" || end - begin != (vocab * dim * 4) as u64 {
            return None;
        }
        Some(Self {
            offset: *begin,
            file: reader.file,
            vocab,
            dim,
        })
    }

    /// The rows of `ids`, one after another.
    pub fn gather(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.dim];
        let mut bytes = vec![0u8; self.dim * 4];
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.dim)) {
            if id as usize >= self.vocab {
                bail!("token id {id} is outside the vocabulary of {}", self.vocab);
            }
            self.read_row(id as u64, &mut bytes)?;
            for (v, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(out)
    }

    #[cfg(unix)]
    fn read_row(&self, id: u64, dst: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.offset + id * dst.len() as u64;
        self.file
            .read_exact_at(dst, at)
            .context("reading the token-embedding table")
    }

    #[cfg(not(unix))]
    fn read_row(&self, _: u64, _: &mut [u8]) -> Result<()> {
        unreachable!("TokenRows::open returns None off unix")
    }
}

impl HugePageSafetensors {
    fn load(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let view = self.st.get(name)?;
        if view.dtype() != safetensors::Dtype::F32 || !dev.is_cpu() {
            return self.st.load(name, dev)?.to_dtype(dtype);
        }
        let data = view.data();
        let mut values = kernels::zeroed_f32(data.len() / 4);
        let bytes = bytemuck::cast_slice_mut::<f32, u8>(&mut values);
        let read = self
            .reader
            .as_ref()
            .is_some_and(|r| r.read_into(name, bytes));
        if !read {
            bytes.copy_from_slice(data);
        }
        if cfg!(target_endian = "big") {
            for v in &mut values {
                *v = f32::from_bits(u32::from_le(v.to_bits()));
            }
        }
        Tensor::from_vec(values, view.shape(), dev)?.to_dtype(dtype)
    }
}

impl SimpleBackend for HugePageSafetensors {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }
}

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
    /// The text tower only (text queries).
    pub const TEXT: Towers = Towers {
        text: true,
        vision: false,
    };
}

/// Names of every tensor a tower needs, so a checkpoint can be checked up front.
pub fn expected_tensors(config: &ClipConfig, towers: Towers) -> Vec<String> {
    let mut names = Vec::new();
    let layers = |prefix: &str, n: usize, names: &mut Vec<String>| {
        for i in 0..n {
            let p = format!("{prefix}.encoder.layers.{i}");
            for lin in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
                "mlp.fc1",
                "mlp.fc2",
                "layer_norm1",
                "layer_norm2",
            ] {
                names.push(format!("{p}.{lin}.weight"));
                names.push(format!("{p}.{lin}.bias"));
            }
        }
    };
    if towers.text {
        names.push(TOKEN_EMBEDDING.into());
        names.push("text_model.embeddings.position_embedding.weight".into());
        layers(
            "text_model",
            config.text.tower.num_hidden_layers,
            &mut names,
        );
        names.push("text_model.final_layer_norm.weight".into());
        names.push("text_model.final_layer_norm.bias".into());
        names.push("text_projection.weight".into());
    }
    if towers.vision {
        names.push("vision_model.embeddings.class_embedding".into());
        names.push("vision_model.embeddings.patch_embedding.weight".into());
        names.push("vision_model.embeddings.position_embedding.weight".into());
        names.push("vision_model.pre_layrnorm.weight".into());
        names.push("vision_model.pre_layrnorm.bias".into());
        layers(
            "vision_model",
            config.vision.tower.num_hidden_layers,
            &mut names,
        );
        names.push("vision_model.post_layernorm.weight".into());
        names.push("vision_model.post_layernorm.bias".into());
        names.push("visual_projection.weight".into());
    }
    names
}

fn check_complete(vb: &VarBuilder, config: &ClipConfig, towers: Towers) -> Result<()> {
    let missing: Vec<String> = expected_tensors(config, towers)
        .into_iter()
        .filter(|n| !vb.contains_tensor(n))
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        bail!(
            "the checkpoint lacks {} tensor(s) the CLIP architecture needs ({}{}); \
             it is not a complete CLIPModel checkpoint",
            missing.len(),
            shown.join(", "),
            if missing.len() > 5 { ", …" } else { "" }
        );
    }
    Ok(())
}

/// A layer norm with bias named `vb`, on [`Norm`]'s kernel.
fn norm(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Norm> {
    Norm::new(candle_nn::layer_norm(size, eps, vb)?)
}

struct Attention {
    qkv: Dense,
    out_proj: Dense,
    num_heads: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: &TowerConfig, many_rows: bool) -> Result<Self> {
        let d = c.hidden_size;
        let head_dim = d / c.num_attention_heads;
        // HF scales q after the projection; folding the scale into q's weights and
        // bias is the same affine map and saves one pass over the activations.
        let scale = (head_dim as f64).powf(-0.5);
        let w = |name: &str| vb.pp(name).get((d, d), "weight");
        let b = |name: &str| vb.pp(name).get(d, "bias");
        let weight = Tensor::cat(&[(w("q_proj")? * scale)?, w("k_proj")?, w("v_proj")?], 0)?;
        let bias = Tensor::cat(&[(b("q_proj")? * scale)?, b("k_proj")?, b("v_proj")?], 0)?;
        let out_proj = Dense::new(candle_nn::linear(d, d, vb.pp("out_proj"))?, many_rows)?;
        Ok(Self {
            qkv: Dense::new(Linear::new(weight, Some(bias)), many_rows)?,
            out_proj,
            num_heads: c.num_attention_heads,
        })
    }

    /// The heads' outputs before the output projection, `[B*L, D]`, for `xs`
    /// of `[B, L, D]`.
    fn heads(&self, xs: &Tensor, causal: bool) -> candle_core::Result<Tensor> {
        let (b, l, d) = xs.dims3()?;
        // Linear layers run on [B*L, D]: one large matmul instead of B small ones,
        // which candle would issue for a 3-D input with broadcast weights.
        let qkv = self.qkv.forward(&xs.reshape((b * l, d))?)?;
        kernels::attention(&qkv, l, self.num_heads, causal)
    }

    /// `residual + attention(xs)`, both `[B, L, D]`.
    fn forward(&self, xs: &Tensor, residual: &Tensor, causal: bool) -> candle_core::Result<Tensor> {
        let (b, l, d) = xs.dims3()?;
        self.out_proj
            .forward_with(&self.heads(xs, causal)?, Epilogue::Add(residual))?
            .reshape((b, l, d))
    }
}

struct EncoderLayer {
    layer_norm1: Norm,
    self_attn: Attention,
    layer_norm2: Norm,
    fc1: Dense,
    fc2: Dense,
    act: Activation,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, c: &TowerConfig, many_rows: bool) -> Result<Self> {
        let d = c.hidden_size;
        let mlp = vb.pp("mlp");
        Ok(Self {
            layer_norm1: norm(d, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            self_attn: Attention::new(vb.pp("self_attn"), c, many_rows)?,
            layer_norm2: norm(d, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: Dense::new(
                candle_nn::linear(d, c.intermediate_size, mlp.pp("fc1"))?,
                many_rows,
            )?,
            fc2: Dense::new(
                candle_nn::linear(c.intermediate_size, d, mlp.pp("fc2"))?,
                many_rows,
            )?,
            act: c.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor, causal: bool) -> candle_core::Result<Tensor> {
        let xs = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, xs, causal)?;
        let (b, l, d) = xs.dims3()?;
        self.mlp(&xs.reshape((b * l, d))?)?.reshape((b, l, d))
    }

    /// `xs + MLP(layer_norm2(xs))` for `[rows, D]`; rows are independent.
    fn mlp(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let normed = self.layer_norm2.forward(xs)?;
        let h = match self.act {
            Activation::QuickGelu => self.fc1.forward_with(&normed, Epilogue::QuickGelu)?,
            act => act.forward(&self.fc1.forward(&normed)?)?,
        };
        self.fc2.forward_with(&h, Epilogue::Add(xs))
    }

    /// [`EncoderLayer::forward`] for the first token of each sequence only:
    /// returns `[B, D]`, equal to `forward(xs).narrow(1, 0, 1).squeeze(1)`.
    ///
    /// Every token still feeds the attention as a key and value, but after it
    /// each row goes through the output projection and MLP on its own, so the
    /// rows that are not kept need not be computed. For the vision tower, whose
    /// last layer's class token is all that is pooled, that skips 49 of 50 rows
    /// of three of its four matmuls: about 6% of an image's arithmetic.
    fn forward_first(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, d) = xs.dims3()?;
        let heads = self
            .self_attn
            .heads(&self.layer_norm1.forward(xs)?, false)?;
        let first = |t: &Tensor| {
            t.reshape((b, l, d))?
                .narrow(1, 0, 1)?
                .squeeze(1)?
                .contiguous()
        };
        let residual = first(xs)?;
        let xs = self
            .self_attn
            .out_proj
            .forward_with(&first(&heads)?, Epilogue::Add(&residual))?;
        self.mlp(&xs)
    }
}

struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `many_rows`: whether the tower sees many rows per matmul (the vision tower,
    /// 50 per image) or few (a text prompt), which decides each [`Dense`] layout.
    fn new(vb: VarBuilder, c: &TowerConfig, many_rows: bool) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..c.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp(i), c, many_rows))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// `causal`: each token sees only itself and earlier ones (the text tower).
    fn forward(&self, xs: &Tensor, causal: bool) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, causal)?;
        }
        Ok(xs)
    }

    /// The last layer's output for the first token of each sequence, `[B, D]`:
    /// [`Encoder::forward`] narrowed to that token, without computing the rows
    /// that would be dropped (see [`EncoderLayer::forward_first`]).
    fn forward_first(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let Some((last, rest)) = self.layers.split_last() else {
            return xs.narrow(1, 0, 1)?.squeeze(1);
        };
        let mut xs = xs.clone();
        for layer in rest {
            xs = layer.forward(&xs, false)?;
        }
        last.forward_first(&xs)
    }
}

/// Where the text tower's token embeddings come from.
enum TokenTable {
    /// The whole table, in memory.
    Loaded(Embedding),
    /// Rows read from the checkpoint as prompts need them.
    Rows(TokenRows),
}

/// CLIP's text tower and projection.
pub struct TextTower {
    token_embedding: TokenTable,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: Norm,
    projection: Dense,
    eos_token_id: u32,
    max_len: usize,
}

impl TextTower {
    fn new(
        vb: VarBuilder,
        projection: Linear,
        c: &TextConfig,
        rows: Option<TokenRows>,
    ) -> Result<Self> {
        let d = c.tower.hidden_size;
        let emb = vb.pp("embeddings");
        let token_embedding = match rows {
            Some(rows) if (rows.vocab, rows.dim) == (c.vocab_size, d) => TokenTable::Rows(rows),
            _ => TokenTable::Loaded(candle_nn::embedding(
                c.vocab_size,
                d,
                emb.pp("token_embedding"),
            )?),
        };
        Ok(Self {
            token_embedding,
            position_embedding: emb
                .pp("position_embedding")
                .get((c.max_position_embeddings, d), "weight")?,
            encoder: Encoder::new(vb.pp("encoder"), &c.tower, false)?,
            final_layer_norm: norm(d, c.tower.layer_norm_eps, vb.pp("final_layer_norm"))?,
            projection: Dense::new(projection, false)?,
            eos_token_id: c.eos_token_id,
            max_len: c.max_position_embeddings,
        })
    }

    /// The length of the prefix that determines the pooled output: up to and
    /// including the first `<|endoftext|>` (transformers pools there, and the causal
    /// mask means no later token can change it).
    pub fn pooled_len(&self, ids: &[u32]) -> usize {
        // Checkpoints from before transformers 4.31 (vinid/plip among them) carry the
        // placeholder eos_token_id 2; transformers then pools at the first occurrence
        // of the largest id, which for CLIP's vocabulary is <|endoftext|>.
        let pos = if self.eos_token_id == 2 {
            let max = ids.iter().copied().max();
            ids.iter().position(|&t| Some(t) == max)
        } else {
            ids.iter().position(|&t| t == self.eos_token_id)
        };
        pos.map_or(ids.len(), |p| p + 1).min(self.max_len)
    }

    /// Projected (unnormalized) embeddings of token sequences that all have the same
    /// length and end at the pooling token.
    pub fn forward_same_len(&self, batch: &[&[u32]], device: &Device) -> Result<Tensor> {
        let l = batch.first().map_or(0, |s| s.len());
        if l == 0 || l > self.max_len || batch.iter().any(|s| s.len() != l) {
            bail!(
                "internal error: text batch must hold equal, non-empty lengths ≤ {}",
                self.max_len
            );
        }
        // On a pool thread, each layer's parallel matmul starts on the thread
        // that asks for it; from outside the pool, the caller would sleep and be
        // woken after every one of the ~50 matmuls.
        rayon::scope(|_| self.forward_inner(batch, device))
    }

    fn forward_inner(&self, batch: &[&[u32]], device: &Device) -> Result<Tensor> {
        let (b, l) = (batch.len(), batch[0].len());
        let flat: Vec<u32> = batch.iter().flat_map(|s| s.iter().copied()).collect();
        let tokens = match &self.token_embedding {
            TokenTable::Loaded(table) => table.forward(&Tensor::from_vec(flat, (b, l), device)?)?,
            TokenTable::Rows(rows) => {
                Tensor::from_vec(rows.gather(&flat)?, (b, l, rows.dim), device)?
            }
        };
        let xs = tokens.broadcast_add(&self.position_embedding.narrow(0, 0, l)?)?;
        let xs = self.encoder.forward(&xs, true)?;
        let xs = self.final_layer_norm.forward(&xs)?;
        let pooled = xs.narrow(1, l - 1, 1)?.squeeze(1)?;
        Ok(self.projection.forward(&pooled)?)
    }
}

/// CLIP's vision tower and projection.
pub struct VisionTower {
    class_embedding: Tensor,
    /// The patch convolution's weight as a dense layer, `[D, C·P·P]`: the
    /// stride equals the kernel, so the convolution is one matmul over the
    /// image's patches.
    patch_embedding: Dense,
    position_embedding: Tensor,
    pre_layrnorm: Norm,
    encoder: Encoder,
    post_layernorm: Norm,
    projection: Linear,
    config: VisionConfig,
}

impl VisionTower {
    fn new(vb: VarBuilder, projection: Linear, c: &VisionConfig) -> Result<Self> {
        let d = c.tower.hidden_size;
        let emb = vb.pp("embeddings");
        let num_positions = (c.image_size / c.patch_size).pow(2) + 1;
        let (ch, ps) = (c.num_channels, c.patch_size);
        let patch_weight = emb
            .pp("patch_embedding")
            .get((d, ch, ps, ps), "weight")?
            .reshape((d, ch * ps * ps))?;
        let eps = c.tower.layer_norm_eps;
        Ok(Self {
            class_embedding: emb.get(d, "class_embedding")?,
            patch_embedding: Dense::new(Linear::new(patch_weight, None), true)?,
            position_embedding: emb
                .pp("position_embedding")
                .get((num_positions, d), "weight")?,
            pre_layrnorm: norm(d, eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(vb.pp("encoder"), &c.tower, true)?,
            post_layernorm: norm(d, eps, vb.pp("post_layernorm"))?,
            projection,
            config: c.clone(),
        })
    }

    /// Projected (unnormalized) embeddings of a `[B, C, H, W]` pixel tensor.
    ///
    /// On the CPU a batch of at least two images per thread is split into one
    /// slice per thread, each run through the whole tower on its own core
    /// ([`kernels::with_serial_gemm`]): images are independent, and whole
    /// slices per core keep the cores from waiting for each other after every
    /// matmul. Images are independent, so this computes the same function.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let s = self.config.image_size;
        if c != self.config.num_channels || h != s || w != s {
            bail!(
                "pixel tensor is {c}x{h}x{w}, the model expects {}x{s}x{s}",
                self.config.num_channels
            );
        }
        let threads = kernels::threads();
        if pixels.device().is_cpu() && threads > 1 && b >= 2 * threads {
            let per = b.div_ceil(threads);
            let parts = (0..b)
                .step_by(per)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|start| {
                    let slice = pixels.narrow(0, start, per.min(b - start))?;
                    kernels::with_serial_gemm(|| self.forward_batch(&slice))
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&parts, 0)?);
        }
        self.forward_batch(pixels)
    }

    fn forward_batch(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let d = self.config.tower.hidden_size;
        let ps = self.config.patch_size;
        let g = self.config.image_size / ps;
        let patches = self
            .patch_embedding
            .forward(&patch_rows(pixels, ps)?)?
            .reshape((b, g * g, d))?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let xs = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let xs = self.pre_layrnorm.forward(&xs)?;
        // CLIP pools the class token, the first; only its row of the last
        // layer is computed.
        let pooled = self
            .post_layernorm
            .forward(&self.encoder.forward_first(&xs)?)?;
        Ok(self.projection.forward(&pooled)?)
    }
}

/// The patches of a `[B, C, H, W]` pixel tensor as rows, `[B·(H/P)·(W/P),
/// C·P·P]`, so that a convolution whose stride equals its kernel (no padding) is
/// one matmul with its weight flattened to `[D, C·P·P]`. Rows go in the
/// convolution's output order (patch row, then column), values in the weight's
/// (channel, y, x); pixels past the last whole patch are dropped, as the
/// convolution drops them.
fn patch_rows(pixels: &Tensor, ps: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = pixels.dims4()?;
    let (gh, gw) = (h / ps, w / ps);
    pixels
        .narrow(2, 0, gh * ps)?
        .narrow(3, 0, gw * ps)?
        .reshape((b, c, gh, ps, gw, ps))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b * gh * gw, c * ps * ps))
}

/// A loaded PLIP/CLIP model: either tower may be absent when not needed.
pub struct ClipModel {
    /// The text tower, when loaded.
    pub text: Option<TextTower>,
    /// The vision tower, when loaded.
    pub vision: Option<VisionTower>,
    /// The parsed configuration.
    pub config: ClipConfig,
}

impl ClipModel {
    /// Builds the requested towers from a `VarBuilder`, checking first that every
    /// tensor they need is present.
    pub fn new(vb: VarBuilder, config: &ClipConfig, towers: Towers) -> Result<Self> {
        Self::build(vb, config, towers, None)
    }

    /// Loads the requested towers from a checkpoint. From a safetensors file the
    /// token-embedding table is not loaded: its rows are read as prompts need
    /// them ([`TokenRows`]).
    pub fn load(
        weights: &WeightsFile,
        config: &ClipConfig,
        towers: Towers,
        device: &Device,
    ) -> Result<Self> {
        let vb = weights.var_builder(device)?;
        let rows = (towers.text && device.is_cpu())
            .then(|| {
                TokenRows::open(
                    weights,
                    config.text.vocab_size,
                    config.text.tower.hidden_size,
                )
            })
            .flatten();
        Self::build(vb, config, towers, rows)
            .with_context(|| format!("loading {}", weights.path().display()))
    }

    fn build(
        vb: VarBuilder,
        config: &ClipConfig,
        towers: Towers,
        rows: Option<TokenRows>,
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
            )?)
        } else {
            None
        };
        Ok(Self {
            text,
            vision,
            config: config.clone(),
        })
    }
}

/// L2-normalizes each row of a `[N, D]` tensor.
pub fn l2_normalize(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::max_abs_diff;

    #[test]
    fn legacy_config_dict_overrides_config() {
        let cfg = ClipConfig::from_json_str(
            r#"{"projection_dim": 512,
                "text_config": {"hidden_size": 64, "unknown_key": [1,2]},
                "text_config_dict": {"hidden_size": 512, "num_attention_heads": 8},
                "vision_config_dict": {"patch_size": 32, "hidden_size": 768},
                "logit_scale_init_value": 2.6592, "torch_dtype": "float32"}"#,
        )
        .unwrap();
        assert_eq!(cfg.text.tower.hidden_size, 512);
        assert_eq!(cfg.vision.tower.hidden_size, 768);
        assert_eq!(cfg.vision.patch_size, 32);
        assert_eq!(cfg.text.vocab_size, 49408);
        assert_eq!(cfg.text.tower.hidden_act, Activation::QuickGelu);
        assert_eq!(cfg.projection_dim, 512);
    }

    #[test]
    fn current_layout_parses_with_defaults() {
        let cfg = ClipConfig::from_json_str(
            r#"{"text_config": {"hidden_size": 16, "num_attention_heads": 2,
                 "intermediate_size": 32, "num_hidden_layers": 1, "hidden_act": "gelu"},
                "vision_config": {"hidden_size": 32, "num_attention_heads": 4,
                 "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6},
                "projection_dim": 8}"#,
        )
        .unwrap();
        assert_eq!(cfg.text.tower.hidden_act, Activation::Gelu);
        assert_eq!(cfg.text.tower.num_hidden_layers, 1);
        assert_eq!(cfg.vision.patch_size, 16);
        assert_eq!(cfg.vision.tower.layer_norm_eps, 1e-6);
        assert_eq!(cfg.vision.tower.num_hidden_layers, 12);
        assert_eq!(cfg.projection_dim, 8);
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        let err =
            ClipConfig::from_json_str(r#"{"text_config": {"hidden_size": "big"}}"#).unwrap_err();
        assert!(
            format!("{err:#}").contains("text_config.hidden_size"),
            "{err:#}"
        );
        let err =
            ClipConfig::from_json_str(r#"{"text_config": {"hidden_act": "swish"}}"#).unwrap_err();
        assert!(format!("{err:#}").contains("swish"), "{err:#}");
        let err = ClipConfig::from_json_str(
            r#"{"text_config": {"hidden_size": 10, "num_attention_heads": 3}}"#,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("divisible"), "{err:#}");
        assert!(ClipConfig::from_json_str("[1]").is_err());
    }

    #[test]
    fn token_rows_read_what_the_loaded_table_holds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/model");
        let config = ClipConfig::from_file(&dir.join("config.json")).unwrap();
        let (vocab, dim) = (config.text.vocab_size, config.text.tower.hidden_size);
        let weights = WeightsFile::Safetensors(dir.join("model.safetensors"));
        let rows = TokenRows::open(&weights, vocab, dim).unwrap();
        let table = weights
            .var_builder(&Device::Cpu)
            .unwrap()
            .get((vocab, dim), TOKEN_EMBEDDING)
            .unwrap();
        let ids = [0, 1, vocab as u32 - 1, 7, 7];
        let want = table
            .index_select(&Tensor::new(&ids[..], &Device::Cpu).unwrap(), 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(rows.gather(&ids).unwrap(), want);
        let err = rows.gather(&[vocab as u32]).unwrap_err();
        assert!(
            format!("{err:#}").contains("outside the vocabulary"),
            "{err:#}"
        );
        // Not offered where the table is not the expected f32 matrix, or not
        // in a safetensors file.
        assert!(TokenRows::open(&weights, vocab + 1, dim).is_none());
        let pth = WeightsFile::Pth(dir.join("pytorch_model.bin"));
        assert!(TokenRows::open(&pth, vocab, dim).is_none());
    }

    #[test]
    fn first_token_path_matches_the_whole_last_layer() {
        let dev = Device::Cpu;
        let cfg = ClipConfig::from_json_str(
            r#"{"vision_config": {"hidden_size": 32, "num_attention_heads": 2,
                 "intermediate_size": 64, "num_hidden_layers": 2, "image_size": 32,
                 "patch_size": 8}, "projection_dim": 8}"#,
        )
        .unwrap();
        let vb = VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &dev);
        // A VarMap builder makes each tensor on first use, randomly initialized
        // for the weights.
        let encoder = Encoder::new(vb.pp("encoder"), &cfg.vision.tower, true).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (3, 17, 32), &dev).unwrap();
        let whole = encoder.forward(&xs, false).unwrap();
        let first = encoder.forward_first(&xs).unwrap();
        assert_eq!(first.dims(), &[3, 32]);
        let want = whole.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(max_abs_diff(&first, &want) <= 1e-5 * scale);
        // The second token's row differs, so a wrong row would be caught.
        let second = whole.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        assert!(max_abs_diff(&second, &want) > 1e-2 * scale);
    }

    #[test]
    fn patch_rows_times_the_flat_weight_is_the_strided_convolution() {
        let dev = Device::Cpu;
        // 40 and 56 are not multiples of 16: the conv drops the last 8 pixels
        // of each; the 2 x 3 patches are not square either.
        let (b, c, ps, d) = (2, 3, 16, 5);
        let pixels = Tensor::randn(0f32, 1.0, (b, c, 40, 56), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (d, c, ps, ps), &dev).unwrap();
        let cfg = candle_nn::Conv2dConfig {
            stride: ps,
            ..Default::default()
        };
        let conv = candle_nn::Conv2d::new(w.clone(), None, cfg);
        let want = conv
            .forward(&pixels)
            .unwrap()
            .flatten_from(2)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let flat = w.reshape((d, c * ps * ps)).unwrap();
        let got = patch_rows(&pixels, ps)
            .unwrap()
            .matmul(&flat.t().unwrap())
            .unwrap()
            .reshape((b, 6, d))
            .unwrap();
        assert_eq!(want.dims(), got.dims());
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn missing_class_embedding_is_an_error_not_random() {
        let cfg = ClipConfig::from_json_str(
            r#"{"text_config": {"hidden_size": 4, "num_attention_heads": 1,
                 "intermediate_size": 4, "num_hidden_layers": 1, "vocab_size": 10},
                "vision_config": {"hidden_size": 4, "num_attention_heads": 1,
                 "intermediate_size": 4, "num_hidden_layers": 1, "image_size": 32,
                 "patch_size": 32}, "projection_dim": 4}"#,
        )
        .unwrap();
        let dev = Device::Cpu;
        let mut ts = HashMap::new();
        for name in expected_tensors(&cfg, Towers::BOTH) {
            if name != "vision_model.embeddings.class_embedding" {
                ts.insert(name, Tensor::zeros(1, DType::F32, &dev).unwrap());
            }
        }
        let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
        let err = ClipModel::new(vb, &cfg, Towers::BOTH).err().unwrap();
        assert!(format!("{err:#}").contains("class_embedding"), "{err:#}");
    }
}
