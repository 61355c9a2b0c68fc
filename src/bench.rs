//! Serving benchmarks (`tinytune bench-serve`): one base model, a set of LoRA adapters and a set
//! of prompts, served four ways.
//!
//! - merged: each adapter folded into the base weights (one model per adapter, all kept loaded;
//!   no adapter math);
//! - separate: the base plus one adapter on top (the adapter path costs r·(in + out) a token);
//! - multi-LoRA batch: all adapters on one base, one batch whose rows use different adapters (as
//!   LoRAX, S-LoRA and vLLM serve);
//! - swapping: one adapter at a time, read from disk and attached for its request, then removed.
//!
//! Each mode generates greedily the same number of tokens for every prompt. Time to first token
//! is from the request to its first token (the prefill); memory is the device allocator's bytes in
//! use after the mode (wgpu), or the process's resident memory (CPU).

use std::path::PathBuf;
use std::time::Instant;

use futures_lite::future::block_on;
use serde::Serialize;

use crate::generate::{Sampling, generate, generate_batch};
use crate::lora::peft::PeftAdapter;
use crate::model::Model;
use crate::{Error, Result};

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
    match model.device.memory_pool_usage() {
        Some(u) => (Some(u.bytes_in_use), "GPU allocator, bytes in use"),
        None => (crate::device::rss_bytes(), "process resident memory"),
    }
}

/// Run the four modes. `adapters` are (name, folder); request i uses adapter i mod N.
pub fn serve(model_dir: &std::path::Path, device: &burn::tensor::Device, adapters: &[(String, PathBuf)], prompts: &[String], max_new_tokens: usize) -> Result<Vec<ModeReport>> {
    if adapters.is_empty() || prompts.is_empty() {
        return Err(Error::input("bench-serve needs at least one adapter and one prompt"));
    }
    let s = Sampling { max_new_tokens, temperature: 0.0, stop_at_eos: false, ..Sampling::default() };
    let loaded: Vec<PeftAdapter> = adapters.iter().map(|(_, d)| PeftAdapter::read_dir(d)).collect::<Result<_>>()?;
    let route = |i: usize| i % adapters.len();
    let mut out = Vec::new();
    let sequential = |model: &Model, prompts: &[(usize, Vec<u32>)]| -> Result<(usize, f64, f64)> {
        let started = Instant::now();
        let (mut tokens, mut ttft) = (0, 0.0);
        for (_, p) in prompts {
            let t0 = Instant::now();
            let mut first = None;
            let (ids, _) = block_on(generate(model, p, &s, |_, _| {
                first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                true
            }))?;
            tokens += ids.len();
            ttft += first.unwrap_or(0.0);
        }
        Ok((tokens, started.elapsed().as_secs_f64(), ttft / prompts.len() as f64))
    };
    let report = |mode, tokens: usize, seconds: f64, ttft: f64, model: &Model| {
        let (memory_bytes, memory_source) = memory(model);
        ModeReport { mode, requests: prompts.len(), tokens, seconds, tokens_per_second: tokens as f64 / seconds, time_to_first_token_ms: ttft * 1e3, memory_bytes, memory_source }
    };

    // Merged: one model per adapter, each serving its own requests.
    {
        let (mut tokens, mut seconds, mut ttft) = (0, 0.0, 0.0);
        // All merged models stay loaded, as a server of merged models must keep them.
        let mut kept = Vec::new();
        for (k, adapter) in loaded.iter().enumerate() {
            let mut m = Model::load_dir(model_dir, device)?;
            adapter.load_into(&mut m, "default")?;
            block_on(crate::merge::into_base(&mut m, "default"))?;
            let mine: Vec<(usize, Vec<u32>)> = prompts
                .iter()
                .enumerate()
                .filter(|(i, _)| route(*i) == k)
                .map(|(i, p)| Ok((i, m.tokenizer.encode(p, true)?)))
                .collect::<Result<_>>()?;
            if mine.is_empty() {
                continue;
            }
            let (t, sec, tt) = sequential(&m, &mine)?;
            tokens += t;
            seconds += sec;
            ttft += tt * mine.len() as f64;
            kept.push(m);
        }
        out.push(report("merged weights (one model per adapter)", tokens, seconds, ttft / prompts.len() as f64, &kept[0]));
    }
    // Separate: the base plus the request's adapter, switched on per request.
    let mut m = Model::load_dir(model_dir, device)?;
    for ((name, _), a) in adapters.iter().zip(&loaded) {
        a.load_into(&mut m, name)?;
    }
    {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| m.tokenizer.encode(p, true)).collect::<Result<_>>()?;
        let started = Instant::now();
        let (mut tokens, mut ttft) = (0, 0.0);
        for (i, p) in ids.iter().enumerate() {
            crate::lora::set_active(&mut m, &[adapters[route(i)].0.as_str()]);
            let (t, _, tt) = sequential(&m, &[(i, p.clone())])?;
            tokens += t;
            ttft += tt;
        }
        out.push(report("base + separate adapter", tokens, started.elapsed().as_secs_f64(), ttft / prompts.len() as f64, &m));
    }
    // Multi-LoRA: one batch, every row through its own adapter.
    {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| m.tokenizer.encode(p, true)).collect::<Result<_>>()?;
        let per_row: Vec<Option<&str>> = (0..prompts.len()).map(|i| Some(adapters[route(i)].0.as_str())).collect();
        crate::lora::route(&mut m, &per_row)?;
        let started = Instant::now();
        let mut first = None;
        let rows = block_on(generate_batch(&m, &ids, &s, |_, _| {
            first.get_or_insert_with(|| started.elapsed().as_secs_f64());
            true
        }))?;
        let seconds = started.elapsed().as_secs_f64();
        crate::lora::unroute(&mut m);
        let tokens = rows.iter().map(|r| r.ids.len()).sum();
        out.push(report("multi-LoRA batch", tokens, seconds, first.unwrap_or(0.0), &m));
    }
    drop(m);
    // Swapping: read the request's adapter from disk, attach it, serve, remove it.
    {
        let mut m = Model::load_dir(model_dir, device)?;
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| m.tokenizer.encode(p, true)).collect::<Result<_>>()?;
        let started = Instant::now();
        let (mut tokens, mut ttft) = (0, 0.0);
        for (i, p) in ids.iter().enumerate() {
            let t0 = Instant::now();
            PeftAdapter::read_dir(&adapters[route(i)].1)?.load_into(&mut m, "request")?;
            let swap = t0.elapsed().as_secs_f64();
            let (t, _, tt) = sequential(&m, &[(i, p.clone())])?;
            tokens += t;
            // The swap is part of the wait for the first token.
            ttft += swap + tt;
            for (_, l) in m.arch.linears_mut() {
                l.adapters.retain(|a| a.name != "request");
            }
        }
        out.push(report("swapping adapters", tokens, started.elapsed().as_secs_f64(), ttft / prompts.len() as f64, &m));
    }
    Ok(out)
}
