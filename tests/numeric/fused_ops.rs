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
