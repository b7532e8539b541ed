//! `plip embed`: raw embeddings of prompts or images, as `.npy` or JSON Lines.

use super::*;

pub(super) fn cmd_embed(config: &Config, args: EmbedArgs) -> Result<i32> {
    if args.texts.is_empty() == args.images.is_empty() {
        bail!("give either images or --text prompts (not both, not neither)");
    }
    let source = config.model_source(config.find_index().ok().as_deref());
    let mut regions: Vec<Option<crate::index::Region>> = Vec::new();
    let (rows, labels): (Vec<Vec<f32>>, Vec<String>) = if !args.texts.is_empty() {
        if let Some(i) = args.texts.iter().position(|t| t.trim().is_empty()) {
            bail!("--text number {} is empty", i + 1);
        }
        let e = load_embedder(config, &source, Towers::TEXT)?;
        let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
        (e.embed_texts(&refs)?, args.texts.clone())
    } else {
        for p in &args.images {
            if !p.is_file() {
                bail!("{} is not a file", p.display());
            }
        }
        let e = load_embedder(config, &source, Towers::VISION)?;
        if args
            .images
            .iter()
            .any(|p| crate::source::slide::is_slide(p))
        {
            return embed_with_slides(config, &args, &e);
        }
        let dim = e.dim();
        let cancel = AtomicBool::new(false);
        let flat = crate::embed::embed_image_files(&e, &args.images, args.batch_size, &cancel)?;
        let rows = flat.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        let labels = args
            .images
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        (rows, labels)
    };
    regions.resize(rows.len(), None);
    write_rows(config, &args, &rows, &labels, &regions)
}

/// Embeds images and whole slides (one row per kept tile), in input order.
fn embed_with_slides(config: &Config, args: &EmbedArgs, e: &Embedder) -> Result<i32> {
    let flags = args.tiling.flags();
    let masks = args.tiling.masks();
    let (mut rows, mut labels, mut regions) = (Vec::new(), Vec::new(), Vec::new());
    let cancel = AtomicBool::new(false);
    for p in &args.images {
        let label = p.display().to_string();
        if crate::source::slide::is_slide(p) {
            let (plan, _) = super::slides::plan_with_flags(config, p, &flags, &masks)?;
            let (tiles, failed) = crate::embed::tiles::embed_tiles(e, &plan, args.batch_size)?;
            if !failed.is_empty() {
                warn(format!(
                    "{}: skipped {} tile(s) that could not be read (first: {})",
                    p.display(),
                    failed.len(),
                    failed[0]
                ));
            }
            for (r, v) in tiles {
                rows.push(v);
                labels.push(label.clone());
                regions.push(Some(r));
            }
        } else {
            let mut row = Vec::new();
            crate::embed::embed_files(e, std::slice::from_ref(p), 1, &cancel, |r| {
                match r.outcome {
                    Ok((v, _)) => {
                        row = v;
                        Ok(())
                    }
                    Err(reason) => bail!("cannot embed {}: {reason}", r.path.display()),
                }
            })?;
            rows.push(row);
            labels.push(label);
            regions.push(None);
        }
    }
    if rows.is_empty() {
        bail!("no tissue tiles and no images to embed");
    }
    write_rows(config, args, &rows, &labels, &regions)
}

fn write_rows(
    config: &Config,
    args: &EmbedArgs,
    rows: &[Vec<f32>],
    labels: &[String],
    regions: &[Option<crate::index::Region>],
) -> Result<i32> {
    let dim = rows[0].len();
    if args.jsonl {
        let mut out = std::io::stdout().lock();
        for ((label, row), region) in labels.iter().zip(rows).zip(regions) {
            let v = match region {
                Some(r) => serde_json::json!({"input": label, "x": r.x, "y": r.y, "w": r.w,
                    "h": r.h, "level": r.level, "embedding": row}),
                None => serde_json::json!({"input": label, "embedding": row}),
            };
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
        }
        out.flush()?;
    } else {
        let path = args
            .output
            .as_ref()
            .expect("clap requires --output without --jsonl");
        let mut buf = Vec::new();
        crate::output::npy::write_f32(&mut buf, rows, dim)?;
        std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))?;
        if !config.quiet {
            eprintln!(
                "plip: wrote {} x {dim} embeddings to {}",
                rows.len(),
                path.display()
            );
        }
    }
    Ok(0)
}
