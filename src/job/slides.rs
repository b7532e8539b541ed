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
//! * A changed tissue source re-tiles in place: a record made by an older tissue
//!   detector ([`detector_version`]), or with another user mask (`--tissue-mask`: the
//!   file found for the slide, or its CRC32, differs). Same file and grid, so the
//!   stored tiles the new mask keeps stay as they are (not embedded again), the tiles
//!   it drops are removed one by one, and only the new ones are embedded; the run says
//!   so ("re-tiling 12 slides (tissue detector v2)") and counts them ([`RetileStats`]).
//! * `--tissue-mask DIR` is recorded in the index like the tiling, and later runs keep
//!   using it (`--tissue-mask none` goes back to detection). A slide without a mask in
//!   DIR is detected, said once per run; a mask that cannot be read skips its slide
//!   with a warning naming the file, and keeps what was indexed of it.
//! * Crash safety inside a slide: the record is written with `complete = false` before
//!   the first tile and set complete after the last one, and commits happen in the
//!   middle of a slide like anywhere else. A run that finds an incomplete record for an
//!   unchanged file plans the same grid again, removes the stored tiles the plan does
//!   not keep and embeds only the tiles not yet stored, so no tile is duplicated or
//!   lost. Removals are tombstones committed with the record, like any commit.
//! * A slide that cannot be opened or planned (truncated, unsupported compression, no
//!   resolution, a tiling that does not fit it, ...) is skipped with a warning that names
//!   it and counted; if it was indexed before, its tiles and record are kept as they were
//!   (nothing indexed is lost to a flag or a planning error; the next run tries again).
//!   A tile over a corrupt stored tile is skipped and counted in the slide's record.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use anyhow::Result;

use super::{unchanged, Committer, Progress};
use crate::embed::{self, Embedder};
use crate::index::{FileEntry, IndexWriter, MaskRecord, RegionKey, Skipped, SlideRecord};
use crate::source::slide::{tissue, user_mask, MppSource, SlideError, TilePlan, Tiling};
use crate::source::LoadedImage;

/// The tissue detector version recorded with each slide: [`tissue::DETECTOR_VERSION`].
/// Tests set `PLIP_TEST_DETECTOR_VERSION` to index as an older detector would record
/// (the detection itself is the same), so that the next run re-tiles as after an
/// upgrade.
pub(crate) fn detector_version() -> u32 {
    static V: OnceLock<u32> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("PLIP_TEST_DETECTOR_VERSION")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(tissue::DETECTOR_VERSION)
    })
}

/// `--tissue-mask`: not given (keep what the index recorded), a folder, or `none`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum MaskFlag {
    #[default]
    Keep,
    Dir(PathBuf),
    Detect,
}

impl MaskFlag {
    /// Parses the flag's value: `none` (any case) means detection.
    pub(crate) fn parse(v: Option<&Path>) -> MaskFlag {
        match v {
            None => MaskFlag::Keep,
            Some(p) if p.as_os_str().eq_ignore_ascii_case("none") => MaskFlag::Detect,
            Some(p) => MaskFlag::Dir(p.to_path_buf()),
        }
    }

    /// The mask folder of this run: the flag's, else the one recorded in the index.
    pub(crate) fn resolve(&self, recorded: Option<&str>) -> Option<PathBuf> {
        match self {
            MaskFlag::Keep => recorded.map(PathBuf::from),
            MaskFlag::Dir(d) => Some(d.clone()),
            MaskFlag::Detect => None,
        }
    }
}

/// Where this run takes each slide's tissue from.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Masks {
    /// Tissue detection.
    Detect,
    /// The users' masks in this folder (detection for a slide without one).
    Dir(PathBuf),
    /// A recorded mask folder that is missing now: slides tiled by a mask keep their
    /// tiles; new or changed slides are detected.
    Missing(PathBuf),
}

/// Slides re-tiled in place because their tissue source changed, and their tiles.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RetileStats {
    pub(crate) slides: usize,
    pub(crate) added: usize,
    pub(crate) removed: usize,
    /// Why, for the message: "tissue detector v2", "tissue masks changed".
    pub(crate) reasons: Vec<String>,
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
    /// Unchanged file and grid (a run stopped in the middle of it, or its tissue source
    /// changed): keep the stored tiles the new plan keeps, remove the others, embed only
    /// the missing ones.
    pub(super) resume: bool,
    /// `resume` because the tissue source changed (why): counted in [`RetileStats`].
    pub(super) retile: Option<String>,
    /// The user's mask file for it (`--tissue-mask`), else detection.
    pub(super) mask: Option<PathBuf>,
    /// The coordinate file its tiles come from (`--coords`, or the one recorded),
    /// with its CRC32, else plip's grid.
    pub(super) coords: Option<MaskRecord>,
}

/// Why a recorded slide's tissue must be found again, if it must.
fn tissue_changed(
    rec: &SlideRecord,
    tiling: &Tiling,
    masks: &Masks,
    mask: Option<&Path>,
) -> Option<String> {
    if tiling.min_tissue <= 0.0 {
        return None; // every tile is kept, whatever the mask
    }
    if matches!(masks, Masks::Missing(_)) && rec.tissue_mask.is_some() {
        return None;
    }
    match (&rec.tissue_mask, mask) {
        (None, None) if rec.detector != detector_version() => {
            Some(format!("tissue detector v{}", detector_version()))
        }
        (None, None) => None,
        (Some(r), Some(m)) => {
            let same = r.file == m.display().to_string()
                && crate::source::file_crc(m).is_ok_and(|c| c == r.crc32);
            (!same).then(|| "tissue masks changed".to_string())
        }
        _ => Some("tissue masks changed".to_string()),
    }
}

/// Says which slides of this run have no coordinate file in `dir` nor one recorded
/// (plip's grid tiles them), and which coordinate files name no slide of this run (not used).
fn report_coords(
    dir: &Path,
    found: &[(PathBuf, String)],
    recorded: &dyn Fn(&str) -> bool,
    progress: &dyn Progress,
) {
    use crate::source::slide::coords;
    let without: Vec<&str> = found
        .iter()
        .filter(|(abs, rel)| coords::find(dir, abs).is_none() && !recorded(rel))
        .map(|(_, rel)| rel.as_str())
        .collect();
    if let Some(first) = without.first() {
        progress.warn(&format!(
            "--coords {}: no coordinate file for {} of {} slide(s), so plip's grid tiles \
             them (first: {first})",
            dir.display(),
            without.len(),
            found.len()
        ));
    }
    let used: std::collections::HashSet<PathBuf> = found
        .iter()
        .filter_map(|(abs, _)| coords::find(dir, abs))
        .collect();
    let mut unused = Vec::new();
    for d in [dir.to_path_buf(), dir.join("patches")] {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "h5") && !used.contains(&p) {
                unused.push(
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    unused.sort();
    if !unused.is_empty() {
        progress.warn(&format!(
            "--coords {}: {} coordinate file(s) name no slide of this run and were not \
             used: {}{}",
            dir.display(),
            unused.len(),
            unused
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if unused.len() > 5 { ", ..." } else { "" }
        ));
    }
}

/// The coordinate file for the slide at `abs`: in this run's `--coords` folder, else
/// the one its record names when that file is still there; with its CRC32. A file
/// that cannot be read is said and left out (the slide keeps what it had).
fn coords_file(
    dir: Option<&Path>,
    abs: &Path,
    record: Option<&SlideRecord>,
    progress: &dyn Progress,
) -> Option<MaskRecord> {
    let file = dir
        .and_then(|d| crate::source::slide::coords::find(d, abs))
        .or_else(|| {
            let old = PathBuf::from(&record?.coords.as_ref()?.file);
            old.is_file().then_some(old)
        })?;
    match crate::source::file_crc(&file) {
        Ok(crc32) => Some(MaskRecord {
            file: file.display().to_string(),
            crc32,
        }),
        Err(e) => {
            progress.warn(&format!("{}: cannot read it: {e}", file.display()));
            None
        }
    }
}

/// Decides for each slide found whether it is unchanged, to finish, or to (re-)tile.
/// Counts the unchanged ones in the writer's stats, says once which slides have no
/// mask in the `--tissue-mask` folder, and announces in-place re-tiling.
pub(super) fn plan(
    writer: &mut IndexWriter,
    found: Vec<(PathBuf, String)>,
    tiling: &Tiling,
    racy_after: i128,
    masks: &Masks,
    coords_dir: Option<&Path>,
    progress: &dyn Progress,
) -> Vec<SlideTodo> {
    if let Some(dir) = coords_dir {
        let recorded = |rel: &str| writer.slide_record(rel).is_some_and(|r| r.coords.is_some());
        report_coords(dir, &found, &recorded, progress);
    }
    let mut todo = Vec::new();
    let mut no_mask: Vec<(PathBuf, String)> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for (abs, rel) in found {
        let mask = match masks {
            Masks::Dir(d) => {
                let m = user_mask::find(d, &abs);
                if m.is_none() {
                    no_mask.push((abs.clone(), rel.clone()));
                }
                m
            }
            _ => None,
        };
        let record = writer.slide_record(&rel).cloned();
        let had_tiles = writer.get(&rel).is_some();
        let coords = coords_file(coords_dir, &abs, record.as_ref(), progress);
        match record {
            Some(rec) if coords.is_some() || rec.coords.is_some() => {
                let facts = FileEntry {
                    path: rel.clone(),
                    size: rec.size,
                    mtime_ns: rec.mtime_ns,
                    crc32: rec.crc32,
                    region: None,
                };
                // Tiled by a coordinate file: the same file and the same slide file
                // are unchanged, whatever the grid flags (the grid is not used).
                let same = unchanged(&abs, &facts, racy_after)
                    && (coords.is_none() || rec.coords == coords);
                if same && rec.complete {
                    writer.stats_mut().unchanged += 1;
                } else {
                    todo.push(SlideTodo {
                        abs,
                        rel,
                        existed: true,
                        resume: same,
                        retile: None,
                        mask: None,
                        coords: coords.or(rec.coords),
                    });
                }
            }
            Some(rec) => {
                let facts = FileEntry {
                    path: rel.clone(),
                    size: rec.size,
                    mtime_ns: rec.mtime_ns,
                    crc32: rec.crc32,
                    region: None,
                };
                let same = unchanged(&abs, &facts, racy_after) && rec.tiling.same_grid(tiling);
                let changed = tissue_changed(&rec, tiling, masks, mask.as_deref());
                if same && rec.complete && changed.is_none() {
                    writer.stats_mut().unchanged += 1;
                } else {
                    let retile = changed.filter(|_| same);
                    reasons.extend(retile.clone());
                    todo.push(SlideTodo {
                        abs,
                        rel,
                        existed: true,
                        resume: same,
                        retile,
                        mask,
                        coords: None,
                    });
                }
            }
            None => todo.push(SlideTodo {
                abs,
                rel,
                existed: had_tiles,
                resume: false,
                retile: None,
                mask,
                coords,
            }),
        }
    }
    if let (Masks::Dir(d), Some((abs, rel))) = (masks, no_mask.first()) {
        let names: Vec<String> = user_mask::candidates(Path::new(""), abs)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        progress.warn(&format!(
            "--tissue-mask {}: no mask for {} slide(s), so their tissue is detected \
             (first: {rel}; looked for {})",
            d.display(),
            no_mask.len(),
            names.join(", ")
        ));
    }
    if !reasons.is_empty() {
        let n = reasons.len();
        reasons.sort();
        reasons.dedup();
        progress.info(&format!(
            "re-tiling {n} slide{} ({}); the tiles that stay are not embedded again",
            if n == 1 { "" } else { "s" },
            reasons.join(", ")
        ));
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
    pub(super) tiling: Tiling,
    /// Tiles embedded in this run, all slides together.
    pub(super) embedded: usize,
    /// Slides re-tiled in place (their tissue source changed).
    pub(super) retiled: RetileStats,
}

impl SlideRun<'_> {
    /// Plans and embeds one slide. Returns `Ok(false)` when the run was cancelled in
    /// the middle of it.
    pub(super) fn embed_slide(&mut self, todo: &SlideTodo) -> Result<bool> {
        let Some(((size, mtime_ns, crc32), plan)) = self.open_plan(todo) else {
            return Ok(true);
        };
        for w in plan.warnings() {
            self.progress.warn(&w);
        }
        let done = self.stored_to_keep(todo, &plan, crc32);
        let region = |i: usize| embed::tiles::tile_region(&plan, i);
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
            tiling: plan.options,
            complete: false,
            size,
            mtime_ns,
            crc32,
            detector: detector_version(),
            tissue_mask: plan.user_mask.as_ref().map(|(file, crc32)| MaskRecord {
                file: file.display().to_string(),
                crc32: *crc32,
            }),
            coords: todo.coords.clone(),
        };
        self.writer.set_slide_record(&todo.rel, record.clone());
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
        if todo.retile.is_some() {
            self.retiled.added += embedded;
        }
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
        if let Some(why) = &todo.retile {
            self.retiled.slides += 1;
            if !self.retiled.reasons.contains(why) {
                self.retiled.reasons.push(why.clone());
            }
        }
        let s = self.writer.stats_mut();
        if todo.existed {
            s.updated += 1;
        } else {
            s.added += 1;
        }
        Ok(true)
    }

    /// The slide file's facts and its tile plan; `None` when the slide was skipped
    /// (with a warning: [`Self::skip`]).
    fn open_plan(&mut self, todo: &SlideTodo) -> Option<((u64, i128, u32), TilePlan)> {
        let options = self.tiling;
        let facts = crate::source::stat(&todo.abs)
            .and_then(|(size, mtime)| Ok((size, mtime, crate::source::file_crc(&todo.abs)?)));
        let facts = match facts {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("{}: cannot read the file: {e}", todo.abs.display());
                self.skip(todo, reason);
                return None;
            }
        };
        let plan = match &todo.coords {
            Some(c) => TilePlan::with_coords_file(&todo.abs, &options, Path::new(&c.file)),
            None => TilePlan::with_mask_file(&todo.abs, &options, todo.mask.as_deref()),
        };
        match plan {
            Ok(p) => Some((facts, p)),
            // The user's mask or coordinate file is broken, not the slide: keep what
            // was indexed of it.
            Err(e @ (SlideError::Mask { .. } | SlideError::Coords { .. })) => {
                self.skip(todo, format!("{}: {e}", todo.abs.display()));
                None
            }
            Err(e) => {
                self.skip(todo, e.to_string());
                None
            }
        }
    }

    /// The stored tiles of the slide that stay: with `resume` (same file and grid),
    /// those the plan still keeps, the others removed one by one; else none (every old
    /// tile removed).
    fn stored_to_keep(
        &mut self,
        todo: &SlideTodo,
        plan: &TilePlan,
        crc32: u32,
    ) -> HashSet<RegionKey> {
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
        if !resume {
            if todo.existed {
                self.writer.remove(&todo.rel);
            }
            return HashSet::new();
        }
        let keep: HashSet<RegionKey> = (0..plan.tiles.len())
            .map(|i| embed::tiles::tile_region(plan, i).key())
            .collect();
        let mut stored = self.writer.regions_of(&todo.rel);
        let stale: Vec<RegionKey> = stored.difference(&keep).copied().collect();
        for k in &stale {
            self.writer.remove_region(&todo.rel, *k);
            stored.remove(k);
        }
        if todo.retile.is_some() {
            self.retiled.removed += stale.len();
        }
        stored
    }

    /// Skips a slide with a warning, counted. What was indexed of it stays, tiles and
    /// record: nothing indexed is lost because a slide cannot be planned now (a flag, a
    /// resolution, a read error, a broken mask), and the next run tries again (issue 27).
    fn skip(&mut self, todo: &SlideTodo, reason: String) {
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
    }
}
