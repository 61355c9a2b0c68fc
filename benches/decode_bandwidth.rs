//! How fast one core streams weights through a one-row product (what decoding a token does with
//! every linear layer), and whether a second core adds bandwidth. Prints figures; asserts nothing.
//!
//!     cargo bench --profile dev --bench decode_bandwidth
//!
//! The weights are 70 matrices of 512 × 1376 f32 (197 MB, past the caches of most machines; a
//! machine with a larger L3 keeps part of a smaller model's weights there), the shape of the 24M
//! Llama's MLP. One thread runs `y = x·W` over all of them with the gemm crate's kernel, and
//! again with tinytune's own one-row kernel (`tinytune_kernels::matmul_rows`, what decoding now
//! runs); then two threads split every gemm product by columns, the second a helper that spins
//! on an atomic between products (no rayon hand-off, no sleeping: the cheapest split there is).
//! The last line turns the measured rate into the most tokens/s an f32 decoder streaming from
//! memory can reach on the 24M model here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const K: usize = 512;
const N: usize = 1376;
const MATRICES: usize = 70;
const REPS: usize = 20;
/// The 24M Llama's weights read for one token: every linear layer and the output head, f32.
const WEIGHTS_24M: f64 = (8 * (2 * 512 * 512 + 2 * 512 * 256 + 3 * 512 * 1376) + 512 * 512) as f64 * 4.0;

/// `y[c0..c1] = x · W[:, c0..c1]` for a row-major `K × N` matrix, by the gemm crate's kernel
/// (what burn flex runs for a one-row product), on the calling thread.
fn row_product(x: &[f32], w: &[f32], y: &mut [f32], c0: usize, c1: usize) {
    assert!(x.len() == K && w.len() == K * N && y.len() == c1 - c0 && c0 <= c1 && c1 <= N);
    // SAFETY: the asserts keep every access of a 1 × (c1 - c0) product over K inside the slices.
    unsafe {
        gemm::gemm(
            1, c1 - c0, K,
            y.as_mut_ptr(), 1, (c1 - c0) as isize, false,
            x.as_ptr(), 1, K as isize,
            w.as_ptr().add(c0), 1, N as isize,
            0.0, 1.0, false, false, false,
            gemm::Parallelism::None,
        );
    }
}

fn main() {
    let weights: Arc<Vec<Vec<f32>>> =
        Arc::new((0..MATRICES).map(|m| (0..K * N).map(|i| ((i + m) % 13) as f32 * 0.01).collect()).collect());
    let x: Arc<Vec<f32>> = Arc::new((0..K).map(|i| i as f32 * 1e-3).collect());
    let bytes = (MATRICES * K * N * 4) as f64;

    // A check that the kernel computes what it should, against a plain f64 sum.
    let mut y = vec![0f32; N];
    row_product(&x, &weights[0], &mut y, 0, N);
    let want: f64 = (0..K).map(|k| x[k] as f64 * weights[0][k * N + 7] as f64).sum();
    assert!((y[7] as f64 - want).abs() < 1e-3 * want.abs().max(1.0), "{} against {want}", y[7]);
    let pass = |y: &mut Vec<f32>| weights.iter().for_each(|w| row_product(&x, w, y, 0, N));
    pass(&mut y);
    let start = Instant::now();
    (0..REPS).for_each(|_| pass(&mut y));
    let one = start.elapsed().as_secs_f64() / REPS as f64;

    // The same pass through tinytune's own one-row kernel (what decoding runs on weights held
    // `[in, out]`), checked against the same sum.
    let rows = |y: &mut Vec<f32>| weights.iter().for_each(|w| tinytune_kernels::matmul_rows(&x, K, 1, K, w, N, N, false, y, N));
    rows(&mut y);
    assert!((y[7] as f64 - want).abs() < 1e-3 * want.abs().max(1.0), "{} against {want}", y[7]);
    let start = Instant::now();
    (0..REPS).for_each(|_| rows(&mut y));
    let own = start.elapsed().as_secs_f64() / REPS as f64;

    // The helper takes columns N/2.. of product number `go`; `done` says it finished.
    let (go, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let helper = {
        let (weights, x, go, done) = (weights.clone(), x.clone(), go.clone(), done.clone());
        std::thread::spawn(move || {
            let mut y = vec![0f32; N - N / 2];
            let mut seen = 0;
            loop {
                let g = go.load(Ordering::Acquire);
                if g == seen {
                    std::hint::spin_loop();
                    continue;
                }
                if g == usize::MAX {
                    return;
                }
                seen = g;
                row_product(&x, &weights[(g - 1) % MATRICES], &mut y, N / 2, N);
                done.store(g, Ordering::Release);
            }
        })
    };
    let mut half = vec![0f32; N / 2];
    let mut g = 0;
    let start = Instant::now();
    for _ in 0..REPS {
        for w in weights.iter() {
            g += 1;
            go.store(g, Ordering::Release);
            row_product(&x, w, &mut half, 0, N / 2);
            while done.load(Ordering::Acquire) != g {
                std::hint::spin_loop();
            }
        }
    }
    let two = start.elapsed().as_secs_f64() / REPS as f64;
    go.store(usize::MAX, Ordering::Release);
    helper.join().unwrap();

    let best = (bytes / one).max(bytes / two);
    println!("one thread:  {:.2} ms for {:.0} MB of weights, {:.1} GB/s", one * 1e3, bytes / 1e6, bytes / one / 1e9);
    println!("two threads: {:.2} ms, {:.1} GB/s ({:.2}x one thread)", two * 1e3, bytes / two / 1e9, one / two);
    println!("one thread, tinytune's matmul_rows: {:.2} ms, {:.1} GB/s ({:.2}x the gemm crate's)", own * 1e3, bytes / own / 1e9, one / own);
    println!(
        "24M Llama: {:.1} MB of f32 weights a token, so at most {:.0} tokens/s at {:.1} GB/s",
        WEIGHTS_24M / 1e6,
        best / WEIGHTS_24M,
        best / 1e9
    );
}
