//! The report pages are well-formed, self-contained and escape every name.

use super::*;
use crate::eval::{classification_report, retrieval};

fn report() -> ClassificationReport {
    let names = vec![
        "<script>alert(1)</script>".to_string(),
        "a & b".to_string(),
        "\"quoted\" 'name'".to_string(),
    ];
    classification_report(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2], &names).unwrap()
}

/// Tags opened and closed in order (void elements aside), so a name cannot break the
/// structure.
fn assert_balanced(page: &str) {
    let void = ["meta", "img", "br", "!DOCTYPE"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find('<') {
        let tag_end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..tag_end];
        rest = &rest[tag_end + 1..];
        let self_closing = tag.ends_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        if tag.starts_with('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.as_str()),
                "closing {name}"
            );
        } else if !self_closing && !void.contains(&name.as_str()) {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn assert_self_contained(page: &str) {
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    assert!(!page.contains("<script"), "no scripts");
    assert!(
        !page.contains("https://") && !page.contains("url("),
        "no external reference"
    );
    // the only http:// is the SVG namespace name, which loads nothing
    assert_eq!(
        page.matches("http://").count(),
        page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
}

#[test]
fn classification_page_has_heatmap_bars_and_escaped_names() {
    let r = report();
    let mistakes = vec![Mistake {
        path: PathBuf::from("no/such/<img src=x onerror=alert(1)>.png"),
        truth: 0,
        predicted: 1,
        confidence: 0.9,
    }];
    let meta = serde_json::json!({"model": "m<odel>", "templates": ["An H&E image of {}."]});
    let mut page = Vec::new();
    write_classification(&mut page, "t", &r, &meta, "<p>extra</p>", &mistakes).unwrap();
    let page = String::from_utf8(page).unwrap();
    assert_self_contained(&page);
    assert_balanced(&page);
    assert!(!page.contains("<script>alert"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("a &amp; b"));
    assert!(page.contains("&quot;quoted&quot; &#39;name&#39;"));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;.png"));
    assert!(page.contains("m&lt;odel&gt;") && page.contains("An H&amp;E image of {}."));
    // a 3x3 heatmap: 9 cells, each with a tooltip naming true and predicted class
    assert_eq!(page.matches("→ predicted").count(), 9);
    assert_eq!(page.matches("aria-label=\"confusion matrix\"").count(), 1);
    // per-class bars: 3 classes × precision, recall, F1
    assert_eq!(page.matches("</title></rect>").count(), 9 + 9);
    // the unreadable mistake is shown as a placeholder, with its labels
    assert!(page.contains("unreadable") && page.contains("predicted: a &amp; b (0.90)"));
    assert!(page.contains("0.6667"), "accuracy 4/6");
}

#[test]
fn retrieval_page_has_curve_and_worst_queries() {
    let images = vec![vec![1.0f32, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
    let captions = vec![vec![0.0f32, 1.0], vec![1.0, 0.0], vec![0.6, 0.8]];
    let groups = [1u64, 2, 3];
    let r = retrieval(&images, &captions, &groups, &groups, &[1, 5]).unwrap();
    let paths: Vec<PathBuf> = ["x/<a>.png", "x/b.png", "x/c.png"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let texts = ["cap <zero>", "cap one", "cap two"];
    let items = RetrievalItems {
        images: &images,
        captions: &captions,
        image_groups: &groups,
        caption_groups: &groups,
        image_paths: &paths,
        caption_texts: &texts,
    };
    let mut page = Vec::new();
    write_retrieval_report(&mut page, &r, &serde_json::json!({}), &items).unwrap();
    let page = String::from_utf8(page).unwrap();
    assert_self_contained(&page);
    assert_balanced(&page);
    assert_eq!(
        page.matches("<polyline").count(),
        2,
        "one curve per direction"
    );
    assert!(page.contains("cap &lt;zero&gt;") && page.contains("x/&lt;a&gt;.png"));
    assert!(!page.contains("<zero>"));
    // caption 0 ranks its image 2nd or worse: it is listed with a correct hit marked
    assert!(r.text_to_image.ranks[0] > 1);
    assert!(page.contains("Worst text → image queries") && page.contains(" ✓"));
}
