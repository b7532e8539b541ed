//! The command line: clap flags, resolved into a [`Config`], then one function per
//! command.
//!
//! As in ripgrep, raw flags ([`Cli`]) are resolved once into validated settings
//! (canonical index folder, model source, thread count); the commands below take
//! those, never clap types. Long work reports progress on stderr (only when it is a
//! terminal), a bad file is a one-line warning counted in the summary, and Ctrl-C
//! during indexing commits what is done.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::embed::{self, Embedder};
use crate::hub;
use crate::model::Towers;
use crate::search::{self, OutputFormat};
use crate::store::{self, FileEntry, Index, IndexWriter, Skipped, StoreError};
use crate::walk;

const ABOUT: &str = "Search histology images with words or by example, using the PLIP model.";

const LONG_ABOUT: &str = "\
plip builds an offline image-text retrieval index with PLIP (Huang et al., Nature \
Medicine 2023; Hugging Face `vinid/plip`), a CLIP ViT-B/32 fine-tuned on pathology \
image-caption pairs, and searches it.

  plip index ./slides            embed every image under ./slides into .plip/
  plip search \"tumor tissue\"     print the 10 nearest images

Intended use: research. PLIP is a research model for exploring retrieval and \
zero-shot classification of pathology images. Its outputs are not medical advice and \
must not be used for diagnosis or any deployed clinical or commercial use; even \
research use in a fixed setting needs thorough in-domain testing, since results vary \
with the class taxonomy and prompts. PLIP was trained and evaluated on English \
text only: write queries in English.";

/// Raw command-line flags.
#[derive(Debug, Parser)]
#[command(name = "plip", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Model: a Hugging Face repo id (resolved through the HF cache, honouring
    /// HF_HOME and HF_HUB_OFFLINE) or a local model folder. Default: the model
    /// that built the index, else vinid/plip.
    #[arg(long, global = true, env = "PLIP_MODEL")]
    model: Option<String>,
    /// Index folder. Default: the nearest `.plip` in this folder or above it
    /// (as git finds `.git`), else `./.plip` when indexing.
    #[arg(long, global = true, env = "PLIP_INDEX")]
    index: Option<PathBuf>,
    /// Threads for decoding and the model (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// No progress bar and no summary on stderr (warnings and errors still print).
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed every image under the given folders into the index.
    ///
    /// Takes jpg, jpeg, png, tif, tiff, bmp, webp and gif files (any case) and skips
    /// hidden folders. A file that cannot be decoded is skipped with a warning and
    /// counted. Re-running embeds only new or changed files and drops removed
    /// ones. Work is committed every --commit-every images or 30 seconds, so a
    /// crash or Ctrl-C loses at most that much; re-run to continue.
    Index(IndexArgs),
    /// Print the indexed images nearest to a text query.
    Search(SearchArgs),
    /// Write raw embeddings of prompts or images (L2-normalized float32).
    Embed(EmbedArgs),
    /// Show what an index holds.
    Info(InfoArgs),
    /// Measure retrieval recall, zero-shot accuracy, or HNSW quality.
    #[command(subcommand)]
    Eval(EvalCommand),
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Text-to-image and image-to-text Recall@1/5/10/50, mean and median rank.
    ///
    /// Caption i should retrieve image i and image i caption i. A query counts at K
    /// when a correct item is among the top K by cosine (PLIP's definition). Items
    /// that are identical (same caption text, or same image bytes) count as correct
    /// for each other. Ties with a wrong item count against the query. An
    /// unreadable image skips its pair, with a warning naming the row.
    Retrieval(EvalRetrievalArgs),
    /// Zero-shot classification of an ImageFolder-style DIR (one subfolder per class).
    ///
    /// Reports accuracy, weighted and macro F1, per-class precision/recall/F1 with
    /// support, and the confusion matrix (scikit-learn definitions, all classes,
    /// zero_division=0). Several --template are ensembled as CLIP does: the
    /// normalized embeddings of the filled templates are averaged per class, then
    /// renormalized.
    ZeroShot(EvalZeroShotArgs),
    /// HNSW recall@K against exact search, and query latency, at several ef values.
    ///
    /// Builds a graph with the index's parameters over the index's vectors and uses
    /// evenly spaced indexed vectors as queries.
    Ann(EvalAnnArgs),
}

#[derive(Debug, Args)]
struct EvalRetrievalArgs {
    /// CSV with a header and at least `image,caption` columns; image paths are
    /// relative to the CSV's folder.
    #[arg(long)]
    pairs: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Embedding cache folder [default: $XDG_CACHE_HOME/plip or ~/.cache/plip].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Debug, Args)]
struct EvalZeroShotArgs {
    /// Folder with one subfolder of images per class.
    dir: PathBuf,
    /// CSV `folder,name` giving each class folder a prompt name.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Prompt template with `{}` for the class name (repeatable; ensembled).
    /// [default: "An H&E image patch of {}."]
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Embedding cache folder [default: $XDG_CACHE_HOME/plip or ~/.cache/plip].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Debug, Args)]
struct EvalAnnArgs {
    /// Number of indexed vectors used as queries.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// K of recall@K.
    #[arg(long, short = 'k', default_value_t = 10)]
    k: usize,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IndexArgs {
    /// Folders (or image files) to index [default: .]
    dirs: Vec<PathBuf>,
    /// Images per model batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Commit at least every this many newly embedded images (and every 30 s).
    #[arg(long, default_value_t = 256)]
    commit_every: usize,
    /// Discard the existing index and start from scratch (also allows another model).
    #[arg(long)]
    rebuild: bool,
}

#[derive(Debug, Args)]
#[command(after_long_help = "\
Query arithmetic (as rclip does it): every term (QUERY, --image, --add, --subtract) is
embedded and L2-normalized, multiplied by its weight (default 1; negative for
--subtract), summed, and the sum is normalized again. A term is an image when it names
an existing image file, else text. Prefix a weight with a colon: --add 2:lymphocytes,
--subtract 0.5:./ref.png (write 1:Ki-67:high for text that contains a colon).

With --template, each text term is embedded through every template ({} = the term),
and the normalized embeddings are averaged and renormalized: the same ensembling as
`plip eval zero-shot`.

Examples:
  plip search \"tumor tissue\"
  plip search --image query.png --top 20
  plip search \"tumor\" --add \"lymphocytes\" --subtract \"necrosis\"
  plip search \"tumor\" --template \"An H&E image patch of {}.\" --template \"a histopathology image of {}\"
  plip search \"mucus\" --under slides/colon --threshold 0.25 --html results.html")]
struct SearchArgs {
    /// What to look for, in English (e.g. "tumor tissue"), or an image file.
    #[arg(required_unless_present = "image")]
    query: Option<String>,
    /// Find images similar to this image (preprocessed exactly like indexed images).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Add a term: text or image, optionally weighted as W:TERM (repeatable).
    #[arg(long = "add", value_name = "[W:]TERM")]
    add: Vec<String>,
    /// Subtract a term: text or image, optionally weighted as W:TERM (repeatable).
    #[arg(long = "subtract", value_name = "[W:]TERM", allow_hyphen_values = true)]
    subtract: Vec<String>,
    /// Prompt template with {} for each text term (repeatable; ensembled).
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Keep only hits with a cosine score of at least S.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// Search only images under this folder.
    #[arg(long, value_name = "SUBDIR")]
    under: Option<PathBuf>,
    /// Also write a self-contained HTML page of the results (thumbnails embedded).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Number of results.
    #[arg(long, short = 'k', default_value_t = 10)]
    top: usize,
    /// Print JSON Lines: {"rank":1,"score":0.3071,"path":"slides/a.png"}.
    #[arg(long, conflicts_with = "paths_only")]
    json: bool,
    /// Print only paths, one per line, for piping.
    #[arg(long)]
    paths_only: bool,
    /// Search approximately with the index's HNSW graphs, with this breadth
    /// (higher is slower and more exact; 256 found 97% of the true top 10 in about
    /// 1 ms at a million clustered test vectors). By default every image is scored
    /// exactly, about 20 ms per 100k images. A new process also loads the graphs:
    /// at 100k images a whole search took 0.25 s with --ef 256 against 0.21 s
    /// exact (medians), so graphs help only very large indexes. `plip eval ann`
    /// measures recall per breadth on your own index.
    #[arg(long)]
    ef: Option<usize>,
}

#[derive(Debug, Args)]
struct EmbedArgs {
    /// Images to embed, one row each in this order.
    images: Vec<PathBuf>,
    /// A prompt to embed (repeatable), one row each in order.
    #[arg(long = "text", short = 't')]
    texts: Vec<String>,
    /// Write a float32 .npy of shape (rows, dim) here.
    #[arg(long, short = 'o', required_unless_present = "jsonl")]
    output: Option<PathBuf>,
    /// Write JSON Lines to stdout instead: {"input":..., "embedding":[...]}.
    #[arg(long, conflicts_with = "output")]
    jsonl: bool,
    /// Images per model batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Settings resolved from flags and environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Model requested explicitly, if any.
    pub model: Option<String>,
    /// Index folder given explicitly, if any.
    pub index: Option<PathBuf>,
    /// Current directory.
    pub cwd: PathBuf,
    /// Show progress and summaries.
    pub progress: bool,
    /// Quiet mode.
    pub quiet: bool,
}

impl Config {
    fn from_args(g: &GlobalArgs) -> Result<Self> {
        if let Some(n) = g.threads {
            // Only the first call can configure the global pool; later calls are no-ops.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build_global();
        }
        Ok(Config {
            model: g.model.clone().filter(|m| !m.trim().is_empty()),
            index: g.index.clone(),
            cwd: std::env::current_dir().context("reading the current directory")?,
            progress: !g.quiet && std::io::stderr().is_terminal(),
            quiet: g.quiet,
        })
    }

    /// The index folder to read: explicit, else the nearest `.plip` upward.
    pub fn find_index(&self) -> Result<PathBuf> {
        if let Some(p) = &self.index {
            return Ok(self.cwd.join(p));
        }
        for dir in self.cwd.ancestors() {
            let candidate = dir.join(".plip");
            if candidate.join(store::MANIFEST).is_file() {
                return Ok(candidate);
            }
        }
        Err(StoreError::NoIndex(self.cwd.join(".plip")).into())
    }

    /// The index folder to write: explicit, else the nearest `.plip`, else `./.plip`.
    pub fn index_for_writing(&self) -> PathBuf {
        self.find_index().unwrap_or_else(|_| self.cwd.join(".plip"))
    }
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let config = Config::from_args(&cli.global)?;
    match cli.command {
        Command::Index(a) => cmd_index(&config, a),
        Command::Search(a) => cmd_search(&config, a),
        Command::Embed(a) => cmd_embed(&config, a),
        Command::Info(a) => cmd_info(&config, a),
        Command::Eval(e) => cmd_eval(&config, e),
    }
}

fn load_embedder(source: &str, towers: Towers) -> Result<Embedder> {
    let files = hub::resolve(source)?;
    Embedder::load(&files, towers, &Device::Cpu)
        .with_context(|| format!("loading model `{source}`"))
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("plip: warning: {msg}");
}

fn cmd_index(config: &Config, args: IndexArgs) -> Result<i32> {
    let started = Instant::now();
    let dirs = if args.dirs.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.dirs.clone()
    };
    for d in &dirs {
        if !d.exists() {
            bail!("{} does not exist", d.display());
        }
    }
    let index_dir = config.index_for_writing();
    let existing_model = if args.rebuild {
        None
    } else {
        // Only the manifest: loading every vector just to learn the model is waste.
        store::recorded_model(&index_dir).ok().map(|m| m.source)
    };
    let source = config
        .model
        .clone()
        .or(existing_model)
        .unwrap_or_else(|| hub::DEFAULT_MODEL.to_string());
    let embedder = load_embedder(
        &source,
        Towers {
            text: false,
            vision: true,
        },
    )?;
    let mut writer = IndexWriter::open(&index_dir, embedder.info(), args.rebuild)?;
    let root = store::root_of(&index_dir);

    // What is there now, and what changed since the last commit.
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    let mut scopes: Vec<String> = Vec::new();
    for d in &dirs {
        let (files, warnings) = walk::find_images(d)?;
        for w in warnings {
            warn(w);
        }
        let abs = d.canonicalize()?;
        scopes.push(walk::relative(&abs, &root));
        found.extend(files.into_iter().map(|f| {
            let rel = walk::relative(&f, &root);
            (f, rel)
        }));
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.dedup_by(|a, b| a.1 == b.1);
    let present: std::collections::HashSet<&str> = found.iter().map(|f| f.1.as_str()).collect();
    let in_scope = |p: &str| {
        scopes.iter().any(|s| {
            s == "." || p == s || (p.starts_with(s.as_str()) && p[s.len()..].starts_with('/'))
        })
    };
    let gone: Vec<String> = writer
        .paths()
        .filter(|p| in_scope(p) && !present.contains(p))
        .map(str::to_string)
        .collect();
    let mut stats = store::RunStats::default();
    for p in &gone {
        writer.remove(p);
        stats.removed += 1;
    }
    // Files whose mtime is this close to the last commit may have changed in the
    // same clock tick they were indexed; compare their content too (as git does).
    let racy_after = (writer.committed_unix() as i128 - 2) * 1_000_000_000;
    let mut todo: Vec<(PathBuf, String, bool)> = Vec::new();
    for (abs, rel) in found {
        let Some(old) = writer.get(&rel).cloned() else {
            todo.push((abs, rel, false));
            continue;
        };
        let Ok((size, mtime)) = embed::stat(&abs) else {
            todo.push((abs, rel, true));
            continue;
        };
        let same_stat = size == old.size && mtime == old.mtime_ns;
        let unchanged = if same_stat && mtime < racy_after {
            true
        } else if size == old.size {
            embed::file_crc(&abs).is_ok_and(|c| c == old.crc32)
        } else {
            false
        };
        if unchanged {
            stats.unchanged += 1;
        } else {
            todo.push((abs, rel, true));
        }
    }
    *writer.stats_mut() = stats.clone();

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second handler cannot be installed in the same process (tests); ignore.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                // Second Ctrl-C: the user wants out now; the last commit is intact.
                std::process::exit(130);
            }
            eprintln!("\nplip: interrupted; committing what is done (Ctrl-C again to quit now)");
        });
    }

    let bar = progress_bar(config, todo.len() as u64);
    let paths: Vec<PathBuf> = todo.iter().map(|t| t.0.clone()).collect();
    let mut last_commit = Instant::now();
    let commit_every = args.commit_every.max(1);
    let mut embedded = 0usize;
    let result = embed::embed_files(&embedder, &paths, args.batch_size, &cancel, |r| {
        let (_, rel, existed) = &todo[r.index];
        match r.outcome {
            Ok((vector, img)) => {
                let entry = FileEntry {
                    path: rel.clone(),
                    size: img.size,
                    mtime_ns: img.mtime_ns,
                    crc32: img.crc32,
                };
                writer.add(entry, &vector);
                let s = writer.stats_mut();
                if *existed {
                    s.updated += 1;
                } else {
                    s.added += 1;
                }
                embedded += 1;
            }
            Err(reason) => {
                bar.suspend(|| {
                    warn(format!(
                        "skipping {}: {reason}",
                        walk::relative(&r.path, &config.cwd)
                    ))
                });
                if *existed {
                    // The file is now unreadable: do not keep serving its old vector.
                    writer.remove(rel);
                    writer.stats_mut().removed += 1;
                }
                writer.stats_mut().skipped.push(Skipped {
                    path: rel.clone(),
                    reason,
                });
            }
        }
        bar.inc(1);
        if writer.pending() >= commit_every || last_commit.elapsed() > Duration::from_secs(30) {
            writer.commit()?;
            last_commit = Instant::now();
        }
        Ok(())
    });
    bar.finish_and_clear();
    // The weights (600 MB for PLIP) are not needed for the commit or the
    // compaction, whose graph build is the run's memory peak. Dropping them
    // alone left them resident (the allocator keeps freed memory); the trim
    // returns them: RSS 472 -> 45 MB after 100 images with the full-size model.
    drop(embedder);
    crate::kernels::release_free_memory();
    let interrupted = cancel.load(Ordering::SeqCst);
    if let Err(e) = result {
        // Keep what was embedded before the failure.
        writer.commit()?;
        return Err(e);
    }
    if interrupted {
        writer.commit()?;
    } else {
        writer.compact()?;
    }
    let stats = writer.stats_mut().clone();
    let secs = started.elapsed().as_secs_f64();
    if !config.quiet {
        eprintln!(
            "plip: {} {} added, {} updated, {} removed, {} unchanged, {} skipped \
             ({embedded} embedded in {secs:.1}s, {:.1} images/s) → {}",
            if interrupted {
                "interrupted after"
            } else {
                "indexed:"
            },
            stats.added,
            stats.updated,
            stats.removed,
            stats.unchanged,
            stats.skipped.len(),
            embedded as f64 / secs.max(1e-9),
            walk::relative(&index_dir, &config.cwd),
        );
    }
    if !stats.skipped.is_empty() && !config.quiet {
        eprintln!(
            "plip: {} file(s) skipped; `plip info` lists them",
            stats.skipped.len()
        );
    }
    Ok(if interrupted { 130 } else { 0 })
}

fn progress_bar(config: &Config, len: u64) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images  {per_sec}  ETA {eta}  {elapsed_precise}",
        )
        .expect("valid template"),
    );
    bar
}

fn open_index(config: &Config) -> Result<Index> {
    let dir = config.find_index()?;
    Ok(Index::open(&dir)?)
}

fn cmd_search(config: &Config, args: SearchArgs) -> Result<i32> {
    use crate::search::{parse_term, QueryTerm, TermKind};
    let mut terms: Vec<QueryTerm> = Vec::new();
    let mut label = Vec::new();
    if let Some(q) = &args.query {
        if q.trim().is_empty() {
            bail!("the query is empty; give some words, e.g. plip search \"tumor tissue\"");
        }
        let p = Path::new(q);
        let kind = if walk::is_image(p) && p.is_file() {
            TermKind::Image(p.to_path_buf())
        } else {
            TermKind::Text(q.clone())
        };
        terms.push(QueryTerm { weight: 1.0, kind });
        label.push(q.clone());
    }
    if let Some(img) = &args.image {
        if !img.is_file() {
            bail!("query image {} does not exist", img.display());
        }
        terms.push(QueryTerm {
            weight: 1.0,
            kind: TermKind::Image(img.clone()),
        });
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
        vision: terms.iter().any(|t| matches!(t.kind, TermKind::Image(_))),
    };
    let source = match &config.model {
        Some(m) => m.clone(),
        None => store::recorded_model(&index_dir)?.source,
    };
    // Load the model while the index is read: on a cold start each takes a few
    // hundred milliseconds at 100k images.
    let (index, embedder) = std::thread::scope(|s| {
        let index = s.spawn(|| open(&index_dir));
        let embedder = load_embedder(&source, towers);
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
    let query = search::build_query(&embedder, &terms, &args.templates)?;
    let root = index.root();
    let prefix = args.under.as_ref().map(|u| {
        let abs = absolute(&config.cwd, u);
        let abs = abs.canonicalize().unwrap_or(abs);
        walk::relative(&abs, &root)
    });
    let allow = |p: &str| match &prefix {
        Some(pre) if pre != "." => {
            p == pre || (p.starts_with(pre.as_str()) && p[pre.len()..].starts_with('/'))
        }
        _ => true,
    };
    let ef = args.ef.unwrap_or(crate::ann::DEFAULT_EF_SEARCH);
    let mut hits = index.search(&query, args.top, ef, Some(&allow));
    if let Some(t) = args.threshold {
        hits.retain(|h| h.score >= t);
    }
    let rows = search::printable(&hits, &root, &config.cwd);
    if let Some(page) = &args.html {
        let page = absolute(&config.cwd, page);
        let dir = page
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(config.cwd.clone());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut buf = Vec::new();
        crate::html::write_page(&mut buf, &label.join(" "), &rows, &config.cwd, &dir)?;
        std::fs::write(&page, buf).with_context(|| format!("writing {}", page.display()))?;
        if !config.quiet {
            eprintln!("plip: wrote {}", walk::relative(&page, &config.cwd));
        }
    }
    let format = if args.json {
        OutputFormat::JsonLines
    } else if args.paths_only {
        OutputFormat::PathsOnly
    } else {
        OutputFormat::Table
    };
    search::print_hits(std::io::stdout().lock(), &rows, format)?;
    Ok(0)
}

fn check_same_model(index: &Index, embedder: &Embedder) -> Result<()> {
    let (a, b) = (index.model(), embedder.info());
    // Fingerprints hash both towers' files; dimension is the hard requirement.
    if a.dim != b.dim || a.fingerprint != b.fingerprint {
        bail!(StoreError::ModelMismatch {
            path: index.dir().to_path_buf(),
            index_model: a.source.clone(),
            model: b.source.clone(),
        });
    }
    Ok(())
}

fn cmd_embed(config: &Config, args: EmbedArgs) -> Result<i32> {
    if args.texts.is_empty() == args.images.is_empty() {
        bail!("give either images or --text prompts (not both, not neither)");
    }
    let source = config
        .model
        .clone()
        .unwrap_or_else(|| hub::DEFAULT_MODEL.to_string());
    let (rows, labels): (Vec<Vec<f32>>, Vec<String>) = if !args.texts.is_empty() {
        if let Some(i) = args.texts.iter().position(|t| t.trim().is_empty()) {
            bail!("--text number {} is empty", i + 1);
        }
        let e = load_embedder(
            &source,
            Towers {
                text: true,
                vision: false,
            },
        )?;
        let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
        (e.embed_texts(&refs)?, args.texts.clone())
    } else {
        for p in &args.images {
            if !p.is_file() {
                bail!("{} is not a file", p.display());
            }
        }
        let e = load_embedder(
            &source,
            Towers {
                text: false,
                vision: true,
            },
        )?;
        let mut rows = vec![Vec::new(); args.images.len()];
        let cancel = AtomicBool::new(false);
        embed::embed_files(&e, &args.images, args.batch_size, &cancel, |r| {
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
        crate::npy::write_f32(&mut buf, &rows, dim)?;
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

fn cmd_info(config: &Config, args: InfoArgs) -> Result<i32> {
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

/// Absolute form of `p` against `cwd`.
pub fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

fn cmd_eval(config: &Config, cmd: EvalCommand) -> Result<i32> {
    use crate::eval_cmd;
    let source = config
        .model
        .clone()
        .unwrap_or_else(|| hub::DEFAULT_MODEL.to_string());
    let cache_dir = |dir: &Option<PathBuf>, off: bool| {
        if off {
            None
        } else {
            dir.clone().or_else(eval_cmd::default_cache_dir)
        }
    };
    let mut out = std::io::stdout().lock();
    match cmd {
        EvalCommand::Retrieval(a) => {
            let e = load_embedder(&source, Towers::BOTH)?;
            let mut images = eval_cmd::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            eval_cmd::retrieval(
                &e,
                &mut images,
                &a.pairs,
                &crate::eval::DEFAULT_KS,
                a.json,
                &mut out,
            )?;
        }
        EvalCommand::ZeroShot(a) => {
            let e = load_embedder(&source, Towers::BOTH)?;
            let mut images = eval_cmd::CachedImages::new(&e, cache_dir(&a.cache, a.no_cache));
            eval_cmd::zero_shot(
                &e,
                &mut images,
                &a.dir,
                a.labels.as_deref(),
                &a.templates,
                a.json,
                &mut out,
            )?;
        }
        EvalCommand::Ann(a) => {
            let index = open_index(config)?;
            eval_cmd::ann(&index, a.queries, a.k.max(1), a.json, &mut out)?;
        }
    }
    Ok(0)
}
