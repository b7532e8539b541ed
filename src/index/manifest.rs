//! The manifest: the index's single commit point. It names every segment file
//! with its length and CRC32, the model that built the index and the last run's
//! counts; it is replaced atomically, so a reader sees one commit or the next.

use super::*;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub(crate) name: String,
    pub(crate) len: u64,
    pub(crate) crc32: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SegmentRecord {
    pub(crate) id: u64,
    pub(crate) rows: usize,
    pub(crate) vec: FileRef,
    pub(crate) meta: FileRef,
    #[serde(default)]
    pub(crate) hnsw: Vec<FileRef>,
    #[serde(default)]
    pub(crate) hnsw_basename: Option<String>,
    /// Tombstoned rows: removed or replaced files.
    #[serde(default)]
    pub(crate) deleted: Vec<u32>,
    /// The rows' slide regions (`region.rs`), when any row is a tile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) regions: Option<FileRef>,
    /// The precision that embedded the rows (`bf16`, or `mixed` after a
    /// compaction across precisions); absent for f32, as in every segment
    /// written before it was recorded (see `precision.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) precision: Option<String>,
}

/// The commit point.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) generation: u64,
    pub(crate) model: ModelInfo,
    pub(crate) next_segment: u64,
    pub(crate) segments: Vec<SegmentRecord>,
    pub(crate) updated_unix: u64,
    pub(crate) last_run: RunStats,
    #[serde(default)]
    pub(crate) checksum: u32,
    /// The folders indexed so far, relative to the index's root: what a plain
    /// `plip index` re-scans. Absent in indexes written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) roots: Vec<String>,
    /// How slides are tiled (absent until a slide is indexed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tiling: Option<Tiling>,
    /// `--tissue-mask DIR`: the folder (absolute) of the users' own tissue masks that
    /// later runs keep using; absent when tissue is detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tissue_masks: Option<String>,
    /// What the runs found in each indexed slide, by stored path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) slides: BTreeMap<String, SlideRecord>,
}

impl Manifest {
    pub(crate) fn new(model: ModelInfo) -> Self {
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
            roots: Vec::new(),
            tiling: None,
            tissue_masks: None,
            slides: BTreeMap::new(),
        }
    }

    /// Every file this commit names.
    pub(crate) fn file_names(&self) -> HashSet<String> {
        let mut names = HashSet::new();
        for s in &self.segments {
            names.insert(s.vec.name.clone());
            names.insert(s.meta.name.clone());
            names.extend(s.hnsw.iter().map(|f| f.name.clone()));
            names.extend(s.regions.iter().map(|f| f.name.clone()));
        }
        names
    }

    fn body_crc(&self) -> u32 {
        let mut m = self.clone();
        m.checksum = 0;
        crc32fast::hash(&serde_json::to_vec(&m).expect("manifest serializes"))
    }

    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoIndex(dir.to_path_buf()))
            }
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        Self::parse(dir, &path, &bytes)
    }

    /// The manifest in `bytes` (read from `path`, in index `dir`), with every check
    /// of [`Manifest::load`].
    fn parse(dir: &Path, path: &Path, bytes: &[u8]) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(path, format!("not valid JSON: {e}")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some("plip-index") {
            return Err(corrupt(path, "not a plip index manifest"));
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
            .map_err(|e| corrupt(path, format!("unexpected content: {e}")))?;
        if m.checksum != m.body_crc() {
            return Err(corrupt(path, "checksum mismatch"));
        }
        Ok(m)
    }

    pub(crate) fn store(&mut self, dir: &Path) -> Result<()> {
        self.generation += 1;
        self.updated_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.checksum = self.body_crc();
        let bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        // Only a manifest that reads back is committed: serde_json writes a NaN as
        // `null`, which would make the index unreadable (issue 27). The old manifest
        // stays in place.
        if let Err(e) = Self::parse(dir, &dir.join(MANIFEST), &bytes) {
            self.generation -= 1;
            return Err(StoreError::RefusedCommit {
                path: dir.join(MANIFEST),
                reason: e.to_string(),
            });
        }
        write_atomic(dir, MANIFEST, &bytes)
    }
}
