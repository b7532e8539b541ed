//! Finding the images to index.
//!
//! Walks folders with walkdir, keeps files whose extension (any case) is one of
//! [`IMAGE_EXTENSIONS`], skips hidden folders (the `.plip` index itself, `.git`),
//! and returns paths sorted so that ids and output never depend on the order the
//! file system lists entries in.

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

/// Absolute, sorted paths of every image under `root` (or `root` itself if it is an
/// image file). Unreadable folder entries are returned as warnings, not errors.
pub(crate) fn find_images(root: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    if !root.exists() {
        bail!("{} does not exist", root.display());
    }
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    if root.is_file() {
        if is_image(&root) {
            files.push(root);
        } else {
            bail!(
                "{} is not an image file ({})",
                root.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        return Ok((files, warnings));
    }
    let walker = WalkDir::new(&root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir() && e.file_name().to_string_lossy().starts_with('.'))
        });
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_file() && is_image(e.path()) => files.push(e.into_path()),
            Ok(_) => {}
            Err(e) => warnings.push(e.to_string()),
        }
    }
    files.sort();
    Ok((files, warnings))
}

/// `path` relative to `base` (both absolute), with `..` where needed and `/`
/// separators, as stored in the index.
pub(crate) fn relative(path: &Path, base: &Path) -> String {
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(
        p[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// True when the stored path `p` is `scope` or lies under it (`.` is everything).
pub(crate) fn is_under(p: &str, scope: &str) -> bool {
    scope == "." || p == scope || (p.starts_with(scope) && p[scope.len()..].starts_with('/'))
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
            p => out.push(p),
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
}
