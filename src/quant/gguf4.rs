//! GGUF's 4-bit formats Q4_0, Q4_1 and Q4_K, kept in 4 bits as a GGUF file stores them: the same
//! `Quant4` (and so the same CPU and WGSL kernels) as bitsandbytes' formats, with GGUF's blocks
//! of 32 and its codes as the 16-value table.
//!
//! - Q4_0: `d · (q − 8)`; the table is −8…7 and `d` the block's scale.
//! - Q4_1: `d · q + m`; the table is 0…15, `d` the scale and `m` the block's term (`Quant4::bias`),
//!   added after the product as gguf-py's `dequantize_blocks` adds it.
//! - Q4_K: `(d · sc) · q − dmin · mn` for each block of 32 of a super-block of 256 (6-bit `sc` and
//!   `mn`): the table is 0…15, the scale `d · sc` and the term `−(dmin · mn)`, each computed once
//!   at load as gguf-py computes it (`x + (−y)` is `x − y` exactly).
//!
//! So every value is bit for bit what `model::gguf::dequantize` (gguf-py's arithmetic) gives. A
//! Q4_0/Q4_1 block holds value `e` in nibble `e / 16` of byte `e % 16` (Q4_K: of byte
//! `32·(e/64) + e % 32`, nibble `(e / 32) % 2`); `Quant4` holds two values a byte in order, the
//! first in the high nibble: `from_gguf` reorders the nibbles once at load. `quantize` is
//! gguf-py's `quantize_blocks` for Q4_0 and Q4_1 (merging an adapter into such a base quantizes
//! the result again, as PEFT's merge into a bitsandbytes base does). gguf-py has no Q4_K
//! quantizer, and the 6-bit sub-block scales are llama.cpp's search: a Q4_K base takes a merge
//! in blocks of 32 with Q4_1's rule and its scale and minimum kept in f32 (at least as fine a
//! grid as Q4_K's; saving writes float weights either way).

use super::nf4::{Absmax, QuantType, Quant4};

/// Values per GGUF 4-bit block.
pub const BLOCK: usize = 32;

/// Q4_0's codes: `q − 8`.
pub const Q4_0_CODE: [f32; 16] = [-8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
/// Q4_1's codes: `q`.
pub const Q4_1_CODE: [f32; 16] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0];

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The 4-bit type of a GGUF tensor type's name, if it is one kept in 4 bits.
pub fn kept_type(ggml_name: &str) -> Option<QuantType> {
    match ggml_name {
        "Q4_0" => Some(QuantType::Q4_0),
        "Q4_1" => Some(QuantType::Q4_1),
        "Q4_K" => Some(QuantType::Q4K),
        _ => None,
    }
}

/// Values and bytes of one GGUF block of `quant_type`.
fn block_size(quant_type: QuantType) -> (usize, usize) {
    match quant_type {
        QuantType::Q4_1 => (32, 20),
        QuantType::Q4K => (256, 144),
        _ => (32, 18),
    }
}

/// A GGUF tensor's data (`[rows, cols]`, rows of whole blocks) as a `Quant4`: the scales (and Q4_1's
/// minimums) widened from f16 once, the codes reordered into `Quant4`'s packing.
pub fn from_gguf(quant_type: QuantType, data: &[u8], shape: [usize; 2]) -> crate::Result<Quant4> {
    let n = shape[0] * shape[1];
    let (values, size) = block_size(quant_type);
    if shape[1] % values != 0 || data.len() != n / values * size {
        return Err(crate::Error::input(format!(
            "a {} tensor of shape {shape:?} should hold rows of whole blocks of {values} ({} bytes), not {} bytes",
            quant_type.name(),
            n / values * size,
            data.len()
        )));
    }
    if quant_type == QuantType::Q4K {
        return Ok(from_q4_k(data, shape));
    }
    let blocks = n / BLOCK;
    let mut packed = vec![0u8; n / 2];
    let mut scale = Vec::with_capacity(blocks);
    let mut bias = (quant_type == QuantType::Q4_1).then(|| Vec::with_capacity(blocks));
    for (b, block) in data.chunks_exact(size).enumerate() {
        scale.push(f16(&block[0..2]));
        if let Some(bias) = &mut bias {
            bias.push(f16(&block[2..4]));
        }
        let qs = &block[size - 16..];
        let out = &mut packed[b * BLOCK / 2..(b + 1) * BLOCK / 2];
        for (k, o) in out.iter_mut().enumerate() {
            // Values 2k and 2k + 1 of the block.
            let code = |e: usize| (qs[e % 16] >> (4 * (e / 16))) & 0x0f;
            *o = (code(2 * k) << 4) | code(2 * k + 1);
        }
    }
    Ok(Quant4 { quant_type, shape, blocksize: BLOCK, packed, absmax: Absmax::F32(scale), bias })
}

/// Q4_K's super-blocks as blocks of 32 with an f32 scale and term each (sizes checked).
fn from_q4_k(data: &[u8], shape: [usize; 2]) -> Quant4 {
    let n = shape[0] * shape[1];
    let mut packed = vec![0u8; n / 2];
    let (mut scale, mut bias) = (Vec::with_capacity(n / BLOCK), Vec::with_capacity(n / BLOCK));
    for (b, block) in data.chunks_exact(144).enumerate() {
        let (d, dmin) = (f16(&block[0..2]), f16(&block[2..4]));
        let (s, qs) = (&block[4..16], &block[16..144]);
        for sub in 0..8 {
            // The 6-bit scale and minimum of block `sub`, packed as gguf-py unpacks them.
            let (sc, mn) = if sub < 4 {
                (s[sub] & 0x3f, s[4 + sub] & 0x3f)
            } else {
                ((s[4 + sub] & 0x0f) | ((s[sub - 4] >> 2) & 0x30), (s[4 + sub] >> 4) | ((s[sub] >> 2) & 0x30))
            };
            scale.push(d * sc as f32);
            bias.push(-(dmin * mn as f32));
        }
        let out = &mut packed[b * 128..(b + 1) * 128];
        let code = |e: usize| (qs[(e / 64) * 32 + e % 32] >> (4 * ((e / 32) % 2))) & 0x0f;
        for (k, o) in out.iter_mut().enumerate() {
            *o = (code(2 * k) << 4) | code(2 * k + 1);
        }
    }
    Quant4 { quant_type: QuantType::Q4K, shape, blocksize: BLOCK, packed, absmax: Absmax::F32(scale), bias: Some(bias) }
}

/// gguf-py's `quantize_blocks` for Q4_0 or Q4_1 (and Q4_1's rule without the f16 roundings for Q4_K), in its f32 arithmetic, over `values` (`[out, in]`
/// row-major) in blocks of 32 (a last, shorter block takes what is there). The caller has refused
/// values that are not finite.
pub fn quantize(values: &[f32], shape: [usize; 2], quant_type: QuantType) -> Quant4 {
    let q4_1 = quant_type != QuantType::Q4_0;
    let f16_round = |v: f32| if quant_type == QuantType::Q4K { v } else { half::f16::from_f32(v).to_f32() };
    let mut codes = Vec::with_capacity(values.len() + 1);
    let mut scale = Vec::with_capacity(values.len().div_ceil(BLOCK));
    let mut bias = Vec::new();
    let code = |v: f32| (v.trunc() as u8).min(15);
    for block in values.chunks(BLOCK) {
        if q4_1 {
            let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let min = block.iter().copied().fold(f32::INFINITY, f32::min);
            let d = (max - min) / 15.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            codes.extend(block.iter().map(|&v| code((v - min) * id + 0.5)));
            scale.push(f16_round(d));
            bias.push(f16_round(min));
        } else {
            // The value of largest magnitude, the first where several tie (numpy's argmax).
            let max = block[1..].iter().copied().fold(block[0], |m, v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            codes.extend(block.iter().map(|&v| code(v * id + 8.5)));
            scale.push(half::f16::from_f32(d).to_f32());
        }
    }
    if codes.len() % 2 == 1 {
        codes.push(0);
    }
    let packed = codes.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect();
    Quant4 { quant_type, shape, blocksize: BLOCK, packed, absmax: Absmax::F32(scale), bias: q4_1.then_some(bias) }
}

/// The matrix with its rows reordered: row `i` of the result is row `from[i]` of `q` (each row
/// whole blocks, as in every GGUF tensor).
pub fn gather_rows(q: &Quant4, from: &[usize]) -> Quant4 {
    let cols = q.shape[1];
    assert!(cols % q.blocksize == 0 && cols % 2 == 0 && from.len() == q.shape[0], "gather_rows: rows of whole blocks");
    let per_row = cols / q.blocksize;
    let gather_f32 = |v: &[f32]| from.iter().flat_map(|&r| v[r * per_row..(r + 1) * per_row].iter().copied()).collect::<Vec<f32>>();
    let packed = from.iter().flat_map(|&r| q.packed[r * cols / 2..(r + 1) * cols / 2].iter().copied()).collect();
    let absmax = match &q.absmax {
        Absmax::F32(a) => Absmax::F32(gather_f32(a)),
        Absmax::Double(_) => panic!("gather_rows: GGUF's formats have no second level"),
    };
    Quant4 { packed, absmax, bias: q.bias.as_deref().map(gather_f32), ..q.clone() }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Blocks of random bytes with finite f16 scales, in a GGUF tensor's layout.
    pub(crate) fn gguf_data(quant_type: QuantType, blocks: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::rng::Rng::new(seed);
        let mut out = Vec::new();
        for _ in 0..blocks {
            out.extend(half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.1).to_le_bytes());
            if quant_type == QuantType::Q4_1 {
                out.extend(half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.6).to_le_bytes());
            }
            out.extend((0..16).map(|_| (rng.next_u64() & 0xff) as u8));
        }
        out
    }

    #[test]
    fn a_block_that_does_not_fit_is_refused() {
        let err = from_gguf(QuantType::Q4_0, &[0; 17], [1, 32]).unwrap_err().to_string();
        assert!(err.contains("18 bytes"), "{err}");
        assert!(from_gguf(QuantType::Q4_1, &[0; 20], [1, 16]).is_err());
    }

    #[test]
    fn quantizing_lands_within_half_a_step_and_again_changes_nothing() {
        let values = crate::quant::nf4::test_noise(4 * 96, 5, 0.3);
        for qt in [QuantType::Q4_0, QuantType::Q4_1, QuantType::Q4K] {
            let q = quantize(&values, [4, 96], qt);
            let back = q.dequantize();
            let Absmax::F32(d) = &q.absmax else { unreachable!() };
            for (i, (a, b)) in values.iter().zip(&back).enumerate() {
                // Half a step, and the f16 rounding of the scale over up to 8 steps. Q4_0's grid
                // reaches −8·d on the side of the block's largest magnitude but only 7·d on the
                // other, where a value up to a whole step away is clipped to 7·d.
                let step = d[i / BLOCK].abs();
                let within = if qt == QuantType::Q4_0 { step } else { 0.5 * step };
                assert!((a - b).abs() <= within + 8.0 * step * 1e-3 + 1e-6, "{qt:?} value {i}: {a} → {b} (step {step})");
            }
            // The values of a quantized block are on its grid, with its extremes on the grid's ends
            // (Q4_K's f32 scale may move by its last bit, which the f16 scales round away).
            if qt != QuantType::Q4K {
                assert_eq!(quantize(&back, [4, 96], qt), q, "{qt:?}");
            }
        }
    }

    #[test]
    fn gathered_rows_are_the_rows_asked_for() {
        let q = from_gguf(QuantType::Q4_1, &gguf_data(QuantType::Q4_1, 8, 3), [4, 64]).unwrap();
        let g = gather_rows(&q, &[2, 0, 3, 1]);
        let (a, b) = (q.dequantize(), g.dequantize());
        for (i, r) in [2, 0, 3, 1].into_iter().enumerate() {
            assert_eq!(b[i * 64..(i + 1) * 64], a[r * 64..(r + 1) * 64]);
        }
    }
}
