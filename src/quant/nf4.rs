//! 4-bit blockwise quantization (NF4 and FP4) and double quantization, exactly as bitsandbytes'
//! CUDA kernels compute them (`csrc/kernels.cu`: `kQuantizeBlockwise`, `dQuantizeNF4`,
//! `dQuantizeFP4`, `dQuantize`, `kDequantizeBlockwise`), after Dettmers et al. 2023, "QLoRA:
//! Efficient Finetuning of Quantized LLMs".
//!
//! - The weight is flattened row-major in the layout bitsandbytes sees it (`nn.Linear`'s
//!   `[out, in]`) and cut into blocks of 64. Each block keeps its absmax; its values are scaled by
//!   the reciprocal `1/absmax` and each is given the code its threshold tree picks (strict `>`).
//!   Two codes go in a byte, the first in the high nibble.
//! - Double quantization stores the absmaxes themselves in 8 bits: their mean is subtracted
//!   (the offset), and the rest is quantized blockwise (blocks of 256) over bitsandbytes' signed
//!   dynamic map, with an f32 absmax per block of 256.
//! - Storage: 4 bits + 8/64 + 32/(64·256) = 4.127 bits per parameter with double quantization,
//!   4 + 32/64 = 4.5 without.
//!
//! Where bitsandbytes' CPU build (0.50) differs from its CUDA kernels, this file follows CUDA:
//! - an all-zero block: CUDA scales by 1/0 = ∞, 0·∞ is NaN, and NaN fails every `>` test, so
//!   every code is 0 (−1.0 in NF4) with absmax 0; the CPU build guards the division and gives
//!   the code of 0.0 (7 in NF4). Both dequantize to zeros without double quantization; with it,
//!   the block's absmax 0 comes back as a small ε (the 8-bit level's rounding), and CUDA's codes
//!   give −ε for the whole block where the CPU build's give 0.
//! - the last, partial block: CUDA multiplies by the reciprocal, the CPU build divides by the
//!   absmax, which can land a value that sits on a threshold one code apart.
//! - the 8-bit absmax codes: CUDA binary-searches the map and compares with the midpoints; the
//!   CPU build looks the normalised value up in a discretised table, which can pick a neighbour
//!   near a midpoint.
//! - CUDA is compiled with `--use_fast_math`, so its `1.0f / absmax` is the hardware's
//!   approximate reciprocal (at most 1 ulp off). This file uses the correctly rounded
//!   reciprocal; a code can differ only where a scaled value sits within an ulp of a threshold.

use crate::{Error, Result};

/// Values per 4-bit block (bitsandbytes' default and what transformers saves).
pub const BLOCK: usize = 64;
/// Absmaxes per block of the second, 8-bit level.
pub const NESTED_BLOCK: usize = 256;

/// The NF4 code (`nf4_dequantization_lut` in kernels.cu, `get_4bit_type("nf4")`): quantiles of a
/// standard normal, normalised to [−1, 1], with an exact zero.
#[allow(clippy::excessive_precision)]
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// The FP4 code (1 sign, 2 exponent, 1 mantissa bit, normalised by its largest value 12), in
/// bit-pattern order: `[0, 0.0625, 8, 12, 4, 6, 2, 3] / 12` and the same negated.
pub const FP4_CODE: [f32; 16] = {
    let mag = [0.0, 0.0625 / 12.0, 8.0 / 12.0, 1.0, 4.0 / 12.0, 6.0 / 12.0, 2.0 / 12.0, 3.0 / 12.0];
    let mut out = [0f32; 16];
    let mut i = 0;
    while i < 8 {
        out[i] = mag[i] as f32;
        out[i + 8] = -(mag[i] as f32);
        i += 1;
    }
    out
};

/// Which 4-bit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    Nf4,
    Fp4,
    /// GGUF's Q4_0 (a GGUF file's own 4-bit weights, kept as stored): `d · (q − 8)`, blocks of 32.
    /// Not a bitsandbytes format, so never read from a run configuration.
    #[serde(rename = "q4_0", skip_deserializing)]
    Q4_0,
    /// GGUF's Q4_1: `d · q + m`, blocks of 32 (`m` in `Quant4::bias`).
    #[serde(rename = "q4_1", skip_deserializing)]
    Q4_1,
    /// GGUF's Q4_K: super-blocks of 256 whose 8 blocks of 32 each have `d · sc` as their scale and
    /// `−dmin · mn` as their term (both widened to f32 at load).
    #[serde(rename = "q4_k", skip_deserializing)]
    Q4K,
}

impl QuantType {
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Nf4 => "nf4",
            QuantType::Fp4 => "fp4",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q4K => "q4_k",
        }
    }
    /// Whether this is one of GGUF's formats (kept from a GGUF file), not bitsandbytes'.
    pub fn is_gguf(self) -> bool {
        matches!(self, QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q4K)
    }
    pub fn code(self) -> &'static [f32; 16] {
        match self {
            QuantType::Nf4 => &NF4_CODE,
            QuantType::Fp4 => &FP4_CODE,
            QuantType::Q4_0 => &super::gguf4::Q4_0_CODE,
            QuantType::Q4_1 | QuantType::Q4K => &super::gguf4::Q4_1_CODE,
        }
    }
    /// The code of a value already scaled into [−1, 1]: the threshold trees of `dQuantizeNF4`
    /// and `dQuantizeFP4`. NaN takes the path of every failed comparison. GGUF's formats pick
    /// their codes a block at a time (`gguf4::quantize`), so they never come here.
    pub fn quantize(self, x: f32) -> u8 {
        match self {
            QuantType::Nf4 => nf4_code(x),
            QuantType::Fp4 => fp4_code(x),
            QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q4K => unreachable!("GGUF's 4-bit formats are quantized by gguf4::quantize"),
        }
    }
}

impl std::str::FromStr for QuantType {
    type Err = Error;
    fn from_str(s: &str) -> Result<QuantType> {
        match s {
            "nf4" => Ok(QuantType::Nf4),
            "fp4" => Ok(QuantType::Fp4),
            _ => Err(Error::input(format!("unknown 4-bit quant type '{s}': use nf4 or fp4"))),
        }
    }
}

/// `dQuantizeNF4`: the thresholds are the midpoints between neighbouring codes, as literals.
#[allow(clippy::excessive_precision)]
fn nf4_code(x: f32) -> u8 {
    if x > 0.03979014977812767 {
        if x > 0.3893125355243683 {
            if x > 0.6427869200706482 {
                if x > 0.8614784181118011 { 0b1111 } else { 0b1110 }
            } else if x > 0.5016634166240692 {
                0b1101
            } else {
                0b1100
            }
        } else if x > 0.2035212516784668 {
            if x > 0.2920137718319893 { 0b1011 } else { 0b1010 }
        } else if x > 0.1202552504837513 {
            0b1001
        } else {
            0b1000
        }
    } else if x > -0.33967943489551544 {
        if x > -0.13791173323988914 {
            if x > -0.045525018125772476 { 0b0111 } else { 0b0110 }
        } else if x > -0.23460740596055984 {
            0b0101
        } else {
            0b0100
        }
    } else if x > -0.6106329262256622 {
        if x > -0.4599952697753906 { 0b0011 } else { 0b0010 }
    } else if x > -0.8480964004993439 {
        0b0001
    } else {
        0b0000
    }
}

/// `dQuantizeFP4`: sign bit, then a search over the magnitude's thresholds.
#[allow(clippy::excessive_precision)]
fn fp4_code(x: f32) -> u8 {
    let sign = if x < 0.0 { 0b1000 } else { 0 };
    let x = x.abs();
    let m = if x > 0.29166667 {
        if x > 0.583333 {
            if x > 0.8333333 { 0b0011 } else { 0b0010 }
        } else if x > 0.4166667 {
            0b101
        } else {
            0b100
        }
    } else if x > 0.0859375 {
        if x > 0.20833333 { 0b0111 } else { 0b0110 }
    } else if x > 0.00260417 {
        0b0001
    } else {
        0b0000
    };
    m + sign
}

/// The absmaxes of a 4-bit matrix: plain f32, or themselves quantized (double quantization).
#[derive(Clone, Debug, PartialEq)]
pub enum Absmax {
    F32(Vec<f32>),
    Double(Nested),
}

/// The second level of double quantization (bitsandbytes' `state2` and `offset`).
#[derive(Clone, Debug, PartialEq)]
pub struct Nested {
    /// One 8-bit code per 4-bit block.
    pub codes: Vec<u8>,
    /// One f32 absmax per `blocksize` codes.
    pub absmax: Vec<f32>,
    pub blocksize: usize,
    /// The 256-value map the codes index (the signed dynamic map).
    pub map: Vec<f32>,
    /// The mean that was subtracted before quantizing.
    pub offset: f32,
}

/// A weight matrix in 4 bits, as bitsandbytes stores it. `shape` is the `nn.Linear` shape
/// `[out, in]`, flattened row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Quant4 {
    pub quant_type: QuantType,
    pub shape: [usize; 2],
    pub blocksize: usize,
    /// Two codes per byte, the first in the high nibble; `ceil(n / 2)` bytes.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
    /// A term per block added after the scaling (GGUF's Q4_1: the block's minimum); None for
    /// bitsandbytes' formats and Q4_0.
    pub bias: Option<Vec<f32>>,
}

impl Quant4 {
    pub fn numel(&self) -> usize {
        self.shape[0] * self.shape[1]
    }
    pub fn blocks(&self) -> usize {
        self.numel().div_ceil(self.blocksize)
    }
    pub fn double_quant(&self) -> bool {
        matches!(self.absmax, Absmax::Double(_))
    }

    /// Quantize a row-major `[out, in]` matrix.
    pub fn quantize(values: &[f32], shape: [usize; 2], quant_type: QuantType, double_quant: bool) -> Result<Quant4> {
        let n = shape[0] * shape[1];
        if values.len() != n {
            return Err(Error::input(format!("{} values do not fill a {}×{} matrix", values.len(), shape[0], shape[1])));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::input(format!(
                "value {i} of a {}×{} weight is {}: a weight with NaN or infinity cannot be quantized",
                shape[0], shape[1], values[i]
            )));
        }
        if quant_type.is_gguf() {
            // GGUF's formats have no second level; a model kept in one is merged back into it.
            return Ok(super::gguf4::quantize(values, shape, quant_type));
        }
        let (packed, absmax) = quantize_4bit(values, quant_type, BLOCK);
        let absmax = if double_quant { Absmax::Double(Nested::quantize(&absmax, NESTED_BLOCK)) } else { Absmax::F32(absmax) };
        Ok(Quant4 { quant_type, shape, blocksize: BLOCK, packed, absmax, bias: None })
    }

    /// The f32 absmax of every 4-bit block, as bitsandbytes' dequantization computes it:
    /// `map[code] · absmax₂` (one f32 multiply), then `+ offset` (one f32 add).
    pub fn block_absmax(&self) -> Vec<f32> {
        match &self.absmax {
            Absmax::F32(a) => a.clone(),
            Absmax::Double(n) => n.dequantize(),
        }
    }

    /// The f32 matrix, row-major `[out, in]`: `code[nibble] · absmax[block]` (`+ bias[block]`).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = dequantize_4bit(&self.packed, &self.block_absmax(), self.quant_type, self.blocksize, self.numel());
        if let Some(bias) = &self.bias {
            for (i, v) in out.iter_mut().enumerate() {
                *v += bias[i / self.blocksize];
            }
        }
        out
    }

    /// Bytes as stored: packed codes, absmaxes (and the nested level's absmaxes and offset).
    /// The code tables (16 and 256 values) are shared and not counted.
    pub fn storage_bytes(&self) -> usize {
        self.packed.len()
            + match &self.absmax {
                Absmax::F32(a) => 4 * a.len(),
                Absmax::Double(n) => n.codes.len() + 4 * n.absmax.len() + 4,
            }
            + self.bias.as_ref().map_or(0, |b| 4 * b.len())
    }
}

/// `kQuantizeBlockwise` for 4-bit types: returns the packed codes and one absmax per block.
pub fn quantize_4bit(values: &[f32], quant_type: QuantType, blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let n = values.len();
    let mut codes = Vec::with_capacity(n + 1);
    let mut absmax = Vec::with_capacity(n.div_ceil(blocksize));
    for block in values.chunks(blocksize) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        absmax.push(amax);
        let scale = 1.0f32 / amax;
        codes.extend(block.iter().map(|&v| quant_type.quantize(v * scale)));
    }
    if n % 2 == 1 {
        // The kernel loads the missing value as 0.0 and packs its code too.
        codes.push(quant_type.quantize(0.0));
    }
    let packed = codes.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect();
    (packed, absmax)
}

/// `kDequantizeBlockwise` for 4-bit types.
pub fn dequantize_4bit(packed: &[u8], absmax: &[f32], quant_type: QuantType, blocksize: usize, n: usize) -> Vec<f32> {
    let code = quant_type.code();
    (0..n)
        .map(|i| {
            let byte = packed[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
            code[nibble as usize] * absmax[i / blocksize]
        })
        .collect()
}

impl Nested {
    /// Double quantization: subtract the mean, then 8-bit blockwise over the dynamic map.
    pub fn quantize(absmax: &[f32], blocksize: usize) -> Nested {
        // torch's `absmax.mean()` in f32; computed here in f64 and rounded once.
        let offset = (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len().max(1) as f64) as f32;
        Nested::quantize_with_offset(absmax, blocksize, offset)
    }

    /// Double quantization around a given offset.
    pub fn quantize_with_offset(absmax: &[f32], blocksize: usize, offset: f32) -> Nested {
        let centred: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
        let map = dynamic_map();
        let mut codes = Vec::with_capacity(centred.len());
        let mut absmax2 = Vec::with_capacity(centred.len().div_ceil(blocksize));
        for block in centred.chunks(blocksize) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            absmax2.push(amax);
            let scale = 1.0f32 / amax;
            codes.extend(block.iter().map(|&v| quantize_dynamic(&map, v * scale)));
        }
        Nested { codes, absmax: absmax2, blocksize, map: map.to_vec(), offset }
    }

    pub fn dequantize(&self) -> Vec<f32> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let product = self.map[c as usize] * self.absmax[i / self.blocksize];
                product + self.offset
            })
            .collect()
    }
}

/// bitsandbytes' signed dynamic map (`create_dynamic_map(signed=True)`, 8 bits, up to 7
/// exponent bits), reproduced in the same f32 arithmetic: for exponent i, `2^i + 1` points of
/// `torch.linspace(0.1, 1, ·)`, the midpoints of neighbours, times `10^(i−6)`, both signs; then
/// 0 and 1, sorted.
pub fn dynamic_map() -> [f32; 256] {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7u32 {
        let items = (1usize << i) + 1;
        let b = linspace_f32(0.1, 1.0, items);
        // Python's `10 ** (i - 6)`: a float below 10⁰, the int 1 at i = 6; torch multiplies a
        // float32 tensor by the scalar rounded to float32.
        let scale = 10f64.powi(i as i32 - 6) as f32;
        let means: Vec<f32> = b.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        data.extend(means.iter().map(|m| scale * m));
        data.extend(means.iter().map(|m| -(scale * m)));
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(|a, b| a.total_cmp(b));
    let mut out = [0f32; 256];
    out.copy_from_slice(&data);
    out
}

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU: the step in f32, the first half
/// counted up from `start`, the second half down from `end`, each point one fused multiply-add
/// (torch's vectorized kernel; a separate multiply and add differ in the last bit).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - i - 1) as f32, end) })
        .collect()
}

/// `dQuantize<0>`: binary search over the sorted 256-value map, then the nearer neighbour by the
/// midpoint (ties go to the middle pivot).
pub fn quantize_dynamic(map: &[f32; 256], x: f32) -> u8 {
    let (mut pivot, mut upper_pivot, mut lower_pivot) = (127i32, 255i32, 0i32);
    let (mut lower, mut upper) = (-1.0f32, 1.0f32);
    let mut val = map[pivot as usize];
    let mut i = 64;
    while i > 0 {
        if x > val {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = map[pivot as usize];
        i >>= 1;
    }
    if upper_pivot == 255 {
        upper = map[255];
    }
    if lower_pivot == 0 {
        lower = map[0];
    }
    let picked = if x > val {
        if x > (upper + val) * 0.5 { upper_pivot } else { pivot }
    } else if x < (lower + val) * 0.5 {
        lower_pivot
    } else {
        pivot
    };
    picked as u8
}

/// Bits per parameter of a 4-bit matrix with `n` values (the code tables not counted).
pub fn bits_per_param(n: usize, double_quant: bool) -> f64 {
    let blocks = n.div_ceil(BLOCK);
    let bytes = n.div_ceil(2) + if double_quant { blocks + 4 * blocks.div_ceil(NESTED_BLOCK) + 4 } else { 4 * blocks };
    bytes as f64 * 8.0 / n as f64
}

/// Uniform noise in [−scale/2, scale/2) from a seeded xorshift, for tests.
#[cfg(test)]
pub(crate) fn test_noise(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nf4_thresholds_pick_the_nearest_code() {
        // Every code maps to itself, and a value just past a midpoint goes to the upper code.
        for (i, &c) in NF4_CODE.iter().enumerate() {
            assert_eq!(nf4_code(c) as usize, i);
        }
        for (i, w) in NF4_CODE.windows(2).enumerate() {
            let mid = (w[0] as f64 + w[1] as f64) / 2.0;
            assert_eq!(nf4_code((mid + 1e-6) as f32) as usize, i + 1);
            assert_eq!(nf4_code((mid - 1e-6) as f32) as usize, i);
        }
    }

    #[test]
    fn fp4_codes_round_trip_and_keep_their_sign() {
        for (i, &c) in FP4_CODE.iter().enumerate() {
            // −0 has the sign bit clear in the kernel (x < 0 is false), so code 8 comes back as 0.
            let want = if i == 8 { 0 } else { i };
            assert_eq!(fp4_code(c) as usize, want, "code {i} = {c}");
        }
    }

    #[test]
    fn a_block_is_scaled_by_its_absmax_and_packed_high_nibble_first() {
        // Block [0.5, -1.0, 0.0, 1.0]: absmax 1; codes 0.5 → 12 (0.4407 is 0.059 away, 0.5626
        // 0.063), -1 → 0, 0 → 7, 1 → 15. Bytes: 0xC0, 0x7F.
        let (packed, absmax) = quantize_4bit(&[0.5, -1.0, 0.0, 1.0], QuantType::Nf4, 64);
        assert_eq!(absmax, vec![1.0]);
        assert_eq!(packed, vec![0xC0, 0x7F]);
    }

    #[test]
    fn an_all_zero_block_gets_code_zero_and_dequantizes_to_zero() {
        let q = Quant4::quantize(&[0.0; 64], [1, 64], QuantType::Nf4, false).unwrap();
        assert!(q.packed.iter().all(|&b| b == 0));
        assert!(q.dequantize().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn an_odd_length_pads_the_last_nibble_with_the_code_of_zero() {
        let (packed, _) = quantize_4bit(&[1.0, 1.0, 1.0], QuantType::Nf4, 64);
        assert_eq!(packed, vec![0xFF, 0xF7]);
    }

    #[test]
    fn the_dynamic_map_is_sorted_signed_and_ends_at_one() {
        let m = dynamic_map();
        assert!(m.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(m[255], 1.0);
        assert!(m.contains(&0.0));
        // 127 positive means, 127 negative, 0 and 1.
        assert_eq!(m.iter().filter(|v| **v < 0.0).count(), 127);
        // Every map value quantizes to its own index (the map has no duplicates).
        for (i, &v) in m.iter().enumerate() {
            assert_eq!(quantize_dynamic(&m, v) as usize, i);
        }
    }

    #[test]
    fn double_quantization_costs_4_127_bits_per_parameter() {
        // 64·256 = 16384 values: 8192 bytes of codes, 256 absmax codes, one f32 absmax₂ and the
        // f32 offset: (8192 + 256 + 4 + 4)·8 / 16384 = 4.12890625.
        assert_eq!(bits_per_param(16384, true), 4.12890625);
        // Without: (8192 + 4·256)·8 / 16384 = 4.5.
        assert_eq!(bits_per_param(16384, false), 4.5);
        // The limit as n grows: 4 + 8/64 + 32/(64·256) = 4.126953125.
        assert!((bits_per_param(64 * 256 * 4096, true) - 4.126953125).abs() < 1e-6);
    }

    #[test]
    fn double_quantization_stays_close_to_the_plain_absmaxes() {
        let values: Vec<f32> = (0..64 * 300).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / 64) as f32 * 0.01)).collect();
        let plain = Quant4::quantize(&values, [300, 64], QuantType::Nf4, false).unwrap();
        let double = Quant4::quantize(&values, [300, 64], QuantType::Nf4, true).unwrap();
        assert_eq!(plain.packed, double.packed);
        let (a, b) = (plain.block_absmax(), double.block_absmax());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() / x < 0.02, "{x} vs {y}");
        }
    }

    #[test]
    fn non_finite_weights_are_refused_with_their_position() {
        let err = Quant4::quantize(&[0.0, f32::NAN], [1, 2], QuantType::Nf4, true).unwrap_err().to_string();
        assert!(err.contains("value 1") && err.contains("NaN"), "{err}");
    }
}
