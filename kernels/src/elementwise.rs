//! Element-wise and row kernels: the rotary embedding, AdamW, SiLU·gate, partial sums, the
//! softmax and log-sum-exp rows, RMSNorm, each with the gradients the model needs.

use super::*;

simd_fn! {
    /// One row of the rotary position embedding over the row's two halves x₁, x₂:
    /// `out = x·cos + (−x₂, x₁)·sin`, as transformers' `x·cos + rotate_half(x)·sin`. With
    /// `transpose`, the transposed map (the gradient given the output's): `out = x·cos +
    /// (x₂·sin₂, −x₁·sin₁)`.
    pub fn rotary(x: &[f32], cos: &[f32], sin: &[f32], transpose: bool, out: &mut [f32]) {
        let n = x.len();
        assert!(n % 2 == 0 && cos.len() == n && sin.len() == n && out.len() == n);
        let half = n / 2;
        let (x1, x2) = x.split_at(half);
        let (c1, c2) = cos.split_at(half);
        let (s1, s2) = sin.split_at(half);
        let (o1, o2) = out.split_at_mut(half);
        if transpose {
            for j in 0..half {
                o1[j] = x1[j] * c1[j] + x2[j] * s2[j];
                o2[j] = x2[j] * c2[j] - x1[j] * s1[j];
            }
        } else {
            for j in 0..half {
                o1[j] = x1[j] * c1[j] - x2[j] * s1[j];
                o2[j] = x2[j] * c2[j] + x1[j] * s2[j];
            }
        }
    }
}

/// One AdamW update's constants, each rounded to f32 as a tensor op rounds a scalar operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwStep {
    /// The gradient's clipping factor (1: none).
    pub clip: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `√(1 − β₂ᵗ)`, the second moment's bias correction.
    pub sqrt_bc2: f32,
    pub eps: f32,
    /// `1 − lr · weight decay` (1: none).
    pub decay: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step: f32,
}

simd_fn! {
    /// One AdamW update in place, element-wise, in `torch.optim.AdamW`'s order and with one
    /// rounding an operation, as the composed tensor ops had it: `g ← g·clip`,
    /// `m ← β₁·m + (1 − β₁)·g`, `v ← β₂·v + (1 − β₂)·g²`,
    /// `p ← p·decay − (m / (√v / √(1 − β₂ᵗ) + ε))·step`.
    pub fn adamw(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamwStep) {
        assert!(m.len() == p.len() && v.len() == p.len() && g.len() == p.len());
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            let g = g * s.clip;
            *m = *m * s.beta1 + g * s.one_minus_beta1;
            *v = *v * s.beta2 + (g * g) * s.one_minus_beta2;
            let denom = v.sqrt() / s.sqrt_bc2 + s.eps;
            *p = *p * s.decay - (*m / denom) * s.step;
        }
    }
}

simd_fn! {
    /// The sum of the `parts.len() / out.len()` consecutive parts of `parts`, element-wise, in
    /// their order: `out = ((p₀ + p₁) + p₂) + …` (a product's partial sums over parts of its
    /// inner dimension).
    pub fn sum_parts(parts: &[f32], out: &mut [f32]) {
        let n = out.len();
        assert!(n > 0 && parts.len() >= n && parts.len() % n == 0, "sum_parts: {} values are not parts of {n}", parts.len());
        let (first, rest) = parts.split_at(n);
        out.copy_from_slice(first);
        for part in rest.chunks_exact(n) {
            for (o, &p) in out.iter_mut().zip(part) {
                *o += p;
            }
        }
    }
}

simd_fn! {
    /// `out = silu(gate) · up`, element-wise.
    pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        assert!(gate.len() == out.len() && up.len() == out.len());
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    }
}

simd_fn! {
    /// `out = grad · up · σ(gate) · (1 + gate · (1 − σ(gate)))`: the gradient of `silu_mul` with
    /// respect to `gate`.
    pub fn silu_mul_grad_gate(gate: &[f32], up: &[f32], grad: &[f32], out: &mut [f32]) {
        assert!(gate.len() == out.len() && up.len() == out.len() && grad.len() == out.len());
        for (((o, &g), &u), &d) in out.iter_mut().zip(gate).zip(up).zip(grad) {
            let s = sigmoid(g);
            *o = d * u * s * (1.0 + g * (1.0 - s));
        }
    }
}

simd_fn! {
    /// `ln Σ exp(x)` over a row, computed as `max + ln Σ exp(x − max)`.
    pub fn log_sum_exp(row: &[f32]) -> f32 {
        lse(row)
    }
}

simd_fn! {
    /// `out = −g · exp(row − lse)`: minus `g` times the row's softmax, given its log-sum-exp. (The
    /// gradient of a target's log-probability adds `g` at the target.)
    pub fn scaled_softmax_neg(row: &[f32], lse: f32, g: f32, out: &mut [f32]) {
        assert_eq!(row.len(), out.len());
        for (o, &x) in out.iter_mut().zip(row) {
            *o = -g * exp_inline(x - lse);
        }
    }
}

simd_fn! {
    /// `out = softmax(row)`, as `exp(x − max) / Σ exp(x − max)`. (Not `exp(x − lse)`: where
    /// every value is a large negative mask, -1e30, `max + ln Σ` rounds back to `max` and each
    /// value would get 1.)
    pub fn softmax(row: &[f32], out: &mut [f32]) {
        assert_eq!(row.len(), out.len());
        let max = row_max(row);
        let (n, body) = (row.len(), row.len() - row.len() % LANES);
        let mut sums = [0f32; LANES];
        for (o, c) in out[..body].chunks_exact_mut(LANES).zip(row[..body].chunks_exact(LANES)) {
            for l in 0..LANES {
                o[l] = exp_inline(c[l] - max);
                sums[l] += o[l];
            }
        }
        for i in body..n {
            out[i] = exp_inline(row[i] - max);
        }
        let inv = 1.0 / (sums.iter().sum::<f32>() + out[body..].iter().sum::<f32>());
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

simd_fn! {
    /// `out = y · (g − Σ g·y)`: the gradient of a softmax row `y` given the output's gradient `g`.
    pub fn softmax_grad(y: &[f32], g: &[f32], out: &mut [f32]) {
        assert!(y.len() == out.len() && g.len() == out.len());
        let dot = dot(y, g);
        for ((o, &yi), &gi) in out.iter_mut().zip(y).zip(g) {
            *o = yi * (gi - dot);
        }
    }
}

/// `1/√(mean(x²) + eps)` of a row.
#[inline(always)]
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    1.0 / (dot(x, x) / x.len().max(1) as f32 + eps).sqrt()
}

simd_fn! {
    /// RMSNorm of a row: `out = x · r · w`, `r = 1/√(mean(x²) + eps)`.
    pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        assert!(x.len() == out.len() && w.len() == out.len());
        let r = rms_scale(x, eps);
        for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
            *o = xi * r * wi;
        }
    }
}

simd_fn! {
    /// The gradient of a row's RMSNorm with respect to `x`, given the output's gradient `g`:
    /// `r·w·g − x · r³ · mean(w·g·x)`.
    pub fn rms_norm_grad(x: &[f32], w: &[f32], g: &[f32], eps: f32, out: &mut [f32]) {
        assert!(x.len() == out.len() && w.len() == out.len() && g.len() == out.len());
        let r = rms_scale(x, eps);
        let (n, body) = (x.len(), x.len() - x.len() % LANES);
        let mut sums = [0f32; LANES];
        for ((c, d), e) in x[..body].chunks_exact(LANES).zip(g[..body].chunks_exact(LANES)).zip(w[..body].chunks_exact(LANES)) {
            for k in 0..LANES {
                sums[k] += c[k] * d[k] * e[k];
            }
        }
        let dot: f32 = sums.iter().sum::<f32>() + (body..n).map(|i| x[i] * g[i] * w[i]).sum::<f32>();
        let k = r * r * r * dot / n.max(1) as f32;
        for (((o, &xi), &wi), &gi) in out.iter_mut().zip(x).zip(w).zip(g) {
            *o = r * wi * gi - xi * k;
        }
    }
}

simd_fn! {
    /// Add a row's share of the RMSNorm weight's gradient: `acc += g · x · r`.
    pub fn rms_norm_grad_weight_add(x: &[f32], g: &[f32], eps: f32, acc: &mut [f32]) {
        assert!(x.len() == acc.len() && g.len() == acc.len());
        let r = rms_scale(x, eps);
        for ((a, &xi), &gi) in acc.iter_mut().zip(x).zip(g) {
            *a += gi * xi * r;
        }
    }
}
