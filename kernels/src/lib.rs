//! tinytune's fused element-wise kernels for the CPU engine: plain loops over `f32` slices that
//! the compiler vectorises (natively AVX2 and FMA where the CPU has them, chosen at run time,
//! else SSE2; simd128 in wasm). They live in a crate of their own so
//! that the dev profile builds them at opt-level 3, as it does every dependency (`Cargo.toml`):
//! tinytune itself is built at opt-level 1, where these loops stay scalar. Threads, tensors and
//! gradients are tinytune's business (`src/model/fused/`); nothing here allocates.

/// e^x in f32 without branches, so that loops over it vectorise: Cody–Waite reduction by ln 2 and
/// a degree-6 polynomial on [−ln2/2, ln2/2]. Within 2.5e-7 relative of the exact value where the
/// result is a normal number. Below −87.3 it gives 0 (so a masked score's -inf gives exactly 0);
/// above 88, about 1.7e38 rather than +inf (a sigmoid or a softmax cannot tell the difference).
/// NaN stays NaN.
#[inline(always)]
fn exp_inline(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer
    let xc = x.clamp(-87.3, 88.0);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ for an integer n in [-126, 127]: adding 2²³ + 127 leaves n + 127 in the low mantissa
    // bits, and shifting them up makes them the exponent. (No float-to-int conversion, which
    // does not vectorise as well; a NaN gives 0 here, and p keeps it NaN.)
    let e = p * f32::from_bits((n + 8_388_735.0).to_bits() << 23);
    // Below the clamp (a masked score's -inf among them) the answer is 0, as a select.
    if x < -87.3 { 0.0 } else { e }
}

/// A kernel compiled twice: for AVX2 and FMA, taken where the CPU has them (every x86-64 of the
/// last decade), and as built (SSE2, the x86-64 baseline; simd128 in wasm). What the body calls
/// must be `#[inline(always)]` so that it is compiled inside the AVX2 copy. The gemm kernels pick
/// their instruction set the same way, at run time.
macro_rules! simd_fn {
    ($(#[$m:meta])* pub fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($a: $t),*) $(-> $r)? {
                    body($($a),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // Safety: the CPU has both features, which is all `avx2` requires.
                    return unsafe { avx2($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_inline(-x))
}

/// `exp_inline` for one value (tests and callers outside the loops).
pub fn exp(x: f32) -> f32 {
    exp_inline(x)
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

/// Independent accumulators for the row reductions: one f32 accumulator must be summed in order,
/// eight can be a vector.
const LANES: usize = 8;

/// `log_sum_exp`, inlined into the kernels that call it.
#[inline(always)]
fn lse(row: &[f32]) -> f32 {
    let (body, tail) = row.split_at(row.len() - row.len() % LANES);
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for c in body.chunks_exact(LANES) {
        for k in 0..LANES {
            lanes[k] = lanes[k].max(c[k]);
        }
    }
    let max = tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sums = [0f32; LANES];
    for c in body.chunks_exact(LANES) {
        for k in 0..LANES {
            sums[k] += exp_inline(c[k] - max);
        }
    }
    let sum: f32 = sums.iter().sum::<f32>() + tail.iter().map(|&x| exp_inline(x - max)).sum::<f32>();
    max + sum.ln()
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
    /// `out = softmax(row)`.
    pub fn softmax(row: &[f32], out: &mut [f32]) {
        assert_eq!(row.len(), out.len());
        let lse = lse(row);
        for (o, &x) in out.iter_mut().zip(row) {
            *o = exp_inline(x - lse);
    }
    }
}

simd_fn! {
    /// `out = y · (g − Σ g·y)`: the gradient of a softmax row `y` given the output's gradient `g`.
    pub fn softmax_grad(y: &[f32], g: &[f32], out: &mut [f32]) {
        assert!(y.len() == out.len() && g.len() == out.len());
        let (body, tail) = y.split_at(y.len() - y.len() % LANES);
        let mut sums = [0f32; LANES];
        for (c, d) in body.chunks_exact(LANES).zip(g.chunks_exact(LANES)) {
            for k in 0..LANES {
                sums[k] += c[k] * d[k];
            }
    }
    let dot: f32 = sums.iter().sum::<f32>() + tail.iter().zip(&g[body.len()..]).map(|(a, b)| a * b).sum::<f32>();
    for ((o, &yi), &gi) in out.iter_mut().zip(y).zip(g) {
        *o = yi * (gi - dot);
    }
    }
}

/// `1/√(mean(x²) + eps)` of a row.
#[inline(always)]
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let (body, tail) = x.split_at(x.len() - x.len() % LANES);
    let mut sums = [0f32; LANES];
    for c in body.chunks_exact(LANES) {
        for k in 0..LANES {
            sums[k] += c[k] * c[k];
        }
    }
    let sq: f32 = sums.iter().sum::<f32>() + tail.iter().map(|v| v * v).sum::<f32>();
    1.0 / (sq / x.len().max(1) as f32 + eps).sqrt()
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

// The tests of these kernels are tinytune's (src/model/fused/tests.rs), so that `cargo test` runs them.
