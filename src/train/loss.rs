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
    let hidden = model.hidden(model.ids(&batch.ids), None, pad).reshape([b * t, model.config.hidden()]);
    // Only the rows that carry a loss need logits: in SFT the prompt's tokens carry none, and the
    // head's product over a large vocabulary (and its [rows, V] buffers, forward and backward) is
    // then computed for those rows alone. The log-probabilities are the same rows' values.
    let rows: Vec<i32> = (0..b * t).filter(|&r| batch.weights[r / t][r % t] != 0.0).map(|r| r as i32).collect();
    let all = rows.len() == b * t;
    let (hidden, rows) = if all || rows.is_empty() {
        (hidden, None)
    } else {
        let index = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), device);
        (hidden.select(0, index.clone()), Some((rows, index)))
    };
    fn pick<T: Copy>(values: Vec<T>, rows: Option<&[i32]>) -> Vec<T> {
        match rows {
            Some(rows) => rows.iter().map(|&r| values[r as usize]).collect(),
            None => values,
        }
    }
    let (n, picked) = (hidden.dims()[0], rows.as_ref().map(|(r, _)| r.as_slice()));
    let targets = pick(batch.targets.iter().flatten().map(|&x| x as i32).collect(), picked);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
    let weights = Tensor::<2>::from_data(TensorData::new(pick(batch.weights.iter().flatten().copied().collect(), picked), [n, 1]), device);
    // log_softmax over the vocabulary and the target's entry, one fused op (one pass a row on
    // the CPU engine instead of a dozen over the whole [rows, vocab] matrix).
    let logits = model.head(hidden);
    let logp = crate::model::fused::target_logprobs(logits, targets) * weights;
    Ok(match rows {
        // The rows without a loss are zeros, as their weight made them before.
        Some((_, index)) => Tensor::<2>::zeros([b * t, 1], device).select_assign(0, index, logp, burn::tensor::IndexingUpdateOp::Add),
        None => logp,
    }
    .reshape([b, t]))
}

/// Mean cross-entropy over the target tokens of a batch (a 1-element tensor).
pub fn batch_loss(model: &Model, batch: &Batch) -> Result<Tensor<1>> {
    let count: f32 = batch.weights.iter().flatten().sum::<f32>().max(1.0);
    Ok(weighted_target_logps(model, batch)?.sum().neg() / count as f64)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Int, Tensor, TensorData};

    use super::{Batch, weighted_target_logps};
    use crate::model::Model;

    /// The head over the weighted rows alone gives each row the log-probability the head over
    /// every row gives it, and the same gradients to what trains: tiny-llama (its own head) and
    /// tiny-qwen2 (tied), rows masked as a prompt and as padding.
    #[test]
    fn the_loss_over_the_weighted_rows_alone_equals_the_loss_over_every_row() {
        let device = burn::tensor::Device::flex().autodiff();
        for name in ["tiny-llama", "tiny-qwen2"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
            let mut model = Model::load_dir(&dir, &device).unwrap();
            let lora = crate::lora::LoraConfig { r: 4, ..Default::default() };
            futures_lite::future::block_on(crate::lora::attach(&mut model, "default", &lora, 3)).unwrap();
            for (_, l) in model.arch.linears_mut() {
                for a in &mut l.adapters {
                    // B starts at zero (PEFT's init); a nonzero B so that A's rows matter too.
                    (a.a, a.b) = (a.a.clone().require_grad(), (a.b.clone() + 0.05).require_grad());
                }
            }
            let t = 12;
            let ids: Vec<Vec<u32>> = (0..3).map(|r| (0..t).map(|i| (7 + 13 * i + 31 * r) as u32 % 200 + 3).collect()).collect();
            let targets: Vec<Vec<u32>> = ids.iter().map(|row| row.iter().map(|&x| (x * 7) % 200 + 3).collect()).collect();
            // Row 0: a prompt of 5 tokens; row 1: every token; row 2: padded after 8.
            let weights: Vec<Vec<f32>> = (0..3).map(|r| (0..t).map(|i| match r { 0 => (i >= 5) as u8 as f32, 1 => 1.0, _ => (i < 8) as u8 as f32 }).collect()).collect();
            let pad: Vec<Vec<bool>> = (0..3).map(|r| (0..t).map(|i| r != 2 || i < 8).collect()).collect();
            let batch = Batch { ids, targets, weights, pad };
            let grads_of = |logp: Tensor<2>| {
                let grads = logp.clone().sum().backward();
                let a = model.arch.linears()[0].1.adapter("default").unwrap().b.clone();
                (logp.into_data().try_to_vec::<f32>().unwrap(), a.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap())
            };
            let picked = grads_of(weighted_target_logps(&model, &batch).unwrap());
            // Every row's logits, as before.
            let (b, v) = (3, model.config.vocab_size());
            let pads = batch.pad.clone();
            let logits = model.forward(model.ids(&batch.ids), None, Some(&pads)).reshape([b * t, v]);
            let targets: Vec<i32> = batch.targets.iter().flatten().map(|&x| x as i32).collect();
            let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [b * t, 1]), &device);
            let weights = Tensor::<2>::from_data(TensorData::new(batch.weights.iter().flatten().copied().collect::<Vec<f32>>(), [b * t, 1]), &device);
            let every = grads_of((crate::model::fused::target_logprobs(logits, targets) * weights).reshape([b, t]));
            for (what, got, want) in [("log-probabilities", &picked.0, &every.0), ("gradient", &picked.1, &every.1)] {
                let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let size = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(worst <= 1e-5 * (1.0 + size), "{name}: the {what} stray {worst} (largest {size})");
            }
            assert_eq!(picked.0.iter().filter(|x| **x == 0.0).count(), 5 + 4, "{name}: the rows without a loss are zeros");
        }
    }
}
