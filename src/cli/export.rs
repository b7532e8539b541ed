//! `plip export OUT`: the index's vectors and paths in clip-retrieval's
//! `img_emb/` + `metadata/` layout ([`crate::output::export`]), for FAISS,
//! autofaiss, embedding_reader or LanceDB.

use super::*;
use crate::output::export;

pub(super) fn cmd_export(config: &Config, args: ExportArgs) -> Result<i32> {
    let index = open_index(config)?;
    let out = absolute(&config.cwd, &args.out);
    let mode = if args.resume {
        export::Mode::Resume
    } else if args.replace {
        export::Mode::Replace
    } else {
        export::Mode::New
    };
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
