//! One decoding step of a Llama-family model on the CPU engine, on the weights' and the KV
//! cache's buffers directly.
//!
//! Through `Llama::forward`, a token is about 20 tensor ops a layer (norms, three products and
//! two rotations, the cache write, attention, the residual adds, the MLP's gate), each with its
//! dispatch, its output tensor and its buffers. For the 24M model in f32 the products are 2.0 ms of
//! a 2.9 ms token, and the team's second thread waited for the calling one through 27% of the
//! token (perf, benches/README.md, "One decoding step outside the op-by-op path"). Here the same
//! step runs on slices: the same kernels (`blas::product`, `tinytune_kernels::rms_norm`,
//! `rotary`, `silu_mul`, `fused::decode_heads`) in the same order, so the logits are the ones
//! `forward` gives, bit for bit (tested), with the ops' overhead gone.
//!
//! It applies to a batch of one whose cache the prompt filled, on the CPU engine: weights in f32,
//! in bf16 kept as stored, or in 4 bits (a QLoRA base), each read by the kernel `forward` uses for
//! it, and LoRA adapters switched on (`tinytune generate --adapter`), in `Linear::forward`'s
//! order, tracked for training or not (the page's samples between steps). Anything else (a GPU,
//! adapters routed to some rows of a batch, dropout in training, batches) takes `forward`, as
//! before. (A tracked adapter is read as the constant it is now, so the step gives what `forward`
//! gives for it untracked. Natively that is also what `forward` gives tracked; in the page, where
//! there is no BLAS, `forward` composes a tracked adapter's products and adds them apart
//! (`fused::composed_lora_linear`), which can round differently in the last bits.)

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Tensor};

use super::layers::{Base, KvCache, Linear, RmsNorm};
use super::llama::Llama;

/// A CPU f32 tensor's buffer, when it is one tinytune can read as it lies. A tensor tracked for
/// training (an adapter the page is training, between steps) is read as the constant it is now.
fn flex<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    let f = t.clone().inner().try_into_primitive::<Flex>().ok()?;
    (f.dtype() == DType::F32 && f.as_slice::<f32>().is_some()).then_some(f)
}

/// The values of a tensor `flex` accepted.
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor (checked when the step was planned)")
}

/// A linear map's weight as the forward pass reads it on the CPU engine.
enum Weight {
    /// `[in, out]` in f32.
    F32(FlexTensor),
    /// `[out, in]` in bfloat16, a checkpoint's weight kept as stored (`Model::keep_bf16_weights`).
    Bf16(FlexTensor),
    /// Packed in 4 bits (QLoRA's base), its buffer of words and their layout.
    Q4(FlexTensor, crate::quant::Q4Layout),
    /// Kept in 8-bit codes with a scale a block (GGUF's Q8_0, Q6_K), on the host.
    Q8(crate::quant::q8::Q8Weight),
}

/// A LoRA adapter switched on for every row, out of training: A `[in, r]`, B `[r, out]`, s.
struct Adapter {
    a: FlexTensor,
    b: FlexTensor,
    r: usize,
    scale: f64,
}

/// A linear map: its weight, its bias and the adapters switched on.
struct Lin {
    w: Weight,
    bias: Option<FlexTensor>,
    adapters: Vec<Adapter>,
    /// As `Linear::forward` decides: one adapter (the only one the layer has) on a bias-free
    /// dense base goes through the fused op (`fused::lora_linear`).
    fused: bool,
    k: usize,
    n: usize,
}

impl Lin {
    fn new(l: &Linear) -> Option<Lin> {
        let mut adapters = Vec::new();
        for a in l.adapters.iter().filter(|a| a.enabled) {
            // Routed to some rows (serving several adapters) or with dropout on: `forward`.
            if a.rows.is_some() || (a.training && a.dropout > 0.0) {
                return None;
            }
            adapters.push(Adapter { a: flex(&a.a)?, b: flex(&a.b)?, r: a.rank(), scale: a.scale });
        }
        let fused = matches!(l.base, Base::Dense(_)) && l.bias.is_none() && l.adapters.len() == 1 && adapters.len() == 1;
        let (k, n) = (l.d_in(), l.d_out());
        let w = match &l.base {
            Base::Dense(w) if w.dtype() == DType::BF16 => {
                // As `blas::bf16_matmul` reads it: the `[in, out]` view's transpose, as stored.
                let t = w.clone().inner().transpose().try_into_primitive::<Flex>().ok()?;
                t.as_slice::<half::bf16>()?;
                Weight::Bf16(t)
            }
            Base::Dense(w) => Weight::F32(flex(w)?),
            Base::Quant(q) => {
                let words = q.words.clone().try_into_primitive::<Flex>().ok()?;
                if !matches!(words.dtype(), DType::U32 | DType::I32) {
                    return None;
                }
                Weight::Q4(words, q.layout)
            }
            Base::Q8(q) => Weight::Q8(q.clone()),
        };
        let bias = match &l.bias {
            Some(b) => Some(flex(b)?),
            None => None,
        };
        Some(Lin { w, bias, adapters, fused, k, n })
    }

    /// `s·(x·A)`, the adapter's rank-r intermediate, as both of `Linear::forward`'s paths form it.
    fn down(&self, a: &Adapter, x: &[f32]) -> Vec<f32> {
        let mut t = crate::blas::product(x, 1, values(&a.a), self.k, a.r, a.r, 1);
        let s = a.scale as f32;
        t.iter_mut().for_each(|v| *v *= s);
        t
    }

    /// `x·W` for one row, as `Linear::forward` computes it on the CPU engine (`blas::flex_matmul`
    /// for f32 and bf16 weights, `quant::Q4Tensor::linear` with its fused kernel for 4-bit ones,
    /// `Quant8::product` for 8-bit ones).
    fn product(&self, x: &[f32]) -> Vec<f32> {
        match &self.w {
            Weight::F32(w) => crate::blas::product(x, 1, values(w), self.k, self.n, self.n, 1),
            Weight::Bf16(w) => {
                let bits: &[u16] = half::slice::HalfFloatSliceExt::reinterpret_cast(w.as_slice::<half::bf16>().expect("checked in Lin::new"));
                crate::blas::bf16_product(x, 1, bits, self.k, self.n)
            }
            Weight::Q4(words, layout) => crate::quant::q4_product(x, 1, words.bytes(), layout),
            Weight::Q8(q) => q.product(x, 1),
        }
    }

    /// `x·W (+ b) + Σ s·(x·A)·B` for one row, in `Linear::forward`'s order.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        if self.fused {
            // `fused::lora_linear`: the base product, then t·B added into its buffer.
            let a = &self.adapters[0];
            let t = self.down(a, x);
            let mut y = self.product(x);
            crate::blas::row_product_add(&t, values(&a.b), self.n, self.n, 1, &mut y);
            return y;
        }
        let mut y = self.product(x);
        if let Some(b) = &self.bias {
            y.iter_mut().zip(values(b)).for_each(|(y, b)| *y += b);
        }
        for a in &self.adapters {
            let delta = crate::blas::product(&self.down(a, x), 1, values(&a.b), a.r, self.n, self.n, 1);
            y.iter_mut().zip(&delta).for_each(|(y, d)| *y += d);
        }
        y
    }
}

/// `Lin::apply` for several maps on one input. Where all are f32 weights without adapters, their
/// products are handed to the team together (`blas::row_products`).
fn apply_all<const N: usize>(maps: [&Lin; N], x: &[f32]) -> [Vec<f32>; N] {
    assert!(maps.iter().all(|m| m.k == x.len()), "a linear map's input is not the row's width");
    let f32_weights: Option<Vec<(&[f32], usize)>> = maps
        .iter()
        .map(|m| match &m.w {
            Weight::F32(w) if m.adapters.is_empty() => Some((values(w), m.n)),
            _ => None,
        })
        .collect();
    let Some(weights) = f32_weights else { return maps.map(|m| m.apply(x)) };
    let mut ys: [Vec<f32>; N] = crate::blas::row_products(x, &weights).try_into().expect("one output a map");
    for (y, m) in ys.iter_mut().zip(maps) {
        if let Some(b) = &m.bias {
            y.iter_mut().zip(values(b)).for_each(|(y, b)| *y += b);
        }
    }
    ys
}

struct Norm {
    w: FlexTensor,
    eps: f32,
}

impl Norm {
    fn new(n: &RmsNorm) -> Option<Norm> {
        Some(Norm { w: flex(&n.weight)?, eps: n.eps as f32 })
    }
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        tinytune_kernels::rms_norm(x, values(&self.w), self.eps, &mut out);
        out
    }
}

struct Block {
    input_norm: Norm,
    q: Lin,
    k: Lin,
    v: Lin,
    o: Lin,
    post_norm: Norm,
    gate: Lin,
    up: Lin,
    down: Lin,
}

/// The token embedding `[V, C]` as the forward pass reads it on the CPU engine.
enum Embed {
    F32(FlexTensor),
    /// Kept in 8-bit codes (a GGUF file's Q8_0 or Q6_K).
    Q8(crate::quant::q8::Q8Weight),
}

impl Embed {
    /// `[V, C]`
    fn dims(&self) -> [usize; 2] {
        match self {
            Embed::F32(t) => [t.layout().shape()[0], t.layout().shape()[1]],
            Embed::Q8(q) => q.shape,
        }
    }
    /// Row `id`, as `Embedding::lookup` gives it.
    fn row(&self, id: usize) -> Vec<f32> {
        let [_, c] = self.dims();
        match self {
            Embed::F32(t) => values(t)[id * c..][..c].to_vec(),
            Embed::Q8(q) => {
                let mut row = vec![0f32; c];
                tinytune_kernels::q8_dequant(q.view(), id * c, &mut row);
                row
            }
        }
    }
    /// `x · Eᵀ` for one row, as `Embedding::head` computes it: the tied output head.
    fn head(&self, x: &[f32]) -> Vec<f32> {
        let [v, c] = self.dims();
        match self {
            Embed::F32(t) => crate::blas::product(x, 1, values(t), c, v, 1, c),
            Embed::Q8(q) => q.product(x, 1),
        }
    }
}

/// The buffers of every weight one step reads, or None when the model does not qualify.
struct Plan {
    embed: Embed,
    blocks: Vec<Block>,
    norm: Norm,
    /// `[C, V]`; None when tied (the head is then the embedding's transpose).
    head: Option<Lin>,
}

impl Plan {
    fn new(m: &Llama) -> Option<Plan> {
        let blocks = m
            .layers
            .iter()
            .map(|l| {
                Some(Block {
                    input_norm: Norm::new(&l.input_layernorm)?,
                    q: Lin::new(&l.q_proj)?,
                    k: Lin::new(&l.k_proj)?,
                    v: Lin::new(&l.v_proj)?,
                    o: Lin::new(&l.o_proj)?,
                    post_norm: Norm::new(&l.post_attention_layernorm)?,
                    gate: Lin::new(&l.gate_proj)?,
                    up: Lin::new(&l.up_proj)?,
                    down: Lin::new(&l.down_proj)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let head = match &m.lm_head {
            Some(h) => Some(Lin::new(h)?),
            None => None,
        };
        let embed = match &m.embed_tokens {
            super::layers::Embedding::Dense(t) => Embed::F32(flex(t)?),
            super::layers::Embedding::Q8(q) => Embed::Q8(q.clone()),
        };
        Some(Plan { embed, blocks, norm: Norm::new(&m.norm)?, head })
    }
}

/// Rotate each `hs`-long head of `x` in place by the position's cos and sin rows.
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let hs = cos.len();
    let mut row = vec![0f32; hs];
    for head in x.chunks_exact_mut(hs) {
        tinytune_kernels::rotary(head, cos, sin, false, &mut row);
        head.copy_from_slice(&row);
    }
}

/// A cache buffer `[1, heads, capacity, hs]` as the CPU engine holds it (keys and values a
/// forward pass with tracked adapters wrote are read as the constants they are).
fn cache_buffer(t: Tensor<4>) -> FlexTensor {
    let f = t.inner().try_into_primitive::<Flex>().expect("a KV cache on the CPU engine (KvCache::is_single_filled)");
    if f.as_slice::<f32>().is_some() { f } else { f.to_contiguous() }
}

impl Llama {
    /// The logits `[V]` after token `id`, for a cache holding one sequence, through one step on
    /// the buffers (see the module's documentation). None where the step does not apply (nothing
    /// was changed then): the caller runs `forward`.
    pub(crate) fn decode_one(&self, id: u32, cache: &mut KvCache) -> Option<Vec<f32>> {
        let c = &self.config;
        let past = cache.len();
        let (nh, nkv, hs) = (c.num_attention_heads, c.num_key_value_heads(), c.head_dim());
        if !cache.is_single_filled(self.layers.len(), nkv, hs) || past + 1 > Self::context_of(c) {
            return None;
        }
        let plan = Plan::new(self)?;
        let [vocab, width] = plan.embed.dims();
        if (id as usize) >= vocab || width != c.hidden_size {
            return None;
        }
        let mut x = plan.embed.row(id as usize);
        let (cos, sin) = self.rotary.rows(&[past as i32]);
        let scale = 1.0 / (hs as f64).sqrt();
        // Every cached position is visible to the new token: an additive mask of zeros, as
        // `attention_mask` gives for one unpadded row.
        let mask = vec![0f32; past + 1];
        for (i, b) in plan.blocks.iter().enumerate() {
            let h = b.input_norm.apply(&x);
            let [mut q, mut k, v] = apply_all([&b.q, &b.k, &b.v], &h);
            rotate(&mut q, &cos, &sin);
            rotate(&mut k, &cos, &sin);
            let (kt, vt) = cache.take_one(i);
            let (mut kf, mut vf) = (cache_buffer(kt), cache_buffer(vt));
            let capacity = kf.layout().shape()[2];
            for (buffer, new) in [(&mut kf, &k), (&mut vf, &v)] {
                let (start, _) = buffer.layout().contiguous_offsets().expect("a contiguous cache buffer (cache_buffer)");
                let slots = &mut buffer.storage_mut::<f32>()[start..];
                for (head, row) in new.chunks_exact(hs).enumerate() {
                    slots[(head * capacity + past) * hs..][..hs].copy_from_slice(row);
                }
            }
            let heads = [0, capacity * hs];
            let attended = crate::model::fused::decode_heads(&q, (values(&kf), heads), (values(&vf), heads), &mask, [1, nh, nkv, past + 1, hs], scale);
            cache.put(i, Tensor::from_primitive::<Flex>(kf), Tensor::from_primitive::<Flex>(vf));
            let o = b.o.apply(&attended);
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let h = b.post_norm.apply(&x);
            let [gate, up] = apply_all([&b.gate, &b.up], &h);
            let mut mlp = vec![0f32; gate.len()];
            tinytune_kernels::silu_mul(&gate, &up, &mut mlp);
            let down = b.down.apply(&mlp);
            x.iter_mut().zip(&down).for_each(|(x, d)| *x += d);
        }
        cache.advance();
        let x = plan.norm.apply(&x);
        Some(match &plan.head {
            Some(head) => head.apply(&x),
            None => plan.embed.head(&x),
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;

    use burn::tensor::Tensor;

    use crate::lora::LoraAdapter;
    use crate::model::{Arch, Model, read_f32};

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    /// A random Llama whose products are long enough to be split across threads (where the team
    /// is there) and whose attention passes the split's threshold within the steps below.
    fn split_sized(tied: bool) -> Model {
        let config = format!(
            r#"{{"model_type": "llama", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 688,
                "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32,
                "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                "tie_word_embeddings": {tied}, "bos_token_id": 510, "eos_token_id": 511}}"#
        );
        let tokenizer = std::fs::read(fixture("tiny-llama/tokenizer.json")).unwrap();
        let files = crate::model::init::random_model(&config, tokenizer, 7).unwrap();
        Model::load(&files, &crate::device::cpu().device).unwrap()
    }

    /// `steps` tokens decoded both ways from one prompt: the step on the buffers and `forward`
    /// with its own cache give the same logits, bit for bit, and the caches the same length.
    fn assert_steps_equal(model: &Model, steps: usize) {
        let prompt: Vec<u32> = (0..5).map(|i| 3 + 37 * i).collect();
        let (mut fast, mut slow) = (model.new_cache(), model.new_cache());
        for cache in [&mut fast, &mut slow] {
            let _ = model.forward(model.ids(&[prompt.clone()]), Some(cache), None);
        }
        let v = model.config.vocab_size();
        for step in 0..steps {
            let id = ((step * 97 + 11) % v) as u32;
            let got = model.decode_one(id, &mut fast).expect("the step applies to an f32 Llama on the CPU engine");
            let logits = model.forward(model.ids(&[vec![id]]), Some(&mut slow), None);
            let want = block_on(read_f32(logits.reshape([v]))).unwrap();
            assert_eq!(got.len(), v);
            let first = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(first.is_none(), "step {step}: logit {first:?} differs: {:?} against {:?}", first.map(|i| got[i]), first.map(|i| want[i]));
            assert_eq!(fast.len(), slow.len());
        }
    }

    /// Past the cache's first 64 slots (its buffers grow), with grouped key/value heads, an untied
    /// head (tiny-llama), and a tied one with q/k/v biases (tiny-qwen2).
    #[test]
    fn the_step_on_buffers_gives_forwards_logits_bit_for_bit() {
        for name in ["tiny-llama", "tiny-qwen2"] {
            let model = Model::load_dir(&fixture(name), &crate::device::cpu().device).unwrap();
            assert_steps_equal(&model, 70);
        }
    }

    /// The same where each product and the attention are split across the team (natively, with
    /// oneMKL; `scripts/test` runs this module under each BLAS).
    #[test]
    fn the_step_on_buffers_equals_forward_where_products_are_split() {
        for tied in [false, true] {
            assert_steps_equal(&split_sized(tied), 40);
        }
    }

    /// Weights kept in bf16 and weights packed in 4 bits (NF4 with double quantization, and FP4),
    /// each through the kernel `forward` uses for it.
    #[test]
    fn the_step_on_buffers_equals_forward_for_bf16_and_4_bit_weights() {
        let mut bf16 = Model::load_dir(&fixture("tiny-llama-bf16"), &crate::device::cpu().device).unwrap();
        assert_eq!(bf16.keep_bf16_weights(), 15);
        assert_steps_equal(&bf16, 20);
        for (quant_type, double_quant) in [(crate::quant::QuantType::Nf4, true), (crate::quant::QuantType::Fp4, false)] {
            let mut model = split_sized(false);
            let n = block_on(model.quantize_linears(crate::quant::bnb::QuantConfig { quant_type, double_quant })).unwrap();
            assert_eq!(n, 14);
            assert_steps_equal(&model, 20);
        }
    }

    /// Weights kept in 8-bit codes: a GGUF file's Q8_0 layers, and a model large enough for its
    /// products to be split across the team, with an adapter on every linear map.
    #[test]
    fn the_step_on_buffers_equals_forward_for_8_bit_weights() {
        let device = crate::device::cpu().device;
        let q8 = Model::load_dir(&fixture("gguf/tiny-llama-Q8_0.gguf"), &device).unwrap();
        assert_eq!(q8.kept8_names().as_deref(), Some("q8_0"));
        assert_steps_equal(&q8, 20);
        let mut model = split_sized(false);
        for (i, (_, l)) in model.arch.linears_mut().into_iter().enumerate() {
            let [k, n] = l.weight().dims();
            if k % 32 != 0 {
                // down_proj's 688 inputs are no whole blocks of Q8_0: it stays f32 beside the others.
                continue;
            }
            let values = l.weight().transpose().into_data().try_to_vec::<f32>().unwrap();
            let q = crate::quant::q8::Quant8::quantize_q8_0_matrix(&values, [n, k]).unwrap();
            l.base = crate::model::layers::Base::Q8(crate::quant::q8::Q8Weight::new(q, &device));
            let noise = |shape: [usize; 2], seed: u64| {
                let mut rng = crate::rng::Rng::new(seed);
                let values: Vec<f32> = (0..shape[0] * shape[1]).map(|_| (rng.next_f64() - 0.5) as f32 * 0.2).collect();
                Tensor::<2>::from_data(burn::tensor::TensorData::new(values, shape), &device)
            };
            l.adapters.push(LoraAdapter::new("one", noise([k, 4], i as u64), noise([4, n], 50 + i as u64), 2.0, 0.0));
        }
        assert_eq!(model.kept8_names().as_deref(), Some("q8_0"));
        assert_eq!(model.arch.linears().iter().filter(|(_, l)| matches!(l.base, crate::model::layers::Base::Q8(_))).count(), 12);
        assert_steps_equal(&model, 12);
    }

    /// With LoRA adapters: one on every linear map (the fused op's path), two on some of them and
    /// one beside a disabled one (the path adapter by adapter), on a model with q/k/v biases.
    #[test]
    fn the_step_on_buffers_equals_forward_with_adapters() {
        let device = crate::device::cpu().device;
        let noise = |shape: [usize; 2], seed: u64| {
            let mut rng = crate::rng::Rng::new(seed);
            let n = shape[0] * shape[1];
            Tensor::<2>::from_data(burn::tensor::TensorData::new((0..n).map(|_| (rng.next_f64() - 0.5) as f32 * 0.2).collect::<Vec<f32>>(), shape), &device)
        };
        let mut model = Model::load_dir(&fixture("tiny-qwen2"), &device).unwrap();
        let mut linears = model.arch.linears_mut();
        for (i, (_, l)) in linears.iter_mut().enumerate() {
            let (k, n) = (l.d_in(), l.d_out());
            l.adapters.push(LoraAdapter::new("one", noise([k, 4], i as u64), noise([4, n], 100 + i as u64), 2.0, 0.0));
            if i % 3 == 1 {
                l.adapters.push(LoraAdapter::new("two", noise([k, 2], 200 + i as u64), noise([2, n], 300 + i as u64), 0.5, 0.0));
            }
            if i % 3 == 2 {
                l.adapters.push(LoraAdapter::new("off", noise([k, 2], 400 + i as u64), noise([2, n], 500 + i as u64), 1.0, 0.0));
                l.adapters.last_mut().unwrap().enabled = false;
            }
        }
        assert_steps_equal(&model, 12);
        // Tracked for training (the page samples between steps): read as the constants they are.
        for (_, l) in model.arch.linears_mut() {
            for a in &mut l.adapters {
                (a.a, a.b) = (a.a.clone().autodiff().require_grad(), a.b.clone().autodiff().require_grad());
            }
        }
        assert_steps_equal(&model, 6);
        let mut model = split_sized(false);
        for (i, (_, l)) in model.arch.linears_mut().iter_mut().enumerate() {
            let (k, n) = (l.d_in(), l.d_out());
            l.adapters.push(LoraAdapter::new("one", noise([k, 8], i as u64), noise([8, n], 100 + i as u64), 2.0, 0.0));
        }
        assert_steps_equal(&model, 12);
    }

    /// Where the step does not apply, it changes nothing and says so: no prompt in the cache yet,
    /// an adapter with dropout in training or routed to some rows, a GPT-2.
    #[test]
    fn the_step_declines_what_it_does_not_cover() {
        let device = crate::device::cpu().device;
        let mut model = Model::load_dir(&fixture("tiny-llama"), &device).unwrap();
        let mut empty = model.new_cache();
        assert!(model.decode_one(5, &mut empty).is_none());
        assert!(empty.is_empty());
        let mut cache = model.new_cache();
        let _ = model.forward(model.ids(&[vec![1, 2, 3]]), Some(&mut cache), None);
        fn q_proj(m: &mut Model) -> &mut crate::model::layers::Linear {
            let Arch::Llama(llama) = &mut m.arch else { unreachable!("tiny-llama is a Llama") };
            &mut llama.layers[1].q_proj
        }
        let linear = q_proj(&mut model);
        let (a, b) = (Tensor::<2>::ones([linear.d_in(), 2], &device), Tensor::<2>::ones([2, linear.d_out()], &device));
        let mut adapter = LoraAdapter::new("default", a, b, 0.5, 0.1);
        adapter.training = true;
        linear.adapters.push(adapter);
        assert!(model.decode_one(5, &mut cache).is_none(), "dropout in training is forward's");
        let linear = q_proj(&mut model);
        linear.adapters[0].training = false;
        linear.adapters[0].rows = Some(Tensor::<3>::ones([1, 1, 1], &device));
        assert!(model.decode_one(5, &mut cache).is_none(), "routed rows are forward's");
        assert_eq!(cache.len(), 3);
        let gpt2 = Model::load_dir(&fixture("tiny-gpt2"), &device).unwrap();
        let mut cache = gpt2.new_cache();
        let _ = gpt2.forward(gpt2.ids(&[vec![1, 2, 3]]), Some(&mut cache), None);
        assert!(gpt2.decode_one(5, &mut cache).is_none());
    }
}
