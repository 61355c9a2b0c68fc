//! The 4-bit operations (`Q4Ops`) on the CPU engine (burn `flex`), natively and in the page:
//! dequantizing for the products of many rows, and for decoding's few rows a product that reads
//! the packed matrix where the tensor holds it. Both run `tinytune_kernels`' lookups (vector
//! instructions where the CPU has them), on oneMKL's team where it is loaded.

use burn::backend::Flex;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, TensorData};

use super::kernels::{Q4Layout, Q4Ops};

/// The bytes of a 4-bit matrix's buffer of u32 words where the CPU backend holds them.
fn flex_word_bytes(words: &IntTensor<Flex>) -> &[u8] {
    match words.dtype() {
        DType::U32 | DType::I32 => words.bytes(),
        other => panic!("a 4-bit weight buffer must hold 32-bit words, not {other:?}"),
    }
}

/// W `[rows, cols]` in f32 by `tinytune_kernels::q4_dequant`: bit for bit `dequantize_words`,
/// read where the tensor holds the buffer (no copy of it) and, natively, in parts on several
/// threads. For the products of more rows than decoding's (training, a prompt): a QLoRA step
/// of the built-in model spent a quarter of its time here when every value was looked up in turn.
fn flex_q4_dequant(words: &IntTensor<Flex>, l: &Q4Layout) -> FloatTensor<Flex> {
    let q = l.view(flex_word_bytes(words));
    let mut values = vec![0f32; l.numel()];
    // Parts of whole runs of 16 values (the vector copies' unit), at least 64K values each.
    #[cfg(not(target_arch = "wasm32"))]
    let threads = rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    let threads = 1;
    let part = l.numel().div_ceil(2 * threads).next_multiple_of(16).max(1 << 16);
    #[cfg(not(target_arch = "wasm32"))]
    crate::blas::par_chunks(&mut values, part, |t, out| tinytune_kernels::q4_dequant(q, t * part, out));
    #[cfg(target_arch = "wasm32")]
    values.chunks_mut(part).enumerate().for_each(|(t, out)| tinytune_kernels::q4_dequant(q, t * part, out));
    Flex::float_from_data(TensorData::new(values, [l.rows, l.cols]), &Default::default())
}

/// `x · Wᵀ` for a few rows of `x` (decoding) by `tinytune_kernels::q4_rows`, reading the packed
/// buffer where the tensor holds it: no f32 copy of W is written, where dequantizing first wrote
/// 4 bytes a value and copied the buffer for every product (a 4-bit 24M model decoded 25× slower
/// than its f32 original). Natively, on oneMKL's team as decoding's f32 products are
/// (`blas::decode_split`), in parts of W's rows. None where it does not apply (more rows, another
/// dtype).
fn flex_q4_rows(x: &FloatTensor<Flex>, words: &IntTensor<Flex>, l: &Q4Layout) -> Option<FloatTensor<Flex>> {
    let shape = burn::backend::TensorMetadata::shape(x);
    let [n, cols] = shape.dims::<2>();
    if n == 0 || n > tinytune_kernels::Q4_MAX_ROWS || cols != l.cols || !matches!(words.dtype(), DType::U32 | DType::I32) {
        return None;
    }
    let x = crate::blas::flex_f32(x)?;
    let out = q4_product(&x, n, words.bytes(), l);
    Some(Flex::float_from_data(TensorData::new(out, [n, l.rows]), &Default::default()))
}

/// `x [n, cols] · Wᵀ` → `[n, rows]` for a few rows (up to `Q4_MAX_ROWS`) and W packed in
/// `words` (the buffer's bytes) as `l` says: `flex_q4_rows` on slices (also the CPU engine's
/// decoding step's, `model::decode`).
pub(crate) fn q4_product(x: &[f32], n: usize, words: &[u8], l: &Q4Layout) -> Vec<f32> {
    let cols = l.cols;
    assert!(n > 0 && n <= tinytune_kernels::Q4_MAX_ROWS && x.len() == n * cols, "q4_product: {} values for {n} rows of {cols}", x.len());
    let q = l.view(words);
    // `[rows, n]`, each of W's rows its n values, so that a part of W's rows is one chunk.
    let mut by_row = vec![0f32; l.rows * n];
    let run = |r0: usize, part: &mut [f32]| tinytune_kernels::q4_rows(q, x, n, r0, part);
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(tasks) = crate::blas::decode_split(n, cols, l.rows) {
        let rows = l.rows.div_ceil(tasks);
        crate::blas::par_chunks(&mut by_row, rows * n, |t, part| run(t * rows, part));
    } else {
        run(0, &mut by_row);
    }
    #[cfg(target_arch = "wasm32")]
    run(0, &mut by_row);
    if n == 1 { by_row } else { (0..n * l.rows).map(|j| by_row[(j % l.rows) * n + j / l.rows]).collect() }
}

impl Q4Ops for Flex {
    fn q4_dequant(words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self> {
        flex_q4_dequant(&words, &layout)
    }
    fn q4_linear(x: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout, fused: bool) -> FloatTensor<Self> {
        if fused && let Some(y) = flex_q4_rows(&x, &words, &layout) {
            return y;
        }
        let w = Self::q4_dequant(words, layout);
        crate::blas::flex_matmul(x, Flex::float_transpose(w))
    }
    fn q4_linear_grad(grad: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self> {
        crate::blas::flex_matmul(grad, Self::q4_dequant(words, layout))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::super::kernels::{Q4Tensor, dequantize_words, pack};
    use super::super::nf4::{QuantType, Quant4};

    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        crate::quant::nf4::test_noise(rows * cols, seed, 0.3)
    }

    #[test]
    fn the_dequantizing_kernel_gives_the_reference_bits_in_any_part() {
        // Parts as threads fill them (from offsets in runs of 16, the vector copies) and not
        // (the portable copy), across block and row boundaries; and the whole through the CPU
        // backend's q4_dequant, which splits it into parts on several threads.
        let device = burn::tensor::Device::flex();
        for (rows, cols) in [(16, 64), (7, 9), (33, 100), (6, 1376), (300, 512)] {
            for (qt, dq) in [(QuantType::Nf4, true), (QuantType::Nf4, false), (QuantType::Fp4, false), (QuantType::Q4_0, false), (QuantType::Q4_1, false), (QuantType::Q4K, false)] {
                let q = Quant4::quantize(&matrix(rows, cols, 10), [rows, cols], qt, dq).unwrap();
                let (words, layout) = pack(&q);
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                let want: Vec<u32> = dequantize_words(&words, &layout).iter().map(|v| v.to_bits()).collect();
                let n = rows * cols;
                for (e0, len) in [(0, n), (16, n - 16 - (n - 16) % 16), (48, 80.min(n - 48)), (5, n - 5), (0, 0)] {
                    for (name, kernel) in [("q4_dequant", tinytune_kernels::q4_dequant as fn(_, _, &mut [f32])), ("portable", tinytune_kernels::q4_dequant_portable)] {
                        let mut out = vec![f32::NAN; len];
                        kernel(layout.view(&bytes), e0, &mut out);
                        let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want[e0..e0 + len], "{name} {rows}×{cols} {qt:?} dq {dq}, values {e0}..{}", e0 + len);
                    }
                }
                let t = Q4Tensor::new(&q, &device);
                let got: Vec<u32> = t.dequantize().into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "Q4Tensor::dequantize {rows}×{cols} {qt:?} dq {dq}");
            }
        }
    }

    #[test]
    fn the_linear_map_on_the_cpu_equals_x_times_the_dequantized_transpose() {
        let device = burn::tensor::Device::flex();
        let q = Quant4::quantize(&matrix(24, 64, 2), [24, 64], QuantType::Nf4, true).unwrap();
        let t = Q4Tensor::new(&q, &device);
        let x = Tensor::<2>::from_data(TensorData::new(matrix(3, 64, 3), [3, 64]), &device);
        // Not fused: W dequantized for burn's matmul, the same products as a dense weight.
        let y = t.linear(x.clone(), false).into_data().try_to_vec::<f32>().unwrap();
        let w = Tensor::<2>::from_data(TensorData::new(q.dequantize(), [24, 64]), &device);
        let want = x.matmul(w.transpose()).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(y, want);
    }

    /// `x · Wᵀ` in f64 from the dequantized W, and how far an f32 sum of it may stray.
    fn f64_product(x: &[f32], w: &[f32], m: usize, rows: usize, cols: usize) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for i in 0..m {
            for r in 0..rows {
                let terms = (0..cols).map(|c| x[i * cols + c] as f64 * w[r * cols + c] as f64);
                let size: f64 = terms.clone().map(f64::abs).sum();
                out.push((terms.sum(), 1e-5 * (1.0 + size)));
            }
        }
        out
    }

    type Q4Kernel = fn(tinytune_kernels::Q4View, &[f32], usize, usize, &mut [f32]);

    #[test]
    fn the_fused_4_bit_kernel_equals_f64_sums_over_the_dequantized_weights() {
        // Shapes in runs of 16 (the AVX-512 copy) and not (the portable one), rows that end
        // inside a block (1376 = 21.5 blocks), parts of the rows from an offset (a task's part).
        for (rows, cols) in [(24, 64), (7, 9), (33, 100), (6, 1376), (5, 48)] {
            for (qt, dq) in [(QuantType::Nf4, true), (QuantType::Nf4, false), (QuantType::Fp4, false), (QuantType::Q4_0, false), (QuantType::Q4_1, false), (QuantType::Q4K, false)] {
                let q = Quant4::quantize(&matrix(rows, cols, 6), [rows, cols], qt, dq).unwrap();
                let (words, layout) = pack(&q);
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                let w = q.dequantize();
                for m in [1, 3, 8] {
                    let x = matrix(m, cols, 7);
                    let want = f64_product(&x, &w, m, rows, cols);
                    for (r0, count) in [(0, rows), (rows / 3, rows - rows / 3)] {
                        let kernels: [(&str, Q4Kernel); 2] =
                            [("q4_rows", tinytune_kernels::q4_rows), ("portable", tinytune_kernels::q4_rows_portable)];
                        for (name, kernel) in kernels {
                            let mut out = vec![f32::NAN; count * m];
                            kernel(layout.view(&bytes), &x, m, r0, &mut out);
                            for r in 0..count {
                                for i in 0..m {
                                    let (v, tol) = want[i * rows + r0 + r];
                                    let got = out[r * m + i] as f64;
                                    assert!((got - v).abs() <= tol, "{name} {rows}×{cols} {qt:?} dq {dq}, {m} rows: row {i}, out {} is {got}, not {v}", r0 + r);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_fused_linear_map_on_the_cpu_equals_f64_sums() {
        // 256 × 512 is large enough to be split into parts on oneMKL's team where it is loaded.
        let device = burn::tensor::Device::flex();
        for (rows, cols, m) in [(24, 64, 3), (256, 512, 1), (256, 512, 8)] {
            let q = Quant4::quantize(&matrix(rows, cols, 8), [rows, cols], QuantType::Nf4, true).unwrap();
            let t = Q4Tensor::new(&q, &device);
            let x = matrix(m, cols, 9);
            let y = t.linear(Tensor::<2>::from_data(TensorData::new(x.clone(), [m, cols]), &device), true);
            assert_eq!(y.dims(), [m, rows]);
            let y = y.into_data().try_to_vec::<f32>().unwrap();
            for (j, (v, tol)) in f64_product(&x, &q.dequantize(), m, rows, cols).into_iter().enumerate() {
                assert!((y[j] as f64 - v).abs() <= tol, "{rows}×{cols}, {m} rows: value {j} is {}, not {v}", y[j]);
            }
        }
    }
}
