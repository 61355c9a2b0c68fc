//! The language-modelling loss of a batch: each target token's log-probability, the token mean
//! over a batch, and the held-out loss over a set of examples.

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{Model, read_f32};
use crate::train::batch::{Batch, batches, gpu_length};
use crate::train::data::Example;
use crate::{Error, Result};

/// Token-weighted mean loss over the target tokens of `examples`, in batches as the trainer
/// makes them (unpacked, padded with the EOS id). Returns (loss, target tokens).
pub async fn evaluate_examples(model: &Model, examples: &[Example], batch_size: usize, seq_len: usize) -> Result<(f64, f64)> {
    let pad_id = model.pad_id();
    let mut nll = 0.0;
    let mut count = 0.0;
    for batch in batches(examples, batch_size.max(1), false, seq_len, pad_id) {
        let n: f64 = batch.weights.iter().flatten().map(|&w| w as f64).sum();
        if n == 0.0 {
            continue;
        }
        let loss = read_f32(batch_loss(model, &batch)?.detach()).await?[0] as f64;
        nll += loss * n;
        count += n;
    }
    if count == 0.0 {
        return Err(Error::input("the validation data has no target tokens"));
    }
    Ok((nll / count, count))
}

/// Each target token's log-probability times its weight (0 where it carries no loss):
/// `[rows, T]`. The cross-entropy of SFT and the sequence log-probabilities of DPO both start here.
pub fn weighted_target_logps(model: &Model, batch: &Batch) -> Result<Tensor<2>> {
    let b = batch.ids.len();
    let t = batch.ids.first().map_or(0, |r| r.len());
    if b == 0 || t == 0 {
        return Err(Error::input("an empty batch"));
    }
    let v = model.config.vocab_size();
    let device = &model.device;
    // On a GPU, a few lengths compiled once rather than a new one nearly every step (`gpu_length`).
    let padded;
    let (batch, t) = match gpu_length(t, model.context()) {
        longer if longer > t && !crate::device::is_cpu(device) => {
            padded = batch.padded_to(longer, model.pad_id());
            (&padded, longer)
        }
        _ => (batch, t),
    };
    let pad = if batch.pad.iter().flatten().all(|p| *p) { None } else { Some(batch.pad.as_slice()) };
    let logits = model.forward(model.ids(&batch.ids), None, pad);
    let targets: Vec<i32> = batch.targets.iter().flatten().map(|&x| x as i32).collect();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [b * t, 1]), device);
    let weights: Vec<f32> = batch.weights.iter().flatten().copied().collect();
    let weights = Tensor::<2>::from_data(TensorData::new(weights, [b * t, 1]), device);
    // log_softmax over the vocabulary and the target's entry, one fused op (one pass a row on
    // the CPU engine instead of a dozen over the whole [rows, vocab] matrix).
    let logp = crate::model::fused::target_logprobs(logits.reshape([b * t, v]), targets);
    Ok((logp * weights).reshape([b, t]))
}

/// Mean cross-entropy over the target tokens of a batch (a 1-element tensor).
pub fn batch_loss(model: &Model, batch: &Batch) -> Result<Tensor<1>> {
    let count: f32 = batch.weights.iter().flatten().sum::<f32>().max(1.0);
    Ok(weighted_target_logps(model, batch)?.sum().neg() / count as f64)
}
