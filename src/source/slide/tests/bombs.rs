//! Hostile slides (issue 27): a coarse claimed resolution, decompression bombs in stored
//! tiles, non-UTF-8 descriptions, overflowing regions, thousands of levels and looping IFD
//! chains. Each file is crafted here with [`super::craft`] and is a few KB.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::super::*;
use super::bigtiff::{jpeg_tile, solid_tile};
use super::craft::{resolution, tiled, write_tiff, Ifd, Val};
use super::{fixture, open};

const JPEG: u16 = 7;
const YCBCR: u16 = 6;
const RGB: u16 = 2;

fn aperio_desc(w: u32, h: u32, extra: &[u8]) -> Vec<u8> {
    let mut d = format!(
        "Aperio Image Library v12.0.5\r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=70|AppMag = 20"
    )
    .into_bytes();
    d.extend_from_slice(extra);
    d
}

/// A one-level Aperio-like slide of `w x h` whose tiles all share one pinkish JPEG tile,
/// with `extra` appended to its description (e.g. `|MPP = 99`).
fn aperio(dir: &Path, name: &str, (w, h): (u32, u32), extra: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let payloads = vec![jpeg_tile(&solid_tile(256, [220, 120, 170], true), 80)];
    let mut tags = tiled((w, h), 256, (JPEG, YCBCR, 3), 0, |_| 0);
    tags.push((270, Val::Ascii(aperio_desc(w, h, extra))));
    write_tiff(&p, &payloads, &[Ifd { tags, next: None }]);
    p
}

fn plan_err(p: &Path, opts: &Tiling) -> SlideError {
    match TilePlan::new(p, opts) {
        Ok(plan) => panic!("planned {} tiles", plan.tiles.len()),
        Err(e) => e,
    }
}

#[test]
fn aperio_mpp_99_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let p = aperio(dir.path(), "mpp99.svs", (1024, 768), b"|MPP = 99");
    assert_eq!(open(&p).unwrap().mpp().map(|m| m.0), Some(99.0));
    let e = plan_err(&p, &Tiling::default());
    assert!(
        matches!(e, SlideError::CoarseResolution { s0: 1, .. }),
        "{e:?}"
    );
    let m = e.to_string();
    for part in [
        "mpp99.svs",
        "99 µm/px",
        "--slide-mpp",
        "--mpp",
        "at least 49.5",
    ] {
        assert!(m.contains(part), "{part:?} missing from: {m}");
    }
}

#[test]
fn aperio_mpp_16_is_refused_before_tissue_detection() {
    let dir = tempfile::tempdir().unwrap();
    let p = aperio(dir.path(), "mpp16.svs", (12_288, 12_288), b"|MPP = 16");
    let t = Instant::now();
    let e = plan_err(&p, &Tiling::default());
    // s0 = round(224 * 0.5 / 16) = 7 level-0 pixels: a 32x upsampling
    assert!(
        matches!(e, SlideError::CoarseResolution { s0: 7, .. }),
        "{e:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // at the edge: 2x is accepted (s0 = 112 of 224 at 0.5 µm/px needs 1.0 µm/px)
    let ok = aperio(dir.path(), "mpp1.svs", (2048, 2048), b"|MPP = 1.0");
    let plan = TilePlan::new(
        &ok,
        &Tiling {
            min_tissue: 0.0,
            ..Tiling::default()
        },
    )
    .unwrap();
    assert_eq!(plan.tiles.len(), (2048 / 112) * (2048 / 112));
}

#[test]
fn slide_mpp_replaces_an_implausible_recorded_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let p = aperio(dir.path(), "mpp99.svs", (1024, 768), b"|MPP = 99");
    let opts = Tiling {
        min_tissue: 0.0,
        slide_mpp: Some(0.25),
        ..Tiling::default()
    };
    let plan = TilePlan::new(&p, &opts).unwrap();
    assert_eq!((plan.slide_mpp, plan.mpp_source), (0.25, MppSource::User));
    assert_eq!(plan.slide().mpp(), Some((0.25, MppSource::User)));
    // s0 = round(224 * 0.5 / 0.25) = 448: two whole tiles in 1024 x 768
    assert_eq!(plan.tiles.len(), 2);
    // a wrong --slide-mpp is refused the same way
    let bad = Tiling {
        slide_mpp: Some(50.0),
        ..opts
    };
    assert!(matches!(
        plan_err(&p, &bad),
        SlideError::CoarseResolution { .. }
    ));
}

#[test]
fn tissue_view_of_an_implausibly_large_slide_is_refused() {
    // 100k x 100k at 1 µm/px: the 16 µm/px view would be 6250 x 6250 = 39 Mpx.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.tif");
    let payloads = vec![jpeg_tile(&solid_tile(2048, [240, 240, 240], false), 50)];
    let mut tags = tiled((100_000, 100_000), 2048, (JPEG, YCBCR, 3), 0, |_| 0);
    tags.extend(resolution(1.0));
    write_tiff(&p, &payloads, &[Ifd { tags, next: None }]);
    let t = Instant::now();
    let e = plan_err(&p, &Tiling::default());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(e, SlideError::ViewTooLarge { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("huge.tif") && m.contains("--min-tissue 0"),
        "{m}"
    );
}

#[test]
fn downsampled_view_matches_a_naive_box_average() {
    // 100 x 70 of 16-px tiles of varying colour, viewed with factors that do and do not
    // divide the tile size.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.tif");
    let payloads: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            RgbImage::from_fn(16, 16, |x, y| {
                image::Rgb([(i * 40 + x * 3) as u8, (y * 9) as u8, (x * y) as u8])
            })
            .into_raw()
        })
        .collect();
    let tags = tiled((100, 70), 16, (1, RGB, 3), 0, |i| (i * 7) % 6);
    write_tiff(&p, &payloads, &[Ifd { tags, next: None }]);
    let s = open(&p).unwrap();
    let full = s.read_region(0, 0, 0, 100, 70).unwrap();
    for k in [1u32, 3, 5, 16, 40] {
        let (view, skipped) = s.downsampled_view(0, k).unwrap();
        assert_eq!(skipped, 0);
        let (ow, oh) = (100u32.div_ceil(k), 70u32.div_ceil(k));
        assert_eq!(view.dimensions(), (ow, oh));
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut sum, mut n) = ([0u32; 3], 0u32);
                for y in oy * k..((oy + 1) * k).min(70) {
                    for x in ox * k..((ox + 1) * k).min(100) {
                        let px = full.get_pixel(x, y).0;
                        (0..3).for_each(|c| sum[c] += u32::from(px[c]));
                        n += 1;
                    }
                }
                let want: Vec<u8> = sum.iter().map(|&v| ((v + n / 2) / n) as u8).collect();
                assert_eq!(
                    view.get_pixel(ox, oy).0.to_vec(),
                    want,
                    "k {k} at {ox},{oy}"
                );
            }
        }
    }
}

/// A 2 x 1-tile JPEG slide whose second tile's SOF is patched to `16384 x 16384`.
fn jpeg_sof_bomb(dir: &Path) -> PathBuf {
    let p = dir.join("sof.tif");
    let good = jpeg_tile(&solid_tile(256, [200, 100, 150], true), 80);
    let mut bomb = good.clone();
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x40, 0, 0x40, 0]);
    let mut tags = tiled((512, 256), 256, (JPEG, YCBCR, 3), 0, |i| i);
    tags.extend(resolution(0.25));
    write_tiff(&p, &[good, bomb], &[Ifd { tags, next: None }]);
    p
}

#[test]
fn jpeg_tile_whose_sof_disagrees_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&jpeg_sof_bomb(dir.path())).unwrap();
    s.read_region(0, 0, 0, 256, 256).unwrap();
    let t = Instant::now();
    match s.read_region(256, 0, 0, 256, 256) {
        Err(e @ SlideError::CorruptTile { col: 1, .. }) => {
            let m = e.to_string();
            assert!(m.contains("Dimensional mismatch"), "{m}");
            assert!(m.contains("expected 256x256, got 16384x16384"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // refused from the header: no 805 MB decode
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_failed_tile_is_not_decoded_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.tif");
    let good = jpeg_tile(&solid_tile(64, [200, 100, 150], true), 80);
    // The good tile's headers up to its frame header (SOF0), then a scan without any
    // Huffman table: the header check passes, the decoder fails.
    let sof = good.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let sof_end = sof + 2 + usize::from(u16::from_be_bytes([good[sof + 2], good[sof + 3]]));
    let mut bad = good[..sof_end].to_vec();
    bad.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD9]);
    let mut tags = tiled((128, 64), 64, (JPEG, YCBCR, 3), 0, |i| i);
    tags.extend(resolution(0.25));
    write_tiff(&p, &[good, bad], &[Ifd { tags, next: None }]);
    let s = open(&p).unwrap();
    let mut first = None;
    for _ in 0..5 {
        let e = s.read_region(64, 0, 0, 32, 32).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
        assert_eq!(first.get_or_insert(e.clone()), &e);
    }
    assert_eq!(s.cache_stats().decodes, 1, "the bad tile was decoded again");
    // the scan for tissue counts it once per pass, from the same cached failure
    assert_eq!(s.downsampled_view(0, 4).unwrap().1, 1);
    assert_eq!(
        s.cache_stats().decodes,
        2,
        "only the good tile is decoded again"
    );
}

#[test]
fn absurd_tile_sizes_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = vec![vec![0u8; 64]];
    for (tile, what) in [(65_536u32, "65536x65536"), (8192, "8192x8192"), (0, "0x0")] {
        let p = dir.path().join(format!("t{tile}.tif"));
        let mut tags = tiled((1000, 1000), 256, (8, RGB, 3), 0, |_| 0);
        for t in tags.iter_mut().filter(|t| t.0 == 322 || t.0 == 323) {
            t.1 = Val::Longs(vec![tile]);
        }
        write_tiff(&p, &payloads, &[Ifd { tags, next: None }]);
        let e = open(&p).err().expect("opened");
        let m = e.to_string();
        assert!(m.contains(&format!("t{tile}.tif")), "{m}");
        assert!(m.contains(what) && m.contains("re-tile"), "{m}");
    }
}

#[test]
fn lzw_stream_longer_than_its_tile_is_cut_at_the_tile() {
    // One 64 x 64 grey LZW tile whose stream would decode to 4 MB.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lzw.tif");
    let stream = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
        .encode(&vec![90u8; 4 << 20])
        .unwrap();
    let mut tags = tiled((64, 64), 64, (5, 1, 1), 0, |_| 0);
    tags.extend(resolution(0.25));
    write_tiff(&p, &[stream], &[Ifd { tags, next: None }]);
    let s = open(&p).unwrap();
    let r = s.read_region(0, 0, 0, 64, 64).unwrap();
    assert!(r.pixels().all(|px| px.0 == [90, 90, 90]));
}

#[test]
fn slide_tiles_wait_for_the_decode_budget() {
    let dir = tempfile::tempdir().unwrap();
    let p = jpeg_sof_bomb(dir.path());
    // Hold the whole budget: a tile decode on another thread must wait for it.
    let hold = crate::source::reserve_decode(crate::source::decode_budget_bytes());
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let s = open(&p).unwrap();
        tx.send(s.read_region(0, 0, 0, 64, 64).is_ok()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(400)).is_err(),
        "a tile was decoded while the budget was full"
    );
    drop(hold);
    assert!(rx.recv_timeout(Duration::from_secs(20)).unwrap());
    reader.join().unwrap();
}

#[test]
fn latin1_user_in_aperio_description_opens() {
    let dir = tempfile::tempdir().unwrap();
    // "Jörg" in Latin-1: 0xF6 is not UTF-8
    let p = aperio(
        dir.path(),
        "latin1.svs",
        (512, 512),
        b"|MPP = 0.499|User = J\xf6rg|Date = 01/02/03",
    );
    let s = open(&p).unwrap();
    assert_eq!(s.vendor(), "aperio");
    assert_eq!(s.mpp(), Some((0.499, MppSource::Aperio)));
    assert!(is_slide(&p));
    s.read_region(0, 0, 0, 64, 64).unwrap();
}

#[test]
fn an_ome_tiff_the_reader_refuses_stays_a_slide() {
    // A compression neither reader decodes (34712, JPEG 2000): the file is still a slide,
    // so the user gets the slide reader's message, not the image decoder's.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.ome.tif");
    let mut tags = tiled((64, 64), 64, (34712, RGB, 3), 0, |_| 0);
    tags.push((
        270,
        Val::Ascii(
            br#"<?xml version="1.0"?><OME><Image><Pixels SizeX="64"/></Image></OME>"#.to_vec(),
        ),
    ));
    write_tiff(&p, &[vec![0u8; 256]], &[Ifd { tags, next: None }]);
    let e = open(&p).err().expect("opened").to_string();
    assert!(e.contains("compression 34712"), "{e}");
    assert!(is_slide(&p));
    let err = crate::source::read_rgb(&p, &Default::default()).unwrap_err();
    assert!(err.starts_with(&e), "the slide reader's error first: {err}");
}

#[test]
fn read_region_as_tile_refuses_wrapping_regions() {
    let p = fixture("aperio_ycbcr.svs");
    for r in [
        (u64::MAX - 99, 0, 200, 200),
        (0, u64::MAX - 99, 200, 200),
        (0, 0, 0, 10),
        (1, 1, 1990, 10),
    ] {
        match tiles::read_region_as_tile(&p, r, 224, None) {
            Err(e @ SlideError::BadRegion { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains("region") && m.contains("aperio_ycbcr.svs"),
                    "{m}"
                );
                assert!(!m.contains("tiling options"), "{m}");
            }
            other => panic!("{r:?}: {:?}", other.map(|i| i.dimensions())),
        }
    }
    tiles::read_region_as_tile(&p, (0, 0, 1990, 10), 224, None).unwrap();
}

/// Open files of this process (Linux), or `None` elsewhere.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

#[test]
fn many_levels_share_one_file_handle() {
    // 2,000 reduced-resolution IFDs, all 16 x 16, sharing one stored tile: 2,000 levels.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("levels.tif");
    let ifds: Vec<Ifd> = (0..2000)
        .map(|i| Ifd {
            tags: tiled((16, 16), 16, (1, RGB, 3), u32::from(i > 0), |_| 0),
            next: None,
        })
        .collect();
    write_tiff(&p, &[vec![128u8; 16 * 16 * 3]], &ifds);
    assert!(std::fs::metadata(&p).unwrap().len() < 400 << 10);
    let before = open_fds();
    let s = open(&p).unwrap();
    assert_eq!(s.levels().len(), 2000);
    for level in (0..2000).step_by(7) {
        s.read_region(0, 0, level, 16, 16).unwrap();
    }
    if let (Some(a), Some(b)) = (before, open_fds()) {
        // one handle (other tests may open a few files meanwhile)
        assert!(b < a + 100, "{a} open files before, {b} after");
    }
}

/// Two tiled levels (64 and 32 px wide) whose chain ends as `next` says.
fn two_levels(path: &Path, next: [Option<usize>; 2]) {
    let payloads = vec![vec![200u8; 32 * 32 * 3]];
    let mut l0 = tiled((64, 64), 32, (1, RGB, 3), 0, |_| 0);
    l0.extend(resolution(0.5));
    let l1 = tiled((32, 32), 32, (1, RGB, 3), 1, |_| 0);
    write_tiff(
        path,
        &payloads,
        &[
            Ifd {
                tags: l0,
                next: next[0],
            },
            Ifd {
                tags: l1,
                next: next[1],
            },
        ],
    );
}

#[test]
fn ifd_self_loop_and_two_ifd_loop_are_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("self.tif", [None, Some(1)]),  // IFD 1 -> IFD 1
        ("two.tif", [None, Some(0)]),   // IFD 1 -> IFD 0
        ("first.tif", [Some(0), None]), // IFD 0 -> IFD 0: IFD 1 is unreachable
    ];
    for (name, next) in cases {
        let p = dir.path().join(name);
        two_levels(&p, next);
        let s = open(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = if name == "first.tif" { 1 } else { 2 };
        assert_eq!(s.levels().len(), want, "{name}");
        assert_eq!(s.warnings().len(), 1, "{name}: {:?}", s.warnings());
        assert!(
            s.warnings()[0].contains("loops") && s.warnings()[0].contains(name),
            "{:?}",
            s.warnings()
        );
        for level in 0..want {
            s.read_region(0, 0, level, 16, 16).unwrap();
        }
    }
}
