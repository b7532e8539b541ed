//! Queries: terms, their weights, templates, and the arithmetic that combines
//! them into one unit vector (as rclip does it).
//!
//! Every term is embedded and L2-normalized, multiplied by its weight, summed, and
//! the sum normalized again. Text terms go through every template and the
//! normalized results are averaged: the same ensembling as `plip eval zero-shot`.

use std::path::Path;

use crate::source::walk;

pub(crate) mod filter;
pub(crate) mod mosaic;
pub(crate) mod slide_match;
pub(crate) mod slides;

/// Most terms (text, images, items) one query may have: the one cap every
/// front end that takes queries from others (`plip serve`) applies.
pub(crate) const MAX_TERMS: usize = 32;
/// Most text-model runs one query may cost: its text terms times its templates
/// (at least one each). The `pathology` template set (20) fits three terms.
pub(crate) const MAX_PROMPTS: usize = 64;

/// What a query term is made of.
#[derive(Clone, Debug, PartialEq)]
pub enum TermKind {
    /// Words, embedded by the text tower (through the templates, if any).
    Text(String),
    /// An image file, embedded exactly like indexed images.
    Image(std::path::PathBuf),
    /// A region of a whole slide, `x, y, w, h` in level-0 pixels (`slide.svs@x,y,w,h`),
    /// read and embedded as a tile.
    Region(std::path::PathBuf, [u64; 4]),
}

/// One weighted term of a query: `--add 2:lymphocytes`, `--subtract ./ref.png`.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryTerm {
    /// Signed weight (subtracted terms are negative).
    pub weight: f32,
    /// Text or image.
    pub kind: TermKind,
}

/// Parses `[W:]TERM`. A term naming an existing file with an image extension is an
/// image; anything else is text. A prefix before the first `:` without spaces is
/// a weight and must be a finite number (write `1:Ki-67:high` for a literal colon).
pub(crate) fn parse_term(raw: &str, sign: f32) -> anyhow::Result<QueryTerm> {
    // A slide region, `slide.svs@x,y,w,h` (a colon in its path is part of the path
    // when the whole names a file).
    if let Ok(Some((path, r))) = slides::parse_region(raw) {
        return Ok(QueryTerm {
            weight: sign,
            kind: TermKind::Region(path, r),
        });
    }
    // A file whose own name holds a colon (`12:30.png`) is that file, unweighted.
    let whole = Path::new(raw);
    if walk::is_image(whole) && whole.is_file() {
        return Ok(QueryTerm {
            weight: sign,
            kind: TermKind::Image(whole.to_path_buf()),
        });
    }
    let (weight, rest) = match raw.split_once(':') {
        Some((w, rest))
            if !w.is_empty() && !w.contains(char::is_whitespace) && !looks_like_drive(w, rest) =>
        {
            let parsed: f32 = w.parse().map_err(|_| {
                anyhow::anyhow!(
                    "malformed weight {w:?} in {raw:?}: write WEIGHT:TERM with a number, \
                     e.g. 2:lymphocytes or 0.5:./ref.png"
                )
            })?;
            if !parsed.is_finite() {
                anyhow::bail!("weight in {raw:?} must be a finite number");
            }
            (parsed, rest)
        }
        _ => (1.0, raw),
    };
    if rest.trim().is_empty() {
        anyhow::bail!("empty query term {raw:?}");
    }
    let path = Path::new(rest);
    let kind = if let Some((p, r)) = slides::parse_region(rest)? {
        TermKind::Region(p, r)
    } else if walk::is_image(path) && path.is_file() {
        TermKind::Image(path.to_path_buf())
    } else if walk::is_image(path) && (rest.contains('/') || rest.contains('\\')) {
        anyhow::bail!("query image {rest} does not exist");
    } else {
        TermKind::Text(rest.to_string())
    };
    Ok(QueryTerm {
        weight: sign * weight,
        kind,
    })
}

fn looks_like_drive(w: &str, rest: &str) -> bool {
    // `C:\slides\a.png` on Windows is a path, not a weight.
    w.len() == 1 && w.chars().all(|c| c.is_ascii_alphabetic()) && rest.starts_with(['\\', '/'])
}

/// Weighted combination as rclip does it ([`crate::vectors::combine`]).
pub(crate) fn combine(terms: &[(f32, Vec<f32>)]) -> anyhow::Result<Vec<f32>> {
    Ok(crate::vectors::combine(terms)?)
}

/// The embedding of a text term: through each template (`{}` = the text), each
/// normalized, averaged and renormalized, exactly as `plip eval zero-shot` builds
/// class embeddings. Without templates, the text itself.
pub(crate) fn text_embedding(
    embedder: &crate::embed::Embedder,
    text: &str,
    templates: &[String],
) -> anyhow::Result<Vec<f32>> {
    if templates.is_empty() {
        return Ok(embedder.embed_texts(&[text])?.remove(0));
    }
    let prompts: Vec<String> = templates.iter().map(|t| fill_template(t, text)).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    Ok(crate::vectors::ensemble(&embedder.embed_texts(&refs)?)?)
}

/// Fills `{}` in a template with `name` (or appends the name when there is none).
pub(crate) fn fill_template(template: &str, name: &str) -> String {
    if template.contains("{}") {
        template.replace("{}", name)
    } else {
        format!("{template} {name}")
    }
}

/// Builds the query vector from weighted terms.
pub fn build_query(
    embedder: &crate::embed::Embedder,
    terms: &[QueryTerm],
    templates: &[String],
) -> anyhow::Result<Vec<f32>> {
    let mut parts = Vec::with_capacity(terms.len());
    for t in terms {
        let v = match &t.kind {
            TermKind::Text(s) => text_embedding(embedder, s, templates)?,
            TermKind::Image(p) => {
                let img = embedder
                    .load_image(p)
                    .map_err(|e| anyhow::anyhow!("cannot read query image {}: {e}", p.display()))?;
                embedder.embed_pixels(img.pixels, 1)?.remove(0)
            }
            TermKind::Region(p, [x, y, w, h]) => {
                let side = embedder.preprocess_config().output_size().0;
                let rgb = crate::source::slide::tiles::read_region_as_tile(
                    p,
                    (*x, *y, *w, *h),
                    side,
                    None,
                )
                .map_err(|e| anyhow::anyhow!("cannot read query region: {e}"))?;
                embedder
                    .embed_pixels(embedder.preprocess_rgb(&rgb), 1)?
                    .remove(0)
            }
        };
        parts.push((t.weight, v));
    }
    combine(&parts)
}

#[cfg(test)]
mod term_tests {
    use super::*;

    #[test]
    fn weights_terms_and_errors() {
        assert_eq!(
            parse_term("2:lymphocytes", 1.0).unwrap(),
            QueryTerm {
                weight: 2.0,
                kind: TermKind::Text("lymphocytes".into())
            }
        );
        assert_eq!(parse_term("necrosis", -1.0).unwrap().weight, -1.0);
        assert_eq!(parse_term("0.5:tumor", -1.0).unwrap().weight, -0.5);
        let e = parse_term("x:tumor", 1.0).unwrap_err().to_string();
        assert!(e.contains("malformed weight"), "{e}");
        assert_eq!(
            parse_term("H&E image: tumor", 1.0).unwrap().kind,
            TermKind::Text("H&E image: tumor".into())
        );
        assert!(parse_term("2:", 1.0).is_err());
        assert!(parse_term("./missing/ref.png", 1.0)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn combine_normalizes_each_term_then_the_sum() {
        let q = combine(&[(1.0, vec![2.0, 0.0]), (1.0, vec![0.0, 5.0])]).unwrap();
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!((q[0] - s).abs() < 1e-6 && (q[1] - s).abs() < 1e-6);
        assert!(combine(&[(1.0, vec![1.0, 0.0]), (-1.0, vec![3.0, 0.0])]).is_err());
    }
}
