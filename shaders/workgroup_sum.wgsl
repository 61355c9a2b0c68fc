// A sum over one workgroup, for the shaders that reduce a row or a tensor (rms_norm,
// rms_norm_grad_x, rms_scales, sum_squares_add): src/model/fused/wgsl.rs appends this file to
// theirs. Every invocation passes its partial sum and gets the total back. It holds barriers, so
// it must be called from uniform control flow. The launch uses 64 invocations, the size of
// `partial`.

var<workgroup> partial: array<f32, 64>;

fn workgroup_sum(t: u32, v: f32) -> f32 {
    // A previous call's readers are done before the buffer is written again.
    workgroupBarrier();
    partial[t] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (t < half) {
            partial[t] += partial[t + half];
        }
        workgroupBarrier();
    }
    return partial[0];
}
