//! `plip serve`'s "More slides like this" (`/api/slide/{slide_id}/like`, issue 32):
//! the same slides, scores and matched tiles as `plip search --image SLIDE --json`,
//! plus what the viewer needs to open each; bad parameters and unknown slides are
//! JSON errors.

use serde_json::Value;

use crate::common::TestEnv;
use crate::serve::{assert_json_error, Server};
use crate::slide_query::indexed_slides;

/// The slide id of the indexed slide stored as `path`, from a search hit.
fn slide_id(server: &Server, path: &str) -> String {
    let api = server.json("/api/search?q=tissue&top=1000");
    api["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["path"] == path)
        .and_then(|h| h["slide_id"].as_str())
        .unwrap_or_else(|| panic!("no tile of {path}: {api}"))
        .to_string()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn more_slides_like_this_answers_what_plip_search_image_json_prints() {
    let env = TestEnv::new();
    indexed_slides(&env);
    let server = Server::start(&env, &[]);
    let sid = slide_id(&server, "s/aperio_rgb.svs");
    for (score, flags) in [
        ("", vec![]),
        ("&score=bag", vec!["--slide-score", "bag"]),
        (
            "&score=mean&include_self=1",
            vec!["--slide-score", "mean", "--include-self"],
        ),
    ] {
        let api = server.json(&format!("/api/slide/{sid}/like?top=3{score}"));
        let mut args = vec![
            "search",
            "--image",
            "s/aperio_rgb.svs",
            "--json",
            "--top",
            "3",
        ];
        args.extend(&flags);
        let cli = json_lines(&env.ok(&args));
        let slides = api["slides"].as_array().unwrap();
        assert_eq!(slides.len(), cli.len(), "{api}");
        assert!(!slides.is_empty());
        for (a, c) in slides.iter().zip(&cli) {
            for k in ["rank", "score", "path", "tiles", "matches"] {
                assert_eq!(a[k], c[k], "{score} {k}: {a} vs {c}");
            }
            let found = a["slide_id"].as_str().unwrap();
            assert_eq!(a["dzi"], format!("/api/slide/{found}.dzi"));
            assert_eq!(a["thumb"], format!("/api/slide/{found}/thumb"));
            assert!(a["slide_width"].as_u64().unwrap() > 0);
            assert!(!a["matches"].as_array().unwrap().is_empty());
        }
        assert_eq!(api["query"]["path"], "s/aperio_rgb.svs");
        assert_eq!(api["query"]["slide_id"], sid);
        assert!(api["query"]["tiles"].as_u64().unwrap() > 0);
        let want = if score.contains("bag") { "bag" } else { "mean" };
        assert_eq!(api["score"], want);
        let has_self = slides.iter().any(|s| s["path"] == "s/aperio_rgb.svs");
        assert_eq!(has_self, score.contains("include_self"), "{api}");
    }
    // Without top: 10 at most, so every other slide here.
    let all = server.json(&format!("/api/slide/{sid}/like"));
    assert_eq!(all["slides"].as_array().unwrap().len(), 4);
    assert_eq!(all["excluded"], 1);
}

#[test]
fn a_region_of_the_slide_is_the_query_as_plip_search_image_region_makes_it() {
    let env = TestEnv::new();
    indexed_slides(&env);
    let server = Server::start(&env, &[]);
    let sid = slide_id(&server, "s/aperio_rgb.svs");
    let api = server.json(&format!("/api/slide/{sid}/like?region=0,0,700,700"));
    assert_eq!(
        api["score"], "bag",
        "a region defaults to bag, as in the CLI"
    );
    let cli = json_lines(&env.ok(&[
        "search",
        "--image",
        "s/aperio_rgb.svs@0,0,700,700",
        "--slide-score",
        "bag",
        "--json",
    ]));
    let slides = api["slides"].as_array().unwrap();
    assert_eq!(slides.len(), cli.len());
    for (a, c) in slides.iter().zip(&cli) {
        for k in ["rank", "score", "path", "tiles", "matches"] {
            assert_eq!(a[k], c[k], "{k}: {a} vs {c}");
        }
    }
    // A region no stored tile's centre lies in would have to be embedded: refused.
    let none = server.get(&format!("/api/slide/{sid}/like?region=0,0,1,1"));
    assert_json_error(&none, 422, "not embedded here");
}

#[test]
fn more_slides_like_this_refuses_bad_parameters_and_unknown_slides() {
    let env = TestEnv::new();
    indexed_slides(&env);
    let server = Server::start(&env, &[]);
    let sid = slide_id(&server, "s/generic.tiff");
    for (q, needle) in [
        ("top=0", "top"),
        ("top=101", "top"),
        ("top=ten", "top"),
        ("score=max", "mean or bag"),
        ("include_self=yes", "include_self"),
        ("q=tumor", "unknown parameter"),
    ] {
        assert_json_error(
            &server.get(&format!("/api/slide/{sid}/like?{q}")),
            400,
            needle,
        );
    }
    assert_json_error(
        &server.get("/api/slide/0123456789abcdef/like"),
        404,
        "no slide",
    );
    assert_json_error(&server.get("/api/slide/..%2F..%2Fetc/like"), 404, "slide");
    // The server still answers.
    assert_eq!(
        server.get(&format!("/api/slide/{sid}/like?top=1")).status,
        200
    );
}

#[cfg(unix)]
#[test]
fn more_slides_like_this_works_when_the_index_is_reached_through_a_symlink() {
    let env = TestEnv::new();
    indexed_slides(&env);
    std::os::unix::fs::symlink(env.path(), env.path().join("link")).unwrap();
    let server = Server::start(&env, &["--index", "link/.plip"]);
    let sid = slide_id(&server, "s/generic.tiff");
    let r = server.get(&format!("/api/slide/{sid}/like?top=2"));
    assert_eq!(r.status, 200, "{}", r.text());
}
