//! `plip info`: what an index holds and what the last run skipped.

use super::*;

pub(super) fn cmd_info(config: &Config, args: InfoArgs) -> Result<i32> {
    let index = open_index(config)?;
    let s = index.stats();
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["index"] = serde_json::json!(index.dir().display().to_string());
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "index:       {}",
        walk::relative(index.dir(), &config.cwd)
    )?;
    writeln!(out, "images:      {}", s.images)?;
    writeln!(
        out,
        "model:       {} ({})",
        s.model.source, s.model.fingerprint
    )?;
    writeln!(out, "dimensions:  {}", s.model.dim)?;
    writeln!(
        out,
        "segments:    {} ({} tombstoned rows)",
        s.segments, s.tombstones
    )?;
    writeln!(
        out,
        "size:        {:.1} MiB",
        s.bytes_on_disk as f64 / (1 << 20) as f64
    )?;
    writeln!(
        out,
        "updated:     {} (unix time), commit {}",
        s.updated_unix, s.generation
    )?;
    let r = &s.last_run;
    writeln!(
        out,
        "last run:    {} added, {} updated, {} removed, {} unchanged, {} skipped",
        r.added,
        r.updated,
        r.removed,
        r.unchanged,
        r.skipped.len()
    )?;
    for k in &r.skipped {
        writeln!(out, "  skipped {}: {}", k.path, k.reason)?;
    }
    Ok(0)
}
