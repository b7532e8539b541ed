//! Others' tilings as input (`plip index --coords DIR`): the patches TRIDENT or CLAM
//! chose for a slide, read from their coordinate files, become the slide's tiles, so
//! that plip's features line up row for row with theirs.
//!
//! Files, for slide `a.svs`, looked up in this order ([`find`]):
//! `DIR/patches/a_patches.h5`, `DIR/a_patches.h5` (TRIDENT), `DIR/patches/a.h5`,
//! `DIR/a.h5` (CLAM). Each holds a dataset `coords` (N, 2) of level-0 top-left
//! corners, and attributes on it that say how big a patch is:
//!
//! * **TRIDENT** (`IO.coords_to_h5`): `patch_size` (pixels at the target
//!   magnification) and `patch_size_level0`. A patch is the level-0 square of side
//!   `patch_size_level0`, read as TRIDENT's `WSIPatcher` reads it: at the level
//!   `WSI.get_best_level_and_custom_downsample` picks for `d = patch_size_level0 /
//!   patch_size` (the first level whose downsample is within 0.1 of `d`, else the
//!   last one below it), `round(patch_size_level0 / int(downsample))` pixels a side
//!   there, resized to `patch_size` (Pillow's bicubic, `Image.resize`'s default);
//! * **CLAM** (`create_patches_fp.py`): `patch_size` and `patch_level`. A patch is
//!   `read_region(coord, patch_level, (patch_size, patch_size))`, as CLAM reads it;
//!   its level-0 side is `patch_size` times that level's downsample.
//!
//! The patch then goes through the usual CLIP preprocessing, like any tile. A corner
//! outside the slide (negative, or at or past its right or bottom edge) is left out
//! and counted; a patch that only runs over the edge is read as OpenSlide reads it
//! (black where there is no slide).

use std::path::{Path, PathBuf};

use crate::hdf5::{Attr, H5File};

/// The coordinate file for `slide` in `dir`, if there is one.
pub(crate) fn find(dir: &Path, slide: &Path) -> Option<PathBuf> {
    let name = slide.file_name()?.to_string_lossy().into_owned();
    let stem = match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name.as_str(),
    };
    candidates(dir, stem).into_iter().find(|p| p.is_file())
}

fn candidates(dir: &Path, stem: &str) -> Vec<PathBuf> {
    vec![
        dir.join("patches").join(format!("{stem}_patches.h5")),
        dir.join(format!("{stem}_patches.h5")),
        dir.join("patches").join(format!("{stem}.h5")),
        dir.join(format!("{stem}.h5")),
    ]
}

/// How the patches of one file are read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PatchSpec {
    /// Level-0 side of a patch.
    pub(crate) side0: u64,
    /// Side of the model input before CLIP preprocessing.
    pub(crate) px: u32,
    /// The level read, and the pixels read per side there.
    pub(crate) level: usize,
    pub(crate) read_px: u32,
    /// Which tool wrote the file ("TRIDENT" or "CLAM"), for messages.
    pub(crate) layout: &'static str,
}

/// A coordinate file's patches, checked against a slide.
#[derive(Clone, Debug)]
pub(crate) struct Coords {
    pub(crate) spec: PatchSpec,
    /// Corners inside the slide, in the file's order.
    pub(crate) corners: Vec<(u64, u64)>,
    /// Corners outside the slide, left out: how many, and the first.
    pub(crate) outside: (usize, Option<(i64, i64)>),
}

fn positive(a: Option<Attr>, name: &str) -> Result<Option<u64>, String> {
    match a {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => Ok(Some(n as u64)),
            _ => Err(format!(
                "its attribute {name} is {v:?}, not a positive whole number"
            )),
        },
    }
}

/// TRIDENT's `WSI.get_best_level_and_custom_downsample(d, tolerance=0.1)`: the
/// first level whose downsample is within 0.1 of `d`, else the last level whose
/// downsample is at most `d` (level 0 when `d` is below every level).
pub(crate) fn trident_level(d: f64, downsamples: &[f64]) -> usize {
    if let Some(i) = downsamples.iter().position(|&ds| (ds - d).abs() <= 0.1) {
        return i;
    }
    downsamples.iter().rposition(|&ds| ds <= d).unwrap_or(0)
}

/// Reads `file` for a slide of `width x height` level-0 pixels whose levels have
/// the `downsamples` given (level 0 first). Errors are messages to put after the
/// file name.
pub(crate) fn load(
    file: &Path,
    (width, height): (u64, u64),
    downsamples: &[f64],
) -> Result<Coords, String> {
    let f = H5File::open(file).map_err(|e| e.to_string())?;
    let at = |k: &str| f.attr("coords", k).map_err(|e| e.to_string());
    let (values, (rows, cols)) = f.read_i64("coords").map_err(|e| e.to_string())?;
    if cols != 2 {
        return Err(format!(
            "its coords dataset is ({rows}, {cols}); (N, 2) was expected"
        ));
    }
    let px = positive(at("patch_size")?, "patch_size")?
        .ok_or("its coords dataset has no patch_size attribute (TRIDENT and CLAM write one)")?;
    let px = u32::try_from(px).map_err(|_| format!("patch_size {px} is too large"))?;
    let spec = if let Some(side0) = positive(at("patch_size_level0")?, "patch_size_level0")? {
        let level = trident_level(side0 as f64 / f64::from(px), downsamples);
        // WSIPatcher: `int(level_downsample)`, then `round(patch_size_src / it)`.
        let ds = downsamples[level].trunc().max(1.0);
        let read_px = ((side0 as f64 / ds).round() as u32).max(1);
        PatchSpec {
            side0,
            px,
            level,
            read_px,
            layout: "TRIDENT",
        }
    } else if let Some(level) = at("patch_level")?.and_then(|a| a.as_i64()) {
        let level = usize::try_from(level)
            .ok()
            .filter(|&l| l < downsamples.len())
            .ok_or(format!(
                "its patch_level {level} is not a level of the slide (it has {})",
                downsamples.len()
            ))?;
        PatchSpec {
            side0: (f64::from(px) * downsamples[level]).round() as u64,
            px,
            level,
            read_px: px,
            layout: "CLAM",
        }
    } else {
        return Err(
            "its coords dataset has neither patch_size_level0 (TRIDENT) nor \
                    patch_level (CLAM), so the patch size at level 0 is unknown"
                .into(),
        );
    };
    let mut corners = Vec::with_capacity(rows);
    let mut outside = (0, None);
    for c in values.chunks_exact(2) {
        let (x, y) = (c[0], c[1]);
        if x < 0 || y < 0 || x as u64 >= width || y as u64 >= height {
            outside.0 += 1;
            outside.1.get_or_insert((x, y));
        } else {
            corners.push((x as u64, y as u64));
        }
    }
    Ok(Coords {
        spec,
        corners,
        outside,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, coords: &[i64], attrs: &[(&str, Attr)]) -> PathBuf {
        let p = dir.join(name);
        let f = H5File::create(&p).unwrap();
        f.write_i64("coords", (coords.len() / 2, 2), coords, attrs)
            .unwrap();
        f.close().unwrap();
        p
    }

    #[test]
    fn trident_and_clam_files_give_their_patch_geometry() {
        if !crate::hdf5::available() {
            eprintln!("SKIPPED: no HDF5 library");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ds = [1.0, 4.0, 16.0];
        let t = write(
            dir.path(),
            "a_patches.h5",
            &[0, 0, 512, 0, 5000, 10, -1, 0],
            &[
                ("patch_size", Attr::Int(256)),
                ("patch_size_level0", Attr::Int(512)),
            ],
        );
        let c = load(&t, (4096, 2048), &ds).unwrap();
        assert_eq!(
            c.spec,
            PatchSpec {
                side0: 512,
                px: 256,
                level: 0,
                read_px: 512,
                layout: "TRIDENT"
            }
        );
        assert_eq!(c.corners, [(0, 0), (512, 0)]);
        assert_eq!(c.outside, (2, Some((5000, 10))));
        let m = write(
            dir.path(),
            "b.h5",
            &[64, 128],
            &[
                ("patch_size", Attr::Int(256)),
                ("patch_level", Attr::Int(1)),
            ],
        );
        let c = load(&m, (4096, 2048), &ds).unwrap();
        assert_eq!(
            c.spec,
            PatchSpec {
                side0: 1024,
                px: 256,
                level: 1,
                read_px: 256,
                layout: "CLAM"
            }
        );
        let bad = write(
            dir.path(),
            "c.h5",
            &[0, 0],
            &[("patch_size", Attr::Int(256))],
        );
        let e = load(&bad, (4096, 2048), &ds).unwrap_err();
        assert!(
            e.contains("patch_size_level0") && e.contains("patch_level"),
            "{e}"
        );
        let lvl = write(
            dir.path(),
            "d.h5",
            &[0, 0],
            &[
                ("patch_size", Attr::Int(256)),
                ("patch_level", Attr::Int(7)),
            ],
        );
        assert!(load(&lvl, (4096, 2048), &ds)
            .unwrap_err()
            .contains("patch_level 7"));
        assert_eq!(find(dir.path(), Path::new("/x/a.svs")), Some(t));
        // TRIDENT's level choice: within 0.1 of the wanted downsample, else below it.
        let real = [1.0, 4.000_146, 16.002_3];
        assert_eq!(trident_level(4.0, &real), 1, "OpenSlide's rule would say 0");
        assert_eq!(trident_level(2.0, &real), 0);
        assert_eq!(trident_level(8.0, &real), 1);
        assert_eq!(trident_level(0.5, &real), 0);
        assert_eq!(find(dir.path(), Path::new("/x/b.ndpi")), Some(m));
        assert_eq!(find(dir.path(), Path::new("/x/zzz.svs")), None);
    }
}
