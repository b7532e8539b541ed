//! Unit tests of the bf16 path: rounding, packing, the kernel against the
//! exact function of the rounded operands, and the AVX512_BF16 kernel against
//! the portable one.

use super::*;
use crate::backend::cpu::bf16::{bf16_block, from_bf16, rows_to_bf16, to_bf16};
use crate::vectors::dot;
use candle_core::{Device, Module};

/// `xs` with every value rounded to bf16 (and back to f32).
fn rounded(xs: &Tensor) -> Tensor {
    let v: Vec<f32> = xs
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(|v| from_bf16(to_bf16(v)))
        .collect();
    Tensor::from_vec(v, xs.shape(), xs.device()).unwrap()
}

#[test]
fn bf16_rounds_to_nearest_even() {
    let cases: [(f32, u16); 9] = [
        (1.0, 0x3F80),
        (-2.5, 0xC020),
        // exactly halfway between 0x3F80 and 0x3F81: to the even one
        (f32::from_bits(0x3F80_8000), 0x3F80),
        // halfway between 0x3F81 and 0x3F82: to the even one
        (f32::from_bits(0x3F81_8000), 0x3F82),
        // just above halfway: up
        (f32::from_bits(0x3F80_8001), 0x3F81),
        (f32::INFINITY, 0x7F80),
        (f32::NEG_INFINITY, 0xFF80),
        // the largest f32 is past the largest bf16: to infinity
        (f32::MAX, 0x7F80),
        (0.0, 0),
    ];
    for (v, want) in cases {
        assert_eq!(to_bf16(v), want, "{v:e}");
    }
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(0x3F80), 1.0);
}

#[test]
fn activations_convert_as_the_scalar_rounding_does() {
    // 64 and 96 features: the vcvtne2ps2bf16 path (whole groups of 32 and a
    // tail); 37: odd, the per-row path with a zero pad.
    for (m, k) in [(3, 64), (5, 96), (4, 37), (1, 2)] {
        let x: Vec<f32> = (0..m * k)
            .map(|i| match i % 7 {
                0 => f32::from_bits(0x3F80_8000 + (i as u32 % 3) * 0x1_0000),
                1 => -1e-3 * i as f32,
                _ => (i as f32 * 0.37).sin() * 100.0,
            })
            .collect();
        let got = rows_to_bf16(&x, m, k);
        let kq = k.div_ceil(2);
        assert_eq!(got.len(), m * kq);
        for r in 0..m {
            for q in 0..kq {
                let lo = to_bf16(x[r * k + 2 * q]);
                let hi = if 2 * q + 1 < k {
                    to_bf16(x[r * k + 2 * q + 1])
                } else {
                    0
                };
                let want = u32::from(lo) | (u32::from(hi) << 16);
                assert_eq!(got[r * kq + q], want, "{m}x{k}: row {r}, pair {q}");
            }
        }
    }
}

#[test]
fn bf16_packing_puts_every_pair_in_its_place() {
    for (n, k) in [(128, 64), (70, 37), (64, 40), (3, 1)] {
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let packed = pack_panels_bf16(&w, n, k);
        let kq = k.div_ceil(2);
        assert_eq!(packed.len(), n.div_ceil(PANEL) * kq * PANEL);
        for (i, &v) in packed.iter().enumerate() {
            let (p, q, c) = (i / (kq * PANEL), i / PANEL % kq, i % PANEL);
            let j = p * PANEL + c;
            let at = |kk: usize| {
                if j < n && kk < k {
                    to_bf16(w[j * k + kk])
                } else {
                    0
                }
            };
            assert_eq!(
                v & 0xFFFF,
                u32::from(at(2 * q)),
                "{n}x{k}: panel {p}, pair {q}, col {c}"
            );
            assert_eq!(
                v >> 16,
                u32::from(at(2 * q + 1)),
                "{n}x{k}: panel {p}, pair {q}, col {c}"
            );
        }
    }
}

/// The bf16 layer computes `round(x) round(W)^T + b` with f32 sums: checked
/// against candle's f32 `Linear` on the rounded operands, in every epilogue,
/// row count and thread mode; and its rows stay within cosine 0.999 of the
/// unrounded product.
#[test]
fn bf16_dense_is_the_product_of_the_rounded_operands() {
    let dev = Device::Cpu;
    for (out, inp) in [
        (45, 70),
        (70, 45),
        (70, 64),
        (45, 128),
        (130, 33),
        (192, 768),
    ] {
        let w = Tensor::randn(0f32, 1.0, (out, inp), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
        let exact = Linear::new(w.clone(), Some(b.clone()));
        let reference = Linear::new(rounded(&w), Some(b.clone()));
        for many_rows in [false, true] {
            let dense = Dense::new(exact.clone(), many_rows, Precision::Bf16).unwrap();
            assert_eq!(dense.layout(), WeightLayout::Bf16Panels);
            for rows in [1, 5, PANEL_ROWS, PANEL_ROWS + 1, 50, 301] {
                let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev).unwrap();
                let want = reference.forward(&rounded(&x)).unwrap();
                let residual = Tensor::randn(0f32, 1.0, (rows, out), &dev).unwrap();
                let gelu = |t: &Tensor| {
                    (t * candle_nn::ops::sigmoid(&(t * 1.702).unwrap()).unwrap()).unwrap()
                };
                for (epilogue, want) in [
                    (Epilogue::None, want.clone()),
                    (Epilogue::QuickGelu, gelu(&want)),
                    (Epilogue::Add(&residual), (&want + &residual).unwrap()),
                ] {
                    let parallel = dense.forward_with(&x, epilogue).unwrap();
                    let serial = with_serial_gemm(|| dense.forward_with(&x, epilogue));
                    for got in [parallel, serial.unwrap()] {
                        assert_eq!(got.dims(), &[rows, out]);
                        let d = max_abs_diff(&got, &want);
                        assert!(
                            d < 2e-4 * (inp as f32).sqrt(),
                            "{out}x{inp}, rows {rows}, {epilogue:?}: {d}"
                        );
                    }
                }
                let got = dense.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                let f32_rows = exact.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                for (r, (a, e)) in got.iter().zip(&f32_rows).enumerate() {
                    let cos = dot(a, e) / (dot(a, a) * dot(e, e)).sqrt();
                    assert!(cos >= 0.999, "{out}x{inp}, row {r}: cosine {cos} to f32");
                }
            }
        }
    }
}

/// The AVX512_BF16 kernel against the portable one, for every row count of a
/// block. Needs a CPU with the instructions; elsewhere there is nothing to
/// compare, and the test says so.
#[test]
fn bf16_kernels_agree() {
    if !bf16_supported() {
        eprintln!("no AVX512_BF16 on this CPU: only the portable kernel runs");
        return;
    }
    let (k, n) = (70, 100);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
        .collect();
    let packed = pack_panels_bf16(&w, n, k);
    let kq = k / 2;
    for rows in 1..=PANEL_ROWS {
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 104_729) % 19) as f32 / 5.0 - 2.0)
            .collect();
        let xb = rows_to_bf16(&x, rows, k);
        for p in 0..2 {
            let panel = &packed[p * kq * PANEL..(p + 1) * kq * PANEL];
            let mut fast = vec![[f32::NAN; PANEL]; rows];
            let mut portable = vec![[f32::NAN; PANEL]; rows];
            bf16_block(&xb, kq, panel, p == 0, true, &mut fast);
            bf16_block(&xb, kq, panel, false, false, &mut portable);
            for r in 0..rows {
                for c in 0..PANEL {
                    let (a, b) = (fast[r][c], portable[r][c]);
                    assert!(
                        (a - b).abs() < 1e-4,
                        "rows {rows}, row {r}, col {c}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// Single-core GFLOP/s of the dense layers of a ViT-B/32 slice of 8 images
/// (400 rows), f32 (gemm) against bf16, alternating:
/// `cargo test --release --lib bf16_dense_speed -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run by hand"]
fn bf16_dense_speed() {
    let dev = Device::Cpu;
    let m = 400;
    for (out, inp) in [(2304, 768), (768, 768), (3072, 768), (768, 3072)] {
        let w = Tensor::randn(0f32, 0.05, (out, inp), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
        let lin = Linear::new(w, Some(b));
        let f32d = Dense::new(lin.clone(), true, Precision::F32).unwrap();
        let bf16d = Dense::new(lin, true, Precision::Bf16).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, inp), &dev).unwrap();
        let flops = 2.0 * (m * out * inp) as f64;
        let mut best = [0f64; 2];
        for _ in 0..5 {
            for (i, d) in [&f32d, &bf16d].into_iter().enumerate() {
                let t = std::time::Instant::now();
                for _ in 0..3 {
                    std::hint::black_box(with_serial_gemm(|| d.forward(&x)).unwrap());
                }
                best[i] = best[i].max(3.0 * flops / t.elapsed().as_secs_f64() / 1e9);
            }
        }
        eprintln!(
            "{m} x {inp} -> {out}: f32 {:.0} GFLOP/s, bf16 {:.0} GFLOP/s",
            best[0], best[1]
        );
    }
}
