//! Preprocessing per image: decode, resize, crop, normalize, from encoded bytes in
//! memory (so disk speed does not count), for 512², 1024² and 4000×3000 JPEG and
//! PNG. Images are photographs from `benches/photos` when present (see
//! `benches/make_photos.py`), else a synthetic texture.
//!
//!     cargo bench --bench preprocess

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::{ImageFormat, RgbImage};
use plip::{decode_rgb, preprocess, DecodeLimits, ImageProcessorConfig};

fn source(w: u32, h: u32) -> RgbImage {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/photos/photo0000.jpg");
    if let Ok(img) = image::open(&dir) {
        return image::imageops::resize(
            &img.to_rgb8(),
            w,
            h,
            image::imageops::FilterType::CatmullRom,
        );
    }
    RgbImage::from_fn(w, h, |x, y| {
        let v = ((x * 7 + y * 13) ^ (x * y)) as u8;
        image::Rgb([
            200u8.wrapping_add(v / 8),
            120u8.wrapping_add(v / 4),
            180u8.wrapping_sub(v / 6),
        ])
    })
}

fn bench(c: &mut Criterion) {
    let cfg = ImageProcessorConfig::default();
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("preprocess");
    group.sample_size(10);
    for (w, h) in [(512, 512), (1024, 1024), (4000, 3000)] {
        let img = source(w, h);
        for fmt in [ImageFormat::Jpeg, ImageFormat::Png] {
            let mut bytes = Vec::new();
            img.write_to(&mut Cursor::new(&mut bytes), fmt).unwrap();
            group.throughput(Throughput::Elements(1));
            group.bench_function(format!("{w}x{h} {fmt:?}"), |b| {
                b.iter(|| preprocess(&decode_rgb(black_box(&bytes), &limits).unwrap(), &cfg))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
