//! Thumbnails, made one way for every page and for `plip serve`: an image scaled
//! to fit a square (never enlarged), encoded as JPEG, optionally as a data URI.

use base64::Engine;
use image::imageops::FilterType;
use image::RgbImage;

/// How a thumbnail is scaled down.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shrink {
    /// Pillow-exact bicubic (the HTML pages: what the model saw, in small).
    Bicubic,
    /// Bilinear (the server: faster, for many thumbnails).
    Triangle,
}

/// `(w, h)` scaled to fit a `max_side` square, keeping the aspect ratio, each side
/// at least 1 pixel; never larger than it was.
pub(crate) fn fit(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let scale = (max_side as f64 / w.max(h) as f64).min(1.0);
    (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    )
}

/// `rgb` scaled to fit a `max_side` square with `how`.
pub(crate) fn shrink(rgb: RgbImage, max_side: u32, how: Shrink) -> RgbImage {
    let (w, h) = rgb.dimensions();
    let (tw, th) = fit(w, h, max_side);
    match how {
        Shrink::Bicubic => crate::preprocess::resize_bicubic(&rgb, tw, th),
        Shrink::Triangle if (tw, th) == (w, h) => rgb,
        Shrink::Triangle => image::imageops::resize(&rgb, tw, th, FilterType::Triangle),
    }
}

/// `img` as a JPEG file's bytes.
pub(crate) fn jpeg(img: &RgbImage, quality: u8) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img)?;
    Ok(out)
}

/// `img` as a JPEG `data:` URI for a self-contained page (quality 85).
pub(crate) fn data_uri(img: &RgbImage) -> Option<String> {
    let bytes = jpeg(img, 85).ok()?;
    Some(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}
