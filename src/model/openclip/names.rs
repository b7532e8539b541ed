//! open_clip's tensor names served under the Hugging Face names the towers read.
//!
//! open_clip stores attention as one fused `in_proj_weight` `[3D, D]` (q, k, v
//! stacked, as `torch.nn.MultiheadAttention`) and its projections as matrices that
//! multiply from the right (`x @ proj`, `[D, P]`); `CLIPModel` has separate
//! `q_proj`/`k_proj`/`v_proj` and `Linear` weights `[P, D]`. [`OpenClipNames`] is a
//! candle backend over the checkpoint that answers each Hugging Face name with the
//! open_clip tensor it corresponds to: a third of the fused matrix, or the
//! transposed projection. Before slicing or transposing, the stored tensor's shape
//! is checked against the one the config implies, so a checkpoint that does not
//! match its config fails on the first such tensor, named, with both shapes.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// How the Hugging Face tensor is made from the open_clip one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Whole,
    /// `x @ proj` in open_clip, a `Linear` weight in transformers.
    Transposed,
    /// Rows `k·D .. (k+1)·D` of a fused q/k/v tensor.
    Third(usize),
}

/// The open_clip name (without the text prefix) and how to read it, for a
/// Hugging Face `CLIPModel` tensor name.
fn open_clip_name(hf: &str) -> Option<(String, Part)> {
    let whole = |s: String| Some((s, Part::Whole));
    if let Some(rest) = hf.strip_prefix("text_model.") {
        return match rest {
            "embeddings.token_embedding.weight" => whole("token_embedding.weight".into()),
            "embeddings.position_embedding.weight" => whole("positional_embedding".into()),
            _ => {
                if let Some(ln) = rest.strip_prefix("final_layer_norm.") {
                    return whole(format!("ln_final.{ln}"));
                }
                let layer = rest.strip_prefix("encoder.layers.")?;
                let (name, part) = block_name(layer)?;
                Some((format!("transformer.resblocks.{name}"), part))
            }
        };
    }
    if hf == "text_projection.weight" {
        return Some(("text_projection".into(), Part::Transposed));
    }
    if hf == "visual_projection.weight" {
        return Some(("visual.proj".into(), Part::Transposed));
    }
    let rest = hf.strip_prefix("vision_model.")?;
    let name = match rest {
        "embeddings.class_embedding" => "class_embedding".to_string(),
        "embeddings.patch_embedding.weight" => "conv1.weight".to_string(),
        "embeddings.position_embedding.weight" => "positional_embedding".to_string(),
        _ => {
            if let Some(ln) = rest.strip_prefix("pre_layrnorm.") {
                format!("ln_pre.{ln}")
            } else if let Some(ln) = rest.strip_prefix("post_layernorm.") {
                format!("ln_post.{ln}")
            } else {
                let (name, part) = block_name(rest.strip_prefix("encoder.layers.")?)?;
                return Some((format!("visual.transformer.resblocks.{name}"), part));
            }
        }
    };
    whole(format!("visual.{name}"))
}

/// `N.self_attn.q_proj.weight` → `N.attn.in_proj_weight` (first third), and the
/// rest of a residual block's names.
fn block_name(layer: &str) -> Option<(String, Part)> {
    let (index, rest) = layer.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let fused = |k: usize| Some((format!("{index}.attn.in_proj_{param}"), Part::Third(k)));
    let module = match module {
        "self_attn.q_proj" => return fused(0),
        "self_attn.k_proj" => return fused(1),
        "self_attn.v_proj" => return fused(2),
        "self_attn.out_proj" => "attn.out_proj",
        "mlp.fc1" => "mlp.c_fc",
        "mlp.fc2" => "mlp.c_proj",
        "layer_norm1" => "ln_1",
        "layer_norm2" => "ln_2",
        _ => return None,
    };
    Some((format!("{index}.{module}.{param}"), Part::Whole))
}

/// A checkpoint in open_clip's layout, read under Hugging Face names.
pub(crate) struct OpenClipNames {
    inner: VarBuilder<'static>,
    /// `"text."` for a `CustomTextCLIP` checkpoint (`custom_text: true`), whose
    /// text tower sits under `text.`; empty otherwise.
    text_prefix: &'static str,
}

impl OpenClipNames {
    /// Wraps `inner`, a backend over an open_clip state dict.
    pub(crate) fn var_builder(inner: VarBuilder<'static>, device: &Device) -> VarBuilder<'static> {
        let text_prefix = if !inner.contains_tensor("token_embedding.weight")
            && inner.contains_tensor("text.token_embedding.weight")
        {
            "text."
        } else {
            ""
        };
        let backend: Box<dyn SimpleBackend> = Box::new(Self { inner, text_prefix });
        VarBuilder::from_backend(backend, DType::F32, device.clone())
    }

    /// The stored name of the open_clip tensor behind `hf`.
    fn stored(&self, hf: &str) -> Option<(String, Part)> {
        let (name, part) = open_clip_name(hf)?;
        let prefix = if hf.starts_with("text_") {
            self.text_prefix
        } else {
            ""
        };
        Some((format!("{prefix}{name}"), part))
    }

    /// The physical name of the token-embedding table in this checkpoint.
    pub(crate) fn token_embedding_name(inner: &VarBuilder<'static>) -> &'static str {
        if !inner.contains_tensor("token_embedding.weight")
            && inner.contains_tensor("text.token_embedding.weight")
        {
            "text.token_embedding.weight"
        } else {
            "token_embedding.weight"
        }
    }
}

fn not_found(hf: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("no open_clip tensor corresponds to `{hf}`")).bt()
}

impl SimpleBackend for OpenClipNames {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (stored, part) = self.stored(name).ok_or_else(|| not_found(name))?;
        let dims = s.dims();
        let want: Vec<usize> = match part {
            Part::Whole => dims.to_vec(),
            Part::Transposed => dims.iter().rev().copied().collect(),
            Part::Third(_) => {
                let mut d = dims.to_vec();
                d[0] *= 3;
                d
            }
        };
        let tensor = self
            .inner
            .get_unchecked_dtype(&stored, dtype)?
            .to_device(dev)?;
        if tensor.dims() != want.as_slice() {
            return Err(candle_core::Error::Msg(format!(
                "tensor `{stored}` is {:?} in the checkpoint, but open_clip_config.json \
                 makes it {want:?}",
                tensor.dims()
            ))
            .bt());
        }
        match part {
            Part::Whole => Ok(tensor),
            Part::Transposed => tensor.t()?.contiguous(),
            Part::Third(k) => tensor.narrow(0, k * dims[0], dims[0])?.contiguous(),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let (stored, part) = self.stored(name).ok_or_else(|| not_found(name))?;
        let tensor = self
            .inner
            .get_unchecked_dtype(&stored, dtype)?
            .to_device(dev)?;
        match part {
            Part::Whole => Ok(tensor),
            Part::Transposed => tensor.t()?.contiguous(),
            Part::Third(k) => {
                let d = tensor.dim(0)? / 3;
                tensor.narrow(0, k * d, d)?.contiguous()
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.stored(name)
            .is_some_and(|(stored, _)| self.inner.contains_tensor(&stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clip_tensor_has_an_open_clip_name() {
        let cases = [
            (
                "text_model.embeddings.token_embedding.weight",
                "token_embedding.weight",
                Part::Whole,
            ),
            (
                "text_model.embeddings.position_embedding.weight",
                "positional_embedding",
                Part::Whole,
            ),
            (
                "text_model.encoder.layers.3.self_attn.k_proj.bias",
                "transformer.resblocks.3.attn.in_proj_bias",
                Part::Third(1),
            ),
            (
                "text_model.encoder.layers.0.mlp.fc2.weight",
                "transformer.resblocks.0.mlp.c_proj.weight",
                Part::Whole,
            ),
            (
                "text_model.final_layer_norm.bias",
                "ln_final.bias",
                Part::Whole,
            ),
            (
                "text_projection.weight",
                "text_projection",
                Part::Transposed,
            ),
            (
                "vision_model.embeddings.class_embedding",
                "visual.class_embedding",
                Part::Whole,
            ),
            (
                "vision_model.embeddings.patch_embedding.weight",
                "visual.conv1.weight",
                Part::Whole,
            ),
            (
                "vision_model.pre_layrnorm.weight",
                "visual.ln_pre.weight",
                Part::Whole,
            ),
            (
                "vision_model.encoder.layers.11.layer_norm2.weight",
                "visual.transformer.resblocks.11.ln_2.weight",
                Part::Whole,
            ),
            (
                "vision_model.encoder.layers.1.self_attn.q_proj.weight",
                "visual.transformer.resblocks.1.attn.in_proj_weight",
                Part::Third(0),
            ),
            (
                "vision_model.encoder.layers.1.self_attn.out_proj.weight",
                "visual.transformer.resblocks.1.attn.out_proj.weight",
                Part::Whole,
            ),
            (
                "vision_model.post_layernorm.bias",
                "visual.ln_post.bias",
                Part::Whole,
            ),
            ("visual_projection.weight", "visual.proj", Part::Transposed),
        ];
        for (hf, oc, part) in cases {
            assert_eq!(open_clip_name(hf), Some((oc.to_string(), part)), "{hf}");
        }
        assert_eq!(open_clip_name("logit_scale"), None);
    }
}
