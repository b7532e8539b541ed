//! What gets indexed: image files found by walking folders, and how one is read.
//!
//! An indexed item is identified by its path relative to the index root. Whole
//! slides (regions of one file) will add a region to that identity; a new kind
//! of source adds a file here that finds its items and reads one item's pixels.

mod file;
pub(crate) mod shard;
pub(crate) mod slide;
pub(crate) mod walk;

pub(crate) use file::*;
