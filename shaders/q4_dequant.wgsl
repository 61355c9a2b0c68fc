// 4-bit blockwise dequantization (NF4 or FP4, with or without double quantization), as
// bitsandbytes' kDequantizeBlockwise computes it: w[i] = code[nibble i] · absmax[i / blocksize],
// where with double quantization absmax[b] = map[code8[b]] · absmax2[b / nested] + offset; GGUF's
// Q4_1 then adds its block's term: w[i] = code[nibble i] · absmax[b] + bias[b].
// The buffer layout and the uniform are described in src/quant/kernels.rs (`Q4Layout`).
// Every storage binding is read_write: burn's allocator packs tensors into shared pages, and a
// page bound read-only and read-write in one dispatch is a usage conflict.
//
// One workgroup per 4-bit block. Invocation 0 computes the block's absmax product into
// workgroup memory; the others add the offset after the barrier. WGSL lets a compiler fuse
// `a * b + c` into one rounding, which would break bit-exactness with the CPU path; the rounded
// product must pass through memory before the add, so no compiler can fuse them. For the same
// reason a block with a term (bias) first puts its 16 scaled codes in workgroup memory.

@group(0) @binding(0) var<storage, read_write> q: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
// n, blocksize, nested blocksize (0: plain f32 absmax), word offsets of code, absmax, absmax2,
// map and offset; blocks along x of the dispatch; [3].x the word offset of the per-block terms
// (0: none).
@group(0) @binding(2) var<uniform> info: array<vec4<u32>, 4>;

override WG: u32 = 64u;

var<workgroup> product: f32;
var<workgroup> table: array<f32, 16>;

fn byte_at(k: u32) -> u32 {
    return (q[k >> 2u] >> ((k & 3u) * 8u)) & 0xffu;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let n = info[0].x;
    let blocksize = info[0].y;
    let nested = info[0].z;
    let code_at = info[0].w;
    let absmax_at = info[1].x;
    let absmax2_at = info[1].y;
    let map_at = info[1].z;
    let offset_at = info[1].w;
    let per_row = info[2].x;
    let blk = wid.x + wid.y * per_row;
    if (blk * blocksize >= n) {
        return;
    }
    if (t == 0u) {
        if (nested == 0u) {
            product = bitcast<f32>(q[absmax_at + blk]);
        } else {
            let c = byte_at(absmax_at * 4u + blk);
            product = bitcast<f32>(q[map_at + c]) * bitcast<f32>(q[absmax2_at + blk / nested]);
        }
    }
    workgroupBarrier();
    var absmax = product;
    if (nested != 0u) {
        absmax = absmax + bitcast<f32>(q[offset_at]);
    }
    let start = blk * blocksize;
    let end = min(start + blocksize, n);
    let bias_at = info[3].x;
    if (bias_at == 0u) {
        for (var i = start + t; i < end; i = i + WG) {
            let byte = byte_at(i >> 1u);
            let nibble = select(byte & 0xfu, byte >> 4u, (i & 1u) == 0u);
            out[i] = bitcast<f32>(q[code_at + nibble]) * absmax;
        }
        return;
    }
    if (t < 16u) {
        table[t] = bitcast<f32>(q[code_at + t]) * absmax;
    }
    workgroupBarrier();
    let bias = bitcast<f32>(q[bias_at + blk]);
    for (var i = start + t; i < end; i = i + WG) {
        let byte = byte_at(i >> 1u);
        let nibble = select(byte & 0xfu, byte >> 4u, (i & 1u) == 0u);
        out[i] = table[nibble] + bias;
    }
}
