//! The query string of `/api/search`, parsed and checked before any work is done.
//!
//! Everything a client sends arrives here as untrusted text. Parsing never
//! touches the file system: a term is text or an item id, never a path, and
//! `under` is only a prefix compared with stored paths. Every limit (length,
//! number of terms, text-model runs (terms times templates), top-k, score range) gives a 400 with a message that names
//! the parameter, never a panic.

use std::borrow::Cow;

use super::ids::ItemId;

/// Most results one request may ask for.
pub(crate) const MAX_TOP: usize = 1000;
pub(crate) use crate::query::{MAX_PROMPTS, MAX_TERMS};
/// Longest text term or template, in bytes. The text tower reads 77 tokens, so
/// longer text changes nothing but costs tokenizer time.
pub(crate) const MAX_TEXT: usize = 2000;

/// One weighted term of a query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Term {
    /// Words, through the templates if any.
    Text(f32, String),
    /// The stored vector of an indexed item.
    Item(f32, ItemId),
}

/// A checked search request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SearchParams {
    /// The terms, in the order given: `q`, then `add`, `sub` and `like`.
    pub terms: Vec<Term>,
    /// Prompt templates with `{}`.
    pub templates: Vec<String>,
    /// Number of results.
    pub top: usize,
    /// Folder prefix relative to the index root, normalized (no `./`, no
    /// trailing `/`).
    pub under: Option<String>,
    /// Minimum cosine score.
    pub threshold: Option<f32>,
    /// Rank whole slides by their tiles (`plip search --by-slide`).
    pub by_slide: bool,
}

/// Parses a query string (without the `?`). `default_top` applies when `top` is
/// absent.
pub(crate) fn parse(query: &str, default_top: usize) -> Result<SearchParams, String> {
    let mut p = SearchParams {
        terms: Vec::new(),
        templates: Vec::new(),
        top: default_top,
        under: None,
        threshold: None,
        by_slide: false,
    };
    let mut seen_q = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value: Cow<str> = value;
        match key.as_ref() {
            "q" => {
                if seen_q {
                    return Err("`q` is given twice; use `add` for more terms".into());
                }
                seen_q = true;
                let text = check_text("q", &value)?;
                // An empty `q` is allowed when other terms are given (a page
                // whose search box is cleared after "more like this").
                if !text.trim().is_empty() {
                    p.terms.push(Term::Text(1.0, text));
                }
            }
            "add" | "sub" => {
                let sign = if key == "add" { 1.0 } else { -1.0 };
                let (w, rest) = split_weight(&key, &value)?;
                let text = check_text(&key, rest)?;
                if text.trim().is_empty() {
                    return Err(format!(
                        "`{key}` is empty; give some words, e.g. {key}=2:lymphocytes"
                    ));
                }
                p.terms.push(Term::Text(sign * w, text));
            }
            "like" => {
                let (w, rest) = split_weight("like", &value)?;
                let id = ItemId::parse(rest).ok_or_else(|| {
                    format!(
                        "`like` takes an item id (16 hex digits, from a hit's `id`), not {rest:?}"
                    )
                })?;
                p.terms.push(Term::Item(w, id));
            }
            "template" => p.templates.push(check_text("template", &value)?),
            "top" | "k" => {
                p.top = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_TOP).contains(n))
                    .ok_or_else(|| {
                        format!("`{key}` must be a whole number from 1 to {MAX_TOP}, not {value:?}")
                    })?;
            }
            "under" => p.under = normalize_under(&value)?,
            "threshold" => {
                let t = value
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|t| (-1.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        format!("`threshold` must be a cosine score from -1 to 1, not {value:?}")
                    })?;
                p.threshold = Some(t);
            }
            "by_slide" => {
                p.by_slide = match value.trim() {
                    "" | "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(format!("`by_slide` is 1 or 0, not {:?}", truncate(&value, 40))),
                };
            }
            // Cache busters and the like are harmless; anything else is a typo
            // the caller wants to hear about.
            "_" => {}
            other => {
                return Err(format!(
                "unknown parameter `{}`; known: q, add, sub, like, template, top, under, threshold, by_slide",
                truncate(other, 40)
            ))
            }
        }
        if p.terms.len() > MAX_TERMS || p.templates.len() > MAX_TERMS {
            return Err(format!(
                "too many terms or templates: at most {MAX_TERMS} terms (q, add, sub, like) and \
                 {MAX_TERMS} templates per request"
            ));
        }
    }
    let texts = p
        .terms
        .iter()
        .filter(|t| matches!(t, Term::Text(..)))
        .count();
    let prompts = texts * p.templates.len().max(1);
    if prompts > MAX_PROMPTS {
        return Err(format!(
            "too many prompts: {texts} text terms times {} templates is {prompts} text-model runs; \
             at most {MAX_PROMPTS} per request",
            p.templates.len()
        ));
    }
    Ok(p)
}

/// Splits `W:REST` into a finite weight and the rest, as `plip search --add`
/// reads it: a prefix before the first `:` without spaces is a weight and must
/// be a number; anything else has weight 1. (`query::parse_term` also looks for
/// image files, which a server must never do with a client's text.)
pub(crate) fn split_weight<'a>(key: &str, raw: &'a str) -> Result<(f32, &'a str), String> {
    match raw.split_once(':') {
        Some((w, rest)) if !w.is_empty() && !w.contains(char::is_whitespace) => {
            let parsed: f32 = w.parse().map_err(|_| {
                format!(
                    "malformed weight {:?} in `{key}`: write WEIGHT:TERM with a number, e.g. 2:lymphocytes",
                    truncate(w, 40)
                )
            })?;
            if !parsed.is_finite() || parsed.abs() > 100.0 {
                return Err(format!(
                    "the weight in `{key}` must be a number from -100 to 100"
                ));
            }
            Ok((parsed, rest))
        }
        _ => Ok((1.0, raw)),
    }
}

fn check_text(key: &str, value: &str) -> Result<String, String> {
    if value.len() > MAX_TEXT {
        return Err(format!("`{key}` is longer than {MAX_TEXT} bytes"));
    }
    if value.contains('\0') {
        return Err(format!("`{key}` contains a NUL character"));
    }
    Ok(value.to_string())
}

/// `./slides/a/` -> `slides/a`; `""`, `.` and `/` mean everything. Only a prefix
/// for stored paths, so `..` cannot reach anything the index does not name.
fn normalize_under(value: &str) -> Result<Option<String>, String> {
    let v = check_text("under", value)?;
    let v = v.trim().replace('\\', "/");
    let parts: Vec<&str> = v
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parts.join("/")))
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
