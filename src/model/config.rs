//! Model configuration read from Hugging Face `config.json`, with HF field names (serde) and
//! resolved accessors for the optional fields. One struct per architecture family.

use serde::Deserialize;

use crate::{Error, Result};

/// The architectures this build can run, as `model_type` names them.
pub const SUPPORTED: &[&str] = &["gpt2", "llama", "mistral", "qwen2"];

#[derive(Clone, Debug)]
pub enum ModelConfig {
    Gpt2(Gpt2Config),
    /// Llama and the families that share its shape (Mistral, Qwen2, SmolLM, TinyLlama).
    Llama(LlamaConfig),
}

/// GPT-2 (`model_type: "gpt2"`).
#[derive(Clone, Debug, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_gelu_new")]
    pub activation_function: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Divide the attention scores of layer i by i + 1 too (transformers' flag of that name).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
}

/// Llama, Mistral and Qwen2 (`model_type` `llama`, `mistral`, `qwen2`).
#[derive(Clone, Debug, Deserialize)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_ln_eps() -> f64 {
    1e-5
}
fn default_gelu_new() -> String {
    "gelu_new".into()
}
fn yes() -> bool {
    true
}
fn default_max_pos() -> usize {
    2048
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_silu() -> String {
    "silu".into()
}

impl Gpt2Config {
    pub fn n_inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

impl LlamaConfig {
    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    /// Qwen2 puts biases on q, k and v (and not on o) without saying so in the config.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }
    pub fn o_bias(&self) -> bool {
        self.attention_bias.unwrap_or(false)
    }
}

impl ModelConfig {
    /// Parse `config.json`. Errors name the file and the field.
    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::input(format!("config.json is not valid JSON: {e}")))?;
        let model_type = value.get("model_type").and_then(|v| v.as_str()).ok_or_else(|| {
            Error::input("config.json has no \"model_type\": is this a Hugging Face model folder?")
        })?;
        let field_error = |e: serde_json::Error| Error::input(format!("config.json ({model_type}): {e}"));
        let config = match model_type {
            "gpt2" => ModelConfig::Gpt2(serde_json::from_value(value.clone()).map_err(field_error)?),
            "llama" | "mistral" | "qwen2" => {
                let mut c: LlamaConfig = serde_json::from_value(value.clone()).map_err(field_error)?;
                // transformers 5 writes rope settings under "rope_parameters"; older files at the top.
                if let Some(p) = value.get("rope_parameters").filter(|p| p.is_object()) {
                    if value.get("rope_theta").is_none() {
                        if let Some(theta) = p.get("rope_theta").and_then(|t| t.as_f64()) {
                            c.rope_theta = theta;
                        }
                    }
                    let kind = p.get("rope_type").and_then(|t| t.as_str()).unwrap_or("default");
                    if kind != "default" && c.rope_scaling.is_none() {
                        c.rope_scaling = Some(p.clone());
                    }
                }
                ModelConfig::Llama(c)
            }
            other => {
                return Err(Error::input(format!(
                    "config.json says model_type \"{other}\", which tinytune does not support; supported: {}",
                    SUPPORTED.join(", ")
                )));
            }
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::input(format!("config.json: {msg}")));
        self.check_sizes()?;
        match self {
            ModelConfig::Gpt2(c) => {
                if c.n_head == 0 || c.n_embd % c.n_head != 0 {
                    return bad(format!("n_embd {} is not divisible by n_head {}", c.n_embd, c.n_head));
                }
                if !matches!(c.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu" | "relu" | "silu" | "swish" | "tanh") {
                    return bad(format!(
                        "activation_function \"{}\" is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu, silu, tanh)",
                        c.activation_function
                    ));
                }
            }
            ModelConfig::Llama(c) => {
                if c.num_attention_heads == 0 || c.num_key_value_heads() == 0 {
                    return bad("num_attention_heads and num_key_value_heads must be positive".into());
                }
                if c.num_attention_heads % c.num_key_value_heads() != 0 {
                    return bad(format!(
                        "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                        c.num_attention_heads,
                        c.num_key_value_heads()
                    ));
                }
                if c.head_dim() % 2 != 0 {
                    return bad(format!("head_dim {} must be even for rotary embeddings", c.head_dim()));
                }
                if c.hidden_act != "silu" {
                    return bad(format!("hidden_act \"{}\" is not supported (silu)", c.hidden_act));
                }
                if let Some(s) = &c.rope_scaling {
                    if !s.is_null() {
                        return bad(format!("rope_scaling {s} is not supported yet"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every size within [`crate::limits`], and the parameter count from them in checked
    /// arithmetic: a config.json is untrusted, and a model is allocated from these numbers.
    fn check_sizes(&self) -> Result<()> {
        use crate::limits::*;
        let (kind, heads, kv_heads) = match self {
            ModelConfig::Gpt2(c) => ("n_head", c.n_head, c.n_head),
            ModelConfig::Llama(c) => ("num_attention_heads", c.num_attention_heads, c.num_key_value_heads.unwrap_or(c.num_attention_heads)),
        };
        let hidden = self.hidden();
        let inner = match self {
            ModelConfig::Gpt2(c) => c.n_inner.unwrap_or(hidden.saturating_mul(4)),
            ModelConfig::Llama(c) => c.intermediate_size,
        };
        let head_dim = match self {
            ModelConfig::Gpt2(c) => c.n_embd / c.n_head.max(1),
            ModelConfig::Llama(c) => c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads.max(1)),
        };
        let checks: [(&str, usize, usize, usize); 8] = [
            ("vocab_size", self.vocab_size(), 1, MAX_VOCAB),
            ("the hidden size", hidden, 1, MAX_HIDDEN),
            ("the MLP's inner size", inner, 1, MAX_INTERMEDIATE),
            ("the number of layers", self.layers(), 1, MAX_LAYERS),
            (kind, heads, 1, MAX_HEADS),
            ("the number of key/value heads", kv_heads, 1, MAX_HEADS),
            ("head_dim", head_dim, 1, MAX_HEAD_DIM),
            ("the context (max positions)", self.context(), 1, MAX_CONTEXT),
        ];
        for (name, value, lo, hi) in checks {
            if value < lo || value > hi {
                return Err(Error::input(format!(
                    "config.json: {name} is {value}; tinytune accepts {lo} to {hi}. Is this file damaged?"
                )));
            }
        }
        let eps = match self {
            ModelConfig::Gpt2(c) => c.layer_norm_epsilon,
            ModelConfig::Llama(c) => c.rms_norm_eps,
        };
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::input(format!("config.json: the norm epsilon must be a positive number, not {eps}")));
        }
        if let ModelConfig::Llama(c) = self {
            if !(c.rope_theta > 0.0 && c.rope_theta.is_finite()) {
                return Err(Error::input(format!("config.json: rope_theta must be a positive number, not {}", c.rope_theta)));
            }
        }
        // Parameters: embeddings (+ GPT-2's position table, + an untied head), and per layer the
        // attention projections and the MLP. Checked, so that no product wraps around.
        let count = || -> Option<u64> {
            let (v, h, i, l) = (self.vocab_size() as u64, hidden as u64, inner as u64, self.layers() as u64);
            let (q, kv) = ((heads as u64).checked_mul(head_dim as u64)?, (kv_heads as u64).checked_mul(head_dim as u64)?);
            let attention = h.checked_mul(q.checked_mul(2)?.checked_add(kv.checked_mul(2)?)?)?;
            let mlp = h.checked_mul(i)?.checked_mul(3)?;
            let per_layer = attention.checked_add(mlp)?;
            let embed = v.checked_mul(h)?.checked_mul(if self.tie_word_embeddings() { 1 } else { 2 })?;
            let positions = if matches!(self, ModelConfig::Gpt2(_)) { (self.context() as u64).checked_mul(h)? } else { 0 };
            l.checked_mul(per_layer)?.checked_add(embed)?.checked_add(positions)
        };
        match count() {
            Some(n) if n <= MAX_PARAMETERS => Ok(()),
            _ => Err(Error::input(format!(
                "config.json describes a model of more than {MAX_PARAMETERS} parameters; tinytune cannot hold it. Is this file damaged?"
            ))),
        }
    }

    pub fn model_type(&self) -> &str {
        match self {
            ModelConfig::Gpt2(_) => "gpt2",
            ModelConfig::Llama(c) => &c.model_type,
        }
    }
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }
    /// The longest sequence the model was built for.
    pub fn context(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_positions,
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }
    pub fn layers(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_layer,
            ModelConfig::Llama(c) => c.num_hidden_layers,
        }
    }
    pub fn heads(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_head,
            ModelConfig::Llama(c) => c.num_attention_heads,
        }
    }
    pub fn kv_heads(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_head,
            ModelConfig::Llama(c) => c.num_key_value_heads(),
        }
    }
    pub fn hidden(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_embd,
            ModelConfig::Llama(c) => c.hidden_size,
        }
    }
    /// The MLP's inner width.
    pub fn intermediate(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_inner(),
            ModelConfig::Llama(c) => c.intermediate_size,
        }
    }
    pub fn tie_word_embeddings(&self) -> bool {
        match self {
            ModelConfig::Gpt2(c) => c.tie_word_embeddings,
            ModelConfig::Llama(c) => c.tie_word_embeddings,
        }
    }
}
