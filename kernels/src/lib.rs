//! tinytune's fused element-wise kernels for the CPU engine: plain loops over `f32` slices that
//! the compiler vectorises (natively AVX-512, or AVX2 and FMA, where the CPU has them, chosen at
//! run time, else SSE2; simd128 in wasm). They live in a crate of their own so
//! that the dev profile builds them at opt-level 3, as it does every dependency (`Cargo.toml`):
//! tinytune itself is built at opt-level 1, where these loops stay scalar. Threads, tensors and
//! gradients are tinytune's business (`src/model/fused/`); nothing here allocates.
//!
//! This file holds the instruction-set dispatch (`simd`, `simd_fn!`) and the helpers the kernels
//! share; the kernels are in `elementwise.rs`, `products.rs`, `q4.rs`, `q8.rs` and `attention.rs`, all
//! re-exported here.

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

/// The widest vector instructions the kernels use on this CPU (x86-64): AVX-512 (F, VL, BW, DQ,
/// with AVX2 and FMA), else AVX2 and FMA, else the baseline the crate is built for (SSE2).
/// Found once; `TINYTUNE_SIMD=avx2` or `=baseline` caps it (to compare them on one machine).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Simd {
    Baseline = 1,
    Avx2 = 2,
    Avx512 = 3,
}

#[cfg(target_arch = "x86_64")]
pub fn simd() -> Simd {
    use std::sync::atomic::{AtomicU8, Ordering};
    static LEVEL: AtomicU8 = AtomicU8::new(0);
    match LEVEL.load(Ordering::Relaxed) {
        1 => Simd::Baseline,
        2 => Simd::Avx2,
        3 => Simd::Avx512,
        _ => {
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            let avx512 = avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq");
            let found = if avx512 { Simd::Avx512 } else if avx2 { Simd::Avx2 } else { Simd::Baseline };
            let level = match std::env::var("TINYTUNE_SIMD").ok().as_deref() {
                Some("baseline" | "sse2") => Simd::Baseline,
                Some("avx2") => found.min(Simd::Avx2),
                None | Some("") => found,
                Some(other) => {
                    eprintln!("warning: TINYTUNE_SIMD={other} is not a cap the kernels know; give avx2 or baseline, or unset it (using {found:?}, the widest this CPU has)");
                    found
                }
            };
            LEVEL.store(level as u8, Ordering::Relaxed);
            level
        }
    }
}

/// A kernel compiled three times: for AVX-512, for AVX2 and FMA, and as built (SSE2, the x86-64
/// baseline; simd128 in wasm), the widest the CPU has taken at run time (`simd`). What the body
/// calls must be `#[inline(always)]` so that it is compiled inside each copy. The body sees
/// `ISA`, the copy's `Simd` level as a number (for `madd`, and for register tiles sized to it).
/// The gemm kernels pick their instruction set the same way, at run time.
macro_rules! simd_fn {
    ($(#[$m:meta])* pub fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<const ISA: u8>($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($a: $t),*) $(-> $r)? {
                    body::<{ Simd::Avx512 as u8 }>($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($a: $t),*) $(-> $r)? {
                    body::<{ Simd::Avx2 as u8 }>($($a),*)
                }
                match crate::simd() {
                    // Safety: `simd` found every feature each copy is compiled for.
                    crate::Simd::Avx512 => return unsafe { avx512($($a),*) },
                    crate::Simd::Avx2 => return unsafe { avx2($($a),*) },
                    crate::Simd::Baseline => {}
                }
            }
            body::<{ Simd::Baseline as u8 }>($($a),*)
        }
    };
}

/// `a·b + c`, fused into one instruction (one rounding) in the copies compiled with FMA, as
/// two where there is none (SSE2, wasm), where a fused multiply-add would be a slow library call.
/// A plain `a * b + c` is never fused: Rust does not contract floating-point expressions.
#[inline(always)]
fn madd<const ISA: u8>(a: f32, b: f32, c: f32) -> f32 {
    if ISA >= Simd::Avx2 as u8 { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_inline(-x))
}

/// `exp_inline` for one value (tests and callers outside the loops).
pub fn exp(x: f32) -> f32 {
    exp_inline(x)
}

/// Independent accumulators for the row reductions: one f32 accumulator must be summed in order,
/// eight can be a vector.
const LANES: usize = 8;

/// The largest value of a row.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let (body, tail) = row.split_at(row.len() - row.len() % LANES);
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for c in body.chunks_exact(LANES) {
        for k in 0..LANES {
            lanes[k] = lanes[k].max(c[k]);
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// `log_sum_exp`, inlined into the kernels that call it.
#[inline(always)]
fn lse(row: &[f32]) -> f32 {
    let (body, tail) = row.split_at(row.len() - row.len() % LANES);
    let max = row_max(row);
    let mut sums = [0f32; LANES];
    for c in body.chunks_exact(LANES) {
        for k in 0..LANES {
            sums[k] += exp_inline(c[k] - max);
        }
    }
    let sum: f32 = sums.iter().sum::<f32>() + tail.iter().map(|&x| exp_inline(x - max)).sum::<f32>();
    max + sum.ln()
}

/// `Σ a·b` over two rows of one length.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let body = a.len() - a.len() % LANES;
    let mut sums = [0f32; LANES];
    for (c, d) in a[..body].chunks_exact(LANES).zip(b[..body].chunks_exact(LANES)) {
        for k in 0..LANES {
            sums[k] += c[k] * d[k];
        }
    }
    sums.iter().sum::<f32>() + a[body..].iter().zip(&b[body..]).map(|(x, y)| x * y).sum::<f32>()
}

mod attention;
mod elementwise;
mod products;
mod q4;
mod q8;
pub use attention::*;
pub use elementwise::*;
pub use products::*;
pub use q4::*;
pub use q8::*;
