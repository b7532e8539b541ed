//! One commit of the index as the server answers from it: the opened index
//! with its item-id and slide-id lookups built once.
//!
//! A request takes an `Arc` of the snapshot it starts with and keeps it to the
//! end, so a commit in the middle never mixes two generations in one answer.
//! Segment files are memory-mapped, so a snapshot stays readable even after the
//! writer deletes its files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::ids::ItemId;
use crate::index::{FileEntry, Index, Region};

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
