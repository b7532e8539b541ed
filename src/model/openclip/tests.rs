//! Unit tests: config mapping and refusals, cleaning. Parity with open_clip itself
//! is in `tests/it/open_clip.rs`.

use super::clean::{clean_lower, html_unescape};
use super::*;

const B32: &str = r#"{"model_cfg": {"embed_dim": 512, "quick_gelu": true,
  "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}},
  "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 0.5]}}"#;

fn with(path: &[&str], value: serde_json::Value) -> String {
    let mut v: Value = serde_json::from_str(B32).unwrap();
    let mut slot = &mut v;
    for p in path {
        slot = slot
            .as_object_mut()
            .unwrap()
            .entry(p.to_string())
            .or_insert(Value::Null);
    }
    *slot = value;
    v.to_string()
}

fn refusal(text: &str) -> String {
    format!("{:#}", parse_config(text).unwrap_err())
}

#[test]
fn vit_b_32_maps_onto_clip_towers() {
    let (c, p) = parse_config(B32).unwrap();
    assert_eq!(c.projection_dim, 512);
    assert_eq!(c.vision.tower.num_attention_heads, 12);
    assert_eq!(c.vision.tower.intermediate_size, 3072);
    assert_eq!(c.vision.patch_size, 32);
    assert_eq!(c.text.tower.num_attention_heads, 8);
    assert_eq!(c.text.tower.intermediate_size, 2048);
    assert_eq!(c.text.tower.hidden_act, Activation::QuickGelu);
    assert_eq!(c.text.eos_token_id, 49407);
    assert_eq!(
        (p.shortest_edge, p.crop_height, p.crop_width),
        (224, 224, 224)
    );
    assert_eq!(p.image_mean, [0.5; 3]);
    assert_eq!(p.image_std, [0.25, 0.5, 0.5]);
    assert_eq!(p.pipeline, PixelPipeline::OpenClip);
    let (c, _) = parse_config(&with(&["model_cfg", "quick_gelu"], false.into())).unwrap();
    assert_eq!(c.vision.tower.hidden_act, Activation::Gelu);
}

#[test]
fn unsupported_parts_are_named() {
    use serde_json::json;
    let cases = [
        (vec!["model_cfg", "vision_cfg", "timm_model_name"], json!("vit_base_patch16_224"),
         "timm vision tower `vit_base_patch16_224` is not supported"),
        (vec!["model_cfg", "text_cfg", "hf_model_name"],
         json!("microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract"),
         "Hugging Face text tower `microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract` is not supported"),
        (vec!["model_cfg", "vision_cfg", "layers"], json!([3, 4, 6, 3]), "ModifiedResNet vision tower"),
        (vec!["model_cfg", "vision_cfg", "attentional_pool"], json!(true), "`attentional_pool: true`"),
        (vec!["model_cfg", "vision_cfg", "pool_type"], json!("avg"), "vision tower setting `pool_type: \"avg\"`"),
        (vec!["model_cfg", "text_cfg", "pool_type"], json!("last"), "text tower setting `pool_type: \"last\"`"),
        (vec!["model_cfg", "text_cfg", "ls_init_value"], json!(1e-5), "`ls_init_value"),
        (vec!["model_cfg", "multimodal_cfg"], json!({"width": 512}), "CoCa"),
        (vec!["preprocess_cfg", "resize_mode"], json!("squash"), "resize_mode `squash`"),
        (vec!["preprocess_cfg", "interpolation"], json!("bilinear"), "interpolation `bilinear`"),
        (vec!["model_cfg", "text_cfg", "tokenizer_kwargs"], json!({"clean": "canonicalize"}), "tokenizer_kwargs"),
    ];
    for (path, value, want) in cases {
        let err = refusal(&with(&path, value));
        assert!(err.contains(want), "{path:?}: {err}");
    }
}

#[test]
fn html_unescape_follows_python() {
    // Expected values from CPython 3.11's html.unescape.
    for (input, want) in [
        ("&amp;amp;", "&amp;"),
        ("&eacute &eacute; &eacutex", "é é éx"),
        ("&#233;&#xe9;&#XE9", "ééé"),
        (
            "&#0;&#128;&#x110000;&#xd800;&#1;",
            "\u{fffd}€\u{fffd}\u{fffd}",
        ),
        ("&notit; &notin; &nosuch;", "¬it; ∉ &nosuch;"),
        ("&copy2024", "©2024"),
        ("a & b", "a & b"),
    ] {
        assert_eq!(html_unescape(input), want, "{input:?}");
    }
}

#[test]
fn cleaning_follows_open_clip() {
    for (input, want) in [
        ("  Tumour  TISSUE\t\n", "tumour tissue"),
        ("\u{201c}curly\u{201d} \u{2018}q\u{2019}", "\"curly\" 'q'"),
        ("\u{fb01}ne \u{ff34}\u{ff35}\u{3000}x", "fine tu x"),
        ("e\u{301}", "\u{e9}"),
        ("C1 \u{85} \u{93}q\u{94}", "c1 … \"q\""),
        ("caf&eacute; &lt;b&gt;", "café <b>"),
        ("ctrl\u{7}x\u{1b}[31mred", "ctrlxred"),
        // ftfy removes U+001C before Python's split() could see it as a space.
        ("a\u{1c}b", "ab"),
    ] {
        assert_eq!(clean_lower(input), want, "{input:?}");
    }
}
