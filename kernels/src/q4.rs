//! 4-bit weights (bitsandbytes' NF4 and FP4 as tinytune packs them): a few rows multiplied by
//! the packed matrix (`q4_rows`) and the matrix written out in f32 (`q4_dequant`), by vector
//! table lookups where the CPU has them and a portable copy elsewhere.

use super::*;

/// A 4-bit matrix `[rows, cols]` in its buffer of u32 words, as bytes (bitsandbytes' NF4 or FP4
/// layout as tinytune packs it; its `Q4Layout`, offsets in words): two codes a byte, the first in
/// the high nibble, from byte 0; a scale per block of `blocksize` values, an f32 at word
/// `absmax + block`, or with double quantization (`nested` > 0) a byte at byte `4·absmax + block`
/// that picks one of the 256 f32s at word `map`, times the f32 at word `absmax2 + block / nested`,
/// plus the f32 at word `offset`; the 16 code values at word `code`. Value `e` of the matrix is
/// `code[nibble e] · scale(e / blocksize)`, and where `bias` > 0 (GGUF's Q4_1, whose blocks add
/// their minimum) that product plus the f32 at word `bias + e / blocksize`, rounded once each.
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
    /// Word offset of one f32 a block added after the scaling; 0: none.
    pub bias: usize,
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
    /// Block `blk`'s additive term, where the matrix has them.
    #[inline(always)]
    fn bias(&self, blk: usize) -> Option<f32> {
        (self.bias != 0).then(|| self.word(self.bias + blk))
    }
    /// Block `blk`'s 16 values: each code times the block's scale, then plus its term.
    #[inline(always)]
    fn table(&self, code: &[f32; 16], blk: usize) -> [f32; 16] {
        let (a, b) = (self.scale(blk), self.bias(blk));
        let mut table = [0f32; 16];
        for (t, &v) in table.iter_mut().zip(code) {
            *t = v * a;
            if let Some(b) = b {
                *t += b;
            }
        }
        table
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
            match simd() {
                Simd::Avx512 if q.cols % 32 == 0 && q.blocksize % 32 == 0 => q4_rows_avx512_32(q, x, m, r0, out),
                Simd::Avx512 => q4_rows_avx512(q, x, m, r0, out),
                _ => q4_rows_avx2(q, x, m, r0, out),
            }
        };
        return;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if q.cols % 32 == 0 && q.blocksize % 32 == 0 {
        q4_rows_checked(q, x, m, r0, out);
        q4_rows_simd128(q, x, m, r0, out);
        return;
    }
    q4_rows_portable(q, x, m, r0, out)
}

/// `x` with each run of 32 values of its `m` rows rearranged: the 16 even values, then the 16 odd
/// ones (the order of a run's high and then low nibbles).
#[cfg(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128")))]
fn even_then_odd(x: &[f32], m: usize, cols: usize) -> Vec<f32> {
    let mut xs = vec![0f32; m * cols];
    for (to, from) in xs.chunks_exact_mut(32).zip(x[..m * cols].chunks_exact(32)) {
        for j in 0..16 {
            to[j] = from[2 * j];
            to[16 + j] = from[2 * j + 1];
        }
    }
    xs
}

/// `q4_rows` in wasm with SIMD (the page's CPU engine) for rows and blocks in whole runs of 32
/// values. wasm has a byte lookup (`i8x16.swizzle`, 16 entries) but none of 32-bit values, so a
/// block's 16 scaled codes are held as four vectors of their bytes (`byte_planes`), looked up
/// once each and interleaved back into f32s; the nibbles and `x` are paired as in
/// `q4_rows_avx512_32`. The portable copy looked each value up in turn, and a model kept in 4
/// bits decoded at 0.4× its f32 original in the page.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn q4_rows_simd128(q: Q4View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
    use core::arch::wasm32::*;
    let cols = q.cols;
    let xs = even_then_odd(x, m, cols);
    let code = q.codes();
    // GGUF's codes are whole numbers in a row (q − 8, q): their values are then computed, as
    // the table's entries are (`(q + code₀) · d`, then `+ bias`, rounded alike), with no lookup.
    let affine = code.iter().enumerate().all(|(j, &c)| c == code[0] + j as f32);
    let first = f32x4_splat(code[0]);
    for (ri, o) in out.chunks_exact_mut(m).enumerate() {
        let e0 = (r0 + ri) * cols;
        let mut acc = [f32x4_splat(0.0); Q4_MAX_ROWS];
        let (mut blk, mut left) = (e0 / q.blocksize, q.blocksize - e0 % q.blocksize);
        let block = |blk: usize| match affine {
            true => Block::Affine(f32x4_splat(q.scale(blk)), q.bias(blk).map(|b| f32x4_splat(b))),
            false => Block::Planes(byte_planes(&q.table(&code, blk))),
        };
        let mut values = block(blk);
        for c in (0..cols).step_by(32) {
            if left == 0 {
                (blk, left) = (blk + 1, q.blocksize);
                values = block(blk);
            }
            left -= 32;
            let run = &q.bytes[(e0 + c) / 2..][..16];
            // Safety: `run` holds the 16 bytes read (wasm loads need no alignment).
            let v = unsafe { v128_load(run.as_ptr() as *const v128) };
            let (hi, lo) = (u8x16_shr(v, 4), v128_and(v, u8x16_splat(0x0f)));
            let (even, odd) = match &values {
                Block::Affine(d, bias) => (affine_16(hi, first, *d, *bias), affine_16(lo, first, *d, *bias)),
                Block::Planes(planes) => (look_up_16(planes, hi), look_up_16(planes, lo)),
            };
            for (i, a) in acc.iter_mut().enumerate().take(m) {
                let xi = &xs[i * cols + c..][..32];
                // Safety: `xi` holds the 32 values read, 4 at a time.
                let ld = |k: usize| unsafe { v128_load(xi.as_ptr().add(4 * k) as *const v128) };
                let s = f32x4_add(f32x4_add(f32x4_mul(ld(0), even[0]), f32x4_mul(ld(1), even[1])), f32x4_add(f32x4_mul(ld(2), even[2]), f32x4_mul(ld(3), even[3])));
                let t = f32x4_add(f32x4_add(f32x4_mul(ld(4), odd[0]), f32x4_mul(ld(5), odd[1])), f32x4_add(f32x4_mul(ld(6), odd[2]), f32x4_mul(ld(7), odd[3])));
                *a = f32x4_add(*a, f32x4_add(s, t));
            }
        }
        for (oi, a) in o.iter_mut().zip(&acc) {
            *oi = (f32x4_extract_lane::<0>(*a) + f32x4_extract_lane::<1>(*a)) + (f32x4_extract_lane::<2>(*a) + f32x4_extract_lane::<3>(*a));
        }
    }
}

/// What `q4_rows_simd128` holds of the current block: its scale and term (splatted) where the
/// codes are whole numbers in a row, its 16 values as `byte_planes` otherwise.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
enum Block {
    Affine(core::arch::wasm32::v128, Option<core::arch::wasm32::v128>),
    Planes([core::arch::wasm32::v128; 4]),
}

/// The 16 values of codes `idx` (bytes 0–15) of a code of whole numbers from `first` (splatted),
/// as four f32x4 in order: `(q + first) · d`, then `+ bias` where the block has one, each rounded
/// as the table's entries are.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn affine_16(idx: core::arch::wasm32::v128, first: core::arch::wasm32::v128, d: core::arch::wasm32::v128, bias: Option<core::arch::wasm32::v128>) -> [core::arch::wasm32::v128; 4] {
    use core::arch::wasm32::*;
    let (lo, hi) = (u16x8_extend_low_u8x16(idx), u16x8_extend_high_u8x16(idx));
    let q = [u32x4_extend_low_u16x8(lo), u32x4_extend_high_u16x8(lo), u32x4_extend_low_u16x8(hi), u32x4_extend_high_u16x8(hi)];
    q.map(|q| {
        let w = f32x4_mul(f32x4_add(f32x4_convert_u32x4(q), first), d);
        match bias {
            Some(b) => f32x4_add(w, b),
            None => w,
        }
    })
}

/// A block's 16 values as four vectors of bytes: vector k holds byte k (little-endian) of each.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn byte_planes(table: &[f32; 16]) -> [core::arch::wasm32::v128; 4] {
    use core::arch::wasm32::*;
    let t = |k: usize| f32x4(table[4 * k], table[4 * k + 1], table[4 * k + 2], table[4 * k + 3]);
    // Values 0–7: bytes 0 then 1 of each (a), bytes 2 then 3 (b); values 8–15 likewise (c, d).
    let a = i8x16_shuffle::<0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29>(t(0), t(1));
    let b = i8x16_shuffle::<2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31>(t(0), t(1));
    let c = i8x16_shuffle::<0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29>(t(2), t(3));
    let d = i8x16_shuffle::<2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31>(t(2), t(3));
    [
        i8x16_shuffle::<0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23>(a, c),
        i8x16_shuffle::<8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31>(a, c),
        i8x16_shuffle::<0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23>(b, d),
        i8x16_shuffle::<8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31>(b, d),
    ]
}

/// The 16 values at `idx` (bytes 0–15) of the table held as `byte_planes`, as four f32x4 in
/// order: each plane looked up (`i8x16.swizzle`), then the four bytes of each value put together.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn look_up_16(planes: &[core::arch::wasm32::v128; 4], idx: core::arch::wasm32::v128) -> [core::arch::wasm32::v128; 4] {
    use core::arch::wasm32::*;
    let b = planes.map(|p| u8x16_swizzle(p, idx));
    // Byte pairs (0, 1) and (2, 3) of values 0–7 and of values 8–15.
    let lo01 = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(b[0], b[1]);
    let hi01 = i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(b[0], b[1]);
    let lo23 = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(b[2], b[3]);
    let hi23 = i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(b[2], b[3]);
    [
        i8x16_shuffle::<0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23>(lo01, lo23),
        i8x16_shuffle::<8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31>(lo01, lo23),
        i8x16_shuffle::<0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23>(hi01, hi23),
        i8x16_shuffle::<8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31>(hi01, hi23),
    ]
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
            let mut table = table_16(code, q.scale(blk), q.bias(blk));
            for c in (0..cols).step_by(16) {
                if left == 0 {
                    (blk, left) = (blk + 1, q.blocksize);
                    table = table_16(code, q.scale(blk), q.bias(blk));
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

/// `q4_rows` with AVX-512 for rows and blocks in whole runs of 32 values (every model's hidden
/// sizes; GGUF's blocks of 32 and bitsandbytes' of 64): 16 bytes of codes widened once to 16
/// lanes, whose low nibble indexes `vpermps` as it is (it reads an index's low 4 bits) and whose
/// high nibble after a shift. The high nibbles are the run's even values and the low ones its odd
/// values, so `x` is rearranged into that order once a call. Against `q4_rows_avx512`: a third of
/// the shuffle-port work a value (that copy unpacks the nibbles into order first), and two sums a
/// row instead of one chain of dependent multiply-adds (SmolLM2's 4-bit decoding spent 40% of its
/// time in that copy).
///
/// # Safety
/// The CPU has AVX-512F; `q4_rows_checked` holds, `q.cols` and `q.blocksize` are multiples of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn q4_rows_avx512_32(q: Q4View, x: &[f32], m: usize, r0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = q.cols;
    let xs = even_then_odd(x, m, cols);
    let code = q.codes();
    // Safety (all the loads below): the caller's bounds; a row's bytes [e/2, e/2 + cols/2) lie
    // inside `bytes` (rows up to q.rows), xs holds m rows of cols values.
    unsafe {
        let code = _mm512_loadu_ps(code.as_ptr());
        for (ri, o) in out.chunks_exact_mut(m).enumerate() {
            let e0 = (r0 + ri) * cols;
            let (mut even, mut odd) = ([_mm512_setzero_ps(); Q4_MAX_ROWS], [_mm512_setzero_ps(); Q4_MAX_ROWS]);
            let (mut blk, mut left) = (e0 / q.blocksize, q.blocksize - e0 % q.blocksize);
            let mut table = table_16(code, q.scale(blk), q.bias(blk));
            for c in (0..cols).step_by(32) {
                if left == 0 {
                    (blk, left) = (blk + 1, q.blocksize);
                    table = table_16(code, q.scale(blk), q.bias(blk));
                }
                left -= 32;
                let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(q.bytes.as_ptr().add((e0 + c) / 2) as *const __m128i));
                let w_odd = _mm512_permutexvar_ps(bytes, table);
                let w_even = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(bytes), table);
                for i in 0..m {
                    let xi = xs.as_ptr().add(i * cols + c);
                    even[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xi), w_even, even[i]);
                    odd[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xi.add(16)), w_odd, odd[i]);
                }
            }
            for (i, oi) in o.iter_mut().enumerate() {
                *oi = _mm512_reduce_add_ps(_mm512_add_ps(even[i], odd[i]));
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
            let (mut lo, mut hi) = tables_8(code_lo, code_hi, q.scale(blk), q.bias(blk));
            for c in (0..cols).step_by(16) {
                if left == 0 {
                    (blk, left) = (blk + 1, q.blocksize);
                    (lo, hi) = tables_8(code_lo, code_hi, q.scale(blk), q.bias(blk));
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
            table = q.table(&code, blk);
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
        let mut table = table_16(code, q.scale(blk), q.bias(blk));
        for k in (0..out.len()).step_by(16) {
            if left == 0 {
                (blk, left) = (blk + 1, q.blocksize);
                table = table_16(code, q.scale(blk), q.bias(blk));
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
        let (mut lo, mut hi) = tables_8(code_lo, code_hi, q.scale(blk), q.bias(blk));
        for k in (0..out.len()).step_by(16) {
            if left == 0 {
                (blk, left) = (blk + 1, q.blocksize);
                (lo, hi) = tables_8(code_lo, code_hi, q.scale(blk), q.bias(blk));
            }
            left -= 16;
            let codes = codes_16(q.bytes.as_ptr().add((e0 + k) / 2));
            _mm256_storeu_ps(out.as_mut_ptr().add(k), look_up_8(_mm256_cvtepu8_epi32(codes), lo, hi));
            _mm256_storeu_ps(out.as_mut_ptr().add(k + 8), look_up_8(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(codes)), lo, hi));
        }
    }
}

/// A block's 16 values in a register: the codes times `scale`, then plus `bias` (two roundings,
/// as `Q4View::table`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn table_16(code: std::arch::x86_64::__m512, scale: f32, bias: Option<f32>) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let t = _mm512_mul_ps(code, _mm512_set1_ps(scale));
    match bias {
        Some(b) => _mm512_add_ps(t, _mm512_set1_ps(b)),
        None => t,
    }
}

/// `table_16` in two halves of 8, for AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tables_8(
    lo: std::arch::x86_64::__m256,
    hi: std::arch::x86_64::__m256,
    scale: f32,
    bias: Option<f32>,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(scale);
    let (lo, hi) = (_mm256_mul_ps(lo, a), _mm256_mul_ps(hi, a));
    match bias {
        Some(b) => (_mm256_add_ps(lo, _mm256_set1_ps(b)), _mm256_add_ps(hi, _mm256_set1_ps(b))),
        None => (lo, hi),
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
                    table = q.table(&code, blk);
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
