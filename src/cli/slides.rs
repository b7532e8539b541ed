//! `plip heatmap` and `plip tiles`: pictures of one whole slide.
//!
//! `tiles` is the check before a long run: the slide's thumbnail with the tissue mask
//! tinted and the kept tiles outlined, drawn from the same plan `plip index` would make
//! (same flags, the index's recorded tiling and `--tissue-mask` folder by default), and
//! with `--geojson` the mask's outlines for QuPath. `heatmap` colours each tile by its
//! cosine to a query; it uses the stored tile embeddings when the slide is in the index,
//! and embeds the tiles on the fly otherwise.

use super::*;
use crate::index::Region;
use crate::job::MaskFlag;
use crate::output::qupath::{self, ScoredTile};
use crate::output::slide_png;
use crate::source::slide::TilingOverrides;
use crate::source::slide::{user_mask, TilePlan, Tiling};

#[derive(Debug, Args)]
pub(super) struct HeatmapArgs {
    /// The slide.
    slide: PathBuf,
    /// Text (in English), an image file, or a region SLIDE@X,Y,W,H (level-0 pixels).
    /// Several queries score every tile once each: the picture shows the first, the
    /// GeoJSON and CSV hold them all.
    #[arg(required = true, value_name = "QUERY")]
    queries: Vec<String>,
    /// The PNG to write (of the first query).
    #[arg(long, short = 'o', required_unless_present_any = ["geojson", "csv"])]
    output: Option<PathBuf>,
    /// Also write every tile as QuPath GeoJSON: a tile object per tile (its box in
    /// level-0 pixels) with one measurement per query, "plip: QUERY" (cosine). Drag
    /// it onto the open slide in QuPath, then Measure > Show measurement maps.
    #[arg(long, value_name = "FILE")]
    geojson: Option<PathBuf>,
    /// Also write every tile as CSV: x,y,width,height,level,mpp and one score column
    /// per query.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Longer side of the slide's thumbnail in the picture, in pixels.
    #[arg(long, default_value_t = 1024)]
    size: u32,
    /// Tiles per model batch (when embedding now).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[command(flatten)]
    tiling: TilingArgs,
}

impl HeatmapArgs {
    fn flags(&self) -> crate::source::slide::TilingOverrides {
        self.tiling.flags()
    }
}

#[derive(Debug, Args)]
pub(super) struct TilesArgs {
    /// The slide.
    slide: PathBuf,
    /// The PNG to write.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Longer side of the picture, in pixels.
    #[arg(long, default_value_t = 1024)]
    size: u32,
    /// Also print the plan as one JSON document on stdout: the slide, its size, the
    /// tiling, and every kept tile with x, y, w, h (level-0 pixels) and its tissue share.
    #[arg(long)]
    json: bool,
    /// Also write the tissue and artifact outlines as GeoJSON (level-0 pixels, one
    /// annotation per region, classes Tissue and Artifact): drag it onto the slide in
    /// QuPath, correct it, export it with File > Export objects as GeoJSON into a
    /// folder, and index with --tissue-mask that folder.
    #[arg(long, value_name = "FILE")]
    geojson: Option<PathBuf>,
    #[command(flatten)]
    tiling: TilingArgs,
}

impl TilesArgs {
    fn flags(&self) -> crate::source::slide::TilingOverrides {
        self.tiling.flags()
    }
}

/// The tiling for a command on one slide: flags, else the index's, else the defaults;
/// and the tissue mask folder: the flag's, else the index's.
fn settings(
    config: &Config,
    flags: &TilingOverrides,
    masks: &MaskFlag,
) -> (Tiling, Option<PathBuf>) {
    let index = config.find_index().ok().and_then(|d| Index::open(&d).ok());
    let recorded = index.as_ref().and_then(|i| i.tiling());
    let dir = masks.resolve(index.as_ref().and_then(|i| i.tissue_masks()));
    (flags.over(recorded), dir)
}

/// Plans one slide's tiles for a single-slide command, by the user's mask in
/// `masks` when it has one for the slide, else by detection (said on stderr).
pub(super) fn plan_slide(
    config: &Config,
    path: &Path,
    t: &Tiling,
    masks: Option<&Path>,
) -> Result<TilePlan> {
    let opts = *t;
    let mask = match masks {
        Some(d) if !d.is_dir() => bail!(
            "--tissue-mask {}: not a folder (give the folder of your mask files, or `none`)",
            d.display()
        ),
        Some(d) => {
            let m = user_mask::find(d, path);
            if m.is_none() && !config.quiet {
                eprintln!(
                    "plip: no tissue mask for {} in {}: tissue is detected",
                    path.display(),
                    d.display()
                );
            }
            m
        }
        None => None,
    };
    TilePlan::with_mask_file(path, &opts, mask.as_deref())
        .with_context(|| format!("planning the tiles of {}", path.display()))
}

/// [`plan_slide`] with a command's tiling flags and `--tissue-mask`.
pub(super) fn plan_with_flags(
    config: &Config,
    path: &Path,
    flags: &TilingOverrides,
    masks: &MaskFlag,
) -> Result<(TilePlan, Tiling)> {
    let (t, dir) = settings(config, flags, masks);
    Ok((plan_slide(config, path, &t, dir.as_deref())?, t))
}

fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    img.save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", path.display()))
}

pub(super) fn cmd_tiles(config: &Config, args: TilesArgs) -> Result<i32> {
    let (plan, t) = plan_with_flags(config, &args.slide, &args.flags(), &args.tiling.masks())?;
    let slide = plan.slide();
    let l0 = slide.levels()[0];
    // The warnings `plip index` gives, so that "0 of 12 tiles kept" is explained.
    for w in plan.warnings() {
        warn(w);
    }
    let mask = plan.mask.as_ref();
    let thumb = slide
        .thumbnail(args.size)
        .with_context(|| format!("thumbnail of {}", args.slide.display()))?;
    let regions: Vec<Region> = (0..plan.tiles.len())
        .map(|i| crate::embed::tiles::tile_region(&plan, i))
        .collect();
    let grid_tiles = plan.cols as usize * plan.rows as usize;
    let legend = slide_png::PreviewLegend {
        tissue: if plan.user_mask.is_some() {
            "tissue (your mask)"
        } else {
            "tissue"
        },
        grid_tiles,
    };
    let img = slide_png::tiling_preview(&thumb, l0.width, l0.height, mask, &regions, &legend);
    save_png(&img, &args.output)?;
    if let Some(path) = &args.geojson {
        let Some(m) = mask else {
            bail!("--geojson needs a tissue mask, and --min-tissue 0 detects none");
        };
        let v = crate::output::geojson::mask_features(m, l0.width, l0.height);
        let bytes = serde_json::to_vec(&v).expect("GeoJSON serializes");
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        if !config.quiet {
            let n = v["features"].as_array().map_or(0, Vec::len);
            eprintln!(
                "plip: {n} tissue and artifact outline(s) → {} (drag it onto the slide in QuPath)",
                path.display()
            );
        }
    }
    if args.json {
        print_plan_json(&args.slide, &plan, &t)?;
    }
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
            grid_tiles,
            t.tile,
            t.mpp,
            plan.level,
            t.min_tissue,
            args.output.display()
        );
    }
    Ok(0)
}

/// `plip tiles --json`: the plan as one JSON document on stdout.
fn print_plan_json(slide: &Path, plan: &TilePlan, t: &Tiling) -> Result<()> {
    let l0 = plan.slide().levels()[0];
    let tiles: Vec<serde_json::Value> = plan
        .tiles
        .iter()
        .map(|r| {
            serde_json::json!({
                "x": r.x, "y": r.y, "w": r.w, "h": r.h,
                "tissue": (r.tissue * 1e4).round() / 1e4,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "slide": slide.display().to_string(),
        "width": l0.width,
        "height": l0.height,
        "mpp": plan.slide_mpp,
        "level": plan.level,
        "cols": plan.cols,
        "rows": plan.rows,
        "tiling": {
            "mpp": t.mpp,
            "tile": t.tile,
            "min_tissue": t.min_tissue,
            "keep_artifacts": t.keep_artifacts,
        },
        "tissue_detector": crate::source::slide::tissue::DETECTOR_VERSION,
        "tiles": tiles,
    });
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &doc)?;
    writeln!(out)?;
    Ok(())
}

pub(super) fn cmd_heatmap(config: &Config, args: HeatmapArgs) -> Result<i32> {
    use crate::query::{build_query, parse_term, TermKind};
    if !args.slide.is_file() {
        bail!("{} is not a file", args.slide.display());
    }
    let terms = args
        .queries
        .iter()
        .map(|q| parse_term(q, 1.0).with_context(|| format!("query {q:?}")))
        .collect::<Result<Vec<_>>>()?;
    for (flag, path) in [
        ("--geojson", &args.geojson),
        ("--csv", &args.csv),
        ("--output", &args.output),
    ] {
        if let Some(p) = path.as_ref().filter(|p| p.is_dir()) {
            bail!(
                "{flag} {}: is a folder; give the file to write",
                p.display()
            );
        }
    }
    let index_dir = config.find_index().ok();
    let index = index_dir.as_deref().and_then(|d| Index::open(d).ok());
    let stored = stored_tiles(config, index.as_ref(), &args.slide);
    let all_text = terms.iter().all(|t| matches!(t.kind, TermKind::Text(_)));
    let towers = Towers {
        text: terms.iter().any(|t| matches!(t.kind, TermKind::Text(_))),
        vision: stored.is_empty() || !all_text,
    };
    let source = config.model_source(index_dir.as_deref());
    let embedder = load_embedder(config, &source, towers)?;
    if let Some(index) = index.as_ref().filter(|_| !stored.is_empty()) {
        crate::app::model::check(index, &embedder)?;
    }
    let queries = terms
        .iter()
        .map(|t| build_query(&embedder, std::slice::from_ref(t), &[]))
        .collect::<Result<Vec<_>>>()?;
    let (tiles, from) = if stored.is_empty() {
        let (plan, _) = plan_with_flags(config, &args.slide, &args.flags(), &args.tiling.masks())?;
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
    let scored: Vec<ScoredTile> = tiles
        .iter()
        .map(|(r, v)| ScoredTile {
            region: *r,
            scores: queries
                .iter()
                .map(|q| crate::vectors::round_score(crate::vectors::dot(v, q)))
                .collect(),
            rank: None,
        })
        .collect();
    let labels: Vec<String> = args.queries.clone();
    if let Some(path) = &args.geojson {
        let v = qupath::tiles_geojson(&labels, &scored);
        let bytes = serde_json::to_vec(&v).expect("GeoJSON serializes");
        write_file(config, path, &bytes, "drag it onto the slide in QuPath")?;
    }
    if let Some(path) = &args.csv {
        write_file(
            config,
            path,
            qupath::tiles_csv(&labels, &scored).as_bytes(),
            "",
        )?;
    }
    let Some(output) = &args.output else {
        return Ok(0);
    };
    let first: Vec<(Region, f32)> = tiles
        .iter()
        .map(|(r, v)| (*r, crate::vectors::dot(v, &queries[0])))
        .collect();
    let slide = crate::source::slide::Slide::open(&args.slide, &Default::default())
        .with_context(|| format!("opening {}", args.slide.display()))?;
    let l0 = slide.levels()[0];
    let thumb = slide
        .thumbnail(args.size)
        .with_context(|| format!("thumbnail of {}", args.slide.display()))?;
    let (img, (lo, hi)) = slide_png::heatmap(&thumb, l0.width, l0.height, &first);
    save_png(&img, output)?;
    if !config.quiet {
        eprintln!(
            "plip: {} tiles ({from}), cosine {lo:.4} (dark) to {hi:.4} (yellow) → {}",
            scored.len(),
            output.display()
        );
    }
    Ok(0)
}

/// The tiles of `slide` stored in `index`, when it is indexed.
fn stored_tiles(config: &Config, index: Option<&Index>, slide: &Path) -> Vec<(Region, Vec<f32>)> {
    let Some(index) = index else {
        return Vec::new();
    };
    let abs = absolute(&config.cwd, slide);
    let abs = abs.canonicalize().unwrap_or(abs);
    let rel = paths::relative(&abs, &index.root());
    index
        .iter()
        .filter(|(e, _)| e.path == rel)
        .filter_map(|(e, v)| e.region.map(|r| (r, v.to_vec())))
        .collect()
}

/// Writes one output file atomically and says so.
fn write_file(config: &Config, path: &Path, bytes: &[u8], hint: &str) -> Result<()> {
    let abs = absolute(&config.cwd, path);
    let dir = abs.parent().unwrap_or(Path::new("."));
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::index::write_atomic(dir, &name, bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    if !config.quiet {
        let hint = if hint.is_empty() {
            String::new()
        } else {
            format!(" ({hint})")
        };
        eprintln!("plip: wrote {}{hint}", path.display());
    }
    Ok(())
}
