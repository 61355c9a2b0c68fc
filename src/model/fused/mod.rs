//! Fused operations for the CPU engine, as a burn backend extension (`FusedOps`, the pattern of
//! `crate::quant::kernels::Q4Ops`):
//! - `silu_mul(gate, up) = silu(gate) · up`, the Llama MLP's gate. Composed from burn's ops it is
//!   a sigmoid, two multiplies, and five more element-wise passes backward, each on one thread,
//!   with glibc's scalar `expf` in the sigmoid;
//! - `target_logprobs(logits, targets)`, each row's log-softmax at its target: the cross-entropy.
//!   Composed, it is a dozen passes over the whole `[rows, vocab]` matrix, forward and backward.
//! - `rms_norm(x, w, eps)`, Llama's norm, twice a layer; composed, six passes forward and about
//!   a dozen backward;
//! - `softmax_last(x)`, attention's softmax over the keys. Under autodiff burn composes it from
//!   max, subtract, exp (glibc's scalar `expf`), sum and divide, and their gradients.
//!
//! On burn flex each is one pass a row (or a chunk) forward and one backward, split across
//! rayon's threads natively, with an exp the compiler vectorises: the loops are in the
//! `tinytune-kernels` crate (`kernels/`), which the dev profile builds at opt-level 3. Other
//! backends (wgpu) run the composed ops, as before. The autodiff implementations keep the inputs
//! and recompute the sigmoid or the softmax in the backward pass.

use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, IndexingUpdateOp, Int, Shape, Tensor, TensorData};

/// The operations the model calls.
#[backend_extension(Cube, Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// `silu(gate) · up`, element-wise, for tensors of one shape.
    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient of `silu_mul` with respect to `gate`, given the output's gradient:
    /// `grad · up · σ(gate) · (1 + gate · (1 − σ(gate)))`. (The one to `up` is
    /// `silu_mul(gate, grad)`.)
    fn silu_mul_grad_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Each row's log-probability of its target: `logits [N, V]`, `targets [N, 1]` →
    /// `log_softmax(logits)[n, targets[n]]`, `[N, 1]`.
    fn target_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self>;
    /// Its gradient with respect to the logits, given the output's gradient `grad [N, 1]`:
    /// `grad[n] · (onehot(targets[n]) − softmax(logits[n]))`, `[N, V]`.
    fn target_logprobs_grad(logits: FloatTensor<Self>, targets: IntTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// RMSNorm over the rows of `x [N, C]` with weight `w [C]`: `x / √(mean(x²) + eps) · w`.
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// Its gradient with respect to `x`, given the output's gradient `[N, C]`.
    fn rms_norm_grad_x(x: FloatTensor<Self>, w: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// Its gradient with respect to `w` (`[C]`), given the output's gradient.
    fn rms_norm_grad_w(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// Softmax over the rows of `[N, S]`.
    fn softmax_rows(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Its gradient given the output `y` and the output's gradient: `y · (grad − Σ grad·y)`.
    fn softmax_rows_grad(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Scaled dot-product attention over grouped heads with an additive mask,
    /// `softmax(scale · q·kᵀ + mask) · v`: q `[B, nh, T, hs]`, k and v `[B, nkv, S, hs]` (each
    /// key/value head serves nh/nkv consecutive query heads), mask `[B, 1, T, S]` → `[B, nh, T, hs]`.
    fn attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;
    /// Its gradients with respect to q, k and v, given the output's gradient.
    fn attention_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// `a [M, K] · b [K, N]`: natively on burn flex through a BLAS when one is installed
    /// (`matmul.rs`), else the backend's own matmul.
    fn matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `c + a · b` (the gradients' sums): on the CPU engine with a BLAS, added in place into `c`.
    fn matmul_add(a: FloatTensor<Self>, b: FloatTensor<Self>, c: FloatTensor<Self>) -> FloatTensor<Self>;
    /// A linear layer with one LoRA adapter, `x·W + s·((x·A)·B)` (`matmul.rs`).
    fn lora_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;
    /// One AdamW update of a parameter `p` with gradient `g` and moments `m`, `v` (all of one
    /// shape, none tracked by autodiff): the new `[p, m, v]`.
    fn adamw(p: FloatTensor<Self>, g: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamwStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// `acc + Σ x²` with `acc` of one value (none tracked): the gradient norm's running sum,
    /// one op a trained tensor.
    fn sum_squares_add(x: FloatTensor<Self>, acc: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The rotary position embedding `x·cos + rotate_half(x)·sin` of x `[B, heads, T, hs]` with
    /// tables `[1 or B, 1, T, hs]`; with `transpose`, the transposed map (its gradient given the
    /// output's).
    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, transpose: bool) -> FloatTensor<Self>;
}

/// The rotary position embedding of `x [B, heads, T, hs]` with cos and sin `[1 or B, 1, T, hs]`,
/// through whichever backend the tensors live on.
pub fn rotary(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    rotary::rotary_dims(&x.shape(), &cos.shape(), &sin.shape());
    Tensor::from_dispatch(<Dispatch as FusedOps>::rotary(x.into_dispatch(), cos.into_dispatch(), sin.into_dispatch(), false))
}

/// `acc + Σ x²`, `acc` one value, through whichever backend the tensors live on.
pub fn sum_squares_add<const D: usize>(x: Tensor<D>, acc: Tensor<1>) -> Tensor<1> {
    assert_eq!(acc.dims(), [1], "sum_squares_add accumulates into one value");
    Tensor::from_dispatch(<Dispatch as FusedOps>::sum_squares_add(x.into_dispatch(), acc.into_dispatch()))
}

fn composed_sum_squares_add<B: Backend>(x: FloatTensor<B>, acc: FloatTensor<B>) -> FloatTensor<B> {
    B::float_add(acc, B::float_sum(B::float_mul(x.clone(), x)))
}

/// A linear layer with one LoRA adapter: `x [N, in] · W [in, out] + s·((x·A)·B)`, A `[in, r]`,
/// B `[r, out]`, through whichever backend the tensors live on.
pub fn lora_linear(x: Tensor<2>, w: Tensor<2>, a: Tensor<2>, b: Tensor<2>, scale: f64) -> Tensor<2> {
    let ([_, k], [kw, n], [ka, r], [rb, nb]) = (x.dims(), w.dims(), a.dims(), b.dims());
    assert!(k == kw && k == ka && r == rb && n == nb, "lora_linear: x [_, {k}], W [{kw}, {n}], A [{ka}, {r}], B [{rb}, {nb}] do not fit together");
    Tensor::from_dispatch(<Dispatch as FusedOps>::lora_linear(x.into_dispatch(), w.into_dispatch(), a.into_dispatch(), b.into_dispatch(), scale))
}

/// One AdamW update (see `AdamwStep`) through whichever backend the tensors live on: the new
/// parameter and moments.
pub fn adamw(p: Tensor<2>, g: Tensor<2>, m: Tensor<2>, v: Tensor<2>, step: AdamwStep) -> [Tensor<2>; 3] {
    let shape = p.dims();
    assert!(g.dims() == shape && m.dims() == shape && v.dims() == shape, "adamw: the parameter, its gradient and its moments must have one shape");
    let (p, m, v) = <Dispatch as FusedOps>::adamw(p.into_dispatch(), g.into_dispatch(), m.into_dispatch(), v.into_dispatch(), step);
    [p, m, v].map(Tensor::from_dispatch)
}

/// `a [M, K] · b [K, N]`, the model's linear maps, through whichever backend the tensors live on.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let ([m, k], [kb, n]) = (a.dims(), b.dims());
    assert_eq!(k, kb, "matmul: [{m}, {k}] by [{kb}, {n}]");
    Tensor::from_dispatch(<Dispatch as FusedOps>::matmul(a.into_dispatch(), b.into_dispatch()))
}

/// `silu(gate) · up` through whichever backend the tensors live on.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    assert_eq!(gate.dims(), up.dims(), "silu_mul takes tensors of one shape");
    Tensor::from_dispatch(<Dispatch as FusedOps>::silu_mul(gate.into_dispatch(), up.into_dispatch()))
}

/// Each row's log-probability of its target: `logits [N, V]`, `targets [N, 1]` → `[N, 1]`.
pub fn target_logprobs(logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<2> {
    let ([n, _], [nt, one]) = (logits.dims(), targets.dims());
    assert!(n == nt && one == 1, "target_logprobs takes logits [N, V] and targets [N, 1]");
    Tensor::from_dispatch(<Dispatch as FusedOps>::target_logprobs(logits.into_dispatch(), targets.into_dispatch()))
}

/// RMSNorm over the last dimension: `x / √(mean(x²) + eps) · w`.
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    let dims = x.dims();
    let c = dims[D - 1];
    assert_eq!(w.dims()[0], c, "rms_norm's weight has one value a channel");
    let rows = x.reshape([dims.iter().product::<usize>() / c.max(1), c]);
    Tensor::<2>::from_dispatch(<Dispatch as FusedOps>::rms_norm(rows.into_dispatch(), w.into_dispatch(), eps)).reshape(dims)
}

/// Softmax over the last dimension (attention's), through whichever backend the tensor lives on.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let s = dims[D - 1];
    let rows = Tensor::<2>::from_dispatch(<Dispatch as FusedOps>::softmax_rows(x.reshape([dims.iter().product::<usize>() / s.max(1), s]).into_dispatch()));
    rows.reshape(dims)
}

/// Scaled dot-product attention over grouped heads with an additive mask (see
/// `FusedOps::attention`), through whichever backend the tensors live on.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>, scale: f64) -> Tensor<4> {
    attention::attention_dims(&q.shape(), &k.shape(), &v.shape(), &mask.shape());
    Tensor::from_dispatch(<Dispatch as FusedOps>::attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), mask.into_dispatch(), scale))
}

// --- composed from a backend's own ops (wgpu, and the CPU engine for other dtypes) ---------------

fn composed_silu_mul<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    // burn's `silu(x) * up`, op for op: x · σ(x), then · up.
    B::float_mul(B::float_mul(gate.clone(), B::sigmoid(gate)), up)
}

fn composed_grad_gate<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(gate.clone());
    let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), 1.0.into());
    let slope = B::float_add_scalar(B::float_mul(gate, one_minus_s), 1.0.into());
    B::float_mul(B::float_mul(B::float_mul(grad, up), s), slope)
}

fn composed_target_logprobs<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B> {
    // What the trainer composed before: log_softmax over the vocabulary, then a gather.
    B::float_gather(1, B::log_softmax(logits, 1), targets)
}

fn composed_target_logprobs_grad<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    // −grad·softmax, with grad added back at each row's target.
    let minus_scaled = B::float_neg(B::float_mul(B::softmax(logits, 1), grad.clone()));
    B::float_scatter(1, minus_scaled, targets, grad, IndexingUpdateOp::Add)
}

fn composed_rms<B: Backend>(x: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    B::float_sqrt(B::float_add_scalar(B::float_mean_dim(B::float_mul(x.clone(), x), 1), eps.into()))
}

fn composed_rms_norm<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let c = x.shape()[1];
    // What RmsNorm composed before: x / rms, then · w.
    let rms = composed_rms::<B>(x.clone(), eps);
    B::float_mul(B::float_div(x, rms), B::float_reshape(w, Shape::new([1, c])))
}

fn composed_rms_norm_grad_x<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>, grad: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let c = x.shape()[1];
    let rms = composed_rms::<B>(x.clone(), eps);
    let wg = B::float_mul(grad, B::float_reshape(w, Shape::new([1, c])));
    let dot = B::float_mean_dim(B::float_mul(wg.clone(), x.clone()), 1);
    let rms3 = B::float_mul(B::float_mul(rms.clone(), rms.clone()), rms.clone());
    B::float_sub(B::float_div(wg, rms), B::float_div(B::float_mul(x, dot), rms3))
}

fn composed_rms_norm_grad_w<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let c = x.shape()[1];
    let rms = composed_rms::<B>(x.clone(), eps);
    B::float_reshape(B::float_sum_dim(B::float_mul(grad, B::float_div(x, rms)), 0), Shape::new([c]))
}

fn composed_softmax_grad<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let dot = B::float_sum_dim(B::float_mul(y.clone(), grad.clone()), 1);
    B::float_mul(y, B::float_sub(grad, dot))
}

impl FusedOps for burn::backend::wgpu::CubeBackend {
    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        wgsl::silu_mul(&gate, &up).unwrap_or_else(|| composed_silu_mul::<Self>(gate, up))
    }
    fn silu_mul_grad_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        wgsl::silu_mul_grad_gate(&gate, &up, &grad).unwrap_or_else(|| composed_grad_gate::<Self>(gate, up, grad))
    }
    fn target_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        composed_target_logprobs::<Self>(logits, targets)
    }
    fn target_logprobs_grad(logits: FloatTensor<Self>, targets: IntTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_target_logprobs_grad::<Self>(logits, targets, grad)
    }
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        wgsl::rms_norm(&x, &w, eps).unwrap_or_else(|| composed_rms_norm::<Self>(x, w, eps))
    }
    fn rms_norm_grad_x(x: FloatTensor<Self>, w: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        wgsl::rms_norm_grad_x(&x, &w, &grad, eps).unwrap_or_else(|| composed_rms_norm_grad_x::<Self>(x, w, grad, eps))
    }
    fn rms_norm_grad_w(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        wgsl::rms_norm_grad_w(&x, &grad, eps).unwrap_or_else(|| composed_rms_norm_grad_w::<Self>(x, grad, eps))
    }
    fn softmax_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::softmax(x, 1)
    }
    fn softmax_rows_grad(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_softmax_grad::<Self>(y, grad)
    }
    fn attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        attention::composed_attention::<Self>(q, k, v, mask, scale)
    }
    fn attention_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention::composed_attention_grad::<Self>(q, k, v, mask, scale, grad)
    }
    fn matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(a, b)
    }
    fn matmul_add(a: FloatTensor<Self>, b: FloatTensor<Self>, c: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_add(c, Self::float_matmul(a, b))
    }
    fn lora_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        matmul::composed_lora_linear::<Self>(x, w, a, b, scale)
    }
    fn adamw(p: FloatTensor<Self>, g: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamwStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [p, m, v] = adamw::cube_adamw(p, g, m, v, step);
        (p, m, v)
    }
    fn sum_squares_add(x: FloatTensor<Self>, acc: FloatTensor<Self>) -> FloatTensor<Self> {
        wgsl::sum_squares_add(&x, &acc).unwrap_or_else(|| composed_sum_squares_add::<Self>(x, acc))
    }
    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, transpose: bool) -> FloatTensor<Self> {
        wgsl::rotary(&x, &cos, &sin, transpose).unwrap_or_else(|| rotary::composed_rotary::<Self>(x, cos, sin, transpose))
    }
}

// --- the CPU engine -------------------------------------------------------------------------------

/// Elements per parallel task: big enough that handing one to another thread pays.
#[cfg(not(target_arch = "wasm32"))]
const CHUNK: usize = 16 * 1024;

/// Run `f(out_chunk, start)` over `out` in chunks, on several threads natively when it is large.
fn chunked(out: &mut [f32], f: impl Fn(&mut [f32], usize) + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    if out.len() >= 2 * CHUNK {
        crate::blas::par_chunks(out, CHUNK, |c, o| f(o, c * CHUNK));
        return;
    }
    f(out, 0);
}

pub(crate) use crate::blas::flex_f32;

/// The values of tensors of one shape, or None where the fused path does not apply.
fn flex_values<'a>(inputs: &[&'a FloatTensor<Flex>]) -> Option<Vec<std::borrow::Cow<'a, [f32]>>> {
    let shape = inputs[0].layout().shape();
    if inputs.iter().any(|t| t.layout().shape() != shape) {
        return None;
    }
    inputs.iter().map(|t| flex_f32(t)).collect()
}

fn flex_tensor(values: Vec<f32>, like: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    Flex::float_from_data(TensorData::new(values, like.layout().shape().clone()), &Default::default())
}

/// An int tensor's values as indices, or None for a dtype the fused path does not read.
fn flex_indices(t: &IntTensor<Flex>) -> Option<Vec<usize>> {
    let t = if t.is_contiguous() { t.clone() } else { t.to_contiguous() };
    Some(match t.dtype() {
        DType::I64 => t.as_slice::<i64>()?.iter().map(|&v| v as usize).collect(),
        DType::I32 => t.as_slice::<i32>()?.iter().map(|&v| v as usize).collect(),
        DType::U32 => t.as_slice::<u32>()?.iter().map(|&v| v as usize).collect(),
        _ => return None,
    })
}

/// The logits and targets of `target_logprobs`, checked: `(values, V, targets)`.
fn flex_logits<'a>(logits: &'a FloatTensor<Flex>, targets: &IntTensor<Flex>) -> Option<(std::borrow::Cow<'a, [f32]>, usize, Vec<usize>)> {
    let dims = logits.layout().shape().clone();
    let (n, v) = (dims[0], dims[1]);
    let (values, targets) = (flex_f32(logits)?, flex_indices(targets)?);
    if targets.len() != n {
        return None;
    }
    if let Some(bad) = targets.iter().find(|&&t| t >= v) {
        panic!("a target token id {bad} is outside the vocabulary of {v}");
    }
    Some((values, v, targets))
}

/// Run `f(row_index, row_out)` for every row of `out` (rows of `width` values, each costing about
/// `cost` element operations), on rayon's threads natively when there is enough work.
fn by_rows(out: &mut [f32], width: usize, cost: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows_count = out.len() / width.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    if rows_count * cost >= 2 * CHUNK && width > 0 {
        let rows = (CHUNK / cost.max(1)).max(1);
        crate::blas::par_chunks(out, rows * width, |c, block| {
            for (i, row) in block.chunks_mut(width).enumerate() {
                f(c * rows + i, row);
            }
        });
        return;
    }
    let _ = (rows_count, cost);
    for (i, row) in out.chunks_mut(width.max(1)).enumerate() {
        f(i, row);
    }
}

impl FusedOps for Flex {
    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some(v) = flex_values(&[&gate, &up]) else { return composed_silu_mul::<Self>(gate, up) };
        let (g, u) = (&v[0][..], &v[1][..]);
        let mut out = vec![0f32; g.len()];
        chunked(&mut out, |o, s| tinytune_kernels::silu_mul(&g[s..s + o.len()], &u[s..s + o.len()], o));
        flex_tensor(out, &gate)
    }
    fn silu_mul_grad_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some(v) = flex_values(&[&gate, &up, &grad]) else { return composed_grad_gate::<Self>(gate, up, grad) };
        let (g, u, d) = (&v[0][..], &v[1][..], &v[2][..]);
        let mut out = vec![0f32; g.len()];
        chunked(&mut out, |o, s| {
            let r = s..s + o.len();
            tinytune_kernels::silu_mul_grad_gate(&g[r.clone()], &u[r.clone()], &d[r], o)
        });
        flex_tensor(out, &gate)
    }
    fn target_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        let Some((x, v, t)) = flex_logits(&logits, &targets) else { return composed_target_logprobs::<Self>(logits, targets) };
        let mut out = vec![0f32; t.len()];
        by_rows(&mut out, 1, 2 * v, |n, o| {
            let row = &x[n * v..(n + 1) * v];
            o[0] = row[t[n]] - tinytune_kernels::log_sum_exp(row);
        });
        Flex::float_from_data(TensorData::new(out, [t.len(), 1]), &Default::default())
    }
    fn target_logprobs_grad(logits: FloatTensor<Self>, targets: IntTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let (Some((x, v, t)), Some(g)) = (flex_logits(&logits, &targets), flex_f32(&grad)) else {
            return composed_target_logprobs_grad::<Self>(logits, targets, grad);
        };
        let mut out = vec![0f32; x.len()];
        by_rows(&mut out, v, 3 * v, |n, o| {
            let row = &x[n * v..(n + 1) * v];
            tinytune_kernels::scaled_softmax_neg(row, tinytune_kernels::log_sum_exp(row), g[n], o);
            o[t[n]] += g[n];
        });
        flex_tensor(out, &logits)
    }
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let (Some(v), Some(wv)) = (flex_values(&[&x]), flex_f32(&w)) else { return composed_rms_norm::<Self>(x, w, eps) };
        let c = wv.len();
        let mut out = vec![0f32; v[0].len()];
        by_rows(&mut out, c, 3 * c, |n, o| tinytune_kernels::rms_norm(&v[0][n * c..(n + 1) * c], &wv, eps as f32, o));
        flex_tensor(out, &x)
    }
    fn rms_norm_grad_x(x: FloatTensor<Self>, w: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let (Some(v), Some(wv)) = (flex_values(&[&x, &grad]), flex_f32(&w)) else { return composed_rms_norm_grad_x::<Self>(x, w, grad, eps) };
        let c = wv.len();
        let mut out = vec![0f32; v[0].len()];
        by_rows(&mut out, c, 5 * c, |n, o| {
            let r = n * c..(n + 1) * c;
            tinytune_kernels::rms_norm_grad(&v[0][r.clone()], &wv, &v[1][r], eps as f32, o)
        });
        flex_tensor(out, &x)
    }
    fn rms_norm_grad_w(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let Some(v) = flex_values(&[&x, &grad]) else { return composed_rms_norm_grad_w::<Self>(x, grad, eps) };
        let c = x.layout().shape()[1];
        // Only full and partial finetuning train a norm's weight: one thread is enough here.
        let mut acc = vec![0f32; c];
        for (xr, gr) in v[0].chunks_exact(c.max(1)).zip(v[1].chunks_exact(c.max(1))) {
            tinytune_kernels::rms_norm_grad_weight_add(xr, gr, eps as f32, &mut acc);
        }
        Flex::float_from_data(TensorData::new(acc, [c]), &Default::default())
    }
    fn softmax_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some(v) = flex_values(&[&x]) else { return Flex::softmax(x, 1) };
        let s = x.layout().shape()[1];
        let mut out = vec![0f32; v[0].len()];
        by_rows(&mut out, s, 3 * s, |n, o| tinytune_kernels::softmax(&v[0][n * s..(n + 1) * s], o));
        flex_tensor(out, &x)
    }
    fn softmax_rows_grad(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some(v) = flex_values(&[&y, &grad]) else { return composed_softmax_grad::<Self>(y, grad) };
        let s = y.layout().shape()[1];
        let mut out = vec![0f32; v[0].len()];
        by_rows(&mut out, s, 3 * s, |n, o| {
            let r = n * s..(n + 1) * s;
            tinytune_kernels::softmax_grad(&v[0][r.clone()], &v[1][r], o)
        });
        flex_tensor(out, &y)
    }
    fn attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        attention::flex_attention(q, k, v, mask, scale)
    }
    fn attention_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention::flex_attention_grad(q, k, v, mask, scale, grad)
    }
    fn matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::blas::flex_matmul(a, b)
    }

    fn matmul_add(a: FloatTensor<Self>, b: FloatTensor<Self>, c: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::blas::flex_matmul_add(a, b, c)
    }

    fn lora_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        matmul::flex_lora_linear(x, w, a, b, scale)
    }

    fn adamw(p: FloatTensor<Self>, g: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamwStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [p, m, v] = adamw::flex_adamw(p, g, m, v, step);
        (p, m, v)
    }

    fn sum_squares_add(x: FloatTensor<Self>, acc: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_sum_squares_add::<Self>(x, acc)
    }

    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, transpose: bool) -> FloatTensor<Self> {
        rotary::flex_rotary(x, cos, sin, transpose)
    }
}

mod adamw;
mod attention;
pub(crate) use attention::decode_heads;
mod autodiff;
use autodiff::record;
mod matmul;
mod rotary;
mod wgsl;
pub use adamw::AdamwStep;

#[cfg(test)]
mod tests;
