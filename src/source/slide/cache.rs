//! Bounded LRU cache of decoded tiles, keyed by (level, tile index).
//!
//! Guarantees: the bytes held (sum of decoded RGB tile sizes) never exceed
//! the budget after an insert returns, except that a single tile larger than
//! the whole budget is not stored at all. Counters count every decode and
//! every hit, for the tests (`TileCache::stats`).
//!
//! It also remembers the tiles that failed to decode (their message), so that a corrupt
//! stored tile is decoded once, not once per region that touches it; at most
//! [`MAX_FAILURES`] are remembered.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A decoded tile: RGB8, `w` x `h` valid pixels (edge tiles are cropped to
/// the image, as OpenSlide clips them).
#[derive(Debug)]
pub(crate) struct Tile {
    pub(crate) w: u32,
    pub(crate) h: u32,
    pub(crate) rgb: Vec<u8>,
}

type Key = (usize, u64);

/// Most failed tiles remembered (their messages are short; a slide with more bad tiles
/// than this decodes the rest again when read again).
const MAX_FAILURES: usize = 1 << 16;

#[derive(Default)]
struct Inner {
    map: HashMap<Key, (Arc<Tile>, u64)>,
    order: BTreeMap<u64, Key>,
    clock: u64,
    bytes: usize,
}

/// Cache counters, see [`TileCache::stats`].
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CacheStats {
    /// Tiles decoded or tried (cache misses that reached the decoder).
    pub(crate) decodes: u64,
    /// Lookups answered from the cache.
    pub(crate) hits: u64,
    /// Bytes of decoded pixels held now.
    pub(crate) bytes: usize,
    /// Tiles held now.
    pub(crate) tiles: usize,
}

pub(crate) struct TileCache {
    budget: usize,
    inner: Mutex<Inner>,
    decodes: AtomicU64,
    hits: AtomicU64,
    failed: Mutex<HashMap<Key, Arc<str>>>,
}

impl TileCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner::default()),
            decodes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The cache holds no invariant a panic elsewhere could break halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: Key) -> Option<Arc<Tile>> {
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        let (tile, old) = match g.map.get_mut(&key) {
            Some((t, stamp)) => {
                let old = *stamp;
                *stamp = now;
                (Arc::clone(t), old)
            }
            None => return None,
        };
        g.order.remove(&old);
        g.order.insert(now, key);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(tile)
    }

    /// The message of a tile that failed to decode before.
    pub(crate) fn failure(&self, key: Key) -> Option<String> {
        let g = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        g.get(&key).map(|m| m.to_string())
    }

    /// Remembers that `key` failed to decode, with `msg`.
    pub(crate) fn fail(&self, key: Key, msg: &str) {
        let mut g = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() < MAX_FAILURES {
            g.insert(key, Arc::from(msg));
        }
    }

    pub(crate) fn note_decode(&self) {
        self.decodes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn put(&self, key: Key, tile: Arc<Tile>) {
        let size = tile.rgb.len();
        if size > self.budget {
            return;
        }
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        if let Some((old_tile, old_stamp)) = g.map.insert(key, (tile, now)) {
            g.bytes -= old_tile.rgb.len();
            g.order.remove(&old_stamp);
        }
        g.order.insert(now, key);
        g.bytes += size;
        while g.bytes > self.budget {
            let Some((_, victim)) = g.order.pop_first() else {
                break;
            };
            if let Some((t, _)) = g.map.remove(&victim) {
                g.bytes -= t.rgb.len();
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            decodes: self.decodes.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            bytes: g.bytes,
            tiles: g.map.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(n: usize) -> Arc<Tile> {
        Arc::new(Tile {
            w: 1,
            h: 1,
            rgb: vec![0; n],
        })
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let c = TileCache::new(100);
        c.put((0, 1), tile(40));
        c.put((0, 2), tile(40));
        assert!(c.get((0, 1)).is_some()); // 1 is now newer than 2
        c.put((0, 3), tile(40)); // over budget: evict 2
        assert!(c.get((0, 2)).is_none());
        assert!(c.get((0, 1)).is_some());
        assert!(c.get((0, 3)).is_some());
        let s = c.stats();
        assert_eq!(s.bytes, 80);
        assert_eq!(s.tiles, 2);
        assert_eq!(s.hits, 3);
    }

    #[test]
    fn oversized_tile_is_not_stored_and_zero_budget_works() {
        let c = TileCache::new(10);
        c.put((0, 1), tile(11));
        assert!(c.get((0, 1)).is_none());
        let z = TileCache::new(0);
        z.put((1, 1), tile(1));
        assert_eq!(z.stats().tiles, 0);
    }

    #[test]
    fn reinsert_replaces_bytes() {
        let c = TileCache::new(100);
        c.put((0, 1), tile(30));
        c.put((0, 1), tile(50));
        assert_eq!(c.stats().bytes, 50);
    }
}
