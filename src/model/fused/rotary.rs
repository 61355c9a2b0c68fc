//! The rotary position embedding as one op: `x·cos + rotate_half(x)·sin`.
//!
//! Composed from tensor ops it is two slices, a negation, a concatenation (a zeroed buffer and
//! two copies), two multiplies and an add, and backward as many again plus the slices' zeroed
//! gradients, on q and k of every layer. Here it is one pass a row forward and one backward (the
//! transposed map): a kernel in `kernels/` on the CPU engine, `shaders/rotary.wgsl` on wgpu, the
//! composed ops on other cubecl runtimes.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata};
use burn::tensor::{Shape, Slice};

use super::{FusedOps, by_rows, flex_f32, flex_tensor};

/// `[B, heads, T, hs]` and the tables' batch rows (1 or B), checked: cos and sin
/// `[1 or B, 1, T, hs]`, hs even.
pub(super) fn rotary_dims(x: &Shape, cos: &Shape, sin: &Shape) -> ([usize; 4], usize) {
    assert!(x.num_dims() == 4 && cos.num_dims() == 4 && cos == sin, "rotary takes x [B, heads, T, hs] and cos, sin [1 or B, 1, T, hs]: got {x:?}, {cos:?}, {sin:?}");
    let (dims, bc) = ([x[0], x[1], x[2], x[3]], cos[0]);
    assert!((bc == 1 || bc == dims[0]) && cos[1] == 1 && cos[2] == dims[2] && cos[3] == dims[3], "rotary: tables {cos:?} do not fit x {x:?}");
    assert!(dims[3] % 2 == 0, "rotary: the head size {} is odd", dims[3]);
    (dims, bc)
}

/// The composed ops: `x·cos + (−x₂, x₁)·sin`, or with `transpose` the transposed map
/// `x·cos + (z₂, −z₁)` with `z = x·sin`.
pub(super) fn composed_rotary<B: Backend>(x: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>, transpose: bool) -> FloatTensor<B> {
    let ([b, h, t, hs], _) = rotary_dims(&x.shape(), &cos.shape(), &sin.shape());
    let half = hs / 2;
    let cut = |x: FloatTensor<B>, from: usize, to: usize| {
        let all = |n: usize| Slice::new(0, Some(n as isize), 1);
        B::float_slice(x, &[all(b), all(h), all(t), Slice::new(from as isize, Some(to as isize), 1)])
    };
    let straight = B::float_mul(x.clone(), cos);
    let rotated = if transpose {
        let z = B::float_mul(x, sin);
        B::float_cat(vec![cut(z.clone(), half, hs), B::float_neg(cut(z, 0, half))], 3)
    } else {
        B::float_mul(B::float_cat(vec![B::float_neg(cut(x.clone(), half, hs)), cut(x, 0, half)], 3), sin)
    };
    B::float_add(straight, rotated)
}

pub(super) fn flex_rotary(x: FloatTensor<Flex>, cos: FloatTensor<Flex>, sin: FloatTensor<Flex>, transpose: bool) -> FloatTensor<Flex> {
    let ([_, h, t, hs], bc) = rotary_dims(&x.shape(), &cos.shape(), &sin.shape());
    let (Some(xv), Some(cv), Some(sv)) = (flex_f32(&x), flex_f32(&cos), flex_f32(&sin)) else {
        return composed_rotary::<Flex>(x, cos, sin, transpose);
    };
    let mut out = vec![0f32; xv.len()];
    // A row costs about four operations a value: `by_rows` weighs a row's cost, not a value's
    // (with 4 here, the 24M model's keys, 4,096 rows of 64, ran on one thread).
    by_rows(&mut out, hs, 4 * hs, |r, o| {
        // Row r is (batch r / (h·t), position r % t); the tables have one row a position, per
        // batch row or shared.
        let table = ((r / (h * t)) * (bc > 1) as usize * t + r % t) * hs;
        tinytune_kernels::rotary(&xv[r * hs..(r + 1) * hs], &cv[table..table + hs], &sv[table..table + hs], transpose, o);
    });
    flex_tensor(out, &x)
}

#[derive(Debug)]
struct Rotary;

impl<B: Backend + FusedOps> Backward<B, 1> for Rotary {
    /// The tables.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (cos, sin) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::rotary(grad, cos, sin, true));
    }
}

/// The autodiff node: the tables are constants; x's gradient is the transposed map of the
/// output's.
pub(super) fn autodiff_rotary<B: Backend + FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    cos: FloatTensor<Autodiff<B, C>>,
    sin: FloatTensor<Autodiff<B, C>>,
    transpose: bool,
) -> FloatTensor<Autodiff<B, C>> {
    assert!(!transpose, "the transposed rotary map is the backward pass's, on the inner backend");
    let node = x.node();
    let (x, cos, sin) = (x.into_primitive(), cos.into_primitive(), sin.into_primitive());
    let out = B::rotary(x, cos.clone(), sin.clone(), false);
    super::record::<B, C, _, _>(Rotary, [node], (cos, sin), out)
}
