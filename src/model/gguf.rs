//! GGUF files (llama.cpp, Ollama, LM Studio): the header, metadata, tensor table and alignment,
//! tensors dequantized exactly as gguf-py's numpy code does, and the conversion of a file into
//! the Hugging Face form the rest of tinytune loads (config.json, tokenizer.json, f32
//! safetensors with transformers' names; Q and K un-permuted as transformers does).
//!
//! Every count and size read from the file is checked against the bytes that remain before
//! anything is allocated from it.

use std::collections::BTreeMap;

use serde_json::json;

use crate::{Error, Result};

pub use super::gguf_quant::dequantize;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Tensors in one file (llama 405B has about 1,100).
const MAX_TENSORS: u64 = 1 << 16;
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Meta>),
}

impl Meta {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Meta::Uint(v) => Some(*v),
            Meta::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Meta::Float(v) => Some(*v),
            Meta::Uint(v) => Some(*v as f64),
            Meta::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Meta::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Meta::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// The ggml tensor types tinytune reads: (id, name, elements per block, bytes per block).
const TYPES: [(u32, &str, usize, usize); 13] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (30, "BF16", 1, 2),
];

pub(super) fn type_info(id: u32) -> Result<(&'static str, usize, usize)> {
    TYPES.iter().find(|t| t.0 == id).map(|t| (t.1, t.2, t.3)).ok_or_else(|| {
        Error::input(format!(
            "the GGUF file has a tensor of ggml type {id}, which tinytune cannot read; supported: {}",
            TYPES.iter().map(|t| t.1).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// One entry of the tensor table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (a Hugging Face `[rows, cols]` is `[cols, rows]` here).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Where the data starts in the file, alignment applied.
    pub start: usize,
    pub bytes: usize,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
    pub fn type_name(&self) -> &'static str {
        type_info(self.ggml_type).map(|t| t.0).unwrap_or("?")
    }
}

/// A parsed GGUF file (the tensor data stays in the caller's bytes).
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, Meta>,
    pub tensors: Vec<TensorInfo>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            Error::input(format!("the GGUF file ends early (at byte {}, {n} more bytes needed): it is truncated", self.at))
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }
    /// A count of items, each at least `min_size` bytes, that must fit in what is left.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64()?;
        if n > (self.left() / min_size.max(1)) as u64 {
            return Err(Error::input(format!("the GGUF file says {what} has {n} entries, more than the file could hold: it is damaged")));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.count("a string", 1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::input("the GGUF file has a string that is not UTF-8: it is damaged"))
    }
    fn value(&mut self, kind: u32, depth: u32) -> Result<Meta> {
        Ok(match kind {
            0 => Meta::Uint(self.u8()? as u64),
            1 => Meta::Int(self.u8()? as i8 as i64),
            2 => Meta::Uint(self.u16()? as u64),
            3 => Meta::Int(self.u16()? as i16 as i64),
            4 => Meta::Uint(self.u32()? as u64),
            5 => Meta::Int(self.u32()? as i32 as i64),
            6 => Meta::Float(f32::from_bits(self.u32()?) as f64),
            7 => Meta::Bool(self.u8()? != 0),
            8 => Meta::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(Error::input("the GGUF file nests arrays more than twice: it is damaged"));
                }
                let inner = self.u32()?;
                let n = self.count("an array", 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                Meta::Array(items)
            }
            10 => Meta::Uint(self.u64()?),
            11 => Meta::Int(self.u64()? as i64),
            12 => Meta::Float(f64::from_bits(self.u64()?)),
            other => return Err(Error::input(format!("the GGUF file has a metadata value of unknown type {other}: it is damaged"))),
        })
    }
}

/// Whether these bytes start like a GGUF file.
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

impl Gguf {
    /// Read the header, metadata and tensor table; check every tensor lies inside the file.
    pub fn parse(bytes: &[u8]) -> Result<Gguf> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(Error::input("not a GGUF file: it does not start with \"GGUF\""));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::input(format!("GGUF version {version} is not supported (2 and 3 are)")));
        }
        let tensor_count = r.u64()?;
        if tensor_count > MAX_TENSORS {
            return Err(Error::input(format!("the GGUF file says it holds {tensor_count} tensors; tinytune reads at most {MAX_TENSORS}")));
        }
        let kv_count = r.count("the metadata", 12)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string()?;
            let kind = r.u32()?;
            let value = r.value(kind, 0)?;
            metadata.insert(key, value);
        }
        let mut infos = Vec::with_capacity(tensor_count as usize);
        let mut names = std::collections::HashSet::new();
        for _ in 0..tensor_count {
            let name = r.string()?;
            // Two tensors of one name would make the weights ambiguous (found by fuzzing: the
            // safetensors writer panics on a duplicate key).
            if !names.insert(name.clone()) {
                return Err(Error::input(format!("the GGUF file has two tensors named {name}: it is damaged")));
            }
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::input(format!("GGUF tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} are read)")));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            infos.push((name, dims, ggml_type, offset));
        }
        let alignment = metadata.get("general.alignment").and_then(Meta::as_u64).unwrap_or(DEFAULT_ALIGNMENT);
        if alignment == 0 || !alignment.is_power_of_two() || alignment > 1 << 20 {
            return Err(Error::input(format!("the GGUF file's alignment {alignment} is not a power of two")));
        }
        let data_start = (r.at as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ggml_type, offset) in infos {
            let (type_name, block, block_bytes) = type_info(ggml_type).map_err(|e| Error::input(format!("tensor {name}: {e}")))?;
            let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= 1 << 40);
            let Some(elements) = elements else {
                return Err(Error::input(format!("GGUF tensor {name} has dimensions {dims:?}, too many elements: the file is damaged")));
            };
            if dims[0] % block as u64 != 0 {
                return Err(Error::input(format!("GGUF tensor {name} ({type_name}) has rows of {} values, not a multiple of its block of {block}", dims[0])));
            }
            let size = elements / block as u64 * block_bytes as u64;
            let start = data_start.checked_add(offset);
            match start.and_then(|s| s.checked_add(size)) {
                Some(end) if end <= bytes.len() as u64 && offset % alignment == 0 => {}
                _ => {
                    return Err(Error::input(format!(
                        "GGUF tensor {name} ({size} bytes at offset {offset}) lies outside the file: it is truncated or damaged"
                    )))
                }
            }
            tensors.push(TensorInfo { name, dims, ggml_type, start: (data_start + offset) as usize, bytes: size as usize });
        }
        Ok(Gguf { version, metadata, tensors })
    }

    pub fn get(&self, key: &str) -> Option<&Meta> {
        self.metadata.get(key)
    }

    pub fn architecture(&self) -> Result<&str> {
        self.get("general.architecture").and_then(Meta::as_str).ok_or_else(|| Error::input("the GGUF file has no general.architecture"))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// llama.cpp's converter stores Q and K with the rotary halves interleaved per head (its
/// `permute`: row `h·2h' + i·2 + j` holds row `h·2h' + j·h' + i`). `to_gguf` makes that order from
/// Hugging Face's; otherwise the rows go back (transformers' `reverse_permute_weights`).
pub fn permute_rotary(w: &[f32], rows: usize, cols: usize, heads: usize, to_gguf: bool) -> Result<Vec<f32>> {
    if heads == 0 || rows % (2 * heads) != 0 {
        return Err(Error::input(format!("a Q/K weight of {rows} rows cannot be split into {heads} heads of rotary pairs")));
    }
    let half = rows / heads / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (hf, gguf) = (h * 2 * half + j * half + i, h * 2 * half + i * 2 + j);
                let (from, to) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[to * cols..(to + 1) * cols].copy_from_slice(&w[from * cols..(from + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// Whole-model tensors: (GGUF name, Hugging Face name).
const MODEL_NAMES: [(&str, &str); 3] =
    [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"), ("output.weight", "lm_head.weight")];
/// Modules of a block: (GGUF, Hugging Face), under `blk.N.` and `model.layers.N.`.
const BLOCK_NAMES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// A tensor's name in the other naming of a Llama-shaped model: Hugging Face's from GGUF's
/// (`to_gguf` false) or GGUF's from Hugging Face's.
fn rename(name: &str, to_gguf: bool) -> Option<String> {
    let pick = |pair: &(&'static str, &'static str)| if to_gguf { (pair.1, pair.0) } else { (pair.0, pair.1) };
    if let Some((_, to)) = MODEL_NAMES.iter().map(pick).find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    let (from_prefix, to_prefix) = if to_gguf { ("model.layers.", "blk.") } else { ("blk.", "model.layers.") };
    let (layer, part) = name.strip_prefix(from_prefix)?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let (_, to) = BLOCK_NAMES.iter().map(pick).find(|(from, _)| *from == module)?;
    Some(format!("{to_prefix}{layer}.{to}.{kind}"))
}

/// The GGUF name of a Hugging Face tensor of a Llama-shaped model.
pub fn hf_to_gguf_name(hf: &str) -> Option<String> {
    rename(hf, true)
}

/// GPT-2's whole-model tensors: (GGUF name, Hugging Face name).
const GPT2_MODEL_NAMES: [(&str, &str); 5] = [
    ("token_embd.weight", "transformer.wte.weight"),
    ("position_embd.weight", "transformer.wpe.weight"),
    ("output_norm.weight", "transformer.ln_f.weight"),
    ("output_norm.bias", "transformer.ln_f.bias"),
    ("output.weight", "lm_head.weight"),
];
/// GPT-2's modules of a block (GGUF, Hugging Face), under `blk.N.` and `transformer.h.N.`, and
/// whether the weight is a Conv1D one (stored [in, out] by transformers, [out, in] by llama.cpp).
const GPT2_BLOCK_NAMES: [(&str, &str, bool); 6] = [
    ("attn_norm", "ln_1", false),
    ("attn_qkv", "attn.c_attn", true),
    ("attn_output", "attn.c_proj", true),
    ("ffn_norm", "ln_2", false),
    ("ffn_up", "mlp.c_fc", true),
    ("ffn_down", "mlp.c_proj", true),
];

/// A GPT-2 GGUF tensor's Hugging Face name, and whether its values are transposed there.
fn rename_gpt2(name: &str) -> Option<(String, bool)> {
    if let Some((_, hf)) = GPT2_MODEL_NAMES.iter().find(|(g, _)| *g == name) {
        return Some((hf.to_string(), false));
    }
    let (layer, part) = name.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let (_, hf, conv) = GPT2_BLOCK_NAMES.iter().find(|(g, _, _)| *g == module)?;
    Some((format!("transformer.h.{layer}.{hf}.{kind}"), *conv && kind == "weight"))
}

/// The architectures this reader converts.
pub const ARCHITECTURES: &[&str] = &["llama", "qwen2", "gpt2"];

/// The files of a Hugging Face model folder that this GGUF file describes.
pub fn to_model_files(file: &[u8]) -> Result<super::load::ModelFiles> {
    let g = Gguf::parse(file)?;
    let arch = g.architecture()?.to_string();
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(Error::input(format!(
            "GGUF architecture \"{arch}\" is not supported yet; supported: {}",
            ARCHITECTURES.join(", ")
        )));
    }
    let key = |k: &str| g.get(&format!("{arch}.{k}"));
    let need = |k: &str| -> Result<u64> {
        key(k).and_then(Meta::as_u64).ok_or_else(|| Error::input(format!("the GGUF file has no {arch}.{k}")))
    };
    let tokens: Vec<String> = match g.get("tokenizer.ggml.tokens") {
        Some(Meta::Array(a)) => a.iter().map(|t| t.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::input("tokenizer.ggml.tokens holds something other than strings"))?,
        _ => return Err(Error::input("the GGUF file has no tokenizer (tokenizer.ggml.tokens)")),
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = key("attention.head_count_kv").and_then(Meta::as_u64).unwrap_or(heads);
    let vocab = key("vocab_size").and_then(Meta::as_u64).unwrap_or(tokens.len() as u64);
    let tied = g.tensor("output.weight").is_none();
    let id = |k: &str| g.get(&format!("tokenizer.ggml.{k}")).and_then(Meta::as_u64);
    let mut config = if arch == "gpt2" {
        // The position table's rows are the model's positions (context_length may say more).
        let positions = g.tensor("position_embd.weight").and_then(|t| t.dims.get(1).copied());
        let positions = positions.or_else(|| key("context_length").and_then(Meta::as_u64))
            .ok_or_else(|| Error::input("the GPT-2 GGUF file has no position_embd.weight"))?;
        json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": vocab,
            "n_embd": hidden,
            "n_inner": need("feed_forward_length")?,
            "n_layer": need("block_count")?,
            "n_head": heads,
            "n_positions": positions,
            "layer_norm_epsilon": key("attention.layer_norm_epsilon").and_then(Meta::as_f64).unwrap_or(1e-5) as f32 as f64,
            "activation_function": "gelu_new",
            "tie_word_embeddings": tied,
        })
    } else {
        let head_dim = key("attention.key_length").and_then(Meta::as_u64).unwrap_or(if heads > 0 { hidden / heads } else { 0 });
        if let Some(kind) = key("rope.scaling.type").and_then(Meta::as_str).filter(|k| *k != "none") {
            return Err(Error::input(format!("GGUF rope scaling \"{kind}\" is not supported yet")));
        }
        json!({
            "architectures": [if arch == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
            "model_type": arch,
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": need("feed_forward_length")?,
            "num_hidden_layers": need("block_count")?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": key("context_length").and_then(Meta::as_u64).unwrap_or(2048),
            "rms_norm_eps": key("attention.layer_norm_rms_epsilon").and_then(Meta::as_f64).unwrap_or(1e-6) as f32 as f64,
            "rope_theta": key("rope.freq_base").and_then(Meta::as_f64).unwrap_or(10000.0),
            "tie_word_embeddings": tied,
            "hidden_act": "silu",
        })
    };
    if let Some(b) = id("bos_token_id") {
        config["bos_token_id"] = json!(b);
    }
    if let Some(e) = id("eos_token_id") {
        config["eos_token_id"] = json!(e);
    }
    let (tokenizer, tokenizer_config) = super::gguf_tokenizer::tokenizer_files(&g, &tokens)?;

    // The weights as f32 safetensors under transformers' names; a Llama-family model's linear
    // weights in Q4_0, Q4_1 or Q4_K stay in 4 bits (`packed`); those, the token embedding and the
    // output head in the other quantized types in 8-bit codes (`packed8`), as the file stores them.
    let mut tensors = Vec::with_capacity(g.tensors.len());
    let mut packed = Vec::new();
    let mut packed8 = Vec::new();
    for t in &g.tensors {
        let renamed = if arch == "gpt2" { rename_gpt2(&t.name) } else { rename(&t.name, false).map(|n| (n, false)) };
        let Some((name, conv1d)) = renamed else {
            return Err(Error::input(format!("GGUF tensor {} has no place in a {arch} model", t.name)));
        };
        let mut shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let kept = crate::quant::gguf4::kept_type(t.type_name()).filter(|_| arch != "gpt2" && name.starts_with("model.layers.") && name.ends_with("_proj.weight"));
        if let (Some(qt), &[rows, cols]) = (kept, &shape[..]) {
            let mut q = crate::quant::gguf4::from_gguf(qt, &file[t.start..t.start + t.bytes], [rows, cols])
                .map_err(|e| Error::input(format!("GGUF tensor {}: {e}", t.name)))?;
            if arch == "llama" && (t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_k.weight")) {
                // The rows go back as `permute_rotary` moves them: applied to the row numbers.
                let n = if t.name.ends_with("attn_q.weight") { heads } else { kv_heads } as usize;
                let order = permute_rotary(&(0..rows).map(|r| r as f32).collect::<Vec<_>>(), rows, 1, n, false)?;
                q = crate::quant::gguf4::gather_rows(&q, &order.iter().map(|&r| r as usize).collect::<Vec<_>>());
            }
            packed.push((name, q));
            continue;
        }
        let kept8 = crate::quant::q8::Kind8::of_gguf(t.type_name())
            .filter(|_| arch != "gpt2" && ((name.starts_with("model.layers.") && name.ends_with("_proj.weight")) || name == "model.embed_tokens.weight" || name == "lm_head.weight"));
        if let (Some(kind), &[rows, cols]) = (kept8, &shape[..]) {
            let mut q = crate::quant::q8::Quant8::from_gguf(kind, &file[t.start..t.start + t.bytes], [rows, cols])
                .map_err(|e| Error::input(format!("GGUF tensor {}: {e}", t.name)))?;
            if arch == "llama" && (t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_k.weight")) {
                let n = if t.name.ends_with("attn_q.weight") { heads } else { kv_heads } as usize;
                let order = permute_rotary(&(0..rows).map(|r| r as f32).collect::<Vec<_>>(), rows, 1, n, false)?;
                q = q.gather_rows(&order.iter().map(|&r| r as usize).collect::<Vec<_>>());
            }
            packed8.push((name, q));
            continue;
        }
        let mut values = dequantize(t, file)?;
        if conv1d {
            let [rows, cols] = shape[..] else {
                return Err(Error::input(format!("GGUF tensor {} should be a matrix, not of shape {shape:?}", t.name)));
            };
            values = super::load::transpose(&values, rows, cols);
            shape = vec![cols, rows];
        }
        if arch == "llama" && (t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_k.weight")) {
            let n = if t.name.ends_with("attn_q.weight") { heads } else { kv_heads } as usize;
            values = permute_rotary(&values, shape[0], shape.get(1).copied().unwrap_or(1), n, false)?;
        }
        tensors.push((name, super::load::f32_bytes(&values), shape));
    }
    let weights = super::load::serialize_tensors(&tensors, safetensors::Dtype::F32, "model.safetensors")?;
    Ok(super::load::ModelFiles {
        config: serde_json::to_string_pretty(&config).expect("a JSON value"),
        tokenizer: Some(tokenizer),
        tokenizer_config: Some(tokenizer_config),
        generation_config: None,
        chat_template: None,
        weights: vec![("model.safetensors".into(), weights)],
        packed,
        packed8,
        source_bytes: Some(file.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GGUF's Q4_0 and Q4_1 kept in 4 bits (`quant::gguf4`): random blocks through `Quant4`, the
    /// word buffer the kernels read and `unpack`, against `dequantize` (gguf-py's arithmetic).
    #[test]
    fn q4_blocks_kept_in_4_bits_dequantize_as_gguf_py_does_bit_for_bit() {
        for (qt, name) in [(crate::quant::QuantType::Q4_0, "Q4_0"), (crate::quant::QuantType::Q4_1, "Q4_1")] {
            let (rows, cols) = (6, 96);
            let data = crate::quant::gguf4::tests::gguf_data(qt, rows * cols / crate::quant::gguf4::BLOCK, 7);
            let q = crate::quant::gguf4::from_gguf(qt, &data, [rows, cols]).unwrap();
            let ggml_type = if qt == crate::quant::QuantType::Q4_0 { 2 } else { 3 };
            let info = TensorInfo { name: name.into(), dims: vec![cols as u64, rows as u64], ggml_type, start: 0, bytes: data.len() };
            let want = dequantize(&info, &data).unwrap();
            let got = q.dequantize();
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{name}");
            // And through the buffer the kernels read.
            let (words, layout) = crate::quant::kernels::pack(&q);
            let from_words = crate::quant::kernels::dequantize_words(&words, &layout);
            assert_eq!(from_words.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{name} words");
            assert_eq!(crate::quant::kernels::unpack(&words, &layout), q, "{name}: unpack(pack)");
        }
    }

    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        // llama.cpp: reshape(heads, 2, half, cols).swapaxes(1, 2): row h*2*half + i*2 + j holds
        // the original row h*2*half + j*half + i.
        let (heads, half, cols) = (2, 3, 2);
        let rows = heads * 2 * half;
        let original: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0.0; original.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    let src = h * 2 * half + j * half + i;
                    let dst = h * 2 * half + i * 2 + j;
                    permuted[dst * cols..(dst + 1) * cols].copy_from_slice(&original[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(permute_rotary(&permuted, rows, cols, heads, false).unwrap(), original);
        assert_eq!(permute_rotary(&original, rows, cols, heads, true).unwrap(), permuted);
        // The names go both ways.
        assert_eq!(rename("blk.3.ffn_gate.weight", false).as_deref(), Some("model.layers.3.mlp.gate_proj.weight"));
        assert_eq!(hf_to_gguf_name("model.layers.3.mlp.gate_proj.weight").as_deref(), Some("blk.3.ffn_gate.weight"));
        assert_eq!(rename("lm_head.weight", true).as_deref(), Some("output.weight"));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_a_clear_error() {
        assert!(Gguf::parse(b"GGU").unwrap_err().to_string().contains("truncated"));
        assert!(Gguf::parse(b"NOPE\x03\0\0\0").unwrap_err().to_string().contains("not a GGUF file"));
        // Version 3, one tensor claimed, a metadata count far past the file's size.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        assert!(Gguf::parse(&b).unwrap_err().to_string().contains("more than the file could hold"));
    }
}
