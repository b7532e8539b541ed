//! A self-contained HTML page of search results: query, a grid of thumbnails
//! embedded as data URIs (no external requests), score and path for each hit,
//! each opening the full image on click.
//!
//! Thumbnails come from plip's own decoding (`preprocess`), so a page shows what
//! was embedded. Every path and query string is HTML-escaped: a file named
//! `<img src=x onerror=alert(1)>.png` is shown as text and runs nothing.

use std::io::{self, Write};
use std::path::Path;

use crate::output::printers::PrintedHit;
use crate::preprocess::DecodeLimits;

/// Longest side of a thumbnail, in pixels.
pub(crate) const THUMB_SIZE: u32 = 256;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a relative path for an `href`, keeping `/`.
/// `path` is a stored path (see `index::paths`): its file-name bytes are what
/// get percent-encoded, so a name that is not UTF-8 links to the right file.
fn href(path: &str) -> String {
    let raw = crate::index::paths::resolve(Path::new(""), path);
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        raw.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = raw.to_string_lossy().into_owned().into_bytes();
    let mut out = String::new();
    if path.starts_with("../") || path == ".." {
        // resolve() against an empty base drops leading `..`; keep them.
        for _ in path.split('/').take_while(|p| *p == "..") {
            out.push_str("../");
        }
    }
    for b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A JPEG thumbnail of `path` as a data URI, or None if it cannot be decoded.
pub(crate) fn thumbnail(path: &Path) -> Option<String> {
    // The guarded reader of indexing: a hostile file gives no preview, never a crash.
    let (rgb, _) = crate::source::read_rgb(path, &DecodeLimits::default()).ok()?;
    super::thumb::data_uri(&super::thumb::shrink(
        rgb,
        THUMB_SIZE,
        super::thumb::Shrink::Bicubic,
    ))
}

/// Writes the page. `hits` paths are relative to the current folder (`cwd`);
/// links are made relative to the page's folder (`page_dir`) so the page can be
/// opened from anywhere.
pub(crate) fn write_page<W: Write>(
    mut w: W,
    query: &str,
    hits: &[PrintedHit],
    cwd: &Path,
    page_dir: &Path,
) -> io::Result<()> {
    write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>plip: {q}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}}\n\
         h1{{font-size:1.3rem}} .q{{font-family:monospace;background:#eee;padding:.1rem .4rem}}\n\
         .grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:1rem}}\n\
         figure{{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem}}\n\
         figure img{{width:100%;height:200px;object-fit:contain;background:#f0f0f0}}\n\
         figcaption{{font-size:.8rem;word-break:break-all;margin-top:.3rem}}\n\
         .score{{font-weight:bold}} .missing{{height:200px;display:flex;align-items:center;\
         justify-content:center;background:#f0f0f0;color:#999}}\n\
         footer{{margin-top:1.5rem;font-size:.75rem;color:#777}}\n</style>\n</head>\n<body>\n\
         <h1>plip search: <span class=\"q\">{q}</span></h1>\n<p>{n} result(s)</p>\n\
         <div class=\"grid\">\n",
        q = escape(query),
        n = hits.len()
    )?;
    for h in hits {
        let full = crate::index::paths::resolve(cwd, &h.path);
        let link = crate::index::paths::relative(
            &std::path::absolute(&full).unwrap_or(full.clone()),
            &std::path::absolute(page_dir).unwrap_or(page_dir.to_path_buf()),
        );
        let shown = crate::index::paths::display(&h.path);
        let preview = match &h.region {
            Some(r) => crate::output::by_slide::tile_uri(&full, r),
            None => thumbnail(&full),
        };
        let shown = match &h.region {
            Some(r) => format!("{shown} @ {},{} ({}x{})", r.x, r.y, r.w, r.h),
            None => shown,
        };
        let img = match preview {
            Some(uri) => format!("<img src=\"{uri}\" alt=\"{}\">", escape(&shown)),
            None => "<div class=\"missing\">no preview</div>".to_string(),
        };
        writeln!(
            w,
            "<figure class=\"hit\" data-rank=\"{rank}\"><a href=\"{href}\">{img}</a>\n\
             <figcaption><span class=\"rank\">#{rank}</span> \
             <span class=\"score\">{score:.4}</span><br><span class=\"path\">{path}</span>\
             </figcaption></figure>",
            rank = h.rank,
            href = escape(&href(&link)),
            score = h.score,
            path = escape(&shown),
        )?;
    }
    write!(
        w,
        "</div>\n<footer>Made by plip with the PLIP model, for research use only; \
         not medical advice.</footer>\n</body>\n</html>\n"
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralizes_markup() {
        assert_eq!(
            escape("<img src=x onerror=alert(1)>.png"),
            "&lt;img src=x onerror=alert(1)&gt;.png"
        );
        assert_eq!(escape("a\"b'c&"), "a&quot;b&#39;c&amp;");
        assert_eq!(href("a b/<x>.png"), "a%20b/%3Cx%3E.png");
        assert_eq!(href("../up/a.png"), "../up/a.png");
        #[cfg(unix)]
        assert_eq!(href("bad\0fe.png"), "bad%FE.png");
    }
}
