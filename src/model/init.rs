//! A model with fresh random weights, from a `config.json` and a tokenizer: the starting point
//! of pretraining from scratch. Weights follow transformers' `_init_weights`: normal with
//! std `initializer_range` (default 0.02) for matrices, ones for norm weights, zeros for biases.

use super::config::{Gpt2Config, LlamaConfig, ModelConfig};
use super::load::ModelFiles;
use crate::rng::Rng;
use crate::Result;

enum Fill {
    Normal,
    Ones,
    Zeros,
}

fn gpt2_shapes(c: &Gpt2Config) -> Vec<(String, Vec<usize>, Fill)> {
    use Fill::*;
    let (e, v, i) = (c.n_embd, c.vocab_size, c.n_inner());
    let mut out = vec![
        ("transformer.wte.weight".to_string(), vec![v, e], Normal),
        ("transformer.wpe.weight".to_string(), vec![c.n_positions, e], Normal),
    ];
    for l in 0..c.n_layer {
        let p = format!("transformer.h.{l}");
        out.extend([
            (format!("{p}.ln_1.weight"), vec![e], Ones),
            (format!("{p}.ln_1.bias"), vec![e], Zeros),
            (format!("{p}.attn.c_attn.weight"), vec![e, 3 * e], Normal),
            (format!("{p}.attn.c_attn.bias"), vec![3 * e], Zeros),
            (format!("{p}.attn.c_proj.weight"), vec![e, e], Normal),
            (format!("{p}.attn.c_proj.bias"), vec![e], Zeros),
            (format!("{p}.ln_2.weight"), vec![e], Ones),
            (format!("{p}.ln_2.bias"), vec![e], Zeros),
            (format!("{p}.mlp.c_fc.weight"), vec![e, i], Normal),
            (format!("{p}.mlp.c_fc.bias"), vec![i], Zeros),
            (format!("{p}.mlp.c_proj.weight"), vec![i, e], Normal),
            (format!("{p}.mlp.c_proj.bias"), vec![e], Zeros),
        ]);
    }
    out.push(("transformer.ln_f.weight".into(), vec![e], Ones));
    out.push(("transformer.ln_f.bias".into(), vec![e], Zeros));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![v, e], Normal));
    }
    out
}

fn llama_shapes(c: &LlamaConfig) -> Vec<(String, Vec<usize>, Fill)> {
    use Fill::*;
    let (e, v, i, hs) = (c.hidden_size, c.vocab_size, c.intermediate_size, c.head_dim());
    let (q, kv) = (c.num_attention_heads * hs, c.num_key_value_heads() * hs);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, e], Normal)];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![e], Ones));
        for (name, rows, cols, bias) in [("q_proj", q, e, c.qkv_bias()), ("k_proj", kv, e, c.qkv_bias()), ("v_proj", kv, e, c.qkv_bias()), ("o_proj", e, q, c.o_bias())] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, cols], Normal));
            if bias {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![rows], Zeros));
            }
        }
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![e], Ones));
        for (name, rows, cols) in [("gate_proj", i, e), ("up_proj", i, e), ("down_proj", e, i)] {
            out.push((format!("{p}.mlp.{name}.weight"), vec![rows, cols], Normal));
            if c.mlp_bias {
                out.push((format!("{p}.mlp.{name}.bias"), vec![rows], Zeros));
            }
        }
    }
    out.push(("model.norm.weight".into(), vec![e], Ones));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![v, e], Normal));
    }
    out
}

/// The files of a freshly initialised model: `config.json` as given, `model.safetensors` (f32)
/// with random weights, and the tokenizer.
pub fn random_model(config_json: &str, tokenizer_json: Vec<u8>, seed: u64) -> Result<ModelFiles> {
    let config = ModelConfig::from_json(config_json)?;
    let raw: serde_json::Value = serde_json::from_str(config_json).unwrap_or_default();
    let std = raw.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02);
    let shapes = match &config {
        ModelConfig::Gpt2(c) => gpt2_shapes(c),
        ModelConfig::Llama(c) => llama_shapes(c),
    };
    let mut rng = Rng::new(seed);
    let mut normal = || {
        let (u1, u2) = (rng.next_f64().max(1e-300), rng.next_f64());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
    };
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = shapes
        .into_iter()
        .map(|(key, shape, fill)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = match fill {
                Fill::Normal => (0..n).map(|_| normal()).collect(),
                Fill::Ones => vec![1.0; n],
                Fill::Zeros => vec![0.0; n],
            };
            (key, super::load::f32_bytes(&values), shape)
        })
        .collect();
    let weights = super::load::serialize_tensors(&tensors, safetensors::Dtype::F32, "model.safetensors")?;
    Ok(ModelFiles {
        config: config_json.to_string(),
        tokenizer: Some(tokenizer_json),
        tokenizer_config: None,
        generation_config: None,
        chat_template: None,
        weights: vec![("model.safetensors".into(), weights)],
        packed: Vec::new(),
        packed8: Vec::new(),
        source_bytes: None,
    })
}
