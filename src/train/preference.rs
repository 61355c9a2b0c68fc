//! Preference finetuning: pairs of `{"prompt", "chosen", "rejected"}` and DPO (Rafailov et al.
//! 2023) as TRL's `DPOTrainer` computes it, so that its numbers can be checked against TRL's.
//!
//! - A pair is tokenized as TRL does: the prompt alone, and the prompt followed by each
//!   completion with the EOS text appended; the completion starts where the prompt's ids and the
//!   whole text's ids part (usually the end of the prompt). Rows longer than `seq_len + 1`
//!   tokens keep their start.
//! - A batch holds every pair's chosen row, then every pair's rejected row. A row's log-probability
//!   is the sum over its completion tokens.
//! - The reference model is the base with the adapter switched off, so it costs no second copy
//!   of the weights (TRL does the same for a fresh PEFT adapter): one more forward pass a step,
//!   without a graph.
//! - loss = mean over pairs of −log σ(β · ((π_c − ref_c) − (π_r − ref_r))); the rewards are
//!   β · (π − ref); the reward accuracy is the share of pairs whose chosen reward is the higher,
//!   the margin the mean of chosen minus rejected reward.

use burn::tensor::Tensor;
use serde::Serialize;

use crate::Result;
use crate::model::Model;
use crate::model::tokenizer::Tokenizer;
use crate::train::batch::{Batch, rows_batch};
use crate::train::data::Example;
use crate::train::loss::weighted_target_logps;

/// The default β, TRL's.
pub const DEFAULT_BETA: f64 = 0.1;

/// How many leading ids two sequences share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One preference pair as an [`Example`]: the chosen row in `ids`/`target`, the rejected row in
/// `rejected`. The error says why the pair cannot be learned from.
pub fn pair(tok: &Tokenizer, prompt: &str, chosen: &str, rejected: &str, seq_len: usize) -> std::result::Result<Example, String> {
    let eos = tok.eos_token_text().ok_or("the model has no end-of-sequence token to end the completions with")?;
    let with_eos = |c: &str| if c.ends_with(&eos) { format!("{prompt}{c}") } else { format!("{prompt}{c}{eos}") };
    let encode = |t: &str| tok.encode(t, true).map_err(|e| e.to_string());
    let prompt_ids = encode(prompt)?;
    let (chosen_ids, rejected_ids) = (encode(&with_eos(chosen))?, encode(&with_eos(rejected))?);
    let start = common_prefix(&prompt_ids, &chosen_ids).min(common_prefix(&prompt_ids, &rejected_ids));
    let limit = seq_len + 1;
    let row = |ids: Vec<u32>, which: &str| -> std::result::Result<Example, String> {
        let n = ids.len().min(limit);
        if n <= start.max(1) {
            return Err(format!(
                "nothing to learn within seq_len {seq_len}: the prompt takes {start} tokens and the {which} completion \
                 starts after them. Shorten the prompt or raise seq_len"
            ));
        }
        let target = (0..n).map(|i| i >= start.max(1)).collect();
        Ok(Example { ids: ids[..n].to_vec(), target, rejected: None })
    };
    let mut example = row(chosen_ids, "chosen")?;
    example.rejected = Some(Box::new(row(rejected_ids, "rejected")?));
    Ok(example)
}

/// Pairs cut into batches of `batch_size` pairs: the chosen rows, then the rejected rows, padded
/// together with `pad_id` (weight 0 there).
pub fn batches(examples: &[Example], batch_size: usize, seq_len: usize, pad_id: u32) -> Vec<Batch> {
    let limit = seq_len.max(1) + 1;
    let cut = |e: &Example| {
        let n = e.ids.len().min(limit);
        (e.ids[..n].to_vec(), e.target[..n].to_vec())
    };
    examples
        .chunks(batch_size.max(1))
        .map(|chunk| {
            let chosen = chunk.iter().map(cut);
            let rejected = chunk.iter().filter_map(|e| e.rejected.as_deref()).map(cut);
            rows_batch(&chosen.chain(rejected).collect::<Vec<_>>(), pad_id)
        })
        .collect()
}

/// What a DPO step reports beside its loss (means over the step's pairs).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DpoReport {
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    pub reward_accuracy: f64,
    pub reward_margin: f64,
}

impl DpoReport {
    /// From the four statistics [`dpo_loss`] returns, in its order.
    pub fn from_values(v: &[f32]) -> DpoReport {
        let at = |i: usize| v.get(i).copied().unwrap_or(f32::NAN) as f64;
        DpoReport { chosen_reward: at(0), rejected_reward: at(1), reward_accuracy: at(2), reward_margin: at(3) }
    }
}

/// Each row's summed log-probability of its target tokens: `[rows]`.
fn row_logps(model: &Model, batch: &Batch) -> Result<Tensor<1>> {
    let rows = batch.ids.len();
    Ok(weighted_target_logps(model, batch)?.sum_dim(1).reshape([rows]))
}

/// Switch every adapter on or off (the reference pass runs the base alone).
fn adapters_on(model: &mut Model, on: bool) {
    for (_, linear) in model.arch.linears_mut() {
        for a in &mut linear.adapters {
            a.enabled = on;
        }
    }
}

/// The DPO loss of a batch from [`batches`] (a 1-element tensor, tracked for backward) and its
/// statistics `[chosen reward, rejected reward, reward accuracy, reward margin]` (detached).
pub fn dpo_loss(model: &mut Model, batch: &Batch, beta: f64) -> Result<(Tensor<1>, Tensor<1>)> {
    let rows = batch.ids.len();
    if rows < 2 || rows % 2 != 0 || batch.ids[0].is_empty() {
        return Err(crate::Error::input("a DPO batch needs a chosen and a rejected row for each pair"));
    }
    let pairs = rows / 2;
    let policy = row_logps(model, batch)?;
    adapters_on(model, false);
    let reference = row_logps(model, batch).map(Tensor::detach);
    adapters_on(model, true);
    let reference = reference?;
    let ratio = policy - reference;
    let chosen = ratio.clone().slice(0..pairs);
    let rejected = ratio.slice(pairs..rows);
    let logits = (chosen.clone() - rejected.clone()) * beta;
    let loss = burn::tensor::activation::log_sigmoid(logits).neg().mean();
    let (chosen, rejected) = (chosen.detach() * beta, rejected.detach() * beta);
    let accuracy = chosen.clone().greater(rejected.clone()).float().mean();
    let margin = (chosen.clone() - rejected.clone()).mean();
    let stats = Tensor::cat(vec![chosen.mean(), rejected.mean(), accuracy, margin], 0);
    Ok((loss, stats))
}

/// Whether the model gives the chosen completion of a pair a higher log-probability than the
/// rejected one (summed over the completion's tokens, as DPO counts them): the
/// `preference_accuracy` task metric, a yes or no per pair.
pub async fn prefers_chosen(model: &Model, prompt: &str, chosen: &str, rejected: &str) -> Result<bool> {
    let seq_len = model.context().saturating_sub(1).max(1);
    let example = pair(&model.tokenizer, prompt, chosen, rejected, seq_len).map_err(crate::Error::input)?;
    let pad = model.pad_id();
    let batch = batches(&[example], 1, seq_len, pad).remove(0);
    let logps = crate::model::read_f32(row_logps(model, &batch)?.detach()).await?;
    Ok(logps[0] > logps[1])
}

/// The DPO loss and statistics of `examples` (pairs), batch by batch, without updating
/// anything: means over the pairs, `[loss, chosen reward, rejected reward, accuracy, margin]`.
pub async fn evaluate(model: &mut Model, examples: &[Example], batch_size: usize, seq_len: usize, beta: f64) -> Result<Vec<f64>> {
    let pad_id = model.pad_id();
    let mut sums = vec![0.0; 5];
    let mut count = 0usize;
    for batch in batches(examples, batch_size, seq_len, pad_id) {
        let pairs = batch.ids.len() / 2;
        let (loss, stats) = dpo_loss(model, &batch, beta)?;
        let values = crate::model::read_f32(Tensor::cat(vec![loss.detach(), stats], 0)).await?;
        for (s, v) in sums.iter_mut().zip(values) {
            *s += v as f64 * pairs as f64;
        }
        count += pairs;
    }
    if count == 0 {
        return Err(crate::Error::input("there are no preference pairs to evaluate"));
    }
    Ok(sums.into_iter().map(|s| s / count as f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_completion_starts_where_the_prompt_and_the_whole_text_part() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
    }
}
