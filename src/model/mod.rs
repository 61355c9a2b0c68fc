//! Transformers loaded from Hugging Face files: configuration, weights, tokenizer, and the
//! forward pass of each architecture. `Model::forward` is the one entry point.

pub mod config;
mod decode;
mod forms;
pub mod fused;
pub mod gguf;
pub mod gguf_quant;
mod gguf_tokenizer;
pub mod gguf_write;
pub mod gpt2;
pub mod init;
pub mod keys;
pub mod layers;
pub mod llama;
pub mod load;
pub mod tokenizer;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

pub use config::ModelConfig;
pub use layers::KvCache;
pub use load::ModelFiles;
pub use tokenizer::Tokenizer;

use crate::{Error, Result};

/// One architecture's modules. A variant is a type, not a flag in `forward`.
#[derive(Clone, Debug)]
pub enum Arch {
    Gpt2(gpt2::Gpt2),
    Llama(llama::Llama),
}

/// A model ready to run: its config, modules and tokenizer, on one device.
pub struct Model {
    pub config: ModelConfig,
    pub arch: Arch,
    pub tokenizer: Tokenizer,
    pub device: Device,
    pub summary: ModelSummary,
    /// The original non-weight files and the weights' storage dtype, so the model can be saved
    /// back as a Hugging Face folder.
    pub source: Source,
}

#[derive(Clone, Debug)]
pub struct Source {
    pub config: String,
    pub tokenizer: Option<Vec<u8>>,
    pub tokenizer_config: Option<String>,
    pub generation_config: Option<String>,
    /// `chat_template.jinja`, when the model came with one.
    pub chat_template: Option<String>,
    pub dtype: safetensors::Dtype,
}

/// What the page and the CLI show about a model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub model_type: String,
    pub parameters: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hidden: usize,
    pub vocab_size: usize,
    pub context: usize,
    /// Bytes of the weight files as stored (f16 files are half of the f32 in memory).
    pub file_bytes: usize,
    /// Bytes of the weights in f32.
    pub f32_bytes: usize,
    /// Bytes of the weights as the engine holds them on the device (f32, and 4-bit buffers for
    /// quantized linear weights).
    pub base_bytes: usize,
    /// `nf4` or `fp4` (with `+dq` for double quantization), or a GGUF file's `q4_0`, `q4_1` or
    /// `q4_k`, when the linear weights are 4-bit; a GGUF file's `q8_0` or `q6_k` when they are kept
    /// in 8-bit codes.
    pub quantization: Option<String>,
    pub tied_embeddings: bool,
    /// A GGUF file's `q8_0`, `q6_k`, ... when the token embedding is kept in 8-bit codes, and what
    /// an untied output head is kept in (`q8_0, the output head too`).
    pub embedding_quantization: Option<String>,
}

impl Model {
    /// Load a model from its files onto `device`.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Model> {
        let config = ModelConfig::from_json(&files.config)?;
        let raw: serde_json::Value = serde_json::from_str(&files.config).unwrap_or_default();
        let mut tokenizer = Tokenizer::from_files(
            files.tokenizer.as_deref(),
            files.tokenizer_config.as_deref(),
            files.generation_config.as_deref(),
            &raw,
            config.vocab_size(),
        )?;
        if tokenizer.chat_template.is_none() {
            tokenizer.chat_template = files.chat_template.clone();
        }
        let arch = load::build(files, &config, device)?;
        let parameters = count_parameters(&arch);
        let summary = ModelSummary {
            model_type: config.model_type().to_string(),
            parameters,
            layers: config.layers(),
            heads: config.heads(),
            kv_heads: config.kv_heads(),
            hidden: config.hidden(),
            vocab_size: config.vocab_size(),
            context: match &arch {
                Arch::Llama(l) => llama::Llama::context_of(&l.config),
                Arch::Gpt2(_) => config.context(),
            },
            file_bytes: files.weight_bytes(),
            f32_bytes: parameters * 4,
            base_bytes: base_bytes(&arch),
            quantization: None,
            tied_embeddings: config.tie_word_embeddings(),
            embedding_quantization: None,
        };
        let source = Source {
            config: files.config.clone(),
            tokenizer: files.tokenizer.clone(),
            tokenizer_config: files.tokenizer_config.clone(),
            generation_config: files.generation_config.clone(),
            chat_template: files.chat_template.clone(),
            dtype: load::storage_dtype(files),
        };
        let mut model = Model { config, arch, tokenizer, device: device.clone(), summary, source };
        model.refresh_summary();
        Ok(model)
    }

    /// Recompute what the summary says about storage after the weights changed form.
    pub fn refresh_summary(&mut self) {
        self.summary.base_bytes = base_bytes(&self.arch);
        self.summary.quantization = self
            .quantization()
            .map(|q| format!("{}{}", q.quant_type.name(), if q.double_quant { "+dq" } else { "" }))
            .or_else(|| self.kept8_names());
        self.summary.embedding_quantization = match &self.arch {
            Arch::Llama(m) => {
                let embed = match &m.embed_tokens {
                    layers::Embedding::Q8(q) => Some(q.kind.name().to_lowercase()),
                    layers::Embedding::Dense(_) => None,
                };
                let head = m.lm_head.as_ref().and_then(|h| match &h.base {
                    layers::Base::Q8(q) => Some(q.kind.name().to_lowercase()),
                    _ => None,
                });
                match (embed, head) {
                    (Some(e), Some(h)) if e == h => Some(format!("{e}, the output head too")),
                    (Some(e), Some(h)) => Some(format!("{e}, the output head in {h}")),
                    (Some(e), None) => Some(e),
                    (None, Some(h)) => Some(format!("f32, the output head in {h}")),
                    (None, None) => None,
                }
            }
            Arch::Gpt2(_) => None,
        };
    }

    /// Load a model folder natively.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path, device: &Device) -> Result<Model> {
        Model::load(&ModelFiles::from_dir(dir)?, device)
    }

    /// The token that pads a row out to its batch's length: the first end-of-sequence id (0 when
    /// the tokenizer names none). It carries no loss, and the attention mask hides it.
    pub fn pad_id(&self) -> u32 {
        self.tokenizer.eos_ids.first().copied().unwrap_or(0)
    }

    /// The longest sequence this model can process.
    pub fn context(&self) -> usize {
        self.summary.context
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.layers())
    }

    /// The logits `[V]` after one more token of the one sequence `cache` holds, by the CPU
    /// engine's decoding step on the model's buffers (`decode.rs`), equal to `forward`'s last
    /// row; None where that step does not apply (then nothing changed: call `forward`).
    pub fn decode_one(&self, id: u32, cache: &mut KvCache) -> Option<Vec<f32>> {
        match &self.arch {
            Arch::Llama(m) => m.decode_one(id, cache),
            Arch::Gpt2(_) => None,
        }
    }

    /// ids `[B, T]` → logits `[B, T, V]`. `pad[b][s]` (over cached + new tokens) hides padding.
    pub fn forward(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>, pad: Option<&[Vec<bool>]>) -> Tensor<3> {
        match &self.arch {
            Arch::Gpt2(m) => m.forward(ids, cache, pad),
            Arch::Llama(m) => m.forward(ids, cache, pad),
        }
    }

    /// ids `[B, T]` → the final norm's output `[B, T, C]`: `forward` without the output head, for
    /// a loss that needs only some rows' logits (`head`).
    pub fn hidden(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>, pad: Option<&[Vec<bool>]>) -> Tensor<3> {
        match &self.arch {
            Arch::Gpt2(m) => m.hidden(ids, cache, pad),
            Arch::Llama(m) => m.hidden(ids, cache, pad),
        }
    }

    /// The output head: rows `[N, C]` of `hidden` → logits `[N, V]`, as `forward` computes them.
    pub fn head(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.arch {
            Arch::Gpt2(m) => m.head(x),
            Arch::Llama(m) => m.head(x),
        }
    }

    /// Token ids from outside (a caller, the page, a file) checked before they reach the model:
    /// at least one, at most the context, each below the vocabulary size. An id past the
    /// embedding table would otherwise read out of bounds on the GPU or panic on the CPU.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::input("no token ids: give at least one"));
        }
        if ids.len() > self.context() {
            return Err(Error::input(format!(
                "{} token ids are more than the model's context of {}",
                ids.len(),
                self.context()
            )));
        }
        let v = self.config.vocab_size();
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, id)| **id as usize >= v) {
            return Err(Error::input(format!(
                "token id {id} (at position {i}) is not below the vocabulary size {v}: the ids come from another tokenizer"
            )));
        }
        Ok(())
    }

    /// A `[B, T]` tensor of token ids.
    pub fn ids(&self, rows: &[Vec<u32>]) -> Tensor<2, Int> {
        let t = rows.first().map_or(0, |r| r.len());
        let flat: Vec<i32> = rows.iter().flatten().map(|&x| x as i32).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), t]), &self.device)
    }

    /// Sum of next-token cross-entropy over one sequence, and the number of predictions:
    /// token t+1 is predicted from tokens ≤ t, so a sequence of n tokens makes n-1 predictions.
    pub async fn sequence_nll(&self, ids: &[u32]) -> Result<(f64, usize)> {
        if ids.len() < 2 {
            return Ok((0.0, 0));
        }
        if ids.len() > self.context() {
            return Err(Error::input(format!(
                "a sequence of {} tokens is longer than the model's context of {}",
                ids.len(),
                self.context()
            )));
        }
        self.check_ids(ids)?;
        let n = ids.len() - 1;
        let logits = self.forward(self.ids(&[ids[..n].to_vec()]), None, None);
        let v = self.config.vocab_size();
        let logp = burn::tensor::activation::log_softmax(logits.reshape([n, v]), 1);
        let targets: Vec<i32> = ids[1..].iter().map(|&x| x as i32).collect();
        let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &self.device);
        let picked = logp.gather(1, targets).sum();
        let total = read_f32(picked).await?;
        Ok((-(total[0] as f64), n))
    }
}

impl Arch {
    /// Every linear layer with its Hugging Face module path, as PEFT names it
    /// (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`). The output head is
    /// not among them, as with PEFT's `all-linear`.
    pub fn linears(&self) -> Vec<(String, &layers::Linear)> {
        match self {
            Arch::Gpt2(m) => m
                .blocks
                .iter()
                .enumerate()
                .flat_map(|(i, b)| {
                    let p = format!("transformer.h.{i}");
                    [
                        (format!("{p}.attn.c_attn"), &b.c_attn),
                        (format!("{p}.attn.c_proj"), &b.attn_c_proj),
                        (format!("{p}.mlp.c_fc"), &b.c_fc),
                        (format!("{p}.mlp.c_proj"), &b.mlp_c_proj),
                    ]
                })
                .collect(),
            Arch::Llama(m) => m
                .layers
                .iter()
                .enumerate()
                .flat_map(|(i, l)| {
                    let p = format!("model.layers.{i}");
                    [
                        (format!("{p}.self_attn.q_proj"), &l.q_proj),
                        (format!("{p}.self_attn.k_proj"), &l.k_proj),
                        (format!("{p}.self_attn.v_proj"), &l.v_proj),
                        (format!("{p}.self_attn.o_proj"), &l.o_proj),
                        (format!("{p}.mlp.gate_proj"), &l.gate_proj),
                        (format!("{p}.mlp.up_proj"), &l.up_proj),
                        (format!("{p}.mlp.down_proj"), &l.down_proj),
                    ]
                })
                .collect(),
        }
    }

    pub fn linears_mut(&mut self) -> Vec<(String, &mut layers::Linear)> {
        match self {
            Arch::Gpt2(m) => m
                .blocks
                .iter_mut()
                .enumerate()
                .flat_map(|(i, b)| {
                    let p = format!("transformer.h.{i}");
                    [
                        (format!("{p}.attn.c_attn"), &mut b.c_attn),
                        (format!("{p}.attn.c_proj"), &mut b.attn_c_proj),
                        (format!("{p}.mlp.c_fc"), &mut b.c_fc),
                        (format!("{p}.mlp.c_proj"), &mut b.mlp_c_proj),
                    ]
                })
                .collect(),
            Arch::Llama(m) => m
                .layers
                .iter_mut()
                .enumerate()
                .flat_map(|(i, l)| {
                    let p = format!("model.layers.{i}");
                    [
                        (format!("{p}.self_attn.q_proj"), &mut l.q_proj),
                        (format!("{p}.self_attn.k_proj"), &mut l.k_proj),
                        (format!("{p}.self_attn.v_proj"), &mut l.v_proj),
                        (format!("{p}.self_attn.o_proj"), &mut l.o_proj),
                        (format!("{p}.mlp.gate_proj"), &mut l.gate_proj),
                        (format!("{p}.mlp.up_proj"), &mut l.up_proj),
                        (format!("{p}.mlp.down_proj"), &mut l.down_proj),
                    ]
                })
                .collect(),
        }
    }

    /// GPT-2 stores its linear layers as `Conv1D` (PEFT's `fan_in_fan_out`).
    pub fn fan_in_fan_out(&self) -> bool {
        matches!(self, Arch::Gpt2(_))
    }
}

impl Model {
    /// Checkpoint keys of the weights that train in full (`None`) or partial finetuning (blocks
    /// from `from_layer` on, and the final norm).
    pub fn weight_keys(&mut self, from_layer: Option<usize>) -> Vec<String> {
        keys::weights_mut(&mut self.arch, from_layer).into_iter().map(|(k, _)| k).collect()
    }

    /// Apply `f` to the weight `key`, seen as a matrix (a vector as `[1, n]`).
    pub fn with_weight_mut<R>(&mut self, key: &str, f: impl FnOnce(&mut Tensor<2>) -> R) -> Result<R> {
        for (k, w) in keys::weights_mut(&mut self.arch, None) {
            if k == key {
                return Ok(match w {
                    keys::WeightMut::Quant(_) => {
                        return Err(Error::input(format!("the weight \"{key}\" is stored in 4 bits and cannot be changed in place")));
                    }
                    keys::WeightMut::Q8(_) => {
                        return Err(Error::input(format!("the weight \"{key}\" is stored in 8-bit codes and cannot be changed in place")));
                    }
                    keys::WeightMut::Matrix(t) => f(t),
                    keys::WeightMut::Vector(t) => {
                        let n = t.dims()[0];
                        let mut as_matrix = t.clone().reshape([1, n]);
                        let r = f(&mut as_matrix);
                        // Keep the stored vector a leaf, so autodiff gives it its own gradient.
                        let tracked = as_matrix.is_require_grad();
                        let v = as_matrix.detach().reshape([n]).detach();
                        *t = if tracked { v.require_grad() } else { v };
                        r
                    }
                });
            }
        }
        Err(Error::input(format!("the model has no weight \"{key}\"")))
    }

    /// Every weight by checkpoint key, mutably (what full finetuning trains).
    pub fn weights_mut(&mut self) -> Vec<(String, keys::WeightMut<'_>)> {
        keys::weights_mut(&mut self.arch, None)
    }

    /// The model as a Hugging Face folder's files (config.json, model.safetensors, tokenizer
    /// files), weights in the dtype the model was loaded from. Adapters are not included: merge
    /// them first. Refuses non-finite weights.
    /// 4-bit weights are written in bitsandbytes' serialization, and `config.json` then carries
    /// the matching `quantization_config`; those kept from a GGUF file (Q4_0, Q4_1, Q4_K, Q8_0,
    /// Q6_K) are written as float weights, their values as the file holds them.
    pub async fn save_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.save_files_as(self.source.dtype).await
    }

    /// `save_files` with the float weights in `dtype` (f32, f16 or bf16).
    pub async fn save_files_as(&self, dtype: safetensors::Dtype) -> Result<Vec<(String, Vec<u8>)>> {
        let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut quant: Option<crate::quant::bnb::QuantConfig> = None;
        for (key, saved) in keys::checkpoint_tensors(&self.arch) {
            let (values, shape) = match saved {
                keys::Saved::Quant(q) => {
                    let q = q.to_quant4().await?;
                    if q.quant_type.is_gguf() {
                        // GGUF's Q4_0 and Q4_1 have no safetensors serialization that transformers
                        // reads: saved as float weights in `dtype`, the values the file holds.
                        (q.dequantize(), q.shape.to_vec())
                    } else {
                        quant = Some(crate::quant::bnb::QuantConfig { quant_type: q.quant_type, double_quant: q.double_quant() });
                        let prefix = key.strip_suffix(".weight").unwrap_or(&key);
                        tensors.extend(crate::quant::bnb::write(prefix, &q));
                        continue;
                    }
                }
                // Q8_0 and Q6_K likewise: float weights, the values the file holds.
                keys::Saved::Q8(q) => (q.dequantize(), q.shape.to_vec()),
                keys::Saved::Vector(t) => {
                    let n = t.dims()[0];
                    (read_f32(t).await?, vec![n])
                }
                keys::Saved::Matrix(t) => {
                    let [r, c] = t.dims();
                    (read_f32(t).await?, vec![r, c])
                }
                keys::Saved::Transposed(t) => {
                    let [r, c] = t.dims();
                    (load::transpose(&read_f32(t).await?, r, c), vec![c, r])
                }
            };
            if values.iter().any(|v| !v.is_finite()) {
                return Err(Error::input(format!("weight {key} has NaN or infinite values; refusing to save it")));
            }
            tensors.push((key, dtype, shape, load::encode_values(&values, dtype)));
        }
        let weights = load::serialize_typed(&tensors, "model.safetensors")?;
        let mut config: serde_json::Value = serde_json::from_str(&self.source.config)
            .map_err(|e| Error::input(format!("config.json is not valid JSON: {e}")))?;
        match (quant, config.as_object_mut()) {
            (Some(q), Some(c)) => {
                c.insert("quantization_config".into(), q.to_config());
            }
            (None, Some(c)) => {
                c.remove("quantization_config");
            }
            _ => {}
        }
        let config = serde_json::to_string_pretty(&config).expect("config serialises");
        let mut files = vec![("config.json".to_string(), config.into_bytes()), ("model.safetensors".to_string(), weights)];
        if let Some(t) = &self.source.tokenizer {
            files.push(("tokenizer.json".into(), t.clone()));
        }
        if let Some(t) = &self.source.tokenizer_config {
            files.push(("tokenizer_config.json".into(), t.clone().into_bytes()));
        }
        if let Some(t) = &self.source.generation_config {
            files.push(("generation_config.json".into(), t.clone().into_bytes()));
        }
        if let Some(t) = &self.source.chat_template {
            files.push(("chat_template.jinja".into(), t.clone().into_bytes()));
        }
        Ok(files)
    }
}

fn count_parameters(arch: &Arch) -> usize {
    let n = |t: &Tensor<2>| t.dims().iter().product::<usize>();
    let lin = |l: &layers::Linear| l.d_in() * l.d_out() + l.bias.as_ref().map_or(0, |b| b.dims()[0]);
    match arch {
        Arch::Gpt2(m) => {
            let ln = |l: &layers::LayerNorm| 2 * l.weight.dims()[0];
            let blocks: usize = m
                .blocks
                .iter()
                .map(|b| ln(&b.ln_1) + ln(&b.ln_2) + lin(&b.c_attn) + lin(&b.attn_c_proj) + lin(&b.c_fc) + lin(&b.mlp_c_proj))
                .sum();
            let head = m.lm_head.as_ref().map_or(0, n);
            n(&m.wte) + n(&m.wpe) + blocks + ln(&m.ln_f) + head
        }
        Arch::Llama(m) => {
            let layers: usize = m
                .layers
                .iter()
                .map(|l| {
                    2 * m.config.hidden_size
                        + [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj]
                            .iter()
                            .map(|x| lin(x))
                            .sum::<usize>()
                })
                .sum();
            let head = m.lm_head.as_ref().map_or(0, lin);
            let [v, c] = m.embed_tokens.dims();
            v * c + layers + m.config.hidden_size + head
        }
    }
}

/// Bytes the model's weights occupy on the device: f32 tensors at 4 bytes a value, 4-bit
/// weights at the size of their packed buffers.
fn base_bytes(arch: &Arch) -> usize {
    let mut total = 0;
    for (_, saved) in keys::checkpoint_tensors(arch) {
        total += match saved {
            keys::Saved::Vector(t) => t.dtype().size() * t.dims()[0],
            keys::Saved::Matrix(t) | keys::Saved::Transposed(t) => t.dtype().size() * t.dims().iter().product::<usize>(),
            keys::Saved::Quant(q) => q.layout.bytes(),
            keys::Saved::Q8(q) => q.storage_bytes(),
        };
    }
    total
}

/// Read a tensor back to the host without blocking (required in the browser).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data_async()
        .await
        .map_err(|e| Error::device(format!("reading a tensor back from the device failed: {e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| Error::device(format!("tensor data is not f32: {e:?}")))
}
