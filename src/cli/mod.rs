//! The command line: clap flags, resolved into a [`Config`], then one function per
//! command.
//!
//! As in ripgrep, raw flags ([`Cli`]) are resolved once into validated settings
//! (canonical index folder, model source, thread count); the commands below take
//! those, never clap types. Long work reports progress on stderr (only when it is a
//! terminal), a bad file is a one-line warning counted in the summary, and Ctrl-C
//! during indexing commits what is done.

mod embed;
mod eval;
mod export;
mod index;
mod info;
mod merge;
mod search;
mod serve;
mod slide_args;
mod slides;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backend::cpu::PrecisionChoice;
use crate::embed::{Embedder, LoadOptions};
use crate::index::paths;
use crate::index::{Index, IndexWriter};
use crate::model::Towers;
use crate::source::slide::tiling;

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
    /// HF_HOME and HF_HUB_OFFLINE) or a local model folder, holding either a
    /// Hugging Face CLIPModel (config.json, tokenizer.json, preprocessor_config.json)
    /// or an open_clip checkpoint (open_clip_config.json, as QuiltNet). Default: the
    /// model that built the index, else vinid/plip. `plip eval retrieval|zero-shot|
    /// linear-probe` takes it several times and compares the models in one table.
    #[arg(long, global = true, env = "PLIP_MODEL", action = clap::ArgAction::Append)]
    model: Vec<String>,
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
    /// Memory for decoded images in flight, in MiB, shared by all threads, so
    /// that huge images decode one at a time instead of all at once.
    #[arg(long, global = true, value_name = "MiB", default_value_t = 1024)]
    decode_memory: u64,
    /// Arithmetic of the model's dense layers: `auto` (the default) runs bf16 where
    /// this CPU runs it faster than f32 (measured once, in about 0.1 s, and cached
    /// under ~/.cache/plip), else f32; `f32` is the reference's arithmetic; `bf16`
    /// rounds weights and layer inputs to bfloat16 with sums in f32, for CPUs with
    /// AVX512_BF16 (refused elsewhere). bf16 embeddings stay within cosine 0.9999
    /// of f32 on PLIP, so an index may mix both, and f32 queries search a bf16
    /// index. Text queries are embedded in f32 under `auto`. The run summary says
    /// which was chosen and why; `plip info` shows what an index holds.
    #[arg(
        long,
        global = true,
        env = "PLIP_PRECISION",
        value_name = "auto|f32|bf16",
        default_value = "auto"
    )]
    precision: PrecisionChoice,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed every image and whole slide under the given folders into the index.
    ///
    /// Takes jpg, jpeg, png, tif, tiff, bmp, webp and gif files (any case) and skips
    /// hidden folders. A file that cannot be decoded is skipped with a warning and
    /// counted. Re-running embeds only new or changed files and drops removed
    /// ones. Work is committed every --commit-every images or 30 seconds, so a
    /// crash or Ctrl-C loses at most that much; re-run to continue.
    ///
    /// Whole slides (Aperio .svs, pyramidal TIFF/OME-TIFF read natively; .ndpi,
    /// .mrxs, .scn, .bif, .vms, .svslide, DICOM through OpenSlide when libopenslide
    /// is installed) are cut into a grid of --tile px squares at --mpp µm/px, and
    /// the squares with at least --min-tissue tissue are embedded, each a search
    /// result of its own. The tiling is recorded in the index: later runs reuse it,
    /// and changing a flag re-tiles the slides. Check a tiling first with
    /// `plip tiles SLIDE -o check.png`.
    Index(IndexArgs),
    /// Print the indexed images nearest to a text query.
    Search(SearchArgs),
    /// Write raw embeddings of prompts or images (L2-normalized float32).
    Embed(EmbedArgs),
    /// Show what an index holds.
    Info(InfoArgs),
    /// Join shard indexes (from `plip index --shard`) into the index at --index.
    ///
    /// The shards' segment files are hard-linked (or copied) into OUT, never
    /// embedded again, and committed at once: an interrupted merge leaves OUT as
    /// it was. Shards must share the model and tiling options. An image found in
    /// two shards is kept once (from the first shard given) and reported. Paths
    /// are rebased when the shards sit in another folder than OUT. The result is
    /// an ordinary index: search it, or update it with `plip index`.
    Merge(MergeArgs),
    /// Write the index's vectors and paths for FAISS and clip-retrieval's tools.
    ///
    /// OUT/img_emb/img_emb_{i}.npy holds float32 L2-normalized rows and
    /// OUT/metadata/metadata_{i}.parquet the column image_path (plus x, y, w, h,
    /// level and mpp for tiles of whole slides), row for row, in parts of at
    /// most 1M rows: the layout clip-retrieval writes, which embedding_reader
    /// (format parquet_npy), autofaiss, pandas and LanceDB read. Query vectors
    /// for such an index come from `plip embed --text ... --jsonl`.
    ///
    /// --format trident|clam writes one HDF5 file per slide instead, for slide-level
    /// models (TRIDENT's slide encoders, CLAM's attention MIL): `features` float32
    /// (N, 512) and `coords` int64 (N, 2), level-0 top-left corners, with TRIDENT's
    /// attributes; OUT/slides.csv maps slide ids to files and paths. Needs the HDF5
    /// library (Debian: libhdf5-103-1).
    Export(export::ExportArgs),
    /// Score a whole slide's tiles by queries: a PNG heatmap, QuPath GeoJSON, CSV.
    ///
    /// QUERY is text, an image file, or a slide region SLIDE@X,Y,W,H. Uses the
    /// tile embeddings stored in the index when the slide is indexed, else embeds
    /// its tiles now (with the tiling flags below, or the index's). The picture is
    /// the slide's thumbnail (aspect ratio kept) with each tile filled in viridis
    /// from the lowest score (dark purple) to the highest (yellow), and a colour bar
    /// at the right whose ticks are labelled with cosine values. --geojson and --csv
    /// write every tile with one score per query, for QuPath's measurement maps and
    /// for spreadsheets.
    Heatmap(slides::HeatmapArgs),
    /// Check a slide's tiling before a long run: thumbnail, tissue mask, kept tiles (PNG).
    ///
    /// Draws the slide's thumbnail with the tissue tinted green, artifacts (pen ink,
    /// debris) hatched orange and every tile that `plip index` would embed outlined in blue,
    /// with a legend under it, and prints the slide's size, levels, resolution and the
    /// number of tiles kept. Takes the same tiling flags as `plip index` (default: the
    /// index's tiling, else 0.5 µm/px, 224 px, 0.5 tissue). --geojson writes the mask's
    /// outlines for QuPath, to correct and use with --tissue-mask.
    Tiles(slides::TilesArgs),
    /// Measure retrieval recall, zero-shot or linear-probe accuracy, or HNSW quality.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Search in a web browser: a local web app and JSON API over the index.
    ///
    /// Open the printed address: results come as you type; drop an image to search by
    /// it; click a result for more like it. A whole-slide tile opens a deep-zoom
    /// viewer (OpenSeadragon, embedded) zoomed to the boxed hit, with a toggle for the
    /// query's heatmap over the slide; "By slide" ranks slides. Scripts can use the
    /// JSON API: `GET /api/search?q=TEXT&top=N[&by_slide=1]`, `POST /api/search` with
    /// an image as the body, `/api/slide/ID.dzi`. Everything is served from the binary
    /// (no network), files only by item id. New commits of `plip index` are picked up
    /// while it runs. Research use only, not for diagnosis; English queries.
    Serve(serve::ServeArgs),
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
    /// PLIP's linear probe: logistic regression on frozen image embeddings.
    ///
    /// DATA is a folder with one subfolder of images per class (with --test DIR2
    /// holding the test images in the same class folders), or a CSV with a header and
    /// columns image,label and optionally split (train, val or test; paths relative to
    /// the CSV). Without a test set, each class is split 70/30 with --seed as PLIP's
    /// scripts split (numpy's RandomState permutation).
    ///
    /// The classifier is PLIP's: scikit-learn's SGDClassifier(loss="log_loss",
    /// penalty="l2", class_weight="balanced") on L2-normalized embeddings, one-vs-rest.
    /// plip solves the same objective exactly (L-BFGS) instead of by SGD, so results do
    /// not depend on a random seed. The penalty alpha is chosen from 1e-4, 1e-3, 1e-2,
    /// 1e-1 by macro F1 on a validation split cut 70/30 from the training set (or the
    /// CSV's val rows), never on the test set, then the model is refitted on all
    /// training images. Reports accuracy, macro and weighted F1, per-class metrics and
    /// the confusion matrix on the test set. Embeddings come from the eval cache, so a
    /// rerun with other settings does not embed again.
    ///
    /// Research use only: a probe's score on one data set says little about another.
    LinearProbe(EvalLinearProbeArgs),
    /// HNSW recall@K against exact search, and query latency, at several ef values.
    ///
    /// Builds a graph with the index's parameters over the index's vectors and uses
    /// evenly spaced indexed vectors as queries.
    Ann(EvalAnnArgs),
    /// Whole slides as queries: top-1, majority vote at 3 and 5, mAP@5 (as SISH).
    ///
    /// Each labelled slide of the index is the query against all the others
    /// (leave-one-slide-out), or against other patients' slides when the CSV has a
    /// patient column (leave-one-patient-out), ranked as `plip search --image SLIDE`
    /// ranks them. Majority votes break ties by rank; mAP@5 is SISH's (the precision
    /// at each correct rank among the top 5, summed, over 5). Also per-class figures
    /// and the macro F1 of the MV@5 votes. A class with one slide (or one patient) is
    /// reported apart. See docs/slide-retrieval.md.
    SlideRetrieval(slide_args::EvalSlideRetrievalArgs),
    /// Whole-slide zero-shot classification from tile scores, as MI-Zero pools them.
    ///
    /// Each tile's class probabilities are the softmax over classes of 100 × its
    /// cosine to the class prompts (ensembled as `plip eval zero-shot`); a slide's
    /// class score is the mean of that class's --top-k highest tile probabilities,
    /// and the best class is the prediction. Reports balanced accuracy, weighted F1
    /// and the usual per-class table, over the index's stored tiles.
    SlideZeroShot(slide_args::EvalSlideZeroShotArgs),
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
    /// Also write a self-contained HTML report: the Recall@K curve and the worst
    /// queries with their top hits.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EvalZeroShotArgs {
    /// Folder with one subfolder of images per class.
    dir: PathBuf,
    /// Class names for the prompts: a CSV `class,name1|name2|...` (one row per class
    /// folder; synonyms separated by |, all of them ensembled), or `kather` for the
    /// names PLIP used for the Kather colon folders (ADI = adipose tissue, BACK =
    /// background, DEB = debris, LYM = lymphocytes, MUC = mucus, MUS = smooth muscle,
    /// NORM = normal colon mucosa, STR = cancer-associated stroma, TUM = colorectal
    /// adenocarcinoma epithelium). Folders without a row use their own name.
    #[arg(long, value_name = "CSV|kather")]
    labels: Option<PathBuf>,
    /// A named template set (repeatable): `plip` = "An H&E image patch of {}." (the
    /// prompt PLIP's zero-shot code uses), `plip-short` = "An H&E image of {}.",
    /// `pathology` = 20 histopathology templates in the style of CONCH's ensembles.
    #[arg(long = "templates", value_name = "NAME")]
    template_sets: Vec<String>,
    /// Prompt template with `{}` for the class name (repeatable; ensembled with
    /// --templates). [default: "An H&E image patch of {}."]
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Also write a self-contained HTML report: confusion-matrix heatmap, per-class
    /// bars, and the most confident mistakes as thumbnails.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
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
struct EvalLinearProbeArgs {
    /// Class folders, or a CSV `image,label[,split]`.
    data: PathBuf,
    /// Class folders of the test images (DATA then holds only training images).
    #[arg(long, value_name = "DIR2")]
    test: Option<PathBuf>,
    /// Penalty to try (repeatable). With one value no validation split is made.
    /// [default: 1e-4, 1e-3, 1e-2, 1e-1]
    #[arg(long = "alpha", value_name = "A")]
    alphas: Vec<f64>,
    /// Seed of the stratified 70/30 splits.
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report: confusion-matrix heatmap, per-class
    /// bars, the choice of alpha, and the most confident mistakes as thumbnails.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
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
    /// Also write a self-contained HTML page of the table and the run record.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct IndexArgs {
    /// Folders (or image files) to index. Without any, every folder indexed
    /// before is scanned again (the current folder for a new index). A run
    /// removes only entries under the folders it scanned.
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
    /// Index only shard K of N (K counts from 0), for one task of a job spread
    /// over machines; `auto` takes K and N from a Slurm job array or a
    /// Kubernetes Indexed Job. Files are split by a fixed hash of their path
    /// relative to DIR (all tiles of a slide stay together), the same on every
    /// machine. Give each shard its own --index and join them with `plip merge`;
    /// re-run a shard with the same --shard to resume or update it.
    #[arg(long, value_name = "K/N|auto")]
    shard: Option<String>,
    /// With `--shard auto` in a Kubernetes Indexed Job: the number of shards
    /// (the Job's `completions`).
    #[arg(long, value_name = "N", requires = "shard")]
    shards: Option<u32>,
    /// Whole slides: resolution of a tile, in µm per pixel (0.5 ≈ 20x, as PLIP's
    /// training patches) [default: the index's tiling, else 0.5].
    #[arg(long, value_name = "UM", help_heading = "Whole slides", value_parser = parse_mpp)]
    mpp: Option<f64>,
    /// Whole slides: side of a tile in pixels at --mpp [default: the index's, else 224].
    #[arg(long, value_name = "PX", help_heading = "Whole slides", value_parser = parse_tile)]
    tile: Option<u32>,
    /// Whole slides: least share of tissue in a kept tile, 0 to 1 (0 keeps every tile)
    /// [default: the index's, else 0.5].
    #[arg(long, value_name = "F", help_heading = "Whole slides", value_parser = parse_min_tissue)]
    min_tissue: Option<f64>,
    /// Whole slides: level-0 µm per pixel to assume for slides that record none, or
    /// record one so coarse that tiles would be upsampled more than 2x (without it
    /// such slides are skipped, with a message).
    #[arg(long, value_name = "UM", help_heading = "Whole slides", value_parser = parse_mpp)]
    slide_mpp: Option<f64>,
    /// Whole slides: keep pen ink, debris and edge lines where they look like tissue
    /// (by default they are excluded); `--keep-artifacts=false` turns it off again
    /// [default: the index's, else false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", help_heading = "Whole slides")]
    keep_artifacts: Option<bool>,
    /// Whole slides: your own tissue masks instead of detection. For slide a.svs:
    /// DIR/a.geojson (or a.svs.geojson; polygons in level-0 pixels, as QuPath exports
    /// them: class Artifact, Ignore*, Other or Background is cut out, any other class is
    /// tissue) or DIR/a.png (or a.svs.png; any downsample, nonzero = tissue). Slides
    /// without a mask are detected. Recorded in the index and kept by later runs;
    /// editing a mask re-tiles its slide; `none` goes back to detection.
    #[arg(long, value_name = "DIR", help_heading = "Whole slides")]
    tissue_mask: Option<PathBuf>,
    /// Whole slides: embed exactly the patches TRIDENT or CLAM chose, from their
    /// coordinate files in DIR (for slide a.svs: patches/a_patches.h5 or a_patches.h5
    /// from TRIDENT, patches/a.h5 or a.h5 from CLAM), with their patch size and level,
    /// so plip's tile rows line up with theirs. Slides without a file use plip's grid.
    /// Needs the HDF5 library (Debian: libhdf5-103-1).
    #[arg(long, value_name = "DIR", help_heading = "Whole slides")]
    coords: Option<PathBuf>,
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
  plip search \"mucus\" --under slides/colon --threshold 0.25 --html results.html

Whole slides: each tissue tile of an indexed slide is a hit of its own, printed as
`path @ x,y  (wxh)` (level-0 pixels; --json adds x, y, w, h, level and mpp). A region of a
slide is a query term too: SLIDE@X,Y,W,H in level-0 pixels (e.g. --image
slides/a.svs@4480,8960,448,448, or --add 0.5:slides/a.svs@0,0,448,448); it is read like a
tile (a square region is resized to the model's 224 px). --by-slide ranks slides instead,
by the mean of each slide's 5 best tile scores:
  plip search \"tumor\" --by-slide --json
  plip search --image slides/a.svs@4480,8960,448,448 --by-slide --html slides.html
A whole slide as the query finds other slides like it, each with its matched tiles:
  plip search --image slides/a.svs --group-by patients.csv --json")]
struct SearchArgs {
    /// What to look for, in English (e.g. "tumor tissue"), or an image file.
    #[arg(required_unless_present = "image")]
    query: Option<String>,
    /// Find images similar to this image (preprocessed exactly like indexed images),
    /// or to a slide region SLIDE@X,Y,W,H (level-0 pixels).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Add a term: text or image, optionally weighted as W:TERM (repeatable).
    #[arg(long = "add", value_name = "[W:]TERM", allow_hyphen_values = true)]
    add: Vec<String>,
    /// Subtract a term: text or image, optionally weighted as W:TERM (repeatable).
    #[arg(long = "subtract", value_name = "[W:]TERM", allow_hyphen_values = true)]
    subtract: Vec<String>,
    /// Prompt template with {} for each text term (repeatable; ensembled).
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Keep only hits with a cosine score of at least S (between -1 and 1).
    #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = parse_score)]
    threshold: Option<f32>,
    /// Search only images under this folder.
    #[arg(long, value_name = "SUBDIR")]
    under: Option<PathBuf>,
    /// Also write a self-contained HTML page of the results (thumbnails embedded).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also write the slide tiles found as QuPath GeoJSON, one file per slide
    /// (DIR/<slide>.geojson, and DIR/slides.csv mapping files to slides): each hit is
    /// a tile with its box in level-0 pixels and the measurements "plip: QUERY"
    /// (cosine) and "plip rank". Drag the file onto the open slide in QuPath.
    #[arg(long, value_name = "DIR")]
    geojson: Option<PathBuf>,
    /// Also write the slide tiles found as CSV, one file per slide (DIR/<slide>.csv:
    /// x,y,width,height,level,mpp, the score, rank), for spreadsheets and R.
    #[arg(long, value_name = "DIR")]
    csv: Option<PathBuf>,
    /// Number of results (at least 1).
    #[arg(long, short = 'k', default_value_t = 10,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    top: usize,
    /// Print JSON Lines: {"rank":1,"score":0.3071,"path":"slides/a.png"}; a slide
    /// tile adds "x","y","w","h","level","mpp".
    #[arg(long, conflicts_with = "paths_only")]
    json: bool,
    /// Rank whole slides, by the mean of each slide's 5 best tile scores (--json
    /// rows: rank, score, path, tiles, best {x,y,w,h,score}); --html then shows each
    /// slide's thumbnail with its best tiles boxed.
    #[arg(long)]
    by_slide: bool,
    /// Print only paths, one per line, for piping (byte for byte as on disk).
    #[arg(long)]
    paths_only: bool,
    /// With --paths-only: end each path with a NUL byte instead of a newline,
    /// for `xargs -0` (file names may contain newlines).
    #[arg(long, short = '0', requires = "paths_only")]
    null: bool,
    /// Search approximately with the index's HNSW graphs, with this breadth
    /// (higher is slower and more exact; 256 is a good start). By default every
    /// image is scored exactly. Only segments of 20,000 images or more have
    /// graphs, so this helps only very large indexes; `plip eval ann` measures
    /// recall per breadth on your own index.
    #[arg(long)]
    ef: Option<usize>,
    #[command(flatten)]
    slides: slide_args::SlideSearchArgs,
}

#[derive(Debug, Args)]
struct EmbedArgs {
    /// Images to embed, one row each in this order. A whole slide gives one row per
    /// tissue tile (with --jsonl: "input","x","y","w","h","level","embedding"), tiled
    /// with the flags below (default: the index's tiling, else 0.5 µm/px, 224 px, 0.5
    /// tissue).
    images: Vec<PathBuf>,
    /// A prompt to embed (repeatable), one row each in order.
    #[arg(long = "text", short = 't')]
    texts: Vec<String>,
    /// Write a float32 .npy of shape (rows, dim) here.
    #[arg(long, short = 'o', required_unless_present = "jsonl")]
    output: Option<PathBuf>,
    /// Write JSON Lines to stdout instead: {"input":..., "embedding":[...]} (a slide's
    /// tiles add x, y, w, h and level).
    #[arg(long, conflicts_with = "output")]
    jsonl: bool,
    /// Images per model batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[command(flatten)]
    tiling: TilingArgs,
}

// The tiling flags are checked as they are parsed, before anything is opened for
// writing (issue 27: `--mpp NaN` used to corrupt the manifest).
fn parse_mpp(s: &str) -> std::result::Result<f64, String> {
    tiling::parse_with(s, tiling::check_mpp)
}
fn parse_tile(s: &str) -> std::result::Result<u32, String> {
    tiling::parse_with(s, tiling::check_tile)
}
fn parse_min_tissue(s: &str) -> std::result::Result<f64, String> {
    tiling::parse_with(s, tiling::check_min_tissue)
}

/// Tiling flags of the single-slide commands (as `plip index` has them).
#[derive(Debug, Args)]
struct TilingArgs {
    /// Resolution of a tile, µm per pixel [default: the index's, else 0.5].
    #[arg(long, value_name = "UM", value_parser = parse_mpp)]
    mpp: Option<f64>,
    /// Side of a tile in pixels at --mpp [default: the index's, else 224].
    #[arg(long, value_name = "PX", value_parser = parse_tile)]
    tile: Option<u32>,
    /// Least share of tissue in a kept tile, 0 to 1 [default: the index's, else 0.5].
    #[arg(long, value_name = "F", value_parser = parse_min_tissue)]
    min_tissue: Option<f64>,
    /// Level-0 µm per pixel to assume when the slide records none (or an implausibly
    /// coarse one).
    #[arg(long, value_name = "UM", value_parser = parse_mpp)]
    slide_mpp: Option<f64>,
    /// Keep pen ink, debris and edge lines where they look like tissue (excluded by
    /// default) [default: the index's, else false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    keep_artifacts: Option<bool>,
    /// Your own tissue masks instead of detection: DIR/SLIDE.geojson (QuPath export,
    /// level-0 pixels) or DIR/SLIDE.png (any downsample, nonzero = tissue), as for
    /// `plip index --tissue-mask` [default: the index's]; `none` detects.
    #[arg(long, value_name = "DIR")]
    tissue_mask: Option<PathBuf>,
}

impl TilingArgs {
    fn flags(&self) -> crate::source::slide::TilingOverrides {
        crate::source::slide::TilingOverrides {
            mpp: self.mpp,
            tile: self.tile,
            min_tissue: self.min_tissue,
            slide_mpp: self.slide_mpp,
            keep_artifacts: self.keep_artifacts,
        }
    }

    fn masks(&self) -> crate::job::MaskFlag {
        crate::job::MaskFlag::parse(self.tissue_mask.as_deref())
    }
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Shard index folders (the --index of each `plip index --shard` task).
    #[arg(required = true, value_name = "SHARD")]
    shards: Vec<PathBuf>,
    /// Replace the index already at --index with the merge.
    #[arg(long)]
    replace: bool,
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A finite number in [-1, 1], for cosine thresholds.
fn parse_score(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || !(-1.0..=1.0).contains(&v) {
        return Err(format!("{s} is not a cosine score between -1 and 1"));
    }
    Ok(v)
}

/// Settings resolved from flags and environment.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Model requested explicitly, if any (the first `--model`).
    pub model: Option<String>,
    /// Every `--model` given, in order (several only for `plip eval`).
    pub models: Vec<String>,
    /// Index folder given explicitly, if any.
    pub index: Option<PathBuf>,
    /// Current directory.
    pub cwd: PathBuf,
    /// Show progress and summaries.
    pub progress: bool,
    /// Quiet mode.
    pub quiet: bool,
    /// Arithmetic of the model's dense layers, as asked (`auto` by default).
    pub precision: PrecisionChoice,
}

impl Config {
    fn from_args(g: &GlobalArgs) -> Result<Self> {
        if let Some(n) = g.threads {
            // The command's whole process (serve's request threads too) uses rayon's
            // global pool. A host that started it already (the Python console script
            // after an API call) keeps its size: say so rather than ignore the flag.
            if let Err(e) = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build_global()
            {
                if !g.quiet {
                    warn(format!(
                        "--threads {n}: this process's thread pool already runs {} threads ({e})",
                        rayon::current_num_threads()
                    ));
                }
            }
        }
        crate::source::set_decode_budget(g.decode_memory.saturating_mul(1 << 20));
        let models: Vec<String> = g
            .model
            .iter()
            .filter(|m| !m.trim().is_empty())
            .cloned()
            .collect();
        Ok(Config {
            model: models.first().cloned(),
            models,
            index: g.index.clone(),
            cwd: std::env::current_dir().context("reading the current directory")?,
            progress: !g.quiet && std::io::stderr().is_terminal(),
            quiet: g.quiet,
            precision: g.precision,
        })
    }

    /// The index folder to read: explicit, else the nearest `.plip` upward.
    pub(crate) fn find_index(&self) -> Result<PathBuf> {
        Ok(crate::app::locate::find_index(
            &self.cwd,
            self.index.as_deref(),
        )?)
    }

    /// The model to load: `--model`, else the index's model, else PLIP
    /// ([`crate::app::locate::model_source`]).
    pub(crate) fn model_source(&self, index_dir: Option<&Path>) -> String {
        crate::app::locate::model_source(self.model.as_deref(), index_dir)
    }

    /// The index folder to write: explicit, else the nearest `.plip`, else `./.plip`.
    pub(crate) fn index_for_writing(&self) -> PathBuf {
        crate::app::locate::index_for_writing(&self.cwd, self.index.as_deref())
    }
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let config = Config::from_args(&cli.global)?;
    if config.models.len() > 1 && !matches!(cli.command, Command::Eval(_)) {
        bail!("several --model are for `plip eval` (a comparison); other commands take one");
    }
    match cli.command {
        Command::Index(a) => index::cmd_index(&config, a),
        Command::Search(a) => search::cmd_search(&config, a),
        Command::Embed(a) => embed::cmd_embed(&config, a),
        Command::Info(a) => info::cmd_info(&config, a),
        Command::Merge(a) => merge::cmd_merge(&config, a),
        Command::Export(a) => export::cmd_export(&config, a),
        Command::Heatmap(a) => slides::cmd_heatmap(&config, a),
        Command::Tiles(a) => slides::cmd_tiles(&config, a),
        Command::Eval(e) => eval::cmd_eval(&config, e),
        Command::Serve(a) => serve::cmd_serve(&config, a),
    }
}

fn load_embedder(config: &Config, source: &str, towers: Towers) -> Result<Embedder> {
    crate::app::model::load(source, towers, config.precision)
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("plip: warning: {msg}");
}

/// A progress bar on stderr counting `unit`, hidden unless stderr is a terminal
/// and `--quiet` is off.
fn progress_bar(config: &Config, unit: &str) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}  {{elapsed_precise}}"
        ))
        .expect("valid template"),
    );
    bar
}

fn open_index(config: &Config) -> Result<Index> {
    let dir = config.find_index()?;
    Ok(Index::open(&dir)?)
}

/// Absolute form of `p` against `cwd`.
pub(crate) fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}
