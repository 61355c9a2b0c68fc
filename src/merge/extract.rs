//! LoRA extraction: the best rank-r approximation (Eckart–Young) of what finetuning changed in
//! each linear layer, as a PEFT adapter. For every linear, D = W_tuned − W_base (`[out, in]`),
//! and its truncated SVD gives lora_B = U_r·S_r, lora_A = V_rᵀ, with `lora_alpha = r` (scaling 1).
//! The share of D's energy (squared Frobenius norm) the r directions keep says how low-rank the
//! change was.

use std::collections::BTreeMap;

use serde::Serialize;

use super::combine::truncated_svd;
use crate::lora::peft::{PeftAdapter, PeftConfig};
use crate::model::{Model, read_f32};
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct ModuleEnergy {
    pub path: String,
    /// ‖D‖_F.
    pub norm: f64,
    /// Σ_{i<r} σᵢ² / Σ σᵢ²; 1 when D is zero.
    pub kept: f64,
}

/// The rank-`rank` adapter that takes `base` towards `tuned`, and the energy kept per module.
pub async fn extract(base: &Model, tuned: &Model, rank: usize, base_name: &str) -> Result<(PeftAdapter, Vec<ModuleEnergy>)> {
    if rank == 0 {
        return Err(Error::input("--rank must be at least 1"));
    }
    if base.config.model_type() != tuned.config.model_type() {
        return Err(Error::input(format!(
            "the base is a {} model and the tuned one a {}: extraction needs the same architecture",
            base.config.model_type(),
            tuned.config.model_type()
        )));
    }
    let tuned_linears: BTreeMap<String, &crate::model::layers::Linear> = tuned.arch.linears().into_iter().collect();
    let mut modules = BTreeMap::new();
    let mut energy = Vec::new();
    let mut names = Vec::new();
    for (path, l) in base.arch.linears() {
        let t = tuned_linears.get(&path).ok_or_else(|| Error::input(format!("the tuned model has no {path}")))?;
        let (d_in, d_out) = (l.d_in(), l.d_out());
        if (t.d_in(), t.d_out()) != (d_in, d_out) {
            return Err(Error::input(format!(
                "{path} is {d_out}×{d_in} in the base but {}×{} in the tuned model",
                t.d_out(),
                t.d_in()
            )));
        }
        // [in, out] on the device; D in PEFT's [out, in].
        let wb = read_f32(l.weight().transpose()).await?;
        let wt = read_f32(t.weight().transpose()).await?;
        let d: Vec<f64> = wt.iter().zip(&wb).map(|(a, b)| *a as f64 - *b as f64).collect();
        let norm2: f64 = d.iter().map(|x| x * x).sum();
        let r = rank.min(d_in).min(d_out);
        let (b, a, s) = truncated_svd(&d, d_out, d_in, rank, None)?;
        let kept2: f64 = s.iter().take(r).map(|x| x * x).sum();
        energy.push(ModuleEnergy { path: path.clone(), norm: norm2.sqrt(), kept: if norm2 > 0.0 { (kept2 / norm2).min(1.0) } else { 1.0 } });
        names.push(path.rsplit('.').next().unwrap_or(&path).to_string());
        let a: Vec<f32> = a.iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
        modules.insert(path, ((a, [rank, d_in]), (b, [d_out, rank])));
    }
    names.sort();
    names.dedup();
    let config: PeftConfig = serde_json::from_value(serde_json::json!({
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": rank as f64,
        "target_modules": names,
        "fan_in_fan_out": base.arch.fan_in_fan_out(),
        "base_model_name_or_path": base_name,
    }))
    .expect("a valid config");
    Ok((PeftAdapter { config, modules }, energy))
}
