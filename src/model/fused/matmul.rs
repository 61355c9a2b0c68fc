//! The model's matrix products (linear layers, LoRA, the LM head) as one op, so that the CPU
//! engine can hand them, forward and backward, to a BLAS (`crate::blas`). Under autodiff on burn
//! flex with a BLAS loaded, the node here sends the backward pass's products there too and keeps
//! only the operands a wanted gradient needs. Everywhere else (wgpu, the page's wasm engine, no
//! BLAS found) it is the backend's own matmul under burn's own autodiff, exactly as before.

use crate::blas::uses_blas;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, binary};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex};

use super::FusedOps;

pub(super) fn autodiff_matmul<B: Backend + FusedOps, C: CheckpointStrategy>(a: FloatTensor<Autodiff<B, C>>, b: FloatTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
    // Without a BLAS, and on other backends, burn's own autodiff matmul, unchanged.
    if std::any::TypeId::of::<B>() != std::any::TypeId::of::<Flex>() || !uses_blas() {
        return <Autodiff<B, C> as FloatTensorOps<Autodiff<B, C>>>::float_matmul(a, b);
    }

    #[derive(Debug)]
    struct Matmul;

    impl<B: Backend + FusedOps> Backward<B, 2> for Matmul {
        /// `a` where `b` wants a gradient, `b` where `a` does.
        type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let (a, b) = ops.state;
            binary::<B, _, _>(
                ops.parents,
                ops.node,
                grads,
                |grad| B::matmul(grad, B::float_transpose(b.expect("kept for a's gradient"))),
                |grad| B::matmul(B::float_transpose(a.expect("kept for b's gradient")), grad),
            );
        }
    }

    let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
    let nodes = [a.node(), b.node()];
    let (a, b) = (a.into_primitive(), b.into_primitive());
    let out = B::matmul(a.clone(), b.clone());
    // Keep only what a wanted gradient needs: a frozen base weight's input is not kept for it.
    let state = (b_tracked.then_some(a), a_tracked.then_some(b));
    super::record::<B, C, _, _>(Matmul, nodes, state, out)
}

// --- a linear layer with one LoRA adapter --------------------------------------------------------

/// `x·W + s·((x·A)·B)` from a backend's products: what the layer computed op by op before.
pub(super) fn composed_lora_linear<B: FusedOps>(x: FloatTensor<B>, w: FloatTensor<B>, a: FloatTensor<B>, b: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    let y = B::matmul(x.clone(), w);
    let delta = B::matmul(B::float_mul_scalar(B::matmul(x, a), scale.into()), b);
    B::float_add(y, delta)
}

/// The forward pass as the fused op runs it: the base product first (with a BLAS, into a
/// fresh buffer it fills, never zeroed), then the adapter's rank-r product added into that
/// buffer in place (no `[N, out]` buffer of its own, no separate add).
/// Returns the output and `s·(x·A)`, which B's gradient needs.
fn lora_forward<B: FusedOps>(x: FloatTensor<B>, w: FloatTensor<B>, a: FloatTensor<B>, b: FloatTensor<B>, scale: f64) -> (FloatTensor<B>, FloatTensor<B>) {
    let t = B::float_mul_scalar(B::matmul(x.clone(), a), scale.into());
    let base = B::matmul(x, w);
    (B::matmul_add(t.clone(), b, base), t)
}

pub(super) fn flex_lora_linear(x: FloatTensor<Flex>, w: FloatTensor<Flex>, a: FloatTensor<Flex>, b: FloatTensor<Flex>, scale: f64) -> FloatTensor<Flex> {
    lora_forward::<Flex>(x, w, a, b, scale).0
}

#[derive(Debug)]
struct LoraLinear;

impl<B: Backend + FusedOps> Backward<B, 3> for LoraLinear {
    /// x, W, A, B, `s·(x·A)` and s.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x, w, a, b, t, scale) = ops.state;
        let g = grads.consume::<B>(&ops.node);
        let [px, pa, pb] = ops.parents;
        // ∂/∂B = (s·x·A)ᵀ·g; through the adapter, ∂/∂(x·A) = s·(g·Bᵀ).
        if let Some(node) = pb {
            grads.register::<B>(node.id, B::matmul(B::float_transpose(t), g.clone()));
        }
        if px.is_none() && pa.is_none() {
            return;
        }
        let dh = B::float_mul_scalar(B::matmul(g.clone(), B::float_transpose(b)), scale.into());
        // ∂/∂A = xᵀ·dh, computed as (dhᵀ·x)ᵀ: the product with r rows, not r columns, as
        // PyTorch's `[r, in]` weight gets it. oneMKL does `[in, 1024]·[1024, r]` at 12–14 GFLOPS in a
        // 24M model's step and `[r, 1024]·[1024, in]` at about twice that (benches/README.md).
        if let Some(node) = pa {
            grads.register::<B>(node.id, B::float_transpose(B::matmul(B::float_transpose(dh.clone()), x)));
        }
        // ∂/∂x = g·Wᵀ + dh·Aᵀ, the adapter's rank-r product added into the base product's buffer.
        if let Some(node) = px {
            grads.register::<B>(node.id, B::matmul_add(dh, B::float_transpose(a), B::matmul(g, B::float_transpose(w))));
        }
    }
}

pub(super) fn autodiff_lora_linear<B: Backend + FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    w: FloatTensor<Autodiff<B, C>>,
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    scale: f64,
) -> FloatTensor<Autodiff<B, C>> {
    // The node pays off where products can add into a buffer (a BLAS on burn flex) and W is
    // frozen; otherwise the ops as before, each under autodiff.
    if std::any::TypeId::of::<B>() != std::any::TypeId::of::<Flex>() || !uses_blas() || w.is_tracked() {
        return composed_lora_linear::<Autodiff<B, C>>(x, w, a, b, scale);
    }
    let nodes = [x.node(), a.node(), b.node()];
    let (x, w, a, b) = (x.into_primitive(), w.into_primitive(), a.into_primitive(), b.into_primitive());
    let (out, t) = lora_forward::<B>(x.clone(), w.clone(), a.clone(), b.clone(), scale);
    super::record::<B, C, _, _>(LoraLinear, nodes, (x, w, a, b, t, scale), out)
}
