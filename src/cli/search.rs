//! `plip search`: translate the flags into an [`app::SearchRequest`], run it, print
//! the hits (table, JSON lines, paths) and the optional HTML page.

use super::*;
use crate::app::{self, Found, SearchRequest};
use crate::output::printers::{self, OutputFormat};
use crate::output::qupath::{self, ScoredTile};
use crate::output::slide_files::{self, SlideFile};

pub(super) fn cmd_search(config: &Config, args: SearchArgs) -> Result<i32> {
    let format = if args.json {
        OutputFormat::JsonLines
    } else if args.null {
        OutputFormat::PathsNull
    } else if args.paths_only {
        OutputFormat::PathsOnly
    } else {
        OutputFormat::Table
    };
    let html = args.html.clone();
    let (geojson, csv) = (args.geojson.clone(), args.csv.clone());
    // The folders are checked before the model is loaded or anything is written.
    for (flag, dir, ext) in [("--geojson", &geojson, "geojson"), ("--csv", &csv, "csv")] {
        if let Some(d) = dir {
            slide_files::check_folder(&absolute(&config.cwd, d), ext, flag)?;
        }
    }
    let req = SearchRequest {
        query: args.query,
        image: args.image,
        add: args.add,
        subtract: args.subtract,
        templates: args.templates,
        vectors: Vec::new(),
        top: args.top,
        ef: args.ef,
        threshold: args.threshold,
        under: args.under,
        by_slide: args.by_slide,
    };
    if let Some(q) = app::slides_like::SlideQuery::from_search(&req, &args.slides.options())? {
        return slide_query(config, &q, html, format);
    }
    let terms = req.terms()?;
    let index_dir = config.find_index()?;
    let source = config.model_source(Some(&index_dir));
    let (index, embedder) = app::search::open(
        &index_dir,
        &source,
        config.precision,
        &terms,
        req.ef.is_some(),
    )?;
    let found = app::search::run(&index, Some(&embedder), &terms, &req, &config.cwd)?;
    let page = html.map(|p| absolute(&config.cwd, &p));
    if geojson.is_some() || csv.is_some() {
        write_slide_files(
            config,
            &found,
            &terms.label,
            geojson.as_deref(),
            csv.as_deref(),
        )?;
    }
    match found {
        Found::Items(hits) => {
            let rows = printers::printable(&hits, &config.cwd);
            if let Some(page) = &page {
                let dir = page
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or(config.cwd.clone());
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let mut buf = Vec::new();
                crate::output::html::write_page(&mut buf, &terms.label, &rows, &config.cwd, &dir)?;
                write_page(config, page, &buf)?;
            }
            printers::print_hits(std::io::stdout().lock(), &rows, format)?;
        }
        Found::Slides { slides, any_tiles } => {
            use crate::output::by_slide;
            if slides.is_empty() && !any_tiles && !config.quiet {
                warn("--by-slide ranks whole slides, and this index (or --under) holds no slide tiles");
            }
            let rows = by_slide::printable(&slides, &config.cwd);
            if let Some(page) = &page {
                let mut buf = Vec::new();
                by_slide::write_page(&mut buf, &terms.label, &rows, &config.cwd)?;
                write_page(config, page, &buf)?;
            }
            by_slide::print_slides(std::io::stdout().lock(), &rows, format)?;
        }
    }
    Ok(0)
}

/// A slide as the query: other slides ranked, with their matched tiles.
fn slide_query(
    config: &Config,
    q: &app::slides_like::SlideQuery,
    html: Option<PathBuf>,
    format: OutputFormat,
) -> Result<i32> {
    use crate::output::slide_matches;
    if html.is_some() {
        bail!("--html is not available for a slide query yet; use --json");
    }
    let index_dir = config.find_index()?;
    let source = config.model_source(Some(&index_dir));
    let found = app::slides_like::run(&index_dir, &source, config.precision, q, &config.cwd)?;
    if !config.quiet && !found.unknown_in_groups.is_empty() {
        let n = found.unknown_in_groups.len();
        let shown: Vec<&str> = found
            .unknown_in_groups
            .iter()
            .take(10)
            .map(String::as_str)
            .collect();
        warn(format!(
            "{n} slide(s) of --group-by are not in the index (ignored): {}{}",
            shown.join(", "),
            if n > shown.len() { ", ..." } else { "" }
        ));
    }
    if !config.quiet {
        let mosaic = found
            .mosaic
            .map(|m| format!(" (a mosaic of {m})"))
            .unwrap_or_default();
        let graph = found
            .candidates
            .map(|c| format!(" over {c} candidate slide(s) found by the HNSW graphs"))
            .unwrap_or_default();
        eprintln!(
            "plip: {} query tile(s) ({}), scored by {}{mosaic}{graph}; {} slide(s) left out",
            found.query_tiles,
            if found.embedded_now {
                "embedded now with the index's tiling"
            } else {
                "stored in the index"
            },
            found.score.name(),
            found.excluded.len()
        );
    }
    let rows = slide_matches::printable(&found, &config.cwd);
    slide_matches::print(std::io::stdout().lock(), &rows, format)?;
    Ok(0)
}

fn write_page(config: &Config, page: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(page, bytes).with_context(|| format!("writing {}", page.display()))?;
    if !config.quiet {
        eprintln!("plip: wrote {}", paths::relative(page, &config.cwd));
    }
    Ok(())
}

/// `--geojson DIR` and `--csv DIR`: the slide tiles found, one file per slide.
fn write_slide_files(
    config: &Config,
    found: &Found,
    label: &str,
    geojson: Option<&Path>,
    csv: Option<&Path>,
) -> Result<()> {
    let slides = found.tiles_by_slide();
    if slides.is_empty() && !config.quiet {
        warn("no slide tile was found, so no GeoJSON or CSV file was written (whole images have no coordinates)");
    }
    let labels = [label.to_string()];
    let files = |render: &dyn Fn(&[ScoredTile]) -> Vec<u8>| -> Vec<SlideFile> {
        slides
            .iter()
            .map(|(path, tiles)| {
                let scored: Vec<ScoredTile> = tiles
                    .iter()
                    .map(|(region, score, rank)| ScoredTile {
                        region: *region,
                        scores: vec![*score],
                        rank: Some(*rank),
                    })
                    .collect();
                SlideFile {
                    stored: path.to_string_lossy().into_owned(),
                    path: path.to_string_lossy().into_owned(),
                    items: tiles.len(),
                    bytes: render(&scored),
                }
            })
            .collect()
    };
    for (flag, dir, ext) in [("--geojson", geojson, "geojson"), ("--csv", csv, "csv")] {
        let Some(dir) = dir else { continue };
        let render = |t: &[ScoredTile]| -> Vec<u8> {
            if ext == "csv" {
                qupath::tiles_csv(&labels, t).into_bytes()
            } else {
                serde_json::to_vec(&qupath::tiles_geojson(&labels, t)).expect("GeoJSON serializes")
            }
        };
        let dir = absolute(&config.cwd, dir);
        let names = slide_files::write_folder(&dir, ext, flag, &files(&render))?;
        if !config.quiet && !names.is_empty() {
            eprintln!(
                "plip: wrote {} {ext} file(s) and {} → {}",
                names.len(),
                slide_files::SLIDES_CSV,
                paths::relative(&dir, &config.cwd)
            );
        }
    }
    Ok(())
}
