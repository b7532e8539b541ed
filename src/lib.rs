//! plip: offline image-text retrieval for histopathology with the PLIP model.
//!
//! One module per pipeline stage (see ARCHITECTURE.md): `walk` finds files,
//! `preprocess` turns pixels into the model's input exactly as CLIPImageProcessor
//! does, `text` tokenizes prompts, `model` is PLIP on candle, `hub` finds model
//! files, `embed` batches files and prompts through the model, `store` is the
//! crash-safe on-disk index, `ann` its HNSW graphs, `search` queries and printers,
//! and `cli` the commands.

pub mod ann;
pub mod cli;
pub mod embed;
pub mod eval;
pub mod eval_cmd;
pub mod html;
pub mod hub;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod preprocess;
pub mod search;
pub mod store;
pub mod text;
pub mod walk;
