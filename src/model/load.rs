//! Reading a Hugging Face model folder: `config.json`, `model.safetensors` (or the shards named
//! by `model.safetensors.index.json`), `tokenizer.json`, and `generation_config.json` /
//! `tokenizer_config.json` when present. Works on a folder natively and on files picked in the
//! page. f16 and bf16 weights are upcast to f32 here, once.
//!
//! Every rename and transpose between checkpoint keys and our modules, both ways, is in
//! `model::keys`, and nowhere else.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use super::config::ModelConfig;
use super::keys;
use super::layers::{Base, Linear};
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
    /// Linear weights a GGUF file stores in Q4_0, Q4_1 or Q4_K, kept so (by checkpoint key, `[out, in]`)
    /// rather than widened into `weights`. Empty for other sources; `widen_packed` moves them into
    /// `weights` as f32 for what reads checkpoints as safetensors (merging whole models).
    pub packed: Vec<(String, crate::quant::Quant4)>,
    /// Linear weights a GGUF file stores in Q8_0 or Q6_K, kept in 8-bit codes the same way. The
    /// CPU engine runs them as they are; a GPU gets them widened to f32 when the model loads.
    pub packed8: Vec<(String, crate::quant::q8::Quant8)>,
    /// The size of the GGUF file these were converted from (None for a folder).
    pub source_bytes: Option<usize>,
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
        if !dir.join("config.json").is_file() {
            // A folder one level up from the model (a download's outer folder, www/assets/builtin):
            // name the folders inside that hold one.
            let mut inside: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("config.json").is_file())
                .map(|p| p.display().to_string())
                .collect();
            if !inside.is_empty() {
                inside.sort();
                return Err(Error::input(format!(
                    "{}: config.json is missing from the model files; the folder inside it that holds one is the model: {}",
                    dir.display(),
                    inside.join(", ")
                )));
            }
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
        let kept = self.packed.iter().map(|(k, q)| (k, q.numel())).chain(self.packed8.iter().map(|(k, q)| (k, q.numel())));
        for (key, n) in kept {
            if n > best.1 || (n == best.1 && *key < best.0) {
                best = (key.clone(), n);
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
        Ok(total
            + self.packed.iter().map(|(_, q)| q.storage_bytes() as u64).sum::<u64>()
            + self.packed8.iter().map(|(_, q)| q.storage_bytes() as u64).sum::<u64>())
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

    /// Whether these are a quantized checkpoint (config.json has a `quantization_config`, or a
    /// GGUF file's weights are kept in 4 bits).
    pub fn is_quantized(&self) -> bool {
        !self.packed.is_empty() || !self.packed8.is_empty() || serde_json::from_str::<serde_json::Value>(&self.config).is_ok_and(|c| c.get("quantization_config").is_some())
    }

    /// Total bytes of the weight files (a GGUF file's size).
    pub fn weight_bytes(&self) -> usize {
        self.source_bytes.unwrap_or_else(|| self.weights.iter().map(|(_, b)| b.len()).sum())
    }

    /// The 4-bit and 8-bit weights kept from a GGUF file, as one more f32 safetensors file: the
    /// values `dequantize` gives, so the files are what they were before anything was kept packed.
    pub fn widen_packed(&mut self) -> Result<()> {
        if self.packed.is_empty() && self.packed8.is_empty() {
            return Ok(());
        }
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> =
            self.packed.drain(..).map(|(k, q)| (k, f32_bytes(&q.dequantize()), q.shape.to_vec())).collect();
        tensors.extend(self.packed8.drain(..).map(|(k, q)| (k, f32_bytes(&q.dequantize()), q.shape.to_vec())));
        let file = serialize_tensors(&tensors, Dtype::F32, "model-kept.safetensors")?;
        self.weights.push(("model-kept.safetensors".into(), file));
        Ok(())
    }
}

/// The tensors of all shards, by checkpoint key.
pub struct Weights<'a> {
    tensors: HashMap<String, (&'a str, safetensors::tensor::TensorView<'a>)>,
    packed: HashMap<&'a str, &'a crate::quant::Quant4>,
    packed8: HashMap<&'a str, &'a crate::quant::q8::Quant8>,
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
        let packed = files.packed.iter().map(|(k, q)| (k.as_str(), q)).collect();
        let packed8 = files.packed8.iter().map(|(k, q)| (k.as_str(), q)).collect();
        Ok(Weights { tensors, packed, packed8, device: device.clone() })
    }

    /// Find a key, allowing the prefixes checkpoints disagree on (`transformer.` for GPT-2).
    fn find(&self, key: &str) -> Option<&(&'a str, safetensors::tensor::TensorView<'a>)> {
        self.tensors
            .get(key)
            .or_else(|| key.strip_prefix("transformer.").and_then(|k| self.tensors.get(k)))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.find(key).is_some() || self.packed.contains_key(key) || self.packed8.contains_key(key)
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

    /// A weight a GGUF file stores in Q8_0 or Q6_K (`[rows, cols]`), and whether it stays so: on
    /// the CPU engine it does; a GPU (f32 and 4-bit kernels only) takes its values in f32.
    fn kept8(&self, key: &str, rows: usize, cols: usize) -> Result<Option<(&'a crate::quant::q8::Quant8, bool)>> {
        let Some(&q) = self.packed8.get(key) else { return Ok(None) };
        if q.shape != [rows, cols] {
            return Err(Error::input(format!("tensor \"{key}\" has shape {:?} but config.json implies {:?}", q.shape, [rows, cols])));
        }
        Ok(Some((q, crate::device::is_cpu(&self.device))))
    }

    /// A token embedding `[V, C]`, kept in 8-bit codes where the file stores it so (`kept8`).
    pub fn embedding(&self, key: &str, rows: usize, cols: usize) -> Result<super::layers::Embedding> {
        use super::layers::Embedding;
        Ok(match self.kept8(key, rows, cols)? {
            Some((q, true)) => Embedding::Q8(crate::quant::q8::Q8Weight::new(q.clone(), &self.device)),
            Some((q, false)) => Embedding::Dense(Tensor::from_data(TensorData::new(q.dequantize(), [rows, cols]), &self.device)),
            None => Embedding::Dense(self.tensor2(key, rows, cols)?),
        })
    }

    pub fn tensor2(&self, key: &str, rows: usize, cols: usize) -> Result<Tensor<2>> {
        Ok(Tensor::from_data(TensorData::new(self.values(key, &[rows, cols])?, [rows, cols]), &self.device))
    }

    /// The 4-bit weight stored under `<prefix>.weight` (bitsandbytes' serialization), if any.
    fn quant4(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Option<Q4Tensor>> {
        let key = format!("{prefix}.weight");
        if let Some(q) = self.packed.get(key.as_str()) {
            if q.shape != [d_out, d_in] {
                return Err(Error::input(format!("tensor \"{key}\" has shape {:?} but config.json implies {:?}", q.shape, [d_out, d_in])));
            }
            return Ok(Some(Q4Tensor::new(q, &self.device)));
        }
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
        if let Some((q, kept)) = self.kept8(&format!("{prefix}.weight"), d_out, d_in)? {
            let base = if kept {
                Base::Q8(crate::quant::q8::Q8Weight::new(q.clone(), &self.device))
            } else {
                // `[in, out]`, as every dense base is held.
                Base::Dense(Tensor::from_data(TensorData::new(transpose(&q.dequantize(), d_out, d_in), [d_in, d_out]), &self.device))
            };
            return Ok(Linear { base, bias: self.bias(prefix, d_out, bias)?, adapters: Vec::new() });
        }
        Ok(Linear::new(self.dense_linear(prefix, d_in, d_out)?, self.bias(prefix, d_out, bias)?))
    }

    /// An `nn.Linear` weight as f32 `[in, out]` (the output head, which stays unquantized).
    pub(super) fn dense_linear(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Tensor<2>> {
        let w = self.values(&format!("{prefix}.weight"), &[d_out, d_in])?;
        Ok(Tensor::from_data(TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]), &self.device))
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

/// Build the model `config` describes from the weights.
pub fn build(files: &ModelFiles, config: &ModelConfig, device: &Device) -> Result<super::Arch> {
    // Refuses quantization schemes other than bitsandbytes 4-bit, with a way out.
    let raw: serde_json::Value = serde_json::from_str(&files.config).unwrap_or_default();
    bnb::QuantConfig::from_config(&raw)?;
    let w = Weights::parse(files, device)?;
    Ok(match config {
        ModelConfig::Gpt2(c) => super::Arch::Gpt2(keys::gpt2(&w, c)?),
        ModelConfig::Llama(c) => super::Arch::Llama(keys::llama(&w, c)?),
    })
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

/// A safetensors file from `(key, little-endian bytes, shape)` entries all of `dtype`, with the
/// `{"format": "pt"}` metadata PyTorch writers add. `what` names the file in errors.
pub fn serialize_tensors(tensors: &[(String, Vec<u8>, Vec<usize>)], dtype: Dtype, what: &str) -> Result<Vec<u8>> {
    serialize_views(tensors.iter().map(|(k, b, s)| (k.as_str(), dtype, s.as_slice(), b.as_slice())), what)
}

/// A safetensors file from `(key, dtype, shape, bytes)` entries of mixed dtypes (a 4-bit model).
pub fn serialize_typed(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)], what: &str) -> Result<Vec<u8>> {
    serialize_views(tensors.iter().map(|(k, dtype, s, b)| (k.as_str(), *dtype, s.as_slice(), b.as_slice())), what)
}

/// The file from views of the callers' bytes: nothing is copied but into the file itself (a copy
/// of every tensor here made a GGUF model's load hold its f32 weights three times over).
fn serialize_views<'a>(tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>, what: &str) -> Result<Vec<u8>> {
    // The safetensors writer panics on a repeated key; say which one instead.
    let mut seen = std::collections::HashSet::new();
    let mut views = Vec::new();
    for (k, dtype, shape, bytes) in tensors {
        if !seen.insert(k) {
            return Err(Error::input(format!("could not write {what}: two tensors are named {k}")));
        }
        let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), bytes).map_err(|e| Error::input(format!("could not write {k} into {what}: {e}")))?;
        views.push((k.to_string(), view));
    }
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::input(format!("could not write {what}: {e}")))
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Row-major `[rows, cols]` → `[cols, rows]`, in tiles of 32 × 32 so that the reads and the
/// writes both stay in cache (row by row, every write went to another cache line: a fifth of
/// loading SmolLM2, whose every linear weight is transposed once).
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(m.len(), rows * cols, "transpose: {} values are not {rows} × {cols}", m.len());
    const TILE: usize = 32;
    let mut t = vec![0f32; m.len()];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    t[j * rows + i] = m[i * cols + j];
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_every_value_across_tile_edges() {
        for (rows, cols) in [(1, 1), (3, 70), (64, 32), (33, 65), (100, 7)] {
            let m: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let t = transpose(&m, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(t[j * rows + i], m[i * cols + j], "{rows}×{cols} at ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn tensors_serialize_as_given_and_a_repeated_name_is_refused() {
        let tensors = vec![
            ("a.weight".to_string(), f32_bytes(&[1.0, -2.0, 3.5, 0.25, 8.0, -0.5]), vec![2, 3]),
            ("b".to_string(), f32_bytes(&[7.0]), vec![1]),
        ];
        let file = serialize_tensors(&tensors, Dtype::F32, "test.safetensors").unwrap();
        let st = SafeTensors::deserialize(&file).unwrap();
        for (name, bytes, shape) in &tensors {
            let t = st.tensor(name).unwrap();
            assert_eq!((t.dtype(), t.shape(), t.data()), (Dtype::F32, &shape[..], &bytes[..]), "{name}");
        }
        let repeated = [tensors[0].clone(), tensors[1].clone(), tensors[0].clone()];
        let e = serialize_tensors(&repeated, Dtype::F32, "test.safetensors").unwrap_err().to_string();
        assert!(e.contains("two tensors are named a.weight"), "{e}");
        let short = [("c".to_string(), f32_bytes(&[1.0]), vec![2])];
        let e = serialize_tensors(&short, Dtype::F32, "test.safetensors").unwrap_err().to_string();
        assert!(e.contains("could not write c into test.safetensors"), "{e}");
    }
}
