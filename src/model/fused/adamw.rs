//! One AdamW update of a parameter as one op.
//!
//! Composed from tensor ops, an update is about a dozen element-wise passes a parameter (scale
//! the moments, add, square, root, divide, decay, subtract). On a GPU each is a dispatch: a LoRA
//! step of the built-in model updates 56 tensors, so the optimizer issued most of a step's
//! dispatches. Here it is one pass: the kernel in `kernels/` on the CPU engine, and
//! `shaders/adamw.wgsl` on wgpu. Other cubecl runtimes run the composed ops.

use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::backend::{Backend, Flex, TensorMetadata};
pub use tinytune_kernels::AdamwStep;

use super::{flex_f32, flex_tensor};

/// The update from a backend's own ops, in the kernel's order and roundings.
pub(super) fn composed_adamw<B: Backend>(p: FloatTensor<B>, g: FloatTensor<B>, m: FloatTensor<B>, v: FloatTensor<B>, s: AdamwStep) -> [FloatTensor<B>; 3] {
    let g = B::float_mul_scalar(g, s.clip.into());
    let m = B::float_add(B::float_mul_scalar(m, s.beta1.into()), B::float_mul_scalar(g.clone(), s.one_minus_beta1.into()));
    let v = B::float_add(B::float_mul_scalar(v, s.beta2.into()), B::float_mul_scalar(B::float_mul(g.clone(), g), s.one_minus_beta2.into()));
    let denom = B::float_add_scalar(B::float_div_scalar(B::float_sqrt(v.clone()), s.sqrt_bc2.into()), s.eps.into());
    let p = B::float_sub(B::float_mul_scalar(p, s.decay.into()), B::float_mul_scalar(B::float_div(m.clone(), denom), s.step.into()));
    [p, m, v]
}

pub(super) fn flex_adamw(p: FloatTensor<Flex>, g: FloatTensor<Flex>, m: FloatTensor<Flex>, v: FloatTensor<Flex>, s: AdamwStep) -> [FloatTensor<Flex>; 3] {
    let shape = p.shape();
    let same = [&g, &m, &v].iter().all(|t| t.shape() == shape);
    let (Some(pv), Some(gv), Some(mv), Some(vv)) = (flex_f32(&p), flex_f32(&g), flex_f32(&m), flex_f32(&v)) else {
        return composed_adamw::<Flex>(p, g, m, v, s);
    };
    assert!(same, "adamw: the parameter, its gradient and its moments must have one shape");
    let (mut pn, mut mn, mut vn) = (pv.into_owned(), mv.into_owned(), vv.into_owned());
    #[cfg(not(target_arch = "wasm32"))]
    {
        const CHUNK: usize = 64 * 1024;
        let (pc, mc, vc) = (crate::blas::Chunks::new(&mut pn, CHUNK), crate::blas::Chunks::new(&mut mn, CHUNK), crate::blas::Chunks::new(&mut vn, CHUNK));
        crate::blas::for_each_task(pc.count(), &|c| {
            // Safety: for_each_task runs each task index once.
            let (p, m, v) = unsafe { (pc.get(c), mc.get(c), vc.get(c)) };
            let start = c * CHUNK;
            tinytune_kernels::adamw(p, m, v, &gv[start..start + p.len()], &s);
        });
    }
    #[cfg(target_arch = "wasm32")]
    tinytune_kernels::adamw(&mut pn, &mut mn, &mut vn, &gv, &s);
    [flex_tensor(pn, &p), flex_tensor(mn, &p), flex_tensor(vn, &p)]
}

pub(super) fn cube_adamw(p: CubeTensor, g: CubeTensor, m: CubeTensor, v: CubeTensor, s: AdamwStep) -> [CubeTensor; 3] {
    match super::wgsl::adamw(&p, &g, &m, &v, s) {
        Some(out) => out,
        None => composed_adamw::<CubeBackend>(p, g, m, v, s),
    }
}
