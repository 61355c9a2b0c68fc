// out = silu(gate) · up = gate · σ(gate) · up, element-wise: `silu_mul` in kernels/src/lib.rs.
// Every storage binding is read_write (see adamw.wgsl).

@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read_write> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// n, workgroups along x.
@group(0) @binding(3) var<uniform> info: array<vec4<u32>, 1>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = (wid.x + wid.y * info[0].y) * WG + t;
    if (i >= info[0].x) {
        return;
    }
    let g = gate[i];
    out[i] = g * (1.0 / (1.0 + exp(-g))) * up[i];
}
