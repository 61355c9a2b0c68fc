//! The fused attention kernels on one block, one thread: a training step's causal attention for
//! one key/value head (the query heads that share it stacked, 128 positions), at the head sizes
//! of the built-in model (32) and the 24M Llama (64). Prints figures; asserts nothing.
//!
//!     cargo bench --profile dev --bench attention
//!     TINYTUNE_SIMD=avx2 cargo bench --profile dev --bench attention    # the AVX2 copies
//!
//! Each figure is the fastest of 7 timings of 50 calls (the fastest, so that a busy neighbour on
//! a shared machine moves it least). GFLOPS count the products' multiply-adds over the visible
//! (causal) half only: q·kᵀ and p·v forward; the backward recomputes the probabilities and adds
//! g·vᵀ, ds·k, dsᵀ·q and pᵀ·g.

use std::time::Instant;
use tinytune_kernels::{AttentionBlock, attention_backward, attention_forward};

fn fastest(mut f: impl FnMut()) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..50 {
                f();
            }
            t.elapsed().as_secs_f64() / 50.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    println!("instruction set: {:?}", tinytune_kernels::simd());
    println!("| head size | query rows | keys | forward µs | forward GFLOPS | backward µs | backward GFLOPS |");
    println!("|---|---|---|---|---|---|---|");
    for (hs, group) in [(32, 2), (64, 2)] {
        let t = 128;
        let block = AttentionBlock { rows: group * t, t, s: t, hs, scale: 1.0 / (hs as f32).sqrt() };
        let fill = |n: usize, seed: u32| (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0 - 0.5).collect::<Vec<f32>>();
        let (q, k, v, g) = (fill(block.rows * hs, 1), fill(t * hs, 2), fill(t * hs, 3), fill(block.rows * hs, 4));
        let mask: Vec<f32> = (0..t * t).map(|i| if i % t <= i / t { 0.0 } else { f32::NEG_INFINITY }).collect();
        let mut scratch = vec![0f32; block.scratch_len()];
        let mut out = vec![0f32; block.rows * hs];
        let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
        let fwd = fastest(|| attention_forward(&block, &q, &k, &v, &mask, &mut out, &mut scratch));
        let bwd = fastest(|| attention_backward(&block, &q, &k, &v, &mask, &g, &mut dq, &mut dk, &mut dv, &mut scratch));
        // One product over the visible half: rows × (t+1)/2 keys × hs multiply-adds, 2 flops each.
        let product = 2.0 * block.rows as f64 * (t as f64 + 1.0) / 2.0 * hs as f64;
        println!("| {hs} | {} | {t} | {:.0} | {:.1} | {:.0} | {:.1} |", block.rows, fwd * 1e6, 2.0 * product / fwd / 1e9, bwd * 1e6, 6.0 * product / bwd / 1e9);
    }
}
