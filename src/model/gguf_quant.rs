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
        "Q8_0" => {
            let d = f16(&b[0..2]);
            for i in 0..32 {
                out[i] = (b[2 + i] as i8) as f32 * d;
            }
        }
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
        "Q5_0" | "Q5_1" => {
            let d = f16(&b[0..2]);
            let (m, rest) = if kind == "Q5_1" { (Some(f16(&b[2..4])), &b[4..]) } else { (None, &b[2..]) };
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let qs = &rest[4..20];
            for e in 0..32 {
                let low = (qs[e % 16] >> (4 * (e / 16))) & 0x0F;
                let q = low | ((((qh >> e) & 1) as u8) << 4);
                out[e] = match m {
                    Some(m) => d * q as f32 + m,
                    None => d * ((q as i8 - 16) as f32),
                };
            }
        }
        "Q2_K" => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (f16(&b[80..82]), f16(&b[82..84]));
            for e in 0..256 {
                let j = e / 16;
                let dl = d * (scales[j] & 0x0F) as f32;
                let ml = dmin * (scales[j] >> 4) as f32;
                let q = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                out[e] = dl * q as f32 - ml;
            }
        }
        "Q3_K" => {
            let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
            let d = f16(&b[108..110]);
            let scale = |i: usize| -> f32 {
                let low = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
                let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
                ((low | (high << 4)) as i8 - 32) as f32
            };
            for e in 0..256 {
                let dl = d * scale(e / 16);
                let ql = ((qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i8;
                let qh = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;
                out[e] = dl * (ql - (qh << 2) as i8) as f32;
            }
        }
        "Q4_K" | "Q5_K" => {
            let (d, dmin) = (f16(&b[0..2]), f16(&b[2..4]));
            let s = &b[4..16];
            let (qh, qs) = if kind == "Q5_K" { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
            let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
            for j in 0..4 {
                sc[j] = s[j] & 0x3F;
                sc[4 + j] = (s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30);
                mn[j] = s[4 + j] & 0x3F;
                mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
            }
            for e in 0..256 {
                let sub = e / 32;
                let mut q = (qs[(sub / 2) * 32 + e % 32] >> (4 * (sub % 2))) & 0x0F;
                if let Some(qh) = qh {
                    q |= ((qh[e % 32] >> sub) & 1) << 4;
                }
                let dl = d * sc[sub] as f32;
                let ml = dmin * mn[sub] as f32;
                out[e] = dl * q as f32 - ml;
            }
        }
        "Q6_K" => {
            let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16(&b[208..210]);
            for e in 0..256 {
                let g = e / 128;
                let low = (ql[g * 64 + e % 64] >> (4 * ((e % 128) / 64))) & 0x0F;
                let high = (qh[g * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 0x03;
                let q = ((low | (high << 4)) as i8 - 32) as f32;
                let dl = d * (scales[e / 16] as i8) as f32;
                out[e] = dl * q;
            }
        }
        _ => unreachable!("every block type is listed in TYPES"),
    }
}

