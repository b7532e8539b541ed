//! `plip search`: build the query vector, search the index, print the hits.

use super::*;

pub(super) fn cmd_search(config: &Config, args: SearchArgs) -> Result<i32> {
    use crate::output::printers::{self, OutputFormat};
    use crate::query::{self, parse_term, QueryTerm, TermKind};
    let mut terms: Vec<QueryTerm> = Vec::new();
    let mut label = Vec::new();
    if let Some(q) = &args.query {
        if q.trim().is_empty() {
            bail!("the query is empty; give some words, e.g. plip search \"tumor tissue\"");
        }
        let p = Path::new(q);
        let kind = if let Some((path, r)) = query::slides::parse_region(q)? {
            TermKind::Region(path, r)
        } else if walk::is_image(p) && p.is_file() {
            TermKind::Image(p.to_path_buf())
        } else {
            TermKind::Text(q.clone())
        };
        terms.push(QueryTerm { weight: 1.0, kind });
        label.push(q.clone());
    }
    if let Some(img) = &args.image {
        let kind = match query::slides::parse_region(&img.to_string_lossy())? {
            Some((path, r)) => TermKind::Region(path, r),
            None => {
                if let Err(e) = crate::source::open_regular(img) {
                    bail!("query image {}: {e}", img.display());
                }
                TermKind::Image(img.clone())
            }
        };
        terms.push(QueryTerm { weight: 1.0, kind });
        label.push(format!("image {}", img.display()));
    }
    for a in &args.add {
        terms.push(parse_term(a, 1.0).with_context(|| format!("--add {a}"))?);
        label.push(format!("+ {a}"));
    }
    for a in &args.subtract {
        terms.push(parse_term(a, -1.0).with_context(|| format!("--subtract {a}"))?);
        label.push(format!("- {a}"));
    }
    let index_dir = config.find_index()?;
    let open = |dir: &Path| {
        if args.ef.is_some() {
            Index::open_with_graphs(dir)
        } else {
            Index::open(dir)
        }
    };
    let towers = Towers {
        text: terms.iter().any(|t| matches!(t.kind, TermKind::Text(_))),
        vision: terms
            .iter()
            .any(|t| matches!(t.kind, TermKind::Image(_) | TermKind::Region(..))),
    };
    // A missing or unreadable index is reported before any model is loaded.
    crate::index::recorded_model(&index_dir)?;
    let source = config.model_source(Some(&index_dir));
    // Load the model while the index is read: on a cold start each takes a few
    // hundred milliseconds at 100k images.
    let (index, embedder) = std::thread::scope(|s| {
        let index = s.spawn(|| open(&index_dir));
        let embedder = load_embedder(config, &source, towers);
        (index.join().expect("index thread panicked"), embedder)
    });
    let (index, embedder) = (index?, embedder?);
    if index.is_empty() {
        bail!(
            "the index at {} is empty; run `plip index DIR` on a folder with images",
            index.dir().display()
        );
    }
    check_same_model(&index, &embedder)?;
    let query = query::build_query(&embedder, &terms, &args.templates)?;
    let root = index.root();
    let prefix = args.under.as_ref().map(|u| {
        let abs = absolute(&config.cwd, u);
        let abs = abs.canonicalize().unwrap_or(abs);
        walk::relative(&abs, &root)
    });
    let allow = |p: &str| crate::query::filter::under(prefix.as_deref(), p);
    let format = if args.json {
        OutputFormat::JsonLines
    } else if args.null {
        OutputFormat::PathsNull
    } else if args.paths_only {
        OutputFormat::PathsOnly
    } else {
        OutputFormat::Table
    };
    if args.by_slide {
        return by_slide(
            config,
            &args,
            &index,
            &query,
            &allow,
            &label.join(" "),
            format,
        );
    }
    let ef = args.ef.unwrap_or(crate::index::ann::DEFAULT_EF_SEARCH);
    let hits = query::search_filtered(
        &index,
        &query,
        args.top,
        ef,
        prefix.as_deref(),
        args.threshold,
    );
    let rows = printers::printable(&hits, &root, &config.cwd);
    if let Some(page) = &args.html {
        let page = absolute(&config.cwd, page);
        let dir = page
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(config.cwd.clone());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut buf = Vec::new();
        crate::output::html::write_page(&mut buf, &label.join(" "), &rows, &config.cwd, &dir)?;
        std::fs::write(&page, buf).with_context(|| format!("writing {}", page.display()))?;
        if !config.quiet {
            eprintln!("plip: wrote {}", walk::relative(&page, &config.cwd));
        }
    }
    printers::print_hits(std::io::stdout().lock(), &rows, format)?;
    Ok(0)
}

/// `--by-slide`: every tile is scored exactly, slides are ranked by their pooled tile
/// scores (`query::slides`).
fn by_slide(
    config: &Config,
    args: &SearchArgs,
    index: &Index,
    query: &[f32],
    allow: &(dyn Fn(&str) -> bool + Sync),
    label: &str,
    format: crate::output::printers::OutputFormat,
) -> Result<i32> {
    use crate::output::by_slide;
    let (slides, any_tiles) =
        crate::query::slides::by_slide(index, query, allow, args.threshold, args.top);
    if slides.is_empty() && !any_tiles && !config.quiet {
        warn("--by-slide ranks whole slides, and this index (or --under) holds no slide tiles");
    }
    let rows = by_slide::printable(&slides, &index.root(), &config.cwd);
    if let Some(page) = &args.html {
        let page = absolute(&config.cwd, page);
        let mut buf = Vec::new();
        by_slide::write_page(&mut buf, label, &rows, &config.cwd)?;
        std::fs::write(&page, buf).with_context(|| format!("writing {}", page.display()))?;
        if !config.quiet {
            eprintln!("plip: wrote {}", walk::relative(&page, &config.cwd));
        }
    }
    by_slide::print_slides(std::io::stdout().lock(), &rows, format)?;
    Ok(0)
}

fn check_same_model(index: &Index, embedder: &Embedder) -> Result<()> {
    crate::index::check_model(index.dir(), index.model(), embedder.info())?;
    Ok(())
}
