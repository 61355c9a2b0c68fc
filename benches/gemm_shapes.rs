//! The matmul shapes of one LoRA training step of the 24M Llama (`benches/llama-24m.json`,
//! batch 8 × 128 = 1024 rows, rank 8), timed through burn's tensor API on the CPU engine (burn
//! flex, the gemm crate), and for the 2-d products also through `fused::matmul`, which the
//! model calls (a BLAS when one is installed). Then the rows of decoding and short prompts, where
//! the two part ways. Each side is held as the model holds it: the backward pass's weights and
//! the token-summed gradients' left sides as transposed views. Prints one JSON line per shape
//! (`name`, `m`, `k`, `n`, `batch`, `transposed` and `a_transposed` for the right and left
//! sides, `gflops`, `gflops_model`: the model's path, or null for the batched products), the
//! median of 7 timed calls after one untimed. `benches/gemm_shapes.py` runs it beside numpy
//! (OpenBLAS) and PyTorch on the same shapes and prints the table; asserts nothing.
//!
//!     cargo bench --profile dev --bench gemm_shapes

use std::time::Instant;

use burn::tensor::{Device, Tensor};
use futures_lite::future::block_on;
use tinytune::model::read_f32;

/// (name, batch, m, k, n, whether the right side is a transposed view as in the backward pass,
/// whether the left side is)
const SHAPES: &[(&str, usize, usize, usize, usize, bool, bool)] = &[
    ("base q/o forward", 1, 1024, 512, 512, false, false),
    ("base k/v forward", 1, 1024, 512, 256, false, false),
    ("base gate/up forward", 1, 1024, 512, 1376, false, false),
    ("base down forward", 1, 1024, 1376, 512, false, false),
    ("base gate/up input grad (W transposed)", 1, 1024, 1376, 512, true, false),
    ("base down input grad (W transposed)", 1, 1024, 512, 1376, true, false),
    ("LoRA x·A (r 8)", 1, 1024, 512, 8, false, false),
    ("LoRA (x·A)·B (r 8)", 1, 1024, 8, 512, false, false),
    ("LoRA g·Bᵀ (r 8)", 1, 1024, 1376, 8, true, false),
    ("LoRA grad of A: xᵀ·(g·Bᵀ) (r 8)", 1, 512, 1024, 8, false, true),
    ("LoRA grad of B: (x·A)ᵀ·g (r 8)", 1, 8, 1024, 1376, false, true),
    ("attention q·kᵀ per head (64 heads)", 64, 128, 64, 128, true, false),
    ("attention p·v per head (64 heads)", 64, 128, 128, 64, false, false),
    ("decode: q/o, 1 row", 1, 1, 512, 512, false, false),
    ("decode: gate/up, 1 row", 1, 1, 512, 1376, false, false),
    ("prompt: q/o, 4 rows", 1, 4, 512, 512, false, false),
    ("prompt: q/o, 16 rows", 1, 16, 512, 512, false, false),
    ("prompt: q/o, 64 rows", 1, 64, 512, 512, false, false),
];

/// The median seconds of 7 calls of `f` after one untimed. Reading one value of the result
/// waits for the product (flex computes eagerly; this keeps it honest should that change).
fn median_seconds(f: impl Fn() -> Tensor<3>) -> f64 {
    let mut times = Vec::new();
    for i in 0..8 {
        let started = Instant::now();
        block_on(read_f32(f().slice([0..1, 0..1, 0..1]))).unwrap();
        if i > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|x, y| x.total_cmp(y));
    times[times.len() / 2]
}

fn main() {
    eprintln!("{}", tinytune::blas::describe());
    let device = Device::flex();
    for &(name, batch, m, k, n, transposed, a_transposed) in SHAPES {
        // `[batch, rows, cols]` random values, or a transposed view of `[batch, cols, rows]`.
        let held = |rows: usize, cols: usize, transposed: bool| {
            let random = |d1, d2| Tensor::<3>::random([batch, d1, d2], burn::tensor::Distribution::Default, &device);
            if transposed { random(cols, rows).swap_dims(1, 2) } else { random(rows, cols) }
        };
        let (a, b) = (held(m, k, a_transposed), held(k, n, transposed));
        let flops = 2.0 * (batch * m * k * n) as f64;
        let gflops = flops / median_seconds(|| a.clone().matmul(b.clone())) / 1e9;
        let model = (batch == 1).then(|| {
            let (a, b) = (a.clone().squeeze_dim::<2>(0), b.clone().squeeze_dim::<2>(0));
            flops / median_seconds(|| tinytune::model::fused::matmul(a.clone(), b.clone()).unsqueeze::<3>()) / 1e9
        });
        let model = model.map_or("null".to_string(), |g| format!("{g:.2}"));
        println!("{{\"name\": \"{name}\", \"batch\": {batch}, \"m\": {m}, \"k\": {k}, \"n\": {n}, \"transposed\": {transposed}, \"a_transposed\": {a_transposed}, \"gflops\": {gflops:.2}, \"gflops_model\": {model}}}");
    }
}
