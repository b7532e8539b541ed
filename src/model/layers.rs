//! The transformer's layers (attention, MLP, encoder layer and stack), named
//! after the checkpoint's tensors so that reading the file tells you the code.

use super::*;

/// A layer norm with bias named `vb`, on [`Norm`]'s kernel.
pub(crate) fn norm(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Norm> {
    Norm::new(candle_nn::layer_norm(size, eps, vb)?)
}

struct Attention {
    qkv: Dense,
    out_proj: Dense,
    num_heads: usize,
}

impl Attention {
    pub(crate) fn new(
        vb: VarBuilder,
        c: &TowerConfig,
        many_rows: bool,
        precision: Precision,
    ) -> Result<Self> {
        let d = c.hidden_size;
        let head_dim = d / c.num_attention_heads;
        // HF scales q after the projection; folding the scale into q's weights and
        // bias is the same affine map and saves one pass over the activations.
        let scale = (head_dim as f64).powf(-0.5);
        let w = |name: &str| vb.pp(name).get((d, d), "weight");
        let b = |name: &str| vb.pp(name).get(d, "bias");
        let weight = Tensor::cat(&[(w("q_proj")? * scale)?, w("k_proj")?, w("v_proj")?], 0)?;
        let bias = Tensor::cat(&[(b("q_proj")? * scale)?, b("k_proj")?, b("v_proj")?], 0)?;
        let out_proj = Dense::new(
            candle_nn::linear(d, d, vb.pp("out_proj"))?,
            many_rows,
            precision,
        )?;
        Ok(Self {
            qkv: Dense::new(Linear::new(weight, Some(bias)), many_rows, precision)?,
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
        cpu::attention(&qkv, l, self.num_heads, causal)
    }

    /// `residual + attention(xs)`, both `[B, L, D]`.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        causal: bool,
    ) -> candle_core::Result<Tensor> {
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
    pub(crate) fn new(
        vb: VarBuilder,
        c: &TowerConfig,
        many_rows: bool,
        precision: Precision,
    ) -> Result<Self> {
        let d = c.hidden_size;
        let mlp = vb.pp("mlp");
        Ok(Self {
            layer_norm1: norm(d, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            self_attn: Attention::new(vb.pp("self_attn"), c, many_rows, precision)?,
            layer_norm2: norm(d, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: Dense::new(
                candle_nn::linear(d, c.intermediate_size, mlp.pp("fc1"))?,
                many_rows,
                precision,
            )?,
            fc2: Dense::new(
                candle_nn::linear(c.intermediate_size, d, mlp.pp("fc2"))?,
                many_rows,
                precision,
            )?,
            act: c.hidden_act,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, causal: bool) -> candle_core::Result<Tensor> {
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
    pub(crate) fn forward_first(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
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

pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `many_rows`: whether the tower sees many rows per matmul (the vision tower,
    /// 50 per image) or few (a text prompt), which decides each [`Dense`] layout;
    /// `precision`: the arithmetic of the dense layers.
    pub(crate) fn new(
        vb: VarBuilder,
        c: &TowerConfig,
        many_rows: bool,
        precision: Precision,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..c.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp(i), c, many_rows, precision))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// `causal`: each token sees only itself and earlier ones (the text tower).
    pub(crate) fn forward(&self, xs: &Tensor, causal: bool) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, causal)?;
        }
        Ok(xs)
    }

    /// The last layer's output for the first token of each sequence, `[B, D]`:
    /// [`Encoder::forward`] narrowed to that token, without computing the rows
    /// that would be dropped (see [`EncoderLayer::forward_first`]).
    pub(crate) fn forward_first(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
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
