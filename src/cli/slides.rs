//! `plip heatmap` and `plip tiles`: pictures of one whole slide.
//!
//! `tiles` is the check before a long run: the slide's thumbnail with the tissue mask
//! tinted and the kept tiles outlined, drawn from the same plan `plip index` would make
//! (same flags, the index's recorded tiling by default). `heatmap` colours each tile by
//! its cosine to a query; it uses the stored tile embeddings when the slide is in the
//! index, and embeds the tiles on the fly otherwise.

use super::*;
use crate::index::{Region, TileSettings};
use crate::job::SlideFlags;
use crate::output::slide_png;
use crate::source::slide::{tissue, TileOptions, TilePlan};

/// The tiling for a command on one slide: flags, else the index's, else the defaults.
fn tiling(config: &Config, flags: &SlideFlags) -> TileSettings {
    let recorded = config
        .find_index()
        .ok()
        .and_then(|d| Index::open(&d).ok())
        .and_then(|i| i.tiling());
    crate::job::resolve_tiling(flags, recorded)
}

fn plan(path: &Path, t: &TileSettings) -> Result<TilePlan> {
    let opts = TileOptions {
        mpp: t.mpp,
        tile: t.tile,
        min_tissue: t.min_tissue,
        user_mpp: t.slide_mpp,
    };
    TilePlan::new(path, &opts).with_context(|| format!("planning the tiles of {}", path.display()))
}

/// The warning for stored tiles that tissue detection could not decode (`plip index` says
/// the same).
pub(crate) fn skipped_tiles_warning(path: &Path, n: u64) -> String {
    format!(
        "{}: {n} stored tile(s) could not be decoded for tissue detection (counted as glass)",
        path.display()
    )
}

fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    img.save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", path.display()))
}

pub(super) fn cmd_tiles(config: &Config, args: TilesArgs) -> Result<i32> {
    let t = tiling(config, &args.flags());
    let plan = plan(&args.slide, &t)?;
    let slide = plan.slide();
    let l0 = slide.levels()[0];
    for w in slide.warnings() {
        warn(w.clone());
    }
    // The same warning `plip index` gives, so that "0 of 12 tiles kept" is explained.
    if plan.skipped_stored_tiles > 0 {
        warn(skipped_tiles_warning(
            &args.slide,
            plan.skipped_stored_tiles,
        ));
    }
    let mask = if t.min_tissue > 0.0 {
        Some(tissue::detect(slide).with_context(|| format!("tissue of {}", args.slide.display()))?)
    } else {
        None
    };
    let thumb = slide
        .thumbnail(args.size)
        .with_context(|| format!("thumbnail of {}", args.slide.display()))?;
    let regions: Vec<Region> = (0..plan.tiles.len())
        .map(|i| crate::embed::tiles::tile_region(&plan, i))
        .collect();
    let img = slide_png::tiling_preview(&thumb, l0.width, l0.height, mask.as_ref(), &regions);
    save_png(&img, &args.output)?;
    if !config.quiet {
        let (mpp, src) = (plan.slide_mpp, crate::job::mpp_source_name(plan.mpp_source));
        eprintln!(
            "plip: {}: {}x{} px, {} level(s), {mpp:.4} µm/px ({src}), {}; {} of {} tiles kept \
             ({} px at {} µm/px, read from level {}, >= {} tissue) → {}",
            args.slide.display(),
            l0.width,
            l0.height,
            slide.levels().len(),
            slide.vendor(),
            plan.tiles.len(),
            plan.cols as usize * plan.rows as usize,
            t.tile,
            t.mpp,
            plan.level,
            t.min_tissue,
            args.output.display()
        );
    }
    Ok(0)
}

pub(super) fn cmd_heatmap(config: &Config, args: HeatmapArgs) -> Result<i32> {
    use crate::query::{build_query, parse_term, TermKind};
    if !args.slide.is_file() {
        bail!("{} is not a file", args.slide.display());
    }
    let term = parse_term(&args.query, 1.0).with_context(|| format!("query {:?}", args.query))?;
    let index_dir = config.find_index().ok();
    let index = index_dir.as_deref().and_then(|d| Index::open(d).ok());
    // Stored tiles of this slide, when it is indexed.
    let stored: Vec<(Region, Vec<f32>)> = match &index {
        Some(index) => {
            let abs = absolute(&config.cwd, &args.slide);
            let abs = abs.canonicalize().unwrap_or(abs);
            let rel = walk::relative(&abs, &index.root());
            index
                .iter()
                .filter(|(e, _)| e.path == rel)
                .filter_map(|(e, v)| e.region.map(|r| (r, v.to_vec())))
                .collect()
        }
        None => Vec::new(),
    };
    let towers = Towers {
        text: matches!(term.kind, TermKind::Text(_)),
        vision: stored.is_empty() || !matches!(term.kind, TermKind::Text(_)),
    };
    let source = config.model_source(index_dir.as_deref());
    let embedder = load_embedder(config, &source, towers)?;
    if let Some(index) = index.as_ref().filter(|_| !stored.is_empty()) {
        let (a, b) = (index.model(), embedder.info());
        if a.dim != b.dim || a.fingerprint != b.fingerprint {
            bail!(crate::index::model_mismatch(index.dir(), a, b));
        }
    }
    let query = build_query(&embedder, &[term], &[])?;
    let (tiles, from) = if stored.is_empty() {
        let t = tiling(config, &args.flags());
        let plan = plan(&args.slide, &t)?;
        let (rows, failed) = crate::embed::tiles::embed_tiles(&embedder, &plan, args.batch_size)?;
        if !failed.is_empty() {
            warn(format!(
                "{}: skipped {} tile(s) that could not be read (first: {})",
                args.slide.display(),
                failed.len(),
                failed[0]
            ));
        }
        (rows, "embedded now")
    } else {
        (stored, "stored in the index")
    };
    let scored: Vec<(Region, f32)> = tiles
        .iter()
        .map(|(r, v)| (*r, crate::backend::cpu::dot(v, &query)))
        .collect();
    let slide = crate::source::slide::Slide::open(&args.slide, &Default::default())
        .with_context(|| format!("opening {}", args.slide.display()))?;
    let l0 = slide.levels()[0];
    let thumb = slide
        .thumbnail(args.size)
        .with_context(|| format!("thumbnail of {}", args.slide.display()))?;
    let (img, (lo, hi)) = slide_png::heatmap(&thumb, l0.width, l0.height, &scored);
    save_png(&img, &args.output)?;
    if !config.quiet {
        eprintln!(
            "plip: {} tiles ({from}), cosine {lo:.4} (dark) to {hi:.4} (yellow) → {}",
            scored.len(),
            args.output.display()
        );
    }
    Ok(0)
}
