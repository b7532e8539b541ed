//! `plip eval`: loading labelled data, embedding it (with a cache), and handing it
//! to the metric code in `eval`.
//!
//! Image embeddings are cached per model under the cache folder
//! (`$XDG_CACHE_HOME/plip`, else `~/.cache/plip`, or `--cache DIR`), keyed by the
//! file's path, size and mtime, so re-running an eval with other templates or
//! labels does not embed the images again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::embed::{self, Embedder};
use crate::eval;
use crate::index::ann::{self, AnnGraph, AnnParams};
use crate::index::Index;
use crate::source::walk;

/// PLIP's zero-shot prompt template.
pub(crate) const DEFAULT_TEMPLATE: &str = "An H&E image patch of {}.";

#[derive(Default, Serialize, Deserialize)]
struct Cache {
    entries: HashMap<String, (u64, i128, Vec<f32>)>,
}

/// Embeds image files through a per-model cache; failures are reported per file.
pub(crate) struct CachedImages<'a> {
    embedder: &'a Embedder,
    path: Option<PathBuf>,
    cache: Cache,
}

impl<'a> CachedImages<'a> {
    /// Opens the cache for `embedder`'s model in `dir` (None disables caching).
    pub(crate) fn new(embedder: &'a Embedder, dir: Option<PathBuf>) -> Self {
        // f32 keeps the name it always had; other precisions get their own file.
        let suffix = match embedder.precision() {
            crate::backend::cpu::Precision::F32 => String::new(),
            p => format!("-{p}"),
        };
        let fingerprint = &embedder.info().fingerprint;
        let path = dir.map(|d| d.join(format!("embeddings-{fingerprint}{suffix}.bin")));
        let cache = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| bincode::serde::decode_from_slice(&b, bincode::config::standard()).ok())
            .map(|(c, _)| c)
            .unwrap_or_default();
        CachedImages {
            embedder,
            path,
            cache,
        }
    }

    /// Unit vectors of `paths`, in order; `Err(reason)` for files that failed.
    pub(crate) fn embed(
        &mut self,
        paths: &[PathBuf],
        batch: usize,
    ) -> Result<Vec<std::result::Result<Vec<f32>, String>>> {
        let mut out: Vec<Option<std::result::Result<Vec<f32>, String>>> = vec![None; paths.len()];
        let mut todo = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let key = std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string();
            match (crate::source::stat(p), self.cache.entries.get(&key)) {
                (Ok((size, mtime)), Some((s, m, v))) if *s == size && *m == mtime => {
                    out[i] = Some(Ok(v.clone()))
                }
                _ => todo.push(i),
            }
        }
        let todo_paths: Vec<PathBuf> = todo.iter().map(|&i| paths[i].clone()).collect();
        let cancel = AtomicBool::new(false);
        embed::embed_files(self.embedder, &todo_paths, batch, &cancel, |r| {
            let i = todo[r.index];
            out[i] = Some(match r.outcome {
                Ok((v, img)) => {
                    let key = std::path::absolute(&paths[i])
                        .unwrap_or_else(|_| paths[i].clone())
                        .display()
                        .to_string();
                    self.cache
                        .entries
                        .insert(key, (img.size, img.mtime_ns, v.clone()));
                    Ok(v)
                }
                Err(e) => Err(e),
            });
            Ok(())
        })?;
        if let (Some(p), false) = (&self.path, todo.is_empty()) {
            if let Some(dir) = p.parent() {
                let bytes =
                    bincode::serde::encode_to_vec(&self.cache, bincode::config::standard())?;
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("cache");
                // Atomic, so a crash never leaves a half-written cache. A cache that
                // cannot be written costs only time next run: warn and go on.
                let written = std::fs::create_dir_all(dir)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| Ok(crate::index::write_atomic(dir, name, &bytes)?));
                if let Err(e) = written {
                    eprintln!(
                        "plip: warning: cannot write the embedding cache {}: {e:#}; \
                         going on without it (--no-cache silences this)",
                        p.display()
                    );
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every file has an outcome"))
            .collect())
    }
}

/// The default cache folder.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("plip"))
}

/// `plip eval retrieval`: reads `pairs.csv`, embeds, reports both directions.
pub(crate) fn retrieval(
    embedder: &Embedder,
    images: &mut CachedImages,
    pairs: &Path,
    ks: &[usize],
    json: bool,
    html: Option<&Path>,
    out: &mut impl Write,
) -> Result<()> {
    let base = pairs.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut rdr =
        csv::Reader::from_path(pairs).with_context(|| format!("reading {}", pairs.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(ic), Some(cc)) = (col("image"), col("caption")) else {
        bail!(
            "{} must have a header with `image` and `caption` columns (found: {})",
            pairs.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        );
    };
    let mut rows = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let line = n + 2;
        let rec = rec.with_context(|| format!("{} row {line}", pairs.display()))?;
        let (Some(img), Some(cap)) = (rec.get(ic), rec.get(cc)) else {
            bail!(
                "{} row {line}: missing image or caption column",
                pairs.display()
            );
        };
        if cap.trim().is_empty() {
            bail!("{} row {line}: empty caption", pairs.display());
        }
        rows.push((line, base.join(img.trim()), cap.to_string()));
    }
    if rows.is_empty() {
        bail!("{} has no rows", pairs.display());
    }
    let paths: Vec<PathBuf> = rows.iter().map(|r| r.1.clone()).collect();
    let vecs = images.embed(&paths, 16)?;
    let mut kept_img = Vec::new();
    let mut kept_cap = Vec::new();
    let mut kept_paths = Vec::new();
    let mut skipped = 0;
    for ((line, path, cap), v) in rows.iter().zip(vecs) {
        match v {
            Ok(v) => {
                kept_img.push((v, crate::source::file_crc(path).unwrap_or(0) as u64));
                kept_cap.push(cap.as_str());
                kept_paths.push(path.clone());
            }
            Err(e) => {
                eprintln!(
                    "plip: warning: {} row {line}: skipping {}: {e}",
                    pairs.display(),
                    path.display()
                );
                skipped += 1;
            }
        }
    }
    if kept_img.is_empty() {
        bail!("no image in {} could be read", pairs.display());
    }
    let cap_vecs = embedder.embed_texts(&kept_cap)?;
    let cap_groups: Vec<u64> = kept_cap
        .iter()
        .map(|c| crc32fast::hash(c.as_bytes()) as u64 | ((c.len() as u64) << 32))
        .collect();
    let (img_vecs, img_groups): (Vec<Vec<f32>>, Vec<u64>) = kept_img.into_iter().unzip();
    let report = eval::retrieval(&img_vecs, &cap_vecs, &img_groups, &cap_groups, ks)?;
    let run = eval::provenance::record(
        "retrieval",
        embedder.info(),
        None,
        None,
        serde_json::json!({"pairs": report.n}),
    );
    if let Some(page) = html {
        let items = eval::html::RetrievalItems {
            images: &img_vecs,
            captions: &cap_vecs,
            image_groups: &img_groups,
            caption_groups: &cap_groups,
            image_paths: &kept_paths,
            caption_texts: &kept_cap,
        };
        eval::html::write_page(page, |w| {
            eval::html::write_retrieval_report(w, &report, &run, &items)
        })?;
    }
    if json {
        let mut v = eval::provenance::attach(serde_json::to_value(&report)?, &run);
        v["skipped"] = serde_json::json!(skipped);
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        eval::print_retrieval_table(out, &report)?;
        if skipped > 0 {
            writeln!(out, "{skipped} pair(s) skipped: unreadable image")?;
        }
    }
    Ok(())
}

/// `plip eval zero-shot`: ImageFolder-style classes, ensembled prompt templates.
#[allow(clippy::too_many_arguments)]
pub(crate) fn zero_shot(
    embedder: &Embedder,
    images: &mut CachedImages,
    dir: &Path,
    labels: Option<&Path>,
    templates: &[String],
    json: bool,
    html: Option<&Path>,
    out: &mut impl Write,
) -> Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a folder of class subfolders", dir.display());
    }
    let mut folders: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    if folders.is_empty() {
        bail!("{} has no class subfolders", dir.display());
    }
    // Class names (with synonyms) and templates: eval::prompts.
    let table = labels.map(eval::prompts::load_labels).transpose()?;
    let (synonyms, unused) = eval::prompts::class_names(&folders, table.as_ref());
    for w in unused {
        eprintln!("plip: warning: {w}");
    }
    let class_names: Vec<String> = synonyms.iter().map(|s| s.join(" | ")).collect();
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (f, name) in folders.iter().zip(&class_names) {
        if let Some(other) = seen.insert(name.as_str(), f.as_str()) {
            bail!(
                "folders {other:?} and {f:?} have the same class name {name:?}; every class \
                 needs its own name, or their prompts tie"
            );
        }
    }
    let templates: Vec<String> = if templates.is_empty() {
        vec![DEFAULT_TEMPLATE.to_string()]
    } else {
        templates.to_vec()
    };
    let class_embs = synonyms
        .iter()
        .map(|names| eval::prompts::class_embedding(embedder, names, &templates))
        .collect::<Result<Vec<_>>>()?;
    let mut paths = Vec::new();
    let mut truth = Vec::new();
    for (c, f) in folders.iter().enumerate() {
        let walked = walk::find_images(&dir.join(f))?;
        for w in &walked.warnings {
            eprintln!("plip: warning: {w}");
        }
        let files = walked.files;
        if files.is_empty() {
            eprintln!("plip: warning: class folder {f} has no images");
        }
        truth.extend(std::iter::repeat_n(c, files.len()));
        paths.extend(files);
    }
    let vecs = images.embed(&paths, 16)?;
    let (mut kept, mut labels_kept, mut skipped) = (Vec::new(), Vec::new(), 0);
    let mut kept_paths = Vec::new();
    for ((v, c), p) in vecs.into_iter().zip(truth).zip(&paths) {
        match v {
            Ok(v) => {
                kept.push(v);
                labels_kept.push(c);
                kept_paths.push(p.clone());
            }
            Err(e) => {
                eprintln!("plip: warning: skipping {}: {e}", p.display());
                skipped += 1;
            }
        }
    }
    if kept.is_empty() {
        bail!("no readable images under {}", dir.display());
    }
    let report = eval::zero_shot(&kept, &labels_kept, &class_embs, &class_names)?;
    let run = eval::provenance::record(
        "zero-shot",
        embedder.info(),
        Some(&templates),
        None,
        serde_json::json!({"test": report.n}),
    );
    if let Some(page) = html {
        let mistakes =
            eval::html::zero_shot_mistakes(&kept, &labels_kept, &class_embs, &kept_paths);
        eval::html::write_page(page, |w| {
            eval::html::write_classification(w, "plip eval zero-shot", &report, &run, "", &mistakes)
        })?;
    }
    if json {
        let mut v = eval::provenance::attach(serde_json::to_value(&report)?, &run);
        v["templates"] = serde_json::json!(templates);
        v["skipped"] = serde_json::json!(skipped);
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        eval::print_classification_table(out, &report)?;
        if skipped > 0 {
            writeln!(out, "{skipped} image(s) skipped: unreadable")?;
        }
    }
    Ok(())
}

/// One `ef` row of `plip eval ann`.
#[derive(Serialize)]
struct AnnRow {
    ef: usize,
    recall: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `plip eval ann`: HNSW top-k against exact top-k over the index's vectors.
pub(crate) fn ann(
    index: &Index,
    queries: usize,
    k: usize,
    json: bool,
    html: Option<&Path>,
    out: &mut impl Write,
) -> Result<()> {
    let dim = index.model().dim;
    let vectors: Vec<f32> = index.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let n = vectors.len() / dim;
    if n == 0 {
        bail!("the index is empty; run `plip index DIR` first");
    }
    let t = Instant::now();
    let graph = AnnGraph::build(&vectors, dim, &AnnParams::default())?;
    let build_s = t.elapsed().as_secs_f64();
    let q = queries.min(n).max(1);
    // Evenly spaced rows as queries: deterministic, and spread over the index.
    let ids: Vec<usize> = (0..q).map(|i| i * n / q).collect();
    let exact: Vec<Vec<(usize, f32)>> = ids
        .iter()
        .map(|&i| {
            ann::exact_search(&vectors, dim, &vectors[i * dim..(i + 1) * dim], k, None)
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect()
        })
        .collect();
    let mut rows = Vec::new();
    for ef in [16, 32, 64, 128, 256] {
        let mut lat = Vec::new();
        let mut approx = Vec::new();
        for &i in &ids {
            let t = Instant::now();
            let hits = graph.search(&vectors[i * dim..(i + 1) * dim], k, ef.max(k), None);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            approx.push(
                hits.into_iter()
                    .map(|h| (h.id, h.score))
                    .collect::<Vec<_>>(),
            );
        }
        rows.push(AnnRow {
            ef,
            recall: eval::ann_recall_with_ties(&exact, &approx, k)?,
            p50_ms: eval::percentile(&lat, 50.0).unwrap_or(0.0),
            p99_ms: eval::percentile(&lat, 99.0).unwrap_or(0.0),
        });
    }
    let run = eval::provenance::record(
        "ann",
        index.model(),
        None,
        None,
        serde_json::json!({"vectors": n, "queries": q}),
    );
    if let Some(page) = html {
        let table: Vec<(usize, f64, f64, f64)> = rows
            .iter()
            .map(|r| (r.ef, r.recall, r.p50_ms, r.p99_ms))
            .collect();
        eval::html::write_page(page, |w| eval::html::write_ann(w, k, &table, &run))?;
    }
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &eval::provenance::attach(
                serde_json::json!({"n": n, "queries": q, "k": k, "build_seconds": build_s, "default_ef": ann::DEFAULT_EF_SEARCH, "rows": rows}),
                &run,
            ),
        )?;
        writeln!(out)?;
    } else {
        writeln!(out, "{n} vectors, {q} queries, recall@{k} of HNSW against exact search (graph built in {build_s:.2}s)")?;
        if n <= k {
            writeln!(
                out,
                "note: only {n} vectors, so k={k} covers the whole index"
            )?;
        }
        writeln!(
            out,
            "{:>5}  {:>9}  {:>9}  {:>9}",
            "ef", "recall", "p50 ms", "p99 ms"
        )?;
        for r in &rows {
            let mark = if r.ef == ann::DEFAULT_EF_SEARCH {
                "  (default)"
            } else {
                ""
            };
            writeln!(
                out,
                "{:>5}  {:>9.4}  {:>9.3}  {:>9.3}{mark}",
                r.ef, r.recall, r.p50_ms, r.p99_ms
            )?;
        }
    }
    Ok(())
}
