//! Image decoding and CLIP preprocessing that reproduces the Python reference bit for bit.
//!
//! PLIP embeddings are only comparable with the ones the published model produces if every
//! image reaches the network as exactly the tensor that transformers' `CLIPImageProcessor`
//! (PIL backend) builds from `Image.open(path).convert("RGB")`: Pillow's RGB conversion
//! (alpha dropped), Pillow's antialiased fixed-point bicubic resize of the shortest edge,
//! a centre crop (zero-padded when the image is too small), rescaling in float64 and
//! normalisation in float32, laid out channel-first. This module ports each of those steps
//! from the pinned reference sources named next to them, so that for a decoded image the output
//! equals the reference exactly; the only remaining differences come from the decoders
//! themselves (e.g. zune-jpeg versus libjpeg-turbo). Decoding is also guarded: formats are
//! sniffed from content, and an image's dimensions are checked against Pillow's
//! decompression-bomb threshold before any pixel buffer is allocated.
//!
//! Reference versions: Pillow 13.0.0, transformers 5.24.0.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::ops::Range;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde_json::{Map, Value};

// The literals are transformers' text verbatim; like numpy, Rust rounds them to f32.
/// `OPENAI_CLIP_MEAN` from transformers' `image_utils.py`.
#[allow(clippy::excessive_precision)]
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// `OPENAI_CLIP_STD` from transformers' `image_utils.py`.
#[allow(clippy::excessive_precision)]
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
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
        format!(
            "plip-preprocess/v1;rgb=pillow-convert;resize={resize};resample={};\
             crop={crop};rescale={rescale};normalize={normalize};layout=chw-f32",
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

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Bounds that keep a hostile or oversized file from exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width x height.
    pub max_pixels: u64,
    /// Largest buffer a decoder may allocate, in bytes.
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    /// Pillow's `DecompressionBombError` threshold (`2 * Image.MAX_IMAGE_PIXELS`) and 1 GiB.
    fn default() -> Self {
        Self {
            // https://github.com/python-pillow/Pillow/blob/13.0.0/src/PIL/Image.py
            // (`MAX_IMAGE_PIXELS` and `_decompression_bomb_check`).
            max_pixels: 2 * 89_478_485,
            max_alloc_bytes: 1 << 30,
        }
    }
}

/// Why an image could not be loaded.
#[derive(thiserror::Error, Debug)]
pub enum ImageError {
    /// Reading the file failed.
    #[error("cannot read image: {0}")]
    Io(#[from] std::io::Error),
    /// The file has no bytes at all.
    #[error("image file is empty (0 bytes)")]
    Empty,
    /// The data is corrupt, truncated or otherwise undecodable.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The image has more pixels than `DecodeLimits::max_pixels`.
    #[error(
        "image is {width}x{height} ({} megapixels), over the {}-megapixel limit; \
         whole-slide images must be tiled first",
        megapixels(u64::from(*width) * u64::from(*height)),
        megapixels(*limit)
    )]
    TooLarge {
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
        /// The pixel limit that was exceeded.
        limit: u64,
    },
    /// Decoding would allocate more than `DecodeLimits::max_alloc_bytes`.
    #[error(
        "decoding this image needs more than the {} MiB memory limit{}",
        limit / (1 << 20),
        needed.map(|n| format!(" ({} MiB)", n.div_ceil(1 << 20))).unwrap_or_default()
    )]
    OverMemoryLimit {
        /// Bytes the decode would need, when known.
        needed: Option<u64>,
        /// The limit in bytes.
        limit: u64,
    },
    /// The format or a feature of it is not supported.
    #[error("unsupported image: {0}")]
    Unsupported(String),
}

fn megapixels(pixels: u64) -> u64 {
    (pixels + 500_000) / 1_000_000
}

/// Decodes an in-memory image (format sniffed from content) to RGB the way Pillow's
/// `Image.open(..).convert("RGB")` would.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    decode_reader(Cursor::new(bytes), limits)
}

/// Reads and decodes an image file; see [`decode_rgb`].
pub fn load_rgb(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Err(ImageError::Empty);
    }
    // Streaming from the file (not reading it whole) lets an oversized whole-slide TIFF be
    // refused after reading only its header.
    decode_reader(BufReader::new(file), limits)
}

fn decode_reader<R: BufRead + Seek>(
    reader: R,
    limits: &DecodeLimits,
) -> Result<RgbImage, ImageError> {
    let mut reader = ImageReader::new(reader).with_guessed_format()?;
    if reader.format().is_none() {
        return Err(ImageError::Unsupported(
            "unrecognised file format (expected JPEG, PNG, GIF, BMP, TIFF or WebP)".to_owned(),
        ));
    }
    let mut img_limits = image::Limits::default();
    img_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(img_limits.clone());

    // Building the decoder parses only the header, so the size check below happens before
    // any pixel buffer exists.
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, limits))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Decode(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    // Same accounting as `ImageReader::decode`: the output buffer comes out of the budget and
    // the decoder's own scratch allocations must fit in what is left.
    let total = decoder.total_bytes();
    if img_limits.reserve(total).is_err() {
        return Err(ImageError::OverMemoryLimit {
            needed: Some(total),
            limit: limits.max_alloc_bytes,
        });
    }
    decoder
        .set_limits(img_limits)
        .map_err(|e| map_image_error(e, limits))?;
    let decoded = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, limits))?;
    Ok(to_rgb_like_pillow(decoded))
}

fn map_image_error(e: image::ImageError, limits: &DecodeLimits) -> ImageError {
    match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Decode("the file is truncated".to_owned())
        }
        image::ImageError::IoError(io) => ImageError::Io(io),
        image::ImageError::Unsupported(u) => ImageError::Unsupported(u.to_string()),
        image::ImageError::Limits(_) => ImageError::OverMemoryLimit {
            needed: None,
            limit: limits.max_alloc_bytes,
        },
        other => ImageError::Decode(other.to_string()),
    }
}

/// Converts a decoded image to 8-bit RGB exactly as Pillow's `Image.convert("RGB")` would.
///
/// This is what the reference pipeline does before calling the processor (and what
/// transformers 4.x's `convert_to_rgb`, which PLIP was published with, did): grey is
/// replicated, palettes are expanded, and alpha is dropped, not composited. transformers 5's
/// own `convert_to_rgb` would instead composite transparent pixels onto white; PLIP's
/// embeddings predate that. See `convert` in
/// <https://github.com/python-pillow/Pillow/blob/13.0.0/src/libImaging/Convert.c>.
///
/// The image crate expands palettes and tRNS chunks into RGBA/LA whose colour channels are the
/// palette colours, so dropping its alpha gives Pillow's result. 16-bit data follows what
/// Pillow reads: colour PNG/TIFF keep the high byte, while 16-bit greyscale opens as mode
/// `I;16`, whose conversion to RGB clamps at 255 instead of scaling (`I16_RGB`).
fn to_rgb_like_pillow(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(l) => {
            let s = l.as_raw();
            build_rgb(w, h, |i| [s[i]; 3])
        }
        DynamicImage::ImageLumaA8(la) => {
            let s = la.as_raw();
            build_rgb(w, h, |i| [s[2 * i]; 3])
        }
        DynamicImage::ImageRgba8(rgba) => {
            let s = rgba.as_raw();
            build_rgb(w, h, |i| [s[4 * i], s[4 * i + 1], s[4 * i + 2]])
        }
        DynamicImage::ImageRgb16(rgb) => {
            let s = rgb.as_raw();
            build_rgb(w, h, |i| [hi(s[3 * i]), hi(s[3 * i + 1]), hi(s[3 * i + 2])])
        }
        DynamicImage::ImageRgba16(rgba) => {
            let s = rgba.as_raw();
            build_rgb(w, h, |i| [hi(s[4 * i]), hi(s[4 * i + 1]), hi(s[4 * i + 2])])
        }
        DynamicImage::ImageLuma16(l) => {
            let s = l.as_raw();
            build_rgb(w, h, |i| [s[i].min(255) as u8; 3])
        }
        DynamicImage::ImageLumaA16(la) => {
            // Pillow reads 16-bit grey+alpha PNGs as RGBA from the high bytes.
            let s = la.as_raw();
            build_rgb(w, h, |i| [hi(s[2 * i]); 3])
        }
        // Float TIFFs and the like: no Pillow mode to mirror here; use the image crate's rule.
        other => other.to_rgb8(),
    }
}

/// An RGB image whose pixel `i` (row-major) is `f(i)`.
fn build_rgb(w: u32, h: u32, f: impl Fn(usize) -> [u8; 3]) -> RgbImage {
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    for i in 0..n {
        out.extend_from_slice(&f(i));
    }
    RgbImage::from_raw(w, h, out).expect("buffer length matches dimensions")
}

/// High byte of a 16-bit sample, as Pillow's `;16B`/`;16L` unpackers keep it.
fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

// ---------------------------------------------------------------------------------------------
// Resize: port of Pillow's ImagingResample for 8-bit images, BICUBIC filter.
// https://github.com/python-pillow/Pillow/blob/13.0.0/src/libImaging/Resample.c
// ---------------------------------------------------------------------------------------------

/// `bicubic_filter` support.
const BICUBIC_SUPPORT: f64 = 2.0;
/// `PRECISION_BITS`: 32 - 8 - 2 fractional bits for the 8-bit fixed-point passes.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Rounding offset every accumulator starts from (`1 << (PRECISION_BITS - 1)`).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// `bicubic_filter` with a = -0.5, evaluated in the same operation order as the C.
#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// `clip8`: drop the fraction bits and clamp (Pillow's lookup table does the same).
#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Fixed-point filter taps for a range of output positions along one axis.
struct AxisCoeffs {
    /// Stride of `weights`: the maximum tap count.
    ksize: usize,
    /// (first input index, tap count) per output position.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output position, zero beyond its tap count.
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for outputs `window` of an `in_size` ->
/// `out_size` resample over the full box (0, in_size). Each output's taps depend only on its
/// own index, so computing a sub-range gives exactly the rows of the full table.
fn precompute_coeffs(in_size: u32, out_size: u32, window: Range<u32>) -> AxisCoeffs {
    // The box edges are C floats in Pillow.
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    // Antialiasing: when downscaling, stretch the filter over `scale` input pixels.
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let n = window.len();
    let mut bounds = Vec::with_capacity(n);
    let mut weights = vec![0i32; n * ksize];
    let mut k = vec![0f64; ksize];
    for (xx, kw) in window.zip(weights.chunks_exact_mut(ksize)) {
        let center = f64::from(in0) + (f64::from(xx) + 0.5) * scale;
        // C `(int)` truncates toward zero, as `as i32` does.
        let xmin = ((center - support + 0.5) as i32).max(0);
        let xmax = ((center + support + 0.5) as i32).min(in_size as i32) - xmin;
        let taps = xmax.max(0) as usize;
        debug_assert!(taps <= ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(taps) {
            let w = bicubic((f64::from(x as i32 + xmin) - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (kx, out) in k.iter().zip(kw.iter_mut()).take(taps) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            // normalize_coeffs_8bpc: round half away from zero, then truncate toward zero.
            *out = if w < 0.0 {
                (-0.5 + w * f64::from(1u32 << PRECISION_BITS)) as i32
            } else {
                (0.5 + w * f64::from(1u32 << PRECISION_BITS)) as i32
            };
        }
        bounds.push((xmin as usize, taps));
    }
    AxisCoeffs {
        ksize,
        bounds,
        weights,
    }
}

/// `ImagingResampleHorizontal_8bpc` (3 bands) over rows `rows` of a packed RGB buffer of
/// `src_w` pixels per row whose first column is source column `col_base`.
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    col_base: usize,
    rows: Range<usize>,
    c: &AxisCoeffs,
) -> Vec<u8> {
    let row_out = c.bounds.len() * 3;
    let mut out = vec![0u8; rows.len() * row_out];
    if row_out == 0 {
        return out;
    }
    let stride = src_w * 3;
    for (dst, y) in out.chunks_exact_mut(row_out).zip(rows) {
        let line = &src[y * stride..(y + 1) * stride];
        for ((px, &(xmin, n)), k) in dst
            .chunks_exact_mut(3)
            .zip(&c.bounds)
            .zip(c.weights.chunks_exact(c.ksize))
        {
            let x0 = xmin - col_base;
            let taps = &line[x0 * 3..(x0 + n) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &w) in taps.chunks_exact(3).zip(&k[..n]) {
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
    out
}

/// `ImagingResampleVertical_8bpc`. Every byte of a row uses the same taps, so rows are
/// accumulated whole (integer sums are exact in any order, and the compiler vectorises this).
/// Source row `r` starts at `src[(r - row_base) * stride + col_off]` and is `row_bytes` long.
fn vertical_pass(
    src: &[u8],
    stride: usize,
    col_off: usize,
    row_bytes: usize,
    row_base: usize,
    c: &AxisCoeffs,
) -> Vec<u8> {
    let mut out = vec![0u8; c.bounds.len() * row_bytes];
    if row_bytes == 0 {
        return out;
    }
    let mut acc = vec![0i32; row_bytes];
    for (dst, (&(ymin, n), k)) in out
        .chunks_exact_mut(row_bytes)
        .zip(c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)))
    {
        acc.fill(HALF);
        for (t, &w) in k[..n].iter().enumerate() {
            let start = (ymin + t - row_base) * stride + col_off;
            let line = &src[start..start + row_bytes];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in dst.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// The `xs` x `ys` window of `img` resized to `out_w` x `out_h`, computed without the rest.
///
/// Follows `ImagingResampleInner`: each pass runs only when its dimension changes and the
/// intermediate is rounded to u8. The pass order matters for the result: Pillow 13 runs the
/// vertical pass first when the height shrinks by more than twice as many pixels as the
/// width does, and otherwise the horizontal pass first (over just the rows the vertical pass
/// reads). Each pass here also skips the rows/columns the window does not need, which leaves
/// every computed value unchanged.
fn resize_window(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    xs: Range<u32>,
    ys: Range<u32>,
) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let src = img.as_raw().as_slice();
    let (win_w, win_h) = (xs.len(), ys.len());
    let in_stride = in_w as usize * 3;
    let data = match (out_w != in_w, out_h != in_h) {
        (false, false) => {
            let mut v = Vec::with_capacity(win_w * win_h * 3);
            for y in ys.clone() {
                let start = y as usize * in_stride + xs.start as usize * 3;
                v.extend_from_slice(&src[start..start + win_w * 3]);
            }
            v
        }
        (true, false) => {
            let hc = precompute_coeffs(in_w, out_w, xs);
            horizontal_pass(
                src,
                in_w as usize,
                0,
                ys.start as usize..ys.end as usize,
                &hc,
            )
        }
        (false, true) => {
            let vc = precompute_coeffs(in_h, out_h, ys);
            vertical_pass(src, in_stride, xs.start as usize * 3, win_w * 3, 0, &vc)
        }
        (true, true) => {
            let vc = precompute_coeffs(in_h, out_h, ys);
            let hc = precompute_coeffs(in_w, out_w, xs);
            // `horizontal_first` in Pillow 13's ImagingResampleInner (C int arithmetic).
            let shrink_h = i64::from(in_h) - i64::from(out_h);
            let shrink_w = i64::from(in_w) - i64::from(out_w);
            if shrink_h > 0 && shrink_h > shrink_w * 2 {
                // Vertical first, over just the source columns the horizontal pass reads.
                let first = hc.bounds.first().map_or(0, |b| b.0);
                let last = hc.bounds.last().map_or(0, |b| b.0 + b.1);
                let tmp = vertical_pass(src, in_stride, first * 3, (last - first) * 3, 0, &vc);
                horizontal_pass(&tmp, last - first, first, 0..win_h, &hc)
            } else {
                // Horizontal first, over just the source rows the vertical pass reads.
                let first = vc.bounds.first().map_or(0, |b| b.0);
                let last = vc.bounds.last().map_or(0, |b| b.0 + b.1);
                let tmp = horizontal_pass(src, in_w as usize, 0, first..last, &hc);
                vertical_pass(&tmp, win_w * 3, 0, win_w * 3, first, &vc)
            }
        }
    };
    RgbImage::from_raw(win_w as u32, win_h as u32, data).expect("window buffer size")
}

/// Pillow 13 `Image.resize((width, height), Image.BICUBIC)` for an RGB image, bit-exact.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_window(img, width, height, 0..width, 0..height)
}

// ---------------------------------------------------------------------------------------------
// CLIPImageProcessor pipeline
// https://github.com/huggingface/transformers/blob/v5.24.0/src/transformers/image_processing_backends.py
// (`PilBackend._preprocess`: resize, center_crop, rescale, normalize).
// ---------------------------------------------------------------------------------------------

/// (height, width) after `get_resize_output_image_size(size=shortest_edge,
/// default_to_square=False)` from transformers' `image_transforms.py`.
pub fn resize_output_size(width: u32, height: u32, shortest_edge: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python: int(size * long / short); int * int is exact, `/` is a correctly rounded f64
    // division and int() truncates.
    let new_long = (f64::from(shortest_edge) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (new_long, shortest_edge)
    } else {
        (shortest_edge, new_long)
    }
}

/// One axis of transformers' `center_crop`: `len` source samples starting at `src` land at
/// `dst` in the output; the rest of the output is zero padding.
struct CropAxis {
    src: u32,
    dst: u32,
    len: u32,
}

fn crop_axis(size: u32, crop: u32) -> CropAxis {
    if size >= crop {
        // top = (orig - crop) // 2
        CropAxis {
            src: (size - crop) / 2,
            dst: 0,
            len: crop,
        }
    } else {
        // Too small: centred in a zero canvas, offset ceil((crop - orig) / 2).
        CropAxis {
            src: 0,
            dst: (crop - size).div_ceil(2),
            len: size,
        }
    }
}

/// Output value of each possible u8 per channel: rescale as `image.astype(float64) * scale`
/// cast to float32, then `(x - mean) / std` in float32 (transformers' `rescale`/`normalize`).
fn channel_luts(cfg: &ImageProcessorConfig) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let mut x = v as f32;
            if cfg.do_rescale {
                x = (v as f64 * cfg.rescale_factor) as f32;
            }
            if cfg.do_normalize {
                x = (x - cfg.image_mean[c]) / cfg.image_std[c];
            }
            *out = x;
        }
    }
    lut
}

/// Runs the CLIP pipeline on an RGB image; returns CHW f32 of `cfg.output_size()`.
///
/// Only the part of the resized image that survives the crop is computed, which gives the
/// same values as resizing everything (each output pixel depends only on its own taps).
pub fn preprocess(img: &RgbImage, cfg: &ImageProcessorConfig) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let (rh, rw) = if cfg.do_resize {
        resize_output_size(w, h, cfg.shortest_edge)
    } else {
        (h, w)
    };
    let (out_h, out_w) = if cfg.do_center_crop {
        (cfg.crop_height, cfg.crop_width)
    } else {
        (rh, rw)
    };
    let ay = crop_axis(rh, out_h);
    let ax = crop_axis(rw, out_w);

    // Source of the kept pixels: a freshly resized window, or the input itself.
    let window;
    let (src, stride, x0, y0) = if (rw, rh) != (w, h) {
        window = resize_window(
            img,
            rw,
            rh,
            ax.src..ax.src + ax.len,
            ay.src..ay.src + ay.len,
        );
        (window.as_raw().as_slice(), ax.len as usize * 3, 0, 0)
    } else {
        (
            img.as_raw().as_slice(),
            w as usize * 3,
            ax.src as usize,
            ay.src as usize,
        )
    };

    let lut = channel_luts(cfg);
    let plane = out_h as usize * out_w as usize;
    let mut out = vec![0f32; 3 * plane];
    let (r_out, rest) = out.split_at_mut(plane);
    let (g_out, b_out) = rest.split_at_mut(plane);
    // Padding is zero in the u8 domain, so it goes through rescale/normalize like a 0 pixel.
    r_out.fill(lut[0][0]);
    g_out.fill(lut[1][0]);
    b_out.fill(lut[2][0]);
    let (lr, lg, lb) = (&lut[0], &lut[1], &lut[2]);
    for y in 0..ay.len as usize {
        let s = (y0 + y) * stride + x0 * 3;
        let line = &src[s..s + ax.len as usize * 3];
        let d = (ay.dst as usize + y) * out_w as usize + ax.dst as usize;
        let n = ax.len as usize;
        for (((p, r), g), b) in line
            .chunks_exact(3)
            .zip(&mut r_out[d..d + n])
            .zip(&mut g_out[d..d + n])
            .zip(&mut b_out[d..d + n])
        {
            *r = lr[usize::from(p[0])];
            *g = lg[usize::from(p[1])];
            *b = lb[usize::from(p[2])];
        }
    }
    out
}

/// Loads an image file and preprocesses it; see [`load_rgb`] and [`preprocess`].
pub fn load_and_preprocess(
    path: &Path,
    cfg: &ImageProcessorConfig,
    limits: &DecodeLimits,
) -> Result<Vec<f32>, ImageError> {
    let img = load_rgb(path, limits)?;
    Ok(preprocess(&img, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::png::PngEncoder;
    use image::{ExtendedColorType, ImageEncoder};

    fn png_bytes(w: u32, h: u32, data: &[u8], color: ExtendedColorType) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(data, w, h, color)
            .unwrap();
        out
    }

    fn png_bytes16(w: u32, h: u32, data: &[u16], color: ExtendedColorType) -> Vec<u8> {
        // The encoder takes native-endian u16 samples as bytes.
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        png_bytes(w, h, &bytes, color)
    }

    /// Deterministic test pattern, identical to the one used to produce the Pillow outputs.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                (((x * 37 + y * 91 + c as u32 * 53) * 7) % 256) as u8
            }))
        })
    }

    // ----- config -------------------------------------------------------------------------

    #[test]
    fn config_legacy_layout() {
        let cfg = ImageProcessorConfig::from_json_str(
            r#"{"crop_size": 224, "do_center_crop": true, "do_normalize": true,
                "do_resize": true, "feature_extractor_type": "CLIPFeatureExtractor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3, "size": 224}"#,
        )
        .unwrap();
        assert_eq!(cfg, ImageProcessorConfig::default());
    }

    #[test]
    fn config_current_layout() {
        let cfg = ImageProcessorConfig::from_json_str(
            r#"{"crop_size": {"height": 200, "width": 180}, "do_convert_rgb": true,
                "image_processor_type": "CLIPImageProcessor", "resample": 3,
                "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256},
                "image_mean": 0.5, "image_std": [0.25, 0.5, 1.0]}"#,
        )
        .unwrap();
        assert_eq!(cfg.shortest_edge, 256);
        assert_eq!((cfg.crop_height, cfg.crop_width), (200, 180));
        assert_eq!(cfg.output_size(), (200, 180));
        assert_eq!(cfg.image_mean, [0.5; 3]);
        assert_eq!(cfg.image_std, [0.25, 0.5, 1.0]);
        assert_eq!(cfg.rescale_factor, 1.0 / 255.0);
    }

    #[test]
    fn config_missing_and_null_keys_take_defaults() {
        let d = ImageProcessorConfig::default();
        assert_eq!(ImageProcessorConfig::from_json_str("{}").unwrap(), d);
        let cfg =
            ImageProcessorConfig::from_json_str(r#"{"size": null, "image_mean": null}"#).unwrap();
        assert_eq!(cfg, d);
        assert_eq!(d.output_size(), (224, 224));
    }

    #[test]
    fn config_rejections() {
        let err = |s: &str| {
            ImageProcessorConfig::from_json_str(s)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"resample": 2}"#).contains("bilinear"));
        assert!(err(r#"{"resample": 0}"#).contains("only 3 (bicubic)"));
        assert!(err(r#"{"size": {"height": 224, "width": 224}}"#).contains("fixed height/width"));
        assert!(
            err(r#"{"size": {"shortest_edge": 224, "longest_edge": 300}}"#)
                .contains("longest edge")
        );
        assert!(err(r#"{"size": [224, 224]}"#).contains("\"size\""));
        assert!(err(r#"{"size": 0}"#).contains("positive"));
        assert!(err(r#"{"crop_size": {"height": 224}}"#).contains("crop_size"));
        assert!(err(r#"{"do_center_crop": false}"#).contains("fixed crop_size"));
        assert!(err(r#"{"image_mean": [0.5, 0.5]}"#).contains("3 numbers"));
        assert!(err(r#"{"do_resize": "yes"}"#).contains("true or false"));
        assert!(err("[1]").contains("object"));
        assert!(matches!(
            ImageProcessorConfig::from_json_str("{"),
            Err(ConfigError::Json(_))
        ));
        let missing = ImageProcessorConfig::from_file(Path::new("/nonexistent/x.json"));
        assert!(matches!(missing, Err(ConfigError::Io { .. })));
    }

    #[test]
    fn config_floats_parse_exactly() {
        // serde_json's default float parser is not always correctly rounded; these constants
        // must come out exactly as Python's float() (correctly rounded) reads them.
        for s in [
            "0.48145466",
            "0.4578275",
            "0.40821073",
            "0.26862954",
            "0.26130258",
            "0.27577711",
            "0.00392156862745098",
        ] {
            let via_json: f64 = serde_json::from_str(s).unwrap();
            assert_eq!(via_json, s.parse::<f64>().unwrap(), "{s}");
        }
        assert_eq!("0.00392156862745098".parse::<f64>().unwrap(), 1.0 / 255.0);
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let d = ImageProcessorConfig::default();
        assert_eq!(
            d.fingerprint(),
            "plip-preprocess/v1;rgb=pillow-convert;resize=shortest_edge:224;\
             resample=bicubic;crop=224x224;rescale=0.00392156862745098;\
             normalize=mean:[0.48145467, 0.4578275, 0.40821072],\
             std:[0.26862955, 0.2613026, 0.2757771];layout=chw-f32"
        );
        let mut other = d.clone();
        other.shortest_edge = 256;
        assert_ne!(other.fingerprint(), d.fingerprint());
        let mut other = d.clone();
        other.image_std[2] = 0.3;
        assert_ne!(other.fingerprint(), d.fingerprint());
    }

    // ----- resize -------------------------------------------------------------------------

    #[test]
    fn output_sizes_match_python() {
        // (width, height, shortest_edge) -> (new_h, new_w), from
        // get_resize_output_image_size(..., default_to_square=False).
        assert_eq!(resize_output_size(1000, 300, 224), (224, 746));
        assert_eq!(resize_output_size(300, 1000, 224), (746, 224));
        assert_eq!(resize_output_size(4000, 3000, 224), (224, 298));
        assert_eq!(resize_output_size(224, 224, 224), (224, 224));
        assert_eq!(resize_output_size(3, 1000, 224), (74666, 224));
        assert_eq!(resize_output_size(640, 480, 224), (224, 298));
        assert_eq!(resize_output_size(500, 250, 224), (224, 448));
        assert_eq!(resize_output_size(10, 7, 224), (224, 320));
    }

    #[test]
    fn resize_identity_is_a_copy() {
        let img = pattern(13, 7);
        assert_eq!(resize_bicubic(&img, 13, 7), img);
    }

    #[test]
    fn resize_matches_pillow_on_small_images() {
        // Expected bytes: Image.fromarray(pattern(w, h)).resize((ow, oh), Image.BICUBIC),
        // Pillow 13.0.0. Covers down- and upscaling on each axis and one-axis-only resizes.
        let cases: [(u32, u32, u32, u32, &[u8]); 5] = [
            // Height shrinks by more than twice the width: Pillow 13 runs the vertical pass
            // first, which rounds differently from horizontal-first.
            (
                3,
                20,
                7,
                4,
                &[
                    151, 169, 164, 152, 169, 164, 156, 170, 165, 154, 172, 167, 131, 174, 169, 106,
                    175, 170, 96, 175, 170, 174, 159, 145, 174, 159, 145, 175, 160, 146, 177, 162,
                    148, 179, 164, 150, 180, 165, 151, 180, 165, 151, 156, 142, 130, 156, 142, 130,
                    157, 143, 131, 159, 145, 133, 161, 147, 135, 162, 148, 136, 162, 148, 136, 137,
                    132, 111, 137, 132, 111, 138, 133, 112, 140, 135, 114, 142, 137, 116, 143, 138,
                    117, 143, 138, 117,
                ],
            ),
            (
                6,
                16,
                3,
                8,
                &[
                    80, 170, 176, 60, 176, 182, 66, 181, 187, 187, 174, 160, 97, 180, 166, 68, 185,
                    171, 183, 168, 155, 186, 174, 161, 98, 179, 166, 175, 162, 149, 181, 168, 155,
                    195, 173, 160, 169, 156, 143, 175, 162, 149, 180, 167, 154, 163, 150, 137, 169,
                    156, 143, 174, 161, 148, 157, 143, 131, 163, 149, 137, 168, 154, 142, 141, 147,
                    115, 147, 153, 121, 152, 158, 126,
                ],
            ),
            (
                7,
                5,
                3,
                9,
                &[
                    0, 107, 243, 0, 113, 250, 6, 129, 255, 34, 156, 192, 48, 165, 199, 55, 140,
                    206, 114, 238, 106, 130, 251, 113, 137, 157, 120, 175, 187, 153, 81, 198, 160,
                    86, 139, 167, 207, 111, 226, 7, 118, 233, 9, 125, 240, 153, 184, 150, 65, 191,
                    157, 83, 203, 164, 128, 231, 99, 137, 238, 106, 130, 245, 113, 215, 145, 181,
                    169, 152, 188, 42, 159, 195, 255, 94, 230, 183, 101, 237, 0, 108, 244,
                ],
            ),
            (
                9,
                4,
                5,
                4,
                &[
                    1, 116, 231, 6, 121, 236, 12, 127, 242, 18, 133, 248, 23, 138, 253, 126, 241,
                    100, 131, 246, 105, 137, 255, 111, 143, 84, 117, 148, 0, 122, 250, 110, 225,
                    38, 115, 230, 1, 121, 236, 12, 127, 242, 17, 132, 247, 120, 235, 94, 125, 240,
                    99, 131, 246, 105, 137, 255, 111, 142, 121, 116,
                ],
            ),
            (
                4,
                9,
                4,
                3,
                &[
                    123, 170, 169, 126, 173, 172, 57, 176, 175, 60, 179, 178, 185, 168, 153, 188,
                    171, 156, 164, 174, 159, 167, 177, 162, 177, 152, 151, 180, 155, 154, 187, 158,
                    157, 190, 161, 160,
                ],
            ),
        ];
        for (w, h, ow, oh, expected) in cases {
            let got = resize_bicubic(&pattern(w, h), ow, oh);
            assert_eq!(got.dimensions(), (ow, oh));
            assert_eq!(got.as_raw().as_slice(), expected, "{w}x{h} -> {ow}x{oh}");
        }
    }

    #[test]
    fn resize_preserves_constant_images() {
        // Weights sum to 1 in fixed point (up to rounding), so flat colour must stay flat.
        let img = RgbImage::from_pixel(301, 177, image::Rgb([12, 200, 255]));
        for (w, h) in [(224, 131), (500, 300), (301, 50), (40, 177)] {
            let out = resize_bicubic(&img, w, h);
            assert!(out.pixels().all(|p| p.0 == [12, 200, 255]), "{w}x{h}");
        }
    }

    /// Reference composition: resize everything, then crop/pad and normalise naively.
    fn naive_preprocess(img: &RgbImage, cfg: &ImageProcessorConfig) -> Vec<f32> {
        let (rh, rw) = resize_output_size(img.width(), img.height(), cfg.shortest_edge);
        let r = resize_bicubic(img, rw, rh);
        let (ch, cw) = (cfg.crop_height as i64, cfg.crop_width as i64);
        let top = (rh as i64 - ch).div_euclid(2);
        let left = (rw as i64 - cw).div_euclid(2);
        let mut out = Vec::new();
        for c in 0..3 {
            for y in 0..ch {
                for x in 0..cw {
                    let (sy, sx) = (y + top, x + left);
                    let v = if sy >= 0 && sx >= 0 && sy < rh as i64 && sx < rw as i64 {
                        r.get_pixel(sx as u32, sy as u32).0[c]
                    } else {
                        0
                    };
                    let x = (f64::from(v) * cfg.rescale_factor) as f32;
                    out.push((x - cfg.image_mean[c]) / cfg.image_std[c]);
                }
            }
        }
        out
    }

    #[test]
    fn windowed_preprocess_equals_full_resize_then_crop() {
        let cfg = ImageProcessorConfig {
            shortest_edge: 24,
            crop_height: 24,
            crop_width: 20,
            ..Default::default()
        };
        for (w, h) in [
            (61, 40),
            (40, 61),
            (24, 30),
            (30, 24),
            (24, 24),
            (9, 13),
            (100, 101),
            (25, 300),
            (300, 25),
        ] {
            let img = pattern(w, h);
            let got = preprocess(&img, &cfg);
            assert_eq!(got.len(), 3 * 24 * 20);
            assert_eq!(got, naive_preprocess(&img, &cfg), "{w}x{h}");
        }
    }

    #[test]
    fn small_images_are_zero_padded_centred() {
        // No resize: a 3x2 image in a 6x5 crop sits at top = ceil(3/2) = 2, left = ceil(3/2) = 2.
        let cfg = ImageProcessorConfig {
            do_resize: false,
            crop_height: 5,
            crop_width: 6,
            do_rescale: false,
            do_normalize: false,
            ..Default::default()
        };
        let img = RgbImage::from_pixel(3, 2, image::Rgb([9, 8, 7]));
        let out = preprocess(&img, &cfg);
        let plane = 30;
        for y in 0..5 {
            for x in 0..6 {
                let inside = (2..4).contains(&y) && (2..5).contains(&x);
                let expect = if inside { [9.0, 8.0, 7.0] } else { [0.0; 3] };
                for (c, e) in expect.iter().enumerate() {
                    assert_eq!(out[c * plane + y * 6 + x], *e, "({x},{y}) c{c}");
                }
            }
        }
    }

    #[test]
    fn normalisation_matches_numpy_float_rules() {
        let cfg = ImageProcessorConfig::default();
        let lut = channel_luts(&cfg);
        // (np.float64(v) * (1/255)).astype(float32), then float32 (x - mean) / std.
        for v in [0u8, 1, 127, 128, 254, 255] {
            for c in 0..3 {
                let x = (f64::from(v) / 255.0) as f32;
                assert_eq!(lut[c][v as usize], (x - CLIP_MEAN[c]) / CLIP_STD[c]);
            }
        }
        assert_eq!(lut[0][0], -1.792_262_6);
        assert_eq!(lut[2][255], 2.145_897);
    }

    // ----- decode -------------------------------------------------------------------------

    #[test]
    fn empty_garbage_and_truncated_inputs_are_errors() {
        let lim = DecodeLimits::default();
        assert!(matches!(decode_rgb(&[], &lim), Err(ImageError::Empty)));
        assert!(matches!(
            decode_rgb(b"definitely not an image, just text", &lim),
            Err(ImageError::Unsupported(_))
        ));
        let png = png_bytes(40, 30, &pattern(40, 30).into_raw(), ExtendedColorType::Rgb8);
        assert!(decode_rgb(&png, &lim).is_ok());
        for cut in [8, 20, 33, 60, png.len() / 2, png.len() - 13] {
            let r = decode_rgb(&png[..cut], &lim);
            assert!(
                matches!(r, Err(ImageError::Decode(_))),
                "cut at {cut}: {r:?}"
            );
        }
        // A valid signature followed by noise.
        let mut noisy = png[..8].to_vec();
        noisy.extend((0..200u32).map(|i| (i * 97 % 251) as u8));
        assert!(decode_rgb(&noisy, &lim).is_err());

        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .write_image(&pattern(64, 48).into_raw(), 64, 48, ExtendedColorType::Rgb8)
            .unwrap();
        assert!(decode_rgb(&jpeg, &lim).is_ok());
        for cut in [2, 4, 30, 200] {
            assert!(decode_rgb(&jpeg[..cut], &lim).is_err(), "jpeg cut at {cut}");
        }
    }

    /// A PNG that claims `w` x `h` RGB pixels, with a tiny (and insufficient) IDAT.
    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            out.extend(kind);
            out.extend(data);
            let mut crc = crc32fast::Hasher::new();
            crc.update(kind);
            crc.update(data);
            out.extend(crc.finalize().to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn decompression_bomb_is_refused_before_decoding() {
        let lim = DecodeLimits::default();
        let bomb = png_header_only(100_000, 100_000);
        match decode_rgb(&bomb, &lim) {
            Err(e @ ImageError::TooLarge { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("100000x100000 (10000 megapixels)"), "{msg}");
                assert!(msg.contains("179-megapixel limit"), "{msg}");
                assert!(msg.contains("tiled"), "{msg}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Exactly at the limit passes the pixel check (then fails on the missing data).
        let tight = DecodeLimits {
            max_pixels: 12,
            ..lim
        };
        assert!(matches!(
            decode_rgb(&png_header_only(4, 3), &tight),
            Err(ImageError::Decode(_))
        ));
        assert!(matches!(
            decode_rgb(&png_header_only(5, 3), &tight),
            Err(ImageError::TooLarge {
                width: 5,
                height: 3,
                limit: 12
            })
        ));
        // Under the pixel limit but over the memory limit.
        let small_mem = DecodeLimits {
            max_alloc_bytes: 1000,
            ..lim
        };
        let png = png_bytes(40, 30, &pattern(40, 30).into_raw(), ExtendedColorType::Rgb8);
        assert!(matches!(
            decode_rgb(&png, &small_mem),
            Err(ImageError::OverMemoryLimit { .. })
        ));
    }

    #[test]
    fn grey_is_replicated_and_alpha_dropped() {
        let lim = DecodeLimits::default();
        let grey = png_bytes(3, 1, &[0, 77, 255], ExtendedColorType::L8);
        let img = decode_rgb(&grey, &lim).unwrap();
        assert_eq!(img.as_raw(), &[0, 0, 0, 77, 77, 77, 255, 255, 255]);

        // Pillow's RGBA -> RGB keeps the colour of even fully transparent pixels.
        let rgba = [10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255];
        let img = decode_rgb(&png_bytes(3, 1, &rgba, ExtendedColorType::Rgba8), &lim).unwrap();
        assert_eq!(img.as_raw(), &[10, 20, 30, 40, 50, 60, 70, 80, 90]);

        let la = [5, 0, 200, 77];
        let img = decode_rgb(&png_bytes(2, 1, &la, ExtendedColorType::La8), &lim).unwrap();
        assert_eq!(img.as_raw(), &[5, 5, 5, 200, 200, 200]);
    }

    #[test]
    fn sixteen_bit_follows_pillow_modes() {
        let lim = DecodeLimits::default();
        // Colour: Pillow keeps the high byte.
        let rgb16 = png_bytes16(1, 1, &[0x12ff, 0x8000, 0xffff], ExtendedColorType::Rgb16);
        assert_eq!(
            decode_rgb(&rgb16, &lim).unwrap().as_raw(),
            &[0x12, 0x80, 0xff]
        );
        // Greyscale opens as I;16, whose RGB conversion clamps at 255.
        let l16 = png_bytes16(3, 1, &[17, 255, 4000], ExtendedColorType::L16);
        assert_eq!(
            decode_rgb(&l16, &lim).unwrap().as_raw(),
            &[17, 17, 17, 255, 255, 255, 255, 255, 255]
        );
        // Grey + alpha opens as RGBA from the high bytes; alpha is then dropped.
        let la16 = png_bytes16(1, 1, &[0x0aff, 0x8000], ExtendedColorType::La16);
        assert_eq!(decode_rgb(&la16, &lim).unwrap().as_raw(), &[10, 10, 10]);
        let rgba16 = png_bytes16(
            1,
            1,
            &[0x0102, 0x0304, 0x0506, 0],
            ExtendedColorType::Rgba16,
        );
        assert_eq!(decode_rgb(&rgba16, &lim).unwrap().as_raw(), &[1, 3, 5]);
    }

    #[test]
    fn load_rgb_reports_empty_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        let lim = DecodeLimits::default();
        assert!(matches!(load_rgb(&empty, &lim), Err(ImageError::Empty)));
        assert!(matches!(
            load_rgb(&dir.path().join("missing.png"), &lim),
            Err(ImageError::Io(_))
        ));
        // The format comes from the content, not the extension.
        let named_jpg = dir.path().join("actually_png.jpg");
        std::fs::write(
            &named_jpg,
            png_bytes(2, 1, &[1, 2, 3, 4, 5, 6], ExtendedColorType::Rgb8),
        )
        .unwrap();
        assert_eq!(
            load_rgb(&named_jpg, &lim).unwrap().as_raw(),
            &[1, 2, 3, 4, 5, 6]
        );
        let out = load_and_preprocess(&named_jpg, &ImageProcessorConfig::default(), &lim).unwrap();
        assert_eq!(out.len(), 3 * 224 * 224);
    }
}
