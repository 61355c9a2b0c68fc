//! The matmul shapes of one LoRA training step of the 24M Llama (`benches/llama-24m.json`,
//! batch 8 × 128 = 1024 rows, rank 8), timed through burn's tensor API on the CPU engine (burn
//! flex, the gemm crate): what `tinytune train --device cpu` runs. Prints one JSON line per shape
//! (`name`, `m`, `k`, `n`, `batch`, `gflops`), the median of 7 timed calls after one untimed.
//! `benches/gemm_shapes.py` runs it beside numpy (OpenBLAS) and PyTorch on the same shapes and
//! prints the table; asserts nothing.
//!
//!     cargo bench --profile dev --bench gemm_shapes

use std::time::Instant;

use burn::tensor::{Device, Tensor};
use futures_lite::future::block_on;
use tinytune::model::read_f32;

/// (name, batch, m, k, n, whether the right side is a transposed view as in the backward pass)
const SHAPES: &[(&str, usize, usize, usize, usize, bool)] = &[
    ("base q/o forward", 1, 1024, 512, 512, false),
    ("base k/v forward", 1, 1024, 512, 256, false),
    ("base gate/up forward", 1, 1024, 512, 1376, false),
    ("base down forward", 1, 1024, 1376, 512, false),
    ("base gate/up input grad (W transposed)", 1, 1024, 1376, 512, true),
    ("base down input grad (W transposed)", 1, 1024, 512, 1376, true),
    ("LoRA x·A (r 8)", 1, 1024, 512, 8, false),
    ("LoRA (x·A)·B (r 8)", 1, 1024, 8, 512, false),
    ("LoRA grad of A: xᵀ·g (r 8)", 1, 512, 1024, 8, false),
    ("attention q·kᵀ per head (64 heads)", 64, 128, 64, 128, true),
    ("attention p·v per head (64 heads)", 64, 128, 128, 64, false),
];

fn main() {
    let device = Device::flex();
    for &(name, batch, m, k, n, transposed) in SHAPES {
        let a = Tensor::<3>::random([batch, m, k], burn::tensor::Distribution::Default, &device);
        let b = if transposed {
            Tensor::<3>::random([batch, n, k], burn::tensor::Distribution::Default, &device).swap_dims(1, 2)
        } else {
            Tensor::<3>::random([batch, k, n], burn::tensor::Distribution::Default, &device)
        };
        let mut times = Vec::new();
        for i in 0..8 {
            let started = Instant::now();
            let c = a.clone().matmul(b.clone());
            // Reading one value waits for the product (flex computes eagerly; this keeps it
            // honest should that change).
            block_on(read_f32(c.slice([0..1, 0..1, 0..1]))).unwrap();
            if i > 0 {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        times.sort_by(|x, y| x.total_cmp(y));
        let s = times[times.len() / 2];
        let gflops = 2.0 * (batch * m * k * n) as f64 / s / 1e9;
        println!(
            "{{\"name\": \"{name}\", \"batch\": {batch}, \"m\": {m}, \"k\": {k}, \"n\": {n}, \"transposed\": {transposed}, \"gflops\": {gflops:.2}}}"
        );
    }
}
