//! GPT-2 (Radford et al. 2019), as Hugging Face `GPT2LMHeadModel` computes it: learned
//! positions, pre-LayerNorm blocks, the configured activation (`gelu_new` by default), attention
//! scaled by 1/√hs unless `scale_attn_weights` is false (and by 1/(i+1) in layer i with
//! `scale_attn_by_inverse_layer_idx`), and `Conv1D` weights stored `[in, out]`.

use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor};

use super::config::Gpt2Config;
use super::layers::{KvCache, LayerNorm, Linear, attention_mask, attention_scaled, cached_kv, merge_heads, split_heads};

#[derive(Clone, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub c_attn: Linear,
    pub attn_c_proj: Linear,
    pub ln_2: LayerNorm,
    pub c_fc: Linear,
    pub mlp_c_proj: Linear,
}

#[derive(Clone, Debug)]
pub struct Gpt2 {
    pub config: Gpt2Config,
    /// `[V, C]`
    pub wte: Tensor<2>,
    /// `[context, C]`
    pub wpe: Tensor<2>,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
    /// `[C, V]`; `None` when tied: the head is then `wteᵀ`, so training the embeddings trains it.
    pub lm_head: Option<Tensor<2>>,
}

/// GPT-2's tanh approximation of GELU ("gelu_new", also transformers' "gelu_pytorch_tanh" and,
/// to within its rounded constant, "gelu_fast").
fn gelu_new(x: Tensor<3>) -> Tensor<3> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * (inner.tanh() + 1.0) * 0.5
}

/// transformers' `ACT2FN[activation_function]` (names checked when the config is read).
fn activation(name: &str, x: Tensor<3>) -> Tensor<3> {
    use burn::tensor::activation as act;
    match name {
        "gelu" => act::gelu(x),
        "relu" => act::relu(x),
        "silu" | "swish" => act::silu(x),
        "tanh" => x.tanh(),
        "gelu_fast" => {
            let inner = (x.clone() * x.clone() * 0.044715 + 1.0) * x.clone() * 0.797_884_560_8;
            x * (inner.tanh() + 1.0) * 0.5
        }
        _ => gelu_new(x),
    }
}

impl Gpt2 {
    /// ids `[B, T]` → logits `[B, T, V]`. With a cache, positions continue after what it holds.
    pub fn forward(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>, pad: Option<&[Vec<bool>]>) -> Tensor<3> {
        let [b, t] = ids.dims();
        self.head(self.hidden(ids, cache, pad).reshape([b * t, self.config.n_embd])).reshape([b, t, self.config.vocab_size])
    }

    /// The output head: the final norm's rows `[N, C]` → logits `[N, V]`.
    pub fn head(&self, x: Tensor<2>) -> Tensor<2> {
        super::fused::matmul(x, self.lm_head.clone().unwrap_or_else(|| self.wte.clone().transpose()))
    }

    /// ids `[B, T]` → the final norm's output `[B, T, C]`, what the head reads.
    pub fn hidden(&self, ids: Tensor<2, Int>, mut cache: Option<&mut KvCache>, pad: Option<&[Vec<bool>]>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let c = self.config.n_embd;
        let past = cache.as_ref().map_or(0, |k| k.len());
        let device = ids.device();
        let positions = match cache.as_ref().and_then(|k| k.positions(b, past, t)) {
            Some(p) => {
                let idx = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(p, [b * t]), &ids.device());
                self.wpe.clone().select(0, idx).reshape([b, t, c])
            }
            None => self.wpe.clone().slice([past..past + t, 0..c]).unsqueeze::<3>(),
        };
        let mut x = embedding(self.wte.clone(), ids) + positions;
        let mask = attention_mask(t, past, pad, b, &device);
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.ln_1.forward(x.clone());
            let qkv = block.c_attn.forward(h);
            let q = split_heads(qkv.clone().slice([0..b, 0..t, 0..c]), self.config.n_head);
            let k = split_heads(qkv.clone().slice([0..b, 0..t, c..2 * c]), self.config.n_head);
            let v = split_heads(qkv.slice([0..b, 0..t, 2 * c..3 * c]), self.config.n_head);
            let (k, v) = cached_kv(cache.as_deref_mut(), i, k, v);
            let hs = c / self.config.n_head;
            let mut scale = if self.config.scale_attn_weights { 1.0 / (hs as f64).sqrt() } else { 1.0 };
            if self.config.scale_attn_by_inverse_layer_idx {
                scale /= (i + 1) as f64;
            }
            let a = merge_heads(attention_scaled(q, k, v, mask.clone(), scale));
            x = x + block.attn_c_proj.forward(a);
            let h = block.ln_2.forward(x.clone());
            x = x + block.mlp_c_proj.forward(activation(&self.config.activation_function, block.c_fc.forward(h)));
        }
        self.ln_f.forward(x)
    }
}
