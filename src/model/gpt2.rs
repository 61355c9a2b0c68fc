//! GPT-2 (Radford et al. 2019), as Hugging Face `GPT2LMHeadModel` computes it: learned
//! positions, pre-LayerNorm blocks, `gelu_new`, and `Conv1D` weights stored `[in, out]`.

use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor};

use super::config::Gpt2Config;
use super::layers::{KvCache, LayerNorm, Linear, attention, attention_mask, cached_kv, merge_heads, split_heads};

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

/// GPT-2's tanh approximation of GELU ("gelu_new").
fn gelu_new(x: Tensor<3>) -> Tensor<3> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * (inner.tanh() + 1.0) * 0.5
}

impl Gpt2 {
    /// ids `[B, T]` → logits `[B, T, V]`. With a cache, positions continue after what it holds.
    pub fn forward(&self, ids: Tensor<2, Int>, mut cache: Option<&mut KvCache>, pad: Option<&[Vec<bool>]>) -> Tensor<3> {
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
            let a = merge_heads(attention(q, k, v, mask.clone()));
            x = x + block.attn_c_proj.forward(a);
            let h = block.ln_2.forward(x.clone());
            x = x + block.mlp_c_proj.forward(gelu_new(block.c_fc.forward(h)));
        }
        let x = self.ln_f.forward(x);
        x.reshape([b * t, c]).matmul(self.lm_head.clone().unwrap_or_else(|| self.wte.clone().transpose())).reshape([b, t, self.config.vocab_size])
    }
}
