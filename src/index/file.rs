//! The one checked-file container of the index: every file plip writes there is
//! `magic (8 bytes) | version (u32) | payload | CRC32 of all before it`, all
//! little-endian, so a truncated, bit-flipped or foreign file is recognised.
//!
//! * [`CheckedWriter`] writes one, with `create_new`: a name that exists is never
//!   opened for writing again, so a reader that maps a committed file can never
//!   see it change under it.
//! * [`write_atomic`] replaces a small file (the manifest, a graph) atomically:
//!   a temporary file in the same folder, fsync, rename, fsync the folder.
//! * The readers check length, magic, version and checksum before a byte of the
//!   payload is used, and can map a file's values from the page cache.

use super::*;

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes a new checked file, hashing everything as it goes.
pub(crate) struct CheckedWriter {
    w: io::BufWriter<File>,
    crc: crc32fast::Hasher,
    pub(crate) len: u64,
}

impl CheckedWriter {
    /// Creates `path`, which must not exist, and writes the header.
    pub(crate) fn create_new(path: &Path, magic: &[u8; 8], version: u32) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let mut w = CheckedWriter {
            w: io::BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        w.put(magic)?;
        w.put(&version.to_le_bytes())?;
        Ok(w)
    }

    /// Appends bytes to the payload.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        self.w.write_all(bytes)
    }

    /// Writes the checksum and syncs the file to disk. Returns the file's length
    /// and checksum.
    pub(crate) fn finish(mut self) -> io::Result<(u64, u32)> {
        let crc = self.crc.clone().finalize();
        self.w.write_all(&crc.to_le_bytes())?;
        let file = self
            .w
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        Ok((self.len + 4, crc))
    }
}

/// Writes `dir/name` atomically: `write` fills a temporary file in `dir`, which
/// is synced and renamed over `name`, then the folder is synced. On error the
/// temporary file is removed and `name` is untouched.
pub(crate) fn write_atomic_with(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = write(&tmp).and_then(|()| fs::rename(&tmp, dir.join(name)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Writes `name` in `dir` atomically with the bytes given.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_atomic_with(dir, name, |tmp| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })
    .map_err(io_err(format!("writing {}", dir.join(name).display())))
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing on Windows; rename is durable there.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes the framed file `dir/name` (which must not exist) and syncs it.
/// Returns its reference for the manifest.
pub(crate) fn write_framed(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    payload: &[u8],
) -> Result<FileRef> {
    let path = dir.join(name);
    let write = || -> io::Result<(u64, u32)> {
        let mut w = CheckedWriter::create_new(&path, magic, FORMAT_VERSION)?;
        w.put(payload)?;
        w.finish()
    };
    let (len, crc32) = write().map_err(io_err(format!("writing {}", path.display())))?;
    Ok(FileRef {
        name: name.to_string(),
        len,
        crc32,
    })
}

/// Reads a framed file and returns its payload after checking length, magic,
/// version and checksum against the manifest's record.
pub(crate) fn read_framed(dir: &Path, r: &FileRef, magic: &[u8; 8]) -> Result<Vec<u8>> {
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
        values = crate::backend::cpu::zeroed_f32(len / 4);
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
pub(crate) enum Matrix {
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
pub(crate) fn map_framed_f32(dir: &Path, r: &FileRef, magic: &[u8; 8]) -> Result<Matrix> {
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
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(corrupt(&path, "a file the manifest names is missing"))
        }
        Err(e) => return Err(reading()(e)),
    };
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

pub(crate) fn check_file(dir: &Path, r: &FileRef) -> Result<()> {
    let path = dir.join(&r.name);
    let bytes = fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
    if bytes.len() as u64 != r.len || crc32fast::hash(&bytes) != r.crc32 {
        return Err(corrupt(&path, "size or checksum differs from the manifest"));
    }
    Ok(())
}

pub(crate) fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}
