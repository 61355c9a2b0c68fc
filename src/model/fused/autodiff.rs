//! The fused ops under burn's autodiff: each records one node whose backward pass calls the inner
//! backend's gradient ops (on the CPU engine, the kernels), keeping the inputs it needs.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind, binary, unary};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend};

use super::{AdamwStep, FusedOps, attention, matmul, rotary};

/// Record `out` as the output of the autodiff step `step` over the inputs `nodes`, keeping
/// `state` for its backward pass when a gradient is wanted (the state's tensors are shared
/// handles, so building it costs no copy).
pub(super) fn record<B: Backend, C: CheckpointStrategy, S: Backward<B, N>, const N: usize>(step: S, nodes: [NodeGuard; N], state: S::State, out: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    match step.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SiluMul;

        impl<B: Backend + FusedOps> Backward<B, 2> for SiluMul {
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (gate, up) = ops.state;
                let gate_for_up = gate.clone();
                binary::<B, _, _>(ops.parents, ops.node, grads, |grad| B::silu_mul_grad_gate(gate, up, grad), |grad| B::silu_mul(gate_for_up, grad));
            }
        }

        let nodes = [gate.node(), up.node()];
        let (gate, up) = (gate.into_primitive(), up.into_primitive());
        let out = B::silu_mul(gate.clone(), up.clone());
        record::<B, C, _, _>(SiluMul, nodes, (gate, up), out)
    }

    fn target_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct TargetLogprobs;

        impl<B: Backend + FusedOps> Backward<B, 1> for TargetLogprobs {
            type State = (FloatTensor<B>, IntTensor<B>);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (logits, targets) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::target_logprobs_grad(logits, targets, grad));
            }
        }

        let node = logits.node();
        let logits = logits.into_primitive();
        let out = B::target_logprobs(logits.clone(), targets.clone());
        record::<B, C, _, _>(TargetLogprobs, [node], (logits, targets), out)
    }

    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RmsNorm;

        impl<B: Backend + FusedOps> Backward<B, 2> for RmsNorm {
            type State = (FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (x, w, eps) = ops.state;
                let x_for_w = x.clone();
                binary::<B, _, _>(ops.parents, ops.node, grads, |grad| B::rms_norm_grad_x(x, w, grad, eps), |grad| B::rms_norm_grad_w(x_for_w, grad, eps));
            }
        }

        let nodes = [x.node(), w.node()];
        let (x, w) = (x.into_primitive(), w.into_primitive());
        let out = B::rms_norm(x.clone(), w.clone(), eps);
        record::<B, C, _, _>(RmsNorm, nodes, (x, w, eps), out)
    }

    fn rms_norm_grad_x(x: FloatTensor<Self>, w: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        <Self as burn::backend::AutodiffBackend>::from_inner(B::rms_norm_grad_x(x.into_primitive(), w.into_primitive(), grad.into_primitive(), eps))
    }

    fn rms_norm_grad_w(x: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        <Self as burn::backend::AutodiffBackend>::from_inner(B::rms_norm_grad_w(x.into_primitive(), grad.into_primitive(), eps))
    }

    fn softmax_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SoftmaxRows;

        impl<B: Backend + FusedOps> Backward<B, 1> for SoftmaxRows {
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let y = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::softmax_rows_grad(y, grad));
            }
        }

        let node = x.node();
        let out = B::softmax_rows(x.into_primitive());
        record::<B, C, _, _>(SoftmaxRows, [node], out.clone(), out)
    }

    fn softmax_rows_grad(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as burn::backend::AutodiffBackend>::from_inner(B::softmax_rows_grad(y.into_primitive(), grad.into_primitive()))
    }

    fn target_logprobs_grad(logits: FloatTensor<Self>, targets: IntTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // As for silu_mul_grad_gate: the backward pass calls the inner backend's.
        <Self as burn::backend::AutodiffBackend>::from_inner(B::target_logprobs_grad(logits.into_primitive(), targets, grad.into_primitive()))
    }

    fn silu_mul_grad_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Only the backward pass above calls this, on the inner backend; a second derivative is
        // not needed anywhere.
        let inner = |t: FloatTensor<Self>| t.into_primitive();
        <Self as burn::backend::AutodiffBackend>::from_inner(B::silu_mul_grad_gate(inner(gate), inner(up), inner(grad)))
    }

    fn attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, mask: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        attention::autodiff_attention::<B, C>(q, k, v, mask, scale)
    }

    fn attention_grad(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scale: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Only the backward pass calls this, on the inner backend, as for the other gradients.
        let from = <Self as burn::backend::AutodiffBackend>::from_inner;
        let (dq, dk, dv) = B::attention_grad(q.into_primitive(), k.into_primitive(), v.into_primitive(), mask.into_primitive(), scale, grad.into_primitive());
        (from(dq), from(dk), from(dv))
    }

    fn matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        matmul::autodiff_matmul::<B, C>(a, b)
    }

    fn matmul_add(a: FloatTensor<Self>, b: FloatTensor<Self>, c: FloatTensor<Self>) -> FloatTensor<Self> {
        // Only backward passes call this, on the inner backend.
        let inner = |t: FloatTensor<Self>| t.into_primitive();
        <Self as burn::backend::AutodiffBackend>::from_inner(B::matmul_add(inner(a), inner(b), inner(c)))
    }

    fn lora_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        matmul::autodiff_lora_linear::<B, C>(x, w, a, b, scale)
    }

    fn adamw(p: FloatTensor<Self>, g: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamwStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // The optimizer works on values, outside the graph.
        let inner = |t: FloatTensor<Self>| t.into_primitive();
        let from = <Self as burn::backend::AutodiffBackend>::from_inner;
        let (p, m, v) = B::adamw(inner(p), inner(g), inner(m), inner(v), step);
        (from(p), from(m), from(v))
    }

    fn sum_squares_add(x: FloatTensor<Self>, acc: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as burn::backend::AutodiffBackend>::from_inner(B::sum_squares_add(x.into_primitive(), acc.into_primitive()))
    }

    fn rotary(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, transpose: bool) -> FloatTensor<Self> {
        rotary::autodiff_rotary::<B, C>(x, cos, sin, transpose)
    }
}
