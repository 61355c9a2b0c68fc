// One AdamW update, element-wise: `adamw` in kernels/src/lib.rs, in the same order
// (torch.optim.AdamW's), one invocation an element. Reads p, g, m, v; writes the new values to
// three fresh buffers, so a step is one dispatch a parameter rather than a dozen element-wise
// ones. Every storage binding is read_write: burn's allocator packs tensors into shared pages, and
// a page bound read-only and read-write in one dispatch is a usage conflict.
//
// WGSL lets a compiler fuse `a * b + c` into one rounding, so values may differ from the CPU
// engine's in the last bit; the tests hold them to a tolerance.

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> p_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> m_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> v_out: array<f32>;
// n, workgroups along x, then the f32 bits of clip, β₁, 1 − β₁, β₂, 1 − β₂, √(1 − β₂ᵗ), ε,
// decay (1 − lr · weight decay) and step (lr / (1 − β₁ᵗ)).
@group(0) @binding(7) var<uniform> info: array<vec4<u32>, 3>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let n = info[0].x;
    let i = (wid.x + wid.y * info[0].y) * WG + t;
    if (i >= n) {
        return;
    }
    let clip = bitcast<f32>(info[0].z);
    let beta1 = bitcast<f32>(info[0].w);
    let one_minus_beta1 = bitcast<f32>(info[1].x);
    let beta2 = bitcast<f32>(info[1].y);
    let one_minus_beta2 = bitcast<f32>(info[1].z);
    let sqrt_bc2 = bitcast<f32>(info[1].w);
    let eps = bitcast<f32>(info[2].x);
    let decay = bitcast<f32>(info[2].y);
    let step = bitcast<f32>(info[2].z);

    let gi = g[i] * clip;
    let mi = m[i] * beta1 + gi * one_minus_beta1;
    let vi = v[i] * beta2 + (gi * gi) * one_minus_beta2;
    let denom = sqrt(vi) / sqrt_bc2 + eps;
    m_out[i] = mi;
    v_out[i] = vi;
    p_out[i] = p[i] * decay - (mi / denom) * step;
}
