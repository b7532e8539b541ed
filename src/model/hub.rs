//! Finding a model's files: a local folder, or a Hugging Face repo id, in either
//! layout: a Hugging Face `CLIPModel` (preferred when its files are all there) or
//! an open_clip checkpoint (`open_clip_config.json` and its weights).
//!
//! A repo id is resolved through the standard Hugging Face cache (`HF_HOME`, default
//! `~/.cache/huggingface`), so a model fetched by Python tools is reused as is. When
//! the files are not cached they are downloaded with a progress bar, unless
//! `HF_HUB_OFFLINE` is set, in which case we fail at once with advice instead of
//! trying the network. Resolution never loads tensors; see `model` for that.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;

use crate::model::openclip;
use crate::model::{ModelFamily, WeightsFile};

/// The Hub id used when no model is given.
pub const DEFAULT_MODEL: &str = "vinid/plip";

/// Paths to every file plip needs from a model.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    /// What the user named: a repo id or a folder, as shown in messages and stored
    /// in the index.
    pub source: String,
    /// The layout, which says how the files below are read.
    pub family: ModelFamily,
    /// `config.json` (open_clip: `open_clip_config.json`).
    pub config: PathBuf,
    /// `tokenizer.json` (open_clip: its config again; the vocabulary is built in).
    pub tokenizer: PathBuf,
    /// `preprocessor_config.json` (open_clip: its config's `preprocess_cfg`).
    pub preprocessor: PathBuf,
    /// The weights, safetensors preferred.
    pub weights: WeightsFile,
}

const SMALL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "preprocessor_config.json"];

/// Resolves `spec`, a folder or a Hub repo id, to the model's files.
pub fn resolve(spec: &str) -> Result<ModelFiles> {
    let path = Path::new(spec);
    if path.is_dir() {
        // Recorded in the index as an absolute path, so that a search from
        // another folder (or through --index) finds the same model.
        let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        return from_dir(&abs, &abs.display().to_string());
    }
    if looks_like_path(spec) {
        // Typed, so that a host can tell a missing folder from other failures.
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("model folder {spec} does not exist"),
        )
        .into());
    }
    from_hub(spec)
}

fn looks_like_path(spec: &str) -> bool {
    spec.starts_with('.')
        || spec.starts_with('/')
        || spec.starts_with('~')
        || spec.contains('\\')
        || spec.matches('/').count() > 1
}

/// The files of an open_clip checkpoint: its config and its weights.
fn open_clip_files(source: &str, config: PathBuf, weights: WeightsFile) -> ModelFiles {
    ModelFiles {
        source: source.to_string(),
        family: ModelFamily::OpenClip,
        tokenizer: config.clone(),
        preprocessor: config.clone(),
        config,
        weights,
    }
}

fn from_dir(dir: &Path, source: &str) -> Result<ModelFiles> {
    let hf_complete = SMALL_FILES.iter().all(|n| dir.join(n).is_file());
    let oc_config = dir.join(openclip::CONFIG);
    if !hf_complete && oc_config.is_file() {
        let [st, bin] = openclip::WEIGHTS.map(|n| dir.join(n));
        let weights = if st.is_file() {
            WeightsFile::Safetensors(st)
        } else if bin.is_file() {
            WeightsFile::Pth(bin)
        } else {
            bail!(
                "open_clip model folder {} has neither {} nor {}",
                dir.display(),
                openclip::WEIGHTS[0],
                openclip::WEIGHTS[1]
            );
        };
        return Ok(open_clip_files(source, oc_config, weights));
    }
    for name in SMALL_FILES {
        if !dir.join(name).is_file() {
            bail!(
                "model folder {} has no {name}; a Hugging Face CLIP model folder \
                 needs config.json, tokenizer.json, preprocessor_config.json and \
                 model.safetensors or pytorch_model.bin (an open_clip folder needs \
                 open_clip_config.json and open_clip_model.safetensors or \
                 open_clip_pytorch_model.bin)",
                dir.display()
            );
        }
    }
    Ok(ModelFiles {
        source: source.to_string(),
        family: ModelFamily::HfClip,
        config: dir.join("config.json"),
        tokenizer: dir.join("tokenizer.json"),
        preprocessor: dir.join("preprocessor_config.json"),
        weights: WeightsFile::find(dir)?,
    })
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "False" | "FALSE"))
        .unwrap_or(false)
}

fn from_hub(id: &str) -> Result<ModelFiles> {
    let cache = Cache::from_env();
    let cached = cache.model(id.to_string());
    let cached_weights = cached
        .get("model.safetensors")
        .map(WeightsFile::Safetensors)
        .or_else(|| cached.get("pytorch_model.bin").map(WeightsFile::Pth));
    let cached_small: Vec<Option<PathBuf>> = SMALL_FILES.iter().map(|f| cached.get(f)).collect();
    if let (Some(weights), [Some(c), Some(t), Some(p)]) = (&cached_weights, &cached_small[..]) {
        return Ok(ModelFiles {
            source: id.to_string(),
            family: ModelFamily::HfClip,
            config: c.clone(),
            tokenizer: t.clone(),
            preprocessor: p.clone(),
            weights: weights.clone(),
        });
    }
    let cached_oc_weights = cached
        .get(openclip::WEIGHTS[0])
        .map(WeightsFile::Safetensors)
        .or_else(|| cached.get(openclip::WEIGHTS[1]).map(WeightsFile::Pth));
    if let (Some(c), Some(w)) = (cached.get(openclip::CONFIG), cached_oc_weights) {
        return Ok(open_clip_files(id, c, w));
    }
    let advice = format!(
        "get it on a machine with network access (`plip index` downloads `{id}` into the \
         Hugging Face cache, or `huggingface-cli download {id}`) and copy the cache \
         ({}), or pass `--model DIR` with a local model folder",
        cache.path().display()
    );
    if offline() {
        bail!("model `{id}` is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {advice}");
    }
    eprintln!(
        "plip: downloading model `{id}` into {}",
        cache.path().display()
    );
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .context("setting up the Hugging Face client")?;
    let repo = api.model(id.to_string());
    let fetch = |name: &str| {
        repo.get(name)
            .with_context(|| format!("could not download {name} of model `{id}`; {advice}"))
    };
    let info = repo.info().with_context(|| {
        format!("could not reach the Hugging Face Hub for model `{id}`; {advice}")
    })?;
    let has = |name: &str| info.siblings.iter().any(|s| s.rfilename == name);
    if !SMALL_FILES.iter().all(|n| has(n)) && has(openclip::CONFIG) {
        let weights = if has(openclip::WEIGHTS[0]) {
            WeightsFile::Safetensors(fetch(openclip::WEIGHTS[0])?)
        } else if has(openclip::WEIGHTS[1]) {
            WeightsFile::Pth(fetch(openclip::WEIGHTS[1])?)
        } else {
            bail!(
                "open_clip model `{id}` has neither {} nor {}",
                openclip::WEIGHTS[0],
                openclip::WEIGHTS[1]
            );
        };
        return Ok(open_clip_files(id, fetch(openclip::CONFIG)?, weights));
    }
    let weights = if has("model.safetensors") {
        WeightsFile::Safetensors(fetch("model.safetensors")?)
    } else if has("pytorch_model.bin") {
        WeightsFile::Pth(fetch("pytorch_model.bin")?)
    } else {
        bail!("model `{id}` has neither model.safetensors nor pytorch_model.bin");
    };
    Ok(ModelFiles {
        source: id.to_string(),
        family: ModelFamily::HfClip,
        config: fetch("config.json")?,
        tokenizer: fetch("tokenizer.json")?,
        preprocessor: fetch("preprocessor_config.json")?,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_not_mistaken_for_repo_ids() {
        assert!(looks_like_path("./model"));
        assert!(looks_like_path("/abs/model"));
        assert!(looks_like_path("a/b/c"));
        assert!(!looks_like_path("vinid/plip"));
        assert!(resolve("./definitely-missing-model-dir")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }
}
