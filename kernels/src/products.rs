//! Decoding's one-row products: f32 weights streamed row by row (`matmul_rows`) and bfloat16
//! weights read as stored (`matmul_bf16`).

use super::*;

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
