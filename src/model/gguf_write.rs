//! Writing GGUF for llama.cpp: a merged model (F16 or Q8_0 linear weights, as llama.cpp's
//! converter writes them: Q and K permuted, norms in F32, the byte-level BPE tokenizer and chat
//! template in the metadata) and a LoRA adapter in llama.cpp's adapter layout
//! (`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, `<tensor>.lora_a`
//! and `.lora_b`).

use serde_json::Value;

use super::gguf::{hf_to_gguf_name, permute_rotary};
use crate::{Error, Result};

const ALIGNMENT: usize = 32;

/// LoRA factors by module path: ((A, [r, in]), (B, [out, r])).
pub type LoraFactors = std::collections::BTreeMap<String, ((Vec<f32>, [usize; 2]), (Vec<f32>, [usize; 2]))>;

/// The tensor types the writer emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Q8_0,
}

impl std::str::FromStr for OutType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(OutType::F16),
            "q8_0" | "q8" => Ok(OutType::Q8_0),
            "f32" => Ok(OutType::F32),
            other => Err(Error::input(format!("unknown GGUF type '{other}': use f16, q8_0 or f32"))),
        }
    }
}

impl OutType {
    fn id(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q8_0 => 8,
        }
    }
}

/// A GGUF file being put together.
#[derive(Default)]
pub struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Writer {
    fn key(&mut self, key: &str, kind: u32) {
        put_str(&mut self.kv, key);
        self.kv.extend(kind.to_le_bytes());
        self.n_kv += 1;
    }
    pub fn str(&mut self, key: &str, v: &str) {
        self.key(key, 8);
        put_str(&mut self.kv, v);
    }
    pub fn u32(&mut self, key: &str, v: u32) {
        self.key(key, 4);
        self.kv.extend(v.to_le_bytes());
    }
    pub fn f32(&mut self, key: &str, v: f32) {
        self.key(key, 6);
        self.kv.extend(v.to_le_bytes());
    }
    pub fn bool(&mut self, key: &str, v: bool) {
        self.key(key, 7);
        self.kv.push(v as u8);
    }
    pub fn strs(&mut self, key: &str, v: &[String]) {
        self.key(key, 9);
        self.kv.extend(8u32.to_le_bytes());
        self.kv.extend((v.len() as u64).to_le_bytes());
        for s in v {
            put_str(&mut self.kv, s);
        }
    }
    pub fn i32s(&mut self, key: &str, v: &[i32]) {
        self.key(key, 9);
        self.kv.extend(5u32.to_le_bytes());
        self.kv.extend((v.len() as u64).to_le_bytes());
        for x in v {
            self.kv.extend(x.to_le_bytes());
        }
    }

    /// A tensor of `shape` (Hugging Face order, rows first) stored as `kind`.
    pub fn tensor(&mut self, name: &str, shape: &[usize], values: &[f32], kind: OutType) -> Result<()> {
        let cols = *shape.last().unwrap_or(&1);
        let kind = if kind == OutType::Q8_0 && cols % 32 != 0 { OutType::F16 } else { kind };
        let data = match kind {
            OutType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            OutType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            OutType::Q8_0 => crate::quant::q8::quantize_q8_0(values),
        };
        self.tensors.push((name.to_string(), shape.iter().rev().map(|&d| d as u64).collect(), kind.id(), data));
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        let mut offset = 0usize;
        for (name, dims, kind, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(kind.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset += data.len().div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        }
        out
    }
}

struct Arch {
    name: String,
    heads: usize,
    kv_heads: usize,
}

fn arch_metadata(w: &mut Writer, config: &Value) -> Result<Arch> {
    let name = config["model_type"].as_str().unwrap_or("").to_string();
    // GPT-2 GGUF files are read, not written.
    const WRITABLE: [&str; 2] = ["llama", "qwen2"];
    if !WRITABLE.contains(&name.as_str()) {
        return Err(Error::input(format!("a {name} model cannot be written as GGUF yet; supported: {}", WRITABLE.join(", "))));
    }
    let c = super::config::ModelConfig::from_json(&config.to_string())?;
    let super::config::ModelConfig::Llama(l) = &c else { unreachable!("llama and qwen2 parse as LlamaConfig") };
    w.str("general.architecture", &name);
    let a = |k: &str| format!("{name}.{k}");
    w.u32(&a("block_count"), l.num_hidden_layers as u32);
    w.u32(&a("context_length"), l.max_position_embeddings as u32);
    w.u32(&a("embedding_length"), l.hidden_size as u32);
    w.u32(&a("feed_forward_length"), l.intermediate_size as u32);
    w.u32(&a("attention.head_count"), l.num_attention_heads as u32);
    w.u32(&a("attention.head_count_kv"), l.num_key_value_heads() as u32);
    w.u32(&a("attention.key_length"), l.head_dim() as u32);
    w.u32(&a("attention.value_length"), l.head_dim() as u32);
    w.u32(&a("rope.dimension_count"), l.head_dim() as u32);
    w.f32(&a("rope.freq_base"), l.rope_theta as f32);
    w.f32(&a("attention.layer_norm_rms_epsilon"), l.rms_norm_eps as f32);
    w.u32(&a("vocab_size"), l.vocab_size as u32);
    Ok(Arch { name, heads: l.num_attention_heads, kv_heads: l.num_key_value_heads() })
}

fn tokenizer_metadata(w: &mut Writer, tokenizer_json: &[u8], tokenizer_config: Option<&str>, chat_template: Option<&str>, config: &Value) -> Result<()> {
    let t: Value = serde_json::from_slice(tokenizer_json).map_err(|e| Error::input(format!("tokenizer.json: {e}")))?;
    let model = &t["model"];
    let byte_level = |v: &Value| v["type"] == "ByteLevel" || v["pretokenizers"].as_array().is_some_and(|a| a.iter().any(|p| p["type"] == "ByteLevel"));
    if model["type"] != "BPE" || !byte_level(&t["pre_tokenizer"]) {
        return Err(Error::input("only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM) can be written to GGUF yet"));
    }
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut special = std::collections::BTreeSet::new();
    let put = |tokens: &mut Vec<Option<String>>, id: usize, s: &str| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some(s.to_string());
    };
    for (s, id) in model["vocab"].as_object().into_iter().flatten() {
        put(&mut tokens, id.as_u64().unwrap_or(0) as usize, s);
    }
    for a in t["added_tokens"].as_array().into_iter().flatten() {
        let id = a["id"].as_u64().unwrap_or(0) as usize;
        put(&mut tokens, id, a["content"].as_str().unwrap_or(""));
        if a["special"].as_bool() == Some(true) {
            special.insert(id);
        }
    }
    let tokens: Vec<String> = tokens.into_iter().enumerate().map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]"))).collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => p.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "),
            _ => String::new(),
        })
        .collect();
    w.str("tokenizer.ggml.model", "gpt2");
    w.strs("tokenizer.ggml.tokens", &tokens);
    w.i32s("tokenizer.ggml.token_type", &(0..tokens.len()).map(|i| if special.contains(&i) { 3 } else { 1 }).collect::<Vec<_>>());
    w.strs("tokenizer.ggml.merges", &merges);
    let tc: Value = tokenizer_config.and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null);
    let id_of = |v: &Value| -> Option<u32> {
        v.as_u64().map(|x| x as u32).or_else(|| v.as_array()?.first()?.as_u64().map(|x| x as u32))
    };
    if let Some(b) = id_of(&config["bos_token_id"]) {
        w.u32("tokenizer.ggml.bos_token_id", b);
    }
    if let Some(e) = id_of(&config["eos_token_id"]) {
        w.u32("tokenizer.ggml.eos_token_id", e);
    }
    w.bool("tokenizer.ggml.add_bos_token", tc["add_bos_token"].as_bool().unwrap_or(false));
    if let Some(t) = chat_template.or_else(|| tc["chat_template"].as_str()) {
        w.str("tokenizer.chat_template", t);
    }
    Ok(())
}

/// A whole model (its Hugging Face files, f32 weights) as one GGUF file with 2-D weights in `kind`.
pub fn export_model(files: &super::load::ModelFiles, kind: OutType) -> Result<Vec<u8>> {
    let config: Value = serde_json::from_str(&files.config).map_err(|e| Error::input(format!("config.json: {e}")))?;
    let mut w = Writer::default();
    let arch = arch_metadata(&mut w, &config)?;
    w.str("general.name", "tinytune export");
    w.u32("general.alignment", ALIGNMENT as u32);
    let tokenizer = files.tokenizer.as_deref().ok_or_else(|| Error::input("the model has no tokenizer.json"))?;
    tokenizer_metadata(&mut w, tokenizer, files.tokenizer_config.as_deref(), files.chat_template.as_deref(), &config)?;
    for (file, bytes) in &files.weights {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::input(format!("{file}: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        for hf in names {
            let view = st.tensor(&hf).map_err(|e| Error::input(format!("{file}: {e}")))?;
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(Error::input(format!("{hf} is {:?}: export from f32 weights", view.dtype())));
            }
            let mut values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let shape = view.shape().to_vec();
            let name = hf_to_gguf_name(&hf).ok_or_else(|| Error::input(format!("{hf} has no GGUF name")))?;
            if arch.name == "llama" && (hf.ends_with("q_proj.weight") || hf.ends_with("k_proj.weight")) {
                let heads = if hf.ends_with("q_proj.weight") { arch.heads } else { arch.kv_heads };
                values = permute_rotary(&values, shape[0], shape[1], heads, true)?;
            }
            let k = if shape.len() == 2 && !hf.contains("norm") { kind } else { OutType::F32 };
            w.tensor(&name, &shape, &values, k)?;
        }
    }
    Ok(w.to_bytes())
}

/// A PEFT LoRA adapter as llama.cpp's GGUF LoRA: `lora_a` `[r, in]`, `lora_b` `[out, r]` per
/// module (B's rows permuted for Llama's Q and K, as the base's are), F32.
/// `modules` maps a module path to its factors as PEFT stores them (`lora_A` `[r, in]`,
/// `lora_B` `[out, r]`); `alpha`, `r` and `rslora` come from adapter_config.json.
pub fn export_lora(modules: &LoraFactors, alpha: f64, r: usize, rslora: bool, base_config: &str) -> Result<Vec<u8>> {
    let config: Value = serde_json::from_str(base_config).map_err(|e| Error::input(format!("config.json: {e}")))?;
    let mut w = Writer::default();
    let arch = arch_metadata(&mut w, &config)?;
    w.str("general.type", "adapter");
    w.str("adapter.type", "lora");
    if rslora {
        // llama.cpp scales by alpha / r; rsLoRA's alpha / √r is the same with alpha · √r.
        w.f32("adapter.lora.alpha", (alpha * (r as f64).sqrt()) as f32);
    } else {
        w.f32("adapter.lora.alpha", alpha as f32);
    }
    w.u32("general.alignment", ALIGNMENT as u32);
    for (path, ((a, a_shape), (b, b_shape))) in modules {
        let base = hf_to_gguf_name(&format!("{path}.weight")).ok_or_else(|| Error::input(format!("{path} has no GGUF name")))?;
        let mut b = b.clone();
        if arch.name == "llama" && (path.ends_with("q_proj") || path.ends_with("k_proj")) {
            let heads = if path.ends_with("q_proj") { arch.heads } else { arch.kv_heads };
            b = permute_rotary(&b, b_shape[0], b_shape[1], heads, true)?;
        }
        w.tensor(&format!("{base}.lora_a"), a_shape, a, OutType::F32)?;
        w.tensor(&format!("{base}.lora_b"), b_shape, &b, OutType::F32)?;
    }
    Ok(w.to_bytes())
}

