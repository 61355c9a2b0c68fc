//! The fused ops' WGSL kernels (`shaders/`), launched on burn's cubecl backend when it runs on
//! wgpu: AdamW, RMSNorm and its two gradients, SiLU·gate and its gradient, the gradient norm's
//! sum of squares, the rotary embedding and its transpose. Each replaces a chain
//! of burn's element-wise and reduction kernels with one dispatch (two for RMSNorm's weight
//! gradient). Each returns None where it does not apply (another cubecl runtime, another dtype),
//! and the caller runs the composed ops.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::tensor::{DType, Shape};
use cubecl::prelude::KernelId;
use cubecl::server::{KernelArguments, MetadataBindingInfo};
use cubecl::{CubeCount, CubeDim};

use tinytune_kernels::AdamwStep;

macro_rules! shader {
    (@source $name:ident, $source:expr) => {
        struct $name;
        impl KernelSource for $name {
            fn source(&self) -> SourceTemplate {
                SourceTemplate::new($source)
            }
            fn id(&self) -> KernelId {
                KernelId::new::<Self>()
            }
            fn lang(&self) -> &'static str {
                "wgsl"
            }
        }
    };
    ($name:ident, $file:literal) => {
        shader!(@source $name, include_str!(concat!("../../../shaders/", $file)));
    };
    // A shader that reduces over its workgroup, with workgroup_sum.wgsl appended.
    ($name:ident, $file:literal, workgroup_sum) => {
        shader!(@source $name, concat!(include_str!(concat!("../../../shaders/", $file)), "\n", include_str!("../../../shaders/workgroup_sum.wgsl")));
    };
}

shader!(Adamw, "adamw.wgsl");
shader!(RmsNorm, "rms_norm.wgsl", workgroup_sum);
shader!(RmsNormGradX, "rms_norm_grad_x.wgsl", workgroup_sum);
shader!(RmsScales, "rms_scales.wgsl", workgroup_sum);
shader!(RmsNormGradW, "rms_norm_grad_w.wgsl");
shader!(SiluMul, "silu_mul.wgsl");
shader!(SiluMulGradGate, "silu_mul_grad_gate.wgsl");
shader!(SumSquaresAdd, "sum_squares_add.wgsl", workgroup_sum);
shader!(Rotary, "rotary.wgsl");

/// Invocations a workgroup: the shaders' `WG` and the size of their workgroup arrays.
const WG: usize = 64;

/// f32 tensors on a wgpu device, made contiguous (a no-op when they are), or None.
fn inputs<const N: usize>(ts: [CubeTensor; N]) -> Option<[CubeTensor; N]> {
    let ok = ts.iter().all(|t| t.dtype() == DType::F32 && matches!(t.device, cubecl::Device::Wgpu(_)) && t.shape().num_elements() <= u32::MAX as usize);
    ok.then(|| ts.map(burn::backend::wgpu::into_contiguous))
}

/// A new f32 tensor of `shape` on `like`'s device.
fn fresh(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let bytes = shape.num_elements().max(1) * 4;
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), shape, like.client.empty(bytes), DType::F32)
}

/// Launch `kernel` over `groups` workgroups (laid out as x × y within the 65,535 limit) with the
/// bindings in order and the uniform `info`, whose third word (or, for element-wise kernels
/// that say so, the second) receives the workgroups along x.
fn launch<K: KernelSource + 'static>(kernel: K, bindings: &[&CubeTensor], mut info: Vec<u32>, x_slot: usize, groups: usize) {
    let x = groups.clamp(1, 65535);
    let y = groups.div_ceil(x).max(1);
    info[x_slot] = x as u32;
    // The shaders read whole vec4s, and a uniform binding is at least 16 bytes.
    info.resize(info.len().next_multiple_of(4), 0);
    let client = bindings[0].client.clone();
    let mut args = KernelArguments::new();
    for t in bindings {
        args = args.with_buffer(t.handle.clone().binding());
    }
    args.info = MetadataBindingInfo::custom(info.chunks(2).map(|w| w[0] as u64 | ((w[1] as u64) << 32)).collect());
    client.launch(Box::new(SourceKernel::new(kernel, CubeDim::new_1d(WG as u32))), CubeCount::Static(x as u32, y as u32, 1), args);
}

/// `[rows, cols]` of a 2-d tensor.
fn rows_cols(t: &CubeTensor) -> Option<(usize, usize)> {
    let s = t.shape();
    (s.num_dims() == 2).then(|| (s[0], s[1]))
}

pub fn adamw(p: &CubeTensor, g: &CubeTensor, m: &CubeTensor, v: &CubeTensor, s: AdamwStep) -> Option<[CubeTensor; 3]> {
    let shape = p.shape();
    if [g, m, v].iter().any(|t| t.shape() != shape) || shape.num_elements() == 0 {
        return None;
    }
    let [p, g, m, v] = inputs([p.clone(), g.clone(), m.clone(), v.clone()])?;
    let n = shape.num_elements();
    let outs = [fresh(&p, shape.clone()), fresh(&p, shape.clone()), fresh(&p, shape)];
    let info = vec![
        n as u32,
        0,
        s.clip.to_bits(),
        s.beta1.to_bits(),
        s.one_minus_beta1.to_bits(),
        s.beta2.to_bits(),
        s.one_minus_beta2.to_bits(),
        s.sqrt_bc2.to_bits(),
        s.eps.to_bits(),
        s.decay.to_bits(),
        s.step.to_bits(),
        0,
    ];
    launch(Adamw, &[&p, &g, &m, &v, &outs[0], &outs[1], &outs[2]], info, 1, n.div_ceil(WG));
    Some(outs)
}

pub fn rms_norm(x: &CubeTensor, w: &CubeTensor, eps: f64) -> Option<CubeTensor> {
    let (rows, cols) = rows_cols(x)?;
    let [x, w] = inputs([x.clone(), w.clone()])?;
    let out = fresh(&x, x.shape());
    launch(RmsNorm, &[&x, &w, &out], vec![rows as u32, cols as u32, 0, (eps as f32).to_bits()], 2, rows);
    Some(out)
}

pub fn rms_norm_grad_x(x: &CubeTensor, w: &CubeTensor, g: &CubeTensor, eps: f64) -> Option<CubeTensor> {
    let (rows, cols) = rows_cols(x)?;
    let [x, w, g] = inputs([x.clone(), w.clone(), g.clone()])?;
    let out = fresh(&x, x.shape());
    launch(RmsNormGradX, &[&x, &w, &g, &out], vec![rows as u32, cols as u32, 0, (eps as f32).to_bits()], 2, rows);
    Some(out)
}

pub fn rms_norm_grad_w(x: &CubeTensor, g: &CubeTensor, eps: f64) -> Option<CubeTensor> {
    let (rows, cols) = rows_cols(x)?;
    let [x, g] = inputs([x.clone(), g.clone()])?;
    let scales = fresh(&x, Shape::new([rows]));
    launch(RmsScales, &[&x, &scales], vec![rows as u32, cols as u32, 0, (eps as f32).to_bits()], 2, rows);
    let out = fresh(&x, Shape::new([cols]));
    launch(RmsNormGradW, &[&x, &g, &scales, &out], vec![rows as u32, cols as u32, 0, 0], 2, cols.div_ceil(WG));
    Some(out)
}

pub fn silu_mul(gate: &CubeTensor, up: &CubeTensor) -> Option<CubeTensor> {
    let n = gate.shape().num_elements();
    let [gate, up] = inputs([gate.clone(), up.clone()])?;
    let out = fresh(&gate, gate.shape());
    launch(SiluMul, &[&gate, &up, &out], vec![n as u32, 0], 1, n.div_ceil(WG));
    Some(out)
}

pub fn silu_mul_grad_gate(gate: &CubeTensor, up: &CubeTensor, grad: &CubeTensor) -> Option<CubeTensor> {
    let n = gate.shape().num_elements();
    let [gate, up, grad] = inputs([gate.clone(), up.clone(), grad.clone()])?;
    let out = fresh(&gate, gate.shape());
    launch(SiluMulGradGate, &[&gate, &up, &grad, &out], vec![n as u32, 0], 1, n.div_ceil(WG));
    Some(out)
}

pub fn sum_squares_add(x: &CubeTensor, acc: &CubeTensor) -> Option<CubeTensor> {
    if acc.shape().num_elements() != 1 {
        return None;
    }
    let n = x.shape().num_elements();
    let [x, acc] = inputs([x.clone(), acc.clone()])?;
    let out = fresh(&x, acc.shape());
    launch(SumSquaresAdd, &[&x, &acc, &out], vec![n as u32, 0], 1, 1);
    Some(out)
}

pub fn rotary(x: &CubeTensor, cos: &CubeTensor, sin: &CubeTensor, transpose: bool) -> Option<CubeTensor> {
    let shape = x.shape();
    if shape.num_dims() != 4 || cos.shape().num_dims() != 4 {
        return None;
    }
    let (h, t, hs, bc) = (shape[1], shape[2], shape[3], cos.shape()[0]);
    let n = shape.num_elements();
    let [x, cos, sin] = inputs([x.clone(), cos.clone(), sin.clone()])?;
    let out = fresh(&x, shape);
    let info = vec![n as u32, 0, hs as u32, t as u32, (h * t) as u32, (bc > 1) as u32, transpose as u32, 0];
    launch(Rotary, &[&x, &cos, &sin, &out], info, 1, n.div_ceil(WG));
    Some(out)
}
