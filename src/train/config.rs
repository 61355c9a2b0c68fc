//! The trainer's settings: the method (LoRA, QLoRA, full, partial, DPO), the optimizer, the
//! learning-rate schedule, and their check before a run starts.

use serde::{Deserialize, Serialize};

use crate::lora::LoraConfig;
use crate::quant::QuantType;
use crate::quant::bnb::QuantConfig;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Low-rank adapters on the targeted layers; the base is frozen.
    Lora,
    /// LoRA over a base whose linear weights are stored in 4 bits (NF4 or FP4, Dettmers et al.
    /// 2023); gradients flow through the dequantized weights to the adapters.
    Qlora,
    /// Every parameter trains.
    Full,
    /// Only the last `partial_layers` blocks (and the final norm) train.
    Partial,
    /// Preference finetuning: a LoRA adapter trained with DPO on `{"prompt", "chosen",
    /// "rejected"}` pairs, against the base with the adapter off (`crate::train::preference`).
    Dpo,
}

impl Method {
    /// LoRA, QLoRA or DPO: an adapter trains, the base stays frozen.
    pub fn is_adapter(self) -> bool {
        matches!(self, Method::Lora | Method::Qlora | Method::Dpo)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// Everything that shapes the optimisation, with transformers' defaults where it has one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrainConfig {
    pub method: Method,
    pub lora: LoraConfig,
    /// How QLoRA stores the base's linear weights.
    pub quant: QuantConfig,
    pub partial_layers: usize,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub warmup: usize,
    /// Optimizer steps; 0 means "from epochs".
    pub steps: usize,
    pub epochs: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub seq_len: usize,
    pub pack: bool,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub eval_every: usize,
    /// Stop after this many evaluations without a better valid loss (0: never).
    pub patience: usize,
    /// Give up after this many skipped (non-finite) steps in a row.
    pub nan_patience: usize,
    /// DPO's β: how far the policy may move from the reference (higher: less far).
    pub dpo_beta: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Lora,
            lora: LoraConfig::default(),
            quant: QuantConfig { quant_type: QuantType::Nf4, double_quant: true },
            partial_layers: 1,
            optimizer: Optimizer::Adamw,
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: Schedule::Linear,
            warmup: 0,
            steps: 0,
            epochs: 1.0,
            batch_size: 8,
            grad_accum: 1,
            seq_len: 256,
            pack: false,
            max_grad_norm: 1.0,
            seed: 0,
            eval_every: 0,
            patience: 0,
            nan_patience: 5,
            dpo_beta: crate::train::preference::DEFAULT_BETA,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::input(m));
        if self.batch_size == 0 || self.grad_accum == 0 || self.seq_len < 2 {
            return bad("batch size and grad accumulation must be at least 1, and seq len at least 2".into());
        }
        if self.method == Method::Dpo && !(self.dpo_beta > 0.0 && self.dpo_beta.is_finite()) {
            return bad(format!("DPO's beta must be positive, not {}", self.dpo_beta));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("learning rate must be positive, not {}", self.lr));
        }
        if self.steps == 0 && !(self.epochs > 0.0) {
            return bad("give --steps N or a positive --epochs".into());
        }
        use crate::limits::*;
        let sizes = [
            ("batch size", self.batch_size, MAX_BATCH),
            ("grad accumulation", self.grad_accum, MAX_GRAD_ACCUM),
            ("seq len", self.seq_len, MAX_SEQ_LEN),
            ("steps", self.steps, MAX_STEPS),
            ("warmup", self.warmup, MAX_STEPS),
            ("batch size × seq len", self.batch_size.saturating_mul(self.seq_len), MAX_BATCH_TOKENS),
        ];
        for (name, value, max) in sizes {
            if value > max {
                return bad(format!("{name} {value} is over tinytune's limit of {max}"));
            }
        }
        if !(self.epochs.is_finite() && self.epochs <= MAX_EPOCHS) {
            return bad(format!("epochs {} is over tinytune's limit of {MAX_EPOCHS}", self.epochs));
        }
        if !((0.0..1.0).contains(&self.beta1) && (0.0..1.0).contains(&self.beta2)) {
            return bad(format!("AdamW's betas must be in [0, 1), not {} and {}", self.beta1, self.beta2));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(format!("AdamW's eps must be positive, not {}", self.eps));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("weight decay must be 0 or positive, not {}", self.weight_decay));
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return bad(format!("max grad norm must be 0 (no clipping) or positive, not {}", self.max_grad_norm));
        }
        if self.method.is_adapter() {
            self.lora.validate()?;
        }
        Ok(())
    }

    /// Learning rate at optimizer step `step` (0-based) of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup {
            return self.lr * step as f64 / self.warmup.max(1) as f64;
        }
        let span = total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => self.lr * (1.0 - progress),
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}
