//! 8-bit weights with a scale a block (GGUF's Q8_0 and Q6_K, kept as the file stores them): a
//! value is `code · scale`, an i8 code times its block's f32 scale, one rounding, as gguf-py's
//! `dequantize` forms it. Plain loops that the compiler vectorises (`simd_fn!`): widening bytes to
//! f32 is a conversion it does in vector registers, unlike the 4-bit lookups.

use crate::{Simd, madd};

/// An 8-bit matrix `[rows, cols]` in row order: `codes` one byte a value, `scales` one a block of
/// `block` values along a row (`cols` is a multiple of `block`).
#[derive(Clone, Copy, Debug)]
pub struct Q8View<'a> {
    pub codes: &'a [i8],
    pub scales: &'a [f32],
    pub block: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Q8View<'_> {
    fn check(&self) {
        assert!(
            self.block > 0 && self.cols % self.block == 0 && self.codes.len() == self.rows * self.cols
                && self.scales.len() == self.rows * self.cols / self.block,
            "an 8-bit matrix of {}×{} in blocks of {} needs {} codes and {} scales, not {} and {}",
            self.rows, self.cols, self.block, self.rows * self.cols, self.rows * self.cols / self.block.max(1),
            self.codes.len(), self.scales.len()
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

simd_fn! {
    /// `x · Wᵀ` for `m` rows of `x` (`[m, cols]`) and W's rows from `r0` on: `out[(r − r0)·m + i]`
    /// is row i of x times row r of W, each of W's values `code · scale` as `q8_dequant` forms it.
    /// For decoding's few rows, without writing W in f32 (a quarter of f32's bytes read a token).
    ///
    /// Blocks of 16 or a multiple of 32 (GGUF's Q6_K and Q8_0): each run of 32 values goes to two
    /// vectors of sums, 16 values each with its block's scale, so that two chains of multiply-adds
    /// run side by side; the lanes are added as a tree. Other blocks take a plain loop.
    pub fn q8_rows(q: Q8View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
        q.check();
        let cols = q.cols;
        assert!(m > 0 && x.len() >= m * cols && out.len() % m == 0 && r0 + out.len() / m <= q.rows,
            "q8_rows: {m} rows of {cols} by rows {r0}.. of a {}×{cols} matrix into {} values", q.rows, out.len());
        let blocks = cols / q.block;
        let runs = q.block == W || q.block % (2 * W) == 0;
        for (r, out) in out.chunks_exact_mut(m).enumerate() {
            let row = r0 + r;
            let codes = &q.codes[row * cols..(row + 1) * cols];
            let scales = &q.scales[row * blocks..(row + 1) * blocks];
            for (i, y) in out.iter_mut().enumerate() {
                let x = &x[i * cols..(i + 1) * cols];
                if runs {
                    let (mut lo, mut hi) = ([0f32; W], [0f32; W]);
                    if q.block == W {
                        // Blocks of 16: a run of 32 is two blocks.
                        for (p, (c, x)) in codes.chunks_exact(2 * W).zip(x.chunks_exact(2 * W)).enumerate() {
                            let (d0, d1) = (scales[2 * p], scales[2 * p + 1]);
                            for k in 0..W {
                                lo[k] = madd::<ISA>(x[k], c[k] as f32 * d0, lo[k]);
                                hi[k] = madd::<ISA>(x[W + k], c[W + k] as f32 * d1, hi[k]);
                            }
                        }
                        if blocks % 2 == 1 {
                            // One block left (a row of an odd number of blocks of 16).
                            let (e, d) = (cols - W, scales[blocks - 1]);
                            for k in 0..W {
                                lo[k] = madd::<ISA>(x[e + k], codes[e + k] as f32 * d, lo[k]);
                            }
                        }
                    } else {
                        // Blocks of a multiple of 32: runs of 32 within each.
                        for ((c, x), &d) in codes.chunks_exact(q.block).zip(x.chunks_exact(q.block)).zip(scales) {
                            for (c, x) in c.chunks_exact(2 * W).zip(x.chunks_exact(2 * W)) {
                                for k in 0..W {
                                    lo[k] = madd::<ISA>(x[k], c[k] as f32 * d, lo[k]);
                                    hi[k] = madd::<ISA>(x[W + k], c[W + k] as f32 * d, hi[k]);
                                }
                            }
                        }
                    }
                    for k in 0..W {
                        lo[k] += hi[k];
                    }
                    *y = lanes_sum(lo);
                } else {
                    let mut sum = 0f32;
                    for ((c, x), &d) in codes.chunks_exact(q.block).zip(x.chunks_exact(q.block)).zip(scales) {
                        for (&c, &x) in c.iter().zip(x) {
                            sum = madd::<ISA>(x, c as f32 * d, sum);
                        }
                    }
                    *y = sum;
                }
            }
        }
    }
}

simd_fn! {
    /// Values `e0 .. e0 + out.len()` of the matrix (row order) in f32: `code · scale`, bit for bit
    /// gguf-py's Q8_0 and Q6_K values.
    pub fn q8_dequant(q: Q8View, e0: usize, out: &mut [f32]) {
        q.check();
        assert!(e0 + out.len() <= q.codes.len(), "q8_dequant: values {e0}..{} of {}", e0 + out.len(), q.codes.len());
        let mut e = e0;
        let mut out = out;
        while !out.is_empty() {
            let d = q.scales[e / q.block];
            let n = (q.block - e % q.block).min(out.len());
            let (part, rest) = out.split_at_mut(n);
            for (o, &c) in part.iter_mut().zip(&q.codes[e..e + n]) {
                *o = c as f32 * d;
            }
            out = rest;
            e += n;
        }
    }
}
