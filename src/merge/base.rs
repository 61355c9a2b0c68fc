//! Merging an adapter into its base model and out again: W₀ ← W₀ ± s·A·B, computed in f32,
//! checked for finite values. A 4-bit base is dequantized, changed and quantized again, as PEFT's
//! `merge` on a bitsandbytes `Linear4bit` does.

use burn::tensor::Tensor;

use crate::lora::LoraAdapter;
use crate::model::Model;
use crate::{Error, Result};

/// A new base for `linear` holding `w` (`[in, out]` f32): dense as it is, or quantized again in the
/// base's 4-bit format, as PEFT's merge into a bitsandbytes `Linear4bit` does.
async fn rebase(linear: &crate::model::layers::Linear, w: Tensor<2>, path: &str) -> Result<crate::model::layers::Base> {
    use crate::model::layers::Base;
    Ok(match &linear.base {
        Base::Dense(_) => Base::Dense(w),
        Base::Quant(q) => {
            let device = w.device();
            let [d_in, d_out] = w.dims();
            let values = crate::model::read_f32(w.transpose()).await?;
            let requant = crate::quant::Quant4::quantize(&values, [d_out, d_in], q.layout.quant_type, q.layout.nested > 0)
                .map_err(|e| Error::input(format!("{path}: {e}")))?;
            Base::Quant(crate::quant::Q4Tensor::new(&requant, &device))
        }
    })
}

/// Fold an adapter into its base weights (W₀ ← W₀ + s·A·B) and remove it. Computed in f32 on the
/// device; refuses a result with NaN or infinity and leaves the model unchanged then. A 4-bit
/// base is dequantized, merged and quantized again (PEFT's `merge` on `Linear4bit`), which adds
/// the rounding of a new quantization.
pub async fn into_base(model: &mut Model, name: &str) -> Result<usize> {
    let mut updates = Vec::new();
    for (path, linear) in model.arch.linears() {
        if let Some(adapter) = linear.adapter(name) {
            let merged = linear.weight() + adapter.delta();
            let finite = crate::model::read_f32(merged.clone().is_finite().float().mean()).await?;
            if finite[0] < 1.0 {
                return Err(Error::input(format!(
                    "merging adapter '{name}' into {path} gives non-finite weights; the adapter is damaged"
                )));
            }
            let base = rebase(linear, merged, &path).await?;
            updates.push((path, base));
        }
    }
    if updates.is_empty() {
        return Err(Error::input(format!("no layer has an adapter named '{name}'")));
    }
    let count = updates.len();
    let mut by_path: std::collections::HashMap<String, crate::model::layers::Base> = updates.into_iter().collect();
    for (path, linear) in model.arch.linears_mut() {
        if let Some(w) = by_path.remove(&path) {
            linear.base = w;
            linear.adapters.retain(|a| a.name != name);
        }
    }
    Ok(count)
}

/// The inverse of `into_base` for an adapter still at hand: W₀ ← W₀ - s·A·B (quantized again for a
/// 4-bit base, so not exact there).
pub async fn out_of_base(model: &mut Model, adapters: &[(String, LoraAdapter)]) -> Result<()> {
    for (path, linear) in model.arch.linears_mut() {
        for (p, adapter) in adapters {
            if *p == path {
                linear.base = rebase(linear, linear.weight() - adapter.delta(), &path).await?;
            }
        }
    }
    Ok(())
}

