//! What the server holds: the model (loaded once), the current index snapshot
//! (swapped when `plip index` commits), a small cache of text embeddings, the
//! thumbnails, the open slides and the shared search queue.
//!
//! The watcher thread stats the MANIFEST a few times a second and reopens the
//! index when its size or mtime changes; the reopened commit is checked against
//! the loaded model with [`crate::app::model::check`], as at startup, and a
//! failed reopen (a different or changed model, a corrupt file) is a warning
//! while the old snapshot keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::batch::Batcher;
use super::dzi::Slides;
use super::snapshot::Snapshot;
use super::thumbs::Thumbs;
use crate::embed::Embedder;
use crate::index::MANIFEST;

/// Everything the handlers share.
pub(crate) struct State {
    /// The model, both towers.
    pub embedder: Embedder,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Thumbnail caches.
    pub thumbs: Thumbs,
    /// Slides kept open for Deep Zoom tiles.
    pub slides: Slides,
    text_cache: Mutex<TextCache>,
    /// HNSW breadth (when graphs are loaded).
    pub ef: usize,
    /// The current directory, which printed paths are relative to (as
    /// `plip search` prints them).
    pub cwd: PathBuf,
    /// Concurrent searches, answered in shared passes over the index.
    pub searches: Batcher,
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
            slides: Slides::new(),
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

/// Opens the last commit at `dir` and checks that `embedder`'s model built it,
/// with the index's own check (so the server says what `plip search` says: a
/// model whose files changed, or another model). Used at startup and for every
/// commit the watcher picks up.
pub(crate) fn open_checked(dir: &Path, with_graphs: bool, embedder: &Embedder) -> Result<Snapshot> {
    let snap = Snapshot::open(dir, with_graphs)?;
    crate::app::model::check(&snap.index, embedder)?;
    Ok(snap)
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
                let reopened = open_checked(&dir, with_graphs, &state.embedder);
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
