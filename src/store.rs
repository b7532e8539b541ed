//! The on-disk index: immutable segments named by one atomically written manifest.
//!
//! Layout of an index folder (default `.plip/`):
//!
//! ```text
//! MANIFEST            JSON commit point: model, segments, tombstones, last run
//! write.lock          held (flock) by the one `plip index` allowed at a time
//! seg-000001.vec      framed: L2-normalized f32 vectors, row-major
//! seg-000001.meta     framed: bincode list of the files behind those rows
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ann::{self, AnnGraph, AnnParams, Hit};

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";
/// The writer lock's file name.
pub const LOCK: &str = "write.lock";
/// Current on-disk format version; readers accept exactly the versions listed in
/// [`SUPPORTED_VERSIONS`].
pub const FORMAT_VERSION: u32 = 1;
/// Format versions this build can open.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];
/// Segments with at least this many live rows get an HNSW graph; smaller ones are
/// searched exactly (and therefore give exactly the brute-force answer). 200 in
/// this crate's unit tests, so that they exercise segments with graphs.
pub const HNSW_MIN_ROWS: usize = if cfg!(test) { 200 } else { 20_000 };

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
    /// Any other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

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
    /// Files that could not be read or decoded.
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct FileRef {
    name: String,
    len: u64,
    crc32: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct SegmentRecord {
    id: u64,
    rows: usize,
    vec: FileRef,
    meta: FileRef,
    #[serde(default)]
    hnsw: Vec<FileRef>,
    #[serde(default)]
    hnsw_basename: Option<String>,
    /// Tombstoned rows: removed or replaced files.
    #[serde(default)]
    deleted: Vec<u32>,
}

/// The commit point.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    format: String,
    version: u32,
    generation: u64,
    model: ModelInfo,
    next_segment: u64,
    segments: Vec<SegmentRecord>,
    updated_unix: u64,
    last_run: RunStats,
    #[serde(default)]
    checksum: u32,
}

impl Manifest {
    fn new(model: ModelInfo) -> Self {
        Manifest {
            format: "plip-index".into(),
            version: FORMAT_VERSION,
            generation: 0,
            model,
            next_segment: 1,
            segments: Vec::new(),
            updated_unix: 0,
            last_run: RunStats::default(),
            checksum: 0,
        }
    }

    fn body_crc(&self) -> u32 {
        let mut m = self.clone();
        m.checksum = 0;
        crc32fast::hash(&serde_json::to_vec(&m).expect("manifest serializes"))
    }

    fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoIndex(dir.to_path_buf()))
            }
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&path, format!("not valid JSON: {e}")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some("plip-index") {
            return Err(corrupt(&path, "not a plip index manifest"));
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(StoreError::Incompatible {
                path: dir.to_path_buf(),
                found: version,
                supported: SUPPORTED_VERSIONS,
            });
        }
        let m: Manifest = serde_json::from_value(value)
            .map_err(|e| corrupt(&path, format!("unexpected content: {e}")))?;
        if m.checksum != m.body_crc() {
            return Err(corrupt(&path, "checksum mismatch"));
        }
        Ok(m)
    }

    fn store(&mut self, dir: &Path) -> Result<()> {
        self.generation += 1;
        self.updated_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.checksum = self.body_crc();
        let bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        write_atomic(dir, MANIFEST, &bytes)
    }
}

/// Writes `name` in `dir` atomically: temp file, fsync, rename, fsync the folder.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let ctx = || format!("writing {}", dir.join(name).display());
    {
        let mut f = File::create(&tmp).map_err(io_err(ctx()))?;
        f.write_all(bytes).map_err(io_err(ctx()))?;
        f.sync_all().map_err(io_err(ctx()))?;
    }
    fs::rename(&tmp, dir.join(name)).map_err(io_err(ctx()))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directories cannot be opened for syncing on Windows; rename is durable there.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing folder {}", dir.display())))?;
    Ok(())
}

/// Writes a framed file (magic, version, payload, CRC32 of all before it) and
/// fsyncs it. Returns its reference for the manifest.
fn write_framed(dir: &Path, name: &str, magic: &[u8; 8], payload: &[u8]) -> Result<FileRef> {
    let path = dir.join(name);
    let ctx = || format!("writing {}", path.display());
    let mut head = [0u8; 12];
    head[..8].copy_from_slice(magic);
    head[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(payload);
    let crc = crc.finalize();
    // written in place, not copied into one buffer: a 100k-image segment's
    // payload is 205 MB
    let mut f = File::create(&path).map_err(io_err(ctx()))?;
    for part in [&head[..], payload, &crc.to_le_bytes()] {
        f.write_all(part).map_err(io_err(ctx()))?;
    }
    f.sync_all().map_err(io_err(ctx()))?;
    Ok(FileRef {
        name: name.to_string(),
        len: (head.len() + payload.len() + 4) as u64,
        crc32: crc,
    })
}

/// Reads a framed file and returns its payload after checking length, magic,
/// version and checksum against the manifest's record.
fn read_framed(dir: &Path, r: &FileRef, magic: &[u8; 8]) -> Result<Vec<u8>> {
    let mut payload = Vec::new();
    read_framed_into(dir, r, magic, 1, |len| {
        payload = vec![0u8; len];
        &mut payload
    })?;
    Ok(payload)
}

/// [`read_framed`] for a payload of little-endian f32s, read straight into the
/// vector that holds them: one copy from the page cache instead of three (read,
/// strip the header, convert), which took 0.3 s for a 100k-image segment.
fn read_framed_f32(dir: &Path, r: &FileRef, magic: &[u8; 8]) -> Result<Vec<f32>> {
    let mut values: Vec<f32> = Vec::new();
    read_framed_into(dir, r, magic, 4, |len| {
        values = crate::kernels::zeroed_f32(len / 4);
        bytemuck::cast_slice_mut(&mut values)
    })?;
    if cfg!(target_endian = "big") {
        for v in &mut values {
            *v = f32::from_bits(u32::from_le(v.to_bits()));
        }
    }
    Ok(values)
}

/// A segment's vectors: in memory, or mapped from its `.vec` file.
enum Matrix {
    Owned(Vec<f32>),
    /// `len` f32s at byte `start` of the mapping.
    Mapped {
        map: memmap2::Mmap,
        start: usize,
        len: usize,
    },
}

impl std::ops::Deref for Matrix {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            Matrix::Owned(v) => v,
            // alignment and length were checked when the file was mapped
            Matrix::Mapped { map, start, len } => {
                bytemuck::cast_slice(&map[*start..*start + len * 4])
            }
        }
    }
}

impl AsRef<[f32]> for Matrix {
    fn as_ref(&self) -> &[f32] {
        self
    }
}

/// Maps the framed f32 file `r` and checks it as [`read_framed_into`] does, so
/// that its vectors are used where they lie in the page cache.
///
/// Reading a 100k-image segment (205 MB) into fresh memory had the kernel zero
/// every page first; in a cold `plip search` on this project's VM that zeroing
/// was 36% of all CPU samples. A mapping of the cached file needs neither the
/// zeroing nor the copy. Falls back to reading where the values cannot be used
/// in place (big-endian CPUs, a mapping that fails) and off unix, where a mapped
/// file cannot be deleted, which compaction does to the files it replaces.
fn map_framed_f32(dir: &Path, r: &FileRef, magic: &[u8; 8]) -> Result<Matrix> {
    if cfg!(all(unix, target_endian = "little")) {
        if let Some(m) = try_map(&dir.join(&r.name), r.len) {
            let path = dir.join(&r.name);
            let len = m.len();
            check_header(&path, &m[..12], magic, len - 16, 4)?;
            let stored = u32::from_le_bytes(m[len - 4..].try_into().unwrap());
            check_crc(&path, crc32fast::hash(&m[..len - 4]), stored, r)?;
            if bytemuck::try_cast_slice::<u8, f32>(&m[12..len - 4]).is_ok() {
                return Ok(Matrix::Mapped {
                    map: m,
                    start: 12,
                    len: (len - 16) / 4,
                });
            }
        }
    }
    read_framed_f32(dir, r, magic).map(Matrix::Owned)
}

/// A read-only mapping of `path` when it is `expected_len` (at least 16) bytes
/// long; `None` sends the caller to the reading path, which reports problems.
fn try_map(path: &Path, expected_len: u64) -> Option<memmap2::Mmap> {
    let file = File::open(path).ok()?;
    if file.metadata().ok()?.len() != expected_len || expected_len < 16 {
        return None;
    }
    let mut options = memmap2::MmapOptions::new();
    #[cfg(target_os = "linux")]
    options.populate();
    // SAFETY: segment files are immutable once their manifest is committed:
    // plip writes every segment under a new name and removes old ones only by
    // unlinking, which leaves an existing mapping intact. A file changed in
    // place by something else is outside what any reader can defend against
    // (the checksum, checked just after mapping, catches changes made before).
    let map = unsafe { options.map(&file) }.ok()?;
    (map.len() as u64 == expected_len).then_some(map)
}

/// Reads the framed file `r` (magic, version, payload, CRC32 of all before it),
/// checking length, magic, version and checksum; `buffer(len)` supplies the
/// payload's storage, and `len` is a multiple of `unit`.
fn read_framed_into<'a>(
    dir: &Path,
    r: &FileRef,
    magic: &[u8; 8],
    unit: usize,
    buffer: impl FnOnce(usize) -> &'a mut [u8],
) -> Result<()> {
    let path = dir.join(&r.name);
    let reading = || io_err(format!("reading {}", path.display()));
    let mut file = File::open(&path).map_err(reading())?;
    let len = file.metadata().map_err(reading())?.len();
    if len != r.len {
        return Err(corrupt(
            &path,
            format!("{len} bytes, the manifest says {}", r.len),
        ));
    }
    let mut header = [0u8; 12];
    if len < 16 || file.read_exact(&mut header).is_err() {
        return Err(corrupt(&path, "bad magic"));
    }
    let payload_len = (len - 16) as usize;
    check_header(&path, &header, magic, payload_len, unit)?;
    let payload = buffer(payload_len);
    let mut tail = [0u8; 4];
    // A file that shrinks while we read it is damaged too.
    let read = file
        .read_exact(payload)
        .and_then(|_| file.read_exact(&mut tail));
    if read.is_err() {
        return Err(corrupt(
            &path,
            "shorter than its size (truncated while reading?)",
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(payload);
    check_crc(&path, crc.finalize(), u32::from_le_bytes(tail), r)
}

/// Checks a framed file's 12-byte header (magic, version) and that its payload
/// is a whole number of `unit`-byte values.
fn check_header(
    path: &Path,
    header: &[u8],
    magic: &[u8; 8],
    payload_len: usize,
    unit: usize,
) -> Result<()> {
    if &header[..8] != magic {
        return Err(corrupt(path, "bad magic"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
    if version != FORMAT_VERSION {
        return Err(corrupt(path, format!("unsupported file version {version}")));
    }
    if !payload_len.is_multiple_of(unit) {
        return Err(corrupt(
            path,
            "payload length is not a whole number of values",
        ));
    }
    Ok(())
}

/// Checks a framed file's stored CRC32 against the one computed over it and
/// the manifest's record.
fn check_crc(path: &Path, computed: u32, stored: u32, r: &FileRef) -> Result<()> {
    if stored != computed || stored != r.crc32 {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok(())
}

fn check_file(dir: &Path, r: &FileRef) -> Result<()> {
    let path = dir.join(&r.name);
    let bytes = fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
    if bytes.len() as u64 != r.len || crc32fast::hash(&bytes) != r.crc32 {
        return Err(corrupt(&path, "size or checksum differs from the manifest"));
    }
    Ok(())
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// A loaded segment.
struct Segment {
    record: SegmentRecord,
    /// The vectors, row-major; empty when `ann` holds them.
    vectors: Matrix,
    entries: Vec<FileEntry>,
    deleted: HashSet<u32>,
    ann: Option<AnnGraph>,
}

impl Segment {
    fn load(dir: &Path, record: &SegmentRecord, dim: usize, with_ann: bool) -> Result<Self> {
        let vectors = map_framed_f32(dir, &record.vec, VEC_MAGIC)?;
        if vectors.len() != record.rows * dim {
            return Err(corrupt(
                &dir.join(&record.vec.name),
                "vector count does not match the manifest",
            ));
        }
        let meta = read_framed(dir, &record.meta, META_MAGIC)?;
        let meta_path = dir.join(&record.meta.name);
        let (entries, _): (Vec<FileEntry>, usize) =
            bincode::serde::decode_from_slice(&meta, bincode_config())
                .map_err(|e| corrupt(&meta_path, format!("undecodable metadata: {e}")))?;
        if entries.len() != record.rows {
            return Err(corrupt(
                &meta_path,
                "entry count does not match the manifest",
            ));
        }
        // Indexes written before the single-file `.ann` format list hnsw_rs'
        // three files instead; such a segment is searched exactly, as every
        // segment is by default.
        let current_format = |base: &str| {
            let name = format!("{base}.ann");
            record.hnsw.iter().any(|f| f.name == name)
        };
        let (vectors, ann) = match (&record.hnsw_basename, with_ann) {
            (Some(base), true) if current_format(base) => {
                for f in &record.hnsw {
                    check_file(dir, f)?;
                }
                // the graph file has only a checksum of the vectors; the graph
                // shares them (mapped, they are not copied)
                let shared: ann::SharedVectors = Arc::new(vectors);
                let graph = AnnGraph::load_with_shared_vectors(dir, base, shared)
                    .map_err(|e| corrupt(&dir.join(base), e.to_string()))?;
                if graph.len() != record.rows {
                    return Err(corrupt(
                        &dir.join(base),
                        "graph size does not match the manifest",
                    ));
                }
                (Matrix::Owned(Vec::new()), Some(graph))
            }
            _ => (vectors, None),
        };
        Ok(Segment {
            deleted: record.deleted.iter().copied().collect(),
            record: record.clone(),
            vectors,
            entries,
            ann,
        })
    }

    fn live_rows(&self) -> usize {
        self.record.rows - self.deleted.len()
    }

    /// The segment's vectors, row-major.
    fn vectors(&self) -> &[f32] {
        match &self.ann {
            Some(graph) => graph.vectors(),
            None => &self.vectors,
        }
    }
}

/// The model recorded in the index at `dir`, reading only the manifest.
pub fn recorded_model(dir: &Path) -> Result<ModelInfo> {
    Manifest::load(dir).map(|m| m.model)
}

/// A search result.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexHit {
    /// Cosine similarity to the query.
    pub score: f32,
    /// Path relative to the index root.
    pub path: String,
}

/// A read-only view of the last commit.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    segments: Vec<Segment>,
}

impl Index {
    /// Opens the last commit of the index at `dir`, checking every file except
    /// the HNSW graphs, which are not loaded: every segment is searched exactly.
    ///
    /// This is what a one-shot process wants. Loading a graph costs more than an
    /// exact scan: at 100k images a whole `plip search` took 0.252 s with the
    /// graph (links read and checked, the mapped vectors' CRC32 checked again,
    /// 8-bit codes built) against 0.213 s exact (medians of 10,
    /// `benches/cold_search.rs`); hnsw_rs' own loader had taken 4.1 s. Long-running users with many queries can use
    /// [`Index::open_with_graphs`].
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_impl(dir, false)
    }

    /// Like [`Index::open`], also loading (and checking) the HNSW graph of every
    /// segment that has one, so [`Index::search`] is approximate there.
    pub fn open_with_graphs(dir: &Path) -> Result<Self> {
        Self::open_impl(dir, true)
    }

    fn open_impl(dir: &Path, with_graphs: bool) -> Result<Self> {
        // A writer may commit and delete old segments between our reading the
        // manifest and opening them; re-reading the manifest then finds the new ones.
        let mut attempt = 0;
        loop {
            let manifest = Manifest::load(dir)?;
            let loaded: Result<Vec<Segment>> = manifest
                .segments
                .iter()
                .map(|r| Segment::load(dir, r, manifest.model.dim, with_graphs))
                .collect();
            match loaded {
                Ok(segments) => {
                    return Ok(Index {
                        dir: dir.to_path_buf(),
                        manifest,
                        segments,
                    })
                }
                Err(StoreError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && attempt < 5 =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(StoreError::Io { context, source })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    return Err(corrupt(
                        dir,
                        format!("a file the manifest names is missing: {context}"),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder that stored paths are relative to: the index folder's parent.
    pub fn root(&self) -> PathBuf {
        root_of(&self.dir)
    }

    /// The model that built the index.
    pub fn model(&self) -> &ModelInfo {
        &self.manifest.model
    }

    /// Number of live (searchable) images.
    pub fn len(&self) -> usize {
        self.segments.iter().map(Segment::live_rows).sum()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live entries with their vectors, in segment order.
    pub fn iter(&self) -> impl Iterator<Item = (&FileEntry, &[f32])> {
        let dim = self.manifest.model.dim;
        self.segments.iter().flat_map(move |s| {
            s.entries
                .iter()
                .enumerate()
                .filter(|(i, _)| !s.deleted.contains(&(*i as u32)))
                .map(move |(i, e)| (e, &s.vectors()[i * dim..(i + 1) * dim]))
        })
    }

    /// Top-`k` live entries by cosine to `query` (unit length), best first, ties by
    /// path. `allow` can hide entries by path. `ef` tunes the HNSW search of
    /// segments whose graph was loaded ([`Index::open_with_graphs`]); the others are
    /// searched exactly.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Vec<IndexHit> {
        let dim = self.manifest.model.dim;
        let mut hits = Vec::new();
        for seg in &self.segments {
            let keep = |row: usize| {
                !seg.deleted.contains(&(row as u32))
                    && allow.is_none_or(|f| f(&seg.entries[row].path))
            };
            let found: Vec<Hit> = match &seg.ann {
                Some(graph) if seg.live_rows() >= HNSW_MIN_ROWS => {
                    graph.search(query, k, ef.max(k), Some(&keep))
                }
                _ => ann::exact_search(seg.vectors(), dim, query, k, Some(&keep)),
            };
            hits.extend(found.into_iter().map(|h| IndexHit {
                score: h.score,
                path: seg.entries[h.id].path.clone(),
            }));
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.path.cmp(&b.path))
        });
        hits.truncate(k);
        hits
    }

    /// Facts for `plip info`.
    pub fn stats(&self) -> IndexStats {
        let mut bytes = 0;
        for s in &self.manifest.segments {
            bytes += s.vec.len + s.meta.len + s.hnsw.iter().map(|f| f.len).sum::<u64>();
        }
        bytes += fs::metadata(self.dir.join(MANIFEST))
            .map(|m| m.len())
            .unwrap_or(0);
        IndexStats {
            images: self.len(),
            model: self.manifest.model.clone(),
            segments: self.segments.len(),
            tombstones: self.segments.iter().map(|s| s.deleted.len()).sum(),
            bytes_on_disk: bytes,
            updated_unix: self.manifest.updated_unix,
            generation: self.manifest.generation,
            last_run: self.manifest.last_run.clone(),
        }
    }
}

/// Summary of an index, for `plip info`.
#[derive(Clone, Debug, Serialize)]
pub struct IndexStats {
    /// Live images.
    pub images: usize,
    /// Model that built it.
    pub model: ModelInfo,
    /// Number of segments.
    pub segments: usize,
    /// Rows hidden by tombstones.
    pub tombstones: usize,
    /// Size of all files the manifest names, plus the manifest.
    pub bytes_on_disk: u64,
    /// Time of the last commit, seconds since the epoch.
    pub updated_unix: u64,
    /// Commit counter.
    pub generation: u64,
    /// What the last run did.
    pub last_run: RunStats,
}

/// The folder paths are stored relative to: the index folder's parent.
pub fn root_of(index_dir: &Path) -> PathBuf {
    let abs = std::path::absolute(index_dir).unwrap_or_else(|_| index_dir.to_path_buf());
    abs.parent().map(Path::to_path_buf).unwrap_or(abs)
}

/// Where a live file's vector lives.
#[derive(Clone, Copy, Debug)]
struct Location {
    segment: usize,
    row: usize,
}

/// The single writer of an index: holds the lock, buffers new rows and commits.
pub struct IndexWriter {
    dir: PathBuf,
    manifest: Manifest,
    segments: Vec<Segment>,
    by_path: HashMap<String, Location>,
    pending_entries: Vec<FileEntry>,
    pending_vectors: Vec<f32>,
    stats: RunStats,
    _lock: File,
}

impl IndexWriter {
    /// Opens (creating if needed) the index at `dir` for writing. Takes the lock,
    /// refuses a different model unless `rebuild`, and removes files that no commit
    /// names (leftovers of a crash).
    pub fn open(dir: &Path, model: &ModelInfo, rebuild: bool) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("opening {}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                return Err(StoreError::Locked(dir.to_path_buf(), who));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(format!("locking {}", lock_path.display()))(e))
            }
        }
        let _ = lock.set_len(0);
        let _ = (&lock).write_all(std::process::id().to_string().as_bytes());

        let manifest = match Manifest::load(dir) {
            Ok(m) if rebuild => Manifest {
                next_segment: m.next_segment,
                ..Manifest::new(model.clone())
            },
            Ok(m) => {
                if m.model.fingerprint != model.fingerprint || m.model.dim != model.dim {
                    return Err(StoreError::ModelMismatch {
                        path: dir.to_path_buf(),
                        index_model: m.model.source,
                        model: model.source.clone(),
                    });
                }
                m
            }
            Err(StoreError::NoIndex(_)) => Manifest::new(model.clone()),
            Err(_) if rebuild => Manifest::new(model.clone()),
            Err(e) => return Err(e),
        };
        let segments = manifest
            .segments
            .iter()
            .map(|r| Segment::load(dir, r, manifest.model.dim, false))
            .collect::<Result<Vec<_>>>()?;
        let mut w = IndexWriter {
            dir: dir.to_path_buf(),
            manifest,
            segments,
            by_path: HashMap::new(),
            pending_entries: Vec::new(),
            pending_vectors: Vec::new(),
            stats: RunStats::default(),
            _lock: lock,
        };
        w.rebuild_paths();
        w.remove_unreferenced();
        Ok(w)
    }

    fn rebuild_paths(&mut self) {
        self.by_path.clear();
        for (si, s) in self.segments.iter().enumerate() {
            for (row, e) in s.entries.iter().enumerate() {
                if !s.deleted.contains(&(row as u32)) {
                    self.by_path
                        .insert(e.path.clone(), Location { segment: si, row });
                }
            }
        }
    }

    /// Deletes files in the folder that the current manifest does not name.
    fn remove_unreferenced(&self) {
        let mut keep: HashSet<String> = [MANIFEST, LOCK].iter().map(|s| s.to_string()).collect();
        for s in &self.manifest.segments {
            keep.insert(s.vec.name.clone());
            keep.insert(s.meta.name.clone());
            keep.extend(s.hnsw.iter().map(|f| f.name.clone()));
        }
        let Ok(read) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("seg-") || name.starts_with(&format!(".{MANIFEST}.tmp"));
            if ours && !keep.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The entry currently indexed for `path`, if any.
    pub fn get(&self, path: &str) -> Option<&FileEntry> {
        self.by_path
            .get(path)
            .map(|l| &self.segments[l.segment].entries[l.row])
            .or_else(|| self.pending_entries.iter().rev().find(|e| e.path == path))
    }

    /// Paths of every live entry.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(String::as_str)
    }

    /// Time of the last commit, seconds since the epoch (0 for a new index).
    pub fn committed_unix(&self) -> u64 {
        self.manifest.updated_unix
    }

    /// Tombstones the committed entry for `path`, if any.
    pub fn remove(&mut self, path: &str) -> bool {
        match self.by_path.remove(path) {
            Some(l) => {
                let seg = &mut self.segments[l.segment];
                seg.deleted.insert(l.row as u32);
                true
            }
            None => false,
        }
    }

    /// Queues `entry` with its unit vector; replaces any earlier entry for the path.
    pub fn add(&mut self, entry: FileEntry, vector: &[f32]) {
        assert_eq!(vector.len(), self.manifest.model.dim, "vector size");
        self.remove(&entry.path);
        self.pending_entries.push(entry);
        self.pending_vectors.extend_from_slice(vector);
    }

    /// Rows queued since the last commit.
    pub fn pending(&self) -> usize {
        self.pending_entries.len()
    }

    /// Run statistics, recorded in the manifest at each commit.
    pub fn stats_mut(&mut self) -> &mut RunStats {
        &mut self.stats
    }

    /// Writes queued rows as a new segment and commits the manifest.
    pub fn commit(&mut self) -> Result<()> {
        self.flush_pending()?;
        self.commit_manifest()
    }

    /// Writes queued rows as a new (not yet committed) segment.
    fn flush_pending(&mut self) -> Result<()> {
        if !self.pending_entries.is_empty() {
            let entries = std::mem::take(&mut self.pending_entries);
            let vectors = std::mem::take(&mut self.pending_vectors);
            let seg = self.write_segment(entries, vectors, false)?;
            self.segments.push(seg);
        }
        Ok(())
    }

    fn commit_manifest(&mut self) -> Result<()> {
        for (seg, rec) in self.segments.iter().zip(self.manifest.segments.iter_mut()) {
            let mut d: Vec<u32> = seg.deleted.iter().copied().collect();
            d.sort_unstable();
            rec.deleted = d;
        }
        self.manifest.last_run = self.stats.clone();
        self.manifest.store(&self.dir)?;
        self.rebuild_paths();
        self.remove_unreferenced();
        Ok(())
    }

    fn write_segment(
        &mut self,
        entries: Vec<FileEntry>,
        vectors: Vec<f32>,
        with_ann: bool,
    ) -> Result<Segment> {
        let dim = self.manifest.model.dim;
        let id = self.manifest.next_segment;
        self.manifest.next_segment += 1;
        let base = format!("seg-{id:06}");
        // stored little-endian: on such CPUs the matrix itself, not a copy
        let payload: std::borrow::Cow<[u8]> = if cfg!(target_endian = "little") {
            bytemuck::cast_slice(&vectors).into()
        } else {
            vectors.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        let vec = write_framed(&self.dir, &format!("{base}.vec"), VEC_MAGIC, &payload)?;
        drop(payload);
        let meta_bytes =
            bincode::serde::encode_to_vec(&entries, bincode_config()).expect("entries serialize");
        let meta = write_framed(&self.dir, &format!("{base}.meta"), META_MAGIC, &meta_bytes)?;
        let mut record = SegmentRecord {
            id,
            rows: entries.len(),
            vec,
            meta,
            hnsw: Vec::new(),
            hnsw_basename: None,
            deleted: Vec::new(),
        };
        let mut graph = None;
        let mut vectors = vectors;
        if with_ann && entries.len() >= HNSW_MIN_ROWS {
            let hnsw_base = format!("{base}.hnsw");
            // the graph takes the vectors over: no second copy
            let g = AnnGraph::build_owned(std::mem::take(&mut vectors), dim, &AnnParams::default())
                .map_err(|e| corrupt(&self.dir.join(&hnsw_base), e.to_string()))?;
            let files = g
                .save_links(&self.dir, &hnsw_base)
                .map_err(|e| corrupt(&self.dir.join(&hnsw_base), e.to_string()))?;
            for f in files {
                let bytes = fs::read(&f).map_err(io_err(format!("reading {}", f.display())))?;
                record.hnsw.push(FileRef {
                    name: f.file_name().unwrap().to_string_lossy().into_owned(),
                    len: bytes.len() as u64,
                    crc32: crc32fast::hash(&bytes),
                });
            }
            record.hnsw_basename = Some(hnsw_base);
            graph = Some(g);
        }
        self.manifest.segments.push(record.clone());
        Ok(Segment {
            record,
            vectors: Matrix::Owned(vectors),
            entries,
            deleted: HashSet::new(),
            ann: graph,
        })
    }

    /// Merges segments so the index stays fast: all small segments (no graph) and
    /// any segment more than a quarter tombstoned are rewritten as one, with an
    /// HNSW graph when large enough. Commits.
    pub fn compact(&mut self) -> Result<()> {
        self.flush_pending()?;
        let dim = self.manifest.model.dim;
        let needs =
            |s: &Segment| s.record.hnsw_basename.is_none() || s.deleted.len() * 4 > s.record.rows;
        let merge: Vec<usize> = (0..self.segments.len())
            .filter(|&i| needs(&self.segments[i]))
            .collect();
        let already_single = merge.len() == 1 && self.segments[merge[0]].deleted.is_empty();
        if merge.is_empty() || already_single && self.segments[merge[0]].record.rows < HNSW_MIN_ROWS
        {
            return self.commit_manifest();
        }
        // Sort by path so ids (and therefore tie order) do not depend on history.
        // The rows are gathered by reference, then copied once into the new
        // segment's matrix: the merge holds the vectors twice at most.
        let mut rows: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for &i in &merge {
            let s = &self.segments[i];
            for (row, e) in s.entries.iter().enumerate() {
                if !s.deleted.contains(&(row as u32)) {
                    rows.insert(&e.path, (i, row));
                }
            }
        }
        let mut entries = Vec::with_capacity(rows.len());
        let mut vectors = Vec::with_capacity(rows.len() * dim);
        for &(i, row) in rows.values() {
            let s = &self.segments[i];
            entries.push(s.entries[row].clone());
            vectors.extend_from_slice(&s.vectors()[row * dim..(row + 1) * dim]);
        }
        drop(rows);
        let keep: Vec<usize> = (0..self.segments.len())
            .filter(|i| !merge.contains(i))
            .collect();
        let mut segments: Vec<Segment> = Vec::new();
        let mut records = Vec::new();
        let old = std::mem::take(&mut self.segments);
        for (i, s) in old.into_iter().enumerate() {
            if keep.contains(&i) {
                records.push(self.manifest.segments[i].clone());
                segments.push(s);
            }
        }
        self.manifest.segments = records;
        self.segments = segments;
        if !entries.is_empty() {
            let seg = self.write_segment(entries, vectors, true)?;
            self.segments.push(seg);
        }
        self.commit_manifest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(dim: usize) -> ModelInfo {
        ModelInfo {
            source: "test".into(),
            fingerprint: "fp".into(),
            dim,
        }
    }

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 1,
            mtime_ns: 2,
            crc32: 3,
        }
    }

    fn unit(seed: u32, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|i| ((seed * 31 + i as u32 * 17) % 13) as f32 - 6.0)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn commit_then_open_finds_rows_and_hides_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join(".plip");
        let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
        for i in 0..5 {
            w.add(entry(&format!("img{i}.png")), &unit(i, 8));
        }
        w.commit().unwrap();
        w.remove("img1.png");
        w.add(entry("img2.png"), &unit(40, 8));
        w.commit().unwrap();
        drop(w);
        let index = Index::open(&idx).unwrap();
        // img0, img3, img4 and the replaced img2; img1 is gone.
        assert_eq!(index.len(), 4);
        let hits = index.search(&unit(40, 8), 10, 64, None);
        assert_eq!(hits.len(), 4);
        assert_eq!(hits[0].path, "img2.png");
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        assert!(hits.iter().all(|h| h.path != "img1.png"));
        assert_eq!(hits.iter().filter(|h| h.path == "img2.png").count(), 1);
    }

    #[test]
    fn second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join(".plip");
        let _w = IndexWriter::open(&idx, &model(4), false).unwrap();
        let err = IndexWriter::open(&idx, &model(4), false).err().unwrap();
        assert!(matches!(err, StoreError::Locked(..)), "{err}");
    }

    #[test]
    fn different_model_is_refused_unless_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join(".plip");
        let mut w = IndexWriter::open(&idx, &model(4), false).unwrap();
        w.add(entry("a.png"), &unit(1, 4));
        w.commit().unwrap();
        drop(w);
        let mut other = model(4);
        other.fingerprint = "other".into();
        let err = IndexWriter::open(&idx, &other, false).err().unwrap();
        assert!(matches!(err, StoreError::ModelMismatch { .. }), "{err}");
        let mut w = IndexWriter::open(&idx, &other, true).unwrap();
        w.commit().unwrap();
        drop(w);
        assert_eq!(Index::open(&idx).unwrap().len(), 0);
    }

    #[test]
    fn segment_vectors_are_used_in_place_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join(".plip");
        let mut w = IndexWriter::open(&idx, &model(4), false).unwrap();
        w.add(entry("a.png"), &unit(1, 4));
        w.add(entry("b.png"), &unit(2, 4));
        w.commit().unwrap();
        drop(w);
        let index = Index::open(&idx).unwrap();
        let seg = &index.segments[0];
        if cfg!(all(unix, target_endian = "little")) {
            assert!(matches!(seg.vectors, Matrix::Mapped { .. }));
        }
        let mut want = unit(1, 4);
        want.extend(unit(2, 4));
        assert_eq!(&*seg.vectors, &want[..]);
        drop(index);
        // A damaged header is caught on the mapping path too.
        let vec = idx.join(&manifest_segments(&idx)[0]);
        let mut bytes = fs::read(&vec).unwrap();
        bytes[0] ^= 1;
        fs::write(&vec, &bytes).unwrap();
        let err = Index::open(&idx).err().unwrap();
        assert!(err.to_string().contains("bad magic"), "{err}");
    }

    /// The `.vec` file names of the committed segments.
    fn manifest_segments(idx: &Path) -> Vec<String> {
        Manifest::load(idx)
            .unwrap()
            .segments
            .iter()
            .map(|s| s.vec.name.clone())
            .collect()
    }

    #[test]
    fn corrupt_files_give_errors_that_suggest_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join(".plip");
        let mut w = IndexWriter::open(&idx, &model(4), false).unwrap();
        w.add(entry("a.png"), &unit(1, 4));
        w.commit().unwrap();
        drop(w);
        let vec = fs::read_dir(&idx)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".vec"))
            .unwrap()
            .path();
        let mut bytes = fs::read(&vec).unwrap();
        bytes[14] ^= 0x10;
        fs::write(&vec, &bytes).unwrap();
        let err = Index::open(&idx).err().unwrap();
        assert!(err.to_string().contains("--rebuild"), "{err}");
        fs::write(&vec, &bytes[..10]).unwrap();
        assert!(matches!(
            Index::open(&idx).err().unwrap(),
            StoreError::Corrupt { .. }
        ));
        fs::write(
            idx.join(MANIFEST),
            b"{\"format\":\"plip-index\",\"version\":99}",
        )
        .unwrap();
        assert!(matches!(
            Index::open(&idx).err().unwrap(),
            StoreError::Incompatible { .. }
        ));
        fs::write(idx.join(MANIFEST), b"garbage").unwrap();
        assert!(matches!(
            Index::open(&idx).err().unwrap(),
            StoreError::Corrupt { .. }
        ));
    }

    #[test]
    fn graph_segments_store_links_only_and_search_like_exact() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join(".plip");
        let dim = 8;
        let mut w = IndexWriter::open(&idx, &model(dim), false).unwrap();
        let n = HNSW_MIN_ROWS as u32 + 50;
        for i in 0..n {
            w.add(entry(&format!("{i:04}.png")), &unit(i * 7 + 1, dim));
        }
        w.commit().unwrap();
        w.compact().unwrap();
        w.remove("0003.png");
        w.commit().unwrap();
        drop(w);
        let exact = Index::open(&idx).unwrap();
        let graphs = Index::open_with_graphs(&idx).unwrap();
        let seg = &graphs.segments[0];
        assert!(seg.ann.is_some(), "compaction built a graph");
        assert!(
            seg.vectors.is_empty(),
            "vectors are held once, by the graph"
        );
        let base = seg.record.hnsw_basename.as_deref().unwrap();
        assert!(
            AnnGraph::load(&idx, base).is_err(),
            "the graph file holds no copy of the vectors"
        );
        for q in 0..20 {
            let query = unit(q * 5 + 3, dim);
            let want = exact.search(&query, 10, 64, None);
            assert_eq!(graphs.search(&query, 10, 64, None), want);
            assert!(want.iter().all(|h| h.path != "0003.png"));
        }
    }

    #[test]
    fn compaction_keeps_results_and_drops_dead_files() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join(".plip");
        let mut w = IndexWriter::open(&idx, &model(8), false).unwrap();
        for i in 0..6 {
            w.add(entry(&format!("{i}.png")), &unit(i, 8));
            w.commit().unwrap();
        }
        w.remove("3.png");
        w.commit().unwrap();
        let before = Index::open(&idx).unwrap().search(&unit(2, 8), 10, 64, None);
        w.compact().unwrap();
        drop(w);
        let index = Index::open(&idx).unwrap();
        assert_eq!(index.stats().segments, 1);
        assert_eq!(index.search(&unit(2, 8), 10, 64, None), before);
        let files = fs::read_dir(&idx).unwrap().count();
        assert_eq!(files, 4, "MANIFEST, lock, one .vec, one .meta");
    }
}
