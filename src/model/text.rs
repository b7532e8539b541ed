//! The text tower: token and position embeddings, the causal encoder, pooling at
//! the first `<|endoftext|>` and the text projection, as transformers'
//! `CLIPTextModel` + `text_projection`.

use super::*;

/// Where the text tower's token embeddings come from.
enum TokenTable {
    /// The whole table, in memory.
    Loaded(Embedding),
    /// Rows read from the checkpoint as prompts need them.
    Rows(TokenRows),
}

/// CLIP's text tower and projection.
pub(crate) struct TextTower {
    token_embedding: TokenTable,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: Norm,
    projection: Dense,
    eos_token_id: u32,
    max_len: usize,
}

impl TextTower {
    pub(crate) fn new(
        vb: VarBuilder,
        projection: Linear,
        c: &TextConfig,
        rows: Option<TokenRows>,
        precision: Precision,
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
            encoder: Encoder::new(vb.pp("encoder"), &c.tower, false, precision)?,
            final_layer_norm: norm(d, c.tower.layer_norm_eps, vb.pp("final_layer_norm"))?,
            // The final projection stays f32, as in mixed-precision inference.
            projection: Dense::new(projection, false, Precision::F32)?,
            eos_token_id: c.eos_token_id,
            max_len: c.max_position_embeddings,
        })
    }

    /// The length of the prefix that determines the pooled output: up to and
    /// including the first `<|endoftext|>` (transformers pools there, and the causal
    /// mask means no later token can change it).
    pub(crate) fn pooled_len(&self, ids: &[u32]) -> usize {
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
    pub(crate) fn forward_same_len(&self, batch: &[&[u32]], device: &Device) -> Result<Tensor> {
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
