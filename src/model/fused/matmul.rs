//! The model's matrix products (linear layers, LoRA, the LM head) as one op, so that the CPU
//! engine can hand them to a BLAS.
//!
//! burn flex multiplies with the gemm crate: 75–120 GFLOPS on a LoRA step's base shapes on this
//! project's 2-core test machine, where OpenBLAS reaches 150–180 (`benches/gemm_shapes.py`).
//! Natively, when a BLAS library is installed (`blas.rs`), f32 products on burn flex go to its
//! `sgemm` with the operands' strides as they are (a transposed view is a flag, not a copy), and
//! so do the backward pass's products. Everywhere else (wgpu, the page's wasm engine, no BLAS
//! found, other dtypes, strides a BLAS cannot take) it is the backend's own matmul under burn's
//! own autodiff, exactly as before.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, binary};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex};

use super::FusedOps;

/// Whether the CPU engine's products go to a BLAS (never in the browser).
pub fn uses_blas() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    return super::blas::get().is_some();
    #[cfg(target_arch = "wasm32")]
    false
}

/// One line for reports: which GEMM the CPU engine's products use.
pub fn describe_gemm() -> String {
    #[cfg(not(target_arch = "wasm32"))]
    return super::blas::describe();
    #[cfg(target_arch = "wasm32")]
    "the built-in GEMM (gemm crate, wasm SIMD)".to_string()
}

/// `a [M, K] · b [K, N]` on burn flex: through the BLAS where one is loaded and the operands
/// suit it, else burn flex's own product.
pub(super) fn flex_matmul(a: FloatTensor<Flex>, b: FloatTensor<Flex>) -> FloatTensor<Flex> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(blas) = super::blas::get()
        && let Some(out) = blas_matmul(blas, &a, &b)
    {
        return out;
    }
    Flex::float_matmul(a, b)
}

/// Products with a side shorter than this stay on burn flex, whose kernels win there
/// (`benches/gemm_shapes.rs`, 2 threads): decoding's one row (19 against 6 GFLOPS) and four
/// (45 against 19), and the rank-8 LoRA products (52 against 42); from 16 rows on the BLAS wins
/// (89 against 63; 150–180 against 70–180 at 1,024 rows).
#[cfg(not(target_arch = "wasm32"))]
const BLAS_MIN_SIDE: usize = 16;

#[cfg(not(target_arch = "wasm32"))]
fn blas_matmul(blas: &super::blas::Blas, a: &FloatTensor<Flex>, b: &FloatTensor<Flex>) -> Option<FloatTensor<Flex>> {
    let (oa, ob) = (operand(a)?, operand(b)?);
    if oa.cols != ob.rows || oa.rows.min(oa.cols).min(ob.cols) < BLAS_MIN_SIDE {
        return None;
    }
    let out = blas.matmul(&oa, &ob);
    Some(Flex::float_from_data(burn::tensor::TensorData::new(out, [oa.rows, ob.cols]), &Default::default()))
}

/// A 2-d f32 tensor as a BLAS operand: rows contiguous (`ld` the row stride), or columns
/// contiguous (a transposed view), or None (other dtypes and ranks, broadcast, negative or
/// interleaved strides).
#[cfg(not(target_arch = "wasm32"))]
fn operand(t: &FloatTensor<Flex>) -> Option<super::blas::Operand<'_>> {
    let layout = t.layout();
    if t.dtype() != burn::tensor::DType::F32 || layout.num_dims() != 2 {
        return None;
    }
    let (rows, cols) = (layout.shape()[0], layout.shape()[1]);
    let (s0, s1) = (layout.strides()[0], layout.strides()[1]);
    let data = t.storage::<f32>().get(layout.start_offset()..)?;
    // A dimension of length 1 is never stepped along, so its stride does not matter.
    let stride = |s: isize, len: usize, at_least: usize| if len <= 1 { Some(at_least.max(1)) } else { usize::try_from(s).ok().filter(|&s| s >= at_least.max(1)) };
    if s1 == 1 || cols <= 1 {
        if let Some(ld) = stride(s0, rows, cols) {
            return Some(super::blas::Operand { data, rows, cols, ld, transposed: false });
        }
    }
    if s0 == 1 || rows <= 1 {
        if let Some(ld) = stride(s1, cols, rows) {
            return Some(super::blas::Operand { data, rows, cols, ld, transposed: true });
        }
    }
    None
}

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
