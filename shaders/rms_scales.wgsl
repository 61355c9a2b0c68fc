// Each row's RMSNorm scale r = 1 / √(mean(x²) + eps) of x [rows, cols], for
// `rms_norm_grad_w.wgsl`. One workgroup a row, as in rms_norm.wgsl (with workgroup_sum.wgsl
// appended). Every storage binding is read_write (see adamw.wgsl).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
// rows, cols, workgroups along x, the f32 bits of eps.
@group(0) @binding(2) var<uniform> info: array<vec4<u32>, 1>;

// The launch uses 64 invocations.
override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let rows = info[0].x;
    let cols = info[0].y;
    let row = wid.x + wid.y * info[0].z;
    if (row >= rows) {
        return;
    }
    let base = row * cols;
    var s = 0.0;
    for (var j = t; j < cols; j += WG) {
        let v = x[base + j];
        s += v * v;
    }
    let total = workgroup_sum(t, s);
    if (t == 0u) {
        out[row] = 1.0 / sqrt(total / f32(cols) + bitcast<f32>(info[0].w));
    }
}
