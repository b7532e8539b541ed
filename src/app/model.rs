//! Loading a model for a face, and the one check that it is the index's model.

use anyhow::{Context, Result};

use crate::backend::cpu::PrecisionChoice;
use crate::embed::{Embedder, LoadOptions};
use crate::index::{Index, StoreError};
use crate::model::{hub, Towers};

/// Loads the `towers` of the model `source` (a Hub id or a folder) with the image
/// tower's arithmetic chosen by `precision`. An unsupported precision is refused
/// before the model is resolved (and maybe downloaded).
pub(crate) fn load(source: &str, towers: Towers, precision: PrecisionChoice) -> Result<Embedder> {
    let (options, _) = LoadOptions::resolve(precision, towers)?;
    let files = hub::resolve(source)?;
    Embedder::load_with(&files, towers, options)
        .with_context(|| format!("loading model `{source}`"))
}

/// Fails when `embedder` is not the model that built `index`: another model, or
/// the same source whose files changed ([`crate::index::check_model`]).
pub(crate) fn check(index: &Index, embedder: &Embedder) -> Result<(), StoreError> {
    crate::index::check_model(index.dir(), index.model(), embedder.info())
}
