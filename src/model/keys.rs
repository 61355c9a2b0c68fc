//! Checkpoint keys ↔ our modules, per architecture: the Hugging Face names, and which weights
//! are stored transposed, for loading (`gpt2`, `llama`), saving (`checkpoint_tensors`) and
//! training every weight (`weights_mut`). Every rename lives here and nowhere else.

use burn::tensor::Tensor;

use super::config::{Gpt2Config, LlamaConfig};
use super::layers::{Base, LayerNorm, Linear, RmsNorm};
use super::load::Weights;
use crate::quant::Q4Tensor;
use crate::{Error, Result};

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
    let embed = w.embedding("model.embed_tokens.weight", v, e)?;
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
        // Kept in 8-bit codes where a GGUF file stores it so (`Weights::linear`).
        Some(w.linear("lm_head", e, v, false)?)
    } else if c.tie_word_embeddings {
        None
    } else {
        return Err(Error::input(
            "the weights have no \"lm_head.weight\" and config.json says tie_word_embeddings false",
        ));
    };
    Ok(Llama::new(c.clone(), embed, layers, rms("model.norm.weight")?, lm_head))
}

/// One tensor of the model under its checkpoint key, for saving: the inverse of `gpt2` and `llama` above.
pub(super) enum Saved {
    Vector(Tensor<1>),
    /// Written as it is held.
    Matrix(Tensor<2>),
    /// Held `[in, out]`, written `[out, in]` (an `nn.Linear` weight).
    Transposed(Tensor<2>),
    /// A 4-bit weight, written in bitsandbytes' serialization.
    Quant(Q4Tensor),
    /// A weight kept in 8-bit codes (GGUF), written as float weights: its values.
    Q8(crate::quant::q8::Q8Weight),
}

pub(super) fn checkpoint_tensors(arch: &super::Arch) -> Vec<(String, Saved)> {
    use Saved::*;
    let mut out: Vec<(String, Saved)> = Vec::new();
    let linear = |out: &mut Vec<(String, Saved)>, key: String, l: &Linear, conv1d: bool| {
        let saved = match &l.base {
            Base::Dense(w) if conv1d => Matrix(w.clone()),
            Base::Dense(w) => Transposed(w.clone()),
            Base::Quant(q) => Quant(q.clone()),
            Base::Q8(q) => Q8(q.clone()),
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
            out.push((
                "model.embed_tokens.weight".into(),
                match &m.embed_tokens {
                    super::layers::Embedding::Dense(t) => Matrix(t.clone()),
                    super::layers::Embedding::Q8(q) => Q8(q.clone()),
                },
            ));
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
                linear(&mut out, "lm_head".into(), h, false);
            }
        }
    }
    out
}

/// A mutable view of one weight, for training every parameter (full and partial finetuning).
pub enum WeightMut<'a> {
    Vector(&'a mut Tensor<1>),
    Matrix(&'a mut Tensor<2>),
    /// A 4-bit weight: frozen, it cannot train (dequantize the model first).
    Quant(&'a mut Q4Tensor),
    /// A weight kept in 8-bit codes: frozen as well.
    Q8(&'a crate::quant::q8::Quant8),
}

impl WeightMut<'_> {
    pub fn numel(&self) -> usize {
        match self {
            WeightMut::Vector(t) => t.dims()[0],
            WeightMut::Matrix(t) => t.dims().iter().product(),
            WeightMut::Quant(q) => q.layout.numel(),
            WeightMut::Q8(q) => q.numel(),
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
            Base::Q8(q) => WeightMut::Q8(q),
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
                out.push((
                    "model.embed_tokens.weight".into(),
                    match &mut m.embed_tokens {
                        super::layers::Embedding::Dense(t) => Matrix(t),
                        super::layers::Embedding::Q8(q) => Q8(q),
                    },
                ));
                if let Some(h) = &mut m.lm_head {
                    lin(&mut out, "lm_head".into(), h);
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
