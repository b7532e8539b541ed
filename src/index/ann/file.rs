//! The graph's file, `{basename}.ann`, in the index's checked-file container
//! (`crate::index::CheckedWriter`), little-endian:
//!
//! ```text
//! magic "PLIPANN\0" | version u32 = 1 | flags u32 (bit 0: parallel_insert,
//!                                                    bit 1: vectors kept elsewhere)
//! n u64 | dim u64 | max_connections u64 | ef_construction u64
//! entry u64 | levels u64 (number of upper layers)
//! layer 0:      offsets (n+1) x u64 | targets offsets[n] x u32
//! layer 1..=levels: count u64 | nodes count x u32
//!               | offsets (count+1) x u64 | targets x u32
//! vectors       n x dim x f32, or with flag bit 1 the crc32 u32 of their
//!               little-endian bytes (the caller stores them, see
//!               `AnnGraph::save_links`)
//! crc32 u32 of all bytes before it
//! ```
//!
//! It is written atomically (`crate::index::write_atomic_with`): readers see the
//! old or the new graph, never a mix. Loading checks every count against the
//! bytes left before allocating, and never panics on a damaged file.

use super::*;
use crate::index::CheckedWriter;

const FILE_SUFFIX: &str = ".ann";
const MAGIC: &[u8; 8] = b"PLIPANN\0";
const VERSION: u32 = 1;
/// Bit of the flags word: built with [`AnnParams::parallel_insert`].
const FLAG_PARALLEL_INSERT: u32 = 1;
/// Bit of the flags word: the file holds a checksum of the vectors instead of
/// the vectors ([`AnnGraph::save_links`]).
const FLAG_EXTERNAL_VECTORS: u32 = 2;

/// CRC32 of the vectors as stored (little-endian f32).
fn vectors_crc(vectors: &[f32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for chunk in vectors.chunks(8192) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        h.update(&bytes);
    }
    h.finalize()
}

fn check_basename(basename: &str) -> Result<(), AnnError> {
    let bad = basename.is_empty()
        || basename.starts_with('.')
        || basename
            .chars()
            .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control());
    if bad {
        return Err(AnnError::InvalidPath(format!(
            "index basename {basename:?} must be a plain, non-hidden file name"
        )));
    }
    Ok(())
}

/// The index's checked-file writer, with the graph's number encodings.
struct CrcWriter {
    w: CheckedWriter,
}

impl CrcWriter {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.put(b)
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    /// Writes a slice of plain numbers through a small byte buffer.
    fn all<T: Copy, const N: usize>(&mut self, v: &[T], enc: fn(T) -> [u8; N]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(N * 8192);
        for chunk in v.chunks(8192) {
            buf.clear();
            for &x in chunk {
                buf.extend_from_slice(&enc(x));
            }
            self.put(&buf)?;
        }
        Ok(())
    }
    fn csr(&mut self, c: &Csr) -> io::Result<()> {
        self.all(&c.offsets, u64::to_le_bytes)?;
        self.all(&c.targets, u32::to_le_bytes)
    }
}

impl AnnGraph {
    /// Writes the graph to `dir/{basename}.ann` and returns that path (the
    /// only file written), after fsyncing it and `dir`.
    ///
    /// The file is written under a temporary name in `dir`
    /// (`.{basename}.ann.tmp-*`, removed on error, left behind only by a
    /// crash) and renamed into place, so an existing index with that name is
    /// replaced atomically. Concurrent saves to the same name must be
    /// serialized by the caller (the last rename wins).
    pub fn save(&self, dir: &Path, basename: &str) -> Result<Vec<PathBuf>, AnnError> {
        self.save_as(dir, basename, false)
    }

    /// Like [`AnnGraph::save`], but the file keeps only a CRC32 of the vectors,
    /// not the vectors: for callers that store them anyway (the index's segment
    /// files), so that they are not on disk twice. Load it with
    /// [`AnnGraph::load_with_vectors`].
    pub fn save_links(&self, dir: &Path, basename: &str) -> Result<Vec<PathBuf>, AnnError> {
        self.save_as(dir, basename, true)
    }

    fn save_as(
        &self,
        dir: &Path,
        basename: &str,
        external_vectors: bool,
    ) -> Result<Vec<PathBuf>, AnnError> {
        check_basename(basename)?;
        if !dir.is_dir() {
            return Err(AnnError::InvalidPath(format!(
                "{} is not an existing directory",
                dir.display()
            )));
        }
        let name = format!("{basename}{FILE_SUFFIX}");
        let path = dir.join(&name);
        crate::index::write_atomic_with(dir, &name, |tmp| self.write_file(tmp, external_vectors))
            .map_err(|e| io_err(&path, e))?;
        Ok(vec![path])
    }

    fn write_file(&self, tmp: &Path, external_vectors: bool) -> io::Result<()> {
        let mut w = CrcWriter {
            w: CheckedWriter::create_new(tmp, MAGIC, VERSION)?,
        };
        let mut flags = 0;
        if self.params.parallel_insert {
            flags |= FLAG_PARALLEL_INSERT;
        }
        if external_vectors {
            flags |= FLAG_EXTERNAL_VECTORS;
        }
        w.u32(flags)?;
        for v in [
            self.len(),
            self.dim,
            self.params.max_connections,
            self.params.ef_construction,
            self.entry as usize,
            self.upper.len(),
        ] {
            w.u64(v as u64)?;
        }
        w.csr(&self.base)?;
        for layer in &self.upper {
            w.u64(layer.nodes.len() as u64)?;
            w.all(&layer.nodes, u32::to_le_bytes)?;
            w.csr(&layer.adj)?;
        }
        if external_vectors {
            w.u32(vectors_crc(&self.vectors))?;
        } else {
            w.all(&self.vectors, f32::to_le_bytes)?;
        }
        w.w.finish().map(|_| ())
    }

    /// Loads a graph written by [`AnnGraph::save`] from `dir/{basename}.ann`.
    ///
    /// Every count is checked against the bytes left before anything is
    /// allocated, every id and offset is range-checked, the vectors must be
    /// finite and the CRC32 must match: damaged files give
    /// [`AnnError::Corrupt`], a missing file [`AnnError::Missing`].
    pub fn load(dir: &Path, basename: &str) -> Result<AnnGraph, AnnError> {
        Self::load_impl(dir, basename, None)
    }

    /// Loads a graph written by [`AnnGraph::save_links`] (or [`AnnGraph::save`])
    /// over `vectors`, the row-major matrix it was built from: their count and
    /// CRC32 (or, for a self-contained file, their values) must match the
    /// file's, else [`AnnError::Corrupt`].
    pub fn load_with_vectors(
        dir: &Path,
        basename: &str,
        vectors: Vec<f32>,
    ) -> Result<AnnGraph, AnnError> {
        Self::load_impl(dir, basename, Some(Vectors::Owned(vectors)))
    }

    /// [`AnnGraph::load_with_vectors`] over vectors the graph shares with
    /// their owner instead of copying them: an index segment's mapped file.
    pub fn load_with_shared_vectors(
        dir: &Path,
        basename: &str,
        vectors: SharedVectors,
    ) -> Result<AnnGraph, AnnError> {
        Self::load_impl(dir, basename, Some(Vectors::Shared(vectors)))
    }

    fn load_impl(
        dir: &Path,
        basename: &str,
        vectors: Option<Vectors>,
    ) -> Result<AnnGraph, AnnError> {
        check_basename(basename)?;
        let path = dir.join(format!("{basename}{FILE_SUFFIX}"));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AnnError::Missing(path)),
            Err(e) => return Err(io_err(&path, e)),
        };
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        let mut r = Checked {
            r: BufReader::with_capacity(1 << 20, file),
            path: path.clone(),
            pos: 0,
            // the trailing CRC is read separately
            len: len.saturating_sub(4),
            crc: crc32fast::Hasher::new(),
        };
        if len < 4 {
            return Err(corrupt(&path, "file too short"));
        }
        let graph = read_graph(&mut r, vectors)?;
        if r.pos != r.len {
            return Err(r.bad("trailing bytes"));
        }
        let mut tail = [0u8; 4];
        r.r.read_exact(&mut tail).map_err(|e| io_err(&path, e))?;
        if u32::from_le_bytes(tail) != r.crc.clone().finalize() {
            return Err(corrupt(&path, "checksum mismatch"));
        }
        Ok(graph)
    }
}

/// Reader that bounds every read by the file length and hashes what it
/// reads.
struct Checked {
    r: BufReader<File>,
    path: PathBuf,
    pos: u64,
    pub(crate) len: u64,
    crc: crc32fast::Hasher,
}

impl Checked {
    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn bad(&self, what: impl std::fmt::Display) -> AnnError {
        corrupt(&self.path, format!("{what} at byte {}", self.pos))
    }

    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), AnnError> {
        if buf.len() as u64 > self.left() {
            return Err(self.bad("unexpected end of file (truncated?)"));
        }
        self.r.read_exact(buf).map_err(|e| io_err(&self.path, e))?;
        self.crc.update(buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, AnnError> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, AnnError> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A header value that must fit in `usize` and be at most `max`.
    fn size(&mut self, max: u64, what: &str) -> Result<usize, AnnError> {
        let v = self.u64()?;
        if v > max {
            return Err(self.bad(format!("bad {what} {v}")));
        }
        usize::try_from(v).map_err(|_| self.bad(format!("bad {what} {v}")))
    }

    /// Reads `count` numbers of `N` bytes, after checking they fit.
    fn all<T, const N: usize>(
        &mut self,
        count: usize,
        dec: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, AnnError> {
        if (count as u64).saturating_mul(N as u64) > self.left() {
            return Err(self.bad(format!("impossible count {count}")));
        }
        let mut out = Vec::with_capacity(count);
        let mut buf = vec![0u8; N * 8192];
        let mut left = count;
        while left > 0 {
            let m = left.min(8192);
            self.bytes(&mut buf[..m * N])?;
            out.extend(
                buf[..m * N]
                    .chunks_exact(N)
                    .map(|c| dec(c.try_into().expect("N bytes"))),
            );
            left -= m;
        }
        Ok(out)
    }

    /// CSR with `rows` rows whose targets are all `< bound`.
    fn csr(&mut self, rows: usize, bound: u32) -> Result<Csr, AnnError> {
        let offsets = self.all(rows + 1, u64::from_le_bytes)?;
        if offsets[0] != 0 || offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(self.bad("offsets are not increasing from 0"));
        }
        let count = usize::try_from(offsets[rows]).map_err(|_| self.bad("bad link count"))?;
        let targets = self.all(count, u32::from_le_bytes)?;
        if targets.iter().any(|&t| t >= bound) {
            return Err(self.bad("link to a missing point"));
        }
        Ok(Csr { offsets, targets })
    }
}

fn read_graph(r: &mut Checked, given: Option<Vectors>) -> Result<AnnGraph, AnnError> {
    let mut magic = [0u8; 8];
    r.bytes(&mut magic)?;
    if &magic != MAGIC {
        return Err(r.bad("not a plip search index (bad magic)"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(r.bad(format!("unsupported version {version}")));
    }
    let flags = r.u32()?;
    if flags & !(FLAG_PARALLEL_INSERT | FLAG_EXTERNAL_VECTORS) != 0 {
        return Err(r.bad("unknown flags"));
    }
    let n = r.size(u32::MAX as u64, "point count")?;
    let dim = r.size(1 << 20, "dimension")?;
    let params = AnnParams {
        max_connections: r.size(255, "max_connections")?,
        ef_construction: r.size(u32::MAX as u64, "ef_construction")?,
        parallel_insert: flags & FLAG_PARALLEL_INSERT != 0,
    };
    if dim == 0 || params.clamped() != params {
        return Err(r.bad("bad dimension or parameters"));
    }
    let entry = r.size(n.saturating_sub(1) as u64, "entry point")? as u32;
    let levels = r.size(MAX_LEVELS as u64, "level count")?;
    if n == 0 && levels > 0 {
        return Err(r.bad("empty index with levels"));
    }
    let base = r.csr(n, n as u32)?;
    let mut upper: Vec<UpperLayer> = Vec::with_capacity(levels);
    for _ in 0..levels {
        let below = upper.last().map(|u| &u.nodes);
        let count = r.size(n as u64, "layer size")?;
        let nodes = r.all(count, u32::from_le_bytes)?;
        let ok = !nodes.is_empty()
            && nodes.windows(2).all(|w| w[0] < w[1])
            && nodes.iter().all(|&x| (x as usize) < n)
            && below.is_none_or(|b| nodes.iter().all(|x| b.binary_search(x).is_ok()));
        if !ok {
            return Err(r.bad("bad layer node list"));
        }
        let adj = r.csr(count, n as u32)?;
        if adj.targets.iter().any(|t| nodes.binary_search(t).is_err()) {
            return Err(r.bad("upper-layer link to a node not on that layer"));
        }
        upper.push(UpperLayer { nodes, adj });
    }
    if let Some(top) = upper.last() {
        if top.nodes.binary_search(&entry).is_err() {
            return Err(r.bad("entry point is not on the top layer"));
        }
    }
    let values = n
        .checked_mul(dim)
        .ok_or_else(|| r.bad("vector data too large"))?;
    let vectors = if flags & FLAG_EXTERNAL_VECTORS != 0 {
        let crc = r.u32()?;
        let Some(vectors) = given else {
            return Err(r.bad("the file holds no vectors (load it with its vectors)"));
        };
        if vectors.len() != values || vectors_crc(&vectors) != crc {
            return Err(r.bad("the vectors given are not the ones the graph was built on"));
        }
        vectors
    } else {
        let stored = r.all(values, f32::from_le_bytes)?;
        match given {
            Some(g) if *g != stored[..] => {
                return Err(r.bad("the vectors given are not the ones the graph was built on"))
            }
            Some(g) => g,
            None => Vectors::Owned(stored),
        }
    };
    if !all_finite(&vectors) {
        return Err(r.bad("non-finite vector value"));
    }
    Ok(AnnGraph {
        codes: Codes::new(&vectors, dim),
        dim,
        params,
        vectors,
        base,
        upper,
        entry,
        stats: None,
    })
}
/// Whether no value is NaN or infinite, in a loop that vectorizes (an early
/// exit would not).
pub(crate) fn all_finite(values: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    values.chunks(4096).all(|chunk| {
        !chunk
            .iter()
            .fold(false, |bad, x| bad | (x.to_bits() & EXP == EXP))
    })
}
