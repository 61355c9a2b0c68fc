// The gradient of RMSNorm with respect to its weight, given the output's gradient g:
// Σ over rows of g · x · r, r = 1 / √(mean(x²) + eps) per row (`rms_norm_grad_weight_add` in
// kernels/src/lib.rs, summed over rows). One invocation a column walks the rows; each row's r
// comes from `scales`, which `rms_scales.wgsl` wrote. Every storage binding is read_write (see
// adamw.wgsl).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// rows, cols, workgroups along x.
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 1>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let rows = info[0].x;
    let cols = info[0].y;
    let j = (wid.x + wid.y * info[0].z) * WG + t;
    if (j >= cols) {
        return;
    }
    var acc = 0.0;
    for (var i = 0u; i < rows; i++) {
        acc += g[i * cols + j] * x[i * cols + j] * scales[i];
    }
    out[j] = acc;
}
