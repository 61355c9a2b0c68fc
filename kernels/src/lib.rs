//! tinytune's fused element-wise kernels for the CPU engine: plain loops over `f32` slices that
//! the compiler vectorises (natively AVX-512, or AVX2 and FMA, where the CPU has them, chosen at
//! run time, else SSE2; simd128 in wasm). They live in a crate of their own so
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
    /// `out [m, n] = x [m, k] · wᵀ` with `w [n, k]` in bfloat16 (its raw bits, row-major: a
    /// Hugging Face `nn.Linear` weight as stored). Decoding is bound by how fast the weights
    /// stream from memory, and this reads them once, front to back, at half the bytes of f32.
    /// A bfloat16 value is the top half of the f32 with the same value, so widening is exact;
    /// every product and sum is in f32. Each row of `w` (a few KiB) serves every row of `x`
    /// while it is in L1. Meant for a few rows of `x`.
    pub fn matmul_bf16(x: &[f32], w: &[u16], m: usize, k: usize, n: usize, out: &mut [f32]) {
        assert!(x.len() >= m * k && w.len() >= k * n && out.len() >= m * n, "matmul_bf16: [{m}, {k}] by [{n}, {k}]ᵀ with slices of {}, {} and {}", x.len(), w.len(), out.len());
        const ACC: usize = 4 * LANES;
        let widen = |b: u16| f32::from_bits((b as u32) << 16);
        let body = k - k % ACC;
        for (j, wj) in w.chunks_exact(k).take(n).enumerate() {
            for r in 0..m {
                let xr = &x[r * k..][..k];
                let mut sums = [0f32; ACC];
                for (c, d) in xr[..body].chunks_exact(ACC).zip(wj[..body].chunks_exact(ACC)) {
                    for l in 0..ACC {
                        sums[l] += c[l] * widen(d[l]);
                    }
                }
                let mut total = sums.iter().sum::<f32>();
                for (a, &b) in xr[body..].iter().zip(&wj[body..]) {
                    total += a * widen(b);
                }
                out[r * n + j] = total;
            }
        }
    }
}

simd_fn! {
    /// `out [m, n] = a [m, k] · w [k, n]`, or `+=` with `add`, for a few rows of `a` and a
    /// row-major `w` (its rows `ldw` apart; `a`'s `lda`, `out`'s `ldo`): decoding's one-row
    /// products over weights held `[in, out]`. Such a product is bound by how fast `w` streams
    /// from memory; this reads it once, front to back, eight rows a pass, and updates each
    /// output value once a pass (the gemm crate's kernel, built for many rows, streamed at two
    /// thirds of this rate: `benches/decode_bandwidth.rs`). Each output value sums its k
    /// products in order of k, two chains of four a pass.
    pub fn matmul_rows(a: &[f32], lda: usize, m: usize, k: usize, w: &[f32], ldw: usize, n: usize, add: bool, out: &mut [f32], ldo: usize) {
        assert!(
            m == 0 || n == 0 || (a.len() >= (m - 1) * lda + k && out.len() >= (m - 1) * ldo + n && (k == 0 || w.len() >= (k - 1) * ldw + n)),
            "matmul_rows: [{m}, {k}] by [{k}, {n}] with slices of {}, {} and {} (strides {lda}, {ldw}, {ldo})", a.len(), w.len(), out.len()
        );
        for i in 0..m {
            let x = &a[i * lda..][..k];
            let o = &mut out[i * ldo..][..n];
            if !add {
                o.fill(0.0);
            }
            let mut r = 0;
            while r + 8 <= k {
                let row = |t: usize| &w[(r + t) * ldw..][..n];
                let (w0, w1, w2, w3, w4, w5, w6, w7) = (row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7));
                let xs = &x[r..r + 8];
                for j in 0..n {
                    let mut s = madd::<ISA>(xs[0], w0[j], o[j]);
                    let mut t = xs[1] * w1[j];
                    s = madd::<ISA>(xs[2], w2[j], s);
                    t = madd::<ISA>(xs[3], w3[j], t);
                    s = madd::<ISA>(xs[4], w4[j], s);
                    t = madd::<ISA>(xs[5], w5[j], t);
                    s = madd::<ISA>(xs[6], w6[j], s);
                    t = madd::<ISA>(xs[7], w7[j], t);
                    o[j] = s + t;
                }
                r += 8;
            }
            for (r, &xr) in x.iter().enumerate().skip(r) {
                for (oj, &wj) in o.iter_mut().zip(&w[r * ldw..][..n]) {
                    *oj = madd::<ISA>(xr, wj, *oj);
                }
            }
        }
    }
}

/// A 4-bit matrix `[rows, cols]` in its buffer of u32 words, as bytes (bitsandbytes' NF4 or FP4
/// layout as tinytune packs it; its `Q4Layout`, offsets in words): two codes a byte, the first in
/// the high nibble, from byte 0; a scale per block of `blocksize` values, an f32 at word
/// `absmax + block`, or with double quantization (`nested` > 0) a byte at byte `4·absmax + block`
/// that picks one of the 256 f32s at word `map`, times the f32 at word `absmax2 + block / nested`,
/// plus the f32 at word `offset`; the 16 code values at word `code`. Value `e` of the matrix is
/// `code[nibble e] · scale(e / blocksize)`.
#[derive(Clone, Copy, Debug)]
pub struct Q4View<'a> {
    pub bytes: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    pub blocksize: usize,
    pub nested: usize,
    pub code: usize,
    pub absmax: usize,
    pub absmax2: usize,
    pub map: usize,
    pub offset: usize,
}

impl Q4View<'_> {
    #[inline(always)]
    fn word(&self, i: usize) -> f32 {
        let b = &self.bytes[4 * i..4 * i + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    /// Block `blk`'s scale, with the arithmetic of `dequantize_words` (and `q4_dequant.wgsl`).
    #[inline(always)]
    fn scale(&self, blk: usize) -> f32 {
        if self.nested == 0 {
            self.word(self.absmax + blk)
        } else {
            self.word(self.map + self.bytes[4 * self.absmax + blk] as usize) * self.word(self.absmax2 + blk / self.nested) + self.word(self.offset)
        }
    }
}

impl Q4View<'_> {
    /// The 16 code values.
    #[inline(always)]
    fn codes(&self) -> [f32; 16] {
        let mut code = [0f32; 16];
        for (j, c) in code.iter_mut().enumerate() {
            *c = self.word(self.code + j);
        }
        code
    }
    /// `w[k]` = value `e + k` of the matrix from `table` (its block's scaled codes), any parity.
    #[inline(always)]
    fn look_up(&self, table: &[f32; 16], e: usize, w: &mut [f32]) {
        let mut k = 0;
        if e % 2 == 1 && !w.is_empty() {
            w[0] = table[(self.bytes[e / 2] & 0xf) as usize];
            k = 1;
        }
        while k + 2 <= w.len() {
            let b = self.bytes[(e + k) / 2];
            w[k] = table[(b >> 4) as usize];
            w[k + 1] = table[(b & 0xf) as usize];
            k += 2;
        }
        if k < w.len() {
            w[k] = table[(self.bytes[(e + k) / 2] >> 4) as usize];
        }
    }
}

/// Rows of `x` `q4_rows` takes at most.
pub const Q4_MAX_ROWS: usize = 8;

/// `out[(r − r0)·m + i] = Σ_c x[i·cols + c] · W[r, c]` for the `out.len() / m` rows of the
/// 4-bit matrix W from `r0` on: `x · Wᵀ` for a few rows of `x` (decoding) without writing W in
/// f32. Each value of W is the product `dequantize_words` forms (a block's 16 code values scaled
/// once, then looked up); the order of the sums is each copy's own.
///
/// With AVX-512, and rows and blocks in whole runs of 16 values (every model's hidden sizes, and
/// bitsandbytes' blocks of 64), the lookup is one `vpermps` a 16 values, with the scaled codes in a
/// register (with AVX2, two and a blend a 8): the one kernel here written with intrinsics, since a
/// table lookup is nothing a compiler vectorises. Elsewhere `q4_rows_portable` looks each value up
/// in turn.
pub fn q4_rows(q: Q4View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() >= Simd::Avx2 && q.cols % 16 == 0 && q.blocksize % 16 == 0 {
        q4_rows_checked(q, x, m, r0, out);
        // Safety: `simd` found the features of the copy it picks; the bounds were checked above.
        unsafe {
            if simd() == Simd::Avx512 { q4_rows_avx512(q, x, m, r0, out) } else { q4_rows_avx2(q, x, m, r0, out) }
        };
        return;
    }
    q4_rows_portable(q, x, m, r0, out)
}

fn q4_rows_checked(q: Q4View, x: &[f32], m: usize, r0: usize, out: &[f32]) {
    assert!(
        m > 0 && m <= Q4_MAX_ROWS && q.blocksize > 0 && x.len() >= m * q.cols && out.len() % m == 0 && r0 + out.len() / m <= q.rows
            && q.bytes.len() >= (q.rows * q.cols).div_ceil(2) && q.bytes.len() >= 4 * (q.code + 16),
        "q4_rows: {m} rows of {} by rows {r0}.. of a {}×{} matrix (blocks of {}) into {} values", q.cols, q.rows, q.cols, q.blocksize, out.len()
    );
}

/// The 16 codes in the 8 bytes at `p`, one a byte, in the matrix's order (the high nibble of each
/// byte first, as packed).
///
/// # Safety
/// `p` points to 8 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn codes_16(p: *const u8) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // Safety: the caller's 8 bytes; the rest is SSE2, which every x86-64 CPU has.
    unsafe {
        let (v, nibble) = (_mm_loadl_epi64(p as *const __m128i), _mm_set1_epi8(0x0f));
        _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16::<4>(v), nibble), _mm_and_si128(v, nibble))
    }
}

/// `q4_rows` for rows and blocks in whole runs of 16 values: each row's products summed in 16
/// lanes a row of `x`, then across the lanes.
///
/// # Safety
/// The CPU has AVX-512F; `q4_rows_checked` holds, `q.cols` and `q.blocksize` are multiples of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn q4_rows_avx512(q: Q4View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = q.cols;
    let code = q.codes();
    // Safety (all the loads below): the caller's bounds; a row's bytes [e/2, e/2 + cols/2) lie
    // inside `bytes` (rows up to q.rows), x's rows inside `x`.
    unsafe {
        let code = _mm512_loadu_ps(code.as_ptr());
        for (ri, o) in out.chunks_exact_mut(m).enumerate() {
            let e0 = (r0 + ri) * cols;
            let mut acc = [_mm512_setzero_ps(); Q4_MAX_ROWS];
            // The block of value e0 and how many of its values are left from there on.
            let (mut blk, mut left) = (e0 / q.blocksize, q.blocksize - e0 % q.blocksize);
            let mut table = _mm512_mul_ps(code, _mm512_set1_ps(q.scale(blk)));
            for c in (0..cols).step_by(16) {
                if left == 0 {
                    (blk, left) = (blk + 1, q.blocksize);
                    table = _mm512_mul_ps(code, _mm512_set1_ps(q.scale(blk)));
                }
                left -= 16;
                let w = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes_16(q.bytes.as_ptr().add((e0 + c) / 2))), table);
                for (i, a) in acc.iter_mut().enumerate().take(m) {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(i * cols + c)), w, *a);
                }
            }
            for (oi, a) in o.iter_mut().zip(&acc) {
                *oi = _mm512_reduce_add_ps(*a);
            }
        }
    }
}

/// `q4_rows` with AVX2 for rows and blocks in whole runs of 16 values: a 16-entry lookup is two
/// 8-entry `vpermps`, one per half of the scaled codes, and a blend on the index's bit 3.
///
/// # Safety
/// The CPU has AVX2 and FMA; `q4_rows_checked` holds, `q.cols` and `q.blocksize` are multiples of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q4_rows_avx2(q: Q4View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = q.cols;
    let code = q.codes();
    // Safety (all the loads below): as in `q4_rows_avx512`.
    unsafe {
        let (code_lo, code_hi) = (_mm256_loadu_ps(code.as_ptr()), _mm256_loadu_ps(code.as_ptr().add(8)));
        for (ri, o) in out.chunks_exact_mut(m).enumerate() {
            let e0 = (r0 + ri) * cols;
            let mut acc = [_mm256_setzero_ps(); Q4_MAX_ROWS];
            let (mut blk, mut left) = (e0 / q.blocksize, q.blocksize - e0 % q.blocksize);
            let a = _mm256_set1_ps(q.scale(blk));
            let (mut lo, mut hi) = (_mm256_mul_ps(code_lo, a), _mm256_mul_ps(code_hi, a));
            for c in (0..cols).step_by(16) {
                if left == 0 {
                    (blk, left) = (blk + 1, q.blocksize);
                    let a = _mm256_set1_ps(q.scale(blk));
                    (lo, hi) = (_mm256_mul_ps(code_lo, a), _mm256_mul_ps(code_hi, a));
                }
                left -= 16;
                let codes = codes_16(q.bytes.as_ptr().add((e0 + c) / 2));
                let w0 = look_up_8(_mm256_cvtepu8_epi32(codes), lo, hi);
                let w1 = look_up_8(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(codes)), lo, hi);
                for (i, a) in acc.iter_mut().enumerate().take(m) {
                    let xi = x.as_ptr().add(i * cols + c);
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(xi.add(8)), w1, _mm256_fmadd_ps(_mm256_loadu_ps(xi), w0, *a));
                }
            }
            for (oi, a) in o.iter_mut().zip(&acc) {
                let s = _mm_add_ps(_mm256_castps256_ps128(*a), _mm256_extractf128_ps::<1>(*a));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                *oi = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)));
            }
        }
    }
}

/// Values `e0..e0 + out.len()` of the 4-bit matrix in f32 (rows one after another): bit for bit
/// what `dequantize_words` gives (a block's codes scaled once, then looked up), in parts that
/// several threads can fill. With AVX-512 or AVX2, and the part and the blocks in whole runs of 16
/// values, the lookups are `q4_rows`' (`vpermps`); elsewhere one value at a time.
pub fn q4_dequant(q: Q4View, e0: usize, out: &mut [f32]) {
    assert!(
        q.blocksize > 0 && e0 + out.len() <= q.rows * q.cols && q.bytes.len() >= (q.rows * q.cols).div_ceil(2) && q.bytes.len() >= 4 * (q.code + 16),
        "q4_dequant: values {e0}..{} of a {}×{} matrix", e0 + out.len(), q.rows, q.cols
    );
    #[cfg(target_arch = "x86_64")]
    if simd() >= Simd::Avx2 && e0 % 16 == 0 && out.len() % 16 == 0 && q.blocksize % 16 == 0 {
        // Safety: `simd` found the features of the copy it picks; the bounds were checked above.
        unsafe {
            if simd() == Simd::Avx512 { q4_dequant_avx512(q, e0, out) } else { q4_dequant_avx2(q, e0, out) }
        };
        return;
    }
    q4_dequant_portable(q, e0, out)
}

/// `q4_dequant` one value at a time, any part.
pub fn q4_dequant_portable(q: Q4View, e0: usize, out: &mut [f32]) {
    let (bs, code) = (q.blocksize, q.codes());
    let mut table = [0f32; 16];
    let (mut k, mut blk) = (0, usize::MAX);
    while k < out.len() {
        let e = e0 + k;
        if e / bs != blk {
            blk = e / bs;
            let a = q.scale(blk);
            for (t, &v) in table.iter_mut().zip(&code) {
                *t = v * a;
            }
        }
        let len = (out.len() - k).min(bs - e % bs);
        q.look_up(&table, e, &mut out[k..k + len]);
        k += len;
    }
}

/// `q4_dequant` with AVX-512, 16 values a `vpermps`.
///
/// # Safety
/// The CPU has AVX-512F; `q4_dequant`'s bounds hold; `e0`, `out.len()` and `q.blocksize` are
/// multiples of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn q4_dequant_avx512(q: Q4View, e0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let code = q.codes();
    // Safety (the loads and stores below): values e0..e0 + out.len() are inside the matrix and
    // its bytes, and `out` holds out.len() values.
    unsafe {
        let code = _mm512_loadu_ps(code.as_ptr());
        let (mut blk, mut left) = (e0 / q.blocksize, q.blocksize - e0 % q.blocksize);
        let mut table = _mm512_mul_ps(code, _mm512_set1_ps(q.scale(blk)));
        for k in (0..out.len()).step_by(16) {
            if left == 0 {
                (blk, left) = (blk + 1, q.blocksize);
                table = _mm512_mul_ps(code, _mm512_set1_ps(q.scale(blk)));
            }
            left -= 16;
            let codes = codes_16(q.bytes.as_ptr().add((e0 + k) / 2));
            _mm512_storeu_ps(out.as_mut_ptr().add(k), _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes), table));
        }
    }
}

/// `q4_dequant` with AVX2, 8 values a pair of `vpermps` and a blend.
///
/// # Safety
/// As `q4_dequant_avx512`, with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q4_dequant_avx2(q: Q4View, e0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let code = q.codes();
    // Safety: as in `q4_dequant_avx512`.
    unsafe {
        let (code_lo, code_hi) = (_mm256_loadu_ps(code.as_ptr()), _mm256_loadu_ps(code.as_ptr().add(8)));
        let (mut blk, mut left) = (e0 / q.blocksize, q.blocksize - e0 % q.blocksize);
        let a = _mm256_set1_ps(q.scale(blk));
        let (mut lo, mut hi) = (_mm256_mul_ps(code_lo, a), _mm256_mul_ps(code_hi, a));
        for k in (0..out.len()).step_by(16) {
            if left == 0 {
                (blk, left) = (blk + 1, q.blocksize);
                let a = _mm256_set1_ps(q.scale(blk));
                (lo, hi) = (_mm256_mul_ps(code_lo, a), _mm256_mul_ps(code_hi, a));
            }
            left -= 16;
            let codes = codes_16(q.bytes.as_ptr().add((e0 + k) / 2));
            _mm256_storeu_ps(out.as_mut_ptr().add(k), look_up_8(_mm256_cvtepu8_epi32(codes), lo, hi));
            _mm256_storeu_ps(out.as_mut_ptr().add(k + 8), look_up_8(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(codes)), lo, hi));
        }
    }
}

/// The 8 values of the 16-entry table `lo`, `hi` at the indices in `idx` (0 to 15), with AVX2:
/// each half looked up by `vpermps` (which reads the low 3 bits), then picked by bit 3.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn look_up_8(idx: std::arch::x86_64::__m256i, lo: std::arch::x86_64::__m256, hi: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
}

simd_fn! {
    /// `q4_rows` value by value, any shape: the sums run in pieces of up to 64 values, each a
    /// dot product in eight lanes, added in order of c.
    pub fn q4_rows_portable(q: Q4View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
        let (cols, bs) = (q.cols, q.blocksize);
        q4_rows_checked(q, x, m, r0, out);
        let code = q.codes();
        let mut table = [0f32; 16];
        let mut buf = [0f32; 64];
        for (ri, o) in out.chunks_exact_mut(m).enumerate() {
            let e0 = (r0 + ri) * cols;
            let mut acc = [0f32; Q4_MAX_ROWS];
            let (mut c, mut blk) = (0, usize::MAX);
            while c < cols {
                let e = e0 + c;
                if e / bs != blk {
                    blk = e / bs;
                    let a = q.scale(blk);
                    for (t, &v) in table.iter_mut().zip(&code) {
                        *t = v * a;
                    }
                }
                let len = (cols - c).min(bs - e % bs).min(64);
                let w = &mut buf[..len];
                q.look_up(&table, e, w);
                for (i, a) in acc.iter_mut().enumerate().take(m) {
                    *a += dot(&x[i * cols + c..][..len], w);
                }
                c += len;
            }
            o.copy_from_slice(&acc[..m]);
        }
    }
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

/// The shape of one attention block: the `rows` query rows that share one key/value head (the
/// `rep` query heads of a group, each `t` positions, head-major), over `s` keys of `hs` values.
/// Query row `r` is position `r % t` and reads row `r % t` of the `[t, s]` additive mask.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBlock {
    pub rows: usize,
    pub t: usize,
    pub s: usize,
    pub hs: usize,
    pub scale: f32,
}

simd_fn! {
    /// One new token's attention for one key/value head (decoding): `q` is the `rows × hs`
    /// query heads that share the head, `k` and `v` its `s × hs` cached keys and values (read
    /// where the cache holds them, no copy), `mask` the `s` additive mask values. `out` gets
    /// `softmax(scale · q·kᵀ + mask) · v`, `rows × hs`; `scores` is room for `s` values. The
    /// arithmetic is the composed ops' (every key scored, then the mask added), row by row.
    pub fn attention_decode(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], hs: usize, scale: f32, out: &mut [f32], scores: &mut [f32]) {
        let s = mask.len();
        assert!(hs > 0 && k.len() >= s * hs && v.len() >= s * hs && scores.len() >= s && q.len() == out.len() && q.len() % hs == 0, "attention_decode: slices do not fit {s} keys of {hs}");
        let scores = &mut scores[..s];
        for (qr, o) in q.chunks_exact(hs).zip(out.chunks_exact_mut(hs)) {
            for ((x, kj), &m) in scores.iter_mut().zip(k.chunks_exact(hs)).zip(mask) {
                *x = scale * dot(qr, kj) + m;
            }
            let max = row_max(scores);
            let mut sum = 0f32;
            for x in scores.iter_mut() {
                *x = exp_inline(*x - max);
                sum += *x;
            }
            let inv = 1.0 / sum;
            o.fill(0.0);
            for (&p, vj) in scores.iter().zip(v.chunks_exact(hs)) {
                let p = p * inv;
                for (a, &b) in o.iter_mut().zip(vj) {
                    *a += p * b;
                }
            }
        }
    }
}

/// The head sizes the attention kernels are built for (loops of fixed length, so that the
/// accumulators stay in registers); others take burn's composed ops.
pub const ATTENTION_HEAD_SIZES: [usize; 6] = [8, 16, 32, 64, 80, 128];

/// Keys and values a tile of `at_b` covers.
const TILE: usize = 8;
/// Keys a score tile of `a_bt` covers; the score matrices' rows are padded to whole tiles.
const KT: usize = 16;
/// Query rows a score tile covers.
const TILE_ROWS: usize = 4;

impl AttentionBlock {
    fn s8(&self) -> usize {
        self.s.div_ceil(KT) * KT
    }

    /// The scratch `attention_forward` and `attention_backward` need, in f32s.
    pub fn scratch_len(&self) -> usize {
        let s8 = self.s8();
        2 * self.hs * s8 + 2 * self.rows * s8 + self.rows
    }

    /// Where each row's visible keys end: past its last mask value that is not -inf. Keys from
    /// there on get a probability of exactly 0, so they are skipped (the causal half).
    fn ends(&self, mask: &[f32], ends: &mut [f32]) {
        for (r, e) in ends.iter_mut().enumerate() {
            let i = r % self.t;
            let row = &mask[i * self.s..(i + 1) * self.s];
            *e = row.iter().rposition(|&m| m != f32::NEG_INFINITY).map_or(0, |j| j + 1) as f32;
        }
    }
}

/// `to[c · stride + r] = from[r · cols + c]`: a `[rows, cols]` matrix transposed into rows of
/// `stride` (≥ rows; the padding is left as it is).
#[inline(always)]
fn transpose_into(from: &[f32], rows: usize, cols: usize, to: &mut [f32], stride: usize) {
    for r in 0..rows {
        for c in 0..cols {
            to[c * stride + r] = from[r * cols + c];
        }
    }
}

/// `out[r][j] = Σ_d a[r][d] · bt[d][j]` for each row r (`a` `[rows, H]`) and the keys j below its
/// end, in tiles of 4 rows × 16 keys held in registers (`bt` `[H, s8]`, `out` `[rows, s8]`).
/// Past a row's end, up to its tile's, the values are left for the caller to overwrite.
#[inline(always)]
fn a_bt<const H: usize, const ISA: u8>(a: &[f32], bt: &[f32], s8: usize, ends: &[f32], out: &mut [f32]) {
    let rows = ends.len();
    for r in (0..rows).step_by(TILE_ROWS) {
        let n = (rows - r).min(TILE_ROWS);
        let end = ends[r..r + n].iter().fold(0f32, |m, &e| m.max(e)) as usize;
        for j in (0..end).step_by(KT) {
            let mut acc = [[0f32; KT]; TILE_ROWS];
            for d in 0..H {
                let bv: &[f32; KT] = bt[d * s8 + j..d * s8 + j + KT].try_into().unwrap();
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = a[(r + i.min(n - 1)) * H + d];
                    for l in 0..KT {
                        acc[l] = madd::<ISA>(av, bv[l], acc[l]);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(n) {
                out[(r + i) * s8 + j..(r + i) * s8 + j + KT].copy_from_slice(acc);
            }
        }
    }
}

/// `out[r] = Σ_j p[r][j] · v[j]` over each row's first `ends[r]` columns (`p` rows of `stride`,
/// `v` `[_, H]`, `out` `[rows, H]`), two rows at a time where registers allow: past a row's end,
/// up to its partner's, `p` must hold zeros (the probabilities and their gradient do).
#[inline(always)]
fn p_v<const H: usize, const ISA: u8>(p: &[f32], stride: usize, ends: &[f32], v: &[f32], out: &mut [f32]) {
    let n = ends.len();
    // Two rows a pass where both rows' accumulators fit the vector registers (2 × H values:
    // AVX-512's 32 registers of 16 hold them up to H = 128, AVX2's 16 of 8 up to H = 32).
    if !(H <= 32 || ISA == Simd::Avx512 as u8) {
        for (r, o) in out.chunks_exact_mut(H).enumerate().take(n) {
            let mut acc = [0f32; H];
            for (j, &pj) in p[r * stride..][..ends[r] as usize].iter().enumerate() {
                let vj: &[f32; H] = v[j * H..(j + 1) * H].try_into().unwrap();
                for d in 0..H {
                    acc[d] = madd::<ISA>(pj, vj[d], acc[d]);
                }
            }
            o.copy_from_slice(&acc);
        }
        return;
    }
    for r in (0..n).step_by(2) {
        // The last row of an odd count pairs with itself, its sums written once.
        let two = r + 1 < n;
        let end = if two { ends[r].max(ends[r + 1]) } else { ends[r] } as usize;
        let (p0, p1) = (&p[r * stride..][..end], &p[(r + usize::from(two)) * stride..][..end]);
        let (mut a0, mut a1) = ([0f32; H], [0f32; H]);
        for j in 0..end {
            let vj: &[f32; H] = v[j * H..(j + 1) * H].try_into().unwrap();
            let (x0, x1) = (p0[j], p1[j]);
            for d in 0..H {
                a0[d] = madd::<ISA>(x0, vj[d], a0[d]);
                a1[d] = madd::<ISA>(x1, vj[d], a1[d]);
            }
        }
        out[r * H..(r + 1) * H].copy_from_slice(&a0);
        if two {
            out[(r + 1) * H..(r + 2) * H].copy_from_slice(&a1);
        }
    }
}

/// `out[j] = Σ_r a[r][j] · b[r]` for the keys j < s (`a` `[rows, s8]`, `b` `[rows, H]`, `out`
/// `[s, H]`), over the rows that see key j (`ends[r] > j`), in tiles of 8 keys × 8 values held in
/// registers (8 × 16 in the AVX-512 copy, `at_b_avx512`): each row adds an outer product. H is a
/// multiple of 8.
#[inline(always)]
fn at_b<const H: usize, const ISA: u8>(a: &[f32], s8: usize, s: usize, ends: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if ISA == Simd::Avx512 as u8 && H % 16 == 0 {
        // Safety: this copy runs only where `simd` found AVX-512.
        return unsafe { at_b_avx512::<H>(a, s8, s, ends, b, out) };
    }
    for j in (0..s).step_by(TILE) {
        let keys = (s - j).min(TILE);
        for d in (0..H).step_by(TILE) {
            let mut acc = [[0f32; TILE]; TILE];
            let key = j as f32;
            for (r, &end) in ends.iter().enumerate() {
                if end > key {
                    let bv: &[f32; TILE] = b[r * H + d..r * H + d + TILE].try_into().unwrap();
                    let av: &[f32; TILE] = a[r * s8 + j..r * s8 + j + TILE].try_into().unwrap();
                    for (acc, &x) in acc.iter_mut().zip(av) {
                        for l in 0..TILE {
                            acc[l] = madd::<ISA>(x, bv[l], acc[l]);
                        }
                    }
                }
            }
            for (jj, acc) in acc.iter().enumerate().take(keys) {
                out[(j + jj) * H + d..(j + jj) * H + d + TILE].copy_from_slice(acc);
            }
        }
    }
}

/// `at_b` in AVX-512 registers: tiles of 8 keys × 16 values, one 16-wide fused multiply-add per
/// key and row (the portable tiles of 8 × 8 do half a register's width each). H is a multiple of
/// 16. Left to the compiler, 8 × 16 tiles of `[f32; 16]` spilled to memory (3.7× slower); these
/// took the attention's backward from about 525 to 405 µs at head size 64 and from 318 to 233 at
/// 32 (`benches/attention`, benches/README.md).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn at_b_avx512<const H: usize>(a: &[f32], s8: usize, s: usize, ends: &[f32], b: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps};
    let rows = ends.len();
    assert!(H % 16 == 0 && s <= s8 && s8 % TILE == 0 && a.len() >= rows * s8 && b.len() >= rows * H && out.len() >= s * H, "at_b: slices do not fit {rows} rows, {s} keys of {H}");
    for j in (0..s).step_by(TILE) {
        let keys = (s - j).min(TILE);
        for d in (0..H).step_by(16) {
            let mut acc: [__m512; TILE] = [_mm512_setzero_ps(); TILE];
            let key = j as f32;
            for (r, &end) in ends.iter().enumerate() {
                if end > key {
                    // Safety: r < rows and d + 16 ≤ H, so the 16 values lie in b's rows·H (asserted).
                    let bv = unsafe { _mm512_loadu_ps(b.as_ptr().add(r * H + d)) };
                    let av = &a[r * s8 + j..r * s8 + j + TILE];
                    for (acc, &x) in acc.iter_mut().zip(av) {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(x), bv, *acc);
                    }
                }
            }
            for (jj, acc) in acc.iter().enumerate().take(keys) {
                // Safety: j + jj < s and d + 16 ≤ H: inside out's s·H values.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((j + jj) * H + d), *acc) };
            }
        }
    }
}

/// Each row's probabilities, in place over its scores `q·kᵀ` (`[rows, s8]`): softmax of
/// `scale · score + mask` over the visible keys, 0 past them.
#[inline(always)]
fn softmax_rows(b: &AttentionBlock, mask: &[f32], ends: &[f32], scores: &mut [f32]) {
    let s8 = b.s8();
    for (r, row) in scores.chunks_exact_mut(s8).enumerate().take(b.rows) {
        let end = ends[r] as usize;
        if end == 0 {
            row.fill(0.0);
            continue;
        }
        // Whole vectors: the padding up to the next multiple of 8 gets -inf, so exp makes it 0.
        let (end8, i) = (end.div_ceil(LANES) * LANES, r % b.t);
        let (seen, rest) = row.split_at_mut(end8);
        rest.fill(0.0);
        seen[end..].fill(f32::NEG_INFINITY);
        for (x, &m) in seen.iter_mut().zip(&mask[i * b.s..i * b.s + end]) {
            *x = *x * b.scale + m;
        }
        let max = row_max(seen);
        let mut sums = [0f32; LANES];
        for c in seen.chunks_exact_mut(LANES) {
            for l in 0..LANES {
                c[l] = exp_inline(c[l] - max);
                sums[l] += c[l];
            }
        }
        let inv = 1.0 / sums.iter().sum::<f32>();
        for x in seen.iter_mut() {
            *x *= inv;
        }
    }
}

/// Split the scratch: keys and values transposed, `[H, s8]` each; two `[rows, s8]` matrices;
/// the rows' ends.
#[inline(always)]
fn split_scratch<'a>(b: &AttentionBlock, scratch: &'a mut [f32]) -> [&'a mut [f32]; 5] {
    let s8 = b.s8();
    let (kt, rest) = scratch.split_at_mut(b.hs * s8);
    let (vt, rest) = rest.split_at_mut(b.hs * s8);
    let (m1, rest) = rest.split_at_mut(b.rows * s8);
    let (m2, rest) = rest.split_at_mut(b.rows * s8);
    [kt, vt, m1, m2, &mut rest[..b.rows]]
}

#[inline(always)]
fn forward<const H: usize, const ISA: u8>(b: &AttentionBlock, q: &[f32], k: &[f32], v: &[f32], mask: &[f32], out: &mut [f32], scratch: &mut [f32]) {
    let s8 = b.s8();
    let [kt, _, p, _, ends] = split_scratch(b, scratch);
    b.ends(mask, ends);
    kt.fill(0.0);
    transpose_into(k, b.s, H, kt, s8);
    a_bt::<H, ISA>(q, kt, s8, ends, p);
    softmax_rows(b, mask, ends, p);
    p_v::<H, ISA>(p, s8, ends, v, out);
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward<const H: usize, const ISA: u8>(b: &AttentionBlock, q: &[f32], k: &[f32], v: &[f32], mask: &[f32], g: &[f32], dq: &mut [f32], dk: &mut [f32], dv: &mut [f32], scratch: &mut [f32]) {
    let s8 = b.s8();
    let [kt, vt, p, ds, ends] = split_scratch(b, scratch);
    b.ends(mask, ends);
    kt.fill(0.0);
    vt.fill(0.0);
    transpose_into(k, b.s, H, kt, s8);
    transpose_into(v, b.s, H, vt, s8);
    // The probabilities again, then dp = g·vᵀ, then the softmax's gradient in place:
    // ds = p · (dp − Σ p·dp) · scale, 0 past each row's end.
    a_bt::<H, ISA>(q, kt, s8, ends, p);
    softmax_rows(b, mask, ends, p);
    a_bt::<H, ISA>(g, vt, s8, ends, ds);
    for r in 0..b.rows {
        let end = ends[r] as usize;
        let (pr, dr) = (&p[r * s8..r * s8 + end], &mut ds[r * s8..(r + 1) * s8]);
        let dot = dot(pr, &dr[..end]);
        for (d, &pj) in dr.iter_mut().zip(pr) {
            *d = pj * (*d - dot) * b.scale;
        }
        dr[end..].fill(0.0);
    }
    // dq = ds·k, dk = dsᵀ·q, dv = pᵀ·g.
    p_v::<H, ISA>(ds, s8, ends, k, dq);
    at_b::<H, ISA>(ds, s8, b.s, ends, q, dk);
    at_b::<H, ISA>(p, s8, b.s, ends, g, dv);
}

macro_rules! by_head_size {
    ($hs:expr, $f:ident, $($arg:expr),*) => {
        match $hs {
            8 => $f::<8, ISA>($($arg),*),
            16 => $f::<16, ISA>($($arg),*),
            32 => $f::<32, ISA>($($arg),*),
            64 => $f::<64, ISA>($($arg),*),
            80 => $f::<80, ISA>($($arg),*),
            128 => $f::<128, ISA>($($arg),*),
            hs => panic!("no attention kernel for a head size of {hs} (see ATTENTION_HEAD_SIZES)"),
        }
    };
}

simd_fn! {
    /// Attention over one block: `out = softmax(scale · q·kᵀ + mask) · v`, without any of the
    /// scores of hidden keys computed. `q` and `out` are `[rows, hs]`, `k` and `v` `[s, hs]`, `mask`
    /// `[t, s]`, `scratch` `scratch_len()` long. A row whose mask hides every key gets zeros.
    /// `hs` must be one of `ATTENTION_HEAD_SIZES`.
    pub fn attention_forward(b: &AttentionBlock, q: &[f32], k: &[f32], v: &[f32], mask: &[f32], out: &mut [f32], scratch: &mut [f32]) {
        let (s, hs) = (b.s, b.hs);
        assert!(q.len() == b.rows * hs && out.len() == b.rows * hs && k.len() == s * hs && v.len() == s * hs && mask.len() == b.t * s);
        assert!(scratch.len() >= b.scratch_len());
        by_head_size!(hs, forward, b, q, k, v, mask, out, scratch)
    }
}

simd_fn! {
    /// The gradients of `attention_forward` with respect to `q`, `k` and `v`, given the output's
    /// gradient `g` (`[rows, hs]`), written to `dq` (`[rows, hs]`), `dk` and `dv` (`[s, hs]`). The
    /// probabilities are recomputed. `scratch` is `scratch_len()` long.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        b: &AttentionBlock,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: &[f32],
        g: &[f32],
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        scratch: &mut [f32],
    ) {
        let (s, hs) = (b.s, b.hs);
        assert!(q.len() == b.rows * hs && g.len() == q.len() && dq.len() == q.len() && scratch.len() >= b.scratch_len());
        assert!(k.len() == s * hs && v.len() == k.len() && dk.len() == k.len() && dv.len() == k.len() && mask.len() == b.t * s);
        by_head_size!(hs, backward, b, q, k, v, mask, g, dq, dk, dv, scratch)
    }
}

// The tests of these kernels are tinytune's (src/model/fused/tests.rs), so that `cargo test` runs them.
