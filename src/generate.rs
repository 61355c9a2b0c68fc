//! Autoregressive generation with a KV cache: the prompt is run once, then one token per step.
//! Sampling follows transformers' order of logits processors: temperature, then top-k, then
//! top-p. Temperature 0 is greedy. The generator is seeded and runs on the host, so a seed gives
//! the same tokens on every device whose logits agree.

use crate::device::yield_now;
use crate::model::{Model, read_f32};
use crate::{Error, Result};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1 means no nucleus cut.
    pub top_p: f32,
    pub seed: u64,
    pub stop_at_eos: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { max_new_tokens: 64, temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0, stop_at_eos: true }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::input(format!("temperature must be 0 (greedy) or positive, not {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::input(format!("top-p must be in (0, 1], not {}", self.top_p)));
        }
        if self.max_new_tokens > crate::limits::MAX_NEW_TOKENS {
            return Err(Error::input(format!(
                "max new tokens {} is over tinytune's limit of {}",
                self.max_new_tokens,
                crate::limits::MAX_NEW_TOKENS
            )));
        }
        Ok(())
    }
}

pub use crate::rng::Rng;

/// Pick the next token, refusing logits that are not all finite: a sample from NaN is no token.
pub fn sample_checked(logits: &[f32], s: &Sampling, rng: &mut Rng) -> Result<u32> {
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "the model gave a non-finite logit ({} for token {i}): its weights or adapter are damaged (NaN or infinity)",
            logits[i]
        )));
    }
    Ok(sample(logits, s, rng))
}

/// Pick the next token from one row of logits.
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut Rng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if s.temperature == 0.0 {
        return argmax();
    }
    let mut order: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &v)| (i, v as f64 / s.temperature as f64)).collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if s.top_k > 0 && s.top_k < order.len() {
        order.truncate(s.top_k);
    }
    let max = order[0].1;
    let mut probs: Vec<f64> = order.iter().map(|(_, v)| (v - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if s.top_p < 1.0 {
        // Keep the smallest prefix whose mass reaches top_p (at least one token).
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= s.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let r = rng.next_f64();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if r < acc {
            return order[i].0 as u32;
        }
    }
    order[probs.len() - 1].0 as u32
}

/// Turns token ids into text as they arrive, without dropping what a token's text depends on:
/// SentencePiece decoders strip a leading "▁" from the first token they see, and byte-level
/// tokens can end inside a UTF-8 character. Each step decodes a short window that starts a few
/// tokens back (the incremental decoding of Hugging Face's text-generation-inference), so the cost
/// per token is constant and the text equals decoding everything at once.
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Where the window starts, and how far text has been emitted.
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    /// After `context` (the prompt): its last tokens give the first new token its context.
    pub fn new(context: &[u32]) -> StreamDecoder {
        let keep = context.len().min(5);
        StreamDecoder { ids: context[context.len() - keep..].to_vec(), prefix: 0, read: keep }
    }

    /// Add a token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tokenizer: &crate::model::Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let now = tokenizer.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.is_char_boundary(before.len()) {
            let text = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            // Keep the window short: drop what no later token can reach.
            if self.prefix > 64 {
                self.ids.drain(..self.prefix);
                self.read -= self.prefix;
                self.prefix = 0;
            }
            Ok(text)
        } else {
            Ok(String::new())
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Stop {
    Eos,
    MaxTokens,
    Context,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// Generate after `prompt`. `on_token(id, text_so_far_delta)` sees each token as it is produced
/// and returns false to stop. Returns the new token ids and why generation ended.
pub async fn generate(
    model: &Model,
    prompt: &[u32],
    s: &Sampling,
    mut on_token: impl FnMut(u32, &str) -> bool,
) -> Result<(Vec<u32>, Stop)> {
    s.validate()?;
    if prompt.is_empty() {
        return Err(Error::input("the prompt is empty: give at least one token of text"));
    }
    if prompt.len() >= model.context() {
        return Err(Error::input(format!(
            "the prompt has {} tokens, which fills the model's context of {}",
            prompt.len(),
            model.context()
        )));
    }
    model.check_ids(prompt)?;
    let mut rng = Rng::new(s.seed);
    let mut cache = model.new_cache();
    let v = model.config.vocab_size();
    let mut new: Vec<u32> = Vec::new();
    let mut stream = StreamDecoder::new(prompt);
    let mut input = prompt.to_vec();
    loop {
        if new.len() >= s.max_new_tokens {
            return Ok((new, Stop::MaxTokens));
        }
        if cache.len() + input.len() > model.context() {
            return Ok((new, Stop::Context));
        }
        let t = input.len();
        let step = if t == 1 { model.decode_one(input[0], &mut cache) } else { None };
        let last = match step {
            Some(mut logits) => {
                logits.truncate(v);
                logits
            }
            None => {
                let logits = model.forward(model.ids(&[input.clone()]), Some(&mut cache), None);
                read_f32(logits.slice([0..1, t - 1..t, 0..v]).reshape([v])).await?
            }
        };
        let next = sample_checked(&last, s, &mut rng)?;
        if s.stop_at_eos && model.tokenizer.eos_ids.contains(&next) {
            return Ok((new, Stop::Eos));
        }
        new.push(next);
        let delta = stream.push(&model.tokenizer, next)?;
        if !on_token(next, &delta) {
            return Ok((new, Stop::Cancelled));
        }
        input = vec![next];
        yield_now().await;
    }
}

/// The prompt ids of a conversation as the model's chat template renders it, ending with the
/// start of an assistant turn (transformers' `apply_chat_template(add_generation_prompt=True)`).
/// A model without a template gets tinytune's plain `role: content` one.
pub fn chat_ids(model: &Model, messages: &[crate::train::chat::Message]) -> Result<Vec<u32>> {
    crate::train::chat::ChatTemplate::new(&model.tokenizer)?.encode(&model.tokenizer, messages, true)
}

/// One user message as a chat prompt.
pub fn chat_prompt(model: &Model, user: &str) -> Result<Vec<u32>> {
    chat_ids(model, &[crate::train::chat::Message { role: "user".into(), content: user.into() }])
}

/// One row's result of a batch: its new tokens, why it ended, and when its first token came.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RowResult {
    pub ids: Vec<u32>,
    pub stop: Stop,
    /// Steps (forward passes) until the row's first token: 1, the prefill.
    pub first_token_step: usize,
}

/// Generate after several prompts at once, in one batch: prompts are left-padded to a common
/// length and each row keeps its own positions (see `KvCache::with_offsets`) and its own seeded
/// generator, so every row gives the tokens it gives alone. With adapters routed per row
/// (`lora::route`), one batch serves several adapters. `on_token(row, id)` sees every token.
pub async fn generate_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    s: &Sampling,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<RowResult>> {
    s.validate()?;
    if prompts.is_empty() {
        return Err(Error::input("give at least one prompt"));
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::input(format!("prompt {} is empty: give at least one token of text", i + 1)));
    }
    for (i, p) in prompts.iter().enumerate() {
        model.check_ids(p).map_err(|e| Error::input(format!("prompt {}: {e}", i + 1)))?;
    }
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    if longest >= model.context() {
        return Err(Error::input(format!("a prompt has {longest} tokens, which fills the model's context of {}", model.context())));
    }
    let b = prompts.len();
    let offsets: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let pad_id = model.pad_id();
    let mut cache = crate::model::KvCache::with_offsets(model.config.layers(), offsets.clone());
    let mut rngs: Vec<Rng> = (0..b).map(|_| Rng::new(s.seed)).collect();
    let v = model.config.vocab_size();
    let mut rows: Vec<RowResult> = (0..b).map(|_| RowResult { ids: Vec::new(), stop: Stop::MaxTokens, first_token_step: 0 }).collect();
    let mut done = vec![false; b];
    let mut input: Vec<Vec<u32>> = prompts.iter().zip(&offsets).map(|(p, &o)| std::iter::repeat_n(pad_id, o).chain(p.iter().copied()).collect()).collect();
    let mut step = 0;
    while done.iter().any(|d| !d) {
        if cache.len() + input[0].len() > model.context() {
            for (r, d) in rows.iter_mut().zip(&done) {
                if !d {
                    r.stop = Stop::Context;
                }
            }
            break;
        }
        let t = input[0].len();
        let total = cache.len() + t;
        // Pad slots are hidden as keys; a finished row keeps running on its padding and is ignored.
        let pad: Vec<Vec<bool>> = offsets.iter().map(|&o| (0..total).map(|j| j >= o).collect()).collect();
        let logits = model.forward(model.ids(&input), Some(&mut cache), Some(&pad));
        step += 1;
        let last = read_f32(logits.slice([0..b, t - 1..t, 0..v]).reshape([b, v])).await?;
        let mut next_input = Vec::with_capacity(b);
        for row in 0..b {
            if done[row] {
                next_input.push(vec![pad_id]);
                continue;
            }
            let next = sample_checked(&last[row * v..(row + 1) * v], s, &mut rngs[row])?;
            let r = &mut rows[row];
            if r.ids.is_empty() {
                r.first_token_step = step;
            }
            if s.stop_at_eos && model.tokenizer.eos_ids.contains(&next) {
                r.stop = Stop::Eos;
                done[row] = true;
            } else {
                r.ids.push(next);
                if !on_token(row, next) {
                    r.stop = Stop::Cancelled;
                    done[row] = true;
                } else if r.ids.len() >= s.max_new_tokens {
                    r.stop = Stop::MaxTokens;
                    done[row] = true;
                }
            }
            next_input.push(vec![next]);
        }
        input = next_input;
        yield_now().await;
    }
    Ok(rows)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_logits_are_an_error_not_token_zero() {
        let s = Sampling::default();
        let err = sample_checked(&[f32::NAN, 1.0], &s, &mut Rng::new(1)).unwrap_err().to_string();
        assert!(err.contains("non-finite") && err.contains("token 0"), "{err}");
        assert_eq!(sample_checked(&[0.0, 1.0], &s, &mut Rng::new(1)).unwrap(), 1);
    }

    #[test]
    fn greedy_takes_the_argmax_and_ties_go_to_the_lower_id() {
        let s = Sampling::default();
        assert_eq!(sample(&[0.1, 2.0, -1.0, 2.0], &s, &mut Rng::new(1)), 1);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let s = Sampling { temperature: 5.0, top_k: 1, ..Sampling::default() };
        for seed in 0..20 {
            assert_eq!(sample(&[0.0, 0.5, 3.0, 1.0], &s, &mut Rng::new(seed)), 2);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // softmax([ln 6, ln 3, ln 1]) = [0.6, 0.3, 0.1]: top-p 0.8 keeps the first two only.
        let logits = [6f32.ln(), 3f32.ln(), 1f32.ln()];
        let s = Sampling { temperature: 1.0, top_p: 0.8, ..Sampling::default() };
        let mut counts = [0; 3];
        let mut rng = Rng::new(7);
        for _ in 0..3000 {
            counts[sample(&logits, &s, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        // Renormalised: 2/3 and 1/3.
        let share = counts[0] as f64 / 3000.0;
        assert!((share - 2.0 / 3.0).abs() < 0.04, "{counts:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let s = Sampling { temperature: 1.0, ..Sampling::default() };
        let logits = [0.3, 0.1, 0.2, 0.25, 0.15];
        let draw = |seed| (0..50).map(|_| 0).scan(Rng::new(seed), |r, _: i32| Some(sample(&logits, &s, r))).collect::<Vec<_>>();
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }
}
