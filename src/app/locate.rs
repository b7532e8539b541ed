//! Where the index is and which model reads it, resolved the same way for every
//! face: an explicit index folder (relative to the working directory), else the
//! nearest `.plip` in it or above it, as git finds `.git`; an explicit model, else
//! the model recorded in the index, else [`hub::DEFAULT_MODEL`].

use std::path::{Path, PathBuf};

use crate::index::{StoreError, MANIFEST};
use crate::model::hub;

/// The index folder to read: `index` (relative to `cwd`), else the nearest
/// `.plip` holding a manifest in `cwd` or above it. None is [`StoreError::NoIndex`].
pub(crate) fn find_index(cwd: &Path, index: Option<&Path>) -> Result<PathBuf, StoreError> {
    if let Some(p) = index {
        return Ok(cwd.join(p));
    }
    for dir in cwd.ancestors() {
        let candidate = dir.join(".plip");
        if candidate.join(MANIFEST).is_file() {
            return Ok(candidate);
        }
    }
    Err(StoreError::NoIndex(cwd.join(".plip")))
}

/// The index folder to write: explicit, else the nearest `.plip`, else `cwd/.plip`.
pub(crate) fn index_for_writing(cwd: &Path, index: Option<&Path>) -> PathBuf {
    find_index(cwd, index).unwrap_or_else(|_| cwd.join(".plip"))
}

/// The model to load: `model` if given (and not blank), else the model recorded in
/// the index at `index_dir` (when there is one), else [`hub::DEFAULT_MODEL`].
pub(crate) fn model_source(model: Option<&str>, index_dir: Option<&Path>) -> String {
    if let Some(m) = model.filter(|m| !m.trim().is_empty()) {
        return m.to_string();
    }
    index_dir
        .and_then(|d| crate::index::recorded_model(d).ok())
        .map(|m| m.source)
        .unwrap_or_else(|| hub::DEFAULT_MODEL.to_string())
}
