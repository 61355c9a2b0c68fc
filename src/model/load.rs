//! Reading a Hugging Face model folder: `config.json`, `model.safetensors` (or the shards named
//! by `model.safetensors.index.json`), `tokenizer.json`, and `generation_config.json` /
//! `tokenizer_config.json` when present. Works on a folder natively and on files picked in the
//! page. f16 and bf16 weights are upcast to f32 here, once.
//!
//! Every rename and transpose between checkpoint keys and our modules is in the `gpt2` and
//! `llama` functions at the bottom of this file, and nowhere else.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use super::config::{Gpt2Config, LlamaConfig, ModelConfig};
use super::layers::{Base, LayerNorm, Linear, RmsNorm};
use crate::quant::{Q4Tensor, bnb};
use crate::{Error, Result};

/// The files of one model, by name.
#[derive(Default)]
pub struct ModelFiles {
    pub config: String,
    pub tokenizer: Option<Vec<u8>>,
    pub tokenizer_config: Option<String>,
    pub generation_config: Option<String>,
    /// `chat_template.jinja`, which newer checkpoints ship beside tokenizer_config.json.
    pub chat_template: Option<String>,
    /// Safetensors files in load order, with their file names.
    pub weights: Vec<(String, Vec<u8>)>,
}

impl ModelFiles {
    /// Read a model folder, or a `.gguf` file.
    pub fn from_dir(dir: &Path) -> Result<ModelFiles> {
        if dir.is_file() && dir.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            let bytes = std::fs::read(dir).map_err(|e| Error::io(dir, e))?;
            return super::gguf::to_model_files(&bytes).map_err(|e| match e {
                Error::Input(m) => Error::Input(format!("{}: {m}", dir.display())),
                other => other,
            });
        }
        if !dir.is_dir() {
            return Err(Error::input(format!(
                "model folder '{}' does not exist (it should hold config.json, *.safetensors and tokenizer.json)",
                dir.display()
            )));
        }
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| Error::io(dir.join(name), e));
        let optional = |name: &str| -> Result<Option<Vec<u8>>> {
            let p = dir.join(name);
            if p.exists() { read(name).map(Some) } else { Ok(None) }
        };
        let mut named = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".safetensors") || name == "model.safetensors.index.json" {
                named.push((name.clone(), read(&name)?));
            }
        }
        for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"] {
            if let Some(bytes) = optional(name)? {
                named.push((name.to_string(), bytes));
            }
        }
        ModelFiles::from_named(named).map_err(|e| match e {
            Error::Input(m) => Error::Input(format!("{}: {m}", dir.display())),
            other => other,
        })
    }

    /// Sort named files (as picked in the page) into their roles. Unknown files are ignored.
    pub fn from_named(files: Vec<(String, Vec<u8>)>) -> Result<ModelFiles> {
        // A GGUF file holds the whole model (config, tokenizer, weights) by itself.
        if let Some((_, bytes)) = files.iter().find(|(n, b)| n.to_ascii_lowercase().ends_with(".gguf") || super::gguf::is_gguf(b)) {
            return super::gguf::to_model_files(bytes);
        }
        let mut out = ModelFiles::default();
        let mut config = None;
        let mut index = None;
        let mut shards: HashMap<String, Vec<u8>> = HashMap::new();
        let text = |name: &str, bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| Error::input(format!("{name} is not UTF-8 text")))
        };
        for (name, bytes) in files {
            let base = name.rsplit(['/', '\\']).next().unwrap_or(&name).to_string();
            match base.as_str() {
                "config.json" => config = Some(text(&base, bytes)?),
                "tokenizer.json" => out.tokenizer = Some(bytes),
                "tokenizer_config.json" => out.tokenizer_config = Some(text(&base, bytes)?),
                "generation_config.json" => out.generation_config = Some(text(&base, bytes)?),
                "chat_template.jinja" => out.chat_template = Some(text(&base, bytes)?),
                "model.safetensors.index.json" => index = Some(text(&base, bytes)?),
                b if b.ends_with(".safetensors") => {
                    shards.insert(base.clone(), bytes);
                }
                _ => {}
            }
        }
        out.config = config.ok_or_else(|| Error::input("config.json is missing from the model files"))?;
        if let Some(index) = index {
            // Only the shards the index names, in a stable order.
            let v: serde_json::Value = serde_json::from_str(&index)
                .map_err(|e| Error::input(format!("model.safetensors.index.json is not valid JSON: {e}")))?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                Error::input("model.safetensors.index.json has no \"weight_map\" object")
            })?;
            let mut names: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
            names.sort();
            names.dedup();
            for name in names {
                let bytes = shards.remove(&name).ok_or_else(|| {
                    Error::input(format!("model.safetensors.index.json names shard {name}, which is missing"))
                })?;
                out.weights.push((name, bytes));
            }
        } else {
            let mut all: Vec<_> = shards.into_iter().collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            out.weights = all;
        }
        if out.weights.is_empty() {
            return Err(Error::input("no *.safetensors weights among the model files"));
        }
        Ok(out)
    }

    /// The tensor with the most elements: (key, elements). A device must bind it in one buffer.
    pub fn largest_tensor(&self) -> Result<(String, usize)> {
        let mut best = (String::new(), 0);
        for (name, bytes) in &self.weights {
            let st = SafeTensors::deserialize(bytes).map_err(|e| {
                Error::input(format!("{name} is damaged or truncated ({e}); download it again"))
            })?;
            for (key, view) in st.tensors() {
                if bnb::is_state_key(&key) {
                    continue;
                }
                let mut n: usize = view.shape().iter().product();
                if view.dtype() == Dtype::U8 {
                    // A 4-bit weight: two values a byte, dequantized to f32 when used.
                    n *= 2;
                }
                // Ties go to the first key in name order, so the answer does not depend on the
                // order the file lists its tensors in.
                if n > best.1 || (n == best.1 && key < best.0) {
                    best = (key, n);
                }
            }
        }
        Ok(best)
    }

    /// Refuse, with an explanation, a model whose largest tensor (as f32) exceeds what the
    /// device can bind in one storage buffer.
    pub fn check_fits(&self, limits: &crate::device::DeviceLimits) -> Result<()> {
        let (key, n) = self.largest_tensor()?;
        let bytes = n as u64 * 4;
        let limit = limits.tensor_bytes();
        if bytes > limit {
            let mib = |b: u64| b as f64 / 1048576.0;
            return Err(Error::input(format!(
                "tensor \"{key}\" needs {:.2} MiB as f32, more than this GPU can bind in one buffer \
                 (max_storage_buffer_binding_size {:.2} MiB). Use a smaller model, or the CPU path \
                 (add ?gpu=off to the address), which has no such limit",
                mib(bytes),
                mib(limit)
            )));
        }
        Ok(())
    }

    /// Bytes the weights take once loaded, from the safetensors headers alone: f32 for every
    /// tensor, except 4-bit weights and their state, which stay packed as stored.
    pub fn memory_needed(&self) -> Result<u64> {
        let mut total = 0u64;
        for (name, bytes) in &self.weights {
            let st = SafeTensors::deserialize(bytes).map_err(|e| {
                Error::input(format!("{name} is damaged or truncated ({e}); download it again"))
            })?;
            for (key, view) in st.tensors() {
                let n: u64 = view.shape().iter().map(|&d| d as u64).product();
                let packed = view.dtype() == Dtype::U8 || bnb::is_state_key(&key);
                total = total.saturating_add(if packed { view.data().len() as u64 } else { n.saturating_mul(4) });
            }
        }
        Ok(total)
    }

    /// Refuse, before anything is allocated, a model whose loaded weights would not fit in
    /// `budget` bytes; `what` says whose budget it is.
    pub fn check_memory(&self, budget: u64, what: &str) -> Result<()> {
        let need = self.memory_needed()?;
        if need > budget {
            let mib = |b: u64| b as f64 / 1048576.0;
            return Err(Error::input(format!(
                "this model needs about {:.1} MiB for its weights once loaded (f32, 4-bit weights kept packed), \
                 more than the {:.1} MiB {what}. Use a smaller model, or a 4-bit one",
                mib(need),
                mib(budget)
            )));
        }
        Ok(())
    }

    /// Whether these are a quantized checkpoint (config.json has a `quantization_config`).
    pub fn is_quantized(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.config).is_ok_and(|c| c.get("quantization_config").is_some())
    }

    /// Total bytes of the weight files.
    pub fn weight_bytes(&self) -> usize {
        self.weights.iter().map(|(_, b)| b.len()).sum()
    }
}

/// The tensors of all shards, by checkpoint key.
pub struct Weights<'a> {
    tensors: HashMap<String, (&'a str, safetensors::tensor::TensorView<'a>)>,
    device: Device,
}

impl<'a> Weights<'a> {
    pub fn parse(files: &'a ModelFiles, device: &Device) -> Result<Weights<'a>> {
        let mut tensors = HashMap::new();
        for (name, bytes) in &files.weights {
            let st = SafeTensors::deserialize(bytes).map_err(|e| {
                Error::input(format!("{name} is damaged or truncated ({e}); download it again"))
            })?;
            for (key, view) in st.tensors() {
                tensors.insert(key, (name.as_str(), view));
            }
        }
        Ok(Weights { tensors, device: device.clone() })
    }

    /// Find a key, allowing the prefixes checkpoints disagree on (`transformer.` for GPT-2).
    fn find(&self, key: &str) -> Option<&(&'a str, safetensors::tensor::TensorView<'a>)> {
        self.tensors
            .get(key)
            .or_else(|| key.strip_prefix("transformer.").and_then(|k| self.tensors.get(k)))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// A tensor's values as f32, checked against the shape the config implies.
    pub fn values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (file, view) = self.find(key).ok_or_else(|| {
            Error::input(format!("the weights have no tensor \"{key}\": the files do not match config.json"))
        })?;
        if view.shape() != shape {
            return Err(Error::input(format!(
                "{file}: tensor \"{key}\" has shape {:?} but config.json implies {shape:?}",
                view.shape()
            )));
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(Error::input(format!(
                    "{file}: tensor \"{key}\" is {other:?}; tinytune loads f32, f16 and bf16 weights"
                )));
            }
        };
        Ok(values)
    }

    pub fn tensor1(&self, key: &str, n: usize) -> Result<Tensor<1>> {
        Ok(Tensor::from_data(TensorData::new(self.values(key, &[n])?, [n]), &self.device))
    }

    pub fn tensor2(&self, key: &str, rows: usize, cols: usize) -> Result<Tensor<2>> {
        Ok(Tensor::from_data(TensorData::new(self.values(key, &[rows, cols])?, [rows, cols]), &self.device))
    }

    /// The 4-bit weight stored under `<prefix>.weight` (bitsandbytes' serialization), if any.
    fn quant4(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Option<Q4Tensor>> {
        let q = bnb::read(prefix, [d_out, d_in], |k| self.find(k).map(|(_, v)| (v.dtype(), v.shape().to_vec(), v.data())))?;
        Ok(q.map(|q| Q4Tensor::new(&q, &self.device)))
    }

    fn bias(&self, prefix: &str, d_out: usize, bias: bool) -> Result<Option<Tensor<1>>> {
        if bias { Ok(Some(self.tensor1(&format!("{prefix}.bias"), d_out)?)) } else { Ok(None) }
    }

    /// An `nn.Linear` weight (`[out, in]` in the file), transposed to `[in, out]`; or kept in 4
    /// bits when the file stores it so.
    pub fn linear(&self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear> {
        if let Some(q) = self.quant4(prefix, d_in, d_out)? {
            return Ok(Linear::quantized(q, self.bias(prefix, d_out, bias)?));
        }
        Ok(Linear::new(self.dense_linear(prefix, d_in, d_out)?, self.bias(prefix, d_out, bias)?))
    }

    /// An `nn.Linear` weight as f32 `[in, out]` (the output head, which stays unquantized).
    fn dense_linear(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Tensor<2>> {
        let w = self.values(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let mut t = vec![0f32; w.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
        Ok(Tensor::from_data(TensorData::new(t, [d_in, d_out]), &self.device))
    }

    /// A GPT-2 `Conv1D` weight, stored `[in, out]` already; in 4 bits it is stored as
    /// `nn.Linear`'s `[out, in]` (transformers quantizes the transpose).
    pub fn conv1d(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        if let Some(q) = self.quant4(prefix, d_in, d_out)? {
            return Ok(Linear::quantized(q, self.bias(prefix, d_out, true)?));
        }
        Ok(Linear::new(
            self.tensor2(&format!("{prefix}.weight"), d_in, d_out)?,
            Some(self.tensor1(&format!("{prefix}.bias"), d_out)?),
        ))
    }
}

/// GPT-2 checkpoint keys → modules.
pub(super) fn gpt2(w: &Weights, c: &Gpt2Config) -> Result<super::gpt2::Gpt2> {
    use super::gpt2::{Block, Gpt2};
    let (e, v) = (c.n_embd, c.vocab_size);
    let ln = |p: &str| -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: w.tensor1(&format!("{p}.weight"), e)?,
            bias: w.tensor1(&format!("{p}.bias"), e)?,
            eps: c.layer_norm_epsilon,
        })
    };
    let wte = w.tensor2("transformer.wte.weight", v, e)?;
    let blocks = (0..c.n_layer)
        .map(|i| {
            let p = format!("transformer.h.{i}");
            Ok(Block {
                ln_1: ln(&format!("{p}.ln_1"))?,
                c_attn: w.conv1d(&format!("{p}.attn.c_attn"), e, 3 * e)?,
                attn_c_proj: w.conv1d(&format!("{p}.attn.c_proj"), e, e)?,
                ln_2: ln(&format!("{p}.ln_2"))?,
                c_fc: w.conv1d(&format!("{p}.mlp.c_fc"), e, c.n_inner())?,
                mlp_c_proj: w.conv1d(&format!("{p}.mlp.c_proj"), c.n_inner(), e)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Tied unless the config unties it; then the file must carry its own head.
    let lm_head = if c.tie_word_embeddings {
        None
    } else if w.contains("lm_head.weight") {
        Some(w.dense_linear("lm_head", e, v)?)
    } else {
        return Err(Error::input(
            "the weights have no \"lm_head.weight\" and config.json says tie_word_embeddings false",
        ));
    };
    Ok(Gpt2 {
        config: c.clone(),
        wpe: w.tensor2("transformer.wpe.weight", c.n_positions, e)?,
        wte,
        blocks,
        ln_f: ln("transformer.ln_f")?,
        lm_head,
    })
}

/// Llama / Mistral / Qwen2 checkpoint keys → modules.
pub(super) fn llama(w: &Weights, c: &LlamaConfig) -> Result<super::llama::Llama> {
    use super::llama::{Layer, Llama};
    let (e, v, hs) = (c.hidden_size, c.vocab_size, c.head_dim());
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads());
    let rms = |key: &str| -> Result<RmsNorm> { Ok(RmsNorm { weight: w.tensor1(key, e)?, eps: c.rms_norm_eps }) };
    let embed = w.tensor2("model.embed_tokens.weight", v, e)?;
    let layers = (0..c.num_hidden_layers)
        .map(|i| {
            let p = format!("model.layers.{i}");
            Ok(Layer {
                input_layernorm: rms(&format!("{p}.input_layernorm.weight"))?,
                q_proj: w.linear(&format!("{p}.self_attn.q_proj"), e, nh * hs, c.qkv_bias())?,
                k_proj: w.linear(&format!("{p}.self_attn.k_proj"), e, nkv * hs, c.qkv_bias())?,
                v_proj: w.linear(&format!("{p}.self_attn.v_proj"), e, nkv * hs, c.qkv_bias())?,
                o_proj: w.linear(&format!("{p}.self_attn.o_proj"), nh * hs, e, c.o_bias())?,
                post_attention_layernorm: rms(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_proj: w.linear(&format!("{p}.mlp.gate_proj"), e, c.intermediate_size, c.mlp_bias)?,
                up_proj: w.linear(&format!("{p}.mlp.up_proj"), e, c.intermediate_size, c.mlp_bias)?,
                down_proj: w.linear(&format!("{p}.mlp.down_proj"), c.intermediate_size, e, c.mlp_bias)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let lm_head = if w.contains("lm_head.weight") && !c.tie_word_embeddings {
        Some(w.dense_linear("lm_head", e, v)?)
    } else if c.tie_word_embeddings {
        None
    } else {
        return Err(Error::input(
            "the weights have no \"lm_head.weight\" and config.json says tie_word_embeddings false",
        ));
    };
    Ok(Llama::new(c.clone(), embed, layers, rms("model.norm.weight")?, lm_head))
}

/// Build the model `config` describes from the weights.
pub fn build(files: &ModelFiles, config: &ModelConfig, device: &Device) -> Result<super::Arch> {
    // Refuses quantization schemes other than bitsandbytes 4-bit, with a way out.
    let raw: serde_json::Value = serde_json::from_str(&files.config).unwrap_or_default();
    bnb::QuantConfig::from_config(&raw)?;
    let w = Weights::parse(files, device)?;
    Ok(match config {
        ModelConfig::Gpt2(c) => super::Arch::Gpt2(gpt2(&w, c)?),
        ModelConfig::Llama(c) => super::Arch::Llama(llama(&w, c)?),
    })
}

/// One tensor of the model under its checkpoint key, for saving: the inverse of the tables above.
pub(super) enum Saved {
    Vector(Tensor<1>),
    /// Written as it is held.
    Matrix(Tensor<2>),
    /// Held `[in, out]`, written `[out, in]` (an `nn.Linear` weight).
    Transposed(Tensor<2>),
    /// A 4-bit weight, written in bitsandbytes' serialization.
    Quant(Q4Tensor),
}

pub(super) fn checkpoint_tensors(arch: &super::Arch) -> Vec<(String, Saved)> {
    use Saved::*;
    let mut out: Vec<(String, Saved)> = Vec::new();
    let linear = |out: &mut Vec<(String, Saved)>, key: String, l: &Linear, conv1d: bool| {
        let saved = match &l.base {
            Base::Dense(w) if conv1d => Matrix(w.clone()),
            Base::Dense(w) => Transposed(w.clone()),
            Base::Quant(q) => Quant(q.clone()),
        };
        out.push((format!("{key}.weight"), saved));
        if let Some(b) = &l.bias {
            out.push((format!("{key}.bias"), Vector(b.clone())));
        }
    };
    match arch {
        super::Arch::Gpt2(m) => {
            out.push(("transformer.wte.weight".into(), Matrix(m.wte.clone())));
            out.push(("transformer.wpe.weight".into(), Matrix(m.wpe.clone())));
            let ln = |out: &mut Vec<(String, Saved)>, key: String, l: &LayerNorm| {
                out.push((format!("{key}.weight"), Vector(l.weight.clone())));
                out.push((format!("{key}.bias"), Vector(l.bias.clone())));
            };
            for (i, b) in m.blocks.iter().enumerate() {
                let p = format!("transformer.h.{i}");
                ln(&mut out, format!("{p}.ln_1"), &b.ln_1);
                linear(&mut out, format!("{p}.attn.c_attn"), &b.c_attn, true);
                linear(&mut out, format!("{p}.attn.c_proj"), &b.attn_c_proj, true);
                ln(&mut out, format!("{p}.ln_2"), &b.ln_2);
                linear(&mut out, format!("{p}.mlp.c_fc"), &b.c_fc, true);
                linear(&mut out, format!("{p}.mlp.c_proj"), &b.mlp_c_proj, true);
            }
            ln(&mut out, "transformer.ln_f".into(), &m.ln_f);
            if let Some(h) = &m.lm_head {
                out.push(("lm_head.weight".into(), Transposed(h.clone())));
            }
        }
        super::Arch::Llama(m) => {
            out.push(("model.embed_tokens.weight".into(), Matrix(m.embed_tokens.clone())));
            for (i, l) in m.layers.iter().enumerate() {
                let p = format!("model.layers.{i}");
                out.push((format!("{p}.input_layernorm.weight"), Vector(l.input_layernorm.weight.clone())));
                for (name, lin) in [("q_proj", &l.q_proj), ("k_proj", &l.k_proj), ("v_proj", &l.v_proj), ("o_proj", &l.o_proj)] {
                    linear(&mut out, format!("{p}.self_attn.{name}"), lin, false);
                }
                out.push((format!("{p}.post_attention_layernorm.weight"), Vector(l.post_attention_layernorm.weight.clone())));
                for (name, lin) in [("gate_proj", &l.gate_proj), ("up_proj", &l.up_proj), ("down_proj", &l.down_proj)] {
                    linear(&mut out, format!("{p}.mlp.{name}"), lin, false);
                }
            }
            out.push(("model.norm.weight".into(), Vector(m.norm.weight.clone())));
            if let Some(h) = &m.lm_head {
                out.push(("lm_head.weight".into(), Transposed(h.clone())));
            }
        }
    }
    out
}

/// The dtype most of the checkpoint's float tensors are stored in, to save in kind.
pub fn storage_dtype(files: &ModelFiles) -> Dtype {
    let mut counts: Vec<(Dtype, usize)> = Vec::new();
    for (_, bytes) in &files.weights {
        if let Ok(st) = SafeTensors::deserialize(bytes) {
            for (_, v) in st.tensors().into_iter().filter(|(_, v)| matches!(v.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16)) {
                match counts.iter_mut().find(|(d, _)| *d == v.dtype()) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((v.dtype(), 1)),
                }
            }
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map_or(Dtype::F32, |(d, _)| d)
}

/// Serialise values as `dtype` (f32, f16 or bf16) little-endian bytes.
pub fn encode_values(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

/// A mutable view of one weight, for training every parameter (full and partial finetuning).
pub enum WeightMut<'a> {
    Vector(&'a mut Tensor<1>),
    Matrix(&'a mut Tensor<2>),
    /// A 4-bit weight: frozen, it cannot train (dequantize the model first).
    Quant(&'a mut Q4Tensor),
}

impl WeightMut<'_> {
    pub fn numel(&self) -> usize {
        match self {
            WeightMut::Vector(t) => t.dims()[0],
            WeightMut::Matrix(t) => t.dims().iter().product(),
            WeightMut::Quant(q) => q.layout.numel(),
        }
    }
}

/// Every weight by checkpoint key, mutably; with `from_layer`, only blocks from that index on
/// and the final norm (partial finetuning).
pub(super) fn weights_mut(arch: &mut super::Arch, from_layer: Option<usize>) -> Vec<(String, WeightMut<'_>)> {
    use WeightMut::*;
    let mut out: Vec<(String, WeightMut<'_>)> = Vec::new();
    let keep = |i: usize| from_layer.is_none_or(|f| i >= f);
    fn lin<'a>(out: &mut Vec<(String, WeightMut<'a>)>, key: String, l: &'a mut Linear) {
        let w = match &mut l.base {
            Base::Dense(w) => WeightMut::Matrix(w),
            Base::Quant(q) => WeightMut::Quant(q),
        };
        out.push((format!("{key}.weight"), w));
        if let Some(b) = &mut l.bias {
            out.push((format!("{key}.bias"), WeightMut::Vector(b)));
        }
    }
    match arch {
        super::Arch::Gpt2(m) => {
            if from_layer.is_none() {
                out.push(("transformer.wte.weight".into(), Matrix(&mut m.wte)));
                out.push(("transformer.wpe.weight".into(), Matrix(&mut m.wpe)));
                if let Some(h) = &mut m.lm_head {
                    out.push(("lm_head.weight".into(), Matrix(h)));
                }
            }
            for (i, b) in m.blocks.iter_mut().enumerate().filter(|(i, _)| keep(*i)) {
                let p = format!("transformer.h.{i}");
                out.push((format!("{p}.ln_1.weight"), Vector(&mut b.ln_1.weight)));
                out.push((format!("{p}.ln_1.bias"), Vector(&mut b.ln_1.bias)));
                lin(&mut out, format!("{p}.attn.c_attn"), &mut b.c_attn);
                lin(&mut out, format!("{p}.attn.c_proj"), &mut b.attn_c_proj);
                out.push((format!("{p}.ln_2.weight"), Vector(&mut b.ln_2.weight)));
                out.push((format!("{p}.ln_2.bias"), Vector(&mut b.ln_2.bias)));
                lin(&mut out, format!("{p}.mlp.c_fc"), &mut b.c_fc);
                lin(&mut out, format!("{p}.mlp.c_proj"), &mut b.mlp_c_proj);
            }
            out.push(("transformer.ln_f.weight".into(), Vector(&mut m.ln_f.weight)));
            out.push(("transformer.ln_f.bias".into(), Vector(&mut m.ln_f.bias)));
        }
        super::Arch::Llama(m) => {
            if from_layer.is_none() {
                out.push(("model.embed_tokens.weight".into(), Matrix(&mut m.embed_tokens)));
                if let Some(h) = &mut m.lm_head {
                    out.push(("lm_head.weight".into(), Matrix(h)));
                }
            }
            for (i, l) in m.layers.iter_mut().enumerate().filter(|(i, _)| keep(*i)) {
                let p = format!("model.layers.{i}");
                out.push((format!("{p}.input_layernorm.weight"), Vector(&mut l.input_layernorm.weight)));
                lin(&mut out, format!("{p}.self_attn.q_proj"), &mut l.q_proj);
                lin(&mut out, format!("{p}.self_attn.k_proj"), &mut l.k_proj);
                lin(&mut out, format!("{p}.self_attn.v_proj"), &mut l.v_proj);
                lin(&mut out, format!("{p}.self_attn.o_proj"), &mut l.o_proj);
                out.push((format!("{p}.post_attention_layernorm.weight"), Vector(&mut l.post_attention_layernorm.weight)));
                lin(&mut out, format!("{p}.mlp.gate_proj"), &mut l.gate_proj);
                lin(&mut out, format!("{p}.mlp.up_proj"), &mut l.up_proj);
                lin(&mut out, format!("{p}.mlp.down_proj"), &mut l.down_proj);
            }
            out.push(("model.norm.weight".into(), Vector(&mut m.norm.weight)));
        }
    }
    out
}

/// A safetensors file from `(key, little-endian bytes, shape)` entries all of `dtype`, with the
/// `{"format": "pt"}` metadata PyTorch writers add. `what` names the file in errors.
pub fn serialize_tensors(tensors: &[(String, Vec<u8>, Vec<usize>)], dtype: Dtype, what: &str) -> Result<Vec<u8>> {
    let typed: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(k, b, s)| (k.clone(), dtype, s.clone(), b.clone())).collect();
    serialize_typed(&typed, what)
}

/// A safetensors file from `(key, dtype, shape, bytes)` entries of mixed dtypes (a 4-bit model).
pub fn serialize_typed(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)], what: &str) -> Result<Vec<u8>> {
    // The safetensors writer panics on a repeated key; say which one instead.
    let mut seen = std::collections::HashSet::new();
    if let Some((k, ..)) = tensors.iter().find(|(k, ..)| !seen.insert(k.as_str())) {
        return Err(Error::input(format!("could not write {what}: two tensors are named {k}")));
    }
    let views = tensors
        .iter()
        .map(|(k, dtype, s, b)| {
            safetensors::tensor::TensorView::new(*dtype, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::input(format!("could not write {k} into {what}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::input(format!("could not write {what}: {e}")))
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Row-major `[rows, cols]` → `[cols, rows]`.
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = m[i * cols + j];
        }
    }
    t
}
