//! `--precision auto` (issue 29): bf16 where this CPU runs plip's bf16 dense kernel
//! faster than its f32 path, f32 everywhere else, decided by measuring.
//!
//! Why measure: `vdpbf16ps` does twice the multiply-adds of an f32 FMA per
//! instruction, but whether that makes the vision tower faster depends on the
//! core. On AMD Zen 4 the bf16 tower runs about 1.6x f32; on an Intel Xeon where
//! it was measured, bf16 ran at under half the f32 rate. No vendor table says
//! which, so [`choose`] times the two kernels on the vision tower's MLP shapes
//! (ViT-B: 768 -> 3072 -> 768, 100 rows, on one core, the best of five
//! alternating runs each) and takes bf16 only when it is at least [`MIN_GAIN`]
//! faster. The speed ratio is a property of a core, so one thread measures it:
//! on a busy machine a preempted worker would stall a parallel run, while the
//! best of five single-thread runs usually finds an undisturbed one. A ratio
//! no CPU has in an optimized build (outside [`PLAUSIBLE`]) is measured once
//! more, and if it stays there it is not cached: that run takes f32 and says why.
//! Debug builds cache under a key of their own.
//!
//! The answer is cached in `plip/precision-auto.json` under the user's cache
//! folder (`$PLIP_CACHE_DIR`, else `$XDG_CACHE_HOME/plip`, else
//! `~/.cache/plip`), keyed by the CPU's model string, its relevant feature
//! flags and plip's version; any change measures again. A CPU without
//! AVX512_BF16 needs no measurement: f32.
//!
//! `PLIP_PRECISION_AUTO=bf16|f32` forces auto's answer without measuring, so that
//! tests cover both branches on any machine (bf16 then runs the portable kernel
//! where the CPU lacks AVX512_BF16: slow, same function).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::Linear;
use serde::{Deserialize, Serialize};

use super::{bf16_supported, Dense, Precision};

/// bf16 must be at least this much faster than f32 to be chosen: below it, the
/// measurement's noise could pick either, and f32 is the reference's arithmetic.
pub(crate) const MIN_GAIN: f64 = 1.05;

/// bf16's speed over f32's that a CPU can have in an optimized build: Intel Xeons
/// run the bf16 kernel at 0.4-0.6x f32, AMD Zen 4 at 2.0-2.3x. Outside this range
/// the measurement says more about the build or the moment than about the CPU: an
/// unoptimized (`dev` profile) build runs plip's own bf16 kernel at opt-level 0,
/// 0.02x f32 on Zen 4, while f32 runs in the optimized gemm crate.
pub(crate) const PLAUSIBLE: std::ops::RangeInclusive<f64> = 0.2..=5.0;

/// The environment variable that forces auto's answer (for tests).
pub(crate) const FORCE_ENV: &str = "PLIP_PRECISION_AUTO";

/// What `--precision` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PrecisionChoice {
    /// The faster of f32 and bf16 on this CPU, measured once and cached.
    #[default]
    Auto,
    /// This precision, whatever the CPU.
    Fixed(Precision),
}

impl std::str::FromStr for PrecisionChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(PrecisionChoice::Auto);
        }
        s.parse::<Precision>()
            .map(PrecisionChoice::Fixed)
            .map_err(|_| format!("unknown precision {s:?}: use auto, f32 or bf16"))
    }
}

impl std::fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrecisionChoice::Auto => f.write_str("auto"),
            PrecisionChoice::Fixed(p) => p.fmt(f),
        }
    }
}

/// A resolved precision and why it was chosen, for the run summary and `plip info`.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// The arithmetic the dense layers run in.
    pub precision: Precision,
    /// Why, in words: "auto: 1.62x f32 on AMD EPYC 9454", "asked for", ...
    pub why: String,
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.precision, self.why)
    }
}

impl PrecisionChoice {
    /// The precision to run: a fixed one as asked (refused where the CPU cannot run
    /// it, unless forced for tests), or auto's answer for this CPU.
    pub fn resolve(self) -> Result<Chosen, super::UnsupportedPrecision> {
        match self {
            PrecisionChoice::Fixed(p) => {
                p.check_supported()?;
                Ok(Chosen {
                    precision: p,
                    why: "asked for".into(),
                })
            }
            PrecisionChoice::Auto => Ok(choose()),
        }
    }
}

/// Whether `PLIP_PRECISION_AUTO` forces an answer (`Some`), or an invalid one.
fn forced() -> Option<Precision> {
    std::env::var(FORCE_ENV).ok()?.parse().ok()
}

/// Whether bf16 may run here although the CPU lacks AVX512_BF16: only when a test
/// forces it through [`FORCE_ENV`] (the portable kernel computes the same function).
pub(crate) fn portable_bf16_forced() -> bool {
    forced() == Some(Precision::Bf16)
}

/// Auto's answer for this CPU (see the module docs), worked out once per process:
/// it is a fact about the machine, like its core count.
pub(crate) fn choose() -> Chosen {
    static CHOSEN: std::sync::OnceLock<Chosen> = std::sync::OnceLock::new();
    if forced().is_some() {
        // Tests switch the variable between runs of one process.
        return choose_now();
    }
    CHOSEN.get_or_init(choose_now).clone()
}

fn choose_now() -> Chosen {
    if let Some(p) = forced() {
        return Chosen {
            precision: p,
            why: format!("auto, forced by {FORCE_ENV}"),
        };
    }
    let cpu = cpu_name();
    if !bf16_supported() {
        return Chosen {
            precision: Precision::F32,
            why: format!("auto: no AVX512_BF16 on {cpu}"),
        };
    }
    let key = cache_key(&cpu);
    let ratio = match read_cache(&key).filter(|r| PLAUSIBLE.contains(r)) {
        Some(r) => r,
        None => {
            let measured = || measure().unwrap_or(0.0);
            let r = Some(measured())
                .filter(|r| PLAUSIBLE.contains(r))
                .unwrap_or_else(measured);
            if !PLAUSIBLE.contains(&r) {
                return Chosen {
                    precision: Precision::F32,
                    why: format!(
                        "auto: bf16 measured {r:.2}x f32 on {cpu}, which no CPU runs (an \
                         unoptimized build, or a busy machine): f32, not cached"
                    ),
                };
            }
            write_cache(&key, r);
            r
        }
    };
    Chosen {
        precision: if ratio >= MIN_GAIN {
            Precision::Bf16
        } else {
            Precision::F32
        },
        why: format!("auto: bf16 runs {ratio:.2}x f32 on {cpu}"),
    }
}

/// The CPU's model string, as `lscpu` shows it ("unknown CPU" where none is found).
pub fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| "unknown CPU".into());
    match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
        _ => name,
    }
}

/// The features that decide the kernels' speed, as `name+name+...`.
fn features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut v = Vec::new();
        macro_rules! has {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) { v.push($f); }
            )*};
        }
        has!(
            "avx2",
            "fma",
            "avx512f",
            "avx512bw",
            "avx512bf16",
            "avx512vl"
        );
        v.join("+")
    }
    #[cfg(not(target_arch = "x86_64"))]
    String::from(std::env::consts::ARCH)
}

fn cache_key(cpu: &str) -> String {
    // A debug build's kernels run at other speeds: it keeps answers of its own.
    let build = if cfg!(debug_assertions) {
        " (debug build)"
    } else {
        ""
    };
    format!(
        "{cpu} | {} | plip {}{build}",
        features(),
        env!("CARGO_PKG_VERSION")
    )
}

/// The cache file (see the module docs), `None` without a home folder.
fn cache_file() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = env("PLIP_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("plip")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("plip")))?;
    Some(dir.join("precision-auto.json"))
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    /// Key -> bf16's speed as a multiple of f32's.
    ratios: std::collections::BTreeMap<String, f64>,
}

fn read_cache(key: &str) -> Option<f64> {
    let bytes = std::fs::read(cache_file()?).ok()?;
    let c: CacheFile = serde_json::from_slice(&bytes).ok()?;
    c.ratios.get(key).copied().filter(|r| r.is_finite())
}

/// Best effort: a cache that cannot be written only means measuring next time.
fn write_cache(key: &str, ratio: f64) {
    let Some(path) = cache_file() else { return };
    let mut c: CacheFile = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    c.ratios.insert(key.to_string(), ratio);
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(".precision-auto.json.{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(&c).expect("cache serializes");
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// bf16's speed as a multiple of f32's on the vision tower's MLP layers (see the
/// module docs): the f32 time over the bf16 time, best of five alternating runs,
/// on the calling thread.
pub(crate) fn measure() -> candle_core::Result<f64> {
    super::with_serial_gemm(measure_here)
}

fn measure_here() -> candle_core::Result<f64> {
    const ROWS: usize = 100;
    let dev = Device::Cpu;
    // A fixed pseudo-random fill: the kernels' speed does not depend on values,
    // but zeros or denormals could.
    let fill = |n: usize, seed: u32| -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    let (mut t32, mut t16) = (0.0, 0.0);
    for (i, (out, inp)) in [(3072usize, 768usize), (768, 3072)].into_iter().enumerate() {
        let w = Tensor::from_vec(fill(out * inp, 7 + i as u32), (out, inp), &dev)?;
        let x = Tensor::from_vec(fill(ROWS * inp, 11 + i as u32), (ROWS, inp), &dev)?;
        let f = Dense::new(Linear::new(w.clone(), None), true, Precision::F32)?;
        let b = Dense::new(Linear::new(w, None), true, Precision::Bf16)?;
        let time = |d: &Dense| -> candle_core::Result<f64> {
            let t = Instant::now();
            d.forward(&x)?;
            Ok(t.elapsed().as_secs_f64())
        };
        // one warm-up each, then the best of five, alternating
        time(&f)?;
        time(&b)?;
        let (mut best32, mut best16) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            best32 = best32.min(time(&f)?);
            best16 = best16.min(time(&b)?);
        }
        t32 += best32;
        t16 += best16;
    }
    Ok(t32 / t16.max(1e-12))
}
