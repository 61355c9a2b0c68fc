//! GGUF tensor data to f32, computed as gguf-py's numpy `dequantize` computes it (the same f32
//! operations in the same order, so the K-quants agree bit for bit).

use super::gguf::{TensorInfo, type_info};
use crate::Result;

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// The values of one tensor as f32, computed as gguf-py's `dequantize` computes them (the same
/// f32 operations in the same order).
pub fn dequantize(t: &TensorInfo, file: &[u8]) -> Result<Vec<f32>> {
    let data = &file[t.start..t.start + t.bytes];
    let (name, block, block_bytes) = type_info(t.ggml_type)?;
    // The types kept in 8-bit codes: their one decoder (`quant::q8`), over the whole tensor at once
    // (in parts on the team), checked bit for bit against gguf-py's values (tests/gguf.rs).
    if let Some(kind) = crate::quant::q8::Kind8::of_gguf(name) {
        return Ok(crate::quant::q8::Quant8::from_gguf(kind, data, [1, data.len() / block_bytes * block])?.dequantize());
    }
    let mut out = Vec::with_capacity(t.elements());
    match name {
        "F32" => out.extend(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        "F16" => out.extend(data.chunks_exact(2).map(f16)),
        "BF16" => out.extend(data.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))),
        _ => {
            for b in data.chunks_exact(block_bytes) {
                let start = out.len();
                out.resize(start + block, 0.0);
                dequantize_block(name, b, &mut out[start..]);
            }
        }
    }
    Ok(out)
}

fn dequantize_block(kind: &str, b: &[u8], out: &mut [f32]) {
    match kind {
        "Q4_0" | "Q4_1" => {
            let d = f16(&b[0..2]);
            let (m, qs) = if kind == "Q4_1" { (Some(f16(&b[2..4])), &b[4..20]) } else { (None, &b[2..18]) };
            for e in 0..32 {
                let q = (qs[e % 16] >> (4 * (e / 16))) & 0x0F;
                out[e] = match m {
                    Some(m) => d * q as f32 + m,
                    None => d * ((q as i8 - 8) as f32),
                };
            }
        }
        "Q4_K" => {
            let (d, dmin) = (f16(&b[0..2]), f16(&b[2..4]));
            let s = &b[4..16];
            let qs = &b[16..144];
            let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
            for j in 0..4 {
                sc[j] = s[j] & 0x3F;
                sc[4 + j] = (s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30);
                mn[j] = s[4 + j] & 0x3F;
                mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
            }
            for e in 0..256 {
                let sub = e / 32;
                let q = (qs[(sub / 2) * 32 + e % 32] >> (4 * (sub % 2))) & 0x0F;
                let dl = d * sc[sub] as f32;
                let ml = dmin * mn[sub] as f32;
                out[e] = dl * q as f32 - ml;
            }
        }
        _ => unreachable!("every block type is listed in TYPES"),
    }
}

