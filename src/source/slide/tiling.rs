//! How slides are cut into model inputs: the one [`Tiling`] type (its defaults,
//! its checks and its form in the manifest), and [`TilingOverrides`], what a user
//! gave (flags, Python arguments) over the index's tiling. Also what each tiling
//! number may be: the one place that checks `--mpp`, `--tile`, `--min-tissue` and
//! `--slide-mpp` (issue 27).
//!
//! A value out of these ranges used to pass through to the manifest (`NaN` is written
//! as `null`, and the index then no longer opens) or to planning (`--min-tissue 5`
//! kept no tile, and the run removed every indexed slide). So every face checks a
//! value here before it opens anything for writing: the CLI in its flag parsers, the
//! Python host before it opens the index, and [`super::TilePlan::new`] once more.
//!
//! The messages speak of the quantity, not of a flag: each face adds its own name
//! (clap prefixes "invalid value 'NaN' for '--mpp <UM>'").

use serde::{Deserialize, Serialize};

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

/// How slides are cut into model inputs: `--mpp`, `--tile`, `--min-tissue`,
/// `--slide-mpp` and `--keep-artifacts`, as a run uses them and as the manifest
/// records them (`tiling`, and per slide).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Tiling {
    /// Target resolution of a model input, µm per pixel (PLIP: about 0.5, i.e. 20x).
    pub(crate) mpp: f64,
    /// Side of a model input in pixels at that resolution.
    pub(crate) tile: u32,
    /// Least tissue fraction of a kept tile, in 0..=1; 0 keeps every tile without
    /// running tissue detection.
    pub(crate) min_tissue: f64,
    /// `--slide-mpp`: the level-0 resolution assumed for slides that record none (or
    /// one no scanner writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) slide_mpp: Option<f64>,
    /// `--keep-artifacts`: pen ink and other artifacts that look like tissue are kept.
    /// Absent (false) in manifests written before it existed or without it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) keep_artifacts: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for Tiling {
    fn default() -> Self {
        Tiling {
            mpp: 0.5,
            tile: 224,
            min_tissue: 0.5,
            slide_mpp: None,
            keep_artifacts: false,
        }
    }
}

impl Tiling {
    /// Checks every number; the error names the quantity and says what it may be.
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_mpp(self.mpp)?;
        check_tile(self.tile)?;
        check_min_tissue(self.min_tissue)?;
        if let Some(m) = self.slide_mpp {
            check_mpp(m).map_err(|e| format!("assumed slide resolution: {e}"))?;
        }
        Ok(())
    }

    /// The options that decide which tiles a slide has (everything but `slide_mpp`,
    /// which only matters for slides without a resolution).
    pub(crate) fn same_grid(&self, other: &Tiling) -> bool {
        self.mpp == other.mpp
            && self.tile == other.tile
            && self.min_tissue == other.min_tissue
            && self.keep_artifacts == other.keep_artifacts
    }

    /// `--mpp 0.5 --tile 224 --min-tissue 0.5` (and `--keep-artifacts`), for messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "--mpp {} --tile {} --min-tissue {}{}",
            self.mpp,
            self.tile,
            self.min_tissue,
            if self.keep_artifacts {
                " --keep-artifacts"
            } else {
                ""
            }
        )
    }
}

/// What a user gave over the index's tiling (`plip index` flags, Python
/// arguments): `None` where nothing was given.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct TilingOverrides {
    pub(crate) mpp: Option<f64>,
    pub(crate) tile: Option<u32>,
    pub(crate) min_tissue: Option<f64>,
    pub(crate) slide_mpp: Option<f64>,
    /// `--keep-artifacts` (`Some(false)`: `--keep-artifacts=false`).
    pub(crate) keep_artifacts: Option<bool>,
}

impl TilingOverrides {
    /// Checks each number given; the error starts with the quantity's field name
    /// (`mpp: ...`), which each face translates into its own (`--mpp`, `mpp=`).
    /// Called before anything is opened for writing.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let named = |name: &str, r: Result<(), String>| r.map_err(|e| format!("{name}: {e}"));
        named("mpp", self.mpp.map_or(Ok(()), |v| check_mpp(v).map(drop)))?;
        named(
            "tile",
            self.tile.map_or(Ok(()), |v| check_tile(v).map(drop)),
        )?;
        named(
            "min_tissue",
            self.min_tissue
                .map_or(Ok(()), |v| check_min_tissue(v).map(drop)),
        )?;
        named(
            "slide_mpp",
            self.slide_mpp.map_or(Ok(()), |v| check_mpp(v).map(drop)),
        )
    }

    /// The tiling of a run: each value given, else what the index recorded, else
    /// the defaults (0.5 µm/px, 224 px, 0.5 tissue).
    pub(crate) fn over(&self, recorded: Option<Tiling>) -> Tiling {
        let base = recorded.unwrap_or_default();
        Tiling {
            mpp: self.mpp.unwrap_or(base.mpp),
            tile: self.tile.unwrap_or(base.tile),
            min_tissue: self.min_tissue.unwrap_or(base.min_tissue),
            slide_mpp: self.slide_mpp.or(base.slide_mpp),
            keep_artifacts: self.keep_artifacts.unwrap_or(base.keep_artifacts),
        }
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
        let opts = Tiling {
            slide_mpp: Some(f64::INFINITY),
            ..Tiling::default()
        };
        assert!(opts
            .validate()
            .unwrap_err()
            .contains("assumed slide resolution"));
        assert!(Tiling::default().validate().is_ok());
    }

    #[test]
    fn keep_artifacts_is_recorded_only_when_set_and_changes_the_grid() {
        // a manifest written before --keep-artifacts existed reads, and writes unchanged
        let old = r#"{"mpp":0.5,"tile":224,"min_tissue":0.5}"#;
        let t: Tiling = serde_json::from_str(old).unwrap();
        assert!(!t.keep_artifacts);
        assert_eq!(serde_json::to_string(&t).unwrap(), old);
        let k = Tiling {
            keep_artifacts: true,
            ..t
        };
        assert!(!t.same_grid(&k) && !k.same_grid(&t) && k.same_grid(&k));
        assert!(serde_json::to_string(&k)
            .unwrap()
            .contains(r#""keep_artifacts":true"#));
        assert!(k.describe().ends_with(" --keep-artifacts"));
    }

    #[test]
    fn overrides_take_what_was_given_over_the_record_over_the_defaults() {
        let recorded = Tiling {
            mpp: 1.0,
            slide_mpp: Some(0.25),
            ..Tiling::default()
        };
        let o = TilingOverrides {
            tile: Some(256),
            ..TilingOverrides::default()
        };
        let t = o.over(Some(recorded));
        assert_eq!((t.mpp, t.tile, t.slide_mpp), (1.0, 256, Some(0.25)));
        assert_eq!(TilingOverrides::default().over(None), Tiling::default());
        let bad = TilingOverrides {
            min_tissue: Some(2.0),
            ..TilingOverrides::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("min_tissue: "));
    }
}
