//! plip: offline image-text retrieval for histopathology with the PLIP model.
//!
//! The crate is laid out as the pipeline runs (see ARCHITECTURE.md): `source`
//! finds what to index and reads it, `preprocess` turns pixels into the model's
//! input exactly as CLIPImageProcessor does, `model` is PLIP on candle (with its
//! tokenizer and Hub resolution), `backend::cpu` holds the fast kernels, `embed`
//! batches items through the model, `index` is the crash-safe on-disk index with
//! its HNSW graphs under `index::ann`, `job` is the incremental indexing run,
//! `query` builds query vectors, `eval` measures, `output` prints and writes, and
//! `cli` is the command line.
//!
//! The public surface below is what the binary, the integration tests and the
//! benchmarks use; everything else is crate-private, so the compiler finds dead
//! code.

#![warn(unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// First: its `multiversion!` macro is used by the kernels below it.
#[macro_use]
mod vectors;

mod app;
mod backend;
mod cli;
mod embed;
mod eval;
mod hdf5;
mod host;
mod index;
mod job;
pub(crate) mod model;
mod output;
mod preprocess;
mod query;
mod serve;
mod source;

pub use app::{Found, SearchHit, SearchRequest, SlideSearchHit, Terms};
pub use backend::cpu::{
    bf16_supported, cpu_name, threads, tune_allocator, Chosen, Precision, PrecisionChoice,
    UnsupportedPrecision,
};
pub use cli::{run, Cli};
pub use embed::{embed_image_files, embed_rgb_images, Embedder, Interrupted, LoadOptions};
pub use host::{
    check_model, find_index, index_folders, is_slide, load_model, load_model_with, main_with_args,
    model_source, search, search_slides, IndexReport, IndexRequest, SlideSearchReport,
    SlideSearchRequest,
};
/// Hooks for the HNSW study in `benches/ann_study.rs`; not a stable API.
#[doc(hidden)]
pub use index::ann::study as ann_study;
pub use index::ann::{exact_search, AnnGraph, AnnParams, DEFAULT_EF_SEARCH};
pub use index::{FileEntry, Index, IndexWriter, ModelInfo, Region, Skipped, StoreError};
pub use model::hub::{resolve as resolve_model, ModelFiles, DEFAULT_MODEL};
pub use model::{ModelFamily, Towers, WeightsFile};
pub use output::npy::write_f32 as write_npy;
pub use preprocess::{
    decode_rgb, load_and_preprocess, preprocess, DecodeLimits, ImageProcessorConfig, PixelPipeline,
};
pub use query::{build_query, QueryTerm, TermKind};

/// Evaluation metrics, with the same definitions as scikit-learn and PLIP.
pub mod metrics {
    pub use crate::eval::{
        ann_recall, classification_report, ensemble, latency_summary, percentile, predict,
        print_classification_table, print_retrieval_table, retrieval, zero_shot,
        ClassificationReport, DirectionReport, DEFAULT_KS,
    };
}
