//! The incremental indexing run, as a library type: find what is there, work out
//! what changed since the last commit, embed that in batches, and commit as it
//! goes.
//!
//! The command line, a future server or a shard worker all run the same
//! [`IndexJob`]; they differ only in how they report progress ([`Progress`]) and
//! how they ask it to stop (the `cancel` flag). The rules it keeps:
//!
//! * an item is re-embedded when its size or mtime changed, and its content is
//!   compared (CRC32) when those cannot decide: the same size, or an mtime so
//!   close to the last commit that the file may have changed within the same
//!   clock tick (git's "racy" rule);
//! * work is committed every `commit_every` new vectors or `commit_interval`,
//!   whichever comes first, so a crash loses at most that much;
//! * a cancelled run commits what it embedded and skips the compaction;
//! * whole slides (`slides.rs`) are cut into tissue tiles, each an item with the
//!   slide's path and a region, and change detection is per slide.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::embed::{self, Embedder};
use crate::index::paths;
use crate::index::{self, FileEntry, IndexWriter, RunStats, Skipped};
use crate::source::slide::TilingOverrides;
use crate::source::{slide, walk};

mod slides;
pub(crate) use slides::{mpp_source_name, MaskFlag, RetileStats};

/// How an indexing run reports what it does. Every method has a default that
/// does nothing, so a caller implements only what it shows.
pub(crate) trait Progress {
    /// The number of items that will be embedded is known.
    fn start(&self, _total: u64) {}
    /// `n` more items will be embedded (the tiles of a slide, once planned).
    fn grow(&self, _n: u64) {}
    /// One item was embedded or skipped.
    fn advance(&self) {}
    /// Something the user should know, such as a skipped file.
    fn warn(&self, _message: &str) {}
    /// What the run is doing, when it is out of the ordinary (re-tiling slides).
    fn info(&self, _message: &str) {}
    /// Embedding is over (finished, cancelled or failed).
    fn finish(&self) {}
}

/// Settings of one run.
#[derive(Clone, Debug)]
pub(crate) struct IndexOptions {
    /// Images per model batch.
    pub(crate) batch_size: usize,
    /// Commit at least every this many newly embedded images.
    pub(crate) commit_every: usize,
    /// ... and at least this often.
    pub(crate) commit_interval: Duration,
    /// Index only the items of this shard (`source/shard.rs`).
    pub(crate) shard: Option<crate::source::shard::Shard>,
    /// How whole slides are tiled (flags not given keep the index's tiling).
    pub(crate) slides: TilingOverrides,
    /// `--tissue-mask`: the users' own tissue masks (not given: the index's choice).
    pub(crate) tissue_masks: MaskFlag,
    /// `--coords`: TRIDENT's or CLAM's coordinate files, whose patches replace the
    /// grid of the slides they name (`source/slide/coords.rs`).
    pub(crate) coords: Option<PathBuf>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            batch_size: 16,
            commit_every: 256,
            commit_interval: Duration::from_secs(30),
            shard: None,
            slides: TilingOverrides::default(),
            tissue_masks: MaskFlag::default(),
            coords: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub(crate) struct JobSummary {
    /// Added, updated, removed, unchanged and skipped counts.
    pub(crate) stats: RunStats,
    /// Vectors computed in this run.
    pub(crate) embedded: usize,
    /// The run was cancelled; what was done is committed.
    pub(crate) interrupted: bool,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
    /// Slides re-tiled in place because their tissue source changed.
    pub(crate) retiled: RetileStats,
}

/// One item to embed: its absolute path, the path stored in the index, and
/// whether the index already had an (outdated) entry for it.
struct Todo {
    abs: PathBuf,
    rel: String,
    existed: bool,
}

/// Commits every `every` pending rows or `interval`, whichever comes first.
pub(crate) struct Committer {
    every: usize,
    interval: Duration,
    last: Instant,
}

impl Committer {
    fn new(options: &IndexOptions) -> Self {
        Committer {
            every: options.commit_every.max(1),
            interval: options.commit_interval,
            last: Instant::now(),
        }
    }

    /// Commits when enough rows or time have piled up (with the failpoints).
    fn maybe_commit(&mut self, writer: &mut IndexWriter, cancel: &AtomicBool) -> Result<()> {
        if writer.pending() >= self.every || self.last.elapsed() > self.interval {
            failpoint::pause("before-commit", writer.generation() + 1, cancel);
            writer.commit()?;
            failpoint::pause("after-commit", writer.generation(), cancel);
            self.last = Instant::now();
        }
        Ok(())
    }
}

/// An indexing run over some folders into one index.
pub(crate) struct IndexJob {
    writer: IndexWriter,
    roots: Vec<PathBuf>,
    options: IndexOptions,
}

impl IndexJob {
    /// A run that indexes `roots` (folders or image files) with `writer`.
    pub(crate) fn new(writer: IndexWriter, roots: Vec<PathBuf>, options: IndexOptions) -> Self {
        IndexJob {
            writer,
            roots,
            options,
        }
    }

    /// Runs to the end, or until `cancel` is set. The embedder is dropped (and
    /// its memory returned to the system) before the final compaction, whose
    /// graph build is the run's memory peak.
    pub(crate) fn run(
        mut self,
        embedder: Embedder,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<JobSummary> {
        let started = Instant::now();
        // The faces check the flags as they parse them; this is the last line of
        // defence before the plan can remove anything (issue 27).
        if let Err(e) = self.options.slides.validate() {
            anyhow::bail!("invalid tiling, nothing was changed: {e}");
        }
        let (todo, slide_todo, tiling) = self.plan(progress)?;
        progress.start(todo.len() as u64);
        let paths: Vec<PathBuf> = todo.iter().map(|t| t.abs.clone()).collect();
        let writer = &mut self.writer;
        let options = &self.options;
        let mut committer = Committer::new(options);
        let mut embedded = 0usize;
        let mut retiled = RetileStats::default();
        let result = embed::embed_files(&embedder, &paths, options.batch_size, cancel, |r| {
            let item = &todo[r.index];
            match r.outcome {
                Ok((vector, img)) => {
                    let entry = FileEntry {
                        path: item.rel.clone(),
                        size: img.size,
                        mtime_ns: img.mtime_ns,
                        crc32: img.crc32,
                        region: None,
                    };
                    writer.add(entry, &vector);
                    let s = writer.stats_mut();
                    if item.existed {
                        s.updated += 1;
                    } else {
                        s.added += 1;
                    }
                    embedded += 1;
                }
                Err(reason) => {
                    progress.warn(&format!("skipping {}: {reason}", r.path.display()));
                    if item.existed {
                        // The file is now unreadable: do not keep serving its old vector.
                        writer.remove(&item.rel);
                        writer.stats_mut().removed += 1;
                    }
                    writer.stats_mut().skipped.push(Skipped {
                        path: item.rel.clone(),
                        reason,
                    });
                }
            }
            progress.advance();
            committer.maybe_commit(writer, cancel)
        });
        let result = result.and_then(|()| {
            let mut run = slides::SlideRun {
                embedder: &embedder,
                writer: &mut self.writer,
                committer: &mut committer,
                progress,
                cancel,
                batch_size: options.batch_size,
                tiling,
                embedded: 0,
                retiled: RetileStats::default(),
            };
            let mut done = Ok(());
            for s in &slide_todo {
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                match run.embed_slide(s) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        done = Err(e);
                        break;
                    }
                }
            }
            embedded += run.embedded;
            retiled = run.retiled;
            done
        });
        progress.finish();
        // The weights (600 MB for PLIP) are not needed for the commit or the
        // compaction. Dropping them alone left them resident (the allocator keeps
        // freed memory); the trim returns them: RSS 472 -> 45 MB after 100 images
        // with the full-size model.
        drop(embedder);
        crate::backend::cpu::release_free_memory();
        let interrupted = cancel.load(Ordering::SeqCst);
        if let Err(e) = result {
            // Keep what was embedded before the failure.
            self.writer.commit()?;
            return Err(e);
        }
        if interrupted {
            self.writer.commit()?;
        } else {
            self.writer.compact()?;
        }
        Ok(JobSummary {
            stats: self.writer.stats_mut().clone(),
            embedded,
            interrupted,
            elapsed: started.elapsed(),
            retiled,
        })
    }

    /// Walks the roots, removes entries whose files are gone, counts the
    /// unchanged ones, and returns what must be embedded, in path order.
    ///
    /// Only what the walk covered can be removed: entries outside the roots of
    /// this run, under a folder that could not be read, or under a recorded
    /// root that is missing now, are kept as they are.
    fn plan(
        &mut self,
        progress: &dyn Progress,
    ) -> Result<(
        Vec<Todo>,
        Vec<slides::SlideTodo>,
        crate::source::slide::Tiling,
    )> {
        let root = index::root_of(self.writer.dir());
        let Walked {
            mut found,
            scopes,
            keep_under,
        } = self.walk_roots(&root, progress)?;
        found.sort_by(|a, b| a.1.cmp(&b.1));
        found.dedup_by(|a, b| a.1 == b.1);
        let present: HashSet<&str> = found.iter().map(|f| f.1.as_str()).collect();
        let covered = |p: &str| {
            scopes.iter().any(|s| paths::is_under(p, s))
                && !keep_under.iter().any(|u| paths::is_under(p, u))
        };
        let gone: Vec<String> = self
            .writer
            .paths()
            .filter(|p| covered(p) && !present.contains(p))
            .map(str::to_string)
            .collect();
        // A fresh count for this run; the precision it runs in was set by the caller.
        let mut stats = RunStats {
            precision: self.writer.stats_mut().precision.take(),
            ..RunStats::default()
        };
        for p in &gone {
            self.writer.remove(p);
            stats.removed += 1;
        }
        let racy_after = (self.writer.committed_unix() as i128 - 2) * 1_000_000_000;
        *self.writer.stats_mut() = stats;
        let (slide_found, found): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|(abs, _)| slide::is_slide(abs));
        let tiling = self.options.slides.over(self.writer.tiling());
        if !slide_found.is_empty() {
            if let Some(old) = self.writer.tiling().filter(|t| !t.same_grid(&tiling)) {
                progress.warn(&format!(
                    "the tiling changed from {} to {}: slides are tiled again",
                    old.describe(),
                    tiling.describe()
                ));
            }
            self.writer.set_tiling(tiling);
        }
        let masks = self.tissue_masks(progress, !slide_found.is_empty());
        let slide_todo = slides::plan(
            &mut self.writer,
            slide_found,
            &tiling,
            racy_after,
            &masks,
            self.options.coords.as_deref(),
            progress,
        );
        let mut stats = std::mem::take(self.writer.stats_mut());
        let mut todo = Vec::new();
        for (abs, rel) in found {
            if self.writer.slide_record(&rel).is_some() {
                // Was a slide, is now an ordinary image: drop its tiles.
                self.writer.remove(&rel);
            }
            let Some(old) = self.writer.get(&rel).cloned() else {
                todo.push(Todo {
                    abs,
                    rel,
                    existed: false,
                });
                continue;
            };
            if unchanged(&abs, &old, racy_after) {
                stats.unchanged += 1;
            } else {
                todo.push(Todo {
                    abs,
                    rel,
                    existed: true,
                });
            }
        }
        *self.writer.stats_mut() = stats;
        Ok((todo, slide_todo, tiling))
    }
}

/// What a run's walk found: files (absolute, stored path), the stored folders it
/// covered, and folders under them that could not be read (their entries are kept).
struct Walked {
    found: Vec<(PathBuf, String)>,
    scopes: Vec<String>,
    keep_under: Vec<String>,
}

impl IndexJob {
    /// Walks this run's roots (or every folder indexed before), recording each as
    /// an indexed root, keeping only this shard's files.
    fn walk_roots(&mut self, root: &Path, progress: &dyn Progress) -> Result<Walked> {
        let roots = if self.roots.is_empty() {
            // A plain `plip index`: every folder indexed before.
            let recorded = self.writer.roots();
            if recorded.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                recorded.iter().map(|r| paths::resolve(root, r)).collect()
            }
        } else {
            self.roots.clone()
        };
        let mut found: Vec<(PathBuf, String)> = Vec::new();
        let mut scopes: Vec<String> = Vec::new();
        let mut keep_under: Vec<String> = Vec::new();
        for d in &roots {
            if !d.exists() && self.roots.is_empty() {
                progress.warn(&format!(
                    "{} was indexed before but is missing now; its images stay in the \
                     index (index it again when it is back, or use --rebuild)",
                    d.display()
                ));
                continue;
            }
            let walked = walk::find_images(d)?;
            for w in &walked.warnings {
                progress.warn(w);
            }
            keep_under.extend(walked.unreadable.iter().map(|u| paths::relative(u, root)));
            let abs = d.canonicalize()?;
            let scope = paths::relative(&abs, root);
            self.writer.add_root(&scope);
            scopes.push(scope);
            let shard = self.options.shard;
            let in_shard = |f: &PathBuf| shard.is_none_or(|s| s.owns_file(f, &abs));
            found.extend(walked.files.into_iter().filter(in_shard).map(|f| {
                let rel = paths::relative(&f, root);
                (f, rel)
            }));
        }
        Ok(Walked {
            found,
            scopes,
            keep_under,
        })
    }

    /// Where this run takes tissue from (`--tissue-mask`, else the index's record),
    /// recording the flag in the index.
    fn tissue_masks(&mut self, progress: &dyn Progress, has_slides: bool) -> slides::Masks {
        let flag = &self.options.tissue_masks;
        let dir = flag.resolve(self.writer.tissue_masks());
        if *flag != MaskFlag::Keep {
            let recorded = dir.as_ref().map(|d| d.display().to_string());
            self.writer.set_tissue_masks(recorded);
        }
        match dir {
            None => slides::Masks::Detect,
            Some(d) if d.is_dir() => slides::Masks::Dir(d),
            Some(d) => {
                if has_slides {
                    progress.warn(&format!(
                        "the tissue mask folder {} recorded in the index is missing: slides \
                         tiled by a mask keep their tiles, new or changed slides are detected \
                         (pass --tissue-mask DIR, or --tissue-mask none to detect all)",
                        d.display()
                    ));
                }
                slides::Masks::Missing(d)
            }
        }
    }
}

/// True when the file at `abs` still has the content recorded in `old`.
pub(crate) fn unchanged(abs: &Path, old: &FileEntry, racy_after: i128) -> bool {
    let Ok((size, mtime)) = crate::source::stat(abs) else {
        return false;
    };
    if size == old.size && mtime == old.mtime_ns && mtime < racy_after {
        true
    } else if size == old.size {
        crate::source::file_crc(abs).is_ok_and(|c| c == old.crc32)
    } else {
        false
    }
}

/// Failpoints for tests that interrupt a run at a known place, as tantivy's
/// `tests/failpoints` do, but reachable in the real binary:
/// `PLIP_FAILPOINT=after-commit:N` (or `before-commit:N`) makes the run wait at
/// that point of commit `N` (the index's generation) until it is cancelled, so a
/// test can kill it, signal it or start a second writer there without racing.
/// Unset, it costs one environment lookup per run.
mod failpoint {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    fn configured() -> Option<&'static (String, u64)> {
        static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
        SPEC.get_or_init(|| {
            let v = std::env::var("PLIP_FAILPOINT").ok()?;
            let (name, n) = v.split_once(':')?;
            Some((name.to_string(), n.trim().parse().ok()?))
        })
        .as_ref()
    }

    /// Waits here while `name` at `generation` is the configured failpoint and
    /// the run is not cancelled.
    pub(super) fn pause(name: &str, generation: u64, cancel: &AtomicBool) {
        if configured().is_some_and(|(n, g)| n == name && *g == generation) {
            eprintln!("plip: failpoint {name}:{generation} reached");
            while !cancel.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
