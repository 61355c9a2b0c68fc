//! The fused ops against burn's composed ones (values and gradients, on the CPU engine under
//! autodiff; attention against transformers' form), the composed forms wgpu runs against the CPU
//! kernels, and the kernels against f64.

use super::*;
use burn::tensor::activation::{log_softmax, silu, softmax};

/// Every value of `got` within `tol` (relative, absolute below 1) of `want`.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{what} [{i}]: fused {x}, composed {y}");
    }
}

/// scripts/test runs these tests again with `TINYTUNE_SIMD` capping the kernels' instruction
/// set, so that each compiled copy meets the references: the cap must then be in force.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_kernels_run_the_instruction_set_asked_for() {
    use tinytune_kernels::{Simd, simd};
    match std::env::var("TINYTUNE_SIMD").ok().as_deref() {
        Some("baseline") => assert_eq!(simd(), Simd::Baseline),
        Some("avx2") => assert!(simd() <= Simd::Avx2, "{:?}", simd()),
        _ if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") => assert_eq!(simd(), Simd::Avx512),
        _ if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") => assert_eq!(simd(), Simd::Avx2),
        _ => assert_eq!(simd(), Simd::Baseline),
    }
}

#[test]
fn the_vectorised_exp_is_within_2_5e_7_of_the_exact_value() {
    use tinytune_kernels::exp;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * i as f32 / 200_000.0;
        let want = (x as f64).exp();
        assert!(((exp(x) as f64 - want) / want).abs() < 2.5e-7, "exp({x}) = {}, want {want}", exp(x));
    }
    assert!(exp(-1e30) == 0.0 && exp(f32::NEG_INFINITY) == 0.0 && exp(-87.4) == 0.0);
    assert!(exp(1e30) > 1e38 && exp(1e30).is_finite());
    assert!(exp(f32::NAN).is_nan(), "a NaN must stay visible to the trainer's guard");
}

#[test]
fn log_sum_exp_matches_f64_on_rows_of_every_tail_length() {
    for len in 1..40 {
        let row: Vec<f32> = (0..len).map(|i| ((i * 7919) % 23) as f32 * 0.9 - 10.0).collect();
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let want = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        let got = tinytune_kernels::log_sum_exp(&row) as f64;
        assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "len {len}: {got} against {want}");
    }
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Forward values and both gradients of `silu_mul` against burn's composed `silu(g) · u`,
/// on the CPU engine under autodiff, for an input large enough to run on several threads and
/// a transposed (strided) one.
#[test]
fn silu_mul_matches_the_composed_ops_forward_and_backward() {
    let device = burn::tensor::Device::flex().autodiff();
    for (rows, cols, transposed) in [(37, 1000, false), (3, 5, false), (40, 30, true)] {
        let n = rows * cols;
        let noise = |seed| crate::quant::nf4::test_noise(n, seed, 4.0);
        let make = |v: Vec<f32>| {
            let t = Tensor::<2>::from_data(TensorData::new(v, [rows, cols]), &device);
            if transposed { t.transpose() } else { t }
        };
        let (g0, u0, w) = (make(noise(1)), make(noise(2)), make(noise(3)));
        let run = |fused: bool| {
            let (g, u) = (g0.clone().detach().require_grad(), u0.clone().detach().require_grad());
            let y = if fused { silu_mul(g.clone(), u.clone()) } else { silu(g.clone()) * u.clone() };
            let grads = (y.clone() * w.clone()).sum().backward();
            (values(y), values(g.grad(&grads).unwrap().into()), values(u.grad(&grads).unwrap().into()))
        };
        let (fused, composed) = (run(true), run(false));
        for (what, a, b) in [("value", &fused.0, &composed.0), ("gate grad", &fused.1, &composed.1), ("up grad", &fused.2, &composed.2)] {
            assert_eq!(a.len(), n);
            assert_close(&format!("{rows}×{cols} {what}"), a, b, 1e-5);
        }
    }
}

/// Values and the logits' gradient of `target_logprobs` against log_softmax and a gather, on
/// the CPU engine under autodiff, with per-row weights as the trainer applies them.
#[test]
fn target_logprobs_matches_log_softmax_and_gather_forward_and_backward() {
    let device = burn::tensor::Device::flex().autodiff();
    for (n, v) in [(70, 600), (3, 7)] {
        let x0 = Tensor::<2>::from_data(TensorData::new(crate::quant::nf4::test_noise(n * v, 7, 6.0), [n, v]), &device);
        let ids: Vec<i32> = (0..n).map(|i| ((i * 37 + 5) % v) as i32).collect();
        let targets = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), &device);
        let w = Tensor::<2>::from_data(TensorData::new(crate::quant::nf4::test_noise(n, 8, 1.0), [n, 1]), &device);
        let run = |fused: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if fused { target_logprobs(x.clone(), targets.clone()) } else { log_softmax(x.clone(), 1).gather(1, targets.clone()) };
            let grads = (y.clone() * w.clone()).sum().backward();
            let read = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            (read(y), read(x.grad(&grads).unwrap().into()))
        };
        let (fused, composed) = (run(true), run(false));
        assert_eq!((fused.0.len(), fused.1.len()), (n, n * v));
        for (what, a, b) in [("log-probability", &fused.0, &composed.0), ("logit grad", &fused.1, &composed.1)] {
            assert_close(&format!("{n}×{v} {what}"), a, b, 2e-5);
        }
    }
}

/// Values and gradient of `softmax_last` against burn's softmax on the CPU engine under
/// autodiff: 4-d scores as attention has them, with -inf where a causal mask hides a key.
#[test]
fn softmax_last_matches_burn_s_softmax_forward_and_backward_with_masked_keys() {
    let device = burn::tensor::Device::flex().autodiff();
    for (b, h, t) in [(2, 3, 64), (1, 2, 5)] {
        let n = b * h * t * t;
        let mut v = crate::quant::nf4::test_noise(n, 11, 8.0);
        for (i, x) in v.iter_mut().enumerate() {
            let (q, k) = ((i / t) % t, i % t);
            if k > q {
                *x = f32::NEG_INFINITY;
            }
        }
        let x0 = Tensor::<4>::from_data(TensorData::new(v, [b, h, t, t]), &device);
        let w = Tensor::<4>::from_data(TensorData::new(crate::quant::nf4::test_noise(n, 12, 1.0), [b, h, t, t]), &device);
        let run = |fused: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if fused { softmax_last(x.clone()) } else { softmax(x.clone(), 3) };
            let grads = (y.clone() * w.clone()).sum().backward();
            let read = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
            (read(y), read(x.grad(&grads).unwrap().into()))
        };
        let (fused, composed) = (run(true), run(false));
        for (what, a, c) in [("probability", &fused.0, &composed.0), ("score grad", &fused.1, &composed.1)] {
            assert!(a.iter().all(|x| x.is_finite()), "{b}×{h}×{t} {what}: not finite");
            assert_close(&format!("{b}×{h}×{t} {what}"), a, c, 1e-5);
        }
        // A hidden key gets exactly nothing.
        assert!(fused.0.iter().enumerate().all(|(i, p)| ((i % t) <= (i / t) % t) || *p == 0.0));
    }
}

fn noise(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    crate::quant::nf4::test_noise(n, seed, scale)
}

/// Values and the gradients to `x` and to the weight of `rms_norm` against the norm composed
/// as RmsNorm had it (`x / √(mean(x²) + eps) · w`), on the CPU engine under autodiff.
#[test]
fn rms_norm_matches_the_composed_norm_forward_and_backward() {
    let device = burn::tensor::Device::flex().autodiff();
    for (b, t, c) in [(4, 64, 256), (1, 3, 13)] {
        let x0 = Tensor::<3>::from_data(TensorData::new(noise(b * t * c, 21, 2.0), [b, t, c]), &device);
        let w0 = Tensor::<1>::from_data(TensorData::new(noise(c, 22, 1.0), [c]), &device);
        let k = Tensor::<3>::from_data(TensorData::new(noise(b * t * c, 23, 1.0), [b, t, c]), &device);
        let run = |fused: bool| {
            let (x, w) = (x0.clone().detach().require_grad(), w0.clone().detach().require_grad());
            let y = if fused {
                rms_norm(x.clone(), w.clone(), 1e-5)
            } else {
                let rms = (x.clone().square().mean_dim(2) + 1e-5).sqrt();
                (x.clone() / rms) * w.clone().unsqueeze::<3>()
            };
            let grads = (y.clone() * k.clone()).sum().backward();
            let read3 = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
            let gw: Tensor<1> = w.grad(&grads).unwrap().into();
            (read3(y), read3(x.grad(&grads).unwrap().into()), gw.into_data().try_to_vec::<f32>().unwrap())
        };
        let (fused, composed) = (run(true), run(false));
        for (what, a, e) in [("value", &fused.0, &composed.0), ("x grad", &fused.1, &composed.1), ("weight grad", &fused.2, &composed.2)] {
            assert_close(&format!("{b}×{t}×{c} {what}"), a, e, 2e-5);
        }
    }
}

/// The composed forms wgpu runs (generic over the backend) against the CPU kernels, both on
/// burn flex.
#[test]
fn the_composed_forms_wgpu_runs_agree_with_the_cpu_kernels() {
    let (n, c, v) = (6, 40, 50);
    let t = |vals: Vec<f32>, shape: Vec<usize>| Flex::float_from_data(TensorData::new(vals, shape), &Default::default());
    let read = |x: FloatTensor<Flex>| futures_lite::future::block_on(Flex::float_into_data(x)).unwrap().try_to_vec::<f32>().unwrap();
    let close = |what: &str, a: FloatTensor<Flex>, b: FloatTensor<Flex>| {
        assert_close(what, &read(a), &read(b), 2e-5);
    };
    let (x, w, g) = (noise(n * c, 31, 3.0), noise(c, 32, 1.0), noise(n * c, 33, 1.0));
    let (xt, wt, gt) = (|| t(x.clone(), vec![n, c]), || t(w.clone(), vec![c]), || t(g.clone(), vec![n, c]));
    close("silu_mul", Flex::silu_mul(xt(), gt()), composed_silu_mul::<Flex>(xt(), gt()));
    close("silu_mul grad", Flex::silu_mul_grad_gate(xt(), gt(), gt()), composed_grad_gate::<Flex>(xt(), gt(), gt()));
    close("rms_norm", Flex::rms_norm(xt(), wt(), 1e-6), composed_rms_norm::<Flex>(xt(), wt(), 1e-6));
    close("rms_norm grad x", Flex::rms_norm_grad_x(xt(), wt(), gt(), 1e-6), composed_rms_norm_grad_x::<Flex>(xt(), wt(), gt(), 1e-6));
    close("rms_norm grad w", Flex::rms_norm_grad_w(xt(), gt(), 1e-6), composed_rms_norm_grad_w::<Flex>(xt(), gt(), 1e-6));
    close("softmax", Flex::softmax_rows(xt()), Flex::softmax(xt(), 1));
    let y = Flex::softmax_rows(xt());
    close("softmax grad", Flex::softmax_rows_grad(y.clone(), gt()), composed_softmax_grad::<Flex>(y, gt()));
    let logits = || t(noise(n * v, 34, 5.0), vec![n, v]);
    let targets = || <Flex as burn::backend::ops::IntTensorOps<Flex>>::int_from_data(TensorData::new((0..n as i32).map(|i| (i * 7) % v as i32).collect::<Vec<_>>(), [n, 1]), &Default::default());
    let gr = || t(noise(n, 35, 1.0), vec![n, 1]);
    close("target_logprobs", Flex::target_logprobs(logits(), targets()), composed_target_logprobs::<Flex>(logits(), targets()));
    close("target_logprobs grad", Flex::target_logprobs_grad(logits(), targets(), gr()), composed_target_logprobs_grad::<Flex>(logits(), targets(), gr()));
}

/// A row hidden entirely by a finite mask (a padded query: every score near -1e30) still sums to
/// one. Through `max + ln Σ` it gave 1 for every key, because `ln Σ` vanishes beside 1e30.
#[test]
fn softmax_of_a_fully_masked_row_sums_to_one() {
    let row = [-1e30f32, -1e30 + 1e23, -1e30, -1e30, -1e30, -1e30, -1e30, -1e30, -1e30];
    let mut out = [0f32; 9];
    tinytune_kernels::softmax(&row, &mut out);
    let sum: f32 = out.iter().sum();
    assert!((sum - 1.0).abs() < 1e-6, "probabilities {out:?} sum to {sum}");
}

fn read4(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Attention as transformers writes it: every key/value head repeated for its query heads
/// (repeat_kv, copies), scores, mask, softmax, values.
fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>, scale: f64) -> Tensor<4> {
    let [b, nh, _, _] = q.dims();
    let [_, nkv, s, hs] = k.dims();
    let repeat = |x: Tensor<4>| x.unsqueeze_dim::<5>(2).repeat_dim(2, nh / nkv).reshape([b, nh, s, hs]);
    let scores = q.matmul(repeat(k).swap_dims(2, 3)) * scale + mask;
    softmax(scores, 3).matmul(repeat(v))
}

/// Values and the gradients to q, k and v of the fused op against the reference, on the CPU
/// engine under autodiff: causal with -inf (the CPU engine's mask), padded (finite), one
/// decoded token after a cache, plain multi-head, and q as a strided view.
#[test]
fn attention_matches_the_composed_reference_forward_and_backward() {
    let device = burn::tensor::Device::flex().autodiff();
    // (batch, query heads, kv heads, new positions, cached positions, head size, padded, strided q);
    // the last takes the kernels' other register tiling (head size 64) with an odd row count.
    let cases = [(2, 4, 2, 16, 0, 8, false, false), (3, 4, 2, 9, 0, 5, true, false), (2, 6, 3, 1, 6, 8, false, false), (1, 2, 2, 7, 3, 16, false, true), (4, 8, 4, 128, 0, 32, false, false), (3, 4, 2, 1, 7, 16, true, false), (2, 4, 4, 1, 5, 5, true, true), (1, 3, 1, 11, 2, 64, false, false)];
    for (b, nh, nkv, t, past, hs, padded, strided) in cases {
        let s = past + t;
        let what = format!("b {b}, heads {nh}/{nkv}, t {t}, past {past}, hs {hs}{}{}", if padded { ", padded" } else { "" }, if strided { ", strided q" } else { "" });
        let pad: Vec<Vec<bool>> = (0..b).map(|r| (0..s).map(|j| j >= r).collect()).collect();
        let mask = crate::model::layers::attention_mask(t, past, padded.then_some(&pad[..]), b, &device);
        let q0 = if strided {
            Tensor::<4>::from_data(TensorData::new(noise(b * nh * t * hs, 1, 2.0), [b, t, nh, hs]), &device).swap_dims(1, 2)
        } else {
            Tensor::<4>::from_data(TensorData::new(noise(b * nh * t * hs, 1, 2.0), [b, nh, t, hs]), &device)
        };
        let k0 = Tensor::<4>::from_data(TensorData::new(noise(b * nkv * s * hs, 2, 2.0), [b, nkv, s, hs]), &device);
        let v0 = Tensor::<4>::from_data(TensorData::new(noise(b * nkv * s * hs, 3, 1.0), [b, nkv, s, hs]), &device);
        let w = Tensor::<4>::from_data(TensorData::new(noise(b * nh * t * hs, 4, 1.0), [b, nh, t, hs]), &device);
        let scale = 1.0 / (hs as f64).sqrt();
        let run = |fused: bool| {
            let (q, k, v) = (q0.clone().detach().require_grad(), k0.clone().detach().require_grad(), v0.clone().detach().require_grad());
            let y = if fused { attention(q.clone(), k.clone(), v.clone(), mask.clone(), scale) } else { reference(q.clone(), k.clone(), v.clone(), mask.clone(), scale) };
            let grads = (y.clone() * w.clone()).sum().backward();
            let grad = |x: &Tensor<4>| read4(x.grad(&grads).unwrap());
            [read4(y), grad(&q), grad(&k), grad(&v)]
        };
        let (fused, reference) = (run(true), run(false));
        for (name, a, r) in ["value", "q grad", "k grad", "v grad"].iter().zip(&fused).zip(&reference).map(|((n, a), r)| (n, a, r)) {
            assert!(a.iter().all(|x| x.is_finite()), "{what} {name}: not finite");
            assert_close(&format!("{what} {name}"), a, r, 2e-5);
        }
    }
}

/// Decoding's attention (one new position) reads the keys and values where the KV cache holds
/// them: views of the first S slots of larger buffers, grouped heads, a padded batch. Against
/// the composed reference on contiguous copies. The last two cases are past
/// `DECODE_ATTENTION_SPLIT`, so where oneMKL is loaded their heads are split across its team.
#[test]
fn decoding_attention_on_views_of_the_cache_matches_the_composed_reference() {
    let device = burn::tensor::Device::flex();
    for (b, nh, nkv, s, capacity, hs, padded) in [(1, 8, 4, 37, 64, 64, false), (3, 6, 2, 10, 16, 8, true), (2, 4, 4, 1, 4, 5, false), (2, 9, 3, 70, 128, 80, true), (1, 9, 3, 300, 512, 64, false)] {
        let what = format!("b {b}, heads {nh}/{nkv}, s {s} of {capacity}, hs {hs}{}", if padded { ", padded" } else { "" });
        let pad: Vec<Vec<bool>> = (0..b).map(|r| (0..s).map(|j| j >= r.min(s - 1)).collect()).collect();
        let mask = crate::model::layers::attention_mask(1, s - 1, padded.then_some(&pad[..]), b, &device);
        let q = Tensor::<4>::from_data(TensorData::new(noise(b * nh * hs, 1, 2.0), [b, nh, 1, hs]), &device);
        let buffer = |seed| Tensor::<4>::from_data(TensorData::new(noise(b * nkv * capacity * hs, seed, 2.0), [b, nkv, capacity, hs]), &device);
        let (k, v) = (buffer(2).slice([0..b, 0..nkv, 0..s, 0..hs]), buffer(3).slice([0..b, 0..nkv, 0..s, 0..hs]));
        let copy = |t: &Tensor<4>| Tensor::<4>::from_data(t.clone().into_data(), &device);
        let scale = 1.0 / (hs as f64).sqrt();
        let got = read4(attention(q.clone(), k.clone(), v.clone(), mask.clone(), scale));
        let want = read4(reference(q, copy(&k), copy(&v), mask, scale));
        assert!(got.iter().all(|x| x.is_finite()), "{what}: not finite");
        assert_close(&what, &got, &want, 2e-5);
    }
}

/// The composed forms wgpu runs (generic over the backend) against the CPU kernel, both on
/// burn flex, grouped heads and a causal -inf mask.
#[test]
fn the_composed_attention_wgpu_runs_agrees_with_the_cpu_kernel() {
    let (b, nh, nkv, t, hs) = (2, 4, 2, 12, 8);
    let f = |v: Vec<f32>, shape: [usize; 4]| Flex::float_from_data(TensorData::new(v, shape), &Default::default());
    let causal = (0..b * t * t).map(|i| if i % t > (i / t) % t { f32::NEG_INFINITY } else { 0.0 }).collect();
    let mask = f(causal, [b, 1, t, t]);
    let flat = |x: FloatTensor<Flex>| futures_lite::future::block_on(Flex::float_into_data(x)).unwrap().try_to_vec::<f32>().unwrap();
    let q = || f(noise(b * nh * t * hs, 5, 2.0), [b, nh, t, hs]);
    let k = || f(noise(b * nkv * t * hs, 6, 2.0), [b, nkv, t, hs]);
    let v = || f(noise(b * nkv * t * hs, 7, 1.0), [b, nkv, t, hs]);
    let g = || f(noise(b * nh * t * hs, 8, 1.0), [b, nh, t, hs]);
    let scale = 0.3;
    assert_close("value", &flat(attention::flex_attention(q(), k(), v(), mask.clone(), scale)), &flat(attention::composed_attention::<Flex>(q(), k(), v(), mask.clone(), scale)), 2e-5);
    let (a, c) = (attention::flex_attention_grad(q(), k(), v(), mask.clone(), scale, g()), attention::composed_attention_grad::<Flex>(q(), k(), v(), mask.clone(), scale, g()));
    assert_close("q grad", &flat(a.0), &flat(c.0), 2e-5);
    assert_close("k grad", &flat(a.1), &flat(c.1), 2e-5);
    assert_close("v grad", &flat(a.2), &flat(c.2), 2e-5);
}

/// `matmul` (a BLAS where one is installed) against burn flex's own matmul: values and both
/// gradients under autodiff, for row-major, transposed and sliced (row stride beyond the width)
/// operands, and for the shapes that stay on burn flex (one row, rank 8, tiny).
#[test]
fn matmul_matches_burn_s_matmul_forward_and_backward() {
    let off = std::env::var("TINYTUNE_BLAS").is_ok_and(|v| v == "off");
    assert!(
        crate::blas::uses_blas() || off,
        "no BLAS library was found ({}); install OpenBLAS (scripts/setup installs Debian's libopenblas0-pthread), or set TINYTUNE_BLAS=off to test without one",
        crate::blas::describe()
    );
    // A kind asked for by name is the one loaded (scripts/test runs these tests under each).
    for (kind, name) in [("mkl", "oneMKL"), ("openblas", "OpenBLAS")] {
        if std::env::var("TINYTUNE_BLAS").is_ok_and(|v| v == kind) {
            assert!(crate::blas::describe().contains(name), "TINYTUNE_BLAS={kind} loaded {}", crate::blas::describe());
        }
    }
    let device = burn::tensor::Device::flex().autodiff();
    // (m, k, n, how a is held, how b is held): 0 row-major, 1 a transposed view, 2 a slice of
    // wider rows.
    let cases = [(64, 48, 40, 0, 0), (64, 48, 40, 1, 0), (64, 48, 40, 0, 1), (33, 20, 17, 1, 1), (40, 24, 32, 2, 2), (64, 48, 8, 0, 0), (1, 48, 40, 0, 1), (3, 5, 7, 0, 0)];
    for (m, k, n, ha, hb) in cases {
        let make = |rows: usize, cols: usize, how: u8, seed: u64| match how {
            0 => Tensor::<2>::from_data(TensorData::new(noise(rows * cols, seed, 1.0), [rows, cols]), &device),
            1 => Tensor::<2>::from_data(TensorData::new(noise(rows * cols, seed, 1.0), [cols, rows]), &device).transpose(),
            _ => Tensor::<2>::from_data(TensorData::new(noise(rows * (cols + 9), seed, 1.0), [rows, cols + 9]), &device).slice([0..rows, 4..4 + cols]),
        };
        let (a0, b0) = (make(m, k, ha, 1), make(k, n, hb, 2));
        let w = Tensor::<2>::from_data(TensorData::new(noise(m * n, 3, 1.0), [m, n]), &device);
        let run = |ours: bool| {
            let (a, b) = (a0.clone().detach().require_grad(), b0.clone().detach().require_grad());
            let y = if ours { matmul(a.clone(), b.clone()) } else { a.clone().matmul(b.clone()) };
            let grads = (y.clone() * w.clone()).sum().backward();
            let grad = |t: &Tensor<2>| t.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
            (values(y.inner()), grad(&a), grad(&b))
        };
        let ((y, ga, gb), (y0, ga0, gb0)) = (run(true), run(false));
        let what = format!("{m}×{k} ({ha}) by {k}×{n} ({hb})");
        assert_close(&format!("{what}: values"), &y, &y0, 1e-5);
        assert_close(&format!("{what}: a's gradient"), &ga, &ga0, 1e-5);
        assert_close(&format!("{what}: b's gradient"), &gb, &gb0, 1e-5);
    }
}

/// `c + a·b` against f64 sums, for the paths it takes: added into c's buffer by the BLAS (long
/// sides) or by the gemm crate (a side under 16: the rank-r LoRA products), with transposed and
/// sliced operands; and, when c is shared, a new tensor that leaves c as it was.
#[test]
fn matmul_add_equals_f64_sums_in_place_or_not() {
    let t = |v: Vec<f32>, shape: [usize; 2]| Flex::float_from_data(TensorData::new(v, shape), &Default::default());
    let read = |x: FloatTensor<Flex>| futures_lite::future::block_on(Flex::float_into_data(x)).unwrap().try_to_vec::<f32>().unwrap();
    // (m, k, n, a transposed, b a slice of wider rows)
    for (m, k, n, ta, sb) in [(40, 8, 33, false, false), (40, 8, 33, true, true), (64, 48, 40, true, false), (1, 24, 9, false, true), (5, 0, 3, false, false)] {
        let (av, bv, cv) = (noise(m * k, 1, 1.0), noise(k * (n + 3), 2, 1.0), noise(m * n, 3, 1.0));
        let a = if ta { Flex::float_transpose(t(crate::model::load::transpose(&av, m, k), [k, m])) } else { t(av.clone(), [m, k]) };
        let b = if sb { Flex::float_slice(t(bv.clone(), [k, n + 3]), &[burn::tensor::Slice::from(0..k), burn::tensor::Slice::from(2..2 + n)]) } else { t(bv[..k * n].to_vec(), [k, n]) };
        let bat = |i: usize, j: usize| if sb { bv[i * (n + 3) + 2 + j] } else { bv[i * n + j] };
        let want: Vec<f32> = (0..m * n).map(|e| cv[e] as f64 + (0..k).map(|i| av[e / n * k + i] as f64 * bat(i, e % n) as f64).sum::<f64>()).map(|x| x as f32).collect();
        let what = format!("{m}×{k} by {k}×{n}{}{}", if ta { ", a transposed" } else { "" }, if sb { ", b sliced" } else { "" });
        assert_close(&format!("{what}: in place"), &read(crate::blas::flex_matmul_add(a.clone(), b.clone(), t(cv.clone(), [m, n]))), &want, 1e-5);
        let shared = t(cv.clone(), [m, n]);
        let sum = crate::blas::flex_matmul_add(a, b, shared.clone());
        assert_close(&format!("{what}: c shared"), &read(sum), &want, 1e-5);
        assert_eq!(read(shared), cv, "{what}: a shared c must keep its values");
    }
}

/// The CPU engine's loops run on oneMKL's OpenMP team where oneMKL is the BLAS (`blas::team`),
/// else on rayon: every task once, a task's panic raised on the caller (and the next loop runs),
/// and the fused attention (forward and backward), SiLU·gate and AdamW give the same bits either
/// way, at sizes that split across threads.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn loops_on_onemkl_s_team_equal_rayon_s_and_pass_a_panic_on() {
    use crate::blas::{for_each_task, team};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    if crate::blas::describe().contains("oneMKL") {
        assert!(team::available() && team::on_team(), "oneMKL with Intel OpenMP is loaded, so the loops should run on its team");
    }
    let hits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
    for_each_task(1000, &|t| {
        hits[t].fetch_add(1, Relaxed);
    });
    assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "a task ran other than once");
    let caught = std::panic::catch_unwind(|| for_each_task(64, &|t| assert!(t != 37, "task 37 failed")));
    let payload = caught.expect_err("a task panicked, so the loop must");
    let message = payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|m| m.to_string())).unwrap_or_default();
    assert!(message.contains("task 37 failed"), "the caller got {message:?}");
    let sum = AtomicUsize::new(0);
    for_each_task(100, &|t| {
        sum.fetch_add(t, Relaxed);
    });
    assert_eq!(sum.load(Relaxed), 4950, "the loop after a panic");

    let f = |v: Vec<f32>, shape: [usize; 4]| Flex::float_from_data(TensorData::new(v, shape), &Default::default());
    let flat = |x: FloatTensor<Flex>| futures_lite::future::block_on(Flex::float_into_data(x)).unwrap().try_to_vec::<f32>().unwrap();
    let (b, nh, nkv, t, hs) = (4, 4, 2, 64, 32);
    let causal = (0..b * t * t).map(|i| if i % t > (i / t) % t { f32::NEG_INFINITY } else { 0.0 }).collect();
    let mask = f(causal, [b, 1, t, t]);
    let (q, k, v, g) = (noise(b * nh * t * hs, 5, 2.0), noise(b * nkv * t * hs, 6, 2.0), noise(b * nkv * t * hs, 7, 1.0), noise(b * nh * t * hs, 8, 1.0));
    let x = noise(100_000, 9, 3.0);
    let two = |v: &Vec<f32>| Flex::float_from_data(TensorData::new(v.clone(), [v.len() / 100, 100]), &Default::default());
    let step = AdamwStep { clip: 0.5, beta1: 0.9, one_minus_beta1: 0.1, beta2: 0.95, one_minus_beta2: 0.05, sqrt_bc2: 0.3, eps: 1e-8, decay: 0.999, step: 1e-3 };
    let (p, m, va) = (noise(300_000, 10, 1.0), noise(300_000, 11, 0.01), noise(300_000, 12, 1e-3).iter().map(|x| x.abs()).collect::<Vec<f32>>());
    let run = |on: bool| {
        team::set_enabled(on);
        let out = f(q.clone(), [b, nh, t, hs]);
        let mut all = flat(attention::flex_attention(out, f(k.clone(), [b, nkv, t, hs]), f(v.clone(), [b, nkv, t, hs]), mask.clone(), 0.2));
        let (dq, dk, dv) = attention::flex_attention_grad(f(q.clone(), [b, nh, t, hs]), f(k.clone(), [b, nkv, t, hs]), f(v.clone(), [b, nkv, t, hs]), mask.clone(), 0.2, f(g.clone(), [b, nh, t, hs]));
        all.extend(flat(dq).into_iter().chain(flat(dk)).chain(flat(dv)));
        all.extend(flat(Flex::silu_mul(two(&x), two(&x[..].iter().map(|v| v * 0.5).collect()))));
        let (np, nm, nv) = Flex::adamw(two(&p), two(&m), two(&m), two(&va), step);
        all.extend(flat(np).into_iter().chain(flat(nm)).chain(flat(nv)));
        team::set_enabled(true);
        all
    };
    let (on, off) = (run(true), run(false));
    assert_eq!(on.len(), off.len());
    assert!(on.iter().zip(&off).all(|(a, b)| a.to_bits() == b.to_bits()), "the loops gave other values on oneMKL's team than on rayon");
    assert!(on.iter().all(|v| v.is_finite()) && on.iter().any(|&v| v != 0.0));
}

/// Decoding's products (a few rows by a large weight) split across oneMKL's OpenMP team where it
/// is loaded (`blas::decode_split`): by the weight's rows, whose partial sums are added, when its
/// rows are contiguous (the model's `[in, out]`), by columns when it is a transposed view (of
/// `nn.Linear`'s `[out, in]`); parts of unequal length among them. Against f64 sums, with the
/// team and without (one thread).
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn decoding_products_split_across_the_team_equal_f64_sums() {
    let device = burn::tensor::Device::flex();
    for (m, k, n, transposed) in [(1, 300, 520, false), (1, 300, 520, true), (3, 1100, 130, false), (4, 130, 1100, true), (1, 77, 2000, false), (2, 2001, 70, true)] {
        let (x, w) = (noise(m * k, 21, 1.0), noise(k * n, 22, 1.0));
        let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
        let wt = if transposed {
            Tensor::<2>::from_data(TensorData::new(crate::model::load::transpose(&w, k, n), [n, k]), &device).transpose()
        } else {
            Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), &device)
        };
        let want: Vec<f32> = (0..m * n).map(|i| (0..k).map(|j| x[i / n * k + j] as f64 * w[j * n + i % n] as f64).sum::<f64>() as f32).collect();
        for on in [true, false] {
            crate::blas::team::set_enabled(on);
            let got = values(matmul(xt.clone(), wt.clone()));
            crate::blas::team::set_enabled(true);
            assert_close(&format!("{m}×{k}·{k}×{n}, weight transposed {transposed}, team {on}"), &got, &want, 1e-5);
        }
    }
}

/// The one-row kernel decoding runs on row-major weights (`tinytune_kernels::matmul_rows`) on its
/// own: rows of a, w and out further apart than they are long, depths that are and are not
/// multiples of its eight rows a pass, written over and added into. Against f64 sums.
#[test]
fn matmul_rows_equals_f64_sums_with_strides_and_adding() {
    for (m, k, n, add) in [(1, 8, 16, false), (1, 77, 130, false), (3, 64, 50, true), (4, 13, 7, true), (2, 1, 33, false)] {
        let (lda, ldw, ldo) = (k + 3, n + 5, n + 2);
        let (a, w, start) = (noise(m * lda, 31, 1.0), noise(k * ldw, 32, 1.0), noise(m * ldo, 33, 1.0));
        let mut out = start.clone();
        tinytune_kernels::matmul_rows(&a, lda, m, k, &w, ldw, n, add, &mut out, ldo);
        for i in 0..m {
            let want: Vec<f32> = (0..n)
                .map(|j| ((if add { start[i * ldo + j] as f64 } else { 0.0 }) + (0..k).map(|r| a[i * lda + r] as f64 * w[r * ldw + j] as f64).sum::<f64>()) as f32)
                .collect();
            assert_close(&format!("{m}×{k}·{k}×{n}, add {add}, row {i}"), &out[i * ldo..i * ldo + n], &want, 1e-5);
            let gap = i * ldo + n..(i + 1) * ldo;
            assert!(out[gap.clone()].iter().zip(&start[gap]).all(|(x, y)| x.to_bits() == y.to_bits()), "the kernel wrote past row {i}'s n values");
        }
    }
}

/// The AdamW kernel against the composed ops (what a cubecl runtime without the WGSL kernel
/// runs), bit for bit: the same operations in the same order, one rounding each. Large enough to
/// split across threads; with clipping and weight decay.
#[test]
fn adamw_equals_the_composed_update_bit_for_bit() {
    let (rows, cols) = (700, 300);
    let n = rows * cols;
    let t = |v: &Vec<f32>| Flex::float_from_data(TensorData::new(v.clone(), [rows, cols]), &Default::default());
    let read = |x: FloatTensor<Flex>| futures_lite::future::block_on(Flex::float_into_data(x)).unwrap().try_to_vec::<f32>().unwrap();
    let v_abs: Vec<f32> = noise(n, 4, 1e-3).iter().map(|x| x.abs()).collect();
    let s = AdamwStep { clip: 0.25, beta1: 0.9, one_minus_beta1: 0.1, beta2: 0.95, one_minus_beta2: 0.05, sqrt_bc2: 0.3, eps: 1e-8, decay: 0.999, step: 1e-3 };
    let (p, g, m) = (noise(n, 1, 1.0), noise(n, 2, 0.1), noise(n, 3, 0.01));
    let (fp, fm, fv) = Flex::adamw(t(&p), t(&g), t(&m), t(&v_abs), s);
    let composed = adamw::composed_adamw::<Flex>(t(&p), t(&g), t(&m), t(&v_abs), s).map(read);
    for (what, f, c) in [("p", read(fp), &composed[0]), ("m", read(fm), &composed[1]), ("v", read(fv), &composed[2])] {
        assert!(f.iter().zip(c.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{what} differs from the composed update");
        assert!(f.iter().any(|&x| x != 0.0), "{what} is all zeros");
    }
}

/// The fused LoRA layer `x·W + s·((x·A)·B)` against the same ops one by one: values and the
/// gradients to x, A and B under autodiff (W frozen), at shapes that take the BLAS (the base
/// product added in place into the adapter's) and at ones that do not; and without autodiff.
#[test]
fn lora_linear_matches_the_ops_one_by_one_forward_and_backward() {
    let device = burn::tensor::Device::flex().autodiff();
    for (n, k, r, m) in [(64, 48, 8, 40), (70, 33, 16, 20), (3, 5, 2, 7)] {
        let t = |rows: usize, cols: usize, seed: u64| Tensor::<2>::from_data(TensorData::new(noise(rows * cols, seed, 1.0), [rows, cols]), &device);
        let (x0, w, a0, b0, g) = (t(n, k, 1), t(k, m, 2), t(k, r, 3), t(r, m, 4), t(n, m, 5));
        let run = |fused: bool| {
            let (x, a, b) = (x0.clone().detach().require_grad(), a0.clone().detach().require_grad(), b0.clone().detach().require_grad());
            let y = if fused { lora_linear(x.clone(), w.clone(), a.clone(), b.clone(), 1.5) } else { x.clone().matmul(w.clone()) + x.clone().matmul(a.clone()).mul_scalar(1.5).matmul(b.clone()) };
            let grads = (y.clone() * g.clone()).sum().backward();
            let grad = |t: &Tensor<2>| t.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
            (values(y.inner()), grad(&x), grad(&a), grad(&b))
        };
        let ((y, gx, ga, gb), (y0, gx0, ga0, gb0)) = (run(true), run(false));
        let what = format!("{n}×{k}, rank {r}, out {m}");
        assert_close(&format!("{what}: values"), &y, &y0, 1e-5);
        assert_close(&format!("{what}: x's gradient"), &gx, &gx0, 1e-5);
        assert_close(&format!("{what}: A's gradient"), &ga, &ga0, 1e-5);
        assert_close(&format!("{what}: B's gradient"), &gb, &gb0, 1e-5);
        let plain = |t: &Tensor<2>| t.clone().inner();
        let y1 = lora_linear(plain(&x0), plain(&w), plain(&a0), plain(&b0), 1.5);
        assert_close(&format!("{what}: values without autodiff"), &values(y1), &y0, 1e-5);
    }
}

/// The fused rotary embedding against the composed form (`x·cos + cat(−x₂, x₁)·sin`, as the layer
/// computed it before): values and x's gradient under autodiff, with tables shared by the batch
/// and one per batch row, and with x a strided view (as q and k arrive from their heads' swap).
/// 540 rows of 16 are enough work for rayon's threads natively, in blocks of 256 rows that do not
/// line up with a batch row's 180.
#[test]
fn rotary_matches_the_composed_form_forward_and_backward() {
    let device = burn::tensor::Device::flex().autodiff();
    let (b, h, t, hs) = (3, 4, 45, 16);
    for per_row in [false, true] {
        let bc = if per_row { b } else { 1 };
        let table = |seed| Tensor::<4>::from_data(TensorData::new(noise(bc * t * hs, seed, 1.0), [bc, 1, t, hs]), &device);
        let (cos, sin) = (table(41), table(42));
        let x0 = Tensor::<4>::from_data(TensorData::new(noise(b * t * h * hs, 43, 2.0), [b, t, h, hs]), &device).swap_dims(1, 2);
        let w = Tensor::<4>::from_data(TensorData::new(noise(b * h * t * hs, 44, 1.0), [b, h, t, hs]), &device);
        let run = |fused: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if fused {
                rotary(x.clone(), cos.clone(), sin.clone())
            } else {
                let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..hs / 2]);
                let x2 = x.clone().slice([0..b, 0..h, 0..t, hs / 2..hs]);
                x.clone() * cos.clone() + Tensor::cat(vec![x2.neg(), x1], 3) * sin.clone()
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            (read4(y.inner()), x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap())
        };
        let ((y, g), (y0, g0)) = (run(true), run(false));
        assert_close(&format!("rotary (tables per row {per_row}): values"), &y, &y0, 1e-6);
        assert_close(&format!("rotary (tables per row {per_row}): x's gradient"), &g, &g0, 1e-6);
    }
}

/// Products with bfloat16 weights (a bf16 checkpoint kept as stored for decoding) against f64
/// sums of the same values widened. Weights kept as `Model::keep_bf16_weights` keeps them (the
/// transposed view of `[out, in]` rows) take the one-pass kernel up to `BF16_MAX_ROWS` rows,
/// with every tail of its 32-value blocks and a strided `x` (one row of 512 by 1376 split across
/// oneMKL's team where it is loaded, as decoding's are); more rows, and a bf16 weight in any
/// other layout, take a widened f32 product.
#[test]
fn bf16_weight_products_equal_f64_sums_of_the_widened_weights() {
    let device = burn::tensor::Device::flex();
    let cases = [(1, 512, 1376, false), (3, 7, 5, false), (8, 45, 33, true), (2, 1, 9, false), (9, 13, 17, false), (40, 30, 20, true), (1, 64, 3, false)];
    for ((m, k, n, transposed_x), as_kept) in cases.into_iter().flat_map(|c| [(c, true), (c, false)]) {
        let x: Vec<f32> = crate::quant::nf4::test_noise(m * k, 11, 2.0);
        let w: Vec<f32> = crate::quant::nf4::test_noise(k * n, 12, 0.5);
        let widened: Vec<f32> = w.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
        let xt = if transposed_x {
            Tensor::<2>::from_data(TensorData::new(crate::model::load::transpose(&x, m, k), [k, m]), &device).transpose()
        } else {
            Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device)
        };
        let wt = if as_kept {
            let rows = crate::model::load::transpose(&w, k, n);
            Tensor::<2>::from_data(TensorData::new(rows, [n, k]), &device).cast(burn::tensor::FloatDType::BF16).transpose()
        } else {
            Tensor::<2>::from_data(TensorData::new(w, [k, n]), &device).cast(burn::tensor::FloatDType::BF16)
        };
        assert_eq!((wt.dtype(), wt.dims()), (DType::BF16, [k, n]));
        let got = values(matmul(xt, wt));
        let want: Vec<f32> = (0..m * n).map(|i| (0..k).map(|j| x[i / n * k + j] as f64 * widened[j * n + i % n] as f64).sum::<f64>() as f32).collect();
        assert_close(&format!("{m}×{k}·{k}×{n}, as kept {as_kept}"), &got, &want, 1e-5);
    }
}
