//! Item and slide ids: the only names a client can use for indexed files.
//!
//! An id hashes a stored (root-relative) path, and for a tile of a slide its
//! region, so it stays the same across commits and restarts and reveals nothing
//! a client could turn into a path of its own; the snapshot maps it back.

use super::thumbs::fnv1a;
use crate::index::Region;

/// The id of an indexed item (a hash of its stored path, and for a slide tile
/// of its region) or of a slide, so it stays the same across commits and
/// restarts, and reveals nothing a client could turn into a path of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ItemId(pub(crate) u64);

impl ItemId {
    /// Parses 16 hex digits.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ItemId)
    }

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

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
