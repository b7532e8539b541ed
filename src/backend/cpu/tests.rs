//! Unit tests.

use super::attention::{attend, attend_tiled};
use super::dense::{
    pack_panels, panel_block, panel_row, transposed, WeightLayout, FEW_ROWS, PANEL_ROWS,
};
use super::*;
use candle_core::{Device, Module};

/// The largest absolute difference between two tensors of one shape.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn dense_matches_candle_linear_in_every_layout_and_row_count() {
    let dev = Device::Cpu;
    // 70 and 45 inputs take the scalar path, 64 the AVX-512 one; 45 and 70
    // outputs are not multiples of the 4-row blocks.
    for (out, inp) in [(45, 70), (70, 45), (70, 64), (45, 128)] {
        let w = Tensor::randn(0f32, 1.0, (out, inp), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
        let reference = Linear::new(w.clone(), Some(b.clone()));
        for many_rows in [false, true] {
            let dense = Dense::new(reference.clone(), many_rows, Precision::F32).unwrap();
            let layout = if many_rows {
                WeightLayout::Transposed
            } else {
                WeightLayout::Panels
            };
            assert_eq!(dense.layout(), layout);
            for rows in [
                1,
                3,
                5,
                PANEL_ROWS,
                PANEL_ROWS + 1,
                FEW_ROWS,
                FEW_ROWS + 1,
                300,
            ] {
                let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev).unwrap();
                let want = reference.forward(&x).unwrap();
                let residual = Tensor::randn(0f32, 1.0, (rows, out), &dev).unwrap();
                for (epilogue, want) in [
                    (Epilogue::None, want.clone()),
                    (
                        Epilogue::QuickGelu,
                        (&want * candle_nn::ops::sigmoid(&(&want * 1.702).unwrap()).unwrap())
                            .unwrap(),
                    ),
                    (Epilogue::Add(&residual), (&want + &residual).unwrap()),
                ] {
                    let parallel = dense.forward_with(&x, epilogue).unwrap();
                    let serial = with_serial_gemm(|| dense.forward_with(&x, epilogue));
                    for got in [parallel, serial.unwrap()] {
                        assert_eq!(got.dims(), &[rows, out]);
                        let d = max_abs_diff(&got, &want);
                        assert!(
                            d < 1e-4,
                            "{out}x{inp}, rows {rows}, {layout:?}, {epilogue:?}: {d}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn transposed_matches_candles_transpose() {
    // 64 x 48: whole 16 x 16 blocks on AVX-512; 70 x 37: a partial strip and
    // columns past the last block; 5 x 3 and 1 x 40: the scalar loop only.
    for (n, k) in [(64, 48), (70, 37), (5, 3), (1, 40), (0, 4)] {
        let w: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.5 - 7.0).collect();
        let want = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap()
            .contiguous()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(transposed(&w, n, k), want, "{n} x {k}");
    }
}

#[test]
fn packing_puts_every_weight_in_its_place() {
    // 128 x 64: the AVX-512 transposes; 70 x 37 and 64 x 40: the scalar loop.
    for (n, k) in [(128, 64), (70, 37), (64, 40)] {
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let packed = pack_panels(&w, n, k);
        assert_eq!(packed.len(), n.div_ceil(PANEL) * k * PANEL);
        for (i, &v) in packed.iter().enumerate() {
            let (p, kk, c) = (i / (k * PANEL), i / PANEL % k, i % PANEL);
            let j = p * PANEL + c;
            let want = if j < n { w[j * k + kk] } else { 0.0 };
            assert_eq!(v, want, "{n}x{k}: panel {p}, input {kk}, column {c}");
        }
    }
}

/// The portable kernel (what CPUs without AVX-512 run) against the
/// AVX-512 one, and both against a plain sum.
#[test]
fn panel_kernels_agree() {
    let (k, n) = (37, 70);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
        .collect();
    let packed = pack_panels(&w, n, k);
    assert_eq!(packed.len(), 2 * k * PANEL);
    for rows in 1..=PANEL_ROWS {
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 104_729) % 19) as f32 / 5.0 - 2.0)
            .collect();
        for p in 0..2 {
            let panel = &packed[p * k * PANEL..(p + 1) * k * PANEL];
            let mut fast = vec![[f32::NAN; PANEL]; rows];
            panel_block(&x, k, panel, p == 0, &mut fast);
            for (r, fast) in fast.iter().enumerate() {
                let mut portable = [0f32; PANEL];
                panel_row(&x[r * k..(r + 1) * k], panel, &mut portable);
                for c in 0..PANEL {
                    let j = p * PANEL + c;
                    let want: f32 = if j < n {
                        (0..k).map(|kk| x[r * k + kk] * w[j * k + kk]).sum()
                    } else {
                        0.0
                    };
                    for got in [fast[c], portable[c]] {
                        assert!(
                            (got - want).abs() < 1e-4,
                            "rows {rows} r {r} col {j}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dense_without_bias_and_with_a_3d_residual() {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (48, 40), &dev).unwrap();
    let reference = Linear::new(w, None);
    let dense = Dense::new(reference.clone(), true, Precision::F32).unwrap();
    let x = Tensor::randn(0f32, 1.0, (200, 40), &dev).unwrap();
    let residual = Tensor::randn(0f32, 1.0, (4, 50, 48), &dev).unwrap();
    let want = (reference.forward(&x).unwrap() + residual.reshape((200, 48)).unwrap()).unwrap();
    for epilogue in [Epilogue::None, Epilogue::Add(&residual)] {
        let got = dense.forward_with(&x, epilogue).unwrap();
        let want = match epilogue {
            Epilogue::None => reference.forward(&x).unwrap(),
            _ => want.clone(),
        };
        assert!(max_abs_diff(&got, &want) < 1e-4, "{epilogue:?}");
    }
}

/// The op-by-op route (what runs off the CPU) against the fused kernel.
fn attention_reference(qkv: &Tensor, len: usize, heads: usize, causal: bool) -> Tensor {
    let cpu_free = qkv.to_dtype(DType::F64).unwrap();
    attention(&cpu_free, len, heads, causal)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

#[test]
fn fused_attention_matches_the_op_by_op_route() {
    let dev = Device::Cpu;
    // Vision-like (no mask), text-like (causal, up to 77 tokens), lengths
    // that are not a multiple of the query block or the lanes, a single
    // token, and a head width that is not a multiple of the lanes (the
    // unblocked route).
    for (b, len, heads, dh, causal) in [
        (3, 50, 4, 64, false),
        (2, 7, 8, 64, true),
        (1, 77, 8, 64, true),
        (2, 17, 2, 32, false),
        (1, 1, 2, 16, true),
        (2, 5, 3, 20, false),
        // The tiled kernel's edges: one token, whole blocks of 16, its
        // largest length (80) and one past it (the blocked route).
        (1, 1, 2, 64, false),
        (2, 32, 2, 64, true),
        (1, 80, 2, 64, false),
        (1, 81, 1, 64, true),
    ] {
        // Scores of unit variance, as after the model's 1/sqrt(Dh) scaling.
        let std = (dh as f32).powf(-0.25);
        let qkv = Tensor::randn(0f32, std, (b * len, 3 * heads * dh), &dev).unwrap();
        let got = attention(&qkv, len, heads, causal).unwrap();
        assert_eq!(got.dims(), &[b * len, heads * dh]);
        let want = attention_reference(&qkv, len, heads, causal);
        let d = max_abs_diff(&got, &want);
        assert!(
            d < 1e-5,
            "b {b} len {len} heads {heads} dh {dh} causal {causal}: {d}"
        );
    }
}

#[test]
fn tiled_attention_agrees_with_the_blocked_kernel() {
    #[cfg(target_arch = "x86_64")]
    let has_avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let has_avx512 = false;
    if !has_avx512 {
        eprintln!(
            "SKIPPED tiled_attention_agrees_with_the_blocked_kernel: no AVX-512F on this CPU"
        );
        return;
    }
    let (heads, dh) = (3, 64);
    for len in [1, 2, 15, 16, 17, 50, 64, 77, 80] {
        for causal in [false, true] {
            let qkv: Vec<f32> = (0..len * 3 * heads * dh)
                .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 0.7)
                .collect();
            for h in 0..heads {
                let mut tiled = vec![f32::NAN; len * dh];
                assert!(
                    attend_tiled(&qkv, &mut tiled, len, heads, dh, h, causal),
                    "the tiled kernel refused len {len} on an AVX-512 CPU"
                );
                let mut blocked = vec![0f32; len * dh];
                attend(&qkv, &mut blocked, len, heads, dh, h, causal);
                for (a, b) in tiled.iter().zip(&blocked) {
                    assert!(
                        (a - b).abs() < 1e-6,
                        "len {len} causal {causal}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn layer_norm_matches_a_two_pass_f64_reference() {
    let dev = Device::Cpu;
    // 768 is a multiple of the lanes, 37 is not; the offset rows have a
    // mean 1000 times their spread, where E[x²] − mean² in f32 loses the
    // variance.
    for (d, offset) in [(768, 0f32), (37, 0.0), (64, 1000.0)] {
        let rows = 70;
        let x =
            (Tensor::randn(0f32, 1.0, (2, rows / 2, d), &dev).unwrap() + offset as f64).unwrap();
        let w = Tensor::randn(0f32, 1.0, d, &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, d, &dev).unwrap();
        let eps = 1e-5;
        let norm = Norm::new(candle_nn::LayerNorm::new(w.clone(), b.clone(), eps)).unwrap();
        let got = norm.forward(&x).unwrap();
        assert_eq!(got.dims(), x.dims());
        let (xv, wv, bv) = (
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w.to_vec1::<f32>().unwrap(),
            b.to_vec1::<f32>().unwrap(),
        );
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (row, out) in xv.chunks(d).zip(got.chunks(d)) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            for (i, (&v, &o)) in row.iter().zip(out).enumerate() {
                let want = (v as f64 - mean) / (var + eps).sqrt() * wv[i] as f64 + bv[i] as f64;
                // An f32 mean of values near 1000 is itself off by ~1e-4.
                let tol = 1e-4 * (1.0 + want.abs()) * (1.0 + offset as f64 / 100.0);
                assert!(
                    (o as f64 - want).abs() < tol,
                    "d {d} offset {offset}: {o} vs {want}"
                );
            }
        }
        // A transposed view is made contiguous first; serial runs agree.
        let t = x.transpose(0, 1).unwrap();
        let want = norm.forward(&t.contiguous().unwrap()).unwrap();
        assert_eq!(max_abs_diff(&norm.forward(&t).unwrap(), &want), 0.0);
        let serial = with_serial_gemm(|| norm.forward(&t).unwrap());
        assert_eq!(max_abs_diff(&serial, &want), 0.0);
    }
}

#[test]
fn layer_norm_without_f32_parameters_falls_back_to_candle() {
    let dev = Device::Cpu;
    let f16 = |t: Tensor| t.to_dtype(DType::F16).unwrap();
    let w = f16(Tensor::randn(0f32, 1.0, 16, &dev).unwrap());
    let b = f16(Tensor::randn(0f32, 1.0, 16, &dev).unwrap());
    let inner = candle_nn::LayerNorm::new(w, b, 1e-5);
    let norm = Norm::new(inner.clone()).unwrap();
    assert!(norm.params.is_none());
    let x = f16(Tensor::randn(0f32, 1.0, (3, 16), &dev).unwrap());
    let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let got = f32(norm.forward(&x).unwrap());
    assert_eq!(max_abs_diff(&got, &f32(inner.forward(&x).unwrap())), 0.0);
}

#[test]
fn exp_is_within_two_ulp_of_libm() {
    let mut worst = 0f32;
    let mut x = -87.0f32;
    while x < 88.0 {
        let (got, want) = (exp(x), x.exp());
        worst = worst.max(((got - want) / want).abs() / f32::EPSILON);
        x += 0.001_37;
    }
    assert!(worst <= 2.0, "worst error {worst} ulp");
    assert!(exp(-200.0) < 2e-38 && exp(-200.0) >= 0.0);
    assert!(exp(200.0).is_finite());
}

#[test]
fn quick_gelu_matches_the_op_by_op_formula() {
    // Wide enough to reach the clamped ends of the exponential.
    let x = (Tensor::randn(0f32, 4.0, (3, 70_000), &Device::Cpu).unwrap() * 20.0).unwrap();
    let reference = (&x * candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap()).unwrap();
    let got = quick_gelu(&x).unwrap();
    let scale = (x.abs().unwrap() + 1.0).unwrap();
    let rel = ((&got - &reference).unwrap().abs().unwrap() / scale).unwrap();
    let d = rel
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-6, "{d}");
    // Non-contiguous input goes through a copy, not an error.
    let xt = x.t().unwrap();
    assert_eq!(quick_gelu(&xt).unwrap().dims(), &[70_000, 3]);
}

mod bf16;
