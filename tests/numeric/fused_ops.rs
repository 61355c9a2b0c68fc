//! The fused ops on the device under test (the WGSL kernels on wgpu, the CPU kernels on flex)
//! against references computed here in f64.

use burn::tensor::{Tensor, TensorData};
use tinytune::model::fused::{AdamwStep, adamw};

use crate::device_under_test;

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// One AdamW update on the device against the formula in f64, over a tensor large enough to
/// need more than one row of workgroups' worth of invocations, with clipping and weight decay,
/// and with zero moments (the first step).
#[test]
fn adamw_on_the_device_matches_the_formula() {
    let opened = device_under_test();
    let (rows, cols) = (300, 517);
    let n = rows * cols;
    let s = AdamwStep {
        clip: 0.5,
        beta1: 0.9,
        one_minus_beta1: 0.1,
        beta2: 0.999,
        one_minus_beta2: 0.001,
        sqrt_bc2: (1.0f64 - 0.999f64.powi(3)).sqrt() as f32,
        eps: 1e-8,
        decay: 1.0 - 2e-3 * 0.01,
        step: (2e-3 / (1.0 - 0.9f64.powi(3))) as f32,
    };
    for first in [false, true] {
        let (p, g) = (values(n, 1, 1.0), values(n, 2, 0.1));
        let (m, v) = if first { (vec![0.0; n], vec![0.0; n]) } else { (values(n, 3, 0.01), values(n, 4, 1e-4).iter().map(|x| x.abs()).collect()) };
        let t = |x: &Vec<f32>| Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, cols]), &opened.device);
        let [pn, mn, vn] = adamw(t(&p), t(&g), t(&m), t(&v), s).map(|x| x.into_data().try_to_vec::<f32>().unwrap());
        let f = |x: f32| x as f64;
        for i in 0..n {
            let gi = f(g[i]) * f(s.clip);
            let (m_old, m_new) = (f(m[i]) * f(s.beta1), gi * f(s.one_minus_beta1));
            let (v_old, v_new) = (f(v[i]) * f(s.beta2), gi * gi * f(s.one_minus_beta2));
            let (mi, vi) = (m_old + m_new, v_old + v_new);
            let (kept, update) = (f(p[i]) * f(s.decay), mi / (vi.sqrt() / f(s.sqrt_bc2) + f(s.eps)) * f(s.step));
            // Each within a few f32 roundings of the terms it sums (a sum may cancel).
            for (what, got, want, scale) in [("m", mn[i], mi, m_old.abs() + m_new.abs()), ("v", vn[i], vi, v_old + v_new), ("p", pn[i], kept - update, kept.abs() + update.abs())] {
                assert!((f(got) - want).abs() <= 1e-6 * scale, "{} (first step {first}): {what}[{i}] = {got}, want {want}", opened.info.summary());
            }
        }
    }
}

/// RMSNorm and SiLU·gate on the device under autodiff (the WGSL kernels forward and backward on
/// wgpu) against their formulas in f64: values and the gradients to every input. Rows longer
/// than a workgroup and not a multiple of it.
#[test]
fn rms_norm_and_silu_mul_on_the_device_match_their_formulas_forward_and_backward() {
    use tinytune::model::fused::{rms_norm, silu_mul};
    let opened = device_under_test();
    let device = opened.device.clone().autodiff();
    let (rows, cols) = (37, 300);
    let n = rows * cols;
    let (x, w, u, up) = (values(n, 5, 2.0), values(cols, 6, 1.0), values(n, 7, 1.0), values(n, 8, 3.0));
    let t = |v: &Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v.clone(), shape), &device).require_grad();
    let read = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let f = |x: f32| x as f64;
    let check = |what: &str, got: &[f32], want: &[f64]| {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((f(g) - w).abs() <= 2e-5 * scale.max(1e-3), "{}: {what}[{i}] = {g}, want {w}", opened.info.summary());
        }
    };

    // RMSNorm: y = x·r·w, r = 1 / √(mean(x²) + eps); the loss Σ y·u.
    let eps = 1e-5;
    let (xt, wt) = (t(&x, [rows, cols]), Tensor::<1>::from_data(TensorData::new(w.clone(), [cols]), &device).require_grad());
    let y = rms_norm(xt.clone(), wt.clone(), eps);
    let grads = (y.clone() * Tensor::<2>::from_data(TensorData::new(u.clone(), [rows, cols]), &device)).sum().backward();
    let (mut want_y, mut want_dx, mut want_dw) = (vec![0f64; n], vec![0f64; n], vec![0f64; cols]);
    for i in 0..rows {
        let row = i * cols..(i + 1) * cols;
        let r = 1.0 / (x[row.clone()].iter().map(|&v| f(v) * f(v)).sum::<f64>() / cols as f64 + eps).sqrt();
        let dot: f64 = row.clone().map(|k| f(u[k]) * f(w[k - i * cols]) * f(x[k])).sum();
        for k in row {
            let j = k - i * cols;
            want_y[k] = f(x[k]) * r * f(w[j]);
            want_dx[k] = r * f(w[j]) * f(u[k]) - f(x[k]) * r * r * r * dot / cols as f64;
            want_dw[j] += f(u[k]) * f(x[k]) * r;
        }
    }
    check("rms_norm", &read(y.inner()), &want_y);
    check("rms_norm's x gradient", &read(xt.grad(&grads).unwrap()), &want_dx);
    check("rms_norm's weight gradient", &wt.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(), &want_dw);

    // SiLU·gate: y = g·σ(g)·up; the loss Σ y·u.
    let (gt, ut) = (t(&x, [rows, cols]), t(&up, [rows, cols]));
    let y = silu_mul(gt.clone(), ut.clone());
    let grads = (y.clone() * Tensor::<2>::from_data(TensorData::new(u.clone(), [rows, cols]), &device)).sum().backward();
    let sig = |g: f64| 1.0 / (1.0 + (-g).exp());
    let want_y: Vec<f64> = (0..n).map(|k| f(x[k]) * sig(f(x[k])) * f(up[k])).collect();
    let want_dg: Vec<f64> = (0..n).map(|k| f(u[k]) * f(up[k]) * sig(f(x[k])) * (1.0 + f(x[k]) * (1.0 - sig(f(x[k]))))).collect();
    let want_du: Vec<f64> = (0..n).map(|k| f(u[k]) * f(x[k]) * sig(f(x[k]))).collect();
    check("silu_mul", &read(y.inner()), &want_y);
    check("silu_mul's gate gradient", &read(gt.grad(&grads).unwrap()), &want_dg);
    check("silu_mul's up gradient", &read(ut.grad(&grads).unwrap()), &want_du);
}

/// The gradient norm's running sum of squares on the device against f64, over a tensor longer
/// than a workgroup and not a multiple of it.
#[test]
fn sum_squares_add_on_the_device_matches_f64() {
    use tinytune::model::fused::sum_squares_add;
    let opened = device_under_test();
    let x = values(300 * 37, 9, 0.5);
    let want = 1.25 + x.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
    let t = Tensor::<2>::from_data(TensorData::new(x, [300, 37]), &opened.device);
    let acc = Tensor::<1>::from_data(TensorData::new(vec![1.25f32], [1]), &opened.device);
    let got = sum_squares_add(t, acc).into_data().try_to_vec::<f32>().unwrap()[0] as f64;
    assert!((got - want).abs() <= 1e-5 * want, "{}: {got}, want {want}", opened.info.summary());
}

/// The rotary embedding on the device under autodiff (the WGSL kernel and its transpose on wgpu)
/// against the formula in f64, values and x's gradient, with tables one per batch row.
#[test]
fn rotary_on_the_device_matches_the_formula_forward_and_backward() {
    use tinytune::model::fused::rotary;
    let opened = device_under_test();
    let device = opened.device.clone().autodiff();
    let (b, h, t, hs) = (2, 3, 11, 8);
    let n = b * h * t * hs;
    let half = hs / 2;
    let (x, cos, sin, u) = (values(n, 11, 2.0), values(b * t * hs, 12, 1.0), values(b * t * hs, 13, 1.0), values(n, 14, 1.0));
    let t4 = |v: &Vec<f32>, shape: [usize; 4]| Tensor::<4>::from_data(TensorData::new(v.clone(), shape), &device);
    let xt = t4(&x, [b, h, t, hs]).require_grad();
    let y = rotary(xt.clone(), t4(&cos, [b, 1, t, hs]), t4(&sin, [b, 1, t, hs]));
    let grads = (y.clone() * t4(&u, [b, h, t, hs])).sum().backward();
    let (got_y, got_g) = (y.inner().into_data().try_to_vec::<f32>().unwrap(), xt.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap());
    let f = |v: f32| v as f64;
    let (mut want_y, mut want_g) = (vec![0f64; n], vec![0f64; n]);
    for r in 0..b * h * t {
        let c = ((r / (h * t)) * t + r % t) * hs;
        for j in 0..hs {
            let (i, partner, sign) = if j < half { (r * hs + j, r * hs + j + half, -1.0) } else { (r * hs + j, r * hs + j - half, 1.0) };
            want_y[i] = f(x[i]) * f(cos[c + j]) + sign * f(x[partner]) * f(sin[c + j]);
            // y[partner] holds x[i] · sin at the partner's column with the opposite sign.
            let pj = if j < half { j + half } else { j - half };
            want_g[i] = f(u[i]) * f(cos[c + j]) - sign * f(u[partner]) * f(sin[c + pj]);
        }
    }
    for (what, got, want) in [("rotary", &got_y, &want_y), ("rotary's gradient", &got_g, &want_g)] {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((f(g) - w).abs() <= 1e-5 * w.abs().max(1.0), "{}: {what}[{i}] = {g}, want {w}", opened.info.summary());
        }
    }
}
