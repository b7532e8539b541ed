//! `plip merge SHARD... --index OUT`: joins shard indexes (one per task of a
//! `plip index --shard` job) into one ordinary index, through
//! [`crate::index::merge`], and says what it did.

use super::*;

pub(super) fn cmd_merge(config: &Config, args: MergeArgs) -> Result<i32> {
    let Some(out) = &config.index else {
        bail!("give the merged index's folder with --index OUT (e.g. plip merge shards/* --index .plip)");
    };
    let out = absolute(&config.cwd, out);
    let shards: Vec<PathBuf> = args
        .shards
        .iter()
        .map(|s| absolute(&config.cwd, s))
        .collect();
    let started = std::time::Instant::now();
    let report = crate::index::merge(&shards, &out, args.replace)?;
    let shown = |p: &Path| paths::relative(p, &config.cwd);
    for (path, kept, dropped) in report.duplicates.iter().take(10) {
        warn(format!(
            "{} is in {} and {}; kept the first",
            paths::display(path),
            shown(kept),
            shown(dropped)
        ));
    }
    if report.duplicates.len() > 10 {
        warn(format!(
            "… and {} more duplicates",
            report.duplicates.len() - 10
        ));
    }
    if !config.quiet {
        eprintln!(
            "plip: merged {} shards: {} items in {} segments, {} duplicate(s) dropped, \
             {} files linked, {} copied{} ({:.1}s) → {}",
            report.shards,
            report.items,
            report.segments,
            report.duplicates.len(),
            report.linked,
            report.copied,
            if report.rebased {
                ", paths rebased"
            } else {
                ""
            },
            started.elapsed().as_secs_f64(),
            shown(&out),
        );
    }
    Ok(0)
}
