//! The vision tower: patch embedding as one matmul, class token and position
//! embeddings, the encoder (the last layer only for the class token), and the
//! visual projection, as transformers' `CLIPVisionModel` + `visual_projection`.

use super::*;

/// CLIP's vision tower and projection.
pub(crate) struct VisionTower {
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
    pub(crate) fn new(
        vb: VarBuilder,
        projection: Linear,
        c: &VisionConfig,
        precision: Precision,
    ) -> Result<Self> {
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
            patch_embedding: Dense::new(Linear::new(patch_weight, None), true, precision)?,
            position_embedding: emb
                .pp("position_embedding")
                .get((num_positions, d), "weight")?,
            pre_layrnorm: norm(d, eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(vb.pp("encoder"), &c.tower, true, precision)?,
            post_layernorm: norm(d, eps, vb.pp("post_layernorm"))?,
            projection,
            config: c.clone(),
        })
    }

    /// Projected (unnormalized) embeddings of a `[B, C, H, W]` pixel tensor.
    ///
    /// On the CPU a batch of at least two images per thread is split into one
    /// slice per thread, each run through the whole tower on its own core
    /// ([`cpu::with_serial_gemm`]): images are independent, and whole
    /// slices per core keep the cores from waiting for each other after every
    /// matmul. Images are independent, so this computes the same function.
    pub(crate) fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let s = self.config.image_size;
        if c != self.config.num_channels || h != s || w != s {
            bail!(
                "pixel tensor is {c}x{h}x{w}, the model expects {}x{s}x{s}",
                self.config.num_channels
            );
        }
        let threads = cpu::threads();
        if pixels.device().is_cpu() && threads > 1 && b >= 2 * threads {
            let per = b.div_ceil(threads);
            let parts = (0..b)
                .step_by(per)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|start| {
                    let slice = pixels.narrow(0, start, per.min(b - start))?;
                    cpu::with_serial_gemm(|| self.forward_batch(&slice))
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
pub(crate) fn patch_rows(pixels: &Tensor, ps: usize) -> candle_core::Result<Tensor> {
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
