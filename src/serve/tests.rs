//! Unit tests of the server's parts: query-string parsing and its limits, item
//! ids, the Host checks, the thumbnail cache's folder, and coarse Deep Zoom tiles.

use super::ids::ItemId;
use super::params::{parse, split_weight, Term, MAX_TOP};

#[test]
fn query_string_terms_weights_and_filters() {
    let id = ItemId::of("slides/a.png", None);
    let p = parse(
        &format!("q=tumor+tissue&add=2:lymphocytes&sub=necrosis&like=-0.5:{id}&top=20&under=./slides/&threshold=0.25"),
        10,
    )
    .unwrap();
    assert_eq!(
        p.terms,
        vec![
            Term::Text(1.0, "tumor tissue".into()),
            Term::Text(2.0, "lymphocytes".into()),
            Term::Text(-1.0, "necrosis".into()),
            Term::Item(-0.5, id),
        ]
    );
    assert_eq!(p.top, 20);
    assert_eq!(p.under.as_deref(), Some("slides"));
    assert_eq!(p.threshold, Some(0.25));
    assert_eq!(parse("q=a", 7).unwrap().top, 7);
    assert!(parse("q=a&by_slide=1", 7).unwrap().by_slide);
    assert!(!parse("q=a&by_slide=0", 7).unwrap().by_slide);
    assert!(parse("q=a&by_slide=2", 7).unwrap_err().contains("by_slide"));
    assert_eq!(
        parse("q=H%26E+image:+tumor", 10).unwrap().terms,
        vec![Term::Text(1.0, "H&E image: tumor".into())]
    );
}

#[test]
fn bad_query_strings_are_errors_that_name_the_parameter() {
    for (q, needle) in [
        ("q=a&top=0", "top"),
        (&format!("q=a&top={}", MAX_TOP + 1), "top"),
        ("q=a&top=ten", "top"),
        ("q=a&threshold=2", "threshold"),
        ("q=a&threshold=NaN", "threshold"),
        ("q=a&tpo=3", "unknown parameter"),
        ("q=a&q=b", "twice"),
        ("like=../../etc/passwd", "item id"),
        ("like=zzzzzzzzzzzzzzzz", "item id"),
        ("add=x:tumor", "malformed weight"),
        ("add=inf:tumor", "weight"),
        ("add=2:", "empty"),
        ("q=a%00b", "NUL"),
    ] {
        let e = parse(q, 10).unwrap_err();
        assert!(e.contains(needle), "{q}: {e}");
    }
    let long = format!("q={}", "a".repeat(5000));
    assert!(parse(&long, 10).unwrap_err().contains("longer"));
    let many: String = (0..40).map(|i| format!("add=t{i}&")).collect();
    assert!(parse(&many, 10).unwrap_err().contains("too many"));
    // Invalid UTF-8 and broken escapes are replaced, not a panic.
    assert!(parse("q=%ff%fe%&add=%zz", 10).is_ok());
}

#[test]
fn weights_split_as_plip_search_reads_them() {
    assert_eq!(
        split_weight("add", "2:lymphocytes").unwrap(),
        (2.0, "lymphocytes")
    );
    assert_eq!(
        split_weight("add", "H&E image: tumor").unwrap(),
        (1.0, "H&E image: tumor")
    );
    assert_eq!(
        split_weight("add", "1:Ki-67:high").unwrap(),
        (1.0, "Ki-67:high")
    );
}

#[test]
fn item_ids_round_trip_and_reject_anything_else() {
    let id = ItemId::of("a/b.png", None);
    assert_eq!(ItemId::parse(&id.to_string()), Some(id));
    assert_ne!(ItemId::of("a/c.png", None), id);
    // Every tile of a slide has its own id, stable for the same region.
    let r = |x| crate::index::Region {
        x,
        y: 0,
        w: 448,
        h: 448,
        level: 1,
        mpp: 0.5,
    };
    let (a, b) = (
        ItemId::of("s.svs", Some(&r(0))),
        ItemId::of("s.svs", Some(&r(448))),
    );
    assert_ne!(a, b);
    assert_eq!(a, ItemId::of("s.svs", Some(&r(0))));
    assert_ne!(a, ItemId::of("s.svs", None));
    assert_ne!(ItemId::of_slide("s.svs"), ItemId::of("s.svs", None));
    for s in [
        "",
        "..",
        "0123",
        "0123456789abcdefg",
        "../../../etc/pas",
        "0x23456789abcdef",
    ] {
        assert_eq!(ItemId::parse(s), None, "{s}");
    }
}

#[test]
fn only_loopback_host_names_pass_the_rebinding_guard() {
    use super::host::is_loopback_host;
    for ok in [
        "127.0.0.1:8080",
        "localhost",
        "LOCALHOST:1",
        "[::1]:80",
        "127.1.2.3",
        "app.localhost:9",
    ] {
        assert!(is_loopback_host(ok), "{ok}");
    }
    for no in [
        "evil.com",
        "evil.com:8080",
        "10.0.0.1:80",
        "127.0.0.1.evil.com",
        "localhost.evil.com",
        "",
    ] {
        assert!(!is_loopback_host(no), "{no}");
    }
}

#[test]
fn strict_host_parsing_refuses_suffixes_userinfo_and_bad_ports() {
    use super::host::{is_loopback_host, split_host};
    for no in [
        "[::1].evil.com",
        "[::1]evil.com",
        "[::1]:80.evil.com",
        "localhost:80@evil.com",
        "localhost@evil.com",
        "user@localhost",
        "localhost:",
        "localhost:99999",
        "localhost:8o",
        "127.0.0.1:80:80",
        "[127.0.0.1]",
        "[::1",
        "::1",
        "local host",
        "localhost/evil.com",
        "localhost..evil.localhost",
        ".localhost",
    ] {
        assert!(!is_loopback_host(no), "{no}");
    }
    assert_eq!(split_host("[::1]:8080"), Some(("::1", Some(8080))));
    assert_eq!(split_host("localhost"), Some(("localhost", None)));
    assert_eq!(split_host("evil.com:80"), Some(("evil.com", Some(80))));
    assert_eq!(split_host("evil.com:80@x"), None);
}

#[test]
fn a_second_host_header_and_foreign_absolute_targets_are_refused() {
    use super::host::check as check_host;
    use axum::http::{header::HOST, HeaderMap, HeaderValue, Uri};
    let headers = |hosts: &[&str]| {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).unwrap());
        }
        h
    };
    let uri = |s: &str| s.parse::<Uri>().unwrap();
    let status =
        |h: &HeaderMap, u: &Uri, loopback| check_host(h, u, loopback).map(|r| r.status().as_u16());
    // The ordinary request, and an absolute target that agrees with Host.
    assert_eq!(
        status(&headers(&["127.0.0.1:8080"]), &uri("/api/info"), true),
        None
    );
    assert_eq!(
        status(
            &headers(&["127.0.0.1:8080"]),
            &uri("http://127.0.0.1:8080/api/info"),
            true
        ),
        None
    );
    assert_eq!(status(&headers(&[]), &uri("http://localhost/"), true), None);
    // A second Host header, loopback or not, even when both are loopback.
    for loopback in [true, false] {
        assert_eq!(
            status(
                &headers(&["127.0.0.1:8080", "127.0.0.1:8080"]),
                &uri("/"),
                loopback
            ),
            Some(400)
        );
        assert_eq!(
            status(
                &headers(&["127.0.0.1:8080", "evil.com"]),
                &uri("/"),
                loopback
            ),
            Some(400)
        );
        // An absolute target naming another host than Host.
        assert_eq!(
            status(
                &headers(&["127.0.0.1:8080"]),
                &uri("http://evil.com/api/info"),
                loopback
            ),
            Some(400)
        );
    }
    // An absolute target naming a foreign host, without Host, on loopback.
    assert_eq!(
        status(&headers(&[]), &uri("http://evil.com/api/info"), true),
        Some(403)
    );
    assert_eq!(
        status(
            &headers(&[]),
            &uri("http://localhost:80@evil.com/api/info"),
            true
        ),
        Some(403)
    );
    for bad in ["[::1].evil.com", "localhost:80@evil.com"] {
        assert_eq!(
            status(&headers(&[bad]), &uri("/"), true),
            Some(403),
            "{bad}"
        );
    }
}

#[test]
fn query_terms_and_prompts_are_capped_and_the_400_says_the_cap() {
    use super::params::{MAX_PROMPTS, MAX_TERMS};
    let id = ItemId::of("a.png", None);
    let terms: String = (0..=MAX_TERMS).map(|i| format!("add=t{i}&")).collect();
    let e = parse(&terms, 10).unwrap_err();
    assert!(e.contains(&format!("at most {MAX_TERMS} terms")), "{e}");
    // 1,024 text-model runs in one GET (32 terms times 32 templates): refused.
    let templates: String = (0..MAX_TERMS)
        .map(|i| format!("template=t{i}+{{}}&"))
        .collect();
    let all: String = (0..MAX_TERMS).map(|i| format!("add=t{i}&")).collect();
    let e = parse(&format!("{all}{templates}"), 10).unwrap_err();
    assert!(
        e.contains(&format!("at most {MAX_PROMPTS} per request")),
        "{e}"
    );
    assert!(e.contains("1024 text-model runs"), "{e}");
    // Just at the cap passes; item terms cost no text-model run.
    let texts = MAX_PROMPTS / MAX_TERMS;
    let at_cap: String = (0..texts).map(|i| format!("add=t{i}&")).collect();
    let items: String = (0..MAX_TERMS - texts)
        .map(|_| format!("like={id}&"))
        .collect();
    let p = parse(&format!("{at_cap}{items}{templates}"), 10).unwrap();
    assert_eq!(p.terms.len(), MAX_TERMS);
    let over = format!("{at_cap}add=one+more&{templates}");
    assert!(parse(&over, 10).unwrap_err().contains("too many prompts"));
}

/// A folder with `names` (each holding its own name as bytes).
fn folder_with(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in names {
        std::fs::write(dir.path().join(n), n.as_bytes()).unwrap();
    }
    dir
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn thumb_cache_refuses_a_folder_of_user_jpegs_and_leaves_it_untouched() {
    use super::thumbs::{claim_dir, Thumbs};
    let dir = folder_with(&["holiday.jpg", "scan 01.jpg", "0123456789abcdef.png"]);
    let before = names_in(dir.path());
    let e = claim_dir(dir.path()).unwrap_err();
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    assert!(
        e.contains("--thumb-cache") && e.contains("--no-thumb-cache"),
        "{e}"
    );
    // Even if a caller went on regardless, with a zero budget nothing goes.
    let _ = Thumbs::new(
        1 << 20,
        Some((dir.path().to_path_buf(), 0)),
        crate::preprocess::DecodeLimits::default(),
    );
    assert_eq!(names_in(dir.path()), before);
    for n in &before {
        assert_eq!(std::fs::read(dir.path().join(n)).unwrap(), n.as_bytes());
    }
}

#[test]
fn thumb_cache_with_zero_budget_deletes_only_its_own_thumbnails() {
    use super::thumbs::{claim_dir, Thumbs, MARKER};
    // An older cache (only thumbnail names) is adopted and marked.
    let dir = folder_with(&["00000000000000aa.jpg", "00000000000000bb.jpg"]);
    claim_dir(dir.path()).unwrap();
    assert!(dir.path().join(MARKER).is_file());
    // A user's files dropped into the marked folder later are never deleted.
    for n in [
        "photo.jpg",
        "0123456789ABCDEF.jpg",
        "00000000000000cc.jpeg",
        "notes.txt",
    ] {
        std::fs::write(dir.path().join(n), n.as_bytes()).unwrap();
    }
    let _ = Thumbs::new(
        1 << 20,
        Some((dir.path().to_path_buf(), 0)),
        crate::preprocess::DecodeLimits::default(),
    );
    assert_eq!(
        names_in(dir.path()),
        [
            MARKER,
            "00000000000000cc.jpeg",
            "0123456789ABCDEF.jpg",
            "notes.txt",
            "photo.jpg"
        ]
    );
}

/// Mean absolute difference of two same-sized images.
fn mean_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn coarse_deep_zoom_tiles_of_a_single_level_slide_are_its_box_average() {
    use super::dzi::{levels, render, Budget, OverviewSlot, TileError};
    use crate::source::slide::{OpenOptions, Slide};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/slides/single.tiff");
    let slide = Slide::open(&path, &OpenOptions::default()).unwrap();
    assert_eq!(slide.levels().len(), 1, "the fixture has one level");
    let (w, h) = (slide.levels()[0].width, slide.levels()[0].height);
    let top = levels(w, h).len() - 1;
    // Small budgets, so this small slide takes the paths a huge one would: no
    // direct reads, an overview of a quarter of its size.
    let budget = Budget {
        direct: 1,
        overview_side: w.max(h).div_ceil(4),
        max_read: u64::MAX,
    };
    let rendered = |dz: usize, col: u64, row: u64, slot: &OverviewSlot| {
        render(&slide, slot, &budget, dz, col, row)
            .unwrap()
            .unwrap()
    };
    let boxed = |k: u32, x: u32, y: u32, (tw, th): (u32, u32)| {
        let (view, _) = slide.downsampled_view(0, k).unwrap();
        image::imageops::crop_imm(&view, x, y, tw, th).to_image()
    };
    // What the server sends differs from the tile by JPEG's noise, no more.
    let jpeg = |img: &image::RgbImage| {
        let bytes = super::thumbs::encode_jpeg(img).unwrap();
        image::load_from_memory(&bytes).unwrap().to_rgb8()
    };
    // Downsample 4, from the overview: the whole slide in one tile.
    let slot = OverviewSlot::new();
    let t = rendered(top - 2, 0, 0, &slot);
    let want = boxed(4, 0, 0, t.dimensions());
    assert_eq!(
        t.dimensions(),
        (255, 225),
        "tile 0_0: 254 px and its right overlap"
    );
    let d = mean_diff(&t, &want);
    assert!(d < 0.5, "overview tile differs by {d}");
    assert!(
        slot.get().is_some_and(|o| o.is_some()),
        "the overview was made and kept"
    );
    let noise = mean_diff(&jpeg(&want), &want);
    let d = mean_diff(&jpeg(&t), &want);
    assert!(
        d <= noise + 0.5,
        "served tile differs by {d}, JPEG noise {noise}"
    );
    // Downsample 2, finer than the overview: box-averaged piece by piece (an
    // inner tile, with its overlap).
    let t = rendered(top - 1, 1, 1, &OverviewSlot::new());
    let d = mean_diff(&t, &boxed(2, 253, 253, t.dimensions()));
    assert!(d < 0.5, "box-read tile differs by {d}");
    // Downsample 8: the overview box-averaged again (rounded twice).
    let t = rendered(top - 3, 0, 0, &slot);
    let d = mean_diff(&t, &boxed(8, 0, 0, t.dimensions()));
    assert!(d < 1.0, "coarser tile differs by {d}");
    // Over the read budget (and no overview within it): refused, not read.
    let tight = Budget {
        max_read: 1000,
        ..budget
    };
    match render(&slide, &OverviewSlot::new(), &tight, top - 2, 0, 0) {
        Err(TileError::TooLarge { pixels, limit }) => {
            // Tile 0_0 of downsample 4: 255 x 225 Deep Zoom pixels, 1020 x 900 stored.
            assert_eq!((pixels, limit), (1020 * 900, 1000));
        }
        other => panic!(
            "not refused: {:?}",
            other.map(|o| o.map(|i| i.dimensions()))
        ),
    }
}

#[test]
fn like_parameters_are_checked_before_any_work() {
    use super::like::{parse, MAX_LIKE};
    use crate::query::slide_match::SlideScore;
    let p = parse("").unwrap();
    assert_eq!((p.top, p.score, p.include_self), (10, None, false));
    let p = parse("top=5&score=bag&include_self=1&_=123").unwrap();
    assert_eq!(
        (p.top, p.score, p.include_self),
        (5, Some(SlideScore::Bag), true)
    );
    assert_eq!(parse(&format!("top={MAX_LIKE}")).unwrap().top, MAX_LIKE);
    assert_eq!(
        parse("region=1,2,30,40").unwrap().region,
        Some([1, 2, 30, 40])
    );
    for (q, needle) in [
        ("top=0", "top"),
        (&format!("top={}", MAX_LIKE + 1), "top"),
        ("score=median", "mean or bag"),
        ("include_self=2", "include_self"),
        ("region=1,2,3", "region"),
        ("region=1,2,0,4", "region"),
        ("region=-1,2,3,4", "region"),
        ("region=a,b,c,d", "region"),
        ("region=18446744073709551615,0,9,9", "region"),
        ("slide=../../etc/passwd", "unknown parameter"),
    ] {
        let e = parse(q).unwrap_err();
        assert!(e.contains(needle), "{q}: {e}");
    }
}
