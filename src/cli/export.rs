//! `plip export OUT`: the index's vectors and paths in clip-retrieval's
//! `img_emb/` + `metadata/` layout ([`crate::output::export`]), for FAISS,
//! autofaiss, embedding_reader or LanceDB; with `--format trident|clam`, one HDF5
//! feature file per slide ([`crate::output::h5_export`]).

use super::*;
use crate::output::export;
use crate::output::h5_export::{self, H5Layout};

/// The layouts `plip export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ExportFormat {
    /// img_emb/*.npy + metadata/*.parquet (clip-retrieval, FAISS, LanceDB).
    ClipRetrieval,
    /// OUT/<slide>.h5 as TRIDENT's feature extraction writes it.
    Trident,
    /// OUT/h5_files/<slide>.h5 as CLAM's extract_features_fp.py writes it.
    Clam,
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    /// Folder to write into (img_emb/ and metadata/, or the .h5 files).
    out: PathBuf,
    /// The layout to write.
    #[arg(long, value_enum, default_value_t = ExportFormat::ClipRetrieval)]
    format: ExportFormat,
    /// Rows per part (at most 1,000,000; clip-retrieval format).
    #[arg(long, default_value_t = crate::output::export::DEFAULT_ROWS_PER_PART)]
    rows_per_part: usize,
    /// Write image_path as stored in the index (relative to the index folder's
    /// parent) instead of absolute (clip-retrieval format).
    #[arg(long)]
    relative: bool,
    /// Finish an interrupted export into OUT (same index commit and options): files
    /// already written are kept.
    #[arg(long, conflicts_with = "replace")]
    resume: bool,
    /// Write OUT anew: delete the files of an earlier plip export there first
    /// (only files plip writes; a folder holding anything else is refused).
    #[arg(long)]
    replace: bool,
}

pub(super) fn cmd_export(config: &Config, args: ExportArgs) -> Result<i32> {
    let mode = if args.resume {
        export::Mode::Resume
    } else if args.replace {
        export::Mode::Replace
    } else {
        export::Mode::New
    };
    let layout = match args.format {
        ExportFormat::ClipRetrieval => None,
        ExportFormat::Trident => Some(H5Layout::Trident),
        ExportFormat::Clam => Some(H5Layout::Clam),
    };
    if layout.is_some() && (args.relative || args.rows_per_part != export::DEFAULT_ROWS_PER_PART) {
        bail!("--relative and --rows-per-part are options of the clip-retrieval format, not of --format {:?}", args.format);
    }
    if layout.is_some() && !crate::hdf5::available() {
        // Said before the index is read or anything is written.
        return Err(crate::hdf5::H5Error::Missing {
            path: args.out.clone(),
            why: "libhdf5 could not be loaded".into(),
        }
        .into());
    }
    let index = open_index(config)?;
    let out = absolute(&config.cwd, &args.out);
    if let Some(layout) = layout {
        return export_h5(config, &index, &out, layout, mode);
    }
    let summary = export::export(&index, &out, args.rows_per_part, args.relative, mode)?;
    if !config.quiet {
        eprintln!(
            "plip: exported {} rows of {} dimensions in {} part(s){}{} → {}",
            summary.rows,
            summary.dim,
            summary.parts,
            if summary.with_regions {
                " (with tile regions)"
            } else {
                ""
            },
            if summary.resumed_parts > 0 {
                format!(" ({} kept from the interrupted run)", summary.resumed_parts)
            } else {
                String::new()
            },
            paths::relative(&out, &config.cwd),
        );
    }
    Ok(0)
}

/// `--format trident|clam`.
fn export_h5(
    config: &Config,
    index: &Index,
    out: &Path,
    layout: H5Layout,
    mode: export::Mode,
) -> Result<i32> {
    let summary = h5_export::export(index, out, layout, mode)?;
    if summary.slides == 0 {
        warn(format!(
            "the index holds no slide tiles, so no .h5 file was written ({} whole image(s) \
             have no coordinates; index whole slides to export them)",
            summary.images_left_out
        ));
    }
    if !config.quiet {
        eprintln!(
            "plip: {} slide(s), {} tiles → {}{}{}",
            summary.slides,
            summary.tiles,
            paths::relative(out, &config.cwd),
            if summary.resumed > 0 {
                format!(" ({} kept from the interrupted run)", summary.resumed)
            } else {
                String::new()
            },
            if summary.images_left_out > 0 && summary.slides > 0 {
                format!(
                    " ({} whole image(s) left out: no coordinates)",
                    summary.images_left_out
                )
            } else {
                String::new()
            },
        );
    }
    Ok(0)
}
