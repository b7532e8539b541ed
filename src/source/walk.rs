//! Finding the images to index, and the paths stored for them.
//!
//! Walks folders with walkdir, keeps files whose extension (any case) is one of
//! [`IMAGE_EXTENSIONS`], skips hidden folders (the `.plip` index itself, `.git`),
//! and returns paths sorted so that ids and output never depend on the order the
//! file system lists entries in.
//!
//! Symbolic links to files and folders are followed, as torchvision's
//! `ImageFolder` does (datasets are often symlinked trees); a link that loops
//! back to a folder above it is reported and skipped. Folders that cannot be read
//! are reported too, and returned, so that the indexing run keeps what it
//! indexed under them instead of dropping it.
//!
//! Stored paths are relative to the index's root, with `/` separators. A file
//! name that is not UTF-8 is stored losslessly: each byte that is not part of
//! valid UTF-8 becomes a NUL followed by two hex digits (NUL cannot occur in a
//! file name, so this never collides with a real name) and [`resolve`] gives the
//! original bytes back; [`display`] shows such bytes as `\xFE`.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use walkdir::WalkDir;

/// Extensions of files plip indexes, lower case.
pub(crate) const IMAGE_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "tif", "tiff", "bmp", "webp", "gif"];

/// True when `path` has an image extension.
pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// True when `path` is indexed: an image, or a whole slide by its extension
/// (`.tif`/`.tiff` slides are images by extension already).
pub(crate) fn is_indexable(path: &Path) -> bool {
    is_image(path) || super::slide::has_slide_extension(path)
}

/// What a walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Absolute, sorted paths of the image files.
    pub(crate) files: Vec<PathBuf>,
    /// Folders (or files) that could not be read; whatever the index holds under
    /// them must be kept.
    pub(crate) unreadable: Vec<PathBuf>,
    /// One line per problem, for the user.
    pub(crate) warnings: Vec<String>,
}

/// Every image under `root` (or `root` itself if it is an image file).
/// Unreadable entries and symlink loops are warnings, not errors.
pub(crate) fn find_images(root: &Path) -> Result<Walk> {
    if !root.exists() {
        bail!("{} does not exist", root.display());
    }
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let mut walk = Walk::default();
    if root.is_file() {
        if !is_indexable(&root) {
            bail!(
                "{} is not an image file ({}) or a whole slide",
                root.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        walk.files.push(root);
        return Ok(walk);
    }
    let walker = WalkDir::new(&root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir() && e.file_name().to_string_lossy().starts_with('.'))
        });
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_file() && is_indexable(e.path()) => {
                walk.files.push(e.into_path())
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(ancestor) = e.loop_ancestor() {
                    walk.warnings.push(format!(
                        "skipping {}: a symbolic link back to {} (a loop)",
                        e.path()
                            .map_or_else(String::new, |p| p.display().to_string()),
                        ancestor.display()
                    ));
                } else {
                    if let Some(p) = e.path() {
                        walk.unreadable.push(p.to_path_buf());
                    }
                    walk.warnings
                        .push(format!("{e}; what the index holds under it is kept"));
                }
            }
        }
    }
    walk.files.sort();
    Ok(walk)
}

/// `path` relative to `base` (both absolute and normalized), with `..` where
/// needed and `/` separators, as stored in the index. Lossless for names that
/// are not UTF-8 (see the module docs).
pub(crate) fn relative(path: &Path, base: &Path) -> String {
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(p[common..].iter().map(|c| encode(c.as_os_str())));
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// A path component as stored: itself when UTF-8, else with NUL-hex escapes.
fn encode(s: &std::ffi::OsStr) -> String {
    if let Some(s) = s.to_str() {
        return s.to_string();
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in s.as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\0{b:02x}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    s.to_string_lossy().into_owned()
}

/// The bytes of a stored path component.
fn decode(part: &str) -> std::ffi::OsString {
    if !part.contains('\0') {
        return part.into();
    }
    let mut bytes = Vec::with_capacity(part.len());
    let mut rest = part.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == 0 && tail.len() >= 2 {
            let hex = std::str::from_utf8(&tail[..2]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                bytes.push(v);
                rest = &tail[2..];
                continue;
            }
        }
        bytes.push(b);
        rest = tail;
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        std::ffi::OsString::from_vec(bytes)
    }
    #[cfg(not(unix))]
    String::from_utf8_lossy(&bytes).into_owned().into()
}

/// A stored path for people: bytes that are not UTF-8 as `\xFE`, and control
/// characters (a newline in a file name) escaped, so one hit is one line.
pub(crate) fn display(stored: &str) -> String {
    let mut out = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        match c {
            '\0' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push_str(&format!("\\x{}", hex.to_uppercase()));
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// True when the stored path `p` is `scope` or lies under it. `.` (the index's
/// root) covers everything under the root, not paths outside it (`../x`).
pub(crate) fn is_under(p: &str, scope: &str) -> bool {
    if scope == "." {
        return p != ".." && !p.starts_with("../");
    }
    p == scope || (p.starts_with(scope) && p[scope.len()..].starts_with('/'))
}

/// Joins a stored `/`-separated relative path onto `base`, normalizing `..`.
pub(crate) fn resolve(base: &Path, stored: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for part in stored.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(decode(p)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(is_image(Path::new("a/B.JPG")));
        assert!(is_image(Path::new("x.TiFf")));
        assert!(!is_image(Path::new("notes.txt")));
        assert!(!is_image(Path::new("jpg")));
    }

    #[test]
    fn relative_paths_round_trip() {
        let base = Path::new("/data/project");
        for p in ["/data/project/slides/a.png", "/data/other/b.png", "/c.png"] {
            let rel = relative(Path::new(p), base);
            assert_eq!(resolve(base, &rel), Path::new(p), "{rel}");
        }
        assert_eq!(
            relative(Path::new("/data/project/s/a.png"), base),
            "s/a.png"
        );
        assert_eq!(relative(Path::new("/data/x.png"), base), "../x.png");
    }

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_round_trip_and_stay_distinct() {
        use std::os::unix::ffi::OsStrExt;
        let base = Path::new("/data");
        let a = base.join(std::ffi::OsStr::from_bytes(b"bad\xfe.png"));
        let b = base.join(std::ffi::OsStr::from_bytes(b"bad\xff.png"));
        let (ra, rb) = (relative(&a, base), relative(&b, base));
        assert_ne!(ra, rb);
        assert_eq!(resolve(base, &ra), a);
        assert_eq!(resolve(base, &rb), b);
        assert_eq!(display(&ra), "bad\\xFE.png");
    }

    #[test]
    fn scope_dot_does_not_cover_paths_outside_the_root() {
        assert!(is_under("a/b.png", "."));
        assert!(!is_under("../outside/b.png", "."));
        assert!(is_under("s/a.png", "s"));
        assert!(!is_under("s2/a.png", "s"));
        assert_eq!(display("a\nb.png"), "a\\nb.png");
    }
}
