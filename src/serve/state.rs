//! What the server holds: the model (loaded once), the current index snapshot
//! (swapped when `plip index` commits), a small cache of text embeddings, and
//! the thumbnails.
//!
//! A request takes an `Arc` of the snapshot it starts with and keeps it to the
//! end, so a commit in the middle never mixes two generations in one answer.
//! The watcher thread stats the MANIFEST a few times a second and reopens the
//! index when its size or mtime changes; a failed reopen (a different model, a
//! corrupt file) is a warning and the old snapshot keeps serving. Segment files
//! are memory-mapped, so a snapshot stays readable even after the writer deletes
//! its files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};

use super::thumbs::{fnv1a, Thumbs};
use super::ItemId;
use crate::embed::Embedder;
use crate::index::{FileEntry, Index, Region, MANIFEST};

/// One commit of the index, with the item-id lookup built for it.
pub(crate) struct Snapshot {
    /// The opened index.
    pub index: Index,
    /// Item id -> (segment, row).
    pub ids: HashMap<ItemId, (u32, u32)>,
    /// Slide id -> stored path of a slide with at least one live tile.
    pub slides: HashMap<ItemId, String>,
    /// Commit counter from the manifest.
    pub generation: u64,
    /// The folder stored paths are relative to.
    pub root: PathBuf,
}

impl Snapshot {
    /// Opens the last commit at `dir`.
    pub(crate) fn open(dir: &Path, with_graphs: bool) -> Result<Self> {
        let index = if with_graphs {
            Index::open_with_graphs(dir)?
        } else {
            Index::open(dir)?
        };
        let mut ids = HashMap::with_capacity(index.len());
        let mut slides = HashMap::new();
        for (s, seg) in index.segments.iter().enumerate() {
            for (r, e) in seg.entries.iter().enumerate() {
                if !seg.deleted.contains(&(r as u32)) {
                    ids.insert(ItemId::of(&e.path, e.region.as_ref()), (s as u32, r as u32));
                    if e.region.is_some() {
                        slides
                            .entry(ItemId::of_slide(&e.path))
                            .or_insert_with(|| e.path.clone());
                    }
                }
            }
        }
        Ok(Snapshot {
            generation: index.stats().generation,
            root: index.root(),
            ids,
            slides,
            index,
        })
    }

    /// The stored entry (path, region) and unit vector of an item.
    pub(crate) fn item(&self, id: ItemId) -> Option<(&FileEntry, &[f32])> {
        let &(s, r) = self.ids.get(&id)?;
        let seg = &self.index.segments[s as usize];
        let dim = self.index.model().dim;
        let r = r as usize;
        Some((&seg.entries[r], &seg.vectors()[r * dim..(r + 1) * dim]))
    }

    /// The stored path of a slide the index has tiles of.
    pub(crate) fn slide(&self, id: ItemId) -> Option<&str> {
        self.slides.get(&id).map(String::as_str)
    }

    /// The live tiles of the slide at stored path `path`, with their unit vectors.
    pub(crate) fn tiles_of<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = (Region, &'a [f32])> + 'a {
        self.index
            .iter()
            .filter(move |(e, _)| e.path == path)
            .filter_map(|(e, v)| e.region.map(|r| (r, v)))
    }
}

/// Everything the handlers share.
pub(crate) struct State {
    /// The model, both towers.
    pub embedder: Embedder,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Thumbnail caches.
    pub thumbs: Thumbs,
    /// Slides kept open for Deep Zoom tiles.
    pub slides: super::dzi::Slides,
    text_cache: Mutex<TextCache>,
    /// HNSW breadth (when graphs are loaded).
    pub ef: usize,
    /// The current directory, which printed paths are relative to (as
    /// `plip search` prints them).
    pub cwd: PathBuf,
    /// Concurrent searches, answered in shared passes over the index.
    pub searches: super::batch::Batcher,
    /// Bearer token required on `/api/`, if any.
    pub token: Option<String>,
    /// Whether the listener is on a loopback address (then the Host header must
    /// name a loopback host too).
    pub loopback: bool,
}

/// (text, templates) -> unit embedding.
type TextCache = HashMap<(String, Vec<String>), Arc<Vec<f32>>>;

/// Text embeddings kept for search-as-you-type (each keystroke re-sends the
/// same prefix terms).
const TEXT_CACHE_ENTRIES: usize = 2048;

impl State {
    pub(crate) fn new(
        embedder: Embedder,
        snapshot: Snapshot,
        thumbs: Thumbs,
        ef: usize,
        cwd: PathBuf,
        token: Option<String>,
        loopback: bool,
    ) -> Self {
        State {
            embedder,
            snapshot: RwLock::new(Arc::new(snapshot)),
            thumbs,
            slides: super::dzi::Slides::new(),
            text_cache: Mutex::new(HashMap::new()),
            searches: Default::default(),
            ef,
            cwd,
            token,
            loopback,
        }
    }

    /// The snapshot to answer one request with.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, snap: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
    }

    /// The unit embedding of a text term through `templates` (cached).
    pub(crate) fn text_embedding(&self, text: &str, templates: &[String]) -> Result<Arc<Vec<f32>>> {
        let key = (text.to_string(), templates.to_vec());
        if let Some(v) = self.cache().get(&key) {
            return Ok(v.clone());
        }
        let v = Arc::new(crate::query::text_embedding(
            &self.embedder,
            text,
            templates,
        )?);
        let mut cache = self.cache();
        if cache.len() >= TEXT_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, v.clone());
        Ok(v)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TextCache> {
        self.text_cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks that the index at `snap` was built by `embedder`'s model.
pub(crate) fn check_model(snap: &Snapshot, embedder: &Embedder) -> Result<()> {
    let (a, b) = (snap.index.model(), embedder.info());
    if a.dim != b.dim || a.fingerprint != b.fingerprint {
        bail!(crate::index::StoreError::ModelMismatch {
            path: snap.index.dir().to_path_buf(),
            index_model: a.source.clone(),
            model: b.source.clone(),
        });
    }
    Ok(())
}

/// What identifies a commit without reading it: the manifest's size and mtime.
fn manifest_stamp(dir: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(dir.join(MANIFEST)).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Starts the thread that reopens the index after each commit, polling every
/// `every`. It stops when `stop` is set.
pub(crate) fn watch(
    state: Arc<State>,
    dir: PathBuf,
    with_graphs: bool,
    every: Duration,
    stop: Arc<AtomicBool>,
    quiet: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("plip-serve-watch".into())
        .spawn(move || {
            let mut seen = manifest_stamp(&dir);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                let now = manifest_stamp(&dir);
                if now.is_none() || now == seen {
                    continue;
                }
                let reopened = Snapshot::open(&dir, with_graphs).and_then(|s| {
                    check_model(&s, &state.embedder)?;
                    Ok(s)
                });
                match reopened {
                    Ok(snap) => {
                        seen = now;
                        if snap.generation != state.snapshot().generation && !quiet {
                            eprintln!(
                                "plip: serving commit {} ({} images)",
                                snap.generation,
                                snap.index.len()
                            );
                        }
                        state.replace(snap);
                    }
                    Err(e) => {
                        // Said once, and tried again at the next commit; the old
                        // commit keeps serving meanwhile.
                        seen = now;
                        eprintln!("plip: warning: still serving the previous commit: {e:#}");
                    }
                }
            }
        })
        .expect("spawning the index watcher thread")
}

impl ItemId {
    /// The id of an item: its stored (root-relative) path, and for a tile of a
    /// slide its region's `(x, y, w, h)`, so every tile of a slide has its own.
    /// An image's id is the hash of its path alone (as before slides existed).
    pub(crate) fn of(path: &str, region: Option<&Region>) -> Self {
        match region {
            None => ItemId(fnv1a(&[b"item", path.as_bytes()])),
            Some(r) => {
                let (x, y, w, h) = r.key();
                let mut xywh = [0u8; 32];
                for (i, v) in [x, y, w, h].into_iter().enumerate() {
                    xywh[i * 8..(i + 1) * 8].copy_from_slice(&v.to_le_bytes());
                }
                ItemId(fnv1a(&[b"tile", path.as_bytes(), &xywh]))
            }
        }
    }

    /// The id of a whole slide (for its deep-zoom tiles and heatmap).
    pub(crate) fn of_slide(path: &str) -> Self {
        ItemId(fnv1a(&[b"slide", path.as_bytes()]))
    }
}
