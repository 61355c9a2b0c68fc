//! How long a training step takes on this device: one LoRA step of a run's shape, timed on
//! synthetic tokens, so the page can show what a run will cost before it starts (and size a
//! newcomer's first run to end in about a minute). The model is left as it was found.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::lora::{self, Init};
use crate::model::Model;
use crate::rng::Rng;
use crate::train::data::Example;
use crate::train::trainer::{Method, TrainConfig, Trainer};

/// The adapter name a measurement trains; a real run's is "default".
const PROBE: &str = "default";

#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    /// The first step, one-time costs included (kernel compilation on a GPU, first allocations).
    pub first_seconds: f64,
    /// The second step: what every later step costs.
    pub seconds: f64,
    /// Tokens in one step (batch size × seq len).
    pub tokens: usize,
    pub batch_size: usize,
    pub seq_len: usize,
}

impl StepTiming {
    /// Seconds for a step of `tokens` tokens, scaled from the measured one. Larger batches use
    /// the device a little better, so this errs long (measured on the page's CPU engine: a batch
    /// of 2 ran at 695 tokens/s, one of 8 at 735).
    pub fn seconds_for(&self, tokens: usize) -> f64 {
        self.seconds * tokens as f64 / self.tokens.max(1) as f64
    }
}

/// Time two LoRA steps of `cfg`'s rank, targets, batch size and seq len on random token ids, then
/// remove the adapter they trained. Refuses while the model holds a "default" adapter (a run's or
/// an import's), which the measurement would replace.
pub async fn measure_step(model: &mut Model, cfg: &TrainConfig) -> Result<StepTiming> {
    if cfg.method != Method::Lora {
        return Err(Error::input(format!("a step is measured for LoRA only, not {:?}", cfg.method)));
    }
    if model.arch.linears().iter().any(|(_, l)| l.adapter(PROBE).is_some()) {
        return Err(Error::input("the model holds an adapter (a finished run's or an imported one); measuring a step would replace it"));
    }
    let seq_len = cfg.seq_len.min(model.context()).max(2);
    let cfg = TrainConfig {
        steps: 2,
        seq_len,
        warmup: 0,
        eval_every: 0,
        grad_accum: 1,
        // The default init leaves the base untouched, so removing the adapter restores it exactly.
        lora: lora::LoraConfig { init: Init::Default, ..cfg.lora.clone() },
        ..cfg.clone()
    };
    let vocab = model.config.vocab_size() as u64;
    let mut rng = Rng::new(cfg.seed ^ 0x5EED);
    let examples: Vec<Example> = (0..cfg.batch_size)
        .map(|_| {
            let ids: Vec<u32> = (0..=seq_len).map(|_| (rng.next_u64() % vocab) as u32).collect();
            let target = vec![true; ids.len()];
            Example::new(ids, target)
        })
        .collect();
    lora::attach(model, PROBE, &cfg.lora, cfg.seed).await?;
    let timed = timed_steps(model, cfg.clone(), examples).await;
    lora::remove(model, PROBE);
    let (first_seconds, seconds, tokens) = timed?;
    Ok(StepTiming { first_seconds, seconds, tokens, batch_size: cfg.batch_size, seq_len })
}

async fn timed_steps(model: &mut Model, cfg: TrainConfig, examples: Vec<Example>) -> Result<(f64, f64, usize)> {
    let mut trainer = Trainer::new(model, cfg, examples)?;
    let mut times = [0.0; 2];
    let mut tokens = 0;
    for t in &mut times {
        let start = crate::device::now();
        tokens = trainer.step(model).await?.tokens;
        *t = crate::device::now() - start;
    }
    Ok((times[0], times[1], tokens))
}
