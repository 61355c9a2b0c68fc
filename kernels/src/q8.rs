//! 8-bit codes with a scale a block (GGUF's Q8_0, Q6_K, Q5_0, Q5_1, Q5_K, Q3_K and Q2_K, kept as
//! a file stores them): a value is `code · scale`, or `code · scale + term` where the format has a
//! term a block (Q5_1's minimum, the K-quants' `−dmin·m`), each operation rounded in turn as
//! gguf-py's `dequantize` forms it. Plain loops that the compiler vectorises (`simd_fn!`):
//! widening bytes to f32 is a conversion it does in vector registers, unlike the 4-bit lookups.

use crate::{Simd, madd};

/// An 8-bit matrix `[rows, cols]` in row order: `codes` one byte a value, `scales` (and `terms`,
/// where the format has them) one a block of `block` values along a row (`cols` is a multiple of
/// `block`).
#[derive(Clone, Copy, Debug)]
pub struct Q8View<'a> {
    pub codes: &'a [i8],
    pub scales: &'a [f32],
    pub terms: Option<&'a [f32]>,
    pub block: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Q8View<'_> {
    fn check(&self) {
        let blocks = self.rows * self.cols / self.block.max(1);
        assert!(
            self.block > 0 && self.cols % self.block == 0 && self.codes.len() == self.rows * self.cols
                && self.scales.len() == blocks && self.terms.is_none_or(|t| t.len() == blocks),
            "an 8-bit matrix of {}×{} in blocks of {} needs {} codes and {blocks} scales (and terms), not {} and {}",
            self.rows, self.cols, self.block, self.rows * self.cols, self.codes.len(), self.scales.len()
        );
    }
}

/// Lanes of a vector of partial sums: 16 with AVX-512 (one register), two registers with AVX2.
const W: usize = 16;

/// The sum of 16 lanes as a tree (8 + 8, 4 + 4, ...): four dependent adds rather than fifteen.
#[inline(always)]
fn lanes_sum(mut acc: [f32; W]) -> f32 {
    let mut width = W / 2;
    while width > 0 {
        for k in 0..width {
            acc[k] += acc[k + width];
        }
        width /= 2;
    }
    acc[0]
}

/// A value as the format forms it: `code · d`, then `+ t` where there is a term (two roundings,
/// never fused: Rust does not contract them).
#[inline(always)]
fn value<const TERM: bool>(c: i8, d: f32, t: f32) -> f32 {
    if TERM { c as f32 * d + t } else { c as f32 * d }
}

/// One row of W times one row of x. Blocks of 16 or a multiple of 32 go in runs of 32 values to two
/// vectors of sums (two chains of multiply-adds side by side), the lanes added as a tree; other
/// blocks take a plain loop.
#[inline(always)]
fn row_dot<const ISA: u8, const TERM: bool>(codes: &[i8], scales: &[f32], terms: &[f32], block: usize, x: &[f32]) -> f32 {
    let cols = codes.len();
    let blocks = cols / block;
    let t = |b: usize| if TERM { terms[b] } else { 0.0 };
    if block == W || block % (2 * W) == 0 {
        let (mut lo, mut hi) = ([0f32; W], [0f32; W]);
        if block == W {
            // Blocks of 16: a run of 32 is two blocks.
            for (p, (c, x)) in codes.chunks_exact(2 * W).zip(x.chunks_exact(2 * W)).enumerate() {
                let (d0, d1, t0, t1) = (scales[2 * p], scales[2 * p + 1], t(2 * p), t(2 * p + 1));
                for k in 0..W {
                    lo[k] = madd::<ISA>(x[k], value::<TERM>(c[k], d0, t0), lo[k]);
                    hi[k] = madd::<ISA>(x[W + k], value::<TERM>(c[W + k], d1, t1), hi[k]);
                }
            }
            if blocks % 2 == 1 {
                // One block left (a row of an odd number of blocks of 16).
                let (e, d, tb) = (cols - W, scales[blocks - 1], t(blocks - 1));
                for k in 0..W {
                    lo[k] = madd::<ISA>(x[e + k], value::<TERM>(codes[e + k], d, tb), lo[k]);
                }
            }
        } else {
            // Blocks of a multiple of 32: runs of 32 within each.
            for (b, (c, x)) in codes.chunks_exact(block).zip(x.chunks_exact(block)).enumerate() {
                let (d, tb) = (scales[b], t(b));
                for (c, x) in c.chunks_exact(2 * W).zip(x.chunks_exact(2 * W)) {
                    for k in 0..W {
                        lo[k] = madd::<ISA>(x[k], value::<TERM>(c[k], d, tb), lo[k]);
                        hi[k] = madd::<ISA>(x[W + k], value::<TERM>(c[W + k], d, tb), hi[k]);
                    }
                }
            }
        }
        for k in 0..W {
            lo[k] += hi[k];
        }
        lanes_sum(lo)
    } else {
        let mut sum = 0f32;
        for (b, (c, x)) in codes.chunks_exact(block).zip(x.chunks_exact(block)).enumerate() {
            let (d, tb) = (scales[b], t(b));
            for (&c, &x) in c.iter().zip(x) {
                sum = madd::<ISA>(x, value::<TERM>(c, d, tb), sum);
            }
        }
        sum
    }
}

simd_fn! {
    /// `x · Wᵀ` for `m` rows of `x` (`[m, cols]`) and W's rows from `r0` on: `out[(r − r0)·m + i]`
    /// is row i of x times row r of W, each of W's values as `q8_dequant` forms it. For decoding's
    /// few rows, without writing W in f32 (a byte a value read, against f32's four).
    pub fn q8_rows(q: Q8View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
        q.check();
        let cols = q.cols;
        assert!(m > 0 && x.len() >= m * cols && out.len() % m == 0 && r0 + out.len() / m <= q.rows,
            "q8_rows: {m} rows of {cols} by rows {r0}.. of a {}×{cols} matrix into {} values", q.rows, out.len());
        let blocks = cols / q.block;
        for (r, out) in out.chunks_exact_mut(m).enumerate() {
            let row = r0 + r;
            let codes = &q.codes[row * cols..(row + 1) * cols];
            let span = row * blocks..(row + 1) * blocks;
            let scales = &q.scales[span.clone()];
            for (i, y) in out.iter_mut().enumerate() {
                let x = &x[i * cols..(i + 1) * cols];
                *y = match q.terms {
                    Some(terms) => row_dot::<ISA, true>(codes, scales, &terms[span.clone()], q.block, x),
                    None => row_dot::<ISA, false>(codes, scales, &[], q.block, x),
                };
            }
        }
    }
}

simd_fn! {
    /// Values `e0 .. e0 + out.len()` of the matrix (row order) in f32: `code · scale` (`+ term`),
    /// bit for bit gguf-py's values of the formats this holds.
    pub fn q8_dequant(q: Q8View, e0: usize, out: &mut [f32]) {
        q.check();
        assert!(e0 + out.len() <= q.codes.len(), "q8_dequant: values {e0}..{} of {}", e0 + out.len(), q.codes.len());
        let mut e = e0;
        let mut out = out;
        while !out.is_empty() {
            let b = e / q.block;
            let d = q.scales[b];
            let n = (q.block - e % q.block).min(out.len());
            let (part, rest) = out.split_at_mut(n);
            let codes = &q.codes[e..e + n];
            match q.terms {
                Some(terms) => part.iter_mut().zip(codes).for_each(|(o, &c)| *o = value::<true>(c, d, terms[b])),
                None => part.iter_mut().zip(codes).for_each(|(o, &c)| *o = value::<false>(c, d, 0.0)),
            }
            out = rest;
            e += n;
        }
    }
}
