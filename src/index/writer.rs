//! The single writer of an index: holds the lock, buffers new rows, writes each
//! batch as a new segment and commits it through the manifest, tombstones
//! replaced rows, and compacts small segments into one (with a graph when large).

use super::*;

/// Where a live file's vector lives.
#[derive(Clone, Copy, Debug)]
struct Location {
    segment: usize,
    pub(crate) row: usize,
}

/// The single writer of an index: holds the lock, buffers new rows and commits.
pub struct IndexWriter {
    dir: PathBuf,
    manifest: Manifest,
    pub(crate) segments: Vec<Segment>,
    /// Live items by path, then region (`None` for a whole file).
    by_path: HashMap<String, HashMap<Option<RegionKey>, Location>>,
    pending_entries: Vec<FileEntry>,
    pending_vectors: Vec<f32>,
    pub(crate) stats: RunStats,
    /// Segments of at least this many rows get a graph when compacted.
    hnsw_min_rows: usize,
    /// The precision new rows are embedded in, recorded in their segments.
    precision: crate::backend::cpu::Precision,
    _lock: File,
}

impl IndexWriter {
    /// Opens (creating if needed) the index at `dir` for writing. Refuses a folder
    /// that holds anything but a plip index ([`check_index_folder`]), takes the
    /// lock, refuses a different model unless `rebuild`, and removes plip's own
    /// files that the last commit does not name (leftovers of a crash).
    ///
    /// With `rebuild`, the previous commit stays on disk, and searchable, until
    /// the new index's first commit replaces it.
    pub fn open(dir: &Path, model: &ModelInfo, rebuild: bool) -> Result<Self> {
        check_index_folder(dir)?;
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock = take_lock(dir, true)?.expect("created when missing");

        let on_disk = Manifest::load(dir);
        // Files the last commit names: kept until a new commit replaces it. When
        // that manifest cannot be read (a rebuild over a damaged index), nothing
        // is removed before the first commit.
        let committed = on_disk.as_ref().ok().map(Manifest::file_names);
        let manifest = match on_disk {
            // Generations and segment ids keep growing across a rebuild.
            Ok(m) if rebuild => Manifest {
                next_segment: m.next_segment,
                generation: m.generation,
                ..Manifest::new(model.clone())
            },
            Ok(m) => {
                check_model(dir, &m.model, model)?;
                m
            }
            Err(StoreError::NoIndex(_)) => Manifest::new(model.clone()),
            Err(_) if rebuild => Manifest::new(model.clone()),
            Err(e) => return Err(e),
        };
        let mut manifest = manifest;
        // Segment names are never reused, not even after a rebuild over a damaged
        // manifest: a reader may still map a file of the old commit.
        manifest.next_segment = manifest.next_segment.max(next_free_segment(dir));
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
            hnsw_min_rows: hnsw_min_rows(),
            precision: Default::default(),
            _lock: lock,
        };
        w.rebuild_paths();
        if let Some(keep) = committed {
            remove_unreferenced(&w.dir, &keep);
        }
        Ok(w)
    }

    fn rebuild_paths(&mut self) {
        self.by_path.clear();
        for (si, s) in self.segments.iter().enumerate() {
            for (row, e) in s.entries.iter().enumerate() {
                if !s.deleted.contains(&(row as u32)) {
                    self.by_path
                        .entry(e.path.clone())
                        .or_default()
                        .insert(e.region.map(|r| r.key()), Location { segment: si, row });
                }
            }
        }
    }

    /// The folders indexed so far, relative to the index's root.
    pub(crate) fn roots(&self) -> &[String] {
        &self.manifest.roots
    }

    /// Records a folder (relative to the index's root) as indexed; a folder
    /// under one already recorded adds nothing, one above replaces those under it.
    pub(crate) fn add_root(&mut self, root: &str) {
        let roots = &mut self.manifest.roots;
        if roots.iter().any(|r| paths::is_under(root, r)) {
            return;
        }
        roots.retain(|r| !paths::is_under(r, root));
        roots.push(root.to_string());
        roots.sort();
    }

    /// The index folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry of a file, or one of the tiles of a slide (they all carry the
    /// slide file's facts).
    pub fn get(&self, path: &str) -> Option<&FileEntry> {
        self.by_path
            .get(path)
            .and_then(|m| {
                m.get(&None)
                    .or_else(|| m.values().min_by_key(|l| (l.segment, l.row)))
            })
            .map(|l| &self.segments[l.segment].entries[l.row])
            .or_else(|| self.pending_entries.iter().rev().find(|e| e.path == path))
    }

    /// Paths of every live entry.
    /// Paths of every live entry, and of slides recorded without any tile.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let tileless = self
            .manifest
            .slides
            .keys()
            .filter(|k| !self.by_path.contains_key(*k));
        self.by_path.keys().chain(tileless).map(String::as_str)
    }

    /// Time of the last commit, seconds since the epoch (0 for a new index).
    /// Sets the graph threshold of this writer (tests).
    #[cfg(test)]
    pub(crate) fn set_hnsw_min_rows(&mut self, n: usize) {
        self.hnsw_min_rows = n;
    }

    /// The generation of the last commit (0 before the first).
    pub(crate) fn generation(&self) -> u64 {
        self.manifest.generation
    }

    pub fn committed_unix(&self) -> u64 {
        self.manifest.updated_unix
    }

    /// Tombstones the committed entries for `path` (a file, or every tile of a
    /// slide, whose record goes too), if any.
    pub fn remove(&mut self, path: &str) -> bool {
        self.manifest.slides.remove(path);
        match self.by_path.remove(path) {
            Some(items) => {
                for l in items.into_values() {
                    self.segments[l.segment].deleted.insert(l.row as u32);
                }
                true
            }
            None => false,
        }
    }

    /// Tombstones one tile of a slide (at the next commit, like every removal).
    pub(crate) fn remove_region(&mut self, path: &str, region: RegionKey) {
        self.remove_item(path, Some(region));
    }

    /// Tombstones the committed entry for `path` and `region` only.
    fn remove_item(&mut self, path: &str, region: Option<RegionKey>) {
        if let Some(items) = self.by_path.get_mut(path) {
            if let Some(l) = items.remove(&region) {
                self.segments[l.segment].deleted.insert(l.row as u32);
            }
            if items.is_empty() {
                self.by_path.remove(path);
            }
        }
    }

    /// The regions of `path` committed so far (a slide's tiles).
    pub(crate) fn regions_of(&self, path: &str) -> HashSet<RegionKey> {
        self.by_path
            .get(path)
            .map(|m| m.keys().flatten().copied().collect())
            .unwrap_or_default()
    }

    /// What the runs recorded about the slide at `path`.
    pub(crate) fn slide_record(&self, path: &str) -> Option<&SlideRecord> {
        self.manifest.slides.get(path)
    }

    /// Records (at the next commit) what this run found in a slide.
    pub(crate) fn set_slide_record(&mut self, path: &str, record: SlideRecord) {
        self.manifest.slides.insert(path.to_string(), record);
    }

    /// The tiling recorded in the index, if a slide was ever indexed.
    pub(crate) fn tiling(&self) -> Option<Tiling> {
        self.manifest.tiling
    }

    /// The users' tissue mask folder recorded in the index (`--tissue-mask`).
    pub(crate) fn tissue_masks(&self) -> Option<&str> {
        self.manifest.tissue_masks.as_deref()
    }

    /// Records the users' tissue mask folder (`None`: detect tissue).
    pub(crate) fn set_tissue_masks(&mut self, dir: Option<String>) {
        self.manifest.tissue_masks = dir;
    }

    /// Records the tiling this index's slides are cut with.
    pub(crate) fn set_tiling(&mut self, tiling: Tiling) {
        self.manifest.tiling = Some(tiling);
    }

    /// Queues `entry` with its unit vector; replaces any earlier entry for the same
    /// path and region.
    pub fn add(&mut self, entry: FileEntry, vector: &[f32]) {
        assert_eq!(vector.len(), self.manifest.model.dim, "vector size");
        self.remove_item(&entry.path, entry.region.map(|r| r.key()));
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
    /// Records `precision` (the embedder's) in the segments this writer
    /// writes; f32 unless set.
    pub fn with_precision(mut self, precision: crate::backend::cpu::Precision) -> Self {
        self.precision = precision;
        self
    }

    pub fn commit(&mut self) -> Result<()> {
        self.flush_pending()?;
        self.commit_manifest()
    }

    /// Writes queued rows as a new (not yet committed) segment.
    fn flush_pending(&mut self) -> Result<()> {
        if !self.pending_entries.is_empty() {
            let entries = std::mem::take(&mut self.pending_entries);
            let vectors = std::mem::take(&mut self.pending_vectors);
            let precision = record_label(self.precision);
            let seg = self.write_segment(entries, vectors, false, precision)?;
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
        self.manifest.last_run = RunStats {
            skipped: Vec::new(),
            skipped_count: self.stats.skipped.len(),
            ..self.stats.clone()
        };
        self.manifest.store(&self.dir)?;
        // Not part of the commit point: a crash here loses only the list.
        if let Ok(bytes) = serde_json::to_vec(&self.stats.skipped) {
            let _ = write_atomic(&self.dir, LAST_RUN, &bytes);
        }
        self.rebuild_paths();
        remove_unreferenced(&self.dir, &self.manifest.file_names());
        Ok(())
    }

    fn write_segment(
        &mut self,
        entries: Vec<FileEntry>,
        vectors: Vec<f32>,
        with_ann: bool,
        precision: Option<String>,
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
        let regions = write_regions(&self.dir, &base, &entries)?;
        let mut record = SegmentRecord {
            id,
            rows: entries.len(),
            vec,
            meta,
            hnsw: Vec::new(),
            hnsw_basename: None,
            deleted: Vec::new(),
            regions,
            precision,
        };
        let mut graph = None;
        let mut vectors = vectors;
        if with_ann && entries.len() >= self.hnsw_min_rows {
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
        // Commit what is pending first: should the compaction fail (a full
        // disk), the rows embedded since the last commit are kept.
        if self.pending() > 0 {
            self.commit()?;
        }
        let dim = self.manifest.model.dim;
        let needs =
            |s: &Segment| s.record.hnsw_basename.is_none() || s.deleted.len() * 4 > s.record.rows;
        let merge: Vec<usize> = (0..self.segments.len())
            .filter(|&i| needs(&self.segments[i]))
            .collect();
        let already_single = merge.len() == 1 && self.segments[merge[0]].deleted.is_empty();
        if merge.is_empty()
            || already_single && self.segments[merge[0]].record.rows < self.hnsw_min_rows
        {
            return self.commit_manifest();
        }
        // Sort by path so ids (and therefore tie order) do not depend on history.
        // The rows are gathered by reference, then copied once into the new
        // segment's matrix: the merge holds the vectors twice at most.
        let mut rows: BTreeMap<(&str, Option<RegionKey>), (usize, usize)> = BTreeMap::new();
        for &i in &merge {
            let s = &self.segments[i];
            for (row, e) in s.entries.iter().enumerate() {
                if !s.deleted.contains(&(row as u32)) {
                    rows.insert((&e.path, e.region.map(|r| r.key())), (i, row));
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
        let precision = merged_label(
            merge
                .iter()
                .map(|&i| &self.segments[i])
                .filter(|s| s.record.rows > s.deleted.len())
                .map(|s| segment_label(&s.record)),
        );
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
            let seg = self.write_segment(entries, vectors, true, precision)?;
            self.segments.push(seg);
        }
        self.commit_manifest()
    }
}
