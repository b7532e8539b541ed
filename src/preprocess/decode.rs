//! Decoding image bytes with limits (size, megapixels), and converting every mode
//! to RGB exactly as Pillow's `convert("RGB")` does.

use super::*;

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
    check_jpeg_complete(bytes)?;
    decode_reader(Cursor::new(bytes), limits)
}

/// Reads and decodes an image file; see [`decode_rgb`].
pub(crate) fn load_rgb(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Err(ImageError::Empty);
    }
    // Streaming from the file (not reading it whole) lets an oversized whole-slide TIFF be
    // refused after reading only its header.
    decode_reader(BufReader::new(file), limits)
}

/// The image crate's decoder for `reader`, after the header checks: a known
/// format, some pixels, and not more than `limits` allow. Returns it with the
/// limits the decode must keep and the bytes its output buffer takes.
fn open_decoder<'a, R: BufRead + Seek + 'a>(
    reader: R,
    limits: &DecodeLimits,
) -> Result<(Box<dyn ImageDecoder + 'a>, image::Limits, u64), ImageError> {
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
    let decoder = reader
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
    Ok((Box::new(decoder), img_limits, total))
}

/// Reads only the header of the image in `reader` and checks it against
/// `limits`. Returns the bytes that decoding it to RGB will hold at its peak
/// (the decoded buffer plus the RGB copy), for the caller's memory budget.
pub(crate) fn probe<R: BufRead + Seek>(
    reader: R,
    limits: &DecodeLimits,
) -> Result<u64, ImageError> {
    let (decoder, _, total) = open_decoder(reader, limits)?;
    let (w, h) = decoder.dimensions();
    Ok(total + 3 * u64::from(w) * u64::from(h))
}

fn decode_reader<R: BufRead + Seek>(
    reader: R,
    limits: &DecodeLimits,
) -> Result<RgbImage, ImageError> {
    let (mut decoder, img_limits, _) = open_decoder(reader, limits)?;
    decoder
        .set_limits(img_limits)
        .map_err(|e| map_image_error(e, limits))?;
    let decoded = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, limits))?;
    Ok(to_rgb_like_pillow(decoded))
}

/// Pillow refuses a JPEG whose data ends before the end-of-image marker ("image
/// file is truncated"), where the image crate fills the missing part with grey.
/// So a JPEG must have an EOI marker after its first scan.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), ImageError> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Ok(());
    }
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]);
    let eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (sos, eoi) {
        (Some(s), Some(e)) if e > s => Ok(()),
        _ => Err(ImageError::Decode(
            "the JPEG file is truncated (no end-of-image marker after its data)".to_owned(),
        )),
    }
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
