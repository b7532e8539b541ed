//! `plip embed`: raw embeddings of prompts or images, as `.npy` or JSON Lines.

use super::*;

pub(super) fn cmd_embed(config: &Config, args: EmbedArgs) -> Result<i32> {
    if args.texts.is_empty() == args.images.is_empty() {
        bail!("give either images or --text prompts (not both, not neither)");
    }
    let source = config.model_source(config.find_index().ok().as_deref());
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
        let mut rows = vec![Vec::new(); args.images.len()];
        let cancel = AtomicBool::new(false);
        crate::embed::embed_files(&e, &args.images, args.batch_size, &cancel, |r| {
            match r.outcome {
                Ok((v, _)) => {
                    rows[r.index] = v;
                    Ok(())
                }
                // Rows must line up with inputs, so a bad image fails the whole run.
                Err(reason) => bail!("cannot embed {}: {reason}", r.path.display()),
            }
        })?;
        let labels = args
            .images
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        (rows, labels)
    };
    let dim = rows[0].len();
    if args.jsonl {
        let mut out = std::io::stdout().lock();
        for (label, row) in labels.iter().zip(&rows) {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"input": label, "embedding": row}),
            )?;
            writeln!(out)?;
        }
        out.flush()?;
    } else {
        let path = args.output.expect("clap requires --output without --jsonl");
        let mut buf = Vec::new();
        crate::output::npy::write_f32(&mut buf, &rows, dim)?;
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
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
