//! Looking inside adapters while they train: the factors and ΔW of one module for heatmaps, the
//! spectrum of every adapted module, and the memory ledger. Factors are read back to the host
//! (they are small: r·(in + out) values a module); ΔW is never formed at full size.

pub mod calculator;
pub mod memory;
pub mod precision;
pub mod spectrum;

use serde::Serialize;

use crate::model::{Model, read_f32};
use crate::{Error, Result};
use spectrum::{Shrunk, block_mean, effective_rank, lora_spectrum, shrink_method};

/// The singular values of one adapted module's ΔW.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleSpectrum {
    pub path: String,
    pub values: Vec<f64>,
    #[serde(rename = "effectiveRank")]
    pub effective_rank: f64,
}

/// One module's adapter for display, in PEFT's orientation: A `[r, in]`, B `[out, r]`,
/// ΔW = s·B·A `[out, in]`, each shrunk by block means to at most `max_side` a side.
#[derive(Clone, Debug, Serialize)]
pub struct Matrices {
    pub path: String,
    pub rank: usize,
    #[serde(rename = "in")]
    pub d_in: usize,
    pub out: usize,
    pub scale: f64,
    pub a: Shrunk,
    pub b: Shrunk,
    pub delta: Shrunk,
}

/// Paths of the layers that carry adapter `name`, in model order.
pub fn adapted_paths(model: &Model, name: &str) -> Vec<String> {
    model.arch.linears().into_iter().filter(|(_, l)| l.adapter(name).is_some()).map(|(p, _)| p).collect()
}

/// A `[r, in]` and B `[out, r]` of adapter `name` on `path`, as host f64, with its scale.
async fn factors(model: &Model, path: &str, name: &str) -> Result<(Vec<f64>, Vec<f64>, usize, usize, usize, f64)> {
    let linears = model.arch.linears();
    let adapter = linears
        .iter()
        .find(|(p, _)| p == path)
        .ok_or_else(|| Error::input(format!("the model has no layer {path}")))?
        .1
        .adapter(name)
        .ok_or_else(|| Error::input(format!("{path} has no adapter named '{name}'")))?;
    let [d_in, r] = adapter.a.dims();
    let d_out = adapter.b.dims()[1];
    // Stored as A [in, r] and B [r, out]: the transposes of PEFT's lora_A and lora_B.
    let a_ours = read_f32(adapter.a.clone().detach()).await?;
    let b_ours = read_f32(adapter.b.clone().detach()).await?;
    let a: Vec<f64> = (0..r * d_in).map(|idx| a_ours[(idx % d_in) * r + idx / d_in] as f64).collect();
    let b: Vec<f64> = (0..d_out * r).map(|idx| b_ours[(idx % r) * d_out + idx / r] as f64).collect();
    Ok((a, b, r, d_in, d_out, adapter.scale))
}

/// The spectrum of ΔW for every module that carries adapter `name`.
pub async fn spectra(model: &Model, name: &str) -> Result<Vec<ModuleSpectrum>> {
    let mut out = Vec::new();
    for path in adapted_paths(model, name) {
        let (a, b, r, d_in, d_out, scale) = factors(model, &path, name).await?;
        let values = lora_spectrum(&a, &b, r, d_in, d_out, scale);
        out.push(ModuleSpectrum { effective_rank: effective_rank(&values), values, path });
    }
    Ok(out)
}

/// A, B and ΔW of adapter `name` on `path`, shrunk for display. The shrunk ΔW is computed from
/// the shrunk factors: the block mean of B·A over a block of rows I and columns J equals
/// (mean of B's rows over I)·(mean of A's columns over J), so it is exact without forming ΔW.
pub async fn matrices(model: &Model, path: &str, name: &str, max_side: usize) -> Result<Matrices> {
    let (a, b, r, d_in, d_out, scale) = factors(model, path, name).await?;
    let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
    let a_small = block_mean(&to32(&a), r, d_in, r, max_side);
    let b_small = block_mean(&to32(&b), d_out, r, max_side, r);
    let (rows, cols) = (b_small.rows, a_small.cols);
    let mut delta = vec![0.0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let v: f64 = (0..r).map(|k| b_small.values[i * r + k] as f64 * a_small.values[k * cols + j] as f64).sum();
            delta[i * cols + j] = (scale * v) as f32;
        }
    }
    let delta = Shrunk { values: delta, rows, cols, from_rows: d_out, from_cols: d_in, method: shrink_method(d_out, d_in, rows, cols) };
    Ok(Matrices { path: path.to_string(), rank: r, d_in, out: d_out, scale, a: a_small, b: b_small, delta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrunk_delta_from_shrunk_factors_equals_block_means_of_the_full_delta() {
        // B [6, 2], A [2, 9], s = 1.5; ΔW [6, 9] shrunk to 3 × 3 both ways.
        let b: Vec<f32> = (0..12).map(|v| (v as f32 - 5.0) / 3.0).collect();
        let a: Vec<f32> = (0..18).map(|v| ((v * 7 % 5) as f32 - 2.0) / 2.0).collect();
        let s = 1.5f32;
        let mut full = vec![0.0f32; 54];
        for i in 0..6 {
            for j in 0..9 {
                full[i * 9 + j] = s * (0..2).map(|k| b[i * 2 + k] * a[k * 9 + j]).sum::<f32>();
            }
        }
        let want = block_mean(&full, 6, 9, 3, 3);
        let (bs, as_) = (block_mean(&b, 6, 2, 3, 2), block_mean(&a, 2, 9, 2, 3));
        for i in 0..3 {
            for j in 0..3 {
                let got = s * (0..2).map(|k| bs.values[i * 2 + k] * as_.values[k * 3 + j]).sum::<f32>();
                assert!((got - want.values[i * 3 + j]).abs() < 1e-5, "{got} vs {}", want.values[i * 3 + j]);
            }
        }
    }
}
