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

mod config;
mod decode;
mod resize;
#[cfg(test)]
mod tests;
pub use config::{ImageProcessorConfig, PixelPipeline};
pub use decode::{decode_rgb, DecodeLimits};
pub(crate) use decode::{load_rgb, probe, ImageError};
pub(crate) use resize::{resize_bicubic, resize_output_size, resize_window};

/// One axis of transformers' `center_crop`: `len` source samples starting at `src` land at
/// `dst` in the output; the rest of the output is zero padding.
struct CropAxis {
    src: u32,
    dst: u32,
    len: u32,
}

fn crop_axis(size: u32, crop: u32, pipeline: PixelPipeline) -> CropAxis {
    if size >= crop {
        let diff = size - crop;
        let src = match pipeline {
            // top = (orig - crop) // 2
            PixelPipeline::ClipImageProcessor => diff / 2,
            // torchvision: int(round(diff / 2.0)), half to even.
            PixelPipeline::OpenClip => diff / 2 + u32::from(diff % 4 == 3),
        };
        CropAxis {
            src,
            dst: 0,
            len: crop,
        }
    } else {
        // Too small: centred in a zero canvas, offset ceil((crop - orig) / 2)
        // (torchvision pads (crop - orig) // 2 before).
        let dst = match pipeline {
            PixelPipeline::ClipImageProcessor => (crop - size).div_ceil(2),
            PixelPipeline::OpenClip => (crop - size) / 2,
        };
        CropAxis {
            src: 0,
            dst,
            len: size,
        }
    }
}

/// Output value of each possible u8 per channel: rescale as `image.astype(float64) * scale`
/// cast to float32, then `(x - mean) / std` in float32 (transformers' `rescale`/`normalize`);
/// for open_clip, torchvision's `ToTensor` (`float32(v) / 255`) then the same normalize.
fn channel_luts(cfg: &ImageProcessorConfig) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let mut x = v as f32;
            if cfg.do_rescale {
                x = match cfg.pipeline {
                    PixelPipeline::ClipImageProcessor => (v as f64 * cfg.rescale_factor) as f32,
                    PixelPipeline::OpenClip => v as f32 / 255.0,
                };
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
    let ay = crop_axis(rh, out_h, cfg.pipeline);
    let ax = crop_axis(rw, out_w, cfg.pipeline);

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
