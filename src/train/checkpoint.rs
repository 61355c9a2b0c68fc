//! Checkpoints as files, the same in the page and natively: the result (PEFT adapter files for
//! LoRA, a Hugging Face model folder otherwise, its weights in f32 whatever the source dtype, so
//! a resumed run continues from exactly the weights it had), `trainer_state.json` (the run config,
//! the cursor and the source dtype), `optimizer.safetensors` (AdamW's moments), and `best/` (the
//! best adapter by validation loss so far, for early stopping). A checkpoint saved in the browser
//! resumes with `tinytune train --resume`, and the reverse.

use serde::{Deserialize, Serialize};

use super::run::RunConfig;
use super::trainer::{Cursor, Method, TrainConfig, Trainer};
use crate::lora::peft;
use crate::model::Model;
use crate::model::load::{f32_bytes, serialize_tensors};
use crate::{Error, Result};

pub const CHECKPOINT: &str = "checkpoint";
pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What a checkpoint holds besides the weights.
#[derive(Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub run: RunConfig,
    pub cursor: Cursor,
    /// The dtype the model's files had (full and partial checkpoints are f32): the result is
    /// written in it.
    #[serde(default)]
    pub source_dtype: Option<String>,
}

/// The folder names inside a checkpoint for the best result so far.
pub const BEST_DIR: &str = "best";

impl TrainerState {
    pub fn parse(text: &str, label: &str) -> Result<TrainerState> {
        serde_json::from_str(text).map_err(|e| Error::input(format!("{label}: not a tinytune trainer state ({e})")))
    }
}

/// The run's result: PEFT files for LoRA, a Hugging Face model folder otherwise.
pub async fn result_files(model: &Model, run: &RunConfig) -> Result<Vec<(String, Vec<u8>)>> {
    match run.method {
        Method::Lora | Method::Qlora | Method::Dpo => {
            let (config, weights) = peft::export(model, "default", &run.train_config().lora, &run.model).await?;
            Ok(vec![(peft::CONFIG_FILE.into(), config.into_bytes()), (peft::WEIGHTS_FILE.into(), weights)])
        }
        Method::Full | Method::Partial => model.save_files().await,
    }
}

/// Every file of a checkpoint of this run at the trainer's cursor, with the best result so far
/// under `best/` when there is one.
pub async fn checkpoint_files(model: &Model, trainer: &Trainer, run: &RunConfig, best: Option<&[(String, Vec<u8>)]>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = match run.method {
        // f32 master weights: a bf16 save would round what the next step starts from.
        Method::Full | Method::Partial => model.save_files_as(safetensors::Dtype::F32).await?,
        // A PiSSA adapter as trained (for its residual base), so the run resumes exactly.
        Method::Lora | Method::Qlora | Method::Dpo => {
            let (config, weights) = peft::export_trained(model, "default", &run.train_config().lora, &run.model).await?;
            vec![(peft::CONFIG_FILE.into(), config.into_bytes()), (peft::WEIGHTS_FILE.into(), weights)]
        }
    };
    if let Some(best) = best {
        files.extend(best.iter().map(|(n, b)| (format!("{BEST_DIR}/{n}"), b.clone())));
    }
    let state = TrainerState { run: run.clone(), cursor: trainer.cursor.clone(), source_dtype: Some(format!("{:?}", model.source.dtype)) };
    files.push((STATE_FILE.into(), serde_json::to_vec_pretty(&state).expect("state serialises")));
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> =
        trainer.optimizer_state().await?.into_iter().map(|(n, v, s)| (n, f32_bytes(&v), s.to_vec())).collect();
    files.push((OPTIMIZER_FILE.into(), serialize_tensors(&tensors, safetensors::Dtype::F32, OPTIMIZER_FILE)?));
    Ok(files)
}

/// Put a checkpoint's adapter back on `model` (already prepared for the run) as "default". A PiSSA
/// run re-derives A₀, B₀ and the residual base from the base and the seed, then takes the trained
/// factors from the checkpoint.
pub async fn restore_adapter(model: &mut Model, cfg: &TrainConfig, adapter: &peft::PeftAdapter) -> Result<()> {
    if cfg.lora.init == crate::lora::Init::Pissa {
        crate::lora::attach(model, "default", &cfg.lora, cfg.seed).await?;
        adapter.load_trained_factors(model, "resumed")?;
        crate::lora::replace_factors(model, "default", "resumed")
    } else {
        adapter.load_into(model, "default").map(|_| ())
    }
}

/// The optimizer moments from `optimizer.safetensors` bytes; `label` names the file in errors.
pub fn parse_optimizer(bytes: &[u8], label: &str) -> Result<Vec<(String, Vec<f32>, [usize; 2])>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::input(format!("{label} is damaged ({e})")))?;
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let s = v.shape();
            if s.len() != 2 || v.dtype() != safetensors::Dtype::F32 {
                return Err(Error::input(format!("{label}: {name} is not an f32 matrix")));
            }
            let values = v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Ok((name, values, [s[0], s[1]]))
        })
        .collect()
}
