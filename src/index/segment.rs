//! A segment: an immutable set of rows (entries and vectors) with its tombstones
//! and, when large, its HNSW graph. Written once, never modified in place.

use super::*;

/// A loaded segment.
pub(crate) struct Segment {
    pub(crate) record: SegmentRecord,
    /// The vectors, row-major; empty when `ann` holds them.
    pub(crate) vectors: Matrix,
    pub(crate) entries: Vec<FileEntry>,
    pub(crate) deleted: HashSet<u32>,
    pub(crate) ann: Option<AnnGraph>,
}

impl Segment {
    pub(crate) fn load(
        dir: &Path,
        record: &SegmentRecord,
        dim: usize,
        with_ann: bool,
    ) -> Result<Self> {
        let vectors = map_framed_f32(dir, &record.vec, VEC_MAGIC)?;
        if vectors.len() != record.rows * dim {
            return Err(corrupt(
                &dir.join(&record.vec.name),
                "vector count does not match the manifest",
            ));
        }
        let meta = read_framed(dir, &record.meta, META_MAGIC)?;
        let meta_path = dir.join(&record.meta.name);
        let (mut entries, _): (Vec<FileEntry>, usize) =
            bincode::serde::decode_from_slice(&meta, bincode_config())
                .map_err(|e| corrupt(&meta_path, format!("undecodable metadata: {e}")))?;
        if entries.len() != record.rows {
            return Err(corrupt(
                &meta_path,
                "entry count does not match the manifest",
            ));
        }
        if let Some(r) = &record.regions {
            read_regions(dir, r, &mut entries)?;
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
        if let Some(bad) = record.deleted.iter().find(|&&d| d as usize >= record.rows) {
            return Err(corrupt(
                &dir.join(MANIFEST),
                format!(
                    "tombstone {bad} of {} is past its {} rows",
                    record.vec.name, record.rows
                ),
            ));
        }
        Ok(Segment {
            deleted: record.deleted.iter().copied().collect(),
            record: record.clone(),
            vectors,
            entries,
            ann,
        })
    }

    pub(crate) fn live_rows(&self) -> usize {
        self.record.rows - self.deleted.len()
    }

    /// The segment's vectors, row-major.
    pub(crate) fn vectors(&self) -> &[f32] {
        match &self.ann {
            Some(graph) => graph.vectors(),
            None => &self.vectors,
        }
    }
}
