//! The memory ledger: what a training run should need, by the course's memory math, beside what
//! the device's allocator reports.
//!
//! Predicted bytes (everything in f32, 4 bytes a value, as the engine computes):
//!   weights      = frozen parameters × 4 (NF4 for QLoRA: 4.127 bits a linear weight, bitsandbytes'
//!                  4 bits + an 8-bit absmax per 64 + a 32-bit second-level absmax per 256 blocks)
//!   trainable    = trained parameters × 4 (LoRA: Σ r·(in + out) over adapted layers)
//!   gradients    = trainable
//!   optimizer    = 2 × trainable for AdamW (first and second moments), 0 for plain SGD
//!   activations  = B·T·(L_b·(12·C + 4·I + 2·nh·T + r·m) + 2·C + 2·V) × 4
//! where B is the batch size, T the sequence length, L_b the blocks the backward pass goes
//! through (all of them, or the last k for partial finetuning), C the width, I the MLP width, nh
//! the attention heads, m the adapted modules per block, V the vocabulary. The activation count
//! is what our blocks keep for the backward pass per token: the two norms' inputs and outputs
//! (4·C), q, k, v and their rotated or repeated forms (≈ 6·C), the attention output and the
//! projection's input (2·C), the MLP's gate, up, activation and product (4·I), the attention
//! scores and probabilities (2·nh·T), each adapter's x·A (r), and at the top the final norm (2·C)
//! with the logits and their log-softmax (2·V). Allocator slack, temporaries of the backward pass
//! and caches are what the measured bytes show beyond it: the remainder.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lora::Targets;
use crate::model::Model;
use crate::train::trainer::{Method, Optimizer};

const F32: f64 = 4.0;
/// Bits per parameter of NF4 with double quantisation (bitsandbytes, blocks of 64 and 256).
pub const NF4_BITS: f64 = 4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0);

/// The sizes of a model that the formula needs.
#[derive(Clone, Debug, Serialize)]
pub struct ModelShape {
    /// Counts are u64: the calculator describes models past 2³² parameters, and the page's
    /// engine is 32-bit.
    pub params: u64,
    /// Parameters of each block.
    pub layer_params: Vec<u64>,
    /// The final norm (trained by partial finetuning along with the last blocks).
    pub final_norm_params: u64,
    /// Every linear layer a LoRA adapter can target: (block, path, in, out).
    pub linears: Vec<(usize, String, usize, usize)>,
    pub hidden: usize,
    pub inner: usize,
    pub heads: usize,
    pub vocab: usize,
}

impl ModelShape {
    pub fn of(model: &mut Model) -> ModelShape {
        let layers = model.config.layers();
        let block_of = |key: &str| -> Option<usize> {
            let rest = key.strip_prefix("model.layers.").or_else(|| key.strip_prefix("transformer.h."))?;
            rest.split('.').next()?.parse().ok()
        };
        let linears = model
            .arch
            .linears()
            .into_iter()
            .map(|(path, l)| (block_of(&path).unwrap_or(0), path.clone(), l.d_in(), l.d_out()))
            .collect();
        let mut layer_params = vec![0; layers];
        let (mut params, mut final_norm_params) = (0u64, 0u64);
        for (key, w) in model.weights_mut() {
            let n = w.numel() as u64;
            params += n;
            match block_of(&key) {
                Some(i) if i < layers => layer_params[i] += n,
                _ if key.starts_with("model.norm.") || key.starts_with("transformer.ln_f.") => final_norm_params += n,
                _ => {}
            }
        }
        ModelShape {
            params,
            layer_params,
            final_norm_params,
            linears,
            hidden: model.config.hidden(),
            inner: model.config.intermediate(),
            heads: model.config.heads(),
            vocab: model.config.vocab_size(),
        }
    }
}

/// What shapes a run's memory.
#[derive(Clone, Debug)]
pub struct RunShape {
    pub method: Method,
    pub rank: usize,
    pub targets: Targets,
    pub partial_layers: usize,
    pub optimizer: Optimizer,
    pub batch: usize,
    pub seq: usize,
    /// Frozen linear weights held in 4 bits (QLoRA).
    pub nf4: bool,
    /// Bits a parameter of those 4-bit weights takes as stored: the model's own where it is in
    /// 4 bits already (GGUF's Q4_1 takes 6), otherwise NF4 with double quantization's (QLoRA's default).
    pub quant_bits: f64,
    /// Bits a parameter of the frozen linear weights takes where the model keeps them in 8-bit
    /// codes (a GGUF file's Q8_0 or Q6_K): what LoRA over it holds. Full and partial finetuning
    /// widen them to f32, and QLoRA stores them in 4 bits.
    pub kept8_bits: Option<f64>,
    /// Bytes a token embedding and an untied output head kept in 8-bit codes (GGUF) save against
    /// f32, for the methods that leave them frozen as they are (LoRA, QLoRA, DPO); full and
    /// partial finetuning widen them.
    pub kept8_saved: Option<f64>,
}

impl RunShape {
    /// The shape of a run of `cfg` on `model` as it is now (4-bit or not).
    pub fn of(cfg: &crate::train::trainer::TrainConfig, model: &Model) -> RunShape {
        RunShape {
            method: cfg.method,
            rank: cfg.lora.r,
            targets: cfg.lora.targets.clone(),
            partial_layers: cfg.partial_layers,
            optimizer: cfg.optimizer,
            batch: cfg.batch_size,
            seq: cfg.seq_len.min(model.context()),
            nf4: model.quantization().is_some(),
            quant_bits: model.linear_bits().unwrap_or(NF4_BITS),
            kept8_bits: model.kept8_bits(),
            kept8_saved: model.kept8_saved_bytes(),
        }
    }
}

/// Predicted bytes per part.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Parts {
    pub weights: f64,
    pub trainable: f64,
    pub gradients: f64,
    pub optimizer: f64,
    pub activations: f64,
}

impl Parts {
    pub fn total(&self) -> f64 {
        self.weights + self.trainable + self.gradients + self.optimizer + self.activations
    }
}

/// The course's memory math for one model and run (see the module comment for the formula).
pub fn predict(shape: &ModelShape, run: &RunShape) -> Parts {
    let layers = shape.layer_params.len();
    let adapted: Vec<&(usize, String, usize, usize)> = match run.method {
        Method::Lora | Method::Qlora | Method::Dpo => shape.linears.iter().filter(|(_, p, _, _)| run.targets.matches(p)).collect(),
        _ => vec![],
    };
    let (trainable, backward_blocks) = match run.method {
        Method::Full => (shape.params, layers),
        Method::Partial => {
            let k = run.partial_layers.min(layers);
            (shape.layer_params[layers - k..].iter().sum::<u64>() + shape.final_norm_params, k)
        }
        Method::Lora | Method::Qlora | Method::Dpo => (adapted.iter().map(|(_, _, i, o)| (run.rank * (i + o)) as u64).sum(), layers),
    };
    let frozen = if run.method.is_adapter() { shape.params } else { shape.params - trainable };
    let linear: u64 = shape.linears.iter().map(|(_, _, i, o)| *i as u64 * *o as u64).sum();
    let weights = if run.nf4 {
        linear as f64 * run.quant_bits / 8.0 + (frozen - linear) as f64 * F32
    } else if let (Some(bits), Method::Lora | Method::Dpo) = (run.kept8_bits, run.method) {
        linear as f64 * bits / 8.0 + (frozen - linear) as f64 * F32
    } else {
        frozen as f64 * F32
    };
    let weights = match run.kept8_saved {
        Some(saved) if run.method.is_adapter() => weights - saved,
        _ => weights,
    };
    let per_block_modules = if layers > 0 { adapted.len() as f64 / layers as f64 } else { 0.0 };
    let (c, i, nh, t) = (shape.hidden as f64, shape.inner as f64, shape.heads as f64, run.seq as f64);
    let per_block = 12.0 * c + 4.0 * i + 2.0 * nh * t + run.rank as f64 * per_block_modules;
    let per_token = backward_blocks as f64 * per_block + 2.0 * c + 2.0 * shape.vocab as f64;
    let trainable_bytes = trainable as f64 * F32;
    Parts {
        weights,
        trainable: trainable_bytes,
        gradients: trainable_bytes,
        optimizer: match run.optimizer {
            Optimizer::Adamw => 2.0 * trainable_bytes,
            Optimizer::Sgd => 0.0,
        },
        // DPO runs a chosen and a rejected row per pair (the reference pass keeps nothing).
        activations: (run.batch * run.seq * if run.method == Method::Dpo { 2 } else { 1 }) as f64 * per_token * F32,
    }
}

/// Bytes the device's allocator reports.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// Live allocations (after a step: weights, adapters, optimizer states).
    pub in_use: Option<u64>,
    /// Held by the allocator: live bytes plus pooled pages kept from the step's peak.
    pub reserved: u64,
    pub source: String,
}

/// What the device says it holds: the WebGPU/wgpu allocator's accounting, the wasm heap on the
/// CPU in the browser, or the process's peak resident memory natively on the CPU.
pub fn measure(device: &burn::tensor::Device) -> Option<Measured> {
    if let Some(u) = device.memory_pool_usage() {
        return Some(Measured {
            in_use: Some(u.bytes_in_use + u.bytes_padding),
            reserved: u.bytes_reserved,
            source: "bytes reserved by the GPU allocator (burn/cubecl memory pools)".into(),
        });
    }
    #[cfg(target_arch = "wasm32")]
    {
        let pages = core::arch::wasm32::memory_size::<0>() as u64;
        Some(Measured { in_use: None, reserved: pages * 65536, source: "the wasm heap (CPU engine), which also holds the model's files".into() })
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::device::peak_rss_bytes().map(|b| Measured { in_use: None, reserved: b, source: "peak resident memory of the process (CPU)".into() })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub label: String,
    pub bytes: BTreeMap<&'static str, f64>,
    pub total: f64,
    pub current: bool,
    pub measured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The frozen weights as the device holds them: the sizes of the buffers the model allocated,
/// beside what the formula predicts (`weights`), and the allocator's count after loading.
#[derive(Clone, Debug, Serialize)]
pub struct BaseWeights {
    /// Bytes of every weight buffer on the device (4-bit buffers include their code tables).
    pub device_bytes: usize,
    /// The same weights in f32.
    pub f32_bytes: usize,
    /// The formula's frozen-weight bytes for this run.
    pub predicted: f64,
    /// `nf4+dq`, `nf4`, `fp4` when the linear weights are 4-bit.
    pub quantization: Option<String>,
    /// Bits per parameter of the 4-bit linear weights as stored (codes and scales).
    pub linear_bits: Option<f64>,
    /// The same with the code tables each matrix's device buffer carries (1088 bytes a matrix).
    pub linear_bits_on_device: Option<f64>,
    /// Bytes in use by the device's allocator right after the base was made ready (wgpu only).
    pub allocator_after_load: Option<u64>,
}

/// Measure the base weights of `model` for the ledger.
pub fn base_weights(model: &Model, predicted: f64, allocator_after_load: Option<u64>) -> BaseWeights {
    let (mut stored, mut bytes, mut params) = (0usize, 0usize, 0usize);
    for (_, l) in model.arch.linears() {
        match &l.base {
            crate::model::layers::Base::Quant(q) => {
                stored += q.layout.storage_bytes();
                bytes += q.layout.bytes();
                params += q.layout.numel();
            }
            crate::model::layers::Base::Q8(q) => {
                stored += q.storage_bytes();
                bytes += q.storage_bytes();
                params += q.numel();
            }
            crate::model::layers::Base::Dense(_) => {}
        }
    }
    BaseWeights {
        device_bytes: model.summary.base_bytes,
        f32_bytes: model.summary.f32_bytes,
        predicted,
        quantization: model.summary.quantization.clone(),
        linear_bits: (params > 0).then(|| stored as f64 * 8.0 / params as f64),
        linear_bits_on_device: (params > 0).then(|| bytes as f64 * 8.0 / params as f64),
        allocator_after_load,
    }
}

/// Everything the page's memory view shows.
#[derive(Clone, Debug, Serialize)]
pub struct Ledger {
    pub parts: Vec<&'static str>,
    pub labels: BTreeMap<&'static str, &'static str>,
    pub rows: Vec<Row>,
    pub formula: Vec<String>,
    #[serde(rename = "measuredNote", skip_serializing_if = "Option::is_none")]
    pub measured_note: Option<String>,
    pub measured: Option<Measured>,
    pub base: Option<BaseWeights>,
}

const PARTS: [&str; 6] = ["weights", "trainable", "gradients", "optimizer", "activations", "remainder"];

fn row(label: String, p: &Parts, current: bool, note: Option<String>) -> Row {
    let bytes = BTreeMap::from([
        ("weights", p.weights),
        ("trainable", p.trainable),
        ("gradients", p.gradients),
        ("optimizer", p.optimizer),
        ("activations", p.activations),
    ]);
    Row { label, bytes, total: p.total(), current, measured: false, note }
}

fn method_name(run: &RunShape) -> String {
    match (run.method, run.nf4) {
        (Method::Full, _) => "full finetuning".into(),
        (Method::Partial, _) => format!("partial: last {} block{}", run.partial_layers, if run.partial_layers == 1 { "" } else { "s" }),
        (Method::Lora, false) if run.kept8_bits.is_some() => format!("LoRA r = {} (8-bit base)", run.rank),
        (Method::Lora, false) => format!("LoRA r = {}", run.rank),
        (Method::Lora | Method::Qlora, _) => format!("QLoRA r = {} (4-bit base)", run.rank),
        (Method::Dpo, false) => format!("DPO, LoRA r = {}", run.rank),
        (Method::Dpo, true) => format!("DPO, LoRA r = {} (4-bit base)", run.rank),
    }
}

/// The ledger for the current run, the same model under the other methods, and the measured
/// bytes (with the remainder: measured minus predicted) when the device reports them.
pub fn ledger(shape: &ModelShape, run: &RunShape, measured: Option<Measured>, base: Option<BaseWeights>) -> Ledger {
    let current = predict(shape, run);
    let mut rows = vec![row(format!("This run ({}), predicted", method_name(run)), &current, true, None)];
    let mut measured_note = None;
    if let Some(m) = &measured {
        let mut r = row(format!("This run, measured: {}", m.source), &current, true, None);
        let remainder = m.reserved as f64 - current.total();
        r.bytes.insert("remainder", remainder.max(0.0));
        r.total = r.total.max(m.reserved as f64);
        r.measured = true;
        if remainder < 0.0 {
            r.note = Some(format!("the formula predicts {:.1} MiB more than was measured", -remainder / 1048576.0));
        }
        rows.push(r);
        measured_note = Some(format!(
            "{}{}. The parts of the measured bar are the predicted ones; the remainder is the difference.",
            mib(m.reserved as f64),
            m.in_use.map(|u| format!(" held by the allocator ({} in live tensors after the step)", mib(u as f64))).unwrap_or_default()
        ));
    }
    let others = [
        RunShape { method: Method::Full, nf4: false, ..run.clone() },
        RunShape { method: Method::Partial, nf4: false, partial_layers: run.partial_layers.max(1), ..run.clone() },
        RunShape { method: Method::Lora, nf4: false, ..run.clone() },
        RunShape { method: Method::Lora, nf4: true, ..run.clone() },
    ];
    for other in others {
        let note = (other.nf4 && !run.nf4).then(|| "predicted: train with QLoRA to measure it".to_string());
        rows.push(row(format!("Same model, {}", method_name(&other)), &predict(shape, &other), false, note));
    }
    let formula = vec![
        format!("weights = frozen parameters × 4 B (f32); QLoRA stores linear weights in 4 bits, at {:.3} bits a parameter with their scales", run.quant_bits),
        "trainable = trained parameters × 4 B; LoRA trains Σ r·(in + out) over adapted layers".into(),
        "gradients = trainable".into(),
        "optimizer = 2 × trainable for AdamW (two moments), 0 for SGD".into(),
        "activations = B·T·(L·(12·C + 4·I + 2·nh·T + r·m) + 2·C + 2·V) × 4 B".into(),
        format!(
            "here B = {}, T = {}, L = {} blocks, C = {}, I = {}, nh = {}, m = adapted modules per block, V = {}",
            run.batch,
            run.seq,
            shape.layer_params.len(),
            shape.hidden,
            shape.inner,
            shape.heads,
            shape.vocab
        ),
    ];
    let labels = BTreeMap::from([
        ("weights", "frozen weights"),
        ("trainable", "trainable parameters"),
        ("gradients", "gradients"),
        ("optimizer", "optimizer states"),
        ("activations", "activations"),
        ("remainder", "remainder (allocator slack, temporaries)"),
    ]);
    Ledger { parts: PARTS.to_vec(), labels, rows, formula, measured_note, measured, base }
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / 1048576.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Llama with L = 2 blocks, C = 8, I = 16, nh = 2, V = 32, tied embeddings:
    ///   embeddings 32·8 = 256; per block: two norms 2·8 = 16, q k v o 4·8·8 = 256,
    ///   gate up down 3·8·16 = 384, so 656; final norm 8.  P = 256 + 2·656 + 8 = 1576.
    fn tiny() -> ModelShape {
        let mut linears = vec![];
        for l in 0..2 {
            for (name, i, o) in [("self_attn.q_proj", 8, 8), ("self_attn.k_proj", 8, 8), ("self_attn.v_proj", 8, 8), ("self_attn.o_proj", 8, 8), ("mlp.gate_proj", 8, 16), ("mlp.up_proj", 8, 16), ("mlp.down_proj", 16, 8)] {
                linears.push((l, format!("model.layers.{l}.{name}"), i, o));
            }
        }
        ModelShape { params: 1576, layer_params: vec![656, 656], final_norm_params: 8, linears, hidden: 8, inner: 16, heads: 2, vocab: 32 }
    }

    fn run(method: Method) -> RunShape {
        RunShape { method, rank: 2, targets: Targets::All("all-linear".into()), partial_layers: 1, optimizer: Optimizer::Adamw, batch: 2, seq: 4, nf4: false, quant_bits: NF4_BITS, kept8_bits: None, kept8_saved: None }
    }

    #[test]
    fn lora_ledger_matches_the_hand_worked_example() {
        // LoRA r = 2 on all 7 linears of both blocks:
        //   per block q k v o 4·2·(8+8) = 128, gate up 2·2·(8+16) = 96, down 2·(16+8) = 48: 272;
        //   two blocks: 544 trainable → 2176 B; gradients 2176 B; AdamW 2·2176 = 4352 B.
        //   weights: all 1576 frozen → 6304 B.
        //   activations per token per block: 12·8 + 4·16 + 2·2·4 + 2·7 = 96 + 64 + 16 + 14 = 190;
        //   per token: 2·190 + 2·8 + 2·32 = 460; B·T = 8 tokens → 3680 values → 14720 B.
        //   total 6304 + 2176 + 2176 + 4352 + 14720 = 29728 B.
        let p = predict(&tiny(), &run(Method::Lora));
        assert_eq!(p, Parts { weights: 6304.0, trainable: 2176.0, gradients: 2176.0, optimizer: 4352.0, activations: 14720.0 });
        assert_eq!(p.total(), 29728.0);
    }

    #[test]
    fn full_partial_and_qlora_follow_the_same_arithmetic() {
        // Full: 1576 trainable → 6304 B each for parameters and gradients, 12608 B AdamW; nothing
        // frozen; activations without adapters: (2·176 + 80)·8·4 = 13824 B.
        let full = predict(&tiny(), &run(Method::Full));
        assert_eq!(full, Parts { weights: 0.0, trainable: 6304.0, gradients: 6304.0, optimizer: 12608.0, activations: 13824.0 });
        // Partial, last block: 656 + final norm 8 = 664 trainable (2656 B); frozen 912 (3648 B);
        // the backward pass stops below the last block: (176 + 80)·8·4 = 8192 B.
        let partial = predict(&tiny(), &run(Method::Partial));
        assert_eq!(partial, Parts { weights: 3648.0, trainable: 2656.0, gradients: 2656.0, optimizer: 5312.0, activations: 8192.0 });
        // QLoRA: linear weights 2·(4·64 + 3·128) = 1280 at 4.127 bits = 660.3125 B, the other 296
        // parameters stay f32 (1184 B); the rest is LoRA's.
        let q = predict(&tiny(), &RunShape { nf4: true, ..run(Method::Lora) });
        assert!((q.weights - (1280.0 * NF4_BITS / 8.0 + 1184.0)).abs() < 1e-9);
        assert!((1280.0 * NF4_BITS / 8.0 - 660.3125).abs() < 1e-9);
        assert_eq!(q.trainable, 2176.0);
        // SGD keeps no state.
        assert_eq!(predict(&tiny(), &RunShape { optimizer: Optimizer::Sgd, ..run(Method::Lora) }).optimizer, 0.0);
    }

    #[test]
    fn the_measured_row_carries_the_remainder_and_the_ledger_lists_every_method() {
        let measured = Measured { in_use: Some(20000), reserved: 40000, source: "test".into() };
        let l = ledger(&tiny(), &run(Method::Lora), Some(measured), None);
        assert_eq!(l.rows.len(), 6);
        assert_eq!(l.rows[1].bytes["remainder"], 40000.0 - 29728.0);
        assert_eq!(l.rows[1].total, 40000.0);
        assert!(l.rows[5].label.contains("QLoRA") && l.rows[5].note.is_some());
        assert!(l.formula.iter().any(|f| f.contains("12·C + 4·I")));
    }
}
