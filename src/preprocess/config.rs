//! `preprocessor_config.json` parsing into the settings CLIPImageProcessor uses
//! (resize, crop, rescale, mean and std), accepting both the legacy int style and
//! the current dict style, and refusing what plip cannot reproduce.

use super::*;

// The literals are transformers' text verbatim; like numpy, Rust rounds them to f32.
/// `OPENAI_CLIP_MEAN` from transformers' `image_utils.py`.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// `OPENAI_CLIP_STD` from transformers' `image_utils.py`.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// `PILImageResampling.BICUBIC`, the only filter this port implements.
const RESAMPLE_BICUBIC: u32 = 3;

/// Preprocessing settings, the subset of `preprocessor_config.json` that affects pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Resize so that the shortest edge equals `shortest_edge`.
    pub do_resize: bool,
    /// Target length of the shortest edge after resizing.
    pub shortest_edge: u32,
    /// Centre-crop (or zero-pad) to `crop_height` x `crop_width`.
    pub do_center_crop: bool,
    /// Output height after the centre crop.
    pub crop_height: u32,
    /// Output width after the centre crop.
    pub crop_width: u32,
    /// Multiply the 0..=255 values by `rescale_factor`.
    pub do_rescale: bool,
    /// Scale applied when `do_rescale` is set (CLIP: 1/255).
    pub rescale_factor: f64,
    /// Subtract `image_mean` and divide by `image_std`, per channel.
    pub do_normalize: bool,
    /// Per-channel mean (RGB order).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation (RGB order).
    pub image_std: [f32; 3],
    /// PIL resampling filter id; only 3 (bicubic) is supported.
    pub resample: u32,
    /// Whose arithmetic the crop offset and rescale follow.
    pub pipeline: PixelPipeline,
}

/// The two reference pipelines, which resize alike (Pillow's bicubic of the
/// shortest edge) but differ in two details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelPipeline {
    /// transformers' `CLIPImageProcessor`: crop offset `(size - crop) // 2`, rescale
    /// as `float64(v) * rescale_factor` cast to float32.
    #[default]
    ClipImageProcessor,
    /// open_clip's eval transform (torchvision `CenterCrop` + `ToTensor`): crop offset
    /// `int(round((size - crop) / 2))`, Python's round half to even (one pixel
    /// further when `size - crop` is 3 mod 4), and `float32(v) / 255`.
    OpenClip,
}

impl Default for ImageProcessorConfig {
    /// CLIP ViT-B/32's settings, which PLIP keeps.
    fn default() -> Self {
        Self {
            do_resize: true,
            shortest_edge: 224,
            do_center_crop: true,
            crop_height: 224,
            crop_width: 224,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            resample: RESAMPLE_BICUBIC,
            pipeline: PixelPipeline::ClipImageProcessor,
        }
    }
}

/// Why a `preprocessor_config.json` could not be used.
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read preprocessor config {path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The text is not valid JSON.
    #[error("preprocessor config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is valid but asks for something this port does not (or cannot) reproduce.
    #[error("unsupported preprocessor config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl ImageProcessorConfig {
    /// Parses a Hugging Face `preprocessor_config.json`, legacy or current layout.
    ///
    /// Mirrors transformers' `get_size_dict`: an integer `size` means `{"shortest_edge": n}`
    /// and an integer `crop_size` means `{"height": n, "width": n}`. Missing or `null` keys
    /// take CLIP's defaults. Settings whose reference behaviour is not ported are rejected
    /// rather than approximated.
    pub fn from_json_str(s: &str) -> Result<Self, ConfigError> {
        let root: Value = serde_json::from_str(s)?;
        let obj = root
            .as_object()
            .ok_or_else(|| invalid("the top level must be a JSON object"))?;
        let mut cfg = Self::default();

        if let Some(b) = get_bool(obj, "do_resize")? {
            cfg.do_resize = b;
        }
        if let Some(v) = present(obj, "size") {
            cfg.shortest_edge = parse_resize_size(v)?;
        }
        if let Some(v) = present(obj, "resample") {
            let r = v
                .as_u64()
                .ok_or_else(|| invalid(format!("\"resample\" must be an integer, got {v}")))?;
            if r != u64::from(RESAMPLE_BICUBIC) {
                return Err(invalid(format!(
                    "\"resample\": {r} ({}) is not supported; only 3 (bicubic), which CLIP and \
                     PLIP use, is implemented",
                    pil_filter_name(r)
                )));
            }
            cfg.resample = RESAMPLE_BICUBIC;
        }
        if let Some(b) = get_bool(obj, "do_center_crop")? {
            cfg.do_center_crop = b;
        }
        if let Some(v) = present(obj, "crop_size") {
            (cfg.crop_height, cfg.crop_width) = parse_crop_size(v)?;
        }
        if let Some(b) = get_bool(obj, "do_rescale")? {
            cfg.do_rescale = b;
        }
        if let Some(v) = present(obj, "rescale_factor") {
            cfg.rescale_factor = v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| invalid(format!("\"rescale_factor\" must be a number, got {v}")))?;
        }
        if let Some(b) = get_bool(obj, "do_normalize")? {
            cfg.do_normalize = b;
        }
        if let Some(v) = present(obj, "image_mean") {
            cfg.image_mean = parse_channels(v, "image_mean")?;
        }
        if let Some(v) = present(obj, "image_std") {
            cfg.image_std = parse_channels(v, "image_std")?;
        }
        // `do_convert_rgb: false` is deliberately ignored: for RGB inputs it changes nothing,
        // and for grey or RGBA inputs the reference fails (3-channel mean vs 1/4 channels), so
        // always converting only turns a reference crash into a sensible result.

        if !cfg.do_center_crop {
            return Err(invalid(
                "\"do_center_crop\": false makes the output size depend on each image; the \
                 vision model needs a fixed crop_size",
            ));
        }
        if cfg.do_normalize && cfg.image_std.contains(&0.0) {
            return Err(invalid("\"image_std\" contains 0"));
        }
        Ok(cfg)
    }

    /// Reads and parses a `preprocessor_config.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// Canonical text of every setting that affects pixels, for refusing to mix indexes.
    ///
    /// Floats use Rust's shortest round-trip formatting, so equal settings always give equal
    /// text. The version tag changes whenever this module's output semantics change.
    pub fn fingerprint(&self) -> String {
        let resize = if self.do_resize {
            format!("shortest_edge:{}", self.shortest_edge)
        } else {
            "none".to_owned()
        };
        let crop = if self.do_center_crop {
            format!("{}x{}", self.crop_height, self.crop_width)
        } else {
            "none".to_owned()
        };
        let rescale = if self.do_rescale {
            format!("{:?}", self.rescale_factor)
        } else {
            "none".to_owned()
        };
        let normalize = if self.do_normalize {
            format!("mean:{:?},std:{:?}", self.image_mean, self.image_std)
        } else {
            "none".to_owned()
        };
        // The CLIPImageProcessor text is unchanged, so existing indexes still match.
        let pipeline = match self.pipeline {
            PixelPipeline::ClipImageProcessor => "",
            PixelPipeline::OpenClip => ";pipeline=open_clip",
        };
        format!(
            "plip-preprocess/v1;rgb=pillow-convert;resize={resize};resample={};\
             crop={crop};rescale={rescale};normalize={normalize};layout=chw-f32{pipeline}",
            pil_filter_name(u64::from(self.resample))
        )
    }

    /// (height, width) of the tensor `preprocess` returns.
    pub fn output_size(&self) -> (u32, u32) {
        (self.crop_height, self.crop_width)
    }
}

fn pil_filter_name(id: u64) -> &'static str {
    match id {
        0 => "nearest",
        1 => "lanczos",
        2 => "bilinear",
        3 => "bicubic",
        4 => "box",
        5 => "hamming",
        _ => "unknown filter",
    }
}

/// A key's value, treating JSON `null` like a missing key (transformers falls back to defaults).
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ConfigError> {
    present(obj, key)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| invalid(format!("\"{key}\" must be true or false, got {v}")))
        })
        .transpose()
}

fn positive_u32(v: &Value, what: &str) -> Result<u32, ConfigError> {
    v.as_u64()
        .filter(|&n| n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(format!("{what} must be a positive integer, got {v}")))
}

/// `size`: an integer or `{"shortest_edge": n}`; anything else resizes differently from CLIP.
fn parse_resize_size(v: &Value) -> Result<u32, ConfigError> {
    match v {
        Value::Number(_) => positive_u32(v, "\"size\""),
        Value::Object(m) => {
            if m.contains_key("height") || m.contains_key("width") {
                return Err(invalid(format!(
                    "\"size\": {v} resizes to a fixed height/width (ignoring aspect ratio); only \
                     {{\"shortest_edge\": n}} resizing, which CLIP and PLIP use, is supported"
                )));
            }
            if present(m, "longest_edge").is_some()
                || m.contains_key("max_height")
                || m.contains_key("max_width")
            {
                return Err(invalid(format!(
                    "\"size\": {v} caps the longest edge; only {{\"shortest_edge\": n}} \
                     resizing, which CLIP and PLIP use, is supported"
                )));
            }
            let se = present(m, "shortest_edge").ok_or_else(|| {
                invalid(format!(
                    "\"size\": {v} has no \"shortest_edge\"; expected {{\"shortest_edge\": n}}"
                ))
            })?;
            positive_u32(se, "\"size.shortest_edge\"")
        }
        _ => Err(invalid(format!(
            "\"size\" must be an integer or {{\"shortest_edge\": n}}, got {v}"
        ))),
    }
}

/// `crop_size`: an integer (square) or `{"height": h, "width": w}`.
fn parse_crop_size(v: &Value) -> Result<(u32, u32), ConfigError> {
    match v {
        Value::Number(_) => {
            let n = positive_u32(v, "\"crop_size\"")?;
            Ok((n, n))
        }
        Value::Object(m) => {
            let h = present(m, "height");
            let w = present(m, "width");
            match (h, w) {
                (Some(h), Some(w)) => Ok((
                    positive_u32(h, "\"crop_size.height\"")?,
                    positive_u32(w, "\"crop_size.width\"")?,
                )),
                _ => Err(invalid(format!(
                    "\"crop_size\" must be an integer or {{\"height\": h, \"width\": w}}, got {v}"
                ))),
            }
        }
        _ => Err(invalid(format!(
            "\"crop_size\" must be an integer or {{\"height\": h, \"width\": w}}, got {v}"
        ))),
    }
}

/// A per-channel list of 3 numbers, or one number for all channels (as transformers allows).
/// Values go through f64 then f32, as `np.array(list_of_floats, dtype=np.float32)` does.
fn parse_channels(v: &Value, key: &str) -> Result<[f32; 3], ConfigError> {
    let num = |x: &Value| {
        x.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f as f32)
            .ok_or_else(|| invalid(format!("\"{key}\" must contain numbers, got {v}")))
    };
    match v {
        Value::Number(_) => {
            let x = num(v)?;
            Ok([x; 3])
        }
        Value::Array(a) if a.len() == 3 => Ok([num(&a[0])?, num(&a[1])?, num(&a[2])?]),
        _ => Err(invalid(format!(
            "\"{key}\" must be a list of 3 numbers (RGB), got {v}"
        ))),
    }
}
