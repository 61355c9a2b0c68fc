//! Hugging Face PEFT adapters in and out: `adapter_config.json` + `adapter_model.safetensors`.
//! Keys are `base_model.model.<module path>.lora_A.weight` (`[r, in]`) and `.lora_B.weight`
//! (`[out, r]`), the same for GPT-2's `Conv1D` as for `nn.Linear` (PEFT's `fan_in_fan_out` only
//! changes how a merged update is transposed). Reading is strict: a missing key, a module the
//! model lacks or a shape mismatch is an error, never a warning.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{LoraAdapter, LoraConfig, Targets};
use crate::model::load::transpose;
use crate::model::{Model, read_f32};
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// The fields of `adapter_config.json` that tinytune reads; the rest are ignored on read and
/// written with PEFT's defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeftConfig {
    #[serde(default)]
    pub peft_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: serde_json::Value,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub bias: Option<String>,
    /// `true`, or the name of an init. PiSSA-style inits ("pissa", "olora", "corda") saved
    /// without conversion hold factors for a residual base, not the model the user has.
    #[serde(default)]
    pub init_lora_weights: serde_json::Value,
}

impl PeftConfig {
    /// The init name when the adapter's factors are meant for a base its init changed.
    pub fn residual_init(&self) -> Option<&str> {
        let name = self.init_lora_weights.as_str()?;
        ["pissa", "olora", "corda"].iter().any(|p| name.starts_with(p)).then_some(name)
    }
}

impl PeftConfig {
    pub fn targets(&self) -> Result<Targets> {
        match &self.target_modules {
            serde_json::Value::Array(a) => Ok(Targets::Names(
                a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            )),
            serde_json::Value::String(s) if s == "all-linear" => Ok(Targets::All(s.clone())),
            serde_json::Value::String(s) if s.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                Ok(Targets::Names(vec![s.clone()]))
            }
            other => Err(Error::input(format!(
                "adapter_config.json: target_modules {other} is a regular expression; tinytune reads lists of module names"
            ))),
        }
    }

    pub fn lora_config(&self) -> Result<LoraConfig> {
        Ok(LoraConfig {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            rslora: self.use_rslora,
            targets: self.targets()?,
            init: super::Init::Default,
        })
    }
}

/// An adapter as read from PEFT files: per module path, `lora_A` `[r, in]` and `lora_B`
/// `[out, r]` as row-major f32.
#[derive(Clone, Debug)]
pub struct PeftAdapter {
    pub config: PeftConfig,
    pub modules: BTreeMap<String, ((Vec<f32>, [usize; 2]), (Vec<f32>, [usize; 2]))>,
}

fn f32s(view: &safetensors::tensor::TensorView, key: &str) -> Result<Vec<f32>> {
    let d = view.data();
    match view.dtype() {
        safetensors::Dtype::F32 => Ok(d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        safetensors::Dtype::F16 => Ok(d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        safetensors::Dtype::BF16 => Ok(d.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        other => Err(Error::input(format!("{WEIGHTS_FILE}: \"{key}\" is {other:?}; expected f32, f16 or bf16"))),
    }
}

impl PeftAdapter {
    pub fn read_dir(dir: &Path) -> Result<PeftAdapter> {
        let config = std::fs::read_to_string(dir.join(CONFIG_FILE)).map_err(|e| {
            Error::input(format!("{}: {e} (an adapter folder holds {CONFIG_FILE} and {WEIGHTS_FILE})", dir.join(CONFIG_FILE).display()))
        })?;
        let weights = std::fs::read(dir.join(WEIGHTS_FILE)).map_err(|e| Error::io(dir.join(WEIGHTS_FILE), e))?;
        PeftAdapter::from_bytes(&config, &weights)
    }

    pub fn from_bytes(config_json: &str, weights: &[u8]) -> Result<PeftAdapter> {
        let config: PeftConfig = serde_json::from_str(config_json)
            .map_err(|e| Error::input(format!("{CONFIG_FILE}: {e}")))?;
        if let Some(t) = &config.peft_type {
            if t != "LORA" {
                return Err(Error::input(format!("{CONFIG_FILE}: peft_type \"{t}\" is not LoRA")));
            }
        }
        if config.use_dora {
            return Err(Error::input(format!("{CONFIG_FILE}: DoRA adapters (use_dora) are not supported")));
        }
        if !config.rank_pattern.is_empty() || !config.alpha_pattern.is_empty() {
            return Err(Error::input(format!(
                "{CONFIG_FILE}: per-module rank_pattern / alpha_pattern are not supported yet"
            )));
        }
        let st = safetensors::SafeTensors::deserialize(weights)
            .map_err(|e| Error::input(format!("{WEIGHTS_FILE} is damaged or truncated ({e})")))?;
        // Ordered, so the first problem reported is the same on every run.
        let mut a_parts: BTreeMap<String, (Vec<f32>, [usize; 2])> = BTreeMap::new();
        let mut b_parts: BTreeMap<String, (Vec<f32>, [usize; 2])> = BTreeMap::new();
        for (key, view) in st.tensors() {
            let body = key.strip_prefix(PREFIX).ok_or_else(|| {
                Error::input(format!("{WEIGHTS_FILE}: key \"{key}\" does not start with \"{PREFIX}\""))
            })?;
            let body = body.replace(".default.weight", ".weight");
            let (path, which) = if let Some(p) = body.strip_suffix(".lora_A.weight") {
                (p, 'A')
            } else if let Some(p) = body.strip_suffix(".lora_B.weight") {
                (p, 'B')
            } else {
                return Err(Error::input(format!(
                    "{WEIGHTS_FILE}: key \"{key}\" is not a LoRA factor (trained biases, embeddings and modules_to_save are not supported)"
                )));
            };
            let shape = view.shape();
            if shape.len() != 2 {
                return Err(Error::input(format!("{WEIGHTS_FILE}: \"{key}\" has shape {shape:?}, expected a matrix")));
            }
            let entry = (f32s(&view, &key)?, [shape[0], shape[1]]);
            if which == 'A' { a_parts.insert(path.into(), entry) } else { b_parts.insert(path.into(), entry) };
        }
        let mut modules = BTreeMap::new();
        for (path, a) in a_parts {
            let b = b_parts.remove(&path).ok_or_else(|| {
                Error::input(format!("{WEIGHTS_FILE}: {path} has lora_A but no lora_B"))
            })?;
            if a.1[0] != config.r || b.1[1] != config.r {
                return Err(Error::input(format!(
                    "{WEIGHTS_FILE}: {path} has lora_A {:?} and lora_B {:?}, but {CONFIG_FILE} says r = {}",
                    a.1, b.1, config.r
                )));
            }
            modules.insert(path, (a, b));
        }
        if let Some(path) = b_parts.keys().next() {
            return Err(Error::input(format!("{WEIGHTS_FILE}: {path} has lora_B but no lora_A")));
        }
        Ok(PeftAdapter { config, modules })
    }

    /// Attach this adapter to `model` under `name`.
    pub fn load_into(&self, model: &mut Model, name: &str) -> Result<usize> {
        if let Some(init) = self.config.residual_init() {
            return Err(Error::input(format!(
                "{CONFIG_FILE}: init_lora_weights is \"{init}\": the factors were saved for the residual base that init \
                 leaves, not for the original model. Save it from PEFT with path_initial_model_for_weight_conversion \
                 (a plain LoRA of rank 2r), as tinytune exports PiSSA adapters"
            )));
        }
        self.attach(model, name)
    }

    /// Attach the factors of a tinytune checkpoint of a PiSSA run (saved unconverted, for the
    /// residual base `lora::attach` with the same seed re-derives).
    pub fn load_trained_factors(&self, model: &mut Model, name: &str) -> Result<usize> {
        self.attach(model, name)
    }

    fn attach(&self, model: &mut Model, name: &str) -> Result<usize> {
        let cfg = self.config.lora_config()?;
        cfg.validate()?;
        let base = self.config.base_model_name_or_path.clone().unwrap_or_else(|| "an unnamed model".into());
        if self.config.fan_in_fan_out && !model.arch.fan_in_fan_out() {
            return Err(Error::input(format!(
                "{CONFIG_FILE} sets fan_in_fan_out (GPT-2 style Conv1D layers) but this is a {} model: the adapter was made for {base}",
                model.config.model_type()
            )));
        }
        let device = model.device.clone();
        let model_type = model.config.model_type().to_string();
        let mut linears: BTreeMap<String, &mut crate::model::layers::Linear> = model.arch.linears_mut().into_iter().collect();
        for path in self.modules.keys() {
            if !linears.contains_key(path) {
                return Err(Error::input(format!(
                    "the adapter names module {path}, which this {model_type} model does not have: the adapter was made for a different base ({base})"
                )));
            }
        }
        // Check every module before attaching any, so a bad adapter leaves the model as it was.
        for (path, linear) in linears.iter() {
            let Some(((_, a_shape), (_, b_shape))) = self.modules.get(path) else {
                if cfg.targets.matches(path) {
                    return Err(Error::input(format!(
                        "{WEIGHTS_FILE} has no lora_A / lora_B for {path}, which target_modules {:?} covers",
                        self.config.target_modules
                    )));
                }
                continue;
            };
            let (d_in, d_out, r) = (linear.d_in(), linear.d_out(), cfg.r);
            if *a_shape != [r, d_in] || *b_shape != [d_out, r] {
                return Err(Error::input(format!(
                    "{path}: the adapter has lora_A {a_shape:?} and lora_B {b_shape:?}, but this model needs [{r}, {d_in}] and [{d_out}, {r}]: the adapter was made for a different base ({base})"
                )));
            }
            if linear.adapter(name).is_some() {
                return Err(Error::input(format!("{path} already has an adapter named '{name}'")));
            }
        }
        let mut count = 0;
        for (path, linear) in linears.iter_mut() {
            let Some(((a, _), (b, _))) = self.modules.get(path) else { continue };
            let (d_in, d_out, r) = (linear.d_in(), linear.d_out(), cfg.r);
            linear.adapters.push(LoraAdapter::new(
                name,
                Tensor::from_data(TensorData::new(transpose(a, r, d_in), [d_in, r]), &device),
                Tensor::from_data(TensorData::new(transpose(b, d_out, r), [r, d_out]), &device),
                cfg.scale(),
                cfg.dropout,
            ));
            count += 1;
        }
        Ok(count)
    }
}

/// The adapter named `name` as PEFT files: (`adapter_config.json` text, `adapter_model.safetensors`
/// bytes), for the original base. A PiSSA adapter is converted as PEFT's
/// `path_initial_model_for_weight_conversion` does: rank 2r with lora_A = [A; A₀] and
/// lora_B = [B, -B₀], alpha doubled (×√2 with rsLoRA) so the scale stays, since
/// W₀ + s·(A·B - A₀·B₀) = residual + s·A·B.
pub async fn export(model: &Model, name: &str, cfg: &LoraConfig, base_model: &str) -> Result<(String, Vec<u8>)> {
    export_with(model, name, cfg, base_model, true).await
}

/// As `export`, but a PiSSA adapter stays as trained (rank r, `init_lora_weights: "pissa"`, for the
/// residual base): what a checkpoint keeps so the run resumes exactly.
pub async fn export_trained(model: &Model, name: &str, cfg: &LoraConfig, base_model: &str) -> Result<(String, Vec<u8>)> {
    export_with(model, name, cfg, base_model, false).await
}

async fn export_with(model: &Model, name: &str, cfg: &LoraConfig, base_model: &str, convert: bool) -> Result<(String, Vec<u8>)> {
    use crate::model::load::f32_bytes;
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    let mut paths = Vec::new();
    let (mut converted, mut residual) = (false, false);
    for (path, linear) in model.arch.linears() {
        paths.push(path.clone());
        let Some(adapter) = linear.adapter(name) else { continue };
        let (d_in, d_out) = (linear.d_in(), linear.d_out());
        let (a, b) = match (&adapter.initial, convert) {
            (Some((a0, b0)), true) => {
                converted = true;
                let a = Tensor::cat(vec![adapter.a.clone(), a0.clone()], 1);
                let b = Tensor::cat(vec![adapter.b.clone(), b0.clone().neg()], 0);
                (a, b)
            }
            (initial, _) => {
                residual |= initial.is_some();
                (adapter.a.clone(), adapter.b.clone())
            }
        };
        let r = a.dims()[1];
        let a = transpose(&read_f32(a).await?, d_in, r);
        let b = transpose(&read_f32(b).await?, r, d_out);
        tensors.push((format!("{PREFIX}{path}.lora_A.weight"), f32_bytes(&a), vec![r, d_in]));
        tensors.push((format!("{PREFIX}{path}.lora_B.weight"), f32_bytes(&b), vec![d_out, r]));
    }
    if tensors.is_empty() {
        return Err(Error::input(format!("the model has no adapter named '{name}' to export")));
    }
    let (r, alpha) = if converted {
        (2 * cfg.r, if cfg.rslora { cfg.alpha * std::f64::consts::SQRT_2 } else { 2.0 * cfg.alpha })
    } else {
        (cfg.r, cfg.alpha)
    };
    let init = if residual { serde_json::json!("pissa") } else { serde_json::json!(true) };
    tensors.sort_by(|x, y| x.0.cmp(&y.0));
    let weights = crate::model::load::serialize_tensors(&tensors, safetensors::Dtype::F32, WEIGHTS_FILE)?;
    let target_modules = match &cfg.targets {
        Targets::All(_) => serde_json::json!(cfg.targets.names(&paths)),
        Targets::Names(_) => serde_json::json!(cfg.targets.names(&paths)),
    };
    // The fields PEFT itself writes for a plain LoRA adapter.
    let config = serde_json::json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": model.arch.fan_in_fan_out(),
        "inference_mode": true,
        "init_lora_weights": init,
        "layer_replication": null,
        "layers_pattern": null,
        "layers_to_transform": null,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_bias": false,
        "lora_dropout": cfg.dropout,
        "megatron_config": null,
        "megatron_core": "megatron.core",
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": cfg.rslora,
    });
    Ok((serde_json::to_string_pretty(&config).expect("config serialises"), weights))
}

