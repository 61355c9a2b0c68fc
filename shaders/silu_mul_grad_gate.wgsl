// The gradient of silu(gate) · up with respect to gate, given the output's gradient:
// grad · up · σ(gate) · (1 + gate · (1 − σ(gate))), element-wise: `silu_mul_grad_gate` in
// kernels/src/lib.rs. Every storage binding is read_write (see adamw.wgsl).

@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read_write> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// n, workgroups along x.
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 1>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = (wid.x + wid.y * info[0].y) * WG + t;
    if (i >= info[0].x) {
        return;
    }
    let g = gate[i];
    let s = 1.0 / (1.0 + exp(-g));
    out[i] = grad[i] * up[i] * s * (1.0 + g * (1.0 - s));
}
