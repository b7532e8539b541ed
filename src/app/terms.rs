//! A query's terms, parsed once for every face: the positional query, an image
//! (`--image`, Python's `image=`), and weighted `--add` / `--subtract` terms.
//!
//! A positional query is a slide region (`slide.svs@X,Y,W,H`), else an existing
//! image file, else words. An image is a slide region or a readable image file.
//! Weighted terms are `[W:]TERM` ([`crate::query::parse_term`]).

use std::io;
use std::path::Path;

use anyhow::{Context, Result};

use crate::model::Towers;
use crate::query::{parse_term, slides::parse_region, QueryTerm, TermKind};
use crate::source::walk;

/// The parsed terms of one query, with the label pages and reports show for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Terms {
    /// Weighted terms, in the order given.
    pub terms: Vec<QueryTerm>,
    /// The query as the user wrote it: `tumor`, `image a.png`, `+ 2:necrosis`.
    pub label: String,
}

impl Terms {
    /// Parses a face's inputs. An empty positional query is refused with the
    /// command line's advice; a missing image is an [`io::ErrorKind::NotFound`].
    pub(crate) fn parse(
        query: Option<&str>,
        image: Option<&Path>,
        add: &[String],
        subtract: &[String],
    ) -> Result<Terms> {
        let mut terms = Vec::new();
        let mut label = Vec::new();
        if let Some(q) = query {
            terms.push(QueryTerm {
                weight: 1.0,
                kind: positional(q)?,
            });
            label.push(q.to_string());
        }
        if let Some(img) = image {
            terms.push(QueryTerm {
                weight: 1.0,
                kind: image_term(img)?,
            });
            label.push(format!("image {}", img.display()));
        }
        for a in add {
            terms.push(parse_term(a, 1.0).with_context(|| format!("--add {a}"))?);
            label.push(format!("+ {a}"));
        }
        for s in subtract {
            terms.push(parse_term(s, -1.0).with_context(|| format!("--subtract {s}"))?);
            label.push(format!("- {s}"));
        }
        Ok(Terms {
            terms,
            label: label.join(" "),
        })
    }

    /// The model towers the terms need: text for words, vision for images and regions.
    pub(crate) fn towers(&self) -> Towers {
        Towers {
            text: self
                .terms
                .iter()
                .any(|t| matches!(t.kind, TermKind::Text(_))),
            vision: self
                .terms
                .iter()
                .any(|t| matches!(t.kind, TermKind::Image(_) | TermKind::Region(..))),
        }
    }
}

/// The positional query: a region, an existing image file, or words.
fn positional(q: &str) -> Result<TermKind> {
    if q.trim().is_empty() {
        anyhow::bail!("the query is empty; give some words, e.g. plip search \"tumor tissue\"");
    }
    if let Some((path, r)) = parse_region(q)? {
        return Ok(TermKind::Region(path, r));
    }
    let p = Path::new(q);
    Ok(if walk::is_image(p) && p.is_file() {
        TermKind::Image(p.to_path_buf())
    } else {
        TermKind::Text(q.to_string())
    })
}

/// An image query: a region, or an image file that can be opened.
fn image_term(img: &Path) -> Result<TermKind> {
    if let Some((path, r)) = parse_region(&img.to_string_lossy())? {
        return Ok(TermKind::Region(path, r));
    }
    if let Err(e) = crate::source::open_regular(img) {
        // The kind stays, so a host can raise its own "not found".
        return Err(io::Error::new(e.kind(), format!("query image {}: {e}", img.display())).into());
    }
    Ok(TermKind::Image(img.to_path_buf()))
}
