//! Serving, measured (`tinytune bench-serve` and the page's Serving panel): one base model, a set
//! of LoRA adapters and a set of prompts, served four ways.
//!
//! - merged: each adapter folded into the base weights (one model per adapter, all kept loaded;
//!   no adapter math);
//! - separate: the base plus one adapter on top (the adapter path costs r·(in + out) a token);
//! - multi-LoRA batch: all adapters on one base, one batch whose rows use different adapters (as
//!   LoRAX, S-LoRA and vLLM serve);
//! - swapping: one adapter at a time, read from disk and attached for its request, then removed.
//!
//! Each mode generates greedily the same number of tokens for every prompt. Time to first token
//! is from the request to its first token (the prefill; for swapping, the adapter's load too);
//! memory is the device allocator's bytes in use after the mode (wgpu), else the process's
//! resident memory (native CPU) or the wasm heap (the page's CPU engine).

use serde::Serialize;

use crate::device::now;
use crate::generate::{Sampling, generate, generate_batch};
use crate::lora::peft::PeftAdapter;
use crate::model::{Model, ModelFiles};
use crate::{Error, Result};

/// An adapter as files: its name, `adapter_config.json` and `adapter_model.safetensors`.
pub struct AdapterFiles {
    pub name: String,
    pub config: String,
    pub weights: Vec<u8>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    pub mode: &'static str,
    pub requests: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    /// Mean over requests.
    pub time_to_first_token_ms: f64,
    pub memory_bytes: Option<u64>,
    pub memory_source: &'static str,
}

fn memory(model: &Model) -> (Option<u64>, &'static str) {
    if let Some(u) = model.device.memory_pool_usage() {
        return (Some(u.bytes_in_use), "GPU allocator, bytes in use");
    }
    #[cfg(target_arch = "wasm32")]
    {
        (Some(core::arch::wasm32::memory_size::<0>() as u64 * 65536), "wasm heap")
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        (crate::device::rss_bytes(), "process resident memory")
    }
}

/// Run the four modes. Request i uses adapter i mod N. `progress(mode)` is told each mode as it
/// starts.
pub async fn measure(
    files: &ModelFiles,
    device: &burn::tensor::Device,
    adapters: &[AdapterFiles],
    prompts: &[String],
    max_new_tokens: usize,
    mut progress: impl FnMut(&str),
) -> Result<Vec<ModeReport>> {
    if adapters.is_empty() || prompts.is_empty() {
        return Err(Error::input("serving needs at least one adapter and one prompt"));
    }
    let s = Sampling { max_new_tokens, temperature: 0.0, stop_at_eos: false, ..Sampling::default() };
    let parse = |a: &AdapterFiles| PeftAdapter::from_bytes(&a.config, &a.weights).map_err(|e| Error::input(format!("adapter {}: {e}", a.name)));
    let loaded: Vec<PeftAdapter> = adapters.iter().map(parse).collect::<Result<_>>()?;
    let route = |i: usize| i % adapters.len();
    let mut out = Vec::new();
    let report = |mode, tokens: usize, seconds: f64, ttft: f64, model: &Model| {
        let (memory_bytes, memory_source) = memory(model);
        ModeReport { mode, requests: prompts.len(), tokens, seconds, tokens_per_second: tokens as f64 / seconds, time_to_first_token_ms: ttft * 1e3, memory_bytes, memory_source }
    };
    // One request: (new tokens, seconds to the first token).
    async fn request(model: &Model, prompt: &[u32], s: &Sampling) -> Result<(usize, f64)> {
        let t0 = now();
        let mut first = None;
        let (ids, _) = generate(model, prompt, s, |_, _| {
            first.get_or_insert_with(|| now() - t0);
            true
        })
        .await?;
        Ok((ids.len(), first.unwrap_or(0.0)))
    }

    // Merged: one model per adapter, all kept loaded, each serving its own requests.
    progress("merged weights");
    {
        let (mut tokens, mut seconds, mut ttft) = (0, 0.0, 0.0);
        let mut kept = Vec::new();
        for (k, adapter) in loaded.iter().enumerate() {
            let mut m = Model::load(files, device)?;
            adapter.load_into(&mut m, "default")?;
            crate::merge::into_base(&mut m, "default").await?;
            let started = now();
            for (i, p) in prompts.iter().enumerate().filter(|(i, _)| route(*i) == k) {
                let _ = i;
                let (t, first) = request(&m, &m.tokenizer.encode(p, true)?, &s).await?;
                tokens += t;
                ttft += first;
            }
            seconds += now() - started;
            kept.push(m);
        }
        out.push(report("merged weights (one model per adapter)", tokens, seconds, ttft / prompts.len() as f64, &kept[0]));
    }
    // Separate: the base plus the request's adapter, switched on per request.
    progress("base + separate adapter");
    let mut m = Model::load(files, device)?;
    for (a, l) in adapters.iter().zip(&loaded) {
        l.load_into(&mut m, &a.name)?;
    }
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| m.tokenizer.encode(p, true)).collect::<Result<_>>()?;
    {
        let started = now();
        let (mut tokens, mut ttft) = (0, 0.0);
        for (i, p) in ids.iter().enumerate() {
            crate::lora::set_active(&mut m, &[adapters[route(i)].name.as_str()]);
            let (t, first) = request(&m, p, &s).await?;
            tokens += t;
            ttft += first;
        }
        out.push(report("base + separate adapter", tokens, now() - started, ttft / prompts.len() as f64, &m));
    }
    // Multi-LoRA: one batch, every row through its own adapter.
    progress("multi-LoRA batch");
    {
        let per_row: Vec<Option<&str>> = (0..prompts.len()).map(|i| Some(adapters[route(i)].name.as_str())).collect();
        crate::lora::route(&mut m, &per_row)?;
        let started = now();
        let mut first = None;
        let rows = generate_batch(&m, &ids, &s, |_, _| {
            first.get_or_insert_with(|| now() - started);
            true
        })
        .await;
        let seconds = now() - started;
        crate::lora::unroute(&mut m);
        let tokens = rows?.iter().map(|r| r.ids.len()).sum();
        out.push(report("multi-LoRA batch", tokens, seconds, first.unwrap_or(0.0), &m));
    }
    drop(m);
    // Swapping: parse the request's adapter from its files, attach it, serve, remove it.
    progress("swapping adapters");
    {
        let mut m = Model::load(files, device)?;
        let started = now();
        let (mut tokens, mut ttft) = (0, 0.0);
        for (i, p) in ids.iter().enumerate() {
            let t0 = now();
            parse(&adapters[route(i)])?.load_into(&mut m, "request")?;
            let swap = now() - t0;
            let (t, first) = request(&m, p, &s).await?;
            tokens += t;
            // The swap is part of the wait for the first token.
            ttft += swap + first;
            crate::lora::remove(&mut m, "request");
        }
        out.push(report("swapping adapters", tokens, now() - started, ttft / prompts.len() as f64, &m));
    }
    Ok(out)
}
