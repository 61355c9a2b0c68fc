// acc + Σ x², one number: the trainer's global gradient norm, accumulated over the trained
// tensors one dispatch each (rather than a square, a sum and a concatenation each). One
// workgroup: the invocations sum strided squares, then `workgroup_sum` (workgroup_sum.wgsl,
// appended). Every storage binding is read_write (see adamw.wgsl).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> acc: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// n (then unused words).
@group(0) @binding(3) var<uniform> info: array<vec4<u32>, 1>;

// The launch uses 64 invocations.
override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32) {
    let n = info[0].x;
    var s = 0.0;
    for (var i = t; i < n; i += WG) {
        let v = x[i];
        s += v * v;
    }
    let total = workgroup_sum(t, s);
    if (t == 0u) {
        out[0] = acc[0] + total;
    }
}
