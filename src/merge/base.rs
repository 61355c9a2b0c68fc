//! Merging an adapter into its base model and out again: W₀ ← W₀ ± s·A·B, computed in f32,
//! checked for finite values. A 4-bit base is dequantized, changed and quantized again, as PEFT's
//! `merge` on a bitsandbytes `Linear4bit` does.

use burn::tensor::Tensor;

use crate::lora::LoraAdapter;
use crate::model::Model;
use crate::{Error, Result};

/// Whether every value is finite: the non-finite ones are counted (a mean of `is_finite` in
/// f32 rounds one bad value in more than 2²⁴ to "all finite").
pub async fn all_finite(t: Tensor<2>) -> Result<bool> {
    let bad = t.is_finite().bool_not().int().sum();
    let n = bad.into_data_async().await.map_err(|e| Error::device(format!("reading a count back failed: {e:?}")))?;
    Ok(n.iter::<i64>().next().unwrap_or(0) == 0)
}

/// A new base for `linear` holding `w` (`[in, out]` f32): dense as it is, or quantized again in the
/// base's 4-bit format, as PEFT's merge into a bitsandbytes `Linear4bit` does (Q8_0 for a base
/// kept in 8-bit codes).
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
        // Kept in 8-bit codes (GGUF): quantized again by gguf-py's Q8_0 rule (`quant::q8`).
        Base::Q8(q) => {
            let [d_in, d_out] = w.dims();
            let values = crate::model::read_f32(w.transpose()).await?;
            let requant = crate::quant::q8::Quant8::quantize_q8_0_matrix(&values, [d_out, d_in]).map_err(|e| Error::input(format!("{path}: {e}")))?;
            Base::Q8(crate::quant::q8::Q8Weight::new(requant, &q.device))
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
            if !all_finite(merged.clone()).await? {
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


#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn one_nan_among_more_than_2_24_values_is_found() {
        // 4097² = 16,785,409 > 2²⁴: the mean of is_finite would be (n − 1)/n, which is 1.0 in f32.
        let n = 4097;
        let mut v = vec![0.5f32; n * n];
        v[n * n / 2] = f32::NAN;
        let t = Tensor::<2>::from_data(TensorData::new(v, [n, n]), &burn::tensor::Device::flex());
        assert!(!futures_lite::future::block_on(all_finite(t)).unwrap());
        let ok = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 6], [2, 3]), &burn::tensor::Device::flex());
        assert!(futures_lite::future::block_on(all_finite(ok)).unwrap());
    }
}
