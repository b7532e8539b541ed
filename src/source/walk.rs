//! Finding the images to index.
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
//! How a found file's path is stored in the index is `index::paths`' concern.

use std::path::{Path, PathBuf};

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
}
