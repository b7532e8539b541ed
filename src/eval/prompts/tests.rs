use super::*;

#[test]
fn plip_template_is_the_one_plip_code_uses() {
    assert_eq!(
        template_set("plip").unwrap(),
        vec!["An H&E image patch of {}."]
    );
    assert_eq!(
        template_set("plip-short").unwrap(),
        vec!["An H&E image of {}."]
    );
    let p = template_set("pathology").unwrap();
    assert_eq!(p.len(), 20);
    assert!(p.iter().all(|t| t.contains("{}")));
    let mut dedup = p.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 20, "no duplicate templates");
}

#[test]
fn templates_resolve_sets_then_explicit_and_default_to_plip() {
    assert_eq!(resolve_templates(&[], &[]).unwrap(), vec![PLIP_TEMPLATE]);
    let t = resolve_templates(&["plip".into()], &["a {} slide".into()]).unwrap();
    assert_eq!(t, vec![PLIP_TEMPLATE.to_string(), "a {} slide".into()]);
    let err = resolve_templates(&["conch".into()], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("conch") && err.contains("pathology"), "{err}");
}

#[test]
fn labels_csv_with_synonyms() {
    let t = parse_labels(
        "class,names\nTUM,tumor|colorectal adenocarcinoma epithelium\n\"STR\",\"stroma, cancer-associated\"\n",
        "l.csv",
    )
    .unwrap();
    assert_eq!(
        t["TUM"],
        vec!["tumor", "colorectal adenocarcinoma epithelium"]
    );
    assert_eq!(t["STR"], vec!["stroma, cancer-associated"]);
    let folders = vec!["STR".to_string(), "TUM".to_string(), "X".to_string()];
    let (names, warnings) = class_names(&folders, Some(&t));
    assert_eq!(names[2], vec!["X"]);
    assert!(warnings.is_empty());
    let p = prompts(&names[1], &["a {}.".into(), "b {}".into()]);
    assert_eq!(
        p,
        vec![
            "a tumor.",
            "b tumor",
            "a colorectal adenocarcinoma epithelium.",
            "b colorectal adenocarcinoma epithelium"
        ]
    );
}

#[test]
fn bad_labels_rows_are_named() {
    for (text, want) in [
        (
            "TUM,tumor\nTUM,tumour\n",
            "row 2: class `TUM` is listed twice",
        ),
        ("TUM,tumor||x\n", "row 1: empty name"),
        ("TUM\n", "row 1: expected 2 columns"),
        ("a,b,c\n", "row 1: expected 2 columns"),
        (",tumor\n", "row 1: empty class"),
        ("class,name\n", "no `class,name` rows"),
    ] {
        let err = format!("{:#}", parse_labels(text, "l.csv").unwrap_err());
        assert!(
            err.contains("l.csv") && err.contains(want),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn kather_table_is_built_in_and_unused_classes_warn() {
    let t = load_labels(Path::new("kather")).unwrap();
    assert_eq!(t.len(), 9);
    assert_eq!(t["STR"], vec!["cancer-associated stroma"]);
    assert_eq!(t["TUM"], vec!["colorectal adenocarcinoma epithelium"]);
    let (names, warnings) = class_names(&["ADI".into(), "TUM".into()], Some(&t));
    assert_eq!(
        names,
        vec![
            vec!["adipose tissue"],
            vec!["colorectal adenocarcinoma epithelium"]
        ]
    );
    assert_eq!(warnings.len(), 7);
}
