//! Whole slides in the indexing run (issue 17): deciding per slide whether it must be
//! (re-)tiled, and embedding its tissue tiles through the same batched pipeline as
//! image files.
//!
//! Rules it keeps:
//!
//! * A slide is one unit of change detection: its record in the manifest
//!   ([`SlideRecord`]) holds the file's size, mtime and CRC32 and the tiling it was cut
//!   with, and every tile entry carries the same file facts. An unchanged, complete
//!   slide is not opened again.
//! * Changed tiling flags (`--mpp`, `--tile`, `--min-tissue`, `--keep-artifacts`) re-tile: a slide whose
//!   record has another grid is embedded again (its old tiles are dropped) the next
//!   time a run scans it. Flags not given keep the tiling recorded in the index.
//! * Crash safety inside a slide: the record is written with `complete = false` before
//!   the first tile and set complete after the last one, and commits happen in the
//!   middle of a slide like anywhere else. A run that finds an incomplete record for an
//!   unchanged file plans the same grid again and embeds only the tiles not yet stored,
//!   so no tile is duplicated or lost.
//! * A slide that cannot be opened or planned (truncated, unsupported compression, no
//!   resolution, a tiling that does not fit it, ...) is skipped with a warning that names
//!   it and counted; if it was indexed before, its tiles and record are kept as they were
//!   (nothing indexed is lost to a flag or a planning error; the next run tries again).
//!   A tile over a corrupt stored tile is skipped and counted in the slide's record.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Result;

use super::{unchanged, Committer, Progress};
use crate::embed::{self, Embedder};
use crate::index::{FileEntry, IndexWriter, Skipped, SlideRecord, TileSettings};
use crate::source::slide::{MppSource, TileOptions, TilePlan};
use crate::source::LoadedImage;

/// The tiling flags of `plip index`, `None` when not given.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct SlideFlags {
    pub(crate) mpp: Option<f64>,
    pub(crate) tile: Option<u32>,
    pub(crate) min_tissue: Option<f64>,
    pub(crate) slide_mpp: Option<f64>,
    /// `--keep-artifacts` (`Some(false)`: `--keep-artifacts=false`).
    pub(crate) keep_artifacts: Option<bool>,
}

impl SlideFlags {
    /// Checks each number given (see [`crate::source::slide::tiling`]); the error
    /// starts with the flag's name without dashes (`mpp: ...`), which each face
    /// translates. Called before anything is opened for writing.
    pub(crate) fn validate(&self) -> Result<(), String> {
        use crate::source::slide::tiling::{check_min_tissue, check_mpp, check_tile};
        let named = |name: &str, r: Result<(), String>| r.map_err(|e| format!("{name}: {e}"));
        named("mpp", self.mpp.map_or(Ok(()), |v| check_mpp(v).map(drop)))?;
        named(
            "tile",
            self.tile.map_or(Ok(()), |v| check_tile(v).map(drop)),
        )?;
        named(
            "min_tissue",
            self.min_tissue
                .map_or(Ok(()), |v| check_min_tissue(v).map(drop)),
        )?;
        named(
            "slide_mpp",
            self.slide_mpp.map_or(Ok(()), |v| check_mpp(v).map(drop)),
        )
    }
}

/// The tiling of this run: each flag given, else what the index recorded, else the
/// defaults (0.5 µm/px, 224 px, 0.5 tissue).
pub(crate) fn resolve_tiling(flags: &SlideFlags, recorded: Option<TileSettings>) -> TileSettings {
    let d = TileOptions::default();
    let base = recorded.unwrap_or(TileSettings {
        mpp: d.mpp,
        tile: d.tile,
        min_tissue: d.min_tissue,
        slide_mpp: None,
        keep_artifacts: d.keep_artifacts,
    });
    TileSettings {
        mpp: flags.mpp.unwrap_or(base.mpp),
        tile: flags.tile.unwrap_or(base.tile),
        min_tissue: flags.min_tissue.unwrap_or(base.min_tissue),
        slide_mpp: flags.slide_mpp.or(base.slide_mpp),
        keep_artifacts: flags.keep_artifacts.unwrap_or(base.keep_artifacts),
    }
}

/// The name of a resolution source, as recorded and shown by `plip info`.
pub(crate) fn mpp_source_name(s: MppSource) -> &'static str {
    match s {
        MppSource::Aperio => "aperio-description",
        MppSource::TiffResolution => "tiff-resolution",
        MppSource::OmeXml => "ome-xml",
        MppSource::OpenSlide => "openslide",
        MppSource::User => "--slide-mpp",
    }
}

/// A slide to embed.
pub(super) struct SlideTodo {
    pub(super) abs: PathBuf,
    pub(super) rel: String,
    /// The index had tiles (or a record) of it before this run.
    pub(super) existed: bool,
    /// Unchanged file and grid, but a run stopped in the middle of it: embed only the
    /// tiles not stored yet.
    pub(super) resume: bool,
}

/// Decides for each slide found whether it is unchanged, to finish, or to (re-)tile.
/// Counts the unchanged ones in the writer's stats.
pub(super) fn plan(
    writer: &mut IndexWriter,
    found: Vec<(PathBuf, String)>,
    tiling: &TileSettings,
    racy_after: i128,
) -> Vec<SlideTodo> {
    let mut todo = Vec::new();
    for (abs, rel) in found {
        let record = writer.slide_record(&rel).cloned();
        let had_tiles = writer.get(&rel).is_some();
        match record {
            Some(rec) => {
                let facts = FileEntry {
                    path: rel.clone(),
                    size: rec.size,
                    mtime_ns: rec.mtime_ns,
                    crc32: rec.crc32,
                    region: None,
                };
                let same = unchanged(&abs, &facts, racy_after) && rec.tiling.same_grid(tiling);
                if same && rec.complete {
                    writer.stats_mut().unchanged += 1;
                } else {
                    todo.push(SlideTodo {
                        abs,
                        rel,
                        existed: true,
                        resume: same,
                    });
                }
            }
            None => todo.push(SlideTodo {
                abs,
                rel,
                existed: had_tiles,
                resume: false,
            }),
        }
    }
    todo
}

/// Everything [`embed_slide`] needs from the run.
pub(super) struct SlideRun<'a> {
    pub(super) embedder: &'a Embedder,
    pub(super) writer: &'a mut IndexWriter,
    pub(super) committer: &'a mut Committer,
    pub(super) progress: &'a dyn Progress,
    pub(super) cancel: &'a AtomicBool,
    pub(super) batch_size: usize,
    pub(super) tiling: TileSettings,
    /// Tiles embedded in this run, all slides together.
    pub(super) embedded: usize,
}

impl SlideRun<'_> {
    /// Plans and embeds one slide. Returns `Ok(false)` when the run was cancelled in
    /// the middle of it.
    pub(super) fn embed_slide(&mut self, todo: &SlideTodo) -> Result<bool> {
        let options = TileOptions {
            mpp: self.tiling.mpp,
            tile: self.tiling.tile,
            min_tissue: self.tiling.min_tissue,
            user_mpp: self.tiling.slide_mpp,
            keep_artifacts: self.tiling.keep_artifacts,
        };
        let facts = crate::source::stat(&todo.abs)
            .and_then(|(size, mtime)| Ok((size, mtime, crate::source::file_crc(&todo.abs)?)));
        let plan = facts
            .map_err(|e| format!("{}: cannot read the file: {e}", todo.abs.display()))
            .and_then(|f| {
                TilePlan::new(&todo.abs, &options)
                    .map(|p| (f, p))
                    .map_err(|e| e.to_string())
            });
        let ((size, mtime_ns, crc32), plan) = match plan {
            Ok(x) => x,
            Err(reason) => {
                // Never drop what was indexed because a slide cannot be planned now
                // (a flag, a resolution, a read error): its old tiles and record stay,
                // so the next run tries again (issue 27).
                let kept = if todo.existed {
                    let n = self.writer.regions_of(&todo.rel).len();
                    format!("; its {n} indexed tile(s) are kept as they were")
                } else {
                    String::new()
                };
                self.progress
                    .warn(&format!("skipping slide {reason}{kept}"));
                self.writer.stats_mut().skipped.push(Skipped {
                    path: todo.rel.clone(),
                    reason,
                });
                return Ok(true);
            }
        };
        if plan.skipped_stored_tiles > 0 {
            self.progress.warn(&format!(
                "{}: {} stored tile(s) could not be decoded for tissue detection (counted as glass)",
                todo.abs.display(),
                plan.skipped_stored_tiles
            ));
        }
        // A file replaced by another of the same size and mtime during an unfinished
        // record must not be resumed: its stored tiles are of the old file (issue 27).
        let resume = todo.resume
            && self
                .writer
                .slide_record(&todo.rel)
                .is_some_and(|r| r.crc32 == crc32);
        if todo.resume && !resume {
            self.progress.warn(&format!(
                "{}: the file changed since the unfinished run (its CRC32 differs); tiling it again",
                todo.abs.display()
            ));
        }
        let done: HashSet<_> = if resume {
            self.writer.regions_of(&todo.rel)
        } else {
            if todo.existed {
                self.writer.remove(&todo.rel);
            }
            HashSet::new()
        };
        let slide = plan.slide();
        let mut record = SlideRecord {
            vendor: slide.vendor().to_string(),
            width: slide.levels()[0].width,
            height: slide.levels()[0].height,
            levels: slide.levels().len(),
            mpp: plan.slide_mpp,
            mpp_source: mpp_source_name(plan.mpp_source).to_string(),
            level: plan.level,
            tiles_kept: plan.tiles.len(),
            tiles_total: plan.cols as usize * plan.rows as usize,
            tiles_failed: 0,
            tiling: self.tiling,
            complete: false,
            size,
            mtime_ns,
            crc32,
        };
        self.writer.set_slide_record(&todo.rel, record.clone());
        let region = |i: usize| embed::tiles::tile_region(&plan, i);
        let wanted: Vec<usize> = (0..plan.tiles.len())
            .filter(|&i| !done.contains(&region(i).key()))
            .collect();
        self.progress.grow(wanted.len() as u64);
        let embedder = self.embedder;
        let load = |k: usize| -> std::result::Result<LoadedImage, String> {
            let rgb = plan.read_tile(wanted[k]).map_err(|e| e.to_string())?;
            Ok(LoadedImage {
                pixels: embedder.preprocess_rgb(&rgb),
                size,
                mtime_ns,
                crc32,
            })
        };
        let mut handed = 0usize;
        let mut failed: Vec<String> = Vec::new();
        let writer = &mut *self.writer;
        let committer = &mut *self.committer;
        let progress = self.progress;
        let cancel = self.cancel;
        let mut embedded = 0usize;
        embed::embed_items(embedder, wanted.len(), load, self.batch_size, cancel, |r| {
            handed += 1;
            match r.outcome {
                Ok((vector, _)) => {
                    let entry = FileEntry {
                        path: todo.rel.clone(),
                        size,
                        mtime_ns,
                        crc32,
                        region: Some(region(wanted[r.index])),
                    };
                    writer.add(entry, &vector);
                    embedded += 1;
                }
                Err(reason) => failed.push(reason),
            }
            progress.advance();
            committer.maybe_commit(writer, cancel)
        })?;
        self.embedded += embedded;
        if !failed.is_empty() {
            self.progress.warn(&format!(
                "{}: skipped {} tile(s) that could not be read (first: {})",
                todo.abs.display(),
                failed.len(),
                failed[0]
            ));
        }
        if handed < wanted.len() {
            return Ok(false);
        }
        record.tiles_failed = failed.len();
        record.complete = true;
        self.writer.set_slide_record(&todo.rel, record);
        let s = self.writer.stats_mut();
        if todo.existed {
            s.updated += 1;
        } else {
            s.added += 1;
        }
        Ok(true)
    }
}
