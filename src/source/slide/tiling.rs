//! What a tiling number may be: the one place that checks `--mpp`, `--tile`,
//! `--min-tissue` and `--slide-mpp` (issue 27).
//!
//! A value out of these ranges used to pass through to the manifest (`NaN` is written
//! as `null`, and the index then no longer opens) or to planning (`--min-tissue 5`
//! kept no tile, and the run removed every indexed slide). So every face checks a
//! value here before it opens anything for writing: the CLI in its flag parsers, the
//! Python host before it opens the index, and [`super::TilePlan::new`] once more.
//!
//! The messages speak of the quantity, not of a flag: each face adds its own name
//! (clap prefixes "invalid value 'NaN' for '--mpp <UM>'").

use super::TileOptions;

/// Sane resolutions of a tile or of a slide, µm per pixel: from far finer than any
/// scanner (0.01) to a 100 µm/px overview, which is coarser than any use of a tile.
pub(crate) const MPP_MIN: f64 = 0.01;
/// See [`MPP_MIN`].
pub(crate) const MPP_MAX: f64 = 100.0;
/// Sides of a tile, in pixels: below 16 a tile holds no histology; above 4096 one
/// model input would be a 48-MB read.
pub(crate) const TILE_MIN: u32 = 16;
/// See [`TILE_MIN`].
pub(crate) const TILE_MAX: u32 = 4096;

/// A resolution in µm per pixel (a tile's, or the one assumed for a slide).
pub(crate) fn check_mpp(v: f64) -> Result<f64, String> {
    if v.is_finite() && (MPP_MIN..=MPP_MAX).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "a resolution must be a number of µm per pixel from {MPP_MIN} to {MPP_MAX} \
             (0.5 is 20x, 0.25 is 40x), not {v}"
        ))
    }
}

/// A tile side in pixels.
pub(crate) fn check_tile(v: u32) -> Result<u32, String> {
    if (TILE_MIN..=TILE_MAX).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "a tile side must be {TILE_MIN} to {TILE_MAX} pixels (PLIP takes 224), not {v}"
        ))
    }
}

/// The least share of tissue in a kept tile.
pub(crate) fn check_min_tissue(v: f64) -> Result<f64, String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "the least tissue share of a tile must be a fraction from 0 to 1 \
             (0.5 keeps tiles at least half tissue; 0 keeps every tile), not {v}"
        ))
    }
}

/// Parses a number for a clap flag, then checks it.
pub(crate) fn parse_with<T: std::str::FromStr>(
    s: &str,
    check: fn(T) -> Result<T, String>,
) -> Result<T, String> {
    let v = s
        .trim()
        .parse::<T>()
        .map_err(|_| format!("`{s}` is not a number"))?;
    check(v)
}

impl TileOptions {
    /// Checks every number; the error names the quantity and says what it may be.
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_mpp(self.mpp)?;
        check_tile(self.tile)?;
        check_min_tissue(self.min_tissue)?;
        if let Some(m) = self.user_mpp {
            check_mpp(m).map_err(|e| format!("assumed slide resolution: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_tiling_numbers_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e-320, 1e300] {
            assert!(check_mpp(bad).is_err(), "mpp {bad}");
        }
        for bad in [f64::NAN, f64::INFINITY, -0.1, 1.01, 5.0] {
            assert!(check_min_tissue(bad).is_err(), "min_tissue {bad}");
        }
        for bad in [0, 1, 15, 4097, u32::MAX] {
            assert!(check_tile(bad).is_err(), "tile {bad}");
        }
        assert_eq!(check_mpp(0.5), Ok(0.5));
        assert_eq!(check_min_tissue(0.0), Ok(0.0));
        assert_eq!(check_min_tissue(1.0), Ok(1.0));
        assert_eq!(check_tile(224), Ok(224));
        assert!(parse_with("NaN", check_mpp).is_err());
        assert!(parse_with("abc", check_mpp)
            .unwrap_err()
            .contains("not a number"));
        assert_eq!(parse_with(" 0.25", check_mpp), Ok(0.25));
        let opts = TileOptions {
            user_mpp: Some(f64::INFINITY),
            ..TileOptions::default()
        };
        assert!(opts
            .validate()
            .unwrap_err()
            .contains("assumed slide resolution"));
        assert!(TileOptions::default().validate().is_ok());
    }
}
