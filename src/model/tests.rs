//! Unit tests.

use super::vision::patch_rows;
use super::weights::{expected_tensors, TOKEN_EMBEDDING};
use super::*;
use crate::backend::cpu::tests::max_abs_diff;

#[test]
fn legacy_config_dict_overrides_config() {
    let cfg = ClipConfig::from_json_str(
        r#"{"projection_dim": 512,
            "text_config": {"hidden_size": 64, "unknown_key": [1,2]},
            "text_config_dict": {"hidden_size": 512, "num_attention_heads": 8},
            "vision_config_dict": {"patch_size": 32, "hidden_size": 768},
            "logit_scale_init_value": 2.6592, "torch_dtype": "float32"}"#,
    )
    .unwrap();
    assert_eq!(cfg.text.tower.hidden_size, 512);
    assert_eq!(cfg.vision.tower.hidden_size, 768);
    assert_eq!(cfg.vision.patch_size, 32);
    assert_eq!(cfg.text.vocab_size, 49408);
    assert_eq!(cfg.text.tower.hidden_act, Activation::QuickGelu);
    assert_eq!(cfg.projection_dim, 512);
}

#[test]
fn current_layout_parses_with_defaults() {
    let cfg = ClipConfig::from_json_str(
        r#"{"text_config": {"hidden_size": 16, "num_attention_heads": 2,
             "intermediate_size": 32, "num_hidden_layers": 1, "hidden_act": "gelu"},
            "vision_config": {"hidden_size": 32, "num_attention_heads": 4,
             "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6},
            "projection_dim": 8}"#,
    )
    .unwrap();
    assert_eq!(cfg.text.tower.hidden_act, Activation::Gelu);
    assert_eq!(cfg.text.tower.num_hidden_layers, 1);
    assert_eq!(cfg.vision.patch_size, 16);
    assert_eq!(cfg.vision.tower.layer_norm_eps, 1e-6);
    assert_eq!(cfg.vision.tower.num_hidden_layers, 12);
    assert_eq!(cfg.projection_dim, 8);
}

#[test]
fn bad_configs_are_rejected_with_a_reason() {
    let err = ClipConfig::from_json_str(r#"{"text_config": {"hidden_size": "big"}}"#).unwrap_err();
    assert!(
        format!("{err:#}").contains("text_config.hidden_size"),
        "{err:#}"
    );
    let err = ClipConfig::from_json_str(r#"{"text_config": {"hidden_act": "swish"}}"#).unwrap_err();
    assert!(format!("{err:#}").contains("swish"), "{err:#}");
    let err = ClipConfig::from_json_str(
        r#"{"text_config": {"hidden_size": 10, "num_attention_heads": 3}}"#,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("divisible"), "{err:#}");
    assert!(ClipConfig::from_json_str("[1]").is_err());
}

#[test]
fn token_rows_read_what_the_loaded_table_holds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/model");
    let config = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    let (vocab, dim) = (config.text.vocab_size, config.text.tower.hidden_size);
    let weights = WeightsFile::Safetensors(dir.join("model.safetensors"));
    let rows = TokenRows::open(&weights, TOKEN_EMBEDDING, vocab, dim).unwrap();
    let table = weights
        .var_builder(&Device::Cpu)
        .unwrap()
        .get((vocab, dim), TOKEN_EMBEDDING)
        .unwrap();
    let ids = [0, 1, vocab as u32 - 1, 7, 7];
    let want = table
        .index_select(&Tensor::new(&ids[..], &Device::Cpu).unwrap(), 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(rows.gather(&ids).unwrap(), want);
    let err = rows.gather(&[vocab as u32]).unwrap_err();
    assert!(
        format!("{err:#}").contains("outside the vocabulary"),
        "{err:#}"
    );
    // Not offered where the table is not the expected f32 matrix, or not
    // in a safetensors file.
    assert!(TokenRows::open(&weights, TOKEN_EMBEDDING, vocab + 1, dim).is_none());
    let pth = WeightsFile::Pth(dir.join("pytorch_model.bin"));
    assert!(TokenRows::open(&pth, TOKEN_EMBEDDING, vocab, dim).is_none());
}

#[test]
fn first_token_path_matches_the_whole_last_layer() {
    let dev = Device::Cpu;
    let cfg = ClipConfig::from_json_str(
        r#"{"vision_config": {"hidden_size": 32, "num_attention_heads": 2,
             "intermediate_size": 64, "num_hidden_layers": 2, "image_size": 32,
             "patch_size": 8}, "projection_dim": 8}"#,
    )
    .unwrap();
    let vb = VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &dev);
    // A VarMap builder makes each tensor on first use, randomly initialized
    // for the weights.
    let encoder = Encoder::new(vb.pp("encoder"), &cfg.vision.tower, true, Precision::F32).unwrap();
    let xs = Tensor::randn(0f32, 1.0, (3, 17, 32), &dev).unwrap();
    let whole = encoder.forward(&xs, false).unwrap();
    let first = encoder.forward_first(&xs).unwrap();
    assert_eq!(first.dims(), &[3, 32]);
    let want = whole.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(max_abs_diff(&first, &want) <= 1e-5 * scale);
    // The second token's row differs, so a wrong row would be caught.
    let second = whole.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
    assert!(max_abs_diff(&second, &want) > 1e-2 * scale);
}

#[test]
fn patch_rows_times_the_flat_weight_is_the_strided_convolution() {
    let dev = Device::Cpu;
    // 40 and 56 are not multiples of 16: the conv drops the last 8 pixels
    // of each; the 2 x 3 patches are not square either.
    let (b, c, ps, d) = (2, 3, 16, 5);
    let pixels = Tensor::randn(0f32, 1.0, (b, c, 40, 56), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (d, c, ps, ps), &dev).unwrap();
    let cfg = candle_nn::Conv2dConfig {
        stride: ps,
        ..Default::default()
    };
    let conv = candle_nn::Conv2d::new(w.clone(), None, cfg);
    let want = conv
        .forward(&pixels)
        .unwrap()
        .flatten_from(2)
        .unwrap()
        .transpose(1, 2)
        .unwrap();
    let flat = w.reshape((d, c * ps * ps)).unwrap();
    let got = patch_rows(&pixels, ps)
        .unwrap()
        .matmul(&flat.t().unwrap())
        .unwrap()
        .reshape((b, 6, d))
        .unwrap();
    assert_eq!(want.dims(), got.dims());
    let diff = max_abs_diff(&got, &want);
    assert!(diff < 1e-3, "{diff}");
}

#[test]
fn missing_class_embedding_is_an_error_not_random() {
    let cfg = ClipConfig::from_json_str(
        r#"{"text_config": {"hidden_size": 4, "num_attention_heads": 1,
             "intermediate_size": 4, "num_hidden_layers": 1, "vocab_size": 10},
            "vision_config": {"hidden_size": 4, "num_attention_heads": 1,
             "intermediate_size": 4, "num_hidden_layers": 1, "image_size": 32,
             "patch_size": 32}, "projection_dim": 4}"#,
    )
    .unwrap();
    let dev = Device::Cpu;
    let mut ts = HashMap::new();
    for name in expected_tensors(&cfg, Towers::BOTH) {
        if name != "vision_model.embeddings.class_embedding" {
            ts.insert(name, Tensor::zeros(1, DType::F32, &dev).unwrap());
        }
    }
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
    let err = ClipModel::new(vb, &cfg, Towers::BOTH).err().unwrap();
    assert!(format!("{err:#}").contains("class_embedding"), "{err:#}");
}
