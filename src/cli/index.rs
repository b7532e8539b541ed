//! `plip index`: the [`IndexJob`] with a progress bar, Ctrl-C handling and a
//! one-line summary.

use super::*;
use crate::job::{IndexJob, IndexOptions, Progress};
use crate::source::shard::Shard;

/// Progress on stderr: a bar when stderr is a terminal, warnings always.
struct BarProgress {
    bar: ProgressBar,
    cwd: PathBuf,
}

impl Progress for BarProgress {
    fn start(&self, total: u64) {
        self.bar.set_length(total);
    }
    fn grow(&self, n: u64) {
        self.bar.inc_length(n);
    }
    fn advance(&self) {
        self.bar.inc(1);
    }
    fn warn(&self, message: &str) {
        // Absolute paths in messages read better relative to where the user is.
        let cwd = self.cwd.display().to_string();
        let message = message.replace(&format!("{cwd}/"), "");
        self.bar.suspend(|| warn(message));
    }
    fn info(&self, message: &str) {
        self.bar.suspend(|| eprintln!("plip: {message}"));
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `--coords`: an existing folder, made absolute, and the HDF5 library to read it
/// (both checked before anything is written).
fn coords_dir(config: &Config, arg: Option<&Path>) -> Result<Option<PathBuf>> {
    let Some(d) = arg else { return Ok(None) };
    let d = absolute(&config.cwd, d);
    if !d.is_dir() {
        bail!(
            "--coords {}: not a folder (give the folder of TRIDENT's or CLAM's coordinate \
             files, the one holding patches/)",
            d.display()
        );
    }
    if !crate::hdf5::available() {
        return Err(crate::hdf5::H5Error::Missing {
            path: d,
            why: "libhdf5 could not be loaded".into(),
        }
        .into());
    }
    Ok(Some(d.canonicalize()?))
}

/// `--tissue-mask`, with a folder made absolute (it is recorded in the index).
fn mask_flag(arg: Option<&Path>) -> Result<crate::job::MaskFlag> {
    use crate::job::MaskFlag;
    Ok(match MaskFlag::parse(arg) {
        MaskFlag::Dir(d) => {
            if !d.is_dir() {
                bail!(
                    "--tissue-mask {}: not a folder (give the folder of your mask files, or \
                     `none` to detect tissue)",
                    d.display()
                );
            }
            MaskFlag::Dir(d.canonicalize()?)
        }
        other => other,
    })
}

pub(super) fn cmd_index(config: &Config, args: IndexArgs) -> Result<i32> {
    // No folder: the job re-scans every folder indexed before (or the index's
    // own folder, for an index that has none recorded).
    let dirs = args.dirs.clone();
    for d in &dirs {
        if !d.exists() {
            bail!("{} does not exist", d.display());
        }
    }
    let shard = args
        .shard
        .as_deref()
        .map(|spec| Shard::parse(spec, args.shards, |k| std::env::var(k).ok()))
        .transpose()?;
    let tissue_masks = mask_flag(args.tissue_mask.as_deref())?;
    let coords = coords_dir(config, args.coords.as_deref())?;
    let index_dir = config.index_for_writing();
    let source = config.model_source(if args.rebuild { None } else { Some(&index_dir) });
    let embedder = load_embedder(config, &source, Towers::VISION)?;
    // Resolved once per process (and cached per CPU): this is the same choice.
    let (_, chosen) = LoadOptions::resolve(config.precision, Towers::VISION)?;
    let mut writer = IndexWriter::open(&index_dir, embedder.info(), args.rebuild)?
        .with_precision(embedder.precision());
    writer.stats_mut().precision = Some(chosen.to_string());

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second handler cannot be installed in the same process (tests); ignore.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                // Second Ctrl-C: the user wants out now; the last commit is intact.
                std::process::exit(130);
            }
            eprintln!("\nplip: interrupted; committing what is done (Ctrl-C again to quit now)");
        });
    }
    let progress = BarProgress {
        bar: progress_bar(config, "images"),
        cwd: config.cwd.clone(),
    };
    let options = IndexOptions {
        batch_size: args.batch_size,
        commit_every: args.commit_every,
        shard,
        slides: crate::source::slide::TilingOverrides {
            mpp: args.mpp,
            tile: args.tile,
            min_tissue: args.min_tissue,
            slide_mpp: args.slide_mpp,
            keep_artifacts: args.keep_artifacts,
        },
        tissue_masks,
        coords,
        ..IndexOptions::default()
    };
    let summary = IndexJob::new(writer, dirs, options).run(embedder, &progress, &cancel)?;
    let stats = &summary.stats;
    let secs = summary.elapsed.as_secs_f64();
    if !config.quiet {
        eprintln!(
            "plip: {}{} {} added, {} updated, {} removed, {} unchanged, {} skipped \
             ({} embedded in {secs:.1}s, {:.1} images/s) → {}",
            shard.map_or_else(String::new, |s| format!("shard {s} ")),
            if summary.interrupted {
                "interrupted after"
            } else {
                "indexed:"
            },
            stats.added,
            stats.updated,
            stats.removed,
            stats.unchanged,
            stats.skipped.len(),
            summary.embedded,
            summary.embedded as f64 / secs.max(1e-9),
            paths::relative(&index_dir, &config.cwd),
        );
        eprintln!("plip: precision {chosen}");
        let r = &summary.retiled;
        if r.slides > 0 {
            eprintln!(
                "plip: re-tiled {} slide{} ({}): +{} tiles, −{}",
                thousands(r.slides),
                if r.slides == 1 { "" } else { "s" },
                r.reasons.join(", "),
                thousands(r.added),
                thousands(r.removed)
            );
        }
        if !stats.skipped.is_empty() {
            eprintln!(
                "plip: {} file(s) skipped; `plip info` lists them",
                stats.skipped.len()
            );
        }
    }
    Ok(if summary.interrupted { 130 } else { 0 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(3114), "3,114");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
