//! The integration tests, in one binary so that the suite links once.
//!
//! End-to-end tests spawn the real `plip` binary on temporary folders
//! (`common::TestEnv`); parity tests compare with goldens made by the Python
//! reference (`fixtures/generate.py`).

#![allow(dead_code)]

mod common;
mod mid_model;
mod open_clip;
mod outputs;

mod auto_precision;
mod bad_flags;
mod bf16;
mod cli;
mod data_loss;
mod eval_cli;
mod eval_golden;
mod eval_probe;
mod interop;
mod lifecycle;
mod parity;
mod preprocess_parity;
mod queries;
mod serve;
mod serve_like;
mod serve_limits;
mod shards;
mod slide_bombs;
mod slide_query;
mod slides;
mod tissue_io;
