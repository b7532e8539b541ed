//! The flags of slides as queries (issue 32): `plip search --image SLIDE`'s slide
//! flags and `plip eval slide-retrieval` / `slide-zero-shot`. Kept apart from
//! `mod.rs` so that each file stays one idea.

use std::path::PathBuf;

use clap::Args;

use crate::query::slide_match::SlideScore;

/// `plip search`'s slide-query flags.
#[derive(Debug, Args, Default)]
pub(super) struct SlideSearchArgs {
    /// How slides are compared when the query is a whole slide (--image SLIDE) or a
    /// region with this flag (--image SLIDE@X,Y,W,H --slide-score ...): `bag` = for
    /// each query tile its best match in the candidate slide, then the median over the
    /// query's tiles (Yottixel); `mean` = cosine of the slides' mean tile embeddings.
    /// [default: mean for a whole slide, bag for a region]
    #[arg(long, value_name = "mean|bag", value_parser = parse_slide_score)]
    pub(super) slide_score: Option<SlideScore>,
    /// Keep the query slide itself in a slide query's ranking (it is left out by
    /// default); a region query then finds its own slide first.
    #[arg(long)]
    pub(super) include_self: bool,
    /// A CSV with a header `slide,patient` (or case): a slide query leaves out every
    /// slide of the query's patient. Slides are named as the index stores them, as
    /// paths relative to the CSV, or by file name.
    #[arg(long, value_name = "CSV")]
    pub(super) group_by: Option<PathBuf>,
}

impl SlideSearchArgs {
    pub(super) fn options(&self) -> crate::app::slides_like::SlideOptions {
        crate::app::slides_like::SlideOptions {
            score: self.slide_score,
            include_self: self.include_self,
            group_by: self.group_by.clone(),
        }
    }
}

pub(super) fn parse_slide_score(s: &str) -> Result<SlideScore, String> {
    s.parse()
}

/// `plip eval slide-retrieval`.
#[derive(Debug, Args)]
pub(super) struct EvalSlideRetrievalArgs {
    /// CSV with a header `slide,label[,patient]`: one row per indexed slide. With a
    /// patient column the evaluation is leave-one-patient-out. Slides are named as
    /// the index stores them, as paths relative to the CSV, or by file name; slides
    /// not in the index are named in a warning and left out.
    #[arg(long, value_name = "CSV")]
    pub(super) labels: PathBuf,
    /// How slides are compared (see `plip search --slide-score`). [default: mean]
    #[arg(long, value_name = "mean|bag", value_parser = parse_slide_score)]
    pub(super) slide_score: Option<SlideScore>,
    /// Print one JSON document.
    #[arg(long)]
    pub(super) json: bool,
    /// Also write a self-contained HTML report: the figures, per-class table, and the
    /// worst queries as slide thumbnails next to the slides they retrieved.
    #[arg(long, value_name = "FILE")]
    pub(super) html: Option<PathBuf>,
}

/// `plip eval slide-zero-shot`.
#[derive(Debug, Args)]
pub(super) struct EvalSlideZeroShotArgs {
    /// CSV with a header `slide,label`: the true class of each indexed slide (named as
    /// in `plip eval slide-retrieval --labels`).
    #[arg(long, value_name = "CSV")]
    pub(super) labels: PathBuf,
    /// The prompt names of the labels: a CSV `class,name1|name2` (as `plip eval
    /// zero-shot --labels`; `kather` for PLIP's Kather names), or inline
    /// `TUM=tumor|carcinoma,NORM=normal colon mucosa`. A label without a name is its
    /// own name. [default: every label its own name]
    #[arg(long, value_name = "CSV|LIST")]
    pub(super) classes: Option<String>,
    /// K of MI-Zero's top-K pooling: a class's slide score is the mean of its K
    /// highest tile probabilities (all tiles when a slide has fewer).
    #[arg(long, default_value_t = 10,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(super) top_k: usize,
    /// A named template set (repeatable; see `plip eval zero-shot --templates`).
    #[arg(long = "templates", value_name = "NAME")]
    pub(super) template_sets: Vec<String>,
    /// Prompt template with `{}` for the class name (repeatable; ensembled).
    /// [default: "An H&E image patch of {}."]
    #[arg(long = "template")]
    pub(super) templates: Vec<String>,
    /// Print one JSON document (with every slide's class scores).
    #[arg(long)]
    pub(super) json: bool,
}
