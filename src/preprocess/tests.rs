//! Unit tests.

use super::config::{ConfigError, CLIP_MEAN, CLIP_STD};
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
    let cfg = ImageProcessorConfig::from_json_str(r#"{"size": null, "image_mean": null}"#).unwrap();
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
        err(r#"{"size": {"shortest_edge": 224, "longest_edge": 300}}"#).contains("longest edge")
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
                175, 170, 96, 175, 170, 174, 159, 145, 174, 159, 145, 175, 160, 146, 177, 162, 148,
                179, 164, 150, 180, 165, 151, 180, 165, 151, 156, 142, 130, 156, 142, 130, 157,
                143, 131, 159, 145, 133, 161, 147, 135, 162, 148, 136, 162, 148, 136, 137, 132,
                111, 137, 132, 111, 138, 133, 112, 140, 135, 114, 142, 137, 116, 143, 138, 117,
                143, 138, 117,
            ],
        ),
        (
            6,
            16,
            3,
            8,
            &[
                80, 170, 176, 60, 176, 182, 66, 181, 187, 187, 174, 160, 97, 180, 166, 68, 185,
                171, 183, 168, 155, 186, 174, 161, 98, 179, 166, 175, 162, 149, 181, 168, 155, 195,
                173, 160, 169, 156, 143, 175, 162, 149, 180, 167, 154, 163, 150, 137, 169, 156,
                143, 174, 161, 148, 157, 143, 131, 163, 149, 137, 168, 154, 142, 141, 147, 115,
                147, 153, 121, 152, 158, 126,
            ],
        ),
        (
            7,
            5,
            3,
            9,
            &[
                0, 107, 243, 0, 113, 250, 6, 129, 255, 34, 156, 192, 48, 165, 199, 55, 140, 206,
                114, 238, 106, 130, 251, 113, 137, 157, 120, 175, 187, 153, 81, 198, 160, 86, 139,
                167, 207, 111, 226, 7, 118, 233, 9, 125, 240, 153, 184, 150, 65, 191, 157, 83, 203,
                164, 128, 231, 99, 137, 238, 106, 130, 245, 113, 215, 145, 181, 169, 152, 188, 42,
                159, 195, 255, 94, 230, 183, 101, 237, 0, 108, 244,
            ],
        ),
        (
            9,
            4,
            5,
            4,
            &[
                1, 116, 231, 6, 121, 236, 12, 127, 242, 18, 133, 248, 23, 138, 253, 126, 241, 100,
                131, 246, 105, 137, 255, 111, 143, 84, 117, 148, 0, 122, 250, 110, 225, 38, 115,
                230, 1, 121, 236, 12, 127, 242, 17, 132, 247, 120, 235, 94, 125, 240, 99, 131, 246,
                105, 137, 255, 111, 142, 121, 116,
            ],
        ),
        (
            4,
            9,
            4,
            3,
            &[
                123, 170, 169, 126, 173, 172, 57, 176, 175, 60, 179, 178, 185, 168, 153, 188, 171,
                156, 164, 174, 159, 167, 177, 162, 177, 152, 151, 180, 155, 154, 187, 158, 157,
                190, 161, 160,
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
