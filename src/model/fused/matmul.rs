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
