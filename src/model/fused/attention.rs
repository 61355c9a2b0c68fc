//! Attention as one fused op: `softmax(scale · q·kᵀ + mask) · v` over grouped heads.
//!
//! Composed from burn's ops it is two batched matmuls, a scale, a mask add and a softmax, with
//! `[B, heads, T, S]` scores, probabilities and their gradients in memory, and every masked
//! (causal) score computed and then thrown away. On burn flex the kernel in `kernels/` runs
//! each key/value head's block row by row: it skips the keys a row's mask hides with -inf (the
//! causal half, when nothing is padded), keeps no scores, and recomputes the probabilities in the
//! backward pass. Other backends (wgpu) run the composed ops under burn's autodiff, which keeps
//! the probabilities for the backward pass. The gradients written out here serve the CPU engine
//! where the kernel does not apply (other head sizes and dtypes) and are tested against it.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata};
use burn::tensor::{DType, Shape};
use tinytune_kernels::AttentionBlock;

use super::{FusedOps, flex_f32, flex_tensor};

fn dims4(shape: &Shape) -> Option<[usize; 4]> {
    (shape.num_dims() == 4).then(|| [shape[0], shape[1], shape[2], shape[3]])
}

/// `(b, nh, nkv, t, s, hs)`, checked: q `[B, nh, T, hs]`, k and v `[B, nkv, S, hs]`, mask
/// `[B, 1, T, S]`, nh a multiple of nkv.
pub(super) fn attention_dims(q: &Shape, k: &Shape, v: &Shape, mask: &Shape) -> [usize; 6] {
    let (Some([b, nh, t, hs]), Some([bk, nkv, s, hsk])) = (dims4(q), dims4(k)) else {
        panic!("attention takes q [B, heads, T, head size] and k, v [B, kv heads, S, head size]: got {q:?} and {k:?}");
    };
    assert!(bk == b && hsk == hs && v == k, "attention: q {q:?}, k {k:?} and v {v:?} do not fit together");
    assert!(nkv > 0 && nh % nkv == 0, "attention: {nh} query heads cannot share {nkv} key/value heads evenly");
    assert!(dims4(mask) == Some([b, 1, t, s]), "attention: the mask is {mask:?}, not [{b}, 1, {t}, {s}]");
    [b, nh, nkv, t, s, hs]
}

// --- composed from a backend's own ops (wgpu, and the CPU engine for other dtypes) ---------------

/// The probabilities `[B, nkv, rep·T, S]`: each key/value head's query heads as rows of one
/// product (transformers' repeat_kv without the copies).
fn composed_probs<B: FusedOps>(q: FloatTensor<B>, k: FloatTensor<B>, mask: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    let [b, nh, nkv, t, s, hs] = attention_dims(&q.shape(), &k.shape(), &k.shape(), &mask.shape());
    let rep = nh / nkv;
    let q = B::float_reshape(q, Shape::new([b, nkv, rep * t, hs]));
    let scores = B::float_mul_scalar(B::float_matmul(q, B::float_swap_dims(k, 2, 3)), scale.into());
    let scores = B::float_add(B::float_reshape(scores, Shape::new([b, nkv, rep, t, s])), B::float_reshape(mask, Shape::new([b, 1, 1, t, s])));
    let probs = B::softmax_rows(B::float_reshape(scores, Shape::new([b * nkv * rep * t, s])));
    B::float_reshape(probs, Shape::new([b, nkv, rep * t, s]))
}

pub(super) fn composed_attention<B: FusedOps>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, mask: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    let out_shape = q.shape();
    B::float_reshape(B::float_matmul(composed_probs::<B>(q, k, mask, scale), v), out_shape)
}

pub(super) fn composed_attention_grad<B: FusedOps>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask: FloatTensor<B>,
    scale: f64,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let q_shape = q.shape();
    let [b, nh, nkv, t, _, hs] = attention_dims(&q_shape, &k.shape(), &v.shape(), &mask.shape());
    let rows = Shape::new([b, nkv, nh / nkv * t, hs]);
    let p = composed_probs::<B>(q.clone(), k.clone(), mask, scale);
    let g = B::float_reshape(grad, rows.clone());
    let dv = B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), g.clone());
    let dp = B::float_matmul(g, B::float_swap_dims(v, 2, 3));
    // The softmax's gradient, p · (dp − Σ p·dp), and the scale.
    let dot = B::float_sum_dim(B::float_mul(p.clone(), dp.clone()), 3);
    let ds = B::float_mul_scalar(B::float_mul(p, B::float_sub(dp, dot)), scale.into());
    let dq = B::float_reshape(B::float_matmul(ds.clone(), k), q_shape);
    let dk = B::float_matmul(B::float_swap_dims(ds, 2, 3), B::float_reshape(q, rows));
    (dq, dk, dv)
}

// --- the CPU engine -------------------------------------------------------------------------------

/// Work (row × key × head-size products) below which the blocks run on the calling thread:
/// decoding one token, for one.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_WORK: usize = 1 << 18;

/// The inputs as row-major values and the kernel's block shape, or None where the fused path
/// does not apply (another dtype, a head size the kernels are not built for, one position).
struct FlexAttention<'a> {
    q: std::borrow::Cow<'a, [f32]>,
    k: std::borrow::Cow<'a, [f32]>,
    v: std::borrow::Cow<'a, [f32]>,
    mask: std::borrow::Cow<'a, [f32]>,
    block: AttentionBlock,
    nkv: usize,
}

impl<'a> FlexAttention<'a> {
    fn new(q: &'a FloatTensor<Flex>, k: &'a FloatTensor<Flex>, v: &'a FloatTensor<Flex>, mask: &'a FloatTensor<Flex>, scale: f64) -> Option<Self> {
        let [_, nh, nkv, t, s, hs] = attention_dims(&q.shape(), &k.shape(), &v.shape(), &mask.shape());
        // One query position (decoding a token) is a matrix-vector product a head, where the
        // kernel's transposes and the copy of the cache's strided keys cost more than they save
        // (built-in model: 822 against 1,209 tokens/s).
        if !tinytune_kernels::ATTENTION_HEAD_SIZES.contains(&hs) || t == 1 {
            return None;
        }
        let block = AttentionBlock { rows: nh / nkv * t, t, s, hs, scale: scale as f32 };
        Some(FlexAttention { q: flex_f32(q)?, k: flex_f32(k)?, v: flex_f32(v)?, mask: flex_f32(mask)?, block, nkv })
    }

    /// Block `i`'s (batch row `i / nkv`, key/value head `i % nkv`) queries, keys, values and mask.
    fn block(&self, i: usize) -> (&[f32], &[f32], &[f32], &[f32]) {
        let AttentionBlock { rows, t, s, hs, .. } = self.block;
        let (q, kv, m) = (rows * hs, s * hs, t * s);
        let b = i / self.nkv;
        (&self.q[i * q..(i + 1) * q], &self.k[i * kv..(i + 1) * kv], &self.v[i * kv..(i + 1) * kv], &self.mask[b * m..(b + 1) * m])
    }

    /// Whether the blocks are worth handing to other threads (not when decoding one token).
    #[cfg(not(target_arch = "wasm32"))]
    fn parallel(&self) -> bool {
        let AttentionBlock { rows, s, hs, .. } = self.block;
        let blocks = self.q.len() / (rows * hs).max(1);
        blocks > 1 && blocks * rows * s * hs >= PARALLEL_WORK
    }
}

/// A `[B, heads, S, hs]` f32 tensor whose key rows are `hs` contiguous values, one after the
/// other (the KV cache's first S slots): its storage from its offset, and the strides of its
/// batch and head dimensions.
fn cache_rows(t: &FloatTensor<Flex>) -> Option<(&[f32], [usize; 2])> {
    let layout = t.layout();
    if t.dtype() != DType::F32 || layout.num_dims() != 4 {
        return None;
    }
    let (shape, strides) = (layout.shape(), layout.strides());
    let fits = |d: usize, want: usize| shape[d] <= 1 || usize::try_from(strides[d]).ok() == Some(want);
    if !fits(3, 1) || !fits(2, shape[3]) {
        return None;
    }
    let stride = |d: usize| if shape[d] <= 1 { Some(0) } else { usize::try_from(strides[d]).ok() };
    Some((t.storage::<f32>().get(layout.start_offset()..)?, [stride(0)?, stride(1)?]))
}

/// Decoding one token (T = 1): each key/value head's query heads against its keys and values
/// where the cache holds them, with no copy of the cache and no batched matmul
/// (`tinytune_kernels::attention_decode`). None where it does not apply.
fn flex_attention_decode(q: &FloatTensor<Flex>, k: &FloatTensor<Flex>, v: &FloatTensor<Flex>, mask: &FloatTensor<Flex>, scale: f64) -> Option<FloatTensor<Flex>> {
    let [b, nh, nkv, t, s, hs] = attention_dims(&q.shape(), &k.shape(), &v.shape(), &mask.shape());
    if t != 1 || s == 0 || hs == 0 {
        return None;
    }
    let ((kd, ks), (vd, vs)) = (cache_rows(k)?, cache_rows(v)?);
    let (qv, mv) = (flex_f32(q)?, flex_f32(mask)?);
    Some(flex_tensor(decode_heads(&qv, (kd, ks), (vd, vs), &mv, [b, nh, nkv, s, hs], scale), q))
}

/// `flex_attention_decode` on slices: q `[B, nh, hs]`; each row's key/value head `h` is the `s`
/// rows of `hs` values at `k.0[row · k.1[0] + h · k.1[1]..]` (and so for v); mask `[B, s]`.
/// Returns `[B, nh, hs]`. Also the CPU engine's decoding step's (`model::decode`).
pub(crate) fn decode_heads(qv: &[f32], (kd, ks): (&[f32], [usize; 2]), (vd, vs): (&[f32], [usize; 2]), mv: &[f32], [b, nh, nkv, s, hs]: [usize; 5], scale: f64) -> Vec<f32> {
    assert!(qv.len() == b * nh * hs && mv.len() == b * s && nkv > 0 && nh % nkv == 0, "decode_heads: q of {} values, mask of {}, for [{b}, {nh}, {hs}] over {s} keys", qv.len(), mv.len());
    let per_kv = nh / nkv;
    let mut out = vec![0f32; b * nh * hs];
    // Query head i (of b·nh) against its key/value head; each head's rows are the kernel's own,
    // so the heads can go to different threads.
    let run = |i: usize, o: &mut [f32]| {
        let (row, head) = (i / nh, i % nh / per_kv);
        let (kh, vh) = (&kd[row * ks[0] + head * ks[1]..][..s * hs], &vd[row * vs[0] + head * vs[1]..][..s * hs]);
        with_scratch(s, |scores| tinytune_kernels::attention_decode(&qv[i * hs..][..hs], kh, vh, &mv[row * s..][..s], hs, scale as f32, o, scores));
    };
    // Natively, on oneMKL's team (as decoding's products are, `blas::decode_split`) once the
    // cache is long enough to pay for the hand-off: a head at a time, so that 9 query heads on 3
    // key/value heads (SmolLM2) still split evenly.
    #[cfg(not(target_arch = "wasm32"))]
    if b * nh >= 2 && b * nh * s * hs >= DECODE_ATTENTION_SPLIT && crate::blas::team::on_team() {
        crate::blas::par_chunks(&mut out, hs, run);
        return out;
    }
    out.chunks_exact_mut(hs).enumerate().for_each(|(i, o)| run(i, o));
    out
}

/// Query heads × cached positions × head size from which decoding's attention is split across
/// threads: 8 heads of 64 from 16 positions on (the 24M model). From 64 positions on, where one
/// thread took about 18 µs a layer, the split gained at 480 tokens; with the decoding step on
/// buffers (`model::decode`) the team's worker otherwise waits through the kernel, and splitting
/// from 16 positions gave 328 against 308 tokens/s over 128 tokens (medians of 10 runs taking
/// turns, benches/README.md).
#[cfg(not(target_arch = "wasm32"))]
const DECODE_ATTENTION_SPLIT: usize = 1 << 13;

/// `f(scratch)` with this thread's scratch for the attention kernels, at least `len` values:
/// one buffer a thread, kept between calls, not one a block (for the 24M model's heads a block
/// needs 328 KB, which was allocated and zeroed 256 times a step). The kernels write every value
/// of it they read, so what an earlier block left there does not matter.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

pub(super) fn flex_attention(q: FloatTensor<Flex>, k: FloatTensor<Flex>, v: FloatTensor<Flex>, mask: FloatTensor<Flex>, scale: f64) -> FloatTensor<Flex> {
    if let Some(out) = flex_attention_decode(&q, &k, &v, &mask, scale) {
        return out;
    }
    let Some(a) = FlexAttention::new(&q, &k, &v, &mask, scale) else { return composed_attention::<Flex>(q, k, v, mask, scale) };
    let mut out = vec![0f32; a.q.len()];
    let chunk = a.block.rows * a.block.hs;
    let run = |i: usize, o: &mut [f32]| {
        let (q, k, v, m) = a.block(i);
        with_scratch(a.block.scratch_len(), |scratch| tinytune_kernels::attention_forward(&a.block, q, k, v, m, o, scratch));
    };
    #[cfg(not(target_arch = "wasm32"))]
    if a.parallel() {
        crate::blas::par_chunks(&mut out, chunk, run);
        return flex_tensor(out, &q);
    }
    out.chunks_mut(chunk.max(1)).enumerate().for_each(|(i, o)| run(i, o));
    flex_tensor(out, &q)
}

pub(super) fn flex_attention_grad(
    q: FloatTensor<Flex>,
    k: FloatTensor<Flex>,
    v: FloatTensor<Flex>,
    mask: FloatTensor<Flex>,
    scale: f64,
    grad: FloatTensor<Flex>,
) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
    let (Some(a), Some(g)) = (FlexAttention::new(&q, &k, &v, &mask, scale), flex_f32(&grad)) else {
        return composed_attention_grad::<Flex>(q, k, v, mask, scale, grad);
    };
    let (mut dq, mut dk, mut dv) = (vec![0f32; a.q.len()], vec![0f32; a.k.len()], vec![0f32; a.v.len()]);
    let (qc, kc) = ((a.block.rows * a.block.hs).max(1), (a.block.s * a.block.hs).max(1));
    let run = |i: usize, dq: &mut [f32], dk: &mut [f32], dv: &mut [f32]| {
        let (q, k, v, m) = a.block(i);
        with_scratch(a.block.scratch_len(), |scratch| tinytune_kernels::attention_backward(&a.block, q, k, v, m, &g[i * qc..(i + 1) * qc], dq, dk, dv, scratch));
    };
    #[cfg(not(target_arch = "wasm32"))]
    if a.parallel() {
        let (dqc, dkc, dvc) = (crate::blas::Chunks::new(&mut dq, qc), crate::blas::Chunks::new(&mut dk, kc), crate::blas::Chunks::new(&mut dv, kc));
        crate::blas::for_each_task(dqc.count(), &|i| {
            // Safety: for_each_task runs each task index once.
            let (dq, dk, dv) = unsafe { (dqc.get(i), dkc.get(i), dvc.get(i)) };
            run(i, dq, dk, dv)
        });
        return (flex_tensor(dq, &q), flex_tensor(dk, &k), flex_tensor(dv, &v));
    }
    dq.chunks_mut(qc).zip(dk.chunks_mut(kc)).zip(dv.chunks_mut(kc)).enumerate().for_each(|(i, ((dq, dk), dv))| run(i, dq, dk, dv));
    (flex_tensor(dq, &q), flex_tensor(dk, &k), flex_tensor(dv, &v))
}

// --- autodiff ------------------------------------------------------------------------------------

#[derive(Debug)]
struct Attention;

impl<B: Backend + FusedOps> Backward<B, 3> for Attention {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (q, k, v, mask, scale) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (dq, dk, dv) = B::attention_grad(q, k, v, mask, scale, grad);
        for (parent, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// The autodiff node on the CPU engine: keeps q, k, v and the mask, and the kernel recomputes
/// the probabilities backward. The mask is a constant (no gradient flows to it).
pub(super) fn autodiff_attention<B: Backend + FusedOps, C: CheckpointStrategy>(
    q: FloatTensor<Autodiff<B, C>>,
    k: FloatTensor<Autodiff<B, C>>,
    v: FloatTensor<Autodiff<B, C>>,
    mask: FloatTensor<Autodiff<B, C>>,
    scale: f64,
) -> FloatTensor<Autodiff<B, C>> {
    // A backend without the kernel (wgpu) runs the composed chain under burn's autodiff, which
    // keeps the probabilities for the backward pass: this node would recompute them, 48 more
    // launches a training step of the built-in model on lavapipe (1,910 against 1,862).
    if std::any::TypeId::of::<B>() != std::any::TypeId::of::<Flex>() {
        return composed_attention::<Autodiff<B, C>>(q, k, v, mask, scale);
    }
    let nodes = [q.node(), k.node(), v.node()];
    let (q, k, v, mask) = (q.into_primitive(), k.into_primitive(), v.into_primitive(), mask.into_primitive());
    let out = <B as FusedOps>::attention(q.clone(), k.clone(), v.clone(), mask.clone(), scale);
    super::record::<B, C, _, _>(Attention, nodes, (q, k, v, mask, scale), out)
}
