//! The run configuration: the keys of `run.toml`, which are the `tinytune train` flags. The
//! page exports this file and the CLI accepts it unchanged.

use serde::{Deserialize, Serialize};

use super::data::{DataOptions, OnBadLine};
use super::trainer::{Method, Optimizer, Schedule, TrainConfig};
use crate::lora::{Init, LoraConfig, Targets};
use crate::quant::QuantType;
use crate::quant::bnb::QuantConfig;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub model: String,
    pub data: String,
    pub valid_data: Option<String>,
    pub out: String,
    pub method: Method,
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// `all-linear` or a comma-separated list of module names.
    pub targets: String,
    pub rslora: bool,
    pub init: Init,
    /// QLoRA: `nf4` or `fp4`.
    pub quant_type: QuantType,
    /// QLoRA: quantize the absmaxes too (8 bits, blocks of 256).
    pub double_quant: bool,
    /// DPO's β.
    pub beta: f64,
    pub partial_layers: usize,
    pub steps: usize,
    pub epochs: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub seq_len: usize,
    pub pack: bool,
    pub train_on_prompt: bool,
    pub skip_bad_lines: bool,
    pub valid_fraction: f64,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub warmup: usize,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub eval_every: usize,
    pub patience: usize,
    pub checkpoint_every: usize,
    pub device: String,
}

impl Default for RunConfig {
    fn default() -> Self {
        let t = TrainConfig::default();
        let l = LoraConfig::default();
        RunConfig {
            model: String::new(),
            data: String::new(),
            valid_data: None,
            out: String::new(),
            method: t.method,
            rank: l.r,
            alpha: l.alpha,
            dropout: l.dropout,
            targets: "all-linear".into(),
            rslora: l.rslora,
            init: l.init,
            quant_type: t.quant.quant_type,
            beta: t.dpo_beta,
            double_quant: t.quant.double_quant,
            partial_layers: t.partial_layers,
            steps: t.steps,
            epochs: t.epochs,
            batch_size: t.batch_size,
            grad_accum: t.grad_accum,
            seq_len: t.seq_len,
            pack: t.pack,
            train_on_prompt: false,
            skip_bad_lines: false,
            valid_fraction: 0.0,
            optimizer: t.optimizer,
            lr: t.lr,
            weight_decay: t.weight_decay,
            schedule: t.schedule,
            warmup: t.warmup,
            max_grad_norm: t.max_grad_norm,
            seed: t.seed,
            eval_every: t.eval_every,
            patience: t.patience,
            checkpoint_every: 0,
            device: "auto".into(),
        }
    }
}

impl RunConfig {
    /// How this run reads its data files.
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            seq_len: self.seq_len,
            train_on_prompt: self.train_on_prompt,
            on_bad_line: if self.skip_bad_lines { OnBadLine::Skip } else { OnBadLine::Stop },
        }
    }

    pub fn from_toml(text: &str) -> Result<RunConfig> {
        toml::from_str(text).map_err(|e| Error::input(format!("run.toml: {e}")))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("run config serialises")
    }

    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            method: self.method,
            lora: LoraConfig {
                r: self.rank,
                alpha: self.alpha,
                dropout: self.dropout,
                rslora: self.rslora,
                targets: Targets::parse(&self.targets),
                init: self.init,
            },
            quant: QuantConfig { quant_type: self.quant_type, double_quant: self.double_quant },
            dpo_beta: self.beta,
            partial_layers: self.partial_layers,
            optimizer: self.optimizer,
            lr: self.lr,
            weight_decay: self.weight_decay,
            schedule: self.schedule,
            warmup: self.warmup,
            steps: self.steps,
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            seq_len: self.seq_len,
            pack: self.pack,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
            eval_every: self.eval_every,
            patience: self.patience,
            ..TrainConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_config_survives_a_toml_round_trip() {
        let c = RunConfig { model: "m".into(), data: "d.jsonl".into(), rank: 4, lr: 1e-3, ..RunConfig::default() };
        assert_eq!(RunConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = RunConfig::from_toml("rnak = 4").unwrap_err().to_string();
        assert!(err.contains("rnak"), "{err}");
    }
}
