//! Reading weights: safetensors (read with pread into huge-page buffers) or a
//! PyTorch `.bin` zip, a check that every tensor the towers need is present, and
//! token-embedding rows read on demand instead of loading the whole table.

use super::*;

/// Which weights file a model folder provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsFile {
    /// `model.safetensors`, loaded by mmap.
    Safetensors(std::path::PathBuf),
    /// `pytorch_model.bin`, a pickled state dict.
    Pth(std::path::PathBuf),
}

impl WeightsFile {
    /// Picks `model.safetensors` when present, else `pytorch_model.bin`.
    pub fn find(dir: &Path) -> Result<Self> {
        let st = dir.join("model.safetensors");
        if st.is_file() {
            return Ok(WeightsFile::Safetensors(st));
        }
        let pth = dir.join("pytorch_model.bin");
        if pth.is_file() {
            return Ok(WeightsFile::Pth(pth));
        }
        bail!(
            "{} has neither model.safetensors nor pytorch_model.bin",
            dir.display()
        )
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            WeightsFile::Safetensors(p) | WeightsFile::Pth(p) => p,
        }
    }

    /// Opens the weights as a candle `VarBuilder` in f32.
    pub fn var_builder(&self, device: &Device) -> Result<VarBuilder<'static>> {
        let vb = match self {
            // SAFETY: the file is mapped read-only; plip never writes model files, and a
            // concurrent writer replacing a checkpoint in place is outside what any
            // safetensors loader can defend against.
            WeightsFile::Safetensors(p) => unsafe {
                candle_core::safetensors::MmapedSafetensors::new(p).map(|st| {
                    let backend: Box<dyn SimpleBackend> = Box::new(HugePageSafetensors {
                        reader: TensorReader::open(p),
                        st,
                    });
                    VarBuilder::from_backend(backend, DType::F32, device.clone())
                })
            },
            WeightsFile::Pth(p) => VarBuilder::from_pth(p, DType::F32, device),
        };
        vb.with_context(|| format!("reading weights {}", self.path().display()))
    }
}

/// Memory-mapped safetensors whose f32 tensors are read into buffers backed by
/// huge pages ([`cpu::zeroed_f32`]): candle's own loader copies into 4 KiB
/// pages, and faulting those in was most of the 0.2 s that loading the text tower
/// took in a cold `plip search`. Other dtypes and devices use candle's path.
struct HugePageSafetensors {
    st: candle_core::safetensors::MmapedSafetensors,
    /// Reads tensors with `pread` where possible: copying them out of the
    /// mapping instead faults in the file's pages 4 KiB at a time (63,000
    /// faults for the text tower's 252 MB).
    reader: Option<TensorReader>,
}

/// The byte range of every tensor in a safetensors file, from its header.
struct TensorReader {
    file: std::fs::File,
    /// Byte range in the file and dtype name (`"F32"` …) of each tensor.
    ranges: std::collections::HashMap<String, (u64, u64, String)>,
}

impl TensorReader {
    /// `None` when the header cannot be read here; the mapping is used then.
    fn open(path: &Path) -> Option<TensorReader> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let file_len = file.metadata().ok()?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).ok()?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return None;
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header).ok()?;
        let header: serde_json::Map<String, Value> = serde_json::from_slice(&header).ok()?;
        let data_start = 8 + len;
        let ranges = header
            .iter()
            .filter(|(name, _)| name.as_str() != "__metadata__")
            .map(|(name, info)| {
                let offsets = info.get("data_offsets")?.as_array()?;
                let begin = offsets.first()?.as_u64()?;
                let end = offsets.get(1)?.as_u64()?;
                // Untrusted numbers: an inverted or out-of-file range is a
                // damaged header, left to the checked loader to report.
                if begin > end || data_start.checked_add(end)? > file_len {
                    return None;
                }
                let dtype = info.get("dtype")?.as_str()?.to_string();
                Some((name.clone(), (data_start + begin, data_start + end, dtype)))
            })
            .collect::<Option<_>>()?;
        Some(TensorReader { file, ranges })
    }

    /// Reads `name`'s bytes into `dst` when its stored size is `dst.len()`.
    fn read_into(&self, name: &str, dst: &mut [u8]) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            if let Some(&(begin, end, _)) = self.ranges.get(name) {
                return end - begin == dst.len() as u64
                    && self.file.read_exact_at(dst, begin).is_ok();
            }
        }
        let _ = (name, dst);
        false
    }
}

/// The token-embedding table of a safetensors checkpoint, read a row at a time.
///
/// A prompt needs a handful of the table's 49,408 rows; reading them where they
/// are keeps a cold `plip search` from copying the whole 101 MB table into
/// memory first. The values are the stored f32s, exactly as a loaded table holds
/// them.
pub(crate) struct TokenRows {
    file: std::fs::File,
    /// Where row 0 starts.
    offset: u64,
    pub(crate) vocab: usize,
    pub(crate) dim: usize,
}

/// The token-embedding weight's name in a CLIP checkpoint.
pub(crate) const TOKEN_EMBEDDING: &str = "text_model.embeddings.token_embedding.weight";

impl TokenRows {
    /// The table `name` in `weights`, when it is a safetensors file that stores it as
    /// `vocab x dim` f32 values; `None` otherwise (then the table is loaded whole).
    pub(crate) fn open(
        weights: &WeightsFile,
        name: &str,
        vocab: usize,
        dim: usize,
    ) -> Option<Self> {
        let WeightsFile::Safetensors(path) = weights else {
            return None;
        };
        if !cfg!(unix) {
            return None;
        }
        let reader = TensorReader::open(path)?;
        let (begin, end, dtype) = reader.ranges.get(name)?;
        if dtype != "F32" || end - begin != (vocab * dim * 4) as u64 {
            return None;
        }
        Some(Self {
            offset: *begin,
            file: reader.file,
            vocab,
            dim,
        })
    }

    /// The rows of `ids`, one after another.
    pub(crate) fn gather(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.dim];
        let mut bytes = vec![0u8; self.dim * 4];
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.dim)) {
            if id as usize >= self.vocab {
                bail!("token id {id} is outside the vocabulary of {}", self.vocab);
            }
            self.read_row(id as u64, &mut bytes)?;
            for (v, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(out)
    }

    #[cfg(unix)]
    fn read_row(&self, id: u64, dst: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.offset + id * dst.len() as u64;
        self.file
            .read_exact_at(dst, at)
            .context("reading the token-embedding table")
    }

    #[cfg(not(unix))]
    fn read_row(&self, _: u64, _: &mut [u8]) -> Result<()> {
        unreachable!("TokenRows::open returns None off unix")
    }
}

impl HugePageSafetensors {
    fn load(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let view = self.st.get(name)?;
        if view.dtype() != safetensors::Dtype::F32 || !dev.is_cpu() {
            return self.st.load(name, dev)?.to_dtype(dtype);
        }
        let data = view.data();
        let mut values = cpu::zeroed_f32(data.len() / 4);
        let bytes = bytemuck::cast_slice_mut::<f32, u8>(&mut values);
        let read = self
            .reader
            .as_ref()
            .is_some_and(|r| r.read_into(name, bytes));
        if !read {
            bytes.copy_from_slice(data);
        }
        if cfg!(target_endian = "big") {
            for v in &mut values {
                *v = f32::from_bits(u32::from_le(v.to_bits()));
            }
        }
        Tensor::from_vec(values, view.shape(), dev)?.to_dtype(dtype)
    }
}

impl SimpleBackend for HugePageSafetensors {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }
}

/// Names of every tensor a tower needs, so a checkpoint can be checked up front.
pub(crate) fn expected_tensors(config: &ClipConfig, towers: Towers) -> Vec<String> {
    let mut names = Vec::new();
    let layers = |prefix: &str, n: usize, names: &mut Vec<String>| {
        for i in 0..n {
            let p = format!("{prefix}.encoder.layers.{i}");
            for lin in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
                "mlp.fc1",
                "mlp.fc2",
                "layer_norm1",
                "layer_norm2",
            ] {
                names.push(format!("{p}.{lin}.weight"));
                names.push(format!("{p}.{lin}.bias"));
            }
        }
    };
    if towers.text {
        names.push(TOKEN_EMBEDDING.into());
        names.push("text_model.embeddings.position_embedding.weight".into());
        layers(
            "text_model",
            config.text.tower.num_hidden_layers,
            &mut names,
        );
        names.push("text_model.final_layer_norm.weight".into());
        names.push("text_model.final_layer_norm.bias".into());
        names.push("text_projection.weight".into());
    }
    if towers.vision {
        names.push("vision_model.embeddings.class_embedding".into());
        names.push("vision_model.embeddings.patch_embedding.weight".into());
        names.push("vision_model.embeddings.position_embedding.weight".into());
        names.push("vision_model.pre_layrnorm.weight".into());
        names.push("vision_model.pre_layrnorm.bias".into());
        layers(
            "vision_model",
            config.vision.tower.num_hidden_layers,
            &mut names,
        );
        names.push("vision_model.post_layernorm.weight".into());
        names.push("vision_model.post_layernorm.bias".into());
        names.push("visual_projection.weight".into());
    }
    names
}

pub(crate) fn check_complete(vb: &VarBuilder, config: &ClipConfig, towers: Towers) -> Result<()> {
    let missing: Vec<String> = expected_tensors(config, towers)
        .into_iter()
        .filter(|n| !vb.contains_tensor(n))
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        bail!(
            "the checkpoint lacks {} tensor(s) the CLIP architecture needs ({}{}); \
             it is not a complete CLIPModel checkpoint",
            missing.len(),
            shown.join(", "),
            if missing.len() > 5 { ", …" } else { "" }
        );
    }
    Ok(())
}
