//! The precision lab: a weight matrix stored in each number format the course covers, and what
//! that costs in bits and in error. Every format rounds to nearest, ties to even, as a cast in
//! PyTorch does:
//!
//! - fp16 (IEEE binary16) and bf16 (the top 16 bits of f32), by the `half` crate;
//! - fp8 e4m3 (`float8_e4m3fn`: bias 7, no infinities, largest 448) and e5m2 (bias 15, largest
//!   57344), following the OCP 8-bit floating point spec (Micikevicius et al. 2022). Values
//!   beyond the largest finite saturate to it here, where a plain cast would give NaN or ∞;
//! - int8 with one f32 absmax scale per row (LLM.int8()'s vector-wise quantization without its
//!   outlier split): `round(x · 127 / absmax)`;
//! - fp4, nf4 and nf4 with double quantization, blockwise as bitsandbytes (see `nf4.rs`).

use serde::Serialize;

use super::nf4::{BLOCK, NESTED_BLOCK, QuantType, Quant4};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Fp32,
    Fp16,
    Bf16,
    Fp8E4m3,
    Fp8E5m2,
    Int8,
    Fp4,
    Nf4,
    Nf4Dq,
}

pub const ALL: [Format; 9] =
    [Format::Fp32, Format::Fp16, Format::Bf16, Format::Fp8E4m3, Format::Fp8E5m2, Format::Int8, Format::Fp4, Format::Nf4, Format::Nf4Dq];

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Fp32 => "fp32",
            Format::Fp16 => "fp16",
            Format::Bf16 => "bf16",
            Format::Fp8E4m3 => "fp8 e4m3",
            Format::Fp8E5m2 => "fp8 e5m2",
            Format::Int8 => "int8",
            Format::Fp4 => "fp4",
            Format::Nf4 => "nf4",
            Format::Nf4Dq => "nf4 + double quant",
        }
    }

    /// One line on what the format is.
    pub fn about(self) -> &'static str {
        match self {
            Format::Fp32 => "IEEE single precision: 1 sign, 8 exponent, 23 mantissa bits. What the engine computes in.",
            Format::Fp16 => "IEEE half: 5 exponent bits give a narrow range (6e-5 to 65504), 10 mantissa bits good precision.",
            Format::Bf16 => "bfloat16: f32's 8-bit exponent (same range), only 7 mantissa bits. The usual training format.",
            Format::Fp8E4m3 => "8-bit float, 4 exponent and 3 mantissa bits, largest 448: more precision, less range.",
            Format::Fp8E5m2 => "8-bit float, 5 exponent and 2 mantissa bits, largest 57344: more range, less precision.",
            Format::Int8 => "8-bit integers with one f32 scale per row (absmax / 127): uniform levels across each row.",
            Format::Fp4 => "4-bit float (1 sign, 2 exponent, 1 mantissa bit) per block of 64 scaled by its absmax.",
            Format::Nf4 => "4-bit NormalFloat: 16 levels at the quantiles of a normal distribution, per block of 64 with an f32 absmax.",
            Format::Nf4Dq => "NF4 whose absmaxes are quantized again to 8 bits in blocks of 256 (QLoRA's double quantization).",
        }
    }

    /// Bits per parameter of an `[out, in]` matrix in this format, scales included and
    /// amortized as the QLoRA paper counts them: every block of 64 pays its 32-bit absmax (8-bit
    /// with double quantization, plus 32 bits shared by 256 blocks). A size that is a multiple
    /// of 64 gives 4.5 bits for NF4 and 4 + 8/64 + 32/(64·256) = 4.127 with double
    /// quantization; a partial last block costs a whole one. (`nf4::bits_per_param` counts a
    /// stored matrix's bytes exactly: whole second-level blocks and the offset.)
    pub fn bits(self, shape: [usize; 2]) -> f64 {
        let n = (shape[0] * shape[1]).max(1) as f64;
        let blocks = (shape[0] * shape[1]).div_ceil(BLOCK) as f64;
        match self {
            Format::Fp32 => 32.0,
            Format::Fp16 | Format::Bf16 => 16.0,
            Format::Fp8E4m3 | Format::Fp8E5m2 => 8.0,
            Format::Int8 => 8.0 + 32.0 / shape[1].max(1) as f64,
            Format::Fp4 | Format::Nf4 => 4.0 + 32.0 * blocks / n,
            Format::Nf4Dq => 4.0 + (8.0 * blocks + 32.0 * blocks / NESTED_BLOCK as f64) / n,
        }
    }

    /// The matrix (row-major `[out, in]`) after a round trip through the format.
    pub fn round_trip(self, values: &[f32], shape: [usize; 2]) -> Result<Vec<f32>> {
        Ok(match self {
            Format::Fp32 => values.to_vec(),
            Format::Fp16 => values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
            Format::Bf16 => values.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect(),
            Format::Fp8E4m3 => values.iter().map(|&v| minifloat(v, 3, -6, 448.0)).collect(),
            Format::Fp8E5m2 => values.iter().map(|&v| minifloat(v, 2, -14, 57344.0)).collect(),
            Format::Int8 => int8_rows(values, shape[1]),
            Format::Fp4 => Quant4::quantize(values, shape, QuantType::Fp4, false)?.dequantize(),
            Format::Nf4 => Quant4::quantize(values, shape, QuantType::Nf4, false)?.dequantize(),
            Format::Nf4Dq => Quant4::quantize(values, shape, QuantType::Nf4, true)?.dequantize(),
        })
    }
}

/// Round to a float with `mantissa` fraction bits whose smallest normal exponent is `min_exp`,
/// ties to even, saturating at `max`. Subnormals share the smallest normal's quantum.
fn minifloat(x: f32, mantissa: i32, min_exp: i32, max: f64) -> f32 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = (x as f64).abs();
    // The exponent read off the f64's bits (every f32 is a normal f64).
    let e = ((((a.to_bits() >> 52) & 0x7ff) as i32) - 1023).max(min_exp);
    let quantum = 2f64.powi(e - mantissa);
    let mut r = (a / quantum).round_ties_even() * quantum;
    if r > max {
        r = max;
    }
    (r as f32).copysign(x)
}

/// int8 with a per-row absmax scale: q = round(x · 127 / absmax), clamped to ±127.
fn int8_rows(values: &[f32], cols: usize) -> Vec<f32> {
    values
        .chunks(cols.max(1))
        .flat_map(|row| {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            row.iter()
                .map(move |&v| if scale == 0.0 { 0.0 } else { (v / scale).round_ties_even().clamp(-127.0, 127.0) * scale })
                .collect::<Vec<f32>>()
        })
        .collect()
}

/// How far a round trip moved the values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorStats {
    pub rmse: f64,
    pub max_abs: f64,
    /// RMSE relative to the values' RMS.
    pub relative_rmse: f64,
}

pub fn error_stats(original: &[f32], rounded: &[f32]) -> ErrorStats {
    let n = original.len().max(1) as f64;
    let (mut se, mut max, mut ss) = (0f64, 0f64, 0f64);
    for (&a, &b) in original.iter().zip(rounded) {
        let d = (a as f64 - b as f64).abs();
        se += d * d;
        max = max.max(d);
        ss += (a as f64) * (a as f64);
    }
    let rmse = (se / n).sqrt();
    let rms = (ss / n).sqrt();
    ErrorStats { rmse, max_abs: max, relative_rmse: if rms > 0.0 { rmse / rms } else { 0.0 } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_e4m3_rounds_to_its_grid() {
        // Between 1 and 2 the e4m3 step is 2^-3 = 0.125: 1.06 → 1.0, 1.07 → 1.125, and the tie
        // 1.0625 goes to the even mantissa 1.0.
        assert_eq!(minifloat(1.06, 3, -6, 448.0), 1.0);
        assert_eq!(minifloat(1.07, 3, -6, 448.0), 1.125);
        assert_eq!(minifloat(1.0625, 3, -6, 448.0), 1.0);
        assert_eq!(minifloat(-500.0, 3, -6, 448.0), -448.0);
        // The smallest subnormal is 2^-9: 2^-10 is a tie between 0 and it and goes to 0.
        assert_eq!(minifloat(2f32.powi(-9), 3, -6, 448.0), 2f32.powi(-9));
        assert_eq!(minifloat(2f32.powi(-10), 3, -6, 448.0), 0.0);
    }

    #[test]
    fn fp8_e5m2_has_two_mantissa_bits() {
        // Between 4 and 8 the step is 2^(2-2) = 1: 5.4 → 5, 5.5 → 6 (tie to even), 6.6 → 7.
        assert_eq!(minifloat(5.4, 2, -14, 57344.0), 5.0);
        assert_eq!(minifloat(5.5, 2, -14, 57344.0), 6.0);
        assert_eq!(minifloat(6.6, 2, -14, 57344.0), 7.0);
    }

    #[test]
    fn int8_keeps_each_rows_absmax_exactly() {
        let v = [0.5, -1.0, 0.25, 2.0, 0.0, -0.02];
        let r = Format::Int8.round_trip(&v, [2, 3]).unwrap();
        assert_eq!(r[1], -1.0);
        assert_eq!(r[3], 2.0);
        // 0.25 · 127 = 31.75 → 32, times 1/127: 0.25197.
        assert!((r[2] - 32.0 / 127.0).abs() < 1e-7);
        assert!((Format::Int8.bits([2, 3]) - (8.0 + 32.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn fewer_bits_mean_more_error_on_a_normal_matrix() {
        let v = crate::quant::nf4::test_noise(64 * 64, 3, 0.2);
        let err = |f: Format| error_stats(&v, &f.round_trip(&v, [64, 64]).unwrap()).rmse;
        assert_eq!(err(Format::Fp32), 0.0);
        assert!(err(Format::Fp16) < err(Format::Bf16));
        assert!(err(Format::Bf16) < err(Format::Fp8E4m3));
        assert!(err(Format::Fp8E4m3) < err(Format::Fp8E5m2));
        assert!(err(Format::Int8) < err(Format::Nf4));
        assert!(err(Format::Nf4) <= err(Format::Nf4Dq) * 1.01);
        // Multiples of 64: 4 + 8/64 + 32/16384 = 4.126953125 and 4 + 32/64 = 4.5.
        assert_eq!(Format::Nf4Dq.bits([64, 64]), 4.126953125);
        assert_eq!(Format::Nf4.bits([3, 64]), 4.5);
        // 63 values still pay a whole block: 4 + 32/63.
        assert_eq!(Format::Nf4.bits([7, 9]), 4.0 + 32.0 / 63.0);
    }
}
