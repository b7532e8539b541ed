//! `plip info`: what an index holds and what the last run skipped.

use super::*;

pub(super) fn cmd_info(config: &Config, args: InfoArgs) -> Result<i32> {
    let index = open_index(config)?;
    let s = index.stats();
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["index"] = serde_json::json!(index.dir().display().to_string());
        v["updated"] = serde_json::json!(rfc3339(s.updated_unix));
        // The manifest omits the family of hf-clip indexes; the answer names it.
        v["model"]["family"] = serde_json::json!(s.model.family.name());
        if !index.slides().is_empty() {
            v["tiling"] = serde_json::to_value(index.tiling())?;
            v["slides"] = serde_json::to_value(index.slides())?;
        }
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "index:       {}",
        paths::relative(index.dir(), &config.cwd)
    )?;
    writeln!(out, "images:      {}", s.images)?;
    writeln!(
        out,
        "model:       {} ({})",
        s.model.source, s.model.fingerprint
    )?;
    writeln!(out, "family:      {}", s.model.family.name())?;
    writeln!(out, "dimensions:  {}", s.model.dim)?;
    let precision = match s.precision.as_str() {
        crate::index::MIXED => "mixed (f32 and bf16 rows; they agree to cosine 0.999)",
        p => p,
    };
    writeln!(out, "precision:   {precision}")?;
    if let Some(p) = &s.last_run.precision {
        writeln!(out, "             last run: {p}")?;
    }
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
        "updated:     {}, commit {}",
        local_time(s.updated_unix),
        s.generation
    )?;
    let r = &s.last_run;
    writeln!(
        out,
        "last run:    {} added, {} updated, {} removed, {} unchanged, {} skipped",
        r.added, r.updated, r.removed, r.unchanged, r.skipped_count
    )?;
    for k in &r.skipped {
        writeln!(out, "  skipped {}: {}", k.path, k.reason)?;
    }
    if let (Some(t), false) = (index.tiling(), index.slides().is_empty()) {
        writeln!(
            out,
            "slides:      {} (tiles of {} px at {} µm/px, kept at >= {} tissue)",
            index.slides().len(),
            t.tile,
            t.mpp,
            t.min_tissue
        )?;
        if let Some(d) = index.tissue_masks() {
            writeln!(
                out,
                "tissue masks: {d} (--tissue-mask; slides without one are detected)"
            )?;
        }
        for (path, r) in index.slides() {
            writeln!(
                out,
                "  {path}: {}x{} px, {} level(s), {:.4} µm/px ({}), {}, {} of {} tiles kept{}{}{}",
                r.width,
                r.height,
                r.levels,
                r.mpp,
                r.mpp_source,
                r.vendor,
                r.tiles_kept,
                r.tiles_total,
                if r.tiles_failed > 0 {
                    format!(", {} unreadable", r.tiles_failed)
                } else {
                    String::new()
                },
                match &r.tissue_mask {
                    Some(m) => format!(" by the mask {}", m.file),
                    None => String::new(),
                },
                if r.complete {
                    ""
                } else {
                    " (unfinished: re-run `plip index`)"
                }
            )?;
        }
    }
    Ok(0)
}

/// A Unix time as RFC 3339 in UTC (`2026-11-30T08:11:33Z`).
fn rfc3339(unix: u64) -> String {
    jiff::Timestamp::from_second(unix as i64).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

/// A Unix time as the local date and time, with the zone.
fn local_time(unix: u64) -> String {
    jiff::Timestamp::from_second(unix as i64)
        .map(|t| {
            t.to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_else(|_| format!("{unix} (unix time)"))
}
