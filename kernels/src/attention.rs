//! Attention kernels: a decoded token's attention over the KV cache where it lies
//! (`attention_decode`), and the blocked forward and backward passes of training's attention.

use super::*;

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
