//! Slide reader tests: pixel parity with OpenSlide 4.0.1 goldens (`fixtures/make_slides.py`),
//! the tile plan against OpenSlide + Pillow, bad input as errors, the tile cache, bounded
//! memory on a big single-level BigTIFF, tissue detection and the grid, and the run-time
//! OpenSlide backend when the system has it.

mod bigtiff;
mod bombs;
mod craft;

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use serde_json::Value;

use super::grid::{self, GridParams};
use super::*;
use bigtiff::{jpeg_tile, solid_tile, write_bigtiff, LevelSpec};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/slides")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn open(p: &Path) -> Result<Slide, SlideError> {
    Slide::open(p, &OpenOptions::default())
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn png(p: &Path) -> RgbImage {
    image::open(p).unwrap().to_rgb8()
}

/// Largest per-channel difference allowed against OpenSlide for JPEG tiles (zune-jpeg vs
/// libjpeg-turbo: IDCT rounding and chroma upsampling).
const JPEG_TOL: u8 = 5;
/// Largest difference on lossless levels when the read position is fractional at that level
/// (cairo's resampling, approximated in compose.rs).
const FRACTIONAL_TOL: u8 = 1;
/// Largest difference, and mean, on JPEG levels read at a fractional position: the bilinear
/// blend across stored-tile seams amplifies the decoder's edge differences (measured: max 8,
/// mean 0.10 on aperio_rgb.svs level 1 at (1001, 803); YCbCr 4:2:0 tiles: max 4, mean up to 0.44).
const FRACTIONAL_JPEG_TOL: (u8, f64) = (10, 0.6);

struct Diff {
    max: u8,
    mean: f64,
    differing: usize,
}

fn diff(a: &[u8], b: &[u8]) -> Diff {
    assert_eq!(a.len(), b.len());
    let (mut max, mut sum, mut differing) = (0u8, 0u64, 0);
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += u64::from(d);
        differing += usize::from(d != 0);
    }
    Diff {
        max,
        mean: sum as f64 / a.len().max(1) as f64,
        differing,
    }
}

/// Levels, downsamples, mpp, best levels and every golden region of one slide. Regions on
/// `exact_levels` (lossless) must match exactly at integral positions.
fn check_golden(name: &str, exact_levels: &[usize]) {
    let dir = fixtures().join("golden").join(name);
    let meta = read_json(&dir.join("meta.json"));
    let slide = open(&fixture(name)).unwrap();
    let is_ome = name.starts_with("ome");
    if is_ome {
        assert_eq!(slide.vendor(), "ome-tiff");
    } else {
        assert_eq!(slide.vendor(), meta["vendor"].as_str().unwrap());
    }
    let dims = meta["level_dimensions"].as_array().unwrap();
    let dss = meta["level_downsamples"].as_array().unwrap();
    if !is_ome {
        assert_eq!(slide.levels().len(), dims.len(), "{name}: level count");
    }
    for (i, (d, ds)) in dims.iter().zip(dss).enumerate() {
        let l = slide.levels()[i];
        assert_eq!(l.width, d[0].as_u64().unwrap(), "{name} level {i} width");
        assert_eq!(l.height, d[1].as_u64().unwrap(), "{name} level {i} height");
        assert_eq!(l.downsample, ds.as_f64().unwrap(), "{name} level {i} ds");
    }
    match meta["mpp_x"].as_str() {
        Some(m) => {
            let (v, _) = slide.mpp().expect("mpp");
            assert!(
                (v - m.parse::<f64>().unwrap()).abs() < 1e-9,
                "{name}: mpp {v} vs {m}"
            );
        }
        // OpenSlide 4.0.1 reads no mpp from OME-XML; we do.
        None => assert_eq!(slide.mpp().map(|m| m.1), Some(MppSource::OmeXml)),
    }
    if !is_ome {
        for pair in meta["best_level"].as_array().unwrap() {
            let ds = pair[0].as_f64().unwrap();
            let want = pair[1].as_u64().unwrap() as usize;
            assert_eq!(
                slide.best_level_for_downsample(ds),
                want,
                "{name}: best level {ds}"
            );
        }
    }
    let mut worst = 0u8;
    for r in meta["regions"].as_array().unwrap() {
        let (x, y) = (r["x"].as_i64().unwrap(), r["y"].as_i64().unwrap());
        let level = r["level"].as_u64().unwrap() as usize;
        let (w, h) = (
            r["w"].as_u64().unwrap() as u32,
            r["h"].as_u64().unwrap() as u32,
        );
        let want = png(&dir.join(r["png"].as_str().unwrap()));
        let ours = slide.read_region(x, y, level, w, h).unwrap();
        assert_eq!(ours.dimensions(), want.dimensions());
        let d = diff(ours.as_raw(), want.as_raw());
        println!(
            "{name:16} level {level} ({x:5},{y:5}) {w:3}x{h:3}: max {:2} mean {:.4} differing {:5} of {}",
            d.max,
            d.mean,
            d.differing,
            ours.as_raw().len()
        );
        worst = worst.max(d.max);
        let ds = slide.levels()[level].downsample;
        let integral = (x as f64 / ds).fract() == 0.0 && (y as f64 / ds).fract() == 0.0;
        if exact_levels.contains(&level) {
            let tol = if integral { 0 } else { FRACTIONAL_TOL };
            assert!(
                d.max <= tol,
                "{name}: lossless level {level}: max diff {}",
                d.max
            );
        } else if integral {
            assert!(d.max <= JPEG_TOL, "{name}: region {r}: max diff {}", d.max);
        } else {
            let (max, mean) = FRACTIONAL_JPEG_TOL;
            assert!(
                d.max <= max && d.mean <= mean,
                "{name}: region {r}: max {} mean {}",
                d.max,
                d.mean
            );
        }
    }
    println!("{name}: worst max diff {worst}");
}

#[test]
fn aperio_rgb_matches_openslide() {
    check_golden("aperio_rgb.svs", &[]);
}

#[test]
fn aperio_ycbcr_matches_openslide() {
    check_golden("aperio_ycbcr.svs", &[]);
}

#[test]
fn generic_tiff_matches_openslide() {
    // level 1 is deflate, level 2 LZW: lossless, so exact.
    check_golden("generic.tiff", &[1, 2]);
}

#[test]
fn lzw_edge_tiles_and_predictor_match_openslide() {
    // Both levels are lossless: exact, partial edge tiles included.
    check_golden("lzw.tiff", &[0, 1]);
}

#[test]
fn single_level_tiff_matches_openslide() {
    check_golden("single.tiff", &[]);
}

#[test]
fn ome_tiff_matches_openslide_and_has_subifd_levels() {
    check_golden("ome.ome.tiff", &[]);
    let s = open(&fixture("ome.ome.tiff")).unwrap();
    assert_eq!(s.levels().len(), 3, "SubIFD pyramid levels");
    assert!((s.mpp().unwrap().0 - 0.44).abs() < 1e-12);
}

/// `TilePlan::read_tile` = OpenSlide `read_region` at the planned level + Pillow's bicubic
/// resize, for the grid cells in `golden/<slide>/tiles.json`. Lossless levels match exactly
/// (our resize is Pillow's, bit for bit); JPEG levels within the decoder's noise, which the
/// resize can only average down.
#[test]
fn tiles_match_openslide_plus_pillow() {
    for (name, lossless) in [
        ("aperio_ycbcr.svs", false),
        ("aperio_rgb.svs", false),
        ("generic.tiff", true),
        ("single.tiff", false),
    ] {
        let dir = fixtures().join("golden").join(name);
        let cases = read_json(&dir.join("tiles.json"));
        for c in cases.as_array().unwrap() {
            let opts = Tiling {
                mpp: c["mpp"].as_f64().unwrap(),
                tile: c["tile"].as_u64().unwrap() as u32,
                min_tissue: 0.0,
                slide_mpp: None,
                keep_artifacts: false,
            };
            let plan = TilePlan::new(&fixture(name), &opts).unwrap();
            assert_eq!(
                plan.level as u64,
                c["level"].as_u64().unwrap(),
                "{name} {c}"
            );
            assert_eq!(
                u64::from(plan.read_px),
                c["read_px"].as_u64().unwrap(),
                "{name} {c}"
            );
            let s0 = c["s0"].as_u64().unwrap();
            let (col, row) = (c["col"].as_u64().unwrap(), c["row"].as_u64().unwrap());
            let i = (row * u64::from(plan.cols) + col) as usize;
            let t = plan.tiles[i];
            assert_eq!(
                (t.x, t.y, t.w, t.h),
                (col * s0, row * s0, s0, s0),
                "{name} {c}"
            );
            let ours = plan.read_tile(i).unwrap();
            let want = png(&dir.join(c["png"].as_str().unwrap()));
            assert_eq!(ours.dimensions(), (opts.tile, opts.tile));
            let d = diff(ours.as_raw(), want.as_raw());
            println!(
                "{name:16} tile mpp {} {}px level {} read {}px at ({},{}): max {} mean {:.4} \
                 differing {} of {}",
                opts.mpp,
                opts.tile,
                plan.level,
                plan.read_px,
                t.x,
                t.y,
                d.max,
                d.mean,
                d.differing,
                ours.as_raw().len()
            );
            let tol = if lossless { 0 } else { JPEG_TOL };
            assert!(d.max <= tol, "{name} {c}: max diff {}", d.max);
        }
    }
}

#[test]
fn tile_plan_records_mpp_source_and_refuses_missing_mpp() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-mpp.tiff");
    let payloads = vec![jpeg_tile(&solid_tile(256, [200, 110, 170], true), 80)];
    let levels = [LevelSpec {
        width: 1024,
        height: 768,
        tile: 256,
        payload_of: Box::new(|_, _| 0),
    }];
    write_bigtiff(&p, &payloads, &levels, None);
    match TilePlan::new(&p, &Tiling::default()) {
        Err(e @ SlideError::NoMpp { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("no-mpp.tiff") && m.contains("--slide-mpp"),
                "{m}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("planned a slide without a resolution"),
    }
    let opts = Tiling {
        slide_mpp: Some(0.25),
        ..Tiling::default()
    };
    let plan = TilePlan::new(&p, &opts).unwrap();
    assert_eq!(plan.mpp_source, MppSource::User);
    assert_eq!((plan.slide_mpp, plan.level_mpp), (0.25, 0.25));
    assert_eq!(plan.skipped_stored_tiles, 0);
    // 224 px at 0.5 µm/px = 448 level-0 px at 0.25: 2 x 1 whole tiles, all tissue.
    assert_eq!((plan.cols, plan.rows), (2, 1));
    assert_eq!(plan.tiles.len(), 2);
    assert_eq!(plan.read_tile(1).unwrap().dimensions(), (224, 224));
    assert!(plan.read_tile(2).is_err());
    // the file's own mpp wins over the user's
    let aperio = TilePlan::new(&fixture("aperio_ycbcr.svs"), &opts).unwrap();
    assert_eq!(aperio.mpp_source, MppSource::Aperio);
    // options that describe no grid are errors naming the file, not panics
    for bad in [
        Tiling { mpp: 0.0, ..opts },
        Tiling { tile: 0, ..opts },
        Tiling {
            min_tissue: 1.5,
            ..opts
        },
    ] {
        let e = TilePlan::new(&p, &bad).err().unwrap().to_string();
        assert!(e.contains("no-mpp.tiff"), "{e}");
    }
    // a slide smaller than one tile has an empty plan
    let tiny = TilePlan::new(&p, &Tiling { tile: 4096, ..opts }).unwrap();
    assert!(tiny.tiles.is_empty());
}

#[test]
fn is_slide_by_extension_and_content() {
    assert!(is_slide(&fixture("aperio_ycbcr.svs")));
    assert!(is_slide(Path::new("/nowhere/a.NDPI")));
    assert!(is_slide(Path::new("/nowhere/a.mrxs")));
    assert!(!is_slide(Path::new("/nowhere/a.png")));
    // pyramidal TIFF and OME-TIFF: slides
    assert!(is_slide(&fixture("generic.tiff")));
    assert!(is_slide(&fixture("ome.ome.tiff")));
    // a single-level tiled JPEG TIFF is a slide: the image path cannot decode it
    assert!(is_slide(&fixture("single.tiff")));
    // so are a stripped TIFF and a file that is not a TIFF at all
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("plain.tif");
    RgbImage::new(8, 8).save(&stripped).unwrap();
    assert!(!is_slide(&stripped));
    let junk = dir.path().join("junk.tiff");
    std::fs::write(&junk, b"II*\0garbage").unwrap();
    assert!(!is_slide(&junk));
    // a single level over Pillow's decompression-bomb limit is a slide
    let big = dir.path().join("big.tif");
    let payloads = vec![jpeg_tile(&solid_tile(256, [240, 240, 240], false), 80)];
    let levels = [LevelSpec {
        width: 16_384,
        height: 12_288,
        tile: 256,
        payload_of: Box::new(|_, _| 0),
    }];
    write_bigtiff(&big, &payloads, &levels, Some(0.25));
    assert!(is_slide(&big));
}

/// Offsets and byte counts of the level-0 tiles of a classic little-endian TIFF, plus the
/// file offset of its TileByteCounts array.
fn level0_tiles(bytes: &[u8]) -> (Vec<u64>, Vec<u64>, usize) {
    let u16at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(&bytes[..2], b"II");
    let ifd = u32at(4) as usize;
    let n = u16at(ifd) as usize;
    let (mut offs, mut counts, mut counts_at) = (vec![], vec![], 0);
    for i in 0..n {
        let e = ifd + 2 + i * 12;
        let (tag, count, val) = (u16at(e), u32at(e + 4) as usize, u32at(e + 8) as usize);
        if tag == 324 || tag == 325 {
            let v: Vec<u64> = (0..count).map(|k| u64::from(u32at(val + 4 * k))).collect();
            if tag == 324 {
                offs = v;
            } else {
                counts = v;
                counts_at = val;
            }
        }
    }
    (offs, counts, counts_at)
}

#[test]
fn truncated_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("aperio_rgb.svs")).unwrap();
    let (mut errors, mut opened) = (0, 0);
    for frac in [0.0, 0.001, 0.3, 0.6, 0.95] {
        let p = dir.path().join(format!("t{frac}.svs"));
        std::fs::write(&p, &bytes[..(bytes.len() as f64 * frac) as usize]).unwrap();
        match open(&p) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(p.to_str().unwrap()), "{msg}");
                println!("truncated at {frac}: {msg}");
                errors += 1;
            }
            Ok(s) => {
                // The directories survived (they sit at the end); tiles past the cut fail
                // per region, with an error, or read.
                let l = s.levels()[0];
                let r = s.read_region(0, 0, 0, l.width as u32, l.height as u32);
                println!(
                    "truncated at {frac}: opened; level 0 read: {:?}",
                    r.map(|_| ())
                );
                opened += 1;
            }
        }
    }
    // tifffile writes each IFD after its level's tiles: every cut before the last level loses
    // one (0.95 only cuts into the macro image, so that file opens and reads).
    assert_eq!((errors, opened), (4, 1));
}

#[test]
fn corrupt_and_empty_tiles_fail_only_their_regions() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("aperio_rgb.svs")).unwrap();
    let (offs, counts, counts_at) = level0_tiles(&bytes);
    // tile 1: garbage after the first 200 bytes
    let (o, c) = (offs[1] as usize, counts[1] as usize);
    for (i, b) in bytes[o + 200..o + c].iter_mut().enumerate() {
        *b = (i * 37 + 11) as u8;
    }
    // tile 2: byte count 0
    bytes[counts_at + 2 * 4..counts_at + 2 * 4 + 4].copy_from_slice(&0u32.to_le_bytes());
    // tile 3: JPEG header destroyed
    let o3 = offs[3] as usize;
    bytes[o3..o3 + 64].fill(0xAA);
    let p = dir.path().join("corrupt.svs");
    std::fs::write(&p, &bytes).unwrap();
    let s = open(&p).unwrap();
    let t = 256i64;
    match s.read_region(t + 10, 10, 0, 100, 100) {
        Err(
            e @ SlideError::CorruptTile {
                col: 1,
                row: 0,
                level: 0,
                ..
            },
        ) => {
            assert!(e.to_string().contains("corrupt.svs"));
        }
        other => panic!("tile 1: {other:?}"),
    }
    match s.read_region(2 * t, 0, 0, 256, 256) {
        Err(e @ SlideError::MissingTile { col: 2, row: 0, .. }) => println!("{e}"),
        other => panic!("tile 2: {other:?}"),
    }
    match s.read_region(3 * t, 0, 0, 256, 256) {
        Err(e @ SlideError::CorruptTile { col: 3, .. }) => println!("{e}"),
        other => panic!("tile 3: {other:?}"),
    }
    // neighbours still read, and the decoder recovers
    s.read_region(0, 0, 0, 256, 256).unwrap();
    s.read_region(4 * t, 0, 0, 256, 256).unwrap();
    s.read_region(t, t, 0, 256, 256).unwrap();
    // the tissue view counts the bad tiles as glass instead of failing
    let (_, skipped) = s.downsampled_view(0, 16).unwrap();
    assert_eq!(skipped, 3);
    // and so does a tile plan, whose tiles over the bad ones fail alone
    let plan = TilePlan::new(
        &p,
        &Tiling {
            mpp: 0.252,
            tile: 256,
            min_tissue: 0.0,
            slide_mpp: None,
            keep_artifacts: false,
        },
    )
    .unwrap();
    assert_eq!(plan.read_px, 256);
    let results: Vec<bool> = (0..plan.tiles.len())
        .map(|i| plan.read_tile(i).is_ok())
        .collect();
    assert_eq!(results.iter().filter(|ok| !**ok).count(), 3, "{results:?}");
}

#[test]
fn jpeg2000_aperio_is_named_or_read_through_openslide() {
    let p = fixture("aperio_j2k.svs");
    assert!(is_slide(&p));
    match open(&p) {
        Ok(s) => {
            assert!(openslide::available());
            assert_eq!(s.vendor(), "openslide:aperio");
            let r = s.read_region(0, 0, 0, 64, 64).unwrap();
            assert_eq!(r.dimensions(), (64, 64));
        }
        Err(e) => {
            assert!(!openslide::available());
            let m = e.to_string();
            assert!(matches!(
                e,
                SlideError::Jpeg2000 {
                    compression: 33003,
                    ..
                }
            ));
            assert!(
                m.contains("JPEG 2000") && m.contains("libopenslide0"),
                "{m}"
            );
        }
    }
}

#[test]
fn non_tiff_missing_and_unsupported_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.tif");
    std::fs::write(&p, b"not a tiff at all").unwrap();
    let e = open(&p).err().unwrap().to_string();
    assert!(e.contains("x.tif"), "{e}");
    let e = open(&dir.path().join("nope.svs"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope.svs"), "{e}");
    let empty = dir.path().join("empty.svs");
    std::fs::write(&empty, b"").unwrap();
    let e = open(&empty).err().unwrap().to_string();
    assert!(e.contains("empty.svs"), "{e}");
}

/// A stripped TIFF written by the `tiff` crate: `rows` rows per strip, with
/// the given compression and a resolution of 0.5 µm/px.
fn write_stripped(path: &Path, img: &RgbImage, rows: u32, compression: tiff::encoder::Compression) {
    use tiff::encoder::{colortype::RGB8, Rational, TiffEncoder};
    let file = std::fs::File::create(path).unwrap();
    let mut enc = TiffEncoder::new(file)
        .unwrap()
        .with_compression(compression);
    let mut im = enc.new_image::<RGB8>(img.width(), img.height()).unwrap();
    im.rows_per_strip(rows).unwrap();
    im.resolution(
        tiff::tags::ResolutionUnit::Centimeter,
        Rational { n: 20_000, d: 1 },
    );
    im.write_data(img.as_raw()).unwrap();
}

#[test]
fn stripped_tiffs_are_read_strip_by_strip() {
    use tiff::encoder::Compression;
    let dir = tempfile::tempdir().unwrap();
    // 301 x 250 with 16-row strips: the last strip holds 10 rows.
    let img = RgbImage::from_fn(301, 250, |x, y| {
        image::Rgb([(x * 3 + y) as u8, (y * 7) as u8, ((x * y) % 251) as u8])
    });
    for (name, compression) in [
        ("raw.tif", Compression::Uncompressed),
        ("lzw.tif", Compression::Lzw),
        ("packbits.tif", Compression::Packbits),
    ] {
        let p = dir.path().join(name);
        write_stripped(&p, &img, 16, compression);
        let s = open(&p).unwrap();
        assert_eq!(s.levels().len(), 1, "{name}");
        let l = s.levels()[0];
        assert_eq!((l.width, l.height, l.tile_w, l.tile_h), (301, 250, 301, 16));
        assert_eq!(s.mpp(), Some((0.5, MppSource::TiffResolution)), "{name}");
        // Regions across strip boundaries, in the last strip and past the edge.
        for (x, y, w, h) in [(0, 0, 301, 250), (17, 9, 40, 30), (250, 230, 80, 40)] {
            let got = s.read_region(x, y, 0, w, h).unwrap();
            for (gx, gy, p) in got.enumerate_pixels() {
                let (sx, sy) = (x as u32 + gx, y as u32 + gy);
                let want = if sx < 301 && sy < 250 {
                    *img.get_pixel(sx, sy)
                } else {
                    image::Rgb([0, 0, 0])
                };
                assert_eq!(*p, want, "{name} ({sx}, {sy})");
            }
        }
    }
    // A small stripped TIFF stays an ordinary image; one over the pixel limit is a slide.
    assert!(!is_slide(&dir.path().join("lzw.tif")));
    // One strip holding the whole image is too big to cache: refused with advice.
    let big = RgbImage::from_pixel(3000, 3000, image::Rgb([200, 100, 150]));
    let one = dir.path().join("one_strip.tif");
    write_stripped(&one, &big, 3000, Compression::Lzw);
    let e = open(&one).err().unwrap().to_string();
    assert!(
        e.contains("one_strip.tif") && e.contains("3000x3000") && e.contains("--tile"),
        "{e}"
    );
}

#[test]
fn cache_avoids_redecoding_neighbours_and_stays_in_budget() {
    let opts = |cache_bytes| OpenOptions {
        cache_bytes,
        ..OpenOptions::default()
    };
    let s = Slide::open(&fixture("aperio_ycbcr.svs"), &opts(16 << 20)).unwrap();
    s.read_region(100, 100, 0, 300, 300).unwrap(); // tiles (0..2, 0..2)
    let a = s.cache_stats();
    assert_eq!(a.decodes, 4);
    s.read_region(100, 100, 0, 300, 300).unwrap();
    let b = s.cache_stats();
    assert_eq!(b.decodes, 4);
    assert_eq!(b.hits, a.hits + 4);
    s.read_region(300, 100, 0, 300, 300).unwrap(); // adds column 2
    assert_eq!(s.cache_stats().decodes, 6);
    // a budget of two tiles keeps two tiles
    let budget = 256 * 256 * 3 * 2;
    let small = Slide::open(&fixture("aperio_ycbcr.svs"), &opts(budget)).unwrap();
    small.read_region(0, 0, 0, 1024, 1024).unwrap();
    let st = small.cache_stats();
    assert!(st.tiles <= 2 && st.bytes <= budget, "{st:?}");
    assert_eq!(st.decodes, 16);
}

#[test]
fn concurrent_reads_agree() {
    let s = std::sync::Arc::new(open(&fixture("aperio_ycbcr.svs")).unwrap());
    let want = s.read_region(700, 500, 0, 300, 300).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.read_region(700, 500, 0, 300, 300).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}

#[test]
fn levels_mpp_and_thumbnail() {
    let s = open(&fixture("aperio_ycbcr.svs")).unwrap();
    assert_eq!(s.vendor(), "aperio");
    assert_eq!(s.mpp(), Some((0.252, MppSource::Aperio)));
    assert_eq!(s.thumbnail(199).unwrap().dimensions(), (199, 150));
    let g = open(&fixture("generic.tiff")).unwrap();
    assert_eq!(g.mpp(), Some((0.5, MppSource::TiffResolution)));
    let single = open(&fixture("single.tiff")).unwrap();
    assert!((single.mpp().unwrap().0 - 0.25).abs() < 1e-9);
    assert_eq!(single.levels().len(), 1);
    assert_eq!(single.thumbnail(110).unwrap().dimensions(), (110, 90));
    // the user's mpp only when the file has none
    let o = Slide::open(
        &fixture("aperio_rgb.svs"),
        &OpenOptions {
            user_mpp: Some(9.0),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(o.mpp().unwrap().1, MppSource::Aperio);
    // a level past the last one is an error naming the file
    let e = s.read_region(0, 0, 3, 8, 8).err().unwrap().to_string();
    assert!(
        e.contains("aperio_ycbcr.svs") && e.contains("3 levels"),
        "{e}"
    );
}

#[test]
fn tissue_and_grid_on_synthetic_slide() {
    let s = open(&fixture("aperio_ycbcr.svs")).unwrap();
    let m = tissue::detect(&s, &tissue::DetectOptions::default()).unwrap();
    let tissue_px = m.data.iter().filter(|&&v| v == tissue::TISSUE).count();
    let frac = tissue_px as f64 / m.data.len() as f64;
    println!(
        "mask {}x{} scale {:.2} threshold {} tissue {:.3}",
        m.width, m.height, m.scale_x, m.threshold, frac
    );
    // the generator thresholds a smooth noise field at 0.55: roughly 20-70 % tissue
    assert!((0.2..0.7).contains(&frac), "{frac}");
    let g = grid::plan(&s, 0.252, &GridParams::default(), Some(&m)).unwrap();
    assert_eq!(g.s0, 444);
    assert_eq!(g.level, 0);
    assert_eq!(g.read_px, 444);
    assert_eq!((g.cols, g.rows), (4, 3));
    assert!(
        !g.tiles.is_empty() && g.tiles.len() < 12,
        "{}",
        g.tiles.len()
    );
    let coarse = GridParams {
        target_mpp: 1.5,
        ..GridParams::default()
    };
    let g2 = grid::plan(&s, 0.252, &coarse, None).unwrap();
    assert_eq!(g2.s0, 1333);
    assert_eq!(g2.level, 1); // 1333/224 = 5.95 >= 4.002
    assert_eq!(g2.read_px, 333); // round(1333/4.002)
    assert_eq!(g2.tiles.len(), 1);
    // every kept tile has tissue by saturation; every dropped one mostly has not
    for t in &g.tiles {
        assert!(t.tissue >= 0.5);
        let img = s
            .read_region(t.x0, t.y0, g.level, g.read_px, g.read_px)
            .unwrap();
        let sat = tissue::saturation(img.as_raw());
        let hi = sat.iter().filter(|&&v| v > 30).count() as f64 / sat.len() as f64;
        assert!(hi > 0.3, "kept tile {t:?}: saturated share {hi}");
    }
    let all = grid::plan(&s, 0.252, &GridParams::default(), None).unwrap();
    for t in all
        .tiles
        .iter()
        .filter(|t| !g.tiles.iter().any(|k| k.x0 == t.x0 && k.y0 == t.y0))
    {
        let img = s.read_region(t.x0, t.y0, 0, 444, 444).unwrap();
        let sat = tissue::saturation(img.as_raw());
        let hi = sat.iter().filter(|&&v| v > 30).count() as f64 / sat.len() as f64;
        assert!(hi < 0.6, "dropped tile {t:?}: saturated share {hi}");
    }
}

/// Peak resident memory of this process (VmHWM), in KiB (Linux; 0 elsewhere).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

const BIG_SIDE: u64 = 16_384;
const CHILD_ENV: &str = "PLIP_SLIDE_MEMORY_CHILD";

/// Reads regions, a whole-level scan and a tile plan on a 16384 x 16384 single-level BigTIFF
/// (805 MB as RGB) and prints the process's peak RSS. Run alone in a child process by
/// `big_single_level_tiff_reads_with_bounded_memory`, so that other tests' memory does not
/// count; ignored when run directly.
#[test]
#[ignore = "run by big_single_level_tiff_reads_with_bounded_memory in a child process"]
fn big_single_level_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let p = Path::new(&dir).join("big.tiff");
    let s = Slide::open(
        &p,
        &OpenOptions {
            cache_bytes: 32 << 20,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.levels().len(), 1);
    assert_eq!(s.mpp().unwrap().1, MppSource::TiffResolution);
    let t0 = Instant::now();
    for i in 0..24i64 {
        let x = (i * 7919 * 37) % (BIG_SIDE as i64 - 1024);
        let y = (i * 104_729) % (BIG_SIDE as i64 - 1024);
        assert_eq!(
            s.read_region(x, y, 0, 1024, 1024).unwrap().dimensions(),
            (1024, 1024)
        );
    }
    let regions = t0.elapsed();
    let t1 = Instant::now();
    let plan = TilePlan::from_slide(s, &Tiling::default()).unwrap();
    let planned = t1.elapsed();
    let s = plan.slide();
    assert!(s.cache_stats().bytes <= 32 << 20);
    // 224 px at 0.5 µm/px = 448 px at 0.25: 36 x 36 tiles; tissue in a checkerboard of
    // 8 x 8-tile blocks (2048 px), so about half of them are kept.
    assert_eq!((plan.cols, plan.rows), (36, 36));
    let kept = plan.tiles.len();
    assert!((500..800).contains(&kept), "{kept} tiles kept");
    assert_eq!(plan.read_tile(kept / 2).unwrap().dimensions(), (224, 224));
    println!(
        "CHILD big {BIG_SIDE}x{BIG_SIDE}: 24 regions of 1024^2 in {regions:?}, tissue + plan \
         in {planned:?} ({kept} of 1296 tiles kept), peak RSS {} MiB",
        peak_rss_kib() / 1024
    );
    println!("PEAK_KIB={}", peak_rss_kib());
}

#[test]
fn big_single_level_tiff_reads_with_bounded_memory() {
    if !Path::new("/proc/self/status").exists() {
        eprintln!("SKIPPED: no /proc/self/status to measure memory on this system");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.tiff");
    let payloads = vec![
        jpeg_tile(&solid_tile(256, [240, 240, 240], false), 80),
        jpeg_tile(&solid_tile(256, [200, 110, 170], true), 80),
    ];
    write_bigtiff(
        &p,
        &payloads,
        &[LevelSpec {
            width: BIG_SIDE,
            height: BIG_SIDE,
            tile: 256,
            payload_of: Box::new(|c, r| usize::from((c / 8 + r / 8) % 2 == 1)),
        }],
        Some(0.25),
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "source::slide::tests::big_single_level_child"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With --nocapture, libtest may print "test NAME ... " in front of the child's first line.
    let peak: u64 = stdout
        .lines()
        .find_map(|l| l.split_once("PEAK_KIB=").map(|(_, v)| v))
        .expect("the child printed its peak")
        .trim()
        .parse()
        .unwrap();
    for l in stdout.lines().filter_map(|l| l.split_once("CHILD ")) {
        println!("{}", l.1);
    }
    // The level as RGB is 768 MiB; the cache is 32 MiB.
    assert!(peak / 1024 < 200, "peak RSS {} MiB", peak / 1024);
}

/// 100k x 80k pyramid (tiles share stored bytes, so the file is a few MB): tissue detection
/// runs on the 16 µm/px level and finds the ellipse of tissue.
#[test]
fn tissue_detection_on_100k_pyramid_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.tiff");
    let payloads = vec![
        jpeg_tile(&solid_tile(256, [242, 241, 243], false), 80),
        jpeg_tile(&solid_tile(256, [205, 120, 175], true), 80),
    ];
    let (w0, h0) = (100_000u64, 80_000u64);
    let levels: Vec<LevelSpec> = [1u64, 4, 16, 64]
        .iter()
        .map(|&d| LevelSpec {
            width: w0 / d,
            height: h0 / d,
            tile: 256,
            // an ellipse of tissue in the middle of the slide
            payload_of: Box::new(move |c, r| {
                let cx = ((c * 256 + 128) * d) as f64 / w0 as f64 - 0.5;
                let cy = ((r * 256 + 128) * d) as f64 / h0 as f64 - 0.5;
                usize::from(cx * cx / 0.16 + cy * cy / 0.09 < 1.0)
            }),
        })
        .collect();
    write_bigtiff(&p, &payloads, &levels, Some(0.25));
    let t0 = Instant::now();
    let s = open(&p).unwrap();
    let t_open = t0.elapsed();
    let t1 = Instant::now();
    let m = tissue::detect(&s, &tissue::DetectOptions::default()).unwrap();
    let t_detect = t1.elapsed();
    let t2 = Instant::now();
    let g = grid::plan(&s, 0.25, &GridParams::default(), Some(&m)).unwrap();
    let t_grid = t2.elapsed();
    let tissue_px = m.data.iter().filter(|&&v| v == tissue::TISSUE).count();
    let frac = tissue_px as f64 / m.data.len() as f64;
    println!(
        "100000x80000: open {t_open:?}, tissue {t_detect:?} (mask {}x{}, scale {}, tissue \
         {frac:.3}), grid {t_grid:?}: {} of {} tiles kept, file {} KiB",
        m.width,
        m.height,
        m.scale_x,
        g.tiles.len(),
        u64::from(g.cols) * u64::from(g.rows),
        std::fs::metadata(&p).unwrap().len() / 1024
    );
    // ellipse area = pi * 0.4 * 0.3 = 0.377 of the slide
    assert!((0.3..0.45).contains(&frac), "{frac}");
    let kept = g.tiles.len() as f64 / (f64::from(g.cols) * f64::from(g.rows));
    assert!((0.3..0.45).contains(&kept), "{kept}");
    // issue 17 asks <= 2 s; generous here for a loaded 2-core CI machine at opt-level 1
    assert!(t_detect.as_secs_f64() < 5.0, "{t_detect:?}");
}

/// The run-time OpenSlide backend against the OpenSlide 4.0.1 goldens. Needs the system
/// library (Debian `libopenslide0`, which .ci/run installs); without it, it says so loudly.
#[test]
fn openslide_backend_matches_goldens_when_installed() {
    // The message names the package whether or not the library is here.
    let e = SlideError::OpenSlideMissing {
        path: "a.ndpi".into(),
        what: ".ndpi files".into(),
        tried: "libopenslide.so.1".into(),
    };
    assert!(e.to_string().contains("a.ndpi") && e.to_string().contains("libopenslide0"));
    if !openslide::available() {
        eprintln!(
            "\n*** SKIPPED: libopenslide0 not installed; the OpenSlide backend is untested \
             (apt-get install libopenslide0) ***\n"
        );
        return;
    }
    for name in ["aperio_rgb.svs", "aperio_ycbcr.svs"] {
        let s = Slide::open_with_openslide(&fixture(name)).unwrap();
        assert_eq!(s.vendor(), "openslide:aperio");
        assert_eq!(s.mpp().unwrap().1, MppSource::OpenSlide);
        let ours = open(&fixture(name)).unwrap();
        assert_eq!(s.levels().len(), ours.levels().len());
        for (a, b) in s.levels().iter().zip(ours.levels()) {
            assert_eq!(
                (a.width, a.height, a.downsample),
                (b.width, b.height, b.downsample)
            );
        }
        let dir = fixtures().join("golden").join(name);
        let meta = read_json(&dir.join("meta.json"));
        let mut worst = 0;
        for r in meta["regions"].as_array().unwrap() {
            let g = |k: &str| r[k].as_i64().unwrap();
            let img = s
                .read_region(
                    g("x"),
                    g("y"),
                    g("level") as usize,
                    g("w") as u32,
                    g("h") as u32,
                )
                .unwrap();
            let want = png(&dir.join(r["png"].as_str().unwrap()));
            worst = worst.max(diff(img.as_raw(), want.as_raw()).max);
        }
        println!("{name}: system OpenSlide vs OpenSlide 4.0.1 goldens: worst max diff {worst}");
        assert!(worst <= 2, "{name}: {worst}");
    }
    // an OpenSlide-only extension goes to OpenSlide, and a non-slide is its error
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fake.ndpi");
    std::fs::write(&p, b"not a slide").unwrap();
    let e = open(&p).err().unwrap().to_string();
    assert!(e.contains("fake.ndpi") && e.contains("OpenSlide"), "{e}");
}

#[test]
fn slide_and_plan_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Slide>();
    assert_send_sync::<TilePlan>();
}

#[test]
fn downsample_is_mean_of_axis_ratios() {
    let d = openslide_downsample((3000, 2000), (187, 125));
    assert!((d - 16.021390374331553).abs() < 1e-12);
}
