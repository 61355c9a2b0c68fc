//! The layers both architectures share: linear, norms, rotary embeddings, causal attention with
//! grouped-query heads and a KV cache. Shapes use one set of letters everywhere:
//! B batch, T new tokens, S all attended tokens (cache + new), C model width, nh query heads,
//! nkv key/value heads, hs head size, V vocabulary.

use burn::tensor::{Device, Tensor, TensorData};

/// The frozen base of a linear layer: dense f32, or 4 bits as bitsandbytes stores it (QLoRA).
/// The layer computes the same map either way.
#[derive(Clone, Debug)]
pub enum Base {
    /// `[in, out]`: the loader transposes Hugging Face `nn.Linear` weights (`[out, in]`) once,
    /// while GPT-2's `Conv1D` already stores `[in, out]`.
    Dense(Tensor<2>),
    /// `[out, in]` packed in 4 bits on the device (both layouts quantize as `nn.Linear`, as
    /// transformers does); dequantized when used, never kept in f32.
    Quant(crate::quant::Q4Tensor),
    /// `[out, in]` in 8-bit codes with a scale a block (a GGUF file's Q8_0 or Q6_K weight), held on
    /// the host for the CPU engine; dequantized for many rows, read a byte a value for few
    /// (`quant::q8::linear`, whose backward pass keeps only the codes).
    Q8(crate::quant::q8::Q8Weight),
}

/// A linear map with a frozen base and any number of named LoRA adapters: `y = x·W (+ b)`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub base: Base,
    pub bias: Option<Tensor<1>>,
    pub adapters: Vec<crate::lora::LoraAdapter>,
}

impl Linear {
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Linear { base: Base::Dense(weight), bias, adapters: Vec::new() }
    }
    pub fn quantized(weight: crate::quant::Q4Tensor, bias: Option<Tensor<1>>) -> Self {
        Linear { base: Base::Quant(weight), bias, adapters: Vec::new() }
    }
    pub fn d_in(&self) -> usize {
        match &self.base {
            Base::Dense(w) => w.dims()[0],
            Base::Quant(q) => q.layout.cols,
            Base::Q8(q) => q.shape[1],
        }
    }
    pub fn d_out(&self) -> usize {
        match &self.base {
            Base::Dense(w) => w.dims()[1],
            Base::Quant(q) => q.layout.rows,
            Base::Q8(q) => q.shape[0],
        }
    }
    pub fn is_quantized(&self) -> bool {
        matches!(self.base, Base::Quant(_) | Base::Q8(_))
    }

    /// The base weight as f32 `[in, out]`, dequantized when it is stored in 4 bits or 8-bit codes. For
    /// merging and inspection; the forward pass never forms it for a 4-bit base.
    pub fn weight(&self) -> Tensor<2> {
        match &self.base {
            Base::Dense(w) => w.clone(),
            Base::Quant(q) => q.dequantize().transpose(),
            Base::Q8(q) => q.tensor().transpose(),
        }
    }

    /// `[B, T, in] -> [B, T, out]`: `x·W₀ (+ b) + Σ s·((dropout(x)·A)·B)` over enabled adapters.
    /// ΔW = A·B is never formed: the adapter path costs `r·(in + out)` per token.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let x2 = x.reshape([b * t, c]);
        // The common training case, one adapter on every row and no dropout, as one fused op.
        if let (Base::Dense(w), None, [adapter]) = (&self.base, &self.bias, self.adapters.as_slice())
            && adapter.enabled
            && adapter.rows.is_none()
            && !(adapter.training && adapter.dropout > 0.0)
        {
            return super::fused::lora_linear(x2, w.clone(), adapter.a.clone(), adapter.b.clone(), adapter.scale).reshape([b, t, self.d_out()]);
        }
        let mut y = match &self.base {
            Base::Dense(w) => super::fused::matmul(x2.clone(), w.clone()),
            // A few rows (decoding) go through the fused kernel; more dequantize for one matmul.
            Base::Quant(q) => q.linear(x2.clone(), b * t <= crate::quant::kernels::FUSED_MAX_ROWS),
            Base::Q8(q) => crate::quant::q8::linear(q, x2.clone()),
        };
        if let Some(bias) = &self.bias {
            y = y + bias.clone().unsqueeze::<2>();
        }
        let mut y = y.reshape([b, t, self.d_out()]);
        for adapter in self.adapters.iter().filter(|a| a.enabled) {
            let delta = adapter.forward(x2.clone()).reshape([b, t, self.d_out()]);
            // Multi-LoRA serving: an adapter routed to some rows of the batch only.
            y = y + match &adapter.rows {
                Some(mask) => delta * mask.clone(),
                None => delta,
            };
        }
        y
    }

    pub fn adapter(&self, name: &str) -> Option<&crate::lora::LoraAdapter> {
        self.adapters.iter().find(|a| a.name == name)
    }
    pub fn adapter_mut(&mut self, name: &str) -> Option<&mut crate::lora::LoraAdapter> {
        self.adapters.iter_mut().find(|a| a.name == name)
    }
}

/// A token embedding `[V, C]`: dense, or in 8-bit codes as a GGUF file stores it (Q8_0, Q6_K and
/// the other types `quant::q8` keeps; the CPU engine only). A tied output head is its transpose
/// either way.
#[derive(Clone, Debug)]
pub enum Embedding {
    Dense(Tensor<2>),
    Q8(crate::quant::q8::Q8Weight),
}

impl Embedding {
    /// `[V, C]`
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Embedding::Dense(t) => t.dims(),
            Embedding::Q8(q) => q.shape,
        }
    }

    /// The rows of `ids` `[B, T]` → `[B, T, C]`. Kept in 8 bits, the rows are dequantized on the
    /// host (the ids are the CPU engine's, read as they lie).
    pub fn lookup(&self, ids: Tensor<2, burn::tensor::Int>) -> Tensor<3> {
        match self {
            Embedding::Dense(t) => burn::tensor::module::embedding(t.clone(), ids),
            Embedding::Q8(q) => {
                let [b, t] = ids.dims();
                let device = ids.device();
                let [v, c] = q.shape;
                let mut out = vec![0f32; b * t * c];
                for (row, id) in out.chunks_exact_mut(c).zip(ids.into_data().iter::<i64>()) {
                    // burn's embedding panics on an index past the table, as this does.
                    assert!((0..v as i64).contains(&id), "token id {id} is outside the embedding's {v} rows");
                    tinytune_kernels::q8_dequant(q.view(), id as usize * c, row);
                }
                Tensor::from_data(TensorData::new(out, [b, t, c]), &device)
            }
        }
    }

    /// `x [N, C] · Eᵀ` → `[N, V]`: the tied output head.
    pub fn head(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Embedding::Dense(t) => super::fused::matmul(x, t.clone().transpose()),
            Embedding::Q8(q) => crate::quant::q8::linear(q, x),
        }
    }

    /// The table in f32 `[V, C]` (for saving, inspection and full finetuning).
    pub fn weight(&self) -> Tensor<2> {
        match self {
            Embedding::Dense(t) => t.clone(),
            Embedding::Q8(q) => q.tensor(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor<1>,
    pub bias: Tensor<1>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // Written out rather than burn's fused op so that autodiff and every backend see the
        // same arithmetic as PyTorch: biased variance, eps inside the square root.
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(2);
        let normed = centered / (var + self.eps).sqrt();
        normed * self.weight.clone().unsqueeze::<3>() + self.bias.clone().unsqueeze::<3>()
    }
}

#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor<1>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        super::fused::rms_norm(x, self.weight.clone(), self.eps)
    }
}

/// Rotary position embeddings in the Hugging Face Llama layout (`rotate_half`: the two halves
/// of each head are the real and imaginary parts). The cos/sin rows are computed for the
/// positions a forward pass uses, never as a table of the whole context (Llama 3 configs say
/// 131072 positions: a table would hold 67M values a head size of 128).
#[derive(Clone, Debug)]
pub struct Rotary {
    /// `hs / 2` frequencies, as transformers computes them: `1 / θ^(2i/hs)` in f32.
    inv_freq: Vec<f32>,
    half: usize,
}

/// The cos and sin of one forward pass's positions, `[1 or B, 1, T, hs]`.
#[derive(Clone, Debug)]
pub struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rotary {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        Rotary { inv_freq, half }
    }

    /// cos and sin rows `[positions.len(), hs]`: position·inv_freq in f32, the frequencies twice.
    pub(crate) fn rows(&self, positions: &[i32]) -> (Vec<f32>, Vec<f32>) {
        let hs = 2 * self.half;
        let mut cos = Vec::with_capacity(positions.len() * hs);
        let mut sin = Vec::with_capacity(positions.len() * hs);
        for &p in positions {
            for _half in 0..2 {
                for f in &self.inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        (cos, sin)
    }

    /// The tables for positions `start..start + t`, shared by every row.
    pub fn at(&self, start: usize, t: usize, device: &Device) -> RopeTables {
        let positions: Vec<i32> = (start..start + t).map(|p| p as i32).collect();
        let (cos, sin) = self.rows(&positions);
        let hs = 2 * self.half;
        let tensor = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, t, hs]), device);
        RopeTables { cos: tensor(cos), sin: tensor(sin) }
    }

    /// The tables for per-row positions `[B·T]` (a left-padded batch).
    pub fn at_rows(&self, positions: &[i32], b: usize, t: usize, device: &Device) -> RopeTables {
        let (cos, sin) = self.rows(positions);
        let hs = 2 * self.half;
        let tensor = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [b, 1, t, hs]), device);
        RopeTables { cos: tensor(cos), sin: tensor(sin) }
    }
}

impl RopeTables {
    /// `[B, heads, T, hs]` rotated.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        // x·cos + rotate_half(x)·sin, one fused op.
        super::fused::rotary(x, self.cos.clone(), self.sin.clone())
    }
}

/// Keys and values of the tokens seen so far, per layer: `[B, nkv, S, hs]`. A batch of prompts
/// of different lengths is left-padded; `offsets[b]` is row b's padding, so its tokens keep the
/// positions they would have alone (position = slot − offset).
///
/// Each layer's keys and values live in buffers with room to spare (`[B, nkv, capacity, hs]`,
/// the capacity doubling when full), and a new token is written into its slot in place. Joining
/// the old keys and the new ones into a fresh tensor at every token instead copied the whole
/// cache per token and layer (15% of a decoding profile, benches/README.md).
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Slots filled in every layer's buffers.
    filled: usize,
    offsets: Vec<usize>,
}

/// Slots a layer's buffers start with; they double from there.
const KV_MIN_CAPACITY: usize = 64;

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache { layers: vec![None; layers], filled: 0, offsets: Vec::new() }
    }
    /// A cache for a left-padded batch: `offsets[b]` pad slots precede row b's tokens.
    pub fn with_offsets(layers: usize, offsets: Vec<usize>) -> Self {
        KvCache { layers: vec![None; layers], filled: 0, offsets }
    }
    /// The position ids `[B·T]` of `t` new tokens after `past` cached slots, per row (pad slots
    /// get 0; they are masked out as keys and their outputs are never used). `None` when no row
    /// is padded: positions are then `past..past + t` for every row.
    pub fn positions(&self, batch: usize, past: usize, t: usize) -> Option<Vec<i32>> {
        if self.offsets.iter().all(|&o| o == 0) {
            return None;
        }
        Some((0..batch).flat_map(|b| (0..t).map(move |j| (past + j).saturating_sub(self.offsets[b]) as i32)).collect())
    }
    /// Tokens already cached.
    pub fn len(&self) -> usize {
        self.filled
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Append this step's keys and values and return everything cached for the layer (views of
    /// the first `len` slots of its buffers). Every layer appends once per forward pass; the
    /// last one moves `len` on.
    fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, nkv, t, hs] = k.dims();
        let (start, end) = (self.filled, self.filled + t);
        let (pk, pv) = self.layers[layer].take().unzip();
        // Moved out of the cache first, so that the buffers are not shared and the write below
        // happens in place.
        let keys = grown(pk, [b, nkv, hs], end, &k.device()).slice_assign([0..b, 0..nkv, start..end, 0..hs], k);
        let values = grown(pv, [b, nkv, hs], end, &v.device()).slice_assign([0..b, 0..nkv, start..end, 0..hs], v);
        let seen = (keys.clone().slice([0..b, 0..nkv, 0..end, 0..hs]), values.clone().slice([0..b, 0..nkv, 0..end, 0..hs]));
        self.layers[layer] = Some((keys, values));
        if layer + 1 == self.layers.len() {
            self.filled = end;
        }
        seen
    }
}

/// A layer's buffer with room for `end` slots: as it is, or grown to twice its capacity (at least
/// `end`, at least `KV_MIN_CAPACITY`) with zeros after what it holds.
fn grown(buffer: Option<Tensor<4>>, [b, nkv, hs]: [usize; 3], end: usize, device: &Device) -> Tensor<4> {
    let capacity = buffer.as_ref().map_or(0, |x| x.dims()[2]);
    if end <= capacity {
        return buffer.expect("a buffer with room");
    }
    let room = Tensor::<4>::zeros([b, nkv, end.max(2 * capacity).max(KV_MIN_CAPACITY) - capacity, hs], device);
    match buffer {
        Some(old) => Tensor::cat(vec![old, room], 2),
        None => room,
    }
}

/// What the CPU engine's decoding step (`super::decode`) does with the cache: for one sequence
/// (no left padding) whose every layer holds keys and values, each layer's two buffers are moved
/// out with room for one more slot (`take_one`), written and read in place, and put back
/// (`put`); `advance` then counts the slot.
impl KvCache {
    /// Whether the cache holds one unpadded sequence on the CPU engine in each of its `layers`
    /// layers, `nkv` heads of `hs`, so that `take_one` applies.
    pub(crate) fn is_single_filled(&self, layers: usize, nkv: usize, hs: usize) -> bool {
        self.filled > 0
            && self.layers.len() == layers
            && self.offsets.iter().all(|&o| o == 0)
            && self.layers.iter().all(|l| l.as_ref().is_some_and(|(k, v)| {
                let [b, heads, capacity, size] = k.dims();
                b == 1 && heads == nkv && size == hs && capacity >= self.filled && v.dims() == k.dims() && crate::device::is_cpu(&k.device()) && crate::device::is_cpu(&v.device())
            }))
    }
    /// Layer `layer`'s key and value buffers `[1, nkv, capacity, hs]`, moved out of the cache and
    /// grown (as `append` grows them) when slot `len()` is past their capacity.
    pub(crate) fn take_one(&mut self, layer: usize) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = self.layers[layer].take().expect("take_one: a layer the prompt filled (is_single_filled)");
        let [b, nkv, _, hs] = k.dims();
        let device = k.device();
        let end = self.filled + 1;
        (grown(Some(k), [b, nkv, hs], end, &device), grown(Some(v), [b, nkv, hs], end, &device))
    }
    /// Put back what `take_one` moved out.
    pub(crate) fn put(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) {
        self.layers[layer] = Some((k, v));
    }
    /// Count the slot every layer has written.
    pub(crate) fn advance(&mut self) {
        self.filled += 1;
    }
}

/// An additive attention mask `[B, 1, T, S]`: 0 where a query may attend, a large negative
/// number where it may not. Causal over absolute positions; `pad[b][s] == false` hides key s.
pub fn attention_mask(t: usize, past: usize, pad: Option<&[Vec<bool>]>, batch: usize, device: &Device) -> Tensor<4> {
    // Softmax makes a hidden score exactly 0 either way. On the CPU engine, with no padding (so
    // every row keeps its own position and its maximum is finite), -inf takes expf's fast path;
    // a finite -1e30 took its underflow path, errno and all, for half the scores of every causal
    // attention (2.9% of a training step's samples in xflowf and with_errnof alone). GPUs keep
    // the finite value: WGSL lets a compiler assume there are no infinities.
    let hidden: f32 = if crate::device::is_cpu(device) && pad.is_none() { f32::NEG_INFINITY } else { -1e30 };
    let s = past + t;
    let mut m = vec![0f32; batch * t * s];
    for b in 0..batch {
        for i in 0..t {
            for j in 0..s {
                let visible = j <= past + i && pad.is_none_or(|p| p[b][j]);
                if !visible {
                    m[(b * t + i) * s + j] = hidden;
                }
            }
        }
    }
    Tensor::<4>::from_data(TensorData::new(m, [batch, 1, t, s]), device)
}

/// Scaled dot-product attention over grouped heads, scores scaled by 1/√hs.
/// q `[B, nh, T, hs]`, k and v `[B, nkv, S, hs]`, mask `[B, 1, T, S]` → `[B, nh, T, hs]`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    let hs = q.dims()[3];
    attention_scaled(q, k, v, mask, 1.0 / (hs as f64).sqrt())
}

/// `attention` with the scores multiplied by `scale`: one fused op (`fused::attention`). Each
/// key/value head serves nh/nkv consecutive query heads (transformers' repeat_kv), without copies.
pub fn attention_scaled(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>, scale: f64) -> Tensor<4> {
    super::fused::attention(q, k, v, mask, scale)
}

/// Write a token-major KV update into the cache (if any) and return the full keys and values.
pub fn cached_kv(cache: Option<&mut KvCache>, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    match cache {
        Some(c) => c.append(layer, k, v),
        None => (k, v),
    }
}

/// `[B, T, nh·hs] -> [B, nh, T, hs]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, t, c] = x.dims();
    x.reshape([b, t, heads, c / heads]).swap_dims(1, 2)
}

/// `[B, nh, T, hs] -> [B, T, nh·hs]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, nh, t, hs] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, nh * hs])
}
