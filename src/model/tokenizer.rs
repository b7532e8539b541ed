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
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use tokenizers::models::bpe::BPE;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer, TokenizerBuilder, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

/// A CLIP tokenizer with truncation to the model's context length.
pub(crate) struct PromptTokenizer {
    inner: Inner,
    eos_id: u32,
    max_len: usize,
}

/// The model's own `tokenizer.json`, or open_clip's `SimpleTokenizer`.
enum Inner {
    Json(Box<Tokenizer>),
    OpenClip(Box<crate::model::openclip::tokenizer::SimpleTokenizer>),
}

impl PromptTokenizer {
    /// open_clip's tokenizer for a `max_len`-token text tower.
    pub(crate) fn open_clip(max_len: usize) -> Result<Self> {
        let inner = crate::model::openclip::tokenizer::SimpleTokenizer::new(max_len)?;
        Ok(Self {
            eos_id: inner.eot(),
            inner: Inner::OpenClip(Box::new(inner)),
            max_len,
        })
    }

    /// Loads `tokenizer.json` and configures truncation to `max_len` tokens.
    pub(crate) fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let json = std::fs::read_to_string(path)
            .with_context(|| format!("reading tokenizer {}", path.display()))?;
        let mut inner = match bpe_tokenizer(&json) {
            Some(t) => t,
            None => Tokenizer::from_str(&json)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("loading tokenizer {}", path.display()))?,
        };
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
            inner: Inner::Json(Box::new(inner)),
            eos_id,
            max_len,
        })
    }

    /// Token ids of one prompt, with special tokens, at most `max_len` long.
    pub(crate) fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let ids = match &self.inner {
            Inner::Json(inner) => inner
                .encode(prompt, true)
                .map_err(|e| anyhow!("tokenizing {prompt:?}: {e}"))?
                .get_ids()
                .to_vec(),
            Inner::OpenClip(inner) => inner.encode(prompt)?,
        };
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
}

/// The parts of a `tokenizer.json` that a BPE tokenizer is built from, as the
/// `tokenizers` crate itself reads them (`TokenizerVisitor`), but with the model
/// read directly as a [`BPE`].
#[derive(Deserialize)]
struct BpeTokenizerFile {
    version: String,
    #[serde(default)]
    added_tokens: Vec<AddedTokenWithId>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    model: BPE,
}

#[derive(Deserialize)]
struct AddedTokenWithId {
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

/// Builds a BPE tokenizer (CLIP's kind) from `tokenizer.json` text, or `None`
/// when the file holds another model or anything unexpected; the caller then
/// uses `tokenizers`' own loader.
///
/// `Tokenizer::from_file` reads the model through a generic enum, buffering all
/// 49,408 vocabulary entries and 48,894 merges as JSON values in B-trees and
/// converting them again: 130–190 ms on the 2-core machine, the longest step of
/// a cold `plip search`. Read directly, the same tokenizer takes a fraction of
/// that. Every added token must come out with the id the file gives it, as the
/// crate's own loader would assign; otherwise this path is not used.
fn bpe_tokenizer(json: &str) -> Option<Tokenizer> {
    let file: BpeTokenizerFile = serde_json::from_str(json).ok()?;
    if file.version != "1.0" {
        return None;
    }
    let built = TokenizerBuilder::new()
        .with_model(ModelWrapper::BPE(file.model))
        .with_normalizer(file.normalizer)
        .with_pre_tokenizer(file.pre_tokenizer)
        .with_post_processor(file.post_processor)
        .with_decoder(file.decoder)
        .build()
        .ok()?;
    let mut tokenizer = Tokenizer::from(built);
    let ids: Vec<(String, u32)> = file
        .added_tokens
        .iter()
        .map(|t| (t.token.content.clone(), t.id))
        .collect();
    tokenizer
        .add_tokens(file.added_tokens.into_iter().map(|t| t.token))
        .ok()?;
    ids.iter()
        .all(|(content, id)| tokenizer.token_to_id(content) == Some(*id))
        .then_some(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_tokenizer() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/model/tokenizer.json");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn direct_bpe_loading_matches_the_crates_loader() {
        let json = fixture_tokenizer();
        let fast = bpe_tokenizer(&json).expect("CLIP's tokenizer.json takes the direct path");
        let slow = Tokenizer::from_str(&json).unwrap();
        assert_eq!(fast.get_vocab_size(true), slow.get_vocab_size(true));
        let golden: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/golden/tokens.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let mut prompts: Vec<String> = golden
            .iter()
            .map(|g| g["text"].as_str().unwrap().to_string())
            .collect();
        prompts.extend(
            [
                "",
                "  Tumour  TISSUE\t\n",
                "<|startoftext|>inside<|endoftext|> text",
                "naïve café – 37°C, µm² (Ki-67 ≥ 20%)",
                "日本語のテキスト 🙂",
                &"lymphocytes ".repeat(100),
            ]
            .map(String::from),
        );
        for p in &prompts {
            let (a, b) = (
                fast.encode(p.as_str(), true).unwrap(),
                slow.encode(p.as_str(), true).unwrap(),
            );
            assert_eq!(a.get_ids(), b.get_ids(), "{p:?}");
            assert_eq!(a.get_tokens(), b.get_tokens(), "{p:?}");
        }
    }

    #[test]
    fn other_tokenizers_fall_back_to_the_crates_loader() {
        let json = fixture_tokenizer();
        // Another model type.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["model"] = serde_json::json!({"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"});
        assert!(bpe_tokenizer(&v.to_string()).is_none());
        // An added token whose id is not the one the vocabulary gives it.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let id = v["added_tokens"][0]["id"].as_u64().unwrap();
        v["added_tokens"][0]["id"] = (id + 1).into();
        assert!(bpe_tokenizer(&v.to_string()).is_none());
        // An unknown version.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["version"] = "2.0".into();
        assert!(bpe_tokenizer(&v.to_string()).is_none());
    }
}
