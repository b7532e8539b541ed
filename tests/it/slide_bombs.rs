//! Hostile slide input end to end (issue 27): a region query whose bounds overflow, and
//! `plip tiles` on a slide whose stored tiles are all undecodable.

use std::fs;

use crate::common::{fixtures, TestEnv};

/// `s/a.svs`: the Aperio YCbCr fixture.
fn one_slide(env: &TestEnv) {
    fs::create_dir_all(env.path().join("s")).unwrap();
    fs::copy(
        fixtures().join("slides/aperio_ycbcr.svs"),
        env.path().join("s/a.svs"),
    )
    .unwrap();
}

#[test]
fn a_region_query_whose_bounds_overflow_is_refused() {
    let env = TestEnv::new();
    one_slide(&env);
    // 18446744073709551516 + 200 wraps around to 100
    for q in [
        "s/a.svs@18446744073709551516,0,200,200",
        "s/a.svs@0,18446744073709551516,200,200",
    ] {
        let out = env.run(&["search", "--image", q]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{q} was accepted: {err}");
        assert!(err.contains("region"), "{err}");
        assert!(!err.contains("tiling options"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn tiles_warns_when_stored_tiles_cannot_be_decoded() {
    let env = TestEnv::new();
    fs::create_dir_all(env.path().join("s")).unwrap();
    // Every JPEG start-of-image marker (tiles, tables) destroyed: no stored tile decodes.
    let mut bytes = fs::read(fixtures().join("slides/aperio_ycbcr.svs")).unwrap();
    let mut broken = 0;
    for i in 0..bytes.len() - 2 {
        if bytes[i..i + 3] == [0xFF, 0xD8, 0xFF] {
            bytes[i..i + 2].copy_from_slice(&[0, 0]);
            broken += 1;
        }
    }
    assert!(broken > 10, "{broken}");
    fs::write(env.path().join("s/bad.svs"), &bytes).unwrap();
    let out = env.run(&["tiles", "s/bad.svs", "-o", "check.png", "--tile", "64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("0 of "), "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("could not be decoded"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(warning.contains("bad.svs"), "{warning}");
}
