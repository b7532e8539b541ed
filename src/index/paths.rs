//! How an indexed file's path is stored in the index, and turned back into a path.
//!
//! Guarantees: a stored path is relative to the index's root (with `..` where
//! the file lies outside it) and uses `/` separators on every platform, so an
//! index moves between machines with its folder. A file name that is not UTF-8
//! is stored losslessly: each byte that is not part of valid UTF-8 becomes a NUL
//! followed by two hex digits (NUL cannot occur in a file name, so this never
//! collides with a real name). [`relative`] and [`resolve`] round-trip: resolving
//! a stored path against the root it was made from gives the original bytes back.
//! [`display`] shows a stored path to people (such bytes as `\xFE`, control
//! characters escaped) and [`is_under`] says whether one lies under a scope.

use std::path::{Component, Path, PathBuf};

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
