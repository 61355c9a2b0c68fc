//! GGUF's formats of 5 to 8 bits (and Q3_K, Q2_K) kept as a GGUF file stores them, in 8-bit codes
//! rather than widened to f32: Q8_0 (`d · q`, blocks of 32), Q6_K (`(d · sc) · q`, blocks of 16),
//! Q5_0 (`d · (q − 16)`), Q5_1 (`d · q + m`), Q5_K (`(d · sc) · q − dmin · m`, blocks of 32),
//! Q3_K (`(d · sc) · q`, blocks of 16) and Q2_K (`(d · sc) · q − dmin · m`, blocks of 16). Each is
//! an i8 code times an f32 scale a block, plus a term a block where the format has one; the scale
//! and term products (an f16 times a small integer) are exact in f32, so `code · scale (+ term)`
//! rounds exactly as gguf-py's `dequantize` does: every value is bit for bit its value. In memory
//! that is 9 bits a value for blocks of 32 (10 with a term), 10 for blocks of 16 (12 with a term),
//! instead of 32.
//!
//! These weights live on the host and run on the CPU engine (natively and in the page): decoding's
//! few rows by `tinytune_kernels::q8_rows`, which reads a byte a value; more rows (a prompt,
//! training) by dequantizing for one matmul, as 4-bit weights do, through `Q8Ops`, whose backward
//! pass keeps only the codes. A model loaded onto a GPU gets them widened to f32 at load
//! (`model::load`). Merging an adapter into such a weight quantizes the result again by gguf-py's
//! Q8_0 rule (`quantize_q8_0`), whatever the type it came in (gguf-py has no quantizer for the
//! K-quants, whose scales are llama.cpp's search; Q8_0's grid is as fine as any of them); saving
//! writes float weights.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::TensorData;
use tinytune_kernels::Q8View;

/// Which GGUF type a `Quant8` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind8 {
    Q8_0,
    Q6K,
    Q5_0,
    Q5_1,
    Q5K,
    Q3K,
    Q2K,
}

impl Kind8 {
    /// The GGUF type name.
    pub fn name(self) -> &'static str {
        match self {
            Kind8::Q8_0 => "Q8_0",
            Kind8::Q6K => "Q6_K",
            Kind8::Q5_0 => "Q5_0",
            Kind8::Q5_1 => "Q5_1",
            Kind8::Q5K => "Q5_K",
            Kind8::Q3K => "Q3_K",
            Kind8::Q2K => "Q2_K",
        }
    }
    /// The kept type of a GGUF tensor type's name, if it is one kept in 8-bit codes (Q4_0, Q4_1
    /// and Q4_K stay in 4 bits instead: `quant::gguf4`).
    pub fn of_gguf(ggml_name: &str) -> Option<Kind8> {
        [Kind8::Q8_0, Kind8::Q6K, Kind8::Q5_0, Kind8::Q5_1, Kind8::Q5K, Kind8::Q3K, Kind8::Q2K].into_iter().find(|k| k.name() == ggml_name)
    }
    /// Values a scale (and term) covers.
    pub fn block(self) -> usize {
        match self {
            Kind8::Q8_0 | Kind8::Q5_0 | Kind8::Q5_1 | Kind8::Q5K => 32,
            Kind8::Q6K | Kind8::Q3K | Kind8::Q2K => 16,
        }
    }
    /// Whether a block has a term added after the product.
    pub fn has_terms(self) -> bool {
        matches!(self, Kind8::Q5_1 | Kind8::Q5K | Kind8::Q2K)
    }
    /// Values and bytes of one of the file's blocks.
    fn file_block(self) -> (usize, usize) {
        match self {
            Kind8::Q8_0 => (32, 34),
            Kind8::Q5_0 => (32, 22),
            Kind8::Q5_1 => (32, 24),
            Kind8::Q6K => (256, 210),
            Kind8::Q5K => (256, 176),
            Kind8::Q3K => (256, 110),
            Kind8::Q2K => (256, 84),
        }
    }
}

/// A matrix `[rows, cols]` of i8 codes, row by row, and an f32 scale a block of `kind.block()`
/// values along a row (with a term a block for Q5_1, Q5_K and Q2_K): value `e` is
/// `codes[e] · scales[b]` (`+ terms[b]`), `b = e / block`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quant8 {
    pub kind: Kind8,
    pub shape: [usize; 2],
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub terms: Option<Vec<f32>>,
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// gguf-py's `np_roundf`: round half away from zero.
pub fn roundf(x: f32) -> f32 {
    let a = x.abs();
    let floored = a.floor();
    let b = floored + (2.0 * (a - floored)).floor();
    b.copysign(x) * if x == 0.0 { 0.0 } else { 1.0 }
}

/// Q8_0 blocks of 32 as gguf-py's `Q8_0.quantize_blocks` (and ggml's reference) make them: the
/// scale `max |x| / 127` (stored in f16), each code `round(x / scale)` with the f32 scale.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let d = block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| roundf(v * id) as i8 as u8));
    }
    out
}

/// One of the file's blocks `b` into codes, scales and terms (`−dmin·m` for the K-quants, so that
/// the value `code · scale + term` is gguf-py's `dl · q − ml` exactly). The bit layouts are
/// gguf-py's `dequantize_blocks`; every scale product here (an f16 times a small integer) is exact
/// in f32, so each value keeps gguf-py's roundings.
fn decode_block(kind: Kind8, b: &[u8], codes: &mut Vec<i8>, scales: &mut Vec<f32>, terms: &mut Vec<f32>) {
    match kind {
        Kind8::Q8_0 => {
            scales.push(f16(&b[0..2]));
            codes.extend(b[2..34].iter().map(|&q| q as i8));
        }
        Kind8::Q5_0 | Kind8::Q5_1 => {
            let d = f16(&b[0..2]);
            let (rest, offset) = if kind == Kind8::Q5_1 {
                terms.push(f16(&b[2..4]));
                (&b[4..], 0)
            } else {
                (&b[2..], 16)
            };
            scales.push(d);
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let qs = &rest[4..20];
            codes.extend((0..32).map(|e| {
                let low = (qs[e % 16] >> (4 * (e / 16))) & 0x0F;
                (low | ((((qh >> e) & 1) as u8) << 4)) as i8 - offset
            }));
        }
        Kind8::Q2K => {
            let (sc, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (f16(&b[80..82]), f16(&b[82..84]));
            scales.extend(sc.iter().map(|&s| d * (s & 0x0F) as f32));
            terms.extend(sc.iter().map(|&s| -(dmin * (s >> 4) as f32)));
            codes.extend((0..256).map(|e| ((qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i8));
        }
        Kind8::Q3K => {
            let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
            let d = f16(&b[108..110]);
            scales.extend((0..16).map(|i| {
                let low = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
                let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
                d * ((low | (high << 4)) as i8 - 32) as f32
            }));
            codes.extend((0..256).map(|e| {
                let ql = ((qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i8;
                let qh = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;
                ql - (qh << 2) as i8
            }));
        }
        Kind8::Q5K => {
            let (d, dmin) = (f16(&b[0..2]), f16(&b[2..4]));
            let (s, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
            for j in 0..8 {
                let (sc, mn) = if j < 4 {
                    (s[j] & 0x3F, s[4 + j] & 0x3F)
                } else {
                    ((s[4 + j] & 0x0F) | ((s[j - 4] >> 2) & 0x30), (s[4 + j] >> 4) | ((s[j] >> 2) & 0x30))
                };
                scales.push(d * sc as f32);
                terms.push(-(dmin * mn as f32));
            }
            codes.extend((0..256).map(|e| {
                let sub = e / 32;
                let low = (qs[(sub / 2) * 32 + e % 32] >> (4 * (sub % 2))) & 0x0F;
                (low | (((qh[e % 32] >> sub) & 1) << 4)) as i8
            }));
        }
        Kind8::Q6K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16(&b[208..210]);
            scales.extend(sc.iter().map(|&s| d * (s as i8) as f32));
            codes.extend((0..256).map(|e| {
                let g = e / 128;
                let low = (ql[g * 64 + e % 64] >> (4 * ((e % 128) / 64))) & 0x0F;
                let high = (qh[g * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 0x03;
                (low | (high << 4)) as i8 - 32
            }));
        }
    }
}

impl Quant8 {
    /// A GGUF tensor's data (`[rows, cols]`, rows of whole blocks): the codes as stored (moved to
    /// signed values where the format subtracts an offset), the scales and terms widened once.
    pub fn from_gguf(kind: Kind8, data: &[u8], shape: [usize; 2]) -> crate::Result<Quant8> {
        let n = shape[0] * shape[1];
        let (values, size) = kind.file_block();
        if shape[1] % values != 0 || data.len() != n / values * size {
            return Err(crate::Error::input(format!(
                "a {} tensor of shape {shape:?} should hold rows of whole blocks of {values} ({} bytes), not {} bytes",
                kind.name(),
                n / values * size,
                data.len()
            )));
        }
        let mut codes = Vec::with_capacity(n);
        let mut scales = Vec::with_capacity(n / kind.block());
        let mut terms = Vec::with_capacity(if kind.has_terms() { n / kind.block() } else { 0 });
        for b in data.chunks_exact(size) {
            decode_block(kind, b, &mut codes, &mut scales, &mut terms);
        }
        Ok(Quant8 { kind, shape, codes, scales, terms: kind.has_terms().then_some(terms) })
    }

    /// `values` (`[out, in]`, rows of whole blocks of 32) quantized by gguf-py's Q8_0 rule.
    pub fn quantize_q8_0_matrix(values: &[f32], shape: [usize; 2]) -> crate::Result<Quant8> {
        if shape[1] % 32 != 0 || values.len() != shape[0] * shape[1] {
            return Err(crate::Error::input(format!(
                "Q8_0 needs rows of whole blocks of 32 values; a matrix of {shape:?} has rows of {} ({} values given)",
                shape[1],
                values.len()
            )));
        }
        Quant8::from_gguf(Kind8::Q8_0, &quantize_q8_0(values), shape)
    }

    pub fn numel(&self) -> usize {
        self.shape[0] * self.shape[1]
    }

    /// Bytes held: a byte a code, 4 a scale and 4 a term.
    pub fn storage_bytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len() + 4 * self.terms.as_ref().map_or(0, Vec::len)
    }

    pub fn view(&self) -> Q8View<'_> {
        Q8View { codes: &self.codes, scales: &self.scales, terms: self.terms.as_deref(), block: self.kind.block(), rows: self.shape[0], cols: self.shape[1] }
    }

    /// The f32 matrix `[rows, cols]`, bit for bit gguf-py's values; natively in parts on the team.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut values = vec![0f32; self.numel()];
        let q = self.view();
        #[cfg(not(target_arch = "wasm32"))]
        {
            let part = self.numel().div_ceil(2 * rayon::current_num_threads()).next_multiple_of(64).max(1 << 16);
            crate::blas::par_chunks(&mut values, part, |t, out| tinytune_kernels::q8_dequant(q, t * part, out));
        }
        #[cfg(target_arch = "wasm32")]
        tinytune_kernels::q8_dequant(q, 0, &mut values);
        values
    }

    /// `x [n, cols] · Wᵀ` → `[n, rows]` for a few rows (decoding), reading a byte a value;
    /// natively in parts of W's rows on the team, as decoding's f32 products are.
    pub fn product(&self, x: &[f32], n: usize) -> Vec<f32> {
        let [rows, cols] = self.shape;
        assert!(n > 0 && x.len() == n * cols, "Quant8::product: {} values for {n} rows of {cols}", x.len());
        let q = self.view();
        let mut by_row = vec![0f32; rows * n];
        let run = |r0: usize, part: &mut [f32]| tinytune_kernels::q8_rows(q, x, n, r0, part);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(tasks) = crate::blas::decode_split(n, cols, rows) {
            let per = rows.div_ceil(tasks);
            crate::blas::par_chunks(&mut by_row, per * n, |t, part| run(t * per, part));
        } else {
            run(0, &mut by_row);
        }
        #[cfg(target_arch = "wasm32")]
        run(0, &mut by_row);
        if n == 1 { by_row } else { (0..n * rows).map(|j| by_row[(j % rows) * n + j / rows]).collect() }
    }

    /// The rows in `order` (row i of the result is row `order[i]`).
    pub fn gather_rows(&self, order: &[usize]) -> Quant8 {
        let [_, cols] = self.shape;
        let per = cols / self.kind.block();
        Quant8 {
            kind: self.kind,
            shape: [order.len(), cols],
            codes: order.iter().flat_map(|&r| self.codes[r * cols..(r + 1) * cols].iter().copied()).collect(),
            scales: order.iter().flat_map(|&r| self.scales[r * per..(r + 1) * per].iter().copied()).collect(),
            terms: self.terms.as_ref().map(|t| order.iter().flat_map(|&r| t[r * per..(r + 1) * per].iter().copied()).collect()),
        }
    }
}

/// A kept 8-bit weight as a layer holds it: the codes shared (never copied), and the device the
/// model's tensors live on (the CPU engine's, with or without autodiff), where its f32 values go
/// when it is widened or read as a tensor.
#[derive(Clone, Debug)]
pub struct Q8Weight {
    pub codes: Arc<Quant8>,
    pub device: burn::tensor::Device,
}

impl Q8Weight {
    pub fn new(q: Quant8, device: &burn::tensor::Device) -> Q8Weight {
        Q8Weight { codes: Arc::new(q), device: device.clone() }
    }
    /// The f32 matrix `[rows, cols]` as a tensor on the model's device.
    pub fn tensor(&self) -> burn::tensor::Tensor<2> {
        burn::tensor::Tensor::from_data(TensorData::new(self.dequantize(), self.shape), &self.device)
    }
}

impl std::ops::Deref for Q8Weight {
    type Target = Quant8;
    fn deref(&self) -> &Quant8 {
        &self.codes
    }
}

/// The linear map over an 8-bit weight, as a burn backend extension so that autodiff keeps only
/// the shared codes for the backward pass (`∂L/∂x = ∂L/∂y · W`, W dequantized again there), as
/// the 4-bit ops do: no f32 copy of a frozen weight outlives the product that used it.
#[backend_extension(Cube, Flex, Autodiff)]
pub trait Q8Ops: Backend {
    /// `x [N, cols] → x · Wᵀ [N, rows]`.
    fn q8_linear(x: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self>;
    /// `grad [N, rows] → grad · W [N, cols]`.
    fn q8_linear_grad(grad: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self>;
}

/// W `[rows, cols]` in f32 as the CPU engine's tensor.
fn flex_dequant(w: &Quant8) -> FloatTensor<Flex> {
    Flex::float_from_data(TensorData::new(w.dequantize(), w.shape), &Default::default())
}

impl Q8Ops for Flex {
    fn q8_linear(x: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self> {
        let [n, cols] = burn::backend::TensorMetadata::shape(&x).dims::<2>();
        // Decoding's few rows: a byte a value read, no f32 copy of W written.
        if n > 0 && n <= tinytune_kernels::Q4_MAX_ROWS && cols == w.shape[1] && let Some(values) = crate::blas::flex_f32(&x) {
            let y = w.product(&values, n);
            return Flex::float_from_data(TensorData::new(y, [n, w.shape[0]]), &Default::default());
        }
        crate::blas::flex_matmul(x, Flex::float_transpose(flex_dequant(&w)))
    }
    fn q8_linear_grad(grad: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self> {
        crate::blas::flex_matmul(grad, flex_dequant(&w))
    }
}

/// A GPU's weights are widened at load (`model::load`); should an 8-bit one reach a GPU all the
/// same, it is dequantized on the host and uploaded for each product.
impl Q8Ops for CubeBackend {
    fn q8_linear(x: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self> {
        let device = x.device.clone();
        let wt = Self::float_from_data(TensorData::new(w.dequantize(), w.shape), &device);
        Self::float_matmul(x, Self::float_transpose(wt))
    }
    fn q8_linear_grad(grad: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self> {
        let device = grad.device.clone();
        Self::float_matmul(grad, Self::float_from_data(TensorData::new(w.dequantize(), w.shape), &device))
    }
}

impl<B: Backend + Q8Ops, C: CheckpointStrategy> Q8Ops for Autodiff<B, C> {
    fn q8_linear(x: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Q8Linear;

        impl<B: Backend + Q8Ops> Backward<B, 1> for Q8Linear {
            type State = Q8Weight;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let w = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::q8_linear_grad(grad, w));
            }
        }

        let node = x.node();
        let out = B::q8_linear(x.into_primitive(), w.clone());
        match Q8Linear.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(w, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn q8_linear_grad(grad: FloatTensor<Self>, w: Q8Weight) -> FloatTensor<Self> {
        // Only the backward pass above calls this, on the inner backend.
        <Self as burn::backend::AutodiffBackend>::from_inner(B::q8_linear_grad(grad.into_primitive(), w))
    }
}

/// `x [N, cols] · Wᵀ` → `[N, rows]` through whichever backend `x` lives on, with its gradient to `x`.
pub fn linear(w: &Q8Weight, x: burn::tensor::Tensor<2>) -> burn::tensor::Tensor<2> {
    burn::tensor::Tensor::from_dispatch(<Dispatch as Q8Ops>::q8_linear(x.into_dispatch(), w.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use tinytune_kernels::{q8_dequant, q8_rows};

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        crate::quant::nf4::test_noise(n, seed, 0.5)
    }

    #[test]
    fn the_8_bit_products_equal_f64_sums_and_the_values_are_code_times_scale() {
        // Blocks of 32 (Q8_0) and 16 (Q6_K), a block that is not a multiple of the lanes, parts
        // of the rows from an offset, several rows of x; with a term a block (Q5_1, the K-quants) and without.
        for (rows, cols, block) in [(24, 64, 32), (7, 48, 16), (4, 32, 16), (5, 30, 10), (9, 1376, 32), (3, 256, 64)] {
            let codes: Vec<i8> = noise(rows * cols, 1).iter().map(|v| (v * 255.0) as i8).collect();
            let scales: Vec<f32> = noise(rows * cols / block, 2).iter().map(|v| v.abs() * 0.01 + 1e-4).collect();
            let terms: Vec<f32> = noise(rows * cols / block, 3).iter().map(|v| v * 0.01).collect();
            for with_terms in [false, true] {
                let q = Q8View { codes: &codes, scales: &scales, terms: with_terms.then_some(&terms[..]), block, rows, cols };
                let w: Vec<f32> = (0..rows * cols)
                    .map(|e| if with_terms { codes[e] as f32 * scales[e / block] + terms[e / block] } else { codes[e] as f32 * scales[e / block] })
                    .collect();
                let mut all = vec![f32::NAN; rows * cols];
                q8_dequant(q, 0, &mut all);
                assert_eq!(all.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), w.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                let mut part = vec![f32::NAN; cols + 3];
                q8_dequant(q, block - 1, &mut part);
                assert_eq!(part, w[block - 1..block + 2 + cols]);
                for m in [1, 3] {
                    let x = noise(m * cols, 3);
                    for r0 in [0, rows / 3] {
                        let mut out = vec![f32::NAN; (rows - r0) * m];
                        q8_rows(q, &x, m, r0, &mut out);
                        for r in r0..rows {
                            for i in 0..m {
                                let terms = (0..cols).map(|c| x[i * cols + c] as f64 * w[r * cols + c] as f64);
                                let size: f64 = terms.clone().map(f64::abs).sum();
                                let want: f64 = terms.sum();
                                let got = out[(r - r0) * m + i] as f64;
                                assert!((got - want).abs() <= 1e-6 * (1.0 + size), "{rows}×{cols}/{block} terms {with_terms}, {m} rows: x{i}·w{r} is {got}, not {want}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q8_0_rounds_half_away_from_zero_as_gguf_py() {
        assert_eq!([roundf(0.5), roundf(-0.5), roundf(1.49), roundf(-2.5), roundf(0.0)], [1.0, -1.0, 1.0, -3.0, 0.0]);
        let block: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.25).collect();
        let q = quantize_q8_0(&block);
        assert_eq!(q.len(), 34);
        // max |x| = 4.0 → d = 4/127; -4.0 → -127.
        assert_eq!(q[2] as i8, -127);
        let m = Quant8::quantize_q8_0_matrix(&block, [1, 32]).unwrap();
        assert_eq!((m.codes[0], m.scales[0]), (-127, half::f16::from_f32(4.0 / 127.0).to_f32()));
        assert!(Quant8::quantize_q8_0_matrix(&block[..16], [1, 16]).is_err());
    }

    #[test]
    fn a_kept_8_bit_matrix_multiplies_gathers_and_dequantizes_as_its_values() {
        // 512 × 1024 is large enough to be split into parts on the team where there is one.
        for (rows, cols, m) in [(24, 64, 1), (512, 1024, 1), (512, 1024, 5)] {
            let q = Quant8::quantize_q8_0_matrix(&noise(rows * cols, 4), [rows, cols]).unwrap();
            let w = q.dequantize();
            let want: Vec<f32> = (0..rows * cols).map(|e| q.codes[e] as f32 * q.scales[e / 32]).collect();
            assert_eq!(w, want);
            assert_eq!(q.storage_bytes(), rows * cols + rows * cols / 8);
            let x = noise(m * cols, 5);
            let y = q.product(&x, m);
            for i in 0..m {
                for r in 0..rows {
                    let terms = (0..cols).map(|c| x[i * cols + c] as f64 * w[r * cols + c] as f64);
                    let size: f64 = terms.clone().map(f64::abs).sum();
                    let v: f64 = terms.sum();
                    assert!((y[i * rows + r] as f64 - v).abs() <= 1e-6 * (1.0 + size), "{rows}×{cols}, {m} rows: y[{i}, {r}] is {}, not {v}", y[i * rows + r]);
                }
            }
            let order: Vec<usize> = (0..rows).rev().collect();
            let g = q.gather_rows(&order).dequantize();
            assert_eq!(&g[..cols], &w[(rows - 1) * cols..]);
            assert_eq!(&g[(rows - 1) * cols..], &w[..cols]);
        }
    }

    #[test]
    fn the_linear_map_and_its_gradient_equal_a_dense_weight_s() {
        // Few rows (decoding's kernel in the forward pass) and many (dequantized for one matmul),
        // under autodiff: the product and ∂L/∂x as x · Wᵀ over the dequantized W gives them.
        use burn::tensor::Tensor;
        let device = burn::tensor::Device::flex().autodiff();
        let (rows, cols) = (48, 96);
        let w = Q8Weight::new(Quant8::quantize_q8_0_matrix(&noise(rows * cols, 11), [rows, cols]).unwrap(), &device);
        let dense = Tensor::<2>::from_data(TensorData::new(w.dequantize(), [rows, cols]), &device);
        for n in [3, 40] {
            let x0 = Tensor::<2>::from_data(TensorData::new(noise(n * cols, 12), [n, cols]), &device);
            let r = Tensor::<2>::from_data(TensorData::new(noise(n * rows, 13), [n, rows]), &device);
            let run = |kept: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if kept { linear(&w, x.clone()) } else { x.clone().matmul(dense.clone().transpose()) };
                let grads = (y.clone() * r.clone()).sum().backward();
                let read = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
                (read(y), read(x.grad(&grads).unwrap().into()))
            };
            let (kept, want) = (run(true), run(false));
            assert_eq!((kept.0.len(), kept.1.len()), (n * rows, n * cols));
            for (what, a, b) in [("product", &kept.0, &want.0), ("gradient", &kept.1, &want.1)] {
                let worst = a.iter().zip(b.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-4, "{n} rows: the {what} strays {worst} from the dense weight's");
            }
        }
    }
}
