//! Splitting the items of a folder over N machines: `plip index DIR --shard K/N`.
//!
//! An item belongs to shard `fnv1a64(key) mod N`, where `key` is the file's path
//! relative to the folder given to `plip index` (`/` separators, UTF-8, with the
//! index's escapes for names that are not UTF-8; see `index/paths.rs`). FNV-1a 64
//! (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) is fixed here and
//! never depends on the machine, the run, the index folder or the order files
//! are listed in, so every task of an array computes the same partition and the
//! shards are disjoint and together hold every item. Only the file path is
//! hashed, never a region: all tiles of a whole slide land in the same shard.
//!
//! `--shard auto` reads the task's place from the scheduler: a Slurm job array
//! (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`, and
//! `SLURM_ARRAY_TASK_STEP` for `--array=0-30:2`), or a Kubernetes Indexed Job
//! (`JOB_COMPLETION_INDEX`, with the number of shards from `--shards N`).

use std::path::Path;

use anyhow::{bail, Context, Result};

/// One shard of a partition: `index` in `0..count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) index: u32,
    pub(crate) count: u32,
}

impl Shard {
    /// `K/N` with `K < N`.
    pub(crate) fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 {
            bail!("a partition needs at least one shard (N in K/N is 0)");
        }
        if index >= count {
            bail!("shard {index} is not one of 0..{count} (K in K/N counts from 0)");
        }
        Ok(Shard { index, count })
    }

    /// Parses `--shard`: `K/N`, or `auto` (see the module docs), with `shards`
    /// the `--shards N` flag and `env` the environment lookup.
    pub(crate) fn parse(
        spec: &str,
        shards: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let spec = spec.trim();
        if spec != "auto" {
            let (k, n) = spec
                .split_once('/')
                .with_context(|| format!("--shard {spec:?}: write K/N (e.g. 0/8) or auto"))?;
            let k: u32 = k
                .trim()
                .parse()
                .with_context(|| format!("--shard {spec:?}: K"))?;
            let n: u32 = n
                .trim()
                .parse()
                .with_context(|| format!("--shard {spec:?}: N"))?;
            let shard = Shard::new(k, n)?;
            if let Some(s) = shards.filter(|&s| s != n) {
                bail!("--shard {spec} says {n} shards but --shards says {s}");
            }
            return Ok(shard);
        }
        let num = |name: &str| -> Result<Option<u32>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).with_context(|| {
                    format!("{name}={v:?} is not a whole number (set by the scheduler?)")
                }),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let count = match num("SLURM_ARRAY_TASK_COUNT")? {
                Some(c) => c,
                None => match num("SLURM_ARRAY_TASK_MAX")? {
                    Some(max) if max >= min => (max - min) / step + 1,
                    _ => bail!(
                        "--shard auto: SLURM_ARRAY_TASK_ID is set but neither \
                         SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is"
                    ),
                },
            };
            if id < min || (id - min) % step != 0 {
                bail!(
                    "--shard auto: SLURM_ARRAY_TASK_ID={id} is not on the array's grid \
                     (min {min}, step {step}); submit a contiguous array such as --array=0-{}",
                    count.saturating_sub(1)
                );
            }
            let k = (id - min) / step;
            if k >= count {
                bail!(
                    "--shard auto: task {id} is number {k} of an array of {count} tasks; \
                     plip needs a contiguous array such as --array=0-{}",
                    count.saturating_sub(1)
                );
            }
            if let Some(s) = shards.filter(|&s| s != count) {
                bail!("--shards {s} disagrees with the Slurm array's {count} tasks");
            }
            return Shard::new(k, count);
        }
        if let Some(k) = num("JOB_COMPLETION_INDEX")? {
            let Some(n) = shards else {
                bail!(
                    "--shard auto in a Kubernetes Indexed Job needs --shards N \
                     (the Job's `completions`); JOB_COMPLETION_INDEX={k} is set"
                );
            };
            return Shard::new(k, n).context("--shard auto: JOB_COMPLETION_INDEX vs --shards");
        }
        bail!(
            "--shard auto found no scheduler: run it as a task of a Slurm job array \
             (sbatch --array=0-N-1, which sets SLURM_ARRAY_TASK_ID and \
             SLURM_ARRAY_TASK_COUNT) or of a Kubernetes Indexed Job (which sets \
             JOB_COMPLETION_INDEX; add --shards N), or give --shard K/N"
        )
    }

    /// True when the item at `key` (its path relative to the indexed folder)
    /// belongs to this shard.
    pub(crate) fn owns(&self, key: &str) -> bool {
        fnv1a64(key.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

impl Shard {
    /// True when `file`, found under the folder `dir` given to `plip index`,
    /// belongs to this shard (keyed by its name when `dir` is the file itself).
    pub(crate) fn owns_file(&self, file: &Path, dir: &Path) -> bool {
        match crate::index::paths::relative(file, dir).as_str() {
            "." => self.owns(&crate::index::paths::relative(
                file,
                file.parent().unwrap_or(file),
            )),
            key => self.owns(key),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_key_is_in_exactly_one_shard() {
        let shards: Vec<Shard> = (0..4).map(|k| Shard::new(k, 4).unwrap()).collect();
        let mut sizes = [0usize; 4];
        for i in 0..1000 {
            let key = format!("slides/case-{i}/tile.png");
            let owners: Vec<usize> = (0..4).filter(|&k| shards[k].owns(&key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 180), "unbalanced: {sizes:?}");
    }

    #[test]
    fn explicit_and_scheduler_shards_parse() {
        let none = env(&[]);
        assert_eq!(
            Shard::parse("2/5", None, &none).unwrap(),
            Shard::new(2, 5).unwrap()
        );
        assert!(Shard::parse("5/5", None, &none).is_err());
        assert!(Shard::parse("1/0", None, &none).is_err());
        assert!(Shard::parse("x", None, &none).is_err());
        let err = Shard::parse("auto", None, &none).unwrap_err().to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_ID") && err.contains("JOB_COMPLETION_INDEX"));

        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            Shard::parse("auto", None, &slurm).unwrap(),
            Shard::new(2, 4).unwrap()
        );
        assert!(Shard::parse("auto", Some(3), &slurm).is_err());
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        assert_eq!(
            Shard::parse("auto", None, &stepped).unwrap(),
            Shard::new(2, 4).unwrap()
        );
        let sparse = env(&[
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert!(Shard::parse("auto", None, &sparse).is_err());

        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert_eq!(
            Shard::parse("auto", Some(8), &k8s).unwrap(),
            Shard::new(3, 8).unwrap()
        );
        assert!(Shard::parse("auto", None, &k8s)
            .unwrap_err()
            .to_string()
            .contains("--shards"));
        assert!(Shard::parse("auto", Some(3), &k8s).is_err());
    }
}
