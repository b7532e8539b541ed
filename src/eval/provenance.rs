//! The run record every `plip eval --json` carries under `"run"` (and every `--html` page
//! shows), so a reported number can be traced to the run that produced it: plip's version,
//! the command, the model (source and fingerprint: a hash of its config, tokenizer,
//! preprocessing and weights), the prompt templates, the split seed and the split sizes.
//! Fields that do not apply to a command are `null` (retrieval has no templates, zero-shot no
//! seed).

use serde_json::{json, Value};

use crate::index::ModelInfo;

/// The record (a JSON object, keys sorted).
pub(crate) fn record(
    command: &str,
    model: &ModelInfo,
    templates: Option<&[String]>,
    seed: Option<u32>,
    split: Value,
) -> Value {
    json!({
        "plip_version": env!("CARGO_PKG_VERSION"),
        "command": command,
        "model": model.source,
        "model_fingerprint": model.fingerprint,
        "embedding_dim": model.dim,
        "templates": templates,
        "seed": seed,
        "split": split,
    })
}

/// `report` (a JSON object) with the record added under `"run"`.
pub(crate) fn attach(mut report: Value, run: &Value) -> Value {
    if let Some(obj) = report.as_object_mut() {
        obj.insert("run".into(), run.clone());
    }
    report
}
