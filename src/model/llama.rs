//! Llama (Touvron et al. 2023) as Hugging Face `LlamaForCausalLM` computes it: RMSNorm, rotary
//! positions (`rope_theta`), SwiGLU, grouped-query attention. The same code runs Mistral (within
//! its sliding window) and Qwen2 (q/k/v biases, tied embeddings), which share the shape.

use burn::tensor::{Int, Tensor};

use super::config::LlamaConfig;
use super::layers::{Embedding, KvCache, Linear, RmsNorm, Rotary, attention, attention_mask, cached_kv, merge_heads, split_heads};

#[derive(Clone, Debug)]
pub struct Layer {
    pub input_layernorm: RmsNorm,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub post_attention_layernorm: RmsNorm,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Clone, Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    /// `[V, C]`, dense or kept in 8-bit codes (a GGUF file's Q8_0 or Q6_K, on the CPU engine).
    pub embed_tokens: Embedding,
    pub layers: Vec<Layer>,
    pub norm: RmsNorm,
    /// `C → V`, a linear map with no bias and no adapters: `[C, V]` dense, or `[V, C]` in 8-bit
    /// codes as a GGUF file stores it; `None` when tied: the head is then `embed_tokensᵀ`.
    pub lm_head: Option<Linear>,
    pub(crate) rotary: Rotary,
}

impl Llama {
    pub fn new(
        config: LlamaConfig,
        embed_tokens: Embedding,
        layers: Vec<Layer>,
        norm: RmsNorm,
        lm_head: Option<Linear>,
    ) -> Self {
        let rotary = Rotary::new(config.head_dim(), config.rope_theta);
        Llama { config, embed_tokens, layers, norm, lm_head, rotary }
    }

    /// The usable context. Mistral's sliding window is not implemented, so a window shorter than
    /// the position table caps the context instead: within it, windowed and full attention agree.
    pub fn context_of(config: &LlamaConfig) -> usize {
        match (config.sliding_window, config.use_sliding_window) {
            (Some(w), Some(true) | None) if config.model_type == "mistral" => w.min(config.max_position_embeddings),
            _ => config.max_position_embeddings,
        }
    }

    /// ids `[B, T]` → logits `[B, T, V]`. With a cache, positions continue after what it holds.
    pub fn forward(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>, pad: Option<&[Vec<bool>]>) -> Tensor<3> {
        let [b, t] = ids.dims();
        self.head(self.hidden(ids, cache, pad).reshape([b * t, self.config.hidden_size])).reshape([b, t, self.config.vocab_size])
    }

    /// The output head: the final norm's rows `[N, C]` → logits `[N, V]`.
    pub fn head(&self, x: Tensor<2>) -> Tensor<2> {
        let [n, c] = x.dims();
        match &self.lm_head {
            Some(head) => head.forward(x.reshape([1, n, c])).reshape([n, self.config.vocab_size]),
            None => self.embed_tokens.head(x),
        }
    }

    /// ids `[B, T]` → the final norm's output `[B, T, C]`, what the head reads.
    pub fn hidden(&self, ids: Tensor<2, Int>, mut cache: Option<&mut KvCache>, pad: Option<&[Vec<bool>]>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let c = &self.config;
        let past = cache.as_ref().map_or(0, |k| k.len());
        let device = ids.device();
        if past + t > Self::context_of(c) {
            // Callers check the context first; this keeps a bug from computing positions past it.
            panic!("positions {past}..{} are past the context of {}", past + t, Self::context_of(c));
        }
        let rope = match cache.as_ref().and_then(|k| k.positions(b, past, t)) {
            Some(p) => self.rotary.at_rows(&p, b, t, &device),
            None => self.rotary.at(past, t, &device),
        };
        let rotate = |x: Tensor<4>| rope.apply(x);
        let mut x = self.embed_tokens.lookup(ids);
        let mask = attention_mask(t, past, pad, b, &device);
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(x.clone());
            let q = rotate(split_heads(layer.q_proj.forward(h.clone()), c.num_attention_heads));
            let k = rotate(split_heads(layer.k_proj.forward(h.clone()), c.num_key_value_heads()));
            let v = split_heads(layer.v_proj.forward(h), c.num_key_value_heads());
            let (k, v) = cached_kv(cache.as_deref_mut(), i, k, v);
            x = x + layer.o_proj.forward(merge_heads(attention(q, k, v, mask.clone())));
            let h = layer.post_attention_layernorm.forward(x.clone());
            let mlp = super::fused::silu_mul(layer.gate_proj.forward(h.clone()), layer.up_proj.forward(h));
            x = x + layer.down_proj.forward(mlp);
        }
        self.norm.forward(x)
    }
}
