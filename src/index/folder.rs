//! Which folders plip may write an index into, and which files in them are its
//! own.
//!
//! plip creates an index only in a folder that is missing, empty, already holds
//! a plip index, or holds nothing but plip's own files (a run that crashed before
//! its first commit). Anything else (a folder of images, a folder with someone
//! else's `MANIFEST`) is refused before a byte is written. And plip deletes only
//! files it recognises as its own by name *and* content: a `seg-0001.png` or
//! `seg-notes.txt` of the user's is never touched.

use super::*;

/// The manifest's format marker, present in every plip manifest (damaged or not)
/// near its start.
const MANIFEST_MARKER: &[u8] = b"\"plip-index\"";

/// True when `name` in `dir` is a file plip wrote: a segment file
/// (`seg-NNNNNN.vec`, `.meta`, `.reg`, `.hnsw.ann`, or an older index's hnsw_rs files)
/// that starts with plip's magic (or is empty, cut off by a crash), a temporary
/// file of an atomic write, the lock, or the manifest.
fn is_own_file(dir: &Path, name: &str) -> bool {
    if name == LOCK || name == MANIFEST || name == LAST_RUN {
        return true;
    }
    if let Some(rest) = name.strip_prefix('.') {
        // `.{name}.tmp-{pid}-{n}` of write_atomic_with, for our own names.
        return rest.split_once(".tmp-").is_some_and(|(base, _)| {
            base == MANIFEST || base == LAST_RUN || segment_name(base).is_some()
        });
    }
    let Some(suffix) = segment_name(name) else {
        return false;
    };
    let magic: &[u8] = match suffix {
        "vec" => VEC_MAGIC,
        "meta" => META_MAGIC,
        "reg" => REG_MAGIC,
        "hnsw.ann" => b"PLIPANN\0",
        // Files of hnsw_rs (indexes written before plip had its own graph file).
        "hnsw.hnsw.graph" | "hnsw.hnsw.data" => return true,
        _ => return false,
    };
    let mut head = [0u8; 8];
    match File::open(dir.join(name)).and_then(|mut f| {
        let n = f.read(&mut head)?;
        Ok(n)
    }) {
        Ok(0) => true,
        Ok(n) => n == 8 && head == magic,
        Err(_) => false,
    }
}

/// For `seg-NNNNNN.SUFFIX`, the suffix.
fn segment_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("seg-")?;
    let (id, suffix) = rest.split_once('.')?;
    (id.len() >= 6 && id.bytes().all(|b| b.is_ascii_digit())).then_some(suffix)
}

/// The id of a segment file name, if it is one.
fn segment_id(name: &str) -> Option<u64> {
    segment_name(name)?;
    name.strip_prefix("seg-")?.split('.').next()?.parse().ok()
}

/// Checks that plip may create or use an index in `dir` (see the module docs).
pub(crate) fn check_index_folder(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if dir.exists() && !dir.is_dir() => {
            let _ = e;
            return Err(StoreError::NotAnIndex(
                dir.to_path_buf(),
                "it is a file, not a folder".into(),
            ));
        }
        Err(e) => return Err(io_err(format!("reading {}", dir.display()))(e)),
    };
    if let Ok(bytes) = fs::read(dir.join(MANIFEST)) {
        let head = &bytes[..bytes.len().min(256)];
        if head
            .windows(MANIFEST_MARKER.len())
            .any(|w| w == MANIFEST_MARKER)
        {
            return Ok(());
        }
        return Err(StoreError::NotAnIndex(
            dir.to_path_buf(),
            "its MANIFEST is not a plip manifest".into(),
        ));
    }
    let mut foreign: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !is_own_file(dir, name))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let more = if foreign.len() > 1 {
        format!(" and {} more", foreign.len() - 1)
    } else {
        String::new()
    };
    Err(StoreError::NotAnIndex(
        dir.to_path_buf(),
        format!("it holds files plip did not write ({}{more})", foreign[0]),
    ))
}

/// Takes the writer lock of `dir` (a `flock` on [`LOCK`]), as the one
/// `plip index` or `plip merge` allowed at a time. With `create`, the lock file
/// is made when missing and records this process's id; without, `None` means no
/// writer has ever run there. A lock held elsewhere is [`StoreError::Locked`].
pub(crate) fn take_lock(dir: &Path, create: bool) -> Result<Option<File>> {
    let path = dir.join(LOCK);
    let file = match OpenOptions::new()
        .create(create)
        .truncate(false)
        .read(true)
        .write(create)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
        Err(e) => return Err(io_err(format!("opening {}", path.display()))(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let who = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            return Err(StoreError::Locked(dir.to_path_buf(), who));
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(io_err(format!("locking {}", path.display()))(e))
        }
    }
    if create {
        let _ = file.set_len(0);
        let _ = (&file).write_all(std::process::id().to_string().as_bytes());
    }
    Ok(Some(file))
}

/// One more than the largest segment id of any file in `dir`: segment names are
/// never reused, so no new file can take a name a reader still maps.
pub(crate) fn next_free_segment(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| segment_id(&e.file_name().to_string_lossy()))
                .max()
                .map_or(1, |m| m + 1)
        })
        .unwrap_or(1)
}

/// Deletes plip's own files in `dir` that `keep` (the last commit) does not
/// name; the manifest, the lock and the last run's list always stay.
pub(crate) fn remove_unreferenced(dir: &Path, keep: &HashSet<String>) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != LOCK
            && name != MANIFEST
            && name != LAST_RUN
            && !keep.contains(&name)
            && is_own_file(dir, &name)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}
