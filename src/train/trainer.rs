//! The trainer shared by the page and the CLI: one optimizer step at a time, so the worker can
//! interleave steps with UI updates and stop or resume between them.
//!
//! - Optimizers: AdamW exactly as PyTorch's `torch.optim.AdamW` (decoupled weight decay applied
//!   first, bias-corrected moments counted over the steps taken) and plain SGD. As Hugging Face's
//!   Trainer, biases and norm weights get no weight decay.
//! - LR schedules as transformers' `get_scheduler`: linear warmup from 0, then constant, linear
//!   decay to 0, or cosine decay to 0.
//! - Gradient accumulation as transformers (since 4.46) does it: each micro-batch's summed token
//!   loss is divided by the loss tokens of all the step's micro-batches, so a step's loss is the
//!   token mean over the whole step however the tokens fall into micro-batches. Global grad-norm
//!   clipping as `torch.nn.utils.clip_grad_norm_`, and a NaN/Inf guard that skips the step and
//!   gives up after `nan_patience` skips in a row.
//! - Determinism: data order comes from (seed, epoch) and dropout from the device seeded with
//!   (seed, step), so a run resumed from a checkpoint continues exactly (on CPU).

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::model::{Model, read_f32};
use crate::train::batch::{Batch, batches};
use crate::train::data::Example;
use crate::train::loss::{batch_loss, evaluate_examples};
use crate::train::preference::{self, DpoReport};
use crate::rng::Rng;
use crate::{Error, Result};

pub use crate::train::config::{Method, Optimizer, Schedule, TrainConfig};

/// A trainable tensor inside the model, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParamRef {
    /// LoRA factor `A` or `B` of the named adapter on the layer at `path`.
    Lora { path: String, adapter: String, b: bool },
    /// A base weight, by checkpoint key.
    Weight(String),
}

/// Moments of AdamW for one parameter, flattened.
#[derive(Clone, Debug)]
struct Moments {
    m: Tensor<2>,
    v: Tensor<2>,
}

/// Where training is, exactly enough to resume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    pub step: usize,
    /// Optimizer updates applied (steps the NaN guard skipped are not counted): AdamW's bias
    /// correction counts these, as PyTorch's does.
    #[serde(default)]
    pub taken: usize,
    pub epoch: usize,
    pub batch: usize,
    pub nan_streak: usize,
    pub best_valid: Option<f64>,
    pub evals_since_best: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub total_steps: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    /// The update was skipped because the loss or a gradient was NaN or infinite.
    pub skipped: bool,
    /// DPO's rewards, accuracy and margin over the step's pairs.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub dpo: Option<DpoReport>,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub params: Vec<ParamRef>,
    moments: Vec<Option<Moments>>,
    pub cursor: Cursor,
    pub total_steps: usize,
    train: Vec<Example>,
    epoch_batches: Vec<Batch>,
    pad_id: u32,
    device: Device,
}

/// A trainable tensor, borrowed from the model. Vectors (norms, biases) stay vectors so that
/// autodiff keeps them as leaves; the optimizer sees them as `[1, n]`.
enum Slot<'a> {
    Matrix(&'a mut Tensor<2>),
    Vector(&'a mut Tensor<1>),
}

impl Slot<'_> {
    fn value(&self) -> Tensor<2> {
        match self {
            Slot::Matrix(t) => (*t).clone(),
            Slot::Vector(t) => {
                let n = t.dims()[0];
                (*t).clone().reshape([1, n])
            }
        }
    }
    fn grad(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<2>> {
        match self {
            Slot::Matrix(t) => t.grad(grads),
            Slot::Vector(t) => t.grad(grads).map(|g| g.reshape([1, t.dims()[0]])),
        }
    }
    /// Store a value that autodiff does not track (for passes without a backward). `detach`
    /// alone keeps a leaf's require-grad flag; it must be cleared too.
    fn set_untracked(&mut self, value: Tensor<2>) {
        match self {
            Slot::Matrix(t) => **t = value.detach().set_require_grad(false),
            Slot::Vector(t) => **t = value.detach().reshape([t.dims()[0]]).detach().set_require_grad(false),
        }
    }
    /// Store a new value as a fresh leaf that requires grad.
    fn set(&mut self, value: Tensor<2>) {
        match self {
            Slot::Matrix(t) => **t = value.detach().require_grad(),
            Slot::Vector(t) => **t = value.detach().reshape([t.dims()[0]]).detach().require_grad(),
        }
    }
}

/// Every parameter's tensor, in `params` order, found in one pass over the model.
fn slots<'a>(model: &'a mut Model, params: &[ParamRef]) -> Result<Vec<Slot<'a>>> {
    let mut found: std::collections::HashMap<ParamRef, Slot<'a>> = std::collections::HashMap::new();
    if params.iter().any(|p| matches!(p, ParamRef::Lora { .. })) {
        for (path, linear) in model.arch.linears_mut() {
            for adapter in &mut linear.adapters {
                let crate::lora::LoraAdapter { name, a, b, .. } = adapter;
                found.insert(ParamRef::Lora { path: path.clone(), adapter: name.clone(), b: false }, Slot::Matrix(a));
                found.insert(ParamRef::Lora { path: path.clone(), adapter: name.clone(), b: true }, Slot::Matrix(b));
            }
        }
    } else {
        for (key, w) in model.weights_mut() {
            let slot = match w {
                crate::model::keys::WeightMut::Matrix(t) => Slot::Matrix(t),
                crate::model::keys::WeightMut::Vector(t) => Slot::Vector(t),
                // Frozen in 4 bits; `Trainer::new` dequantizes before full or partial training.
                crate::model::keys::WeightMut::Quant(_) | crate::model::keys::WeightMut::Q8(_) => continue,
            };
            found.insert(ParamRef::Weight(key), slot);
        }
    }
    params
        .iter()
        .map(|p| found.remove(p).ok_or_else(|| Error::input(format!("the model has no trainable tensor {p:?}"))))
        .collect()
}

/// Bring the model's base into the form a method trains on. QLoRA stores every linear weight in
/// 4 bits (a model already in 4 bits stays as it is). Full and partial finetuning train the
/// weights themselves, so a 4-bit model is dequantized to f32 first. LoRA takes the base as it
/// is: over a 4-bit model it is QLoRA. Returns a note for the user when the base changed form.
pub async fn prepare_base(model: &mut Model, cfg: &TrainConfig) -> Result<Option<String>> {
    match cfg.method {
        Method::Qlora => match model.quantization() {
            Some(q) if q != cfg.quant => Ok(Some(format!(
                "the model is already stored in {}{}; QLoRA trains over it as it is",
                q.quant_type.name(),
                if q.double_quant { " with double quantization" } else { "" }
            ))),
            Some(_) => Ok(None),
            None => {
                let n = model.quantize_linears(cfg.quant).await?;
                Ok(Some(format!(
                    "stored {n} linear weights in {}{} ({:.1} MiB of weights on the device, was {:.1} MiB in f32)",
                    cfg.quant.quant_type.name(),
                    if cfg.quant.double_quant { " with double quantization" } else { "" },
                    model.summary.base_bytes as f64 / 1048576.0,
                    model.summary.f32_bytes as f64 / 1048576.0
                )))
            }
        },
        Method::Full | Method::Partial => {
            let n = model.dequantize_linears();
            Ok((n > 0).then(|| format!("dequantized {n} 4-bit linear weights to f32: {:?} finetuning trains them", cfg.method)))
        }
        Method::Lora | Method::Dpo => Ok(None),
    }
}

impl Trainer {
    /// Prepare training of `model` (on an autodiff device) with these examples. For LoRA the
    /// adapter named "default" must already be attached.
    pub fn new(model: &mut Model, cfg: TrainConfig, train: Vec<Example>) -> Result<Trainer> {
        cfg.validate()?;
        // A sequence past the context would index past GPT-2's position table: refuse it here
        // rather than fail inside the forward pass. (A seq len above the context is fine while
        // no example is that long.)
        // An example of n ids feeds n - 1 of them (the last is only a target).
        if let Some(longest) = train.iter().map(|e| e.ids.len().saturating_sub(1)).max().filter(|&n| n > model.context()) {
            return Err(Error::input(format!(
                "a training example of {longest} input tokens is longer than the model's context of {}: use a seq len of {} or less",
                model.context(),
                model.context()
            )));
        }
        if train.is_empty() {
            return Err(Error::input("there are no training examples"));
        }
        let pairs = train.iter().filter(|e| e.rejected.is_some()).count();
        if cfg.method == Method::Dpo && pairs < train.len() {
            return Err(Error::input(
                "DPO trains on preference pairs: give a .jsonl file of {\"prompt\", \"chosen\", \"rejected\"} records",
            ));
        }
        if cfg.method != Method::Dpo && pairs > 0 {
            return Err(Error::input("preference pairs ({\"prompt\", \"chosen\", \"rejected\"}) train with --method dpo"));
        }
        if !model.device.is_autodiff() {
            return Err(Error::device("training needs the model on an autodiff device (Device::autodiff())"));
        }
        let params: Vec<ParamRef> = match cfg.method {
            Method::Lora | Method::Qlora | Method::Dpo => {
                let mut ps = Vec::new();
                for (path, linear) in model.arch.linears() {
                    if linear.adapter("default").is_some() {
                        ps.push(ParamRef::Lora { path: path.clone(), adapter: "default".into(), b: false });
                        ps.push(ParamRef::Lora { path, adapter: "default".into(), b: true });
                    }
                }
                if ps.is_empty() {
                    return Err(Error::input("LoRA training needs an adapter named 'default' on the model"));
                }
                ps
            }
            Method::Full => model.weight_keys(None).into_iter().map(ParamRef::Weight).collect(),
            Method::Partial => {
                let layers = model.config.layers();
                if cfg.partial_layers == 0 || cfg.partial_layers > layers {
                    return Err(Error::input(format!(
                        "partial training of the last {} blocks: the model has {layers}",
                        cfg.partial_layers
                    )));
                }
                model.weight_keys(Some(layers - cfg.partial_layers)).into_iter().map(ParamRef::Weight).collect()
            }
        };
        let pad_id = model.pad_id();
        let per_epoch = if cfg.method == Method::Dpo {
            train.len().div_ceil(cfg.batch_size)
        } else {
            batches(&train, cfg.batch_size, cfg.pack, cfg.seq_len, pad_id).len()
        };
        let total_steps = if cfg.steps > 0 {
            cfg.steps
        } else {
            ((per_epoch as f64 * cfg.epochs) / cfg.grad_accum as f64).ceil().max(1.0) as usize
        };
        let mut t = Trainer {
            moments: vec![None; params.len()],
            params,
            cursor: Cursor { step: 0, taken: 0, epoch: 0, batch: 0, nan_streak: 0, best_valid: None, evals_since_best: 0 },
            total_steps,
            train,
            epoch_batches: Vec::new(),
            pad_id,
            device: model.device.clone(),
            cfg,
        };
        t.epoch_batches = t.batches_for_epoch(0);
        for mut slot in slots(model, &t.params)? {
            let v = slot.value();
            slot.set(v);
        }
        Ok(t)
    }

    /// The examples in this epoch's order (a seeded shuffle), cut into batches.
    fn batches_for_epoch(&self, epoch: usize) -> Vec<Batch> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let mut rng = Rng::new(self.cfg.seed ^ (0xE90C_u64.wrapping_mul(epoch as u64 + 1)));
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let shuffled: Vec<Example> = order.into_iter().map(|i| self.train[i].clone()).collect();
        if self.cfg.method == Method::Dpo {
            return preference::batches(&shuffled, self.cfg.batch_size, self.cfg.seq_len, self.pad_id);
        }
        batches(&shuffled, self.cfg.batch_size, self.cfg.pack, self.cfg.seq_len, self.pad_id)
    }

    fn next_batch(&mut self) -> Batch {
        if self.cursor.batch >= self.epoch_batches.len() {
            self.cursor.epoch += 1;
            self.cursor.batch = 0;
            self.epoch_batches = self.batches_for_epoch(self.cursor.epoch);
        }
        let b = self.epoch_batches[self.cursor.batch].clone();
        self.cursor.batch += 1;
        b
    }

    pub fn done(&self) -> bool {
        self.cursor.step >= self.total_steps || self.cursor.nan_streak >= self.cfg.nan_patience.max(1)
    }

    /// One optimizer step (over `grad_accum` micro-batches from the data).
    pub async fn step(&mut self, model: &mut Model) -> Result<StepReport> {
        let micro: Vec<Batch> = (0..self.cfg.grad_accum).map(|_| self.next_batch()).collect();
        self.step_on(model, micro).await
    }

    /// One optimizer step over the given micro-batches (what `step` does with the next ones from
    /// the data; also the way to train on batches made elsewhere).
    pub async fn step_on(&mut self, model: &mut Model, micro: Vec<Batch>) -> Result<StepReport> {
        self.track(model)?;
        let step = self.cursor.step;
        self.device.seed(self.cfg.seed.wrapping_mul(1_000_003).wrapping_add(step as u64));
        set_training(model, true);
        let mut grads_acc: Vec<Option<Tensor<2>>> = vec![None; self.params.len()];
        let mut loss_acc: Option<Tensor<1>> = None;
        let mut stats_acc: Option<Tensor<1>> = None;
        let dpo = self.cfg.method == Method::Dpo;
        let tokens = micro.iter().flat_map(|b| b.weights.iter().flatten()).filter(|w| **w > 0.0).count();
        // What a micro-batch's mean is weighted by: the step's loss tokens over all micro-batches
        // (transformers' num_items_in_batch), or for DPO its pairs.
        let weight = |b: &Batch| if dpo { (b.ids.len() / 2) as f64 } else { b.weights.iter().flatten().map(|&w| w as f64).sum::<f64>() };
        let total: f64 = micro.iter().map(weight).sum::<f64>().max(1.0);
        for batch in micro {
            let share = weight(&batch).max(1.0) / total;
            // Each micro-batch's mean: back to its sum, over the step's tokens (or pairs).
            let loss = if dpo {
                let (loss, stats) = preference::dpo_loss(model, &batch, self.cfg.dpo_beta)?;
                let stats = stats * share;
                stats_acc = Some(match stats_acc.take() {
                    Some(s) => s + stats,
                    None => stats,
                });
                loss * share
            } else {
                batch_loss(model, &batch)? * share
            };
            let grads = loss.clone().backward();
            for (i, slot) in slots(model, &self.params)?.iter().enumerate() {
                let Some(g) = slot.grad(&grads) else { continue };
                grads_acc[i] = Some(match grads_acc[i].take() {
                    Some(acc) => acc + g,
                    None => g,
                });
            }
            let loss = loss.detach();
            loss_acc = Some(match loss_acc {
                Some(l) => l + loss,
                None => loss,
            });
        }
        set_training(model, false);
        // One read per step: the token-mean loss and the global gradient norm.
        // The squares summed tensor by tensor into one value (one dispatch each on a GPU).
        let norm_sq = grads_acc.iter().flatten().fold(None, |acc: Option<Tensor<1>>, g| {
            Some(crate::model::fused::sum_squares_add(g.clone(), acc.unwrap_or_else(|| Tensor::zeros([1], &g.device()))))
        });
        let norm_sq = norm_sq.unwrap_or_else(|| Tensor::<1>::zeros([1], &self.device));
        let loss_mean = loss_acc.ok_or_else(|| Error::input("a step needs at least one micro-batch"))?;
        let mut read = vec![loss_mean, norm_sq.sqrt()];
        read.extend(stats_acc);
        let both = read_f32(Tensor::cat(read, 0)).await?;
        let (loss, grad_norm) = (both[0] as f64, both[1] as f64);
        let dpo = dpo.then(|| DpoReport::from_values(&both[2..]));
        let lr = self.cfg.lr_at(step, self.total_steps);
        let skipped = !(loss.is_finite() && grad_norm.is_finite());
        if skipped {
            self.cursor.nan_streak += 1;
        } else {
            self.cursor.nan_streak = 0;
            // torch.nn.utils.clip_grad_norm_: scale by min(1, max / (norm + 1e-6)).
            let clip = if self.cfg.max_grad_norm > 0.0 { (self.cfg.max_grad_norm / (grad_norm + 1e-6)).min(1.0) } else { 1.0 };
            self.cursor.taken += 1;
            self.apply(model, grads_acc, lr, clip, self.cursor.taken)?;
        }
        self.cursor.step += 1;
        Ok(StepReport { step: self.cursor.step, total_steps: self.total_steps, loss, lr, grad_norm, tokens, skipped, dpo })
    }

    fn apply(&mut self, model: &mut Model, grads: Vec<Option<Tensor<2>>>, lr: f64, clip: f64, t: usize) -> Result<()> {
        let c = &self.cfg;
        let mut slots = slots(model, &self.params)?;
        for (((g, slot), moments), param) in grads.into_iter().zip(slots.iter_mut()).zip(self.moments.iter_mut()).zip(&self.params) {
            let Some(g) = g else { continue };
            let weight_decay = if decays(param) { c.weight_decay } else { 0.0 };
            {
                let cur = slot.value().detach();
                let next = match c.optimizer {
                    Optimizer::Sgd => {
                        let g = if clip < 1.0 { g * clip } else { g };
                        let decayed = if weight_decay > 0.0 { cur.clone() * (1.0 - lr * weight_decay) } else { cur.clone() };
                        decayed - g * lr
                    }
                    Optimizer::Adamw => {
                        // Moments start at zero: β·0 + x is x exactly, as torch's first step.
                        let (m, v) = match moments.take() {
                            Some(Moments { m, v }) => (m, v),
                            None => (g.zeros_like(), g.zeros_like()),
                        };
                        // torch.optim.AdamW's order: denom = √v / √(1 − β₂ᵗ) + ε, step lr / (1 − β₁ᵗ);
                        // one fused pass (a dispatch a parameter on a GPU, not a dozen).
                        let bc1 = 1.0 - c.beta1.powi(t as i32);
                        let bc2 = 1.0 - c.beta2.powi(t as i32);
                        let step = crate::model::fused::AdamwStep {
                            clip: clip.min(1.0) as f32,
                            beta1: c.beta1 as f32,
                            one_minus_beta1: (1.0 - c.beta1) as f32,
                            beta2: c.beta2 as f32,
                            one_minus_beta2: (1.0 - c.beta2) as f32,
                            sqrt_bc2: bc2.sqrt() as f32,
                            eps: c.eps as f32,
                            decay: (1.0 - lr * weight_decay) as f32,
                            step: (lr / bc1) as f32,
                        };
                        let [next, m, v] = crate::model::fused::adamw(cur, g, m, v, step);
                        *moments = Some(Moments { m, v });
                        next
                    }
                };
                slot.set(next);
            }
        }
        Ok(())
    }

    /// Make the trained tensors plain values again (untracked by autodiff), as a run ends: a model
    /// whose adapters still require grad makes every later forward pass (generation, a task
    /// metric) record a graph that nothing frees. The next step tracks them again.
    pub fn release(&self, model: &mut Model) -> Result<()> {
        for mut slot in slots(model, &self.params)? {
            let v = slot.value().detach();
            slot.set_untracked(v);
        }
        Ok(())
    }

    /// Track every trained tensor (the state `new` leaves them in, undone by `release`).
    fn track(&self, model: &mut Model) -> Result<()> {
        for mut slot in slots(model, &self.params)? {
            if !slot.value().is_require_grad() {
                let v = slot.value();
                slot.set(v);
            }
        }
        Ok(())
    }

    /// Token-weighted mean loss over batches, without updating anything. On an autodiff device a
    /// forward keeps its graph (every activation) alive until the next backward, which an
    /// evaluation never runs: measured on the built-in model, 4 × 64 tokens held 28 MiB until the
    /// next training step. So the trainable tensors are detached for the pass (nothing to track),
    /// and a tiny backward afterwards lets burn free the pass's nodes at once.
    pub async fn evaluate(&self, model: &mut Model, examples: &[Example]) -> Result<f64> {
        let mut kept = Vec::new();
        for slot in slots(model, &self.params)?.iter_mut() {
            let tracked = slot.value().is_require_grad();
            let v = slot.value().detach();
            slot.set_untracked(v.clone());
            kept.push((v, tracked));
        }
        let result = if self.cfg.method == Method::Dpo {
            preference::evaluate(model, examples, self.cfg.batch_size, self.cfg.seq_len, self.cfg.dpo_beta).await.map(|v| (v[0], 0.0))
        } else {
            evaluate_examples(model, examples, self.cfg.batch_size, self.cfg.seq_len).await
        };
        for (mut slot, (v, tracked)) in slots(model, &self.params)?.into_iter().zip(kept) {
            if tracked { slot.set(v) } else { slot.set_untracked(v) }
        }
        // burn's autodiff frees the graph nodes of finished passes when a backward runs; a tiny
        // one lets the evaluation's activations go now rather than at the next step.
        let _ = Tensor::<1>::zeros([1], &self.device).require_grad().sum().backward();
        Ok(result?.0)
    }

    /// Record a validation loss; returns true when it is the best so far.
    pub fn record_eval(&mut self, valid_loss: f64) -> bool {
        if self.cursor.best_valid.is_none_or(|b| valid_loss < b) {
            self.cursor.best_valid = Some(valid_loss);
            self.cursor.evals_since_best = 0;
            true
        } else {
            self.cursor.evals_since_best += 1;
            false
        }
    }

    pub fn should_stop_early(&self) -> bool {
        self.cfg.patience > 0 && self.cursor.evals_since_best >= self.cfg.patience
    }

    /// The optimizer state as named tensors (for checkpoints): `m.<i>`, `v.<i>`.
    pub async fn optimizer_state(&self) -> Result<Vec<(String, Vec<f32>, [usize; 2])>> {
        let mut out = Vec::new();
        for (i, m) in self.moments.iter().enumerate() {
            if let Some(Moments { m, v }) = m {
                out.push((format!("m.{i}"), read_f32(m.clone()).await?, m.dims()));
                out.push((format!("v.{i}"), read_f32(v.clone()).await?, v.dims()));
            }
        }
        Ok(out)
    }

    /// Restore the optimizer state and the cursor saved by a checkpoint. Every moment must name
    /// one of this run's parameters and have its shape: a checkpoint of another run is refused
    /// before anything is allocated from it.
    pub fn restore(&mut self, model: &mut Model, cursor: Cursor, state: Vec<(String, Vec<f32>, [usize; 2])>) -> Result<()> {
        let shapes: Vec<[usize; 2]> = slots(model, &self.params)?.iter().map(|s| s.value().dims()).collect();
        let mismatch = |why: String| {
            Error::input(format!("the checkpoint's optimizer state does not match this run's parameters: {why}"))
        };
        let mut m_parts = std::collections::HashMap::new();
        let mut v_parts = std::collections::HashMap::new();
        for (name, values, shape) in state {
            let (kind, idx) = name.split_once('.').ok_or_else(|| mismatch(format!("unknown tensor {name}")))?;
            let idx: usize = idx.parse().map_err(|_| mismatch(format!("unknown tensor {name}")))?;
            let Some(&want) = shapes.get(idx) else {
                return Err(mismatch(format!("{name} names parameter {idx}, and the run has {}", shapes.len())));
            };
            if shape != want || values.len() != want[0] * want[1] {
                return Err(mismatch(format!("{name} has shape {shape:?} ({} values), the parameter {want:?}", values.len())));
            }
            let t = Tensor::<2>::from_data(TensorData::new(values, shape), &self.device);
            match kind {
                "m" => m_parts.insert(idx, t),
                "v" => v_parts.insert(idx, t),
                _ => return Err(mismatch(format!("unknown tensor {name}"))),
            };
        }
        for (i, slot) in self.moments.iter_mut().enumerate() {
            *slot = match (m_parts.remove(&i), v_parts.remove(&i)) {
                (Some(m), Some(v)) => Some(Moments { m, v }),
                _ => None,
            };
        }
        self.epoch_batches = self.batches_for_epoch(cursor.epoch);
        self.cursor = cursor;
        Ok(())
    }
}

/// Whether weight decay applies, as Hugging Face's Trainer decides (`get_decay_parameter_names`):
/// not to biases, nor to the weights of norm layers (LayerNorm, RMSNorm); LoRA factors decay.
fn decays(param: &ParamRef) -> bool {
    match param {
        ParamRef::Lora { .. } => true,
        ParamRef::Weight(key) => {
            let module = key.rsplit_once('.').map_or(key.as_str(), |(m, _)| m);
            let leaf = module.rsplit('.').next().unwrap_or(module);
            !(key.ends_with(".bias") || leaf.contains("norm") || leaf.starts_with("ln_"))
        }
    }
}

fn set_training(model: &mut Model, on: bool) {
    for (_, linear) in model.arch.linears_mut() {
        for a in &mut linear.adapters {
            a.training = on;
        }
    }
}
