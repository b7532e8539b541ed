//! Opening a committed index for search: every segment's files are checked
//! against the manifest, vectors are mapped from the page cache, and a search
//! merges the hits of every segment.

use rayon::prelude::*;

use super::*;

/// The model recorded in the index at `dir`, reading only the manifest.
pub(crate) fn recorded_model(dir: &Path) -> Result<ModelInfo> {
    Manifest::load(dir).map(|m| m.model)
}

/// The rows (tombstoned ones included) of the index at `dir`, reading only the
/// manifest.
pub(crate) fn recorded_rows(dir: &Path) -> Result<usize> {
    Manifest::load(dir).map(|m| m.segments.iter().map(|s| s.rows).sum())
}

/// Hides stored paths from a search (`--under`), one per query of
/// [`Index::search_many`].
pub(crate) type PathFilter<'a> = Option<&'a (dyn Fn(&str) -> bool + Sync)>;

/// A search result.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexHit {
    /// Cosine similarity to the query.
    pub score: f32,
    /// Path relative to the index root.
    pub path: String,
    /// The slide region, for a tile of a whole slide.
    pub region: Option<Region>,
}

/// A read-only view of the last commit.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    pub(crate) segments: Vec<Segment>,
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

    /// Which commit this is: the manifest's generation and checksum (an export
    /// resumes only over the same commit).
    pub(crate) fn commit_id(&self) -> (u64, u32) {
        (self.manifest.generation, self.manifest.checksum)
    }

    /// The model that built the index.
    pub fn model(&self) -> &ModelInfo {
        &self.manifest.model
    }

    /// What the runs recorded about each indexed slide, by stored path.
    pub(crate) fn slides(&self) -> &BTreeMap<String, SlideRecord> {
        &self.manifest.slides
    }

    /// The users' tissue mask folder recorded by `plip index --tissue-mask`.
    pub(crate) fn tissue_masks(&self) -> Option<&str> {
        self.manifest.tissue_masks.as_deref()
    }

    /// The tiling the index's slides were cut with, if it has slides.
    pub(crate) fn tiling(&self) -> Option<Tiling> {
        self.manifest.tiling
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
        self.search_many(&[query], k, ef, &[allow])
            .pop()
            .unwrap_or_default()
    }

    /// [`Index::search`] for several queries at once, with a path filter each: the
    /// exactly searched segments are scanned once for all of them
    /// ([`ann::exact_search_many`]). Result `i` equals `search(queries[i], .., allow[i])`.
    pub(crate) fn search_many(
        &self,
        queries: &[&[f32]],
        k: usize,
        ef: usize,
        allow: &[PathFilter<'_>],
    ) -> Vec<Vec<IndexHit>> {
        assert_eq!(queries.len(), allow.len(), "one filter per query");
        let dim = self.manifest.model.dim;
        let mut all: Vec<Vec<IndexHit>> = queries.iter().map(|_| Vec::new()).collect();
        for seg in &self.segments {
            let keeps: Vec<_> = allow
                .iter()
                .map(|allow| {
                    move |row: usize| {
                        !seg.deleted.contains(&(row as u32))
                            && allow.is_none_or(|f| f(&seg.entries[row].path))
                    }
                })
                .collect();
            let found: Vec<Vec<Hit>> = match &seg.ann {
                // Graphs exist only for segments that were large enough. The
                // queries walk the graph in parallel (a slide query's mosaic is
                // hundreds of them); each search is unchanged.
                Some(graph) => queries
                    .par_iter()
                    .zip(keeps.par_iter())
                    .map(|(q, keep)| graph.search(q, k, ef.max(k), Some(keep)))
                    .collect(),
                _ => {
                    let filters: Vec<ann::RowFilter<'_>> = keeps
                        .iter()
                        .map(|f| Some(f as &(dyn Fn(usize) -> bool + Sync)))
                        .collect();
                    ann::exact_search_many(seg.vectors(), dim, queries, k, &filters)
                }
            };
            for (hits, found) in all.iter_mut().zip(found) {
                hits.extend(found.into_iter().map(|h| IndexHit {
                    score: h.score,
                    path: seg.entries[h.id].path.clone(),
                    region: seg.entries[h.id].region,
                }));
            }
        }
        for hits in &mut all {
            hits.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| a.path.cmp(&b.path))
                    .then_with(|| a.region.map(|r| r.key()).cmp(&b.region.map(|r| r.key())))
            });
            hits.truncate(k);
        }
        all
    }

    /// Facts for `plip info`.
    pub fn stats(&self) -> IndexStats {
        let mut bytes = 0;
        for s in &self.manifest.segments {
            bytes += s.vec.len
                + s.meta.len
                + s.hnsw.iter().map(|f| f.len).sum::<u64>()
                + s.regions.as_ref().map_or(0, |f| f.len);
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
            last_run: self.last_run(),
            precision: index_precision(&self.segments),
        }
    }

    /// The last run's counts, with its list of skipped files (from
    /// [`LAST_RUN`], or from the manifest of an index written before it).
    fn last_run(&self) -> RunStats {
        let mut run = self.manifest.last_run.clone();
        if let Some(list) = fs::read(self.dir.join(LAST_RUN))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<Skipped>>(&b).ok())
        {
            if list.len() == run.skipped_count {
                run.skipped = list;
            }
        }
        run.skipped_count = run.skipped_count.max(run.skipped.len());
        run
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
    /// The precision of the live rows: `f32`, `bf16`, `mixed` or `none`.
    pub precision: String,
}

/// The folder paths are stored relative to: the index folder's parent.
pub(crate) fn root_of(index_dir: &Path) -> PathBuf {
    // Canonical, as the walked image paths are, so that both agree on the
    // prefix even when the index's path goes through a symbolic link.
    let abs = index_dir
        .canonicalize()
        .or_else(|_| std::path::absolute(index_dir))
        .unwrap_or_else(|_| index_dir.to_path_buf());
    abs.parent().map(Path::to_path_buf).unwrap_or(abs)
}
