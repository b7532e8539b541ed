//! The mid-size test model: a random-weight CLIP (ViT-B/32 layout) with 64-wide attention heads
//! and hidden size 128 in both towers, big enough to reach the fast kernels (64-wide heads,
//! packed dense layers) that the tiny `fixtures/model/` never reaches.
//!
//! Its weights are *generated, not committed*: the 49408 x 128 float32 token table alone is
//! 25 MB (the whole `model.safetensors` is about 30 MB), far over what fixtures may weigh. So the
//! weights are a pure function of [`MID_SEED`] and each tensor's name, computed here with integer
//! arithmetic and exactly rounded float32 steps, and computed bit-identically by the other half,
//! `fixtures/generate.py` (`mid_weights`; `python3 fixtures/generate.py mid` writes the goldens
//! `fixtures/golden-mid/` from the reference transformers `CLIPModel`, and
//! `python3 fixtures/generate.py mid-model OUT` writes the same model folder as
//! [`write_mid_model`]). Only those small goldens are committed; `golden-mid.json` records the
//! sha256 (and CRC-32) of the `model.safetensors` both sides write, which must be equal byte for
//! byte.
//!
//! The generator, per tensor (see `prng_uniform` and `amplitude`):
//! - state `s0 = MID_SEED ^ fnv1a64(name as UTF-8)`; splitmix64 gives `z_i` from state
//!   `s0 + i * 0x9E3779B97F4A7C15` (i = 1, 2, ...; wrapping);
//! - `u_i = ((z_i >> 40) as f32) * 2^-23 - 1.0`, uniform in [-1, 1) (exact in f32);
//! - value = `u_i * a` (f32 product), plus `1.0` (f32 sum) for LayerNorm weights, where
//!   `a = std * sqrt(3)` as float64 rounded to f32, with the spreads of generate.py's
//!   `random_init` (token / class embedding std 0.5, position 0.1, LayerNorm 1 +- 0.1 / 0.1,
//!   matrices 1/sqrt(fan_in), q_proj / out_proj 3/sqrt(fan_in), biases 0.05);
//! - `logit_scale` = ln(1/0.07) as f32, given by its bits.
//!
//! Self-contained on purpose (std + `safetensors` + `serde_json` only), so a test can pull it in
//! with `mod mid_model;` and an outside scratch crate with `#[path = ...]`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, View};

/// The seed of every weight (fixtures/generate.py `MID_SEED`).
pub const MID_SEED: u64 = 20240605;
/// ln(1/0.07) rounded to f32 (fixtures/generate.py `MID_LOGIT_SCALE_BITS`).
pub const LOGIT_SCALE_BITS: u32 = 0x402A_3151;

pub const VOCAB: usize = 49408;
pub const MAX_POSITIONS: usize = 77;
pub const TEXT_HIDDEN: usize = 128;
pub const TEXT_INTERMEDIATE: usize = 512;
pub const TEXT_LAYERS: usize = 2;
pub const IMAGE_SIZE: usize = 224;
pub const PATCH: usize = 32;
pub const CHANNELS: usize = 3;
pub const VISION_HIDDEN: usize = 128;
pub const VISION_INTERMEDIATE: usize = 512;
pub const VISION_LAYERS: usize = 2;
/// Both towers have 2 heads of width 64.
pub const HEADS: usize = 2;
pub const PROJECTION_DIM: usize = 64;

/// `config.json` as `CLIPConfig.save_pretrained` writes it for this model (fixtures/generate.py
/// `write_mid_model`, transformers 5.24.0), byte for byte.
pub const CONFIG_JSON: &str = r#"{
  "architectures": [
    "CLIPModel"
  ],
  "dtype": "float32",
  "initializer_factor": 1.0,
  "logit_scale_init_value": 2.6592,
  "model_type": "clip",
  "projection_dim": 64,
  "text_config": {
    "attention_dropout": 0.0,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": 128,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 512,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 64,
    "vocab_size": 49408
  },
  "transformers_version": "5.24.0",
  "vision_config": {
    "attention_dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 128,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 512,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 32,
    "projection_dim": 64
  }
}
"#;

/// The files copied from the tiny fixture model (same tokenizer and preprocessing).
const COPIED: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
];

/// FNV-1a, 64 bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `n` values uniform in [-1, 1): splitmix64 seeded with `seed ^ fnv1a64(name)`.
pub fn prng_uniform(seed: u64, name: &str, n: usize) -> Vec<f32> {
    let mut state = seed ^ fnv1a64(name.as_bytes());
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 24 bits: exact in f32, and so are the scaling and the subtraction
        out.push((z >> 40) as f32 * (1.0 / 8_388_608.0) - 1.0);
    }
    out
}

/// Half-width `a` of the uniform init and whether 1.0 is added (LayerNorm weights). Each `a` is
/// the same one or two correctly rounded f64 operations as in generate.py `prng_amplitude`,
/// then rounded to f32.
fn amplitude(name: &str, shape: &[usize]) -> (f32, bool) {
    let sqrt3 = 3f64.sqrt();
    let fan_in = |n: usize| (3.0 / n as f64).sqrt();
    let (a, plus_one) = if name.ends_with("token_embedding.weight")
        || name.ends_with("class_embedding")
    {
        (0.5 * sqrt3, false)
    } else if name.ends_with("position_embedding.weight") {
        (0.1 * sqrt3, false)
    } else if name.contains("layer_norm") || name.contains("layrnorm") || name.contains("layernorm")
    {
        (0.1 * sqrt3, name.ends_with(".weight"))
    } else if name.ends_with("patch_embedding.weight") {
        (fan_in(shape[1..].iter().product()), false)
    } else if name.ends_with("q_proj.weight") || name.ends_with("out_proj.weight") {
        (3.0 * fan_in(shape[1]), false)
    } else if name.ends_with(".weight") && shape.len() == 2 {
        (fan_in(shape[1]), false)
    } else if name.ends_with(".bias") {
        (0.05 * sqrt3, false)
    } else {
        panic!("unhandled tensor {name}")
    };
    (a as f32, plus_one)
}

/// Name and shape of every tensor `CLIPModel.save_pretrained` writes for this config (no
/// `position_ids` buffers).
pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = vec![("logit_scale".into(), vec![])];
    fn layers(out: &mut Vec<(String, Vec<usize>)>, prefix: &str, n: usize, h: usize, inter: usize) {
        for i in 0..n {
            let lp = format!("{prefix}.encoder.layers.{i}");
            for ln in ["layer_norm1", "layer_norm2"] {
                out.push((format!("{lp}.{ln}.weight"), vec![h]));
                out.push((format!("{lp}.{ln}.bias"), vec![h]));
            }
            out.push((format!("{lp}.mlp.fc1.weight"), vec![inter, h]));
            out.push((format!("{lp}.mlp.fc1.bias"), vec![inter]));
            out.push((format!("{lp}.mlp.fc2.weight"), vec![h, inter]));
            out.push((format!("{lp}.mlp.fc2.bias"), vec![h]));
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                out.push((format!("{lp}.self_attn.{proj}.weight"), vec![h, h]));
                out.push((format!("{lp}.self_attn.{proj}.bias"), vec![h]));
            }
        }
    }
    let (th, vh) = (TEXT_HIDDEN, VISION_HIDDEN);
    out.push((
        "text_model.embeddings.token_embedding.weight".into(),
        vec![VOCAB, th],
    ));
    out.push((
        "text_model.embeddings.position_embedding.weight".into(),
        vec![MAX_POSITIONS, th],
    ));
    layers(&mut out, "text_model", TEXT_LAYERS, th, TEXT_INTERMEDIATE);
    out.push(("text_model.final_layer_norm.weight".into(), vec![th]));
    out.push(("text_model.final_layer_norm.bias".into(), vec![th]));
    let n_pos = (IMAGE_SIZE / PATCH) * (IMAGE_SIZE / PATCH) + 1;
    out.push(("vision_model.embeddings.class_embedding".into(), vec![vh]));
    out.push((
        "vision_model.embeddings.patch_embedding.weight".into(),
        vec![vh, CHANNELS, PATCH, PATCH],
    ));
    out.push((
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![n_pos, vh],
    ));
    out.push(("vision_model.pre_layrnorm.weight".into(), vec![vh]));
    out.push(("vision_model.pre_layrnorm.bias".into(), vec![vh]));
    layers(
        &mut out,
        "vision_model",
        VISION_LAYERS,
        vh,
        VISION_INTERMEDIATE,
    );
    out.push(("vision_model.post_layernorm.weight".into(), vec![vh]));
    out.push(("vision_model.post_layernorm.bias".into(), vec![vh]));
    out.push(("text_projection.weight".into(), vec![PROJECTION_DIM, th]));
    out.push(("visual_projection.weight".into(), vec![PROJECTION_DIM, vh]));
    out
}

/// One generated tensor: name, shape, float32 values (row-major).
pub struct MidTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every weight of the mid-size model, from `seed` ([`MID_SEED`] for the goldens).
pub fn mid_weights(seed: u64) -> Vec<MidTensor> {
    tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let values = if name == "logit_scale" {
                vec![f32::from_bits(LOGIT_SCALE_BITS)]
            } else {
                let (a, plus_one) = amplitude(&name, &shape);
                let mut v = prng_uniform(seed, &name, shape.iter().product());
                for x in &mut v {
                    *x *= a;
                    if plus_one {
                        *x += 1.0;
                    }
                }
                v
            };
            MidTensor {
                name,
                shape,
                values,
            }
        })
        .collect()
}

/// Little-endian f32 bytes of one tensor, for `safetensors::serialize`.
struct F32Bytes {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32Bytes {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The bytes of `model.safetensors` (header metadata `{"format": "pt"}`, as transformers and
/// generate.py write it).
pub fn mid_safetensors_bytes(seed: u64) -> Vec<u8> {
    let tensors: Vec<(String, F32Bytes)> = mid_weights(seed)
        .into_iter()
        .map(|t| {
            let mut bytes = Vec::with_capacity(t.values.len() * 4);
            for x in &t.values {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            (
                t.name,
                F32Bytes {
                    shape: t.shape,
                    bytes,
                },
            )
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .expect("serialize the mid-size model")
}

/// Writes the mid-size model folder into `dir` (created if missing): `config.json`,
/// `model.safetensors` (about 30 MB), and `tokenizer.json`, `tokenizer_config.json`,
/// `preprocessor_config.json` copied from `fixtures/model/`. Byte-identical to what
/// `python3 fixtures/generate.py mid-model DIR` writes.
pub fn write_mid_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    // the literal must be valid JSON
    let _: serde_json::Value = serde_json::from_str(CONFIG_JSON).expect("CONFIG_JSON is JSON");
    std::fs::write(dir.join("config.json"), CONFIG_JSON).expect("write config.json");
    std::fs::write(
        dir.join("model.safetensors"),
        mid_safetensors_bytes(MID_SEED),
    )
    .expect("write model.safetensors");
    let tiny = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/model"));
    for name in COPIED {
        std::fs::copy(tiny.join(name), dir.join(name))
            .unwrap_or_else(|e| panic!("copy {name} from {}: {e}", tiny.display()));
    }
}
