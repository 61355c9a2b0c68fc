// The rotary position embedding of x [B, heads, T, hs] with cos and sin [1 or B, 1, T, hs]:
// out = x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁) over each row's two halves; with
// `transpose` set, the transposed map (the gradient given the output's). `rotary` in
// kernels/src/lib.rs. One invocation an element. Every storage binding is read_write (see
// adamw.wgsl).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read_write> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// n, workgroups along x, hs, T, rows a batch row (heads · T), whether cos/sin have a row a
// batch row (1) or one for all (0), transpose (1) or not (0).
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 2>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let n = info[0].x;
    let i = (wid.x + wid.y * info[0].y) * WG + t;
    if (i >= n) {
        return;
    }
    let hs = info[0].z;
    let tt = info[0].w;
    let per_batch = info[1].x;
    let half = hs / 2u;
    let row = i / hs;
    let j = i % hs;
    let b = (row / per_batch) * info[1].y;
    let c = (b * tt + row % tt) * hs;
    let xi = x[i];
    if (info[1].z == 0u) {
        if (j < half) {
            out[i] = xi * cos_t[c + j] - x[i + half] * sin_t[c + j];
        } else {
            out[i] = xi * cos_t[c + j] + x[i - half] * sin_t[c + j];
        }
    } else {
        if (j < half) {
            out[i] = xi * cos_t[c + j] + x[i + half] * sin_t[c + j + half];
        } else {
            out[i] = xi * cos_t[c + j] - x[i - half] * sin_t[c + j - half];
        }
    }
}
