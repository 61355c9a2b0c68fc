//! The memory calculator: the ledger's formula (`memory::predict`) for any Hugging Face
//! `config.json`, without loading a model, for full finetuning, LoRA and QLoRA side by side.
//! Two assumptions the course's figures rest on can be switched on: bf16 compute (activations in
//! 2 bytes) and gradient checkpointing (only each block's input is kept; one block's activations
//! are recomputed at a time).

use serde::Serialize;

use super::memory::{ModelShape, NF4_BITS, Parts, RunShape, predict};
use crate::Result;
use crate::model::ModelConfig;

/// Well-known sizes, as their config.json files give them.
pub const PRESETS: [(&str, &str); 3] = [
    ("gpt2-124m", r#"{"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}"#),
    (
        "llama-3-8b",
        r#"{"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192, "rope_theta": 500000.0}"#,
    ),
    (
        "llama-2-65b",
        r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 8192, "intermediate_size": 22016, "num_hidden_layers": 80,
            "num_attention_heads": 64, "num_key_value_heads": 64, "max_position_embeddings": 2048}"#,
    ),
];

/// A config.json's text, or a preset's by name.
pub fn config_text(name_or_json: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name_or_json).map(|(_, c)| *c)
}

/// The sizes the formula needs, from config.json alone.
pub fn shape_of(config: &ModelConfig) -> ModelShape {
    let (c, i, v, layers) = (config.hidden(), config.intermediate(), config.vocab_size(), config.layers());
    // Parameter counts in u64 (a 65B model overflows a 32-bit usize, as the page's engine has).
    let (c64, i64_, v64) = (c as u64, i as u64, v as u64);
    let mut linears = Vec::new();
    let mut layer_params = Vec::with_capacity(layers);
    let (embed, final_norm) = match config {
        ModelConfig::Gpt2(g) => {
            for b in 0..layers {
                let p = format!("transformer.h.{b}");
                linears.push((b, format!("{p}.attn.c_attn"), c, 3 * c));
                linears.push((b, format!("{p}.attn.c_proj"), c, c));
                linears.push((b, format!("{p}.mlp.c_fc"), c, i));
                linears.push((b, format!("{p}.mlp.c_proj"), i, c));
                // Weights and biases of the four linears, two LayerNorms (weight and bias).
                let (c, i) = (c64, i64_);
                layer_params.push(c * 3 * c + 3 * c + c * c + c + c * i + i + i * c + c + 4 * c);
            }
            let head = if config.tie_word_embeddings() { 0 } else { v64 * c64 };
            (v64 * c64 + g.n_positions as u64 * c64 + head, 2 * c64)
        }
        ModelConfig::Llama(l) => {
            let (q, kv) = (l.num_attention_heads * l.head_dim(), l.num_key_value_heads() * l.head_dim());
            for b in 0..layers {
                let p = format!("model.layers.{b}");
                for (name, i_, o) in [("self_attn.q_proj", c, q), ("self_attn.k_proj", c, kv), ("self_attn.v_proj", c, kv), ("self_attn.o_proj", q, c),
                                      ("mlp.gate_proj", c, i), ("mlp.up_proj", c, i), ("mlp.down_proj", i, c)] {
                    linears.push((b, format!("{p}.{name}"), i_, o));
                }
                let (c, i, q, kv) = (c64, i64_, q as u64, kv as u64);
                let bias = if l.qkv_bias() { q + 2 * kv } else { 0 };
                layer_params.push(c * q + 2 * c * kv + q * c + 3 * c * i + bias + 2 * c);
            }
            let head = if config.tie_word_embeddings() { 0 } else { v64 * c64 };
            (v64 * c64 + head, c64)
        }
    };
    let params = embed + final_norm + layer_params.iter().sum::<u64>();
    ModelShape { params, layer_params, final_norm_params: final_norm, linears, hidden: c, inner: i, heads: config.heads(), vocab: v }
}

/// The course's assumptions, beyond the ledger's own (f32 everywhere, everything kept).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Assumptions {
    /// Activations in bf16 (2 bytes) rather than f32.
    pub bf16_activations: bool,
    /// Gradient checkpointing: keep each block's input, recompute one block at a time.
    pub checkpointing: bool,
}

/// The ledger's prediction with the assumptions applied to the activations.
pub fn predict_with(shape: &ModelShape, run: &RunShape, a: Assumptions) -> Parts {
    let mut parts = predict(shape, run);
    let bytes = if a.bf16_activations { 2.0 } else { 4.0 };
    let tokens = (run.batch * run.seq) as f64;
    let layers = shape.layer_params.len() as f64;
    let (c, i, nh, t) = (shape.hidden as f64, shape.inner as f64, shape.heads as f64, run.seq as f64);
    let adapted_per_block = if layers > 0.0 {
        shape.linears.iter().filter(|(_, p, _, _)| run.method.is_adapter() && run.targets.matches(p)).count() as f64 / layers
    } else {
        0.0
    };
    let per_block = 12.0 * c + 4.0 * i + 2.0 * nh * t + run.rank as f64 * adapted_per_block;
    let top = 2.0 * c + 2.0 * shape.vocab as f64;
    let kept = if a.checkpointing { layers * c + per_block + top } else { layers * per_block + top };
    if a.checkpointing || a.bf16_activations {
        parts.activations = tokens * kept * bytes;
    }
    parts
}

/// One method's row of the calculator.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub method: &'static str,
    pub parts: Parts,
    pub total: f64,
}

/// Full finetuning, LoRA and QLoRA for one config at one batch and sequence length.
pub fn table(config: &ModelConfig, run: &RunShape, a: Assumptions) -> Result<Vec<Row>> {
    use crate::train::trainer::Method;
    let shape = shape_of(config);
    let mut rows = Vec::new();
    for (name, method, nf4) in [("full", Method::Full, false), ("LoRA", Method::Lora, false), ("QLoRA (NF4 base)", Method::Qlora, true)] {
        let r = RunShape { method, nf4, ..run.clone() };
        let parts = predict_with(&shape, &r, a);
        rows.push(Row { method: name, total: parts.total(), parts });
    }
    Ok(rows)
}

/// The formula, in words, for the calculator's output.
pub fn formula(a: Assumptions) -> String {
    format!(
        "weights = frozen params x 4 B (QLoRA: linear weights at {NF4_BITS:.3} bits); trainable = gradients = trained params x 4 B; \
         AdamW = 2 x trainable; activations = B x T x ({}) x {} B",
        if a.checkpointing { "L x C + one block's (12C + 4I + 2 nh T + r m) + 2C + 2V" } else { "L x (12C + 4I + 2 nh T + r m) + 2C + 2V" },
        if a.bf16_activations { 2 } else { 4 }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_count_the_parameters_their_models_have() {
        // GPT-2 124M: 124,439,808 with the tied head (transformers' count); Llama-3-8B: 8.03B;
        // Llama-2-65B: 65.29B.
        let count = |n: &str| shape_of(&ModelConfig::from_json(config_text(n).unwrap()).unwrap()).params;
        assert_eq!(count("gpt2-124m"), 124_439_808);
        assert_eq!(count("llama-3-8b"), 8_030_261_248);
        assert_eq!(count("llama-2-65b"), 65_285_660_672);
    }

    #[test]
    fn a_config_gives_the_shape_a_loaded_model_has() {
        for name in ["tiny-llama", "tiny-gpt2", "tiny-qwen2"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
            let mut model = crate::model::Model::load_dir(&dir, &burn::tensor::Device::flex()).unwrap();
            let loaded = ModelShape::of(&mut model);
            let computed = shape_of(&model.config);
            assert_eq!(computed.params, loaded.params, "{name}");
            assert_eq!(computed.layer_params, loaded.layer_params, "{name}");
            assert_eq!(computed.final_norm_params, loaded.final_norm_params, "{name}");
            assert_eq!(computed.linears, loaded.linears, "{name}");
        }
    }
}
