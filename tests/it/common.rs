//! Shared test helpers: fixture paths, golden files, and a temp-folder test
//! environment that runs the real `plip` binary (like fd's `TestEnv`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The tiny random-weight CLIP in Hugging Face format.
pub fn tiny_model() -> PathBuf {
    fixtures().join("model")
}

/// Reads every tensor of a safetensors file as (shape, f32 values).
pub fn read_safetensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter_map(|(name, view)| {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::U8 => data.iter().map(|&b| b as f32).collect(),
                safetensors::Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                _ => return None,
            };
            Some((name, (view.shape().to_vec(), values)))
        })
        .collect()
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// A temporary project folder in which the real `plip` binary runs.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    /// An empty project folder.
    pub fn new() -> Self {
        TestEnv {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The project folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies fixture images (by file name) into `sub/` of the project.
    pub fn copy_images(&self, sub: &str, names: &[&str]) -> PathBuf {
        let d = self.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for n in names {
            std::fs::copy(fixtures().join("images").join(n), d.join(n)).unwrap();
        }
        d
    }

    /// A `plip` command in the project folder, using the tiny model, no network.
    pub fn plip(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_plip"));
        c.current_dir(self.path())
            .env("PLIP_MODEL", tiny_model())
            .env_remove("PLIP_INDEX")
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", self.path().join(".hf-home-empty"))
            // `--precision auto` answers f32 on every machine, so that outputs compare
            // with the f32 goldens; tests/it/auto_precision.rs covers both answers.
            .env("PLIP_PRECISION_AUTO", "f32")
            .env("XDG_CACHE_HOME", self.path().join(".cache"));
        c
    }

    /// Runs `plip args…`, asserting success, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.plip().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "plip {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `plip args…` and returns the whole output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.plip().args(args).output().unwrap()
    }
}

/// All fixture image names, sorted.
pub fn fixture_images() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The reference processor's float32 pixel tensors, rebuilt from the uint8 images
/// stored in `pixels.safetensors` exactly as the processor computes them:
/// `((u8 * (1/255)) as f32 - mean) / std` (the generator asserts this to 1e-6).
pub fn golden_pixels(
    golden_dir: &Path,
    mean: [f32; 3],
    std: [f32; 3],
) -> HashMap<String, Vec<f32>> {
    let path = golden_dir.join("pixels.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    if st
        .tensors()
        .iter()
        .any(|(_, v)| v.dtype() != safetensors::Dtype::U8)
    {
        // Goldens made before the uint8 format hold the float32 tensors themselves.
        return read_safetensors(&path)
            .into_iter()
            .map(|(k, (_, v))| (k, v))
            .collect();
    }
    read_safetensors(&path)
        .into_iter()
        .map(|(name, (shape, u8s))| {
            let plane = shape[1] * shape[2];
            let v = u8s
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let c = i / plane;
                    ((x as f64 * (1.0 / 255.0)) as f32 - mean[c]) / std[c]
                })
                .collect();
            (name, v)
        })
        .collect()
}

/// The reference's embeddings of the fixture images and prompts
/// (`fixtures/golden/embeddings.safetensors`, names from `golden.json`).
pub struct GoldenEmbeddings {
    /// Image file names, in row order.
    pub images: Vec<String>,
    /// Prompts, in row order.
    pub prompts: Vec<String>,
    /// Embedding size.
    pub dim: usize,
    image_embeds: Vec<f32>,
    text_embeds: Vec<f32>,
}

impl GoldenEmbeddings {
    /// Loads the fixture goldens.
    pub fn load() -> Self {
        let dir = fixtures().join("golden");
        let g: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
        let strings = |k: &str| -> Vec<String> {
            g[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let mut emb = read_safetensors(&dir.join("embeddings.safetensors"));
        let (shape, image_embeds) = emb.remove("image_embeds").unwrap();
        let (_, text_embeds) = emb.remove("text_embeds").unwrap();
        GoldenEmbeddings {
            images: strings("images"),
            prompts: strings("prompts"),
            dim: shape[1],
            image_embeds,
            text_embeds,
        }
    }

    /// The reference embedding of fixture image `name`.
    pub fn image(&self, name: &str) -> &[f32] {
        let i = self.images.iter().position(|x| x == name).unwrap();
        &self.image_embeds[i * self.dim..(i + 1) * self.dim]
    }

    /// The reference embedding of `prompt`.
    pub fn text(&self, prompt: &str) -> &[f32] {
        let i = self.prompts.iter().position(|x| x == prompt).unwrap();
        &self.text_embeds[i * self.dim..(i + 1) * self.dim]
    }
}

/// Reads back a float32 `.npy` as plip writes it: (values, rows, columns).
pub fn read_npy_f32(bytes: &[u8]) -> Option<(Vec<f32>, usize, usize)> {
    if bytes.len() < 10 || &bytes[..8] != b"\x93NUMPY\x01\x00" {
        return None;
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + hlen)?).ok()?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return None;
    }
    let shape = header.split("'shape': (").nth(1)?.split(')').next()?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let (n, d) = match dims[..] {
        [n, d] => (n, d),
        [n] => (n, 1),
        _ => return None,
    };
    let data = bytes.get(10 + hlen..)?;
    if data.len() != n * d * 4 {
        return None;
    }
    let v = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Some((v, n, d))
}

/// A run of `plip index s` that stops at the failpoint `spec` (see `src/job.rs`)
/// until it is cancelled, with its stderr collected in the background.
pub struct PausedRun {
    pub child: std::process::Child,
    stderr: std::thread::JoinHandle<String>,
}

impl PausedRun {
    /// Starts the run and returns once it has reached the failpoint.
    pub fn start(env: &TestEnv, spec: &str) -> PausedRun {
        let mut cmd = env.plip();
        cmd.args(["index", "s", "--batch-size", "2", "--commit-every", "4"])
            .env("PLIP_FAILPOINT", spec);
        Self::start_command(cmd)
    }

    /// Starts `cmd` (a `plip index` with `PLIP_FAILPOINT` set) and returns once
    /// it has reached the failpoint.
    pub fn start_command(mut cmd: Command) -> PausedRun {
        use std::io::BufRead;
        let spec = format!("{:?}", cmd.get_envs().find(|(k, _)| *k == "PLIP_FAILPOINT"));
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("run ended before failpoint {spec}: {seen}"))
                .unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("failpoint") {
                break;
            }
        }
        let stderr = std::thread::spawn(move || {
            lines.map_while(Result::ok).fold(seen, |s, l| s + &l + "\n")
        });
        PausedRun { child, stderr }
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code and stderr.
    #[cfg(unix)]
    pub fn interrupt(mut self) -> (Option<i32>, String) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap().code();
        (code, self.stderr.join().unwrap())
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let _ = self.stderr.join();
    }
}
