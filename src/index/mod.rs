//! The on-disk index: immutable segments named by one atomically written manifest.
//!
//! Layout of an index folder (default `.plip/`):
//!
//! ```text
//! MANIFEST            JSON commit point: model, segments, tombstones, last run
//! write.lock          held (flock) by the one `plip index` allowed at a time
//! seg-000001.vec      framed: L2-normalized f32 vectors, row-major
//! seg-000001.meta     framed: bincode list of the files behind those rows
//! seg-000001.reg      framed: the slide region of each row, only when a row has one
//! seg-000001.hnsw.ann HNSW links and a CRC32 of the segment's vectors, only for
//!                     large segments (`ann.rs`; older indexes list hnsw_rs' files
//!                     here, and those segments are searched exactly)
//! ```
//!
//! Guarantees, in the way tantivy does it: segment files are written once and
//! fsynced before the manifest that names them; the manifest is replaced by
//! write-temp, fsync, rename, fsync-folder, so a reader or a crash sees either the
//! old or the new commit, never a mix; files no manifest names are deleted only
//! after a commit, by the lock holder. Every file carries a magic, a format
//! version and a CRC32, and a reader checks all three, so a truncated, bit-flipped
//! or foreign file is a clear error that suggests `--rebuild`, never a panic.
//! HNSW cannot delete, so replaced or removed rows are tombstoned in the manifest
//! and filtered out of every search; segments are merged when tombstones pile up.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use ann::{AnnGraph, AnnParams, Hit};
// The tiling a manifest records is the slide floor's one type.
use crate::model::ModelFamily;
use crate::source::slide::Tiling;

pub(crate) mod ann;
mod file;
mod folder;
mod manifest;
mod merge;
pub(crate) mod paths;
mod precision;
mod reader;
mod region;
mod segment;
#[cfg(test)]
mod tests;
mod writer;
pub(crate) use file::{
    bincode_config, check_file, map_framed_f32, read_framed, sync_dir, write_atomic,
    write_atomic_with, write_framed, CheckedWriter, Matrix,
};
pub(crate) use folder::{check_index_folder, next_free_segment, remove_unreferenced, take_lock};
pub(crate) use manifest::{FileRef, Manifest, SegmentRecord};
pub(crate) use merge::{failpoint, merge};
pub(crate) use precision::{index_precision, merged_label, record_label, segment_label, MIXED};
pub use reader::Index;
pub(crate) use reader::{recorded_model, recorded_rows, root_of, IndexHit, PathFilter};
pub use region::Region;
pub(crate) use region::{
    read_regions, write_regions, MaskRecord, RegionKey, SlideRecord, REG_MAGIC,
};
pub(crate) use segment::Segment;
pub use writer::IndexWriter;

/// The manifest's file name.
pub(crate) const MANIFEST: &str = "MANIFEST";
/// The last run's skipped files, written beside the manifest after each commit
/// (not part of the commit point).
pub(crate) const LAST_RUN: &str = "last-run.json";
/// The writer lock's file name.
pub(crate) const LOCK: &str = "write.lock";
/// Current on-disk format version; readers accept exactly the versions listed in
/// [`SUPPORTED_VERSIONS`].
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Format versions this build can open.
pub(crate) const SUPPORTED_VERSIONS: &[u32] = &[1];
/// Segments with at least this many rows get an HNSW graph when they are
/// compacted; smaller ones are only searched exactly.
pub(crate) const HNSW_MIN_ROWS: usize = 20_000;

/// The graph threshold in force: [`HNSW_MIN_ROWS`], or `PLIP_HNSW_MIN_ROWS` when
/// set, so that tests (and users tuning a small index) reach the graph path
/// through the real binary.
pub(crate) fn hnsw_min_rows() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("PLIP_HNSW_MIN_ROWS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(HNSW_MIN_ROWS)
    })
}

const VEC_MAGIC: &[u8; 8] = b"PLIPVEC\0";
const META_MAGIC: &[u8; 8] = b"PLIPMET\0";

/// Errors a caller may act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No manifest in the folder.
    #[error("no plip index at {0}; run `plip index DIR` first (or pass --index PATH)")]
    NoIndex(PathBuf),
    /// A file failed its magic, version, length or checksum check.
    #[error("index file {path} is corrupt ({reason}); rebuild it with `plip index --rebuild DIR`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// A commit whose manifest would not read back was refused (a value that JSON
    /// cannot hold, such as NaN); the previous commit stays.
    #[error(
        "refused to commit {path}: it would not read back ({reason}); the previous commit \
         is intact. This is a bug in plip (a value was not checked): please report it"
    )]
    RefusedCommit {
        /// The manifest.
        path: PathBuf,
        /// Why it would not read back.
        reason: String,
    },
    /// Written by a plip with another on-disk format.
    #[error(
        "index at {path} has format version {found}, this plip reads {supported:?}; \
         open it with a matching plip or rebuild it with `plip index --rebuild DIR`"
    )]
    Incompatible {
        /// The index folder.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Versions supported.
        supported: &'static [u32],
    },
    /// Another writer holds the lock.
    #[error(
        "index at {0} is locked by another `plip index` run{1}; wait for it to finish \
         (searching works meanwhile)"
    )]
    Locked(PathBuf, String),
    /// The index was built with another model.
    #[error(
        "index at {path} was built with model `{index_model}`, not `{model}` (different \
         weights or preprocessing); use the same --model, or `--rebuild` to start over"
    )]
    ModelMismatch {
        /// The index folder.
        path: PathBuf,
        /// Model recorded in the index.
        index_model: String,
        /// Model requested.
        model: String,
    },
    /// The model at the recorded source is not the one that built the index.
    #[error(
        "the model `{model}` changed since the index at {path} was built (its weights, \
         tokenizer or preprocessing differ); use the model that built it, or \
         `plip index --rebuild` to embed everything again"
    )]
    ModelChanged {
        /// The index folder.
        path: PathBuf,
        /// The model source.
        model: String,
    },
    /// The folder holds something other than a plip index.
    #[error(
        "{0} is not a plip index: {1}; plip creates an index only in an empty or new \
         folder (give another with --index PATH)"
    )]
    NotAnIndex(PathBuf, String),
    /// Any other I/O failure; the cause follows in the error chain.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

/// The one model check: `model` may read and extend the index at `path`, built by
/// `index_model`, only when it is the same model (dimension and the fingerprint
/// of both towers' files). The error says which case it is: another model, or
/// the same source whose files changed since the index was built.
pub(crate) fn check_model(path: &Path, index_model: &ModelInfo, model: &ModelInfo) -> Result<()> {
    if index_model.same_model(model) {
        return Ok(());
    }
    Err(if index_model.source == model.source {
        StoreError::ModelChanged {
            path: path.to_path_buf(),
            model: model.source.clone(),
        }
    } else {
        StoreError::ModelMismatch {
            path: path.to_path_buf(),
            index_model: index_model.source.clone(),
            model: model.source.clone(),
        }
    })
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Which model built an index, recorded so search uses it and indexing can refuse a
/// mismatch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelInfo {
    /// The repo id or folder the user named.
    pub source: String,
    /// Hash of config, tokenizer, preprocessing and weights.
    pub fingerprint: String,
    /// Embedding size.
    pub dim: usize,
    /// The checkpoint's layout (`hf-clip` or `open_clip`). Not written for
    /// `hf-clip`, so indexes written before it existed read as what they are.
    #[serde(default, skip_serializing_if = "is_hf_clip", with = "family_name")]
    pub family: ModelFamily,
}

fn is_hf_clip(f: &ModelFamily) -> bool {
    *f == ModelFamily::HfClip
}

/// [`ModelFamily`] as its name in the manifest.
mod family_name {
    use crate::model::ModelFamily;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(f: &ModelFamily, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(f.name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ModelFamily, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "hf-clip" => Ok(ModelFamily::HfClip),
            "open_clip" => Ok(ModelFamily::OpenClip),
            other => Err(serde::de::Error::custom(format!(
                "unknown model family {other:?}; a newer plip wrote this index"
            ))),
        }
    }
}

impl ModelInfo {
    /// Whether vectors of `other` may sit beside this model's: the same files
    /// (fingerprint) and the same dimension. The one rule behind [`check_model`]
    /// and `plip merge`'s check of its shards.
    pub(crate) fn same_model(&self, other: &ModelInfo) -> bool {
        self.dim == other.dim && self.fingerprint == other.fingerprint
    }
}

/// One indexed file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the index's root folder, with `/` separators.
    pub path: String,
    /// Size in bytes when embedded.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch when embedded.
    pub mtime_ns: i128,
    /// CRC32 of the file's bytes, used when size and mtime cannot decide.
    pub crc32: u32,
    /// For a tile of a whole slide, its region (stored in the segment's `.reg` file,
    /// not in `.meta`, so the `.meta` format is unchanged; see `region.rs`).
    #[serde(skip)]
    pub region: Option<Region>,
}

/// A file that could not be embedded at the last run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Skipped {
    /// Path relative to the root.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Counts of what the last `plip index` run did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunStats {
    /// Files embedded for the first time.
    pub added: usize,
    /// Files re-embedded because they changed.
    pub updated: usize,
    /// Files dropped because they are gone.
    pub removed: usize,
    /// Files left as they were.
    pub unchanged: usize,
    /// Files that could not be read or decoded. Kept out of the manifest (a
    /// search parses it, and this list can be long): see [`LAST_RUN`].
    pub skipped: Vec<Skipped>,
    /// How many were skipped, as the manifest records it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_count: usize,
    /// The image tower's precision and why it was chosen, e.g. `bf16 (auto: bf16
    /// runs 1.62x f32 on AMD EPYC 9454)` (issue 29).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
