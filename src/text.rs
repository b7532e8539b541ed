//! Prompt tokenization with the model's own `tokenizer.json`.
//!
//! The reference is transformers' `CLIPTokenizerFast` called with
//! `truncation=True, max_length=77`
//! (<https://github.com/huggingface/transformers/blob/v4.46.3/src/transformers/models/clip/tokenization_clip_fast.py>):
//! lower-casing, NFC and whitespace folding come from the normalizer in
//! `tokenizer.json`, `<|startoftext|>`/`<|endoftext|>` from its post-processor.
//! This module guarantees that a prompt's ids never depend on other prompts (no
//! padding is ever added) and that a truncated prompt still ends with
//! `<|endoftext|>`, where the text tower pools.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// A CLIP tokenizer with truncation to the model's context length.
pub struct PromptTokenizer {
    inner: Tokenizer,
    eos_id: u32,
    max_len: usize,
}

impl PromptTokenizer {
    /// Loads `tokenizer.json` and configures truncation to `max_len` tokens.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("loading tokenizer {}", path.display()))?;
        let eos_id = inner
            .token_to_id("<|endoftext|>")
            .with_context(|| format!("{} has no <|endoftext|> token", path.display()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("configuring truncation: {e}"))?;
        Ok(Self {
            inner,
            eos_id,
            max_len,
        })
    }

    /// Token ids of one prompt, with special tokens, at most `max_len` long.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| anyhow!("tokenizing {prompt:?}: {e}"))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            bail!(
                "tokenizer produced {} ids for a {}-token model",
                ids.len(),
                self.max_len
            );
        }
        if ids.last() != Some(&self.eos_id) {
            bail!(
                "tokenizer.json does not end prompts with <|endoftext|>: is it a CLIP tokenizer?"
            );
        }
        Ok(ids)
    }

    /// The id of `<|endoftext|>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
}
