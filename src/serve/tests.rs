//! Unit tests of the server's pure parts: query-string parsing and its limits,
//! item ids, and the loopback Host check.

use super::params::{parse, split_weight, Term, MAX_TOP};
use super::ItemId;

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
    use super::api::is_loopback_host;
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
