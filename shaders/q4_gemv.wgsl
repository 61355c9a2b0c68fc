// Fused 4-bit dequantize-and-multiply for a few rows (decoding): y[r, o] = Σ_k x[r, k] · W[o, k],
// with W [out, in] stored in 4 bits as bitsandbytes stores it (see q4_dequant.wgsl for the
// dequantization and src/quant/kernels.rs for the layout). The f32 matrix is never written: each
// weight is dequantized in a register, used for every row of x, and dropped.
//
// One workgroup per output feature o. Its invocations first put the absmax products of the
// row's blocks in workgroup memory (so the offset add cannot fuse with them, as in the dequant
// kernel), then stride over the inputs accumulating up to MAX_ROWS dot products, and finally
// reduce across the workgroup in a tree. A block's term (GGUF's Q4_1) is added to each weight
// after its product, which a compiler may fuse into one rounding here: the sums' order is this
// kernel's own anyway, and it is checked against dequantize-then-multiply within a tolerance.

@group(0) @binding(0) var<storage, read_write> q: array<u32>;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// As in q4_dequant.wgsl, then: [2].x outputs along x of the dispatch, [2].y out, [2].z in,
// [2].w rows of x; [3].x the word offset of the per-block terms (0: none).
@group(0) @binding(3) var<uniform> info: array<vec4<u32>, 4>;

override WG: u32 = 64u;
const MAX_ROWS: u32 = 8u;
// Absmax blocks one output row can touch: in / blocksize + 1 (the launcher checks).
const MAX_BLOCKS: u32 = 258u;

var<workgroup> products: array<f32, MAX_BLOCKS>;
var<workgroup> biases: array<f32, MAX_BLOCKS>;
var<workgroup> partial: array<f32, 512>;

fn byte_at(k: u32) -> u32 {
    return (q[k >> 2u] >> ((k & 3u) * 8u)) & 0xffu;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let blocksize = info[0].y;
    let nested = info[0].z;
    let code_at = info[0].w;
    let absmax_at = info[1].x;
    let absmax2_at = info[1].y;
    let map_at = info[1].z;
    let offset_at = info[1].w;
    let per_row = info[2].x;
    let outs = info[2].y;
    let cols = info[2].z;
    let rows = info[2].w;
    let bias_at = info[3].x;
    let o = wid.x + wid.y * per_row;
    if (o >= outs) {
        return;
    }
    let row_start = o * cols;
    let first = row_start / blocksize;
    let count = (row_start + cols - 1u) / blocksize - first + 1u;
    for (var b = t; b < count; b = b + WG) {
        let blk = first + b;
        if (nested == 0u) {
            products[b] = bitcast<f32>(q[absmax_at + blk]);
        } else {
            let c = byte_at(absmax_at * 4u + blk);
            products[b] = bitcast<f32>(q[map_at + c]) * bitcast<f32>(q[absmax2_at + blk / nested]);
        }
        if (bias_at != 0u) {
            biases[b] = bitcast<f32>(q[bias_at + blk]);
        }
    }
    workgroupBarrier();
    var offset = 0.0;
    if (nested != 0u) {
        offset = bitcast<f32>(q[offset_at]);
    }
    var acc: array<f32, MAX_ROWS>;
    for (var k = t; k < cols; k = k + WG) {
        let i = row_start + k;
        var absmax = products[i / blocksize - first];
        if (nested != 0u) {
            absmax = absmax + offset;
        }
        let byte = byte_at(i >> 1u);
        let nibble = select(byte & 0xfu, byte >> 4u, (i & 1u) == 0u);
        var w = bitcast<f32>(q[code_at + nibble]) * absmax;
        if (bias_at != 0u) {
            w = w + biases[i / blocksize - first];
        }
        for (var r = 0u; r < rows; r = r + 1u) {
            acc[r] = acc[r] + x[r * cols + k] * w;
        }
    }
    for (var r = 0u; r < MAX_ROWS; r = r + 1u) {
        partial[r * WG + t] = acc[r];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (t < s) {
            for (var r = 0u; r < rows; r = r + 1u) {
                partial[r * WG + t] = partial[r * WG + t] + partial[r * WG + t + s];
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        for (var r = 0u; r < rows; r = r + 1u) {
            y[r * outs + o] = partial[r * WG];
        }
    }
}
