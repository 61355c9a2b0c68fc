//! The 4-bit kernels and the operations the model calls: dequantize a 4-bit matrix, and a linear
//! map `x · Wᵀ` over one, with gradients to `x` only. One device buffer of u32 words holds each
//! matrix (`Q4Layout`); nothing else about the matrix lives on the device.
//!
//! - On wgpu (WebGPU in the browser; Vulkan, Metal, DX12 natively) the WGSL kernels in
//!   `shaders/` run through burn's custom-kernel mechanism (`SourceKernel` on the cubecl
//!   runtime): `q4_dequant.wgsl`, and for a few rows `q4_gemv.wgsl`, which multiplies without
//!   writing the f32 matrix.
//! - On the CPU (burn `flex`) the same arithmetic runs in Rust: `dequantize_words` here as the
//!   reference, and `tinytune_kernels`' vector lookups in `cpu.rs`, which implements the
//!   operations for burn flex.
//! - The operations are a burn backend extension (`Q4Ops`); its autodiff implementation keeps
//!   only the packed buffer for the backward pass and dequantizes again there
//!   (`∂L/∂x = ∂L/∂y · W`), as bitsandbytes' `MatMul4Bit` does, so no f32 copy of a frozen
//!   weight outlives the operation that used it.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::nf4::{Absmax, Nested, QuantType, Quant4};

/// Rows of `x` up to which the fused kernel multiplies (decoding); more rows dequantize once and
/// use the device's matmul.
pub const FUSED_MAX_ROWS: usize = 8;

/// Where each part of a 4-bit matrix sits in its buffer of u32 words (offsets in words), and its
/// sizes. Bytes within a word are little-endian, so byte k is `(word[k / 4] >> 8·(k % 4)) & 0xff`.
///
/// `[packed codes][absmax: f32 per block, or u8 codes][absmax₂ f32…][map 256 f32][offset f32][bias f32 per block][code 16 f32]`
/// (the bracketed parts after the absmaxes only where the format has them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q4Layout {
    /// `[out, in]`, row-major, as bitsandbytes flattens `nn.Linear.weight`.
    pub rows: usize,
    pub cols: usize,
    pub blocksize: usize,
    /// Absmaxes per second-level block; 0 without double quantization.
    pub nested: usize,
    pub quant_type: QuantType,
    pub code: usize,
    pub absmax: usize,
    pub absmax2: usize,
    pub map: usize,
    pub offset: usize,
    /// Word offset of the per-block terms added after scaling (GGUF's Q4_1); 0: none.
    pub bias: usize,
    pub words: usize,
}

impl Q4Layout {
    /// The matrix in `bytes` (its buffer of words, little-endian) as the CPU kernels read it.
    pub fn view<'a>(&self, bytes: &'a [u8]) -> tinytune_kernels::Q4View<'a> {
        tinytune_kernels::Q4View {
            bytes,
            rows: self.rows,
            cols: self.cols,
            blocksize: self.blocksize,
            nested: self.nested,
            code: self.code,
            absmax: self.absmax,
            absmax2: self.absmax2,
            map: self.map,
            offset: self.offset,
            bias: self.bias,
        }
    }
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
    pub fn blocks(&self) -> usize {
        self.numel().div_ceil(self.blocksize)
    }
    /// Bytes of the buffer on the device: the stored matrix, its code tables, and padding to
    /// whole words.
    pub fn bytes(&self) -> usize {
        self.words * 4
    }

    /// Bytes of the matrix as stored (codes, absmaxes, second level), without the 16- and
    /// 256-value code tables every matrix's buffer also carries.
    pub fn storage_bytes(&self) -> usize {
        let blocks = self.blocks();
        self.numel().div_ceil(2)
            + if self.nested > 0 { blocks + 4 * blocks.div_ceil(self.nested) + 4 } else { 4 * blocks }
            + if self.bias > 0 { 4 * blocks } else { 0 }
    }

    /// The uniform the kernels read (`info` in the WGSL), as the u64 words cubecl uploads.
    fn uniform(&self, per_row: usize, rows_x: usize) -> Vec<u64> {
        let w: [u32; 16] = [
            self.numel() as u32,
            self.blocksize as u32,
            self.nested as u32,
            self.code as u32,
            self.absmax as u32,
            self.absmax2 as u32,
            self.map as u32,
            self.offset as u32,
            per_row as u32,
            self.rows as u32,
            self.cols as u32,
            rows_x as u32,
            self.bias as u32,
            0,
            0,
            0,
        ];
        w.chunks(2).map(|p| p[0] as u64 | ((p[1] as u64) << 32)).collect()
    }
}

fn push_bytes(words: &mut Vec<u32>, bytes: &[u8]) {
    words.extend(bytes.chunks(4).map(|c| {
        let mut b = [0u8; 4];
        b[..c.len()].copy_from_slice(c);
        u32::from_le_bytes(b)
    }));
}

/// Lay a 4-bit matrix out in one buffer of words.
pub fn pack(q: &Quant4) -> (Vec<u32>, Q4Layout) {
    let mut words = Vec::with_capacity(q.packed.len() / 4 + q.blocks() + 300);
    push_bytes(&mut words, &q.packed);
    let absmax = words.len();
    let (mut nested, mut absmax2, mut map, mut offset) = (0, 0, 0, 0);
    match &q.absmax {
        Absmax::F32(a) => words.extend(a.iter().map(|v| v.to_bits())),
        Absmax::Double(n) => {
            push_bytes(&mut words, &n.codes);
            nested = n.blocksize;
            absmax2 = words.len();
            words.extend(n.absmax.iter().map(|v| v.to_bits()));
            map = words.len();
            words.extend(n.map.iter().map(|v| v.to_bits()));
            offset = words.len();
            words.push(n.offset.to_bits());
        }
    }
    let mut bias = 0;
    if let Some(b) = &q.bias {
        bias = words.len();
        words.extend(b.iter().map(|v| v.to_bits()));
    }
    let code = words.len();
    words.extend(q.quant_type.code().iter().map(|v| v.to_bits()));
    let layout = Q4Layout {
        rows: q.shape[0],
        cols: q.shape[1],
        blocksize: q.blocksize,
        nested,
        quant_type: q.quant_type,
        code,
        absmax,
        absmax2,
        map,
        offset,
        bias,
        words: words.len(),
    };
    (words, layout)
}

/// The inverse of `pack` (to save a model that holds its weights in 4 bits).
pub fn unpack(words: &[u32], l: &Q4Layout) -> Quant4 {
    let bytes = |from: usize, count: usize| -> Vec<u8> { (0..count).map(|k| byte_at(words, from * 4 + k) as u8).collect() };
    let f32s = |from: usize, count: usize| -> Vec<f32> { words[from..from + count].iter().map(|w| f32::from_bits(*w)).collect() };
    let blocks = l.blocks();
    let absmax = if l.nested == 0 {
        Absmax::F32(f32s(l.absmax, blocks))
    } else {
        Absmax::Double(Nested {
            codes: bytes(l.absmax, blocks),
            absmax: f32s(l.absmax2, blocks.div_ceil(l.nested)),
            blocksize: l.nested,
            map: f32s(l.map, 256),
            offset: f32::from_bits(words[l.offset]),
        })
    };
    let bias = (l.bias > 0).then(|| f32s(l.bias, blocks));
    Quant4 { quant_type: l.quant_type, shape: [l.rows, l.cols], blocksize: l.blocksize, packed: bytes(0, l.numel().div_ceil(2)), absmax, bias }
}

fn byte_at(words: &[u32], k: usize) -> u32 {
    (words[k >> 2] >> ((k & 3) * 8)) & 0xff
}

/// The CPU path: exactly the arithmetic of `q4_dequant.wgsl`, in the same order.
pub fn dequantize_words(words: &[u32], l: &Q4Layout) -> Vec<f32> {
    let f = |i: usize| f32::from_bits(words[i]);
    let n = l.numel();
    let mut out = Vec::with_capacity(n);
    for blk in 0..l.blocks() {
        let absmax = if l.nested == 0 {
            f(l.absmax + blk)
        } else {
            let product = f(l.map + byte_at(words, l.absmax * 4 + blk) as usize) * f(l.absmax2 + blk / l.nested);
            product + f(l.offset)
        };
        for i in blk * l.blocksize..((blk + 1) * l.blocksize).min(n) {
            let byte = byte_at(words, i >> 1);
            let nibble = if i & 1 == 0 { byte >> 4 } else { byte & 0xf };
            let value = f(l.code + nibble as usize) * absmax;
            out.push(if l.bias > 0 { value + f(l.bias + blk) } else { value });
        }
    }
    out
}

/// The operations a backend provides for 4-bit weights.
#[backend_extension(Cube, Flex, Autodiff)]
pub trait Q4Ops: Backend {
    /// The f32 matrix `[rows, cols]` of a packed buffer.
    fn q4_dequant(words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self>;
    /// `x [N, cols] → x · Wᵀ [N, rows]`.
    fn q4_linear(x: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout, fused: bool) -> FloatTensor<Self>;
    /// `q4_linear`'s gradient with respect to `x`, given the output's: `grad [N, rows] · W`, with W
    /// dequantized again rather than kept.
    fn q4_linear_grad(grad: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self>;
}

mod wgsl {
    //! Launching the WGSL kernels on burn's cubecl backend.
    use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
    use burn::tensor::{DType, Shape};
    use cubecl::prelude::KernelId;
    use cubecl::server::{KernelArguments, MetadataBindingInfo};
    use cubecl::{CubeCount, CubeDim};

    use super::Q4Layout;

    const WG: u32 = 64;

    struct Dequant;
    impl KernelSource for Dequant {
        fn source(&self) -> SourceTemplate {
            SourceTemplate::new(include_str!("../../shaders/q4_dequant.wgsl"))
        }
        fn id(&self) -> KernelId {
            KernelId::new::<Self>()
        }
        fn lang(&self) -> &'static str {
            "wgsl"
        }
    }

    struct Gemv;
    impl KernelSource for Gemv {
        fn source(&self) -> SourceTemplate {
            SourceTemplate::new(include_str!("../../shaders/q4_gemv.wgsl"))
        }
        fn id(&self) -> KernelId {
            KernelId::new::<Self>()
        }
        fn lang(&self) -> &'static str {
            "wgsl"
        }
    }

    /// Workgroups for `count` items, as (x, y) within the 65535-per-dimension limit.
    fn grid(count: usize) -> (u32, u32, usize) {
        let x = count.clamp(1, 65535);
        (x as u32, count.div_ceil(x).max(1) as u32, x)
    }

    pub fn dequant(words: CubeTensor, l: Q4Layout) -> CubeTensor {
        let client = words.client.clone();
        let out = CubeTensor::new_contiguous(
            client.clone(),
            words.device.clone(),
            Shape::new([l.rows, l.cols]),
            client.empty(l.numel() * 4),
            DType::F32,
        );
        let (x, y, per_row) = grid(l.blocks());
        let mut args = KernelArguments::new().with_buffer(words.handle.clone().binding()).with_buffer(out.handle.clone().binding());
        args.info = MetadataBindingInfo::custom(l.uniform(per_row, 0));
        client.launch(Box::new(SourceKernel::new(Dequant, CubeDim::new_1d(WG))), CubeCount::Static(x, y, 1), args);
        out
    }

    /// Whether the fused kernel can take this shape: few rows, and a row of W touches at most
    /// 258 absmax blocks (the kernel's workgroup array).
    pub fn gemv_fits(l: &Q4Layout, rows_x: usize) -> bool {
        rows_x <= super::FUSED_MAX_ROWS && l.cols / l.blocksize + 2 <= 258
    }

    pub fn gemv(x: CubeTensor, words: CubeTensor, l: Q4Layout) -> CubeTensor {
        let client = words.client.clone();
        let rows_x = x.meta.shape()[0];
        let x = burn::backend::wgpu::into_contiguous(x);
        let out = CubeTensor::new_contiguous(
            client.clone(),
            words.device.clone(),
            Shape::new([rows_x, l.rows]),
            client.empty(rows_x * l.rows * 4),
            DType::F32,
        );
        let (gx, gy, per_row) = grid(l.rows);
        let mut args = KernelArguments::new()
            .with_buffer(words.handle.clone().binding())
            .with_buffer(x.handle.clone().binding())
            .with_buffer(out.handle.clone().binding());
        args.info = MetadataBindingInfo::custom(l.uniform(per_row, rows_x));
        client.launch(Box::new(SourceKernel::new(Gemv, CubeDim::new_1d(WG))), CubeCount::Static(gx, gy, 1), args);
        out
    }

    pub fn is_wgpu(t: &CubeTensor) -> bool {
        matches!(t.device, cubecl::Device::Wgpu(_))
    }

    pub type B = CubeBackend;
}

impl Q4Ops for wgsl::B {
    fn q4_dequant(words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self> {
        if wgsl::is_wgpu(&words) {
            return wgsl::dequant(words, layout);
        }
        // Other cubecl runtimes (CUDA): dequantize on the host and upload.
        let device = words.device.clone();
        let data = burn::tensor::try_read_sync(Self::int_into_data(words))
            .and_then(|r| r.ok())
            .expect("reading a 4-bit weight back from the device");
        let host: Vec<u32> = data.iter::<u32>().collect();
        Self::float_from_data(TensorData::new(dequantize_words(&host, &layout), [layout.rows, layout.cols]), &device)
    }
    fn q4_linear(x: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout, fused: bool) -> FloatTensor<Self> {
        if fused && wgsl::is_wgpu(&words) && wgsl::gemv_fits(&layout, x.meta.shape()[0]) {
            return wgsl::gemv(x, words, layout);
        }
        let w = Self::q4_dequant(words, layout);
        Self::float_matmul(x, Self::float_transpose(w))
    }
    fn q4_linear_grad(grad: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self> {
        Self::float_matmul(grad, Self::q4_dequant(words, layout))
    }
}

impl<B: Backend + Q4Ops, C: CheckpointStrategy> Q4Ops for Autodiff<B, C> {
    fn q4_dequant(words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self> {
        // A frozen weight: a constant to autodiff.
        <Self as burn::backend::AutodiffBackend>::from_inner(B::q4_dequant(words, layout))
    }

    fn q4_linear(x: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout, fused: bool) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Q4Linear;

        impl<B: Backend + Q4Ops> Backward<B, 1> for Q4Linear {
            type State = (IntTensor<B>, Q4Layout);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (words, layout) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::q4_linear_grad(grad, words, layout));
            }
        }

        let node = x.node();
        let out = B::q4_linear(x.into_primitive(), words.clone(), layout, fused);
        match Q4Linear.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((words, layout), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn q4_linear_grad(grad: FloatTensor<Self>, words: IntTensor<Self>, layout: Q4Layout) -> FloatTensor<Self> {
        // Only the backward pass above calls this, on the inner backend.
        <Self as burn::backend::AutodiffBackend>::from_inner(B::q4_linear_grad(grad.into_primitive(), words, layout))
    }
}

/// A 4-bit matrix on a device: its buffer and layout.
#[derive(Clone, Debug)]
pub struct Q4Tensor {
    pub words: Tensor<1, Int>,
    pub layout: Q4Layout,
}

impl Q4Tensor {
    pub fn new(q: &Quant4, device: &burn::tensor::Device) -> Q4Tensor {
        let (words, layout) = pack(q);
        let n = words.len();
        let words = Tensor::<1, Int>::from_data(TensorData::new(words, [n]), (device, DType::U32));
        Q4Tensor { words, layout }
    }

    /// The f32 matrix `[out, in]`.
    pub fn dequantize(&self) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as Q4Ops>::q4_dequant(self.words.clone().into_dispatch(), self.layout))
    }

    /// `x [N, in] → x · Wᵀ [N, out]`. With `fused` and few rows on wgpu, one kernel multiplies
    /// without writing W; otherwise W is dequantized for the one matmul.
    pub fn linear(&self, x: Tensor<2>, fused: bool) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as Q4Ops>::q4_linear(
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.layout,
            fused,
        ))
    }

    /// Read the buffer back and rebuild the bitsandbytes form.
    pub async fn to_quant4(&self) -> crate::Result<Quant4> {
        let data = self
            .words
            .clone()
            .into_data_async()
            .await
            .map_err(|e| crate::Error::device(format!("reading a 4-bit weight back from the device failed: {e:?}")))?;
        let words: Vec<u32> = data.iter::<u32>().collect();
        Ok(unpack(&words, &self.layout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        crate::quant::nf4::test_noise(rows * cols, seed, 0.3)
    }

    #[test]
    fn the_word_buffer_dequantizes_bit_for_bit_like_the_reference() {
        for (rows, cols) in [(16, 64), (7, 9), (33, 100)] {
            for (qt, dq) in [(QuantType::Nf4, true), (QuantType::Nf4, false), (QuantType::Fp4, false), (QuantType::Q4_0, false), (QuantType::Q4_1, false), (QuantType::Q4K, false)] {
                let q = Quant4::quantize(&matrix(rows, cols, 1), [rows, cols], qt, dq).unwrap();
                let (words, layout) = pack(&q);
                let got: Vec<u32> = dequantize_words(&words, &layout).iter().map(|v| v.to_bits()).collect();
                let want: Vec<u32> = q.dequantize().iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{rows}×{cols} {qt:?} dq {dq}");
                assert_eq!(unpack(&words, &layout), q);
            }
        }
    }

    #[test]
    fn gradients_reach_the_input_through_a_4_bit_weight() {
        // y = x·Wᵀ, L = Σy: ∂L/∂x[r, k] = Σ_o W[o, k], the column sums of the dequantized W.
        let device = burn::tensor::Device::flex().autodiff();
        let q = Quant4::quantize(&matrix(8, 64, 4), [8, 64], QuantType::Nf4, true).unwrap();
        let t = Q4Tensor::new(&q, &device);
        let x = Tensor::<2>::from_data(TensorData::new(matrix(2, 64, 5), [2, 64]), &device).require_grad();
        let grads = t.linear(x.clone(), false).sum().backward();
        let g = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let w = q.dequantize();
        for k in 0..64 {
            let want: f32 = (0..8).map(|o| w[o * 64 + k]).sum();
            assert!((g[k] - want).abs() < 1e-5 && (g[64 + k] - want).abs() < 1e-5, "column {k}");
        }
    }
}
