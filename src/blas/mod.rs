//! The CPU engine's matrix products through a BLAS found at run time (native builds only).
//!
//! burn flex multiplies with the gemm crate: 70–180 GFLOPS on a LoRA step's base shapes on this
//! project's 2-core test machine, where OpenBLAS reaches 150–180 (`benches/gemm_shapes.rs`).
//! When a BLAS library is installed (`library.rs`), f32 products on burn flex whose every side
//! is long enough go to its `sgemm` with the operands' strides as they are (a transposed view is
//! a flag, not a copy). Everything else (the page's wasm engine, no BLAS found, other dtypes,
//! short sides, strides a BLAS cannot take) is burn flex's own product.

use burn::backend::Flex;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::tensor::DType;

#[cfg(not(target_arch = "wasm32"))]
mod library;
#[cfg(not(target_arch = "wasm32"))]
pub mod team;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use team::{Chunks, par_chunks};

/// `f(task)` once for every task in `0..tasks`: natively on several threads (`team.rs`: oneMKL's
/// OpenMP team where it is loaded, else rayon's pool), one after another in the browser.
pub fn for_each_task(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    #[cfg(not(target_arch = "wasm32"))]
    team::for_each_task(tasks, f);
    #[cfg(target_arch = "wasm32")]
    (0..tasks).for_each(f);
}

/// Whether the CPU engine's products go to a BLAS (never in the browser).
pub fn uses_blas() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    return library::get().is_some();
    #[cfg(target_arch = "wasm32")]
    false
}

/// One line for reports: which GEMM the CPU engine's products use.
pub fn describe() -> String {
    #[cfg(not(target_arch = "wasm32"))]
    return library::describe();
    #[cfg(target_arch = "wasm32")]
    "the built-in GEMM (gemm crate, wasm SIMD)".to_string()
}

/// `a [M, K] · b [K, N]` on burn flex: through the BLAS where one is loaded and the operands
/// suit it, else burn flex's own product.
pub fn flex_matmul(a: FloatTensor<Flex>, b: FloatTensor<Flex>) -> FloatTensor<Flex> {
    if b.dtype() == DType::BF16 {
        return bf16_matmul(a, b);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(blas) = library::get()
        && let Some(out) = blas_matmul(blas, &a, &b)
    {
        return out;
    }
    gemm_matmul(&a, &b).unwrap_or_else(|| Flex::float_matmul(a, b))
}

/// A float tensor's f32 values in row-major order (copied only when it is a strided view), or
/// None for another dtype.
pub(crate) fn flex_f32(t: &FloatTensor<Flex>) -> Option<std::borrow::Cow<'_, [f32]>> {
    if t.dtype() != DType::F32 {
        return None;
    }
    match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => Some(std::borrow::Cow::Borrowed(s)),
        _ => Some(std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>()?.to_vec())),
    }
}

/// Threads for a gemm crate product only when it is worth them, as burn flex decides (about 7M
/// multiply-adds); none in the browser.
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    #[cfg(not(target_arch = "wasm32"))]
    if m.saturating_mul(n).saturating_mul(k) >= 192 * 192 * 192 {
        return gemm::Parallelism::Rayon(0);
    }
    let _ = (m, n, k);
    gemm::Parallelism::None
}

/// `a · b` by the gemm crate into a buffer it fills: burn flex's own product, without the
/// zeroing of its output and the copy of those zeros into an aligned buffer that burn flex's
/// `matmul` does first (3% of a 24M model's training step). None for other dtypes and ranks.
fn gemm_matmul(a: &FloatTensor<Flex>, b: &FloatTensor<Flex>) -> Option<FloatTensor<Flex>> {
    let (oa, ob) = (gemm_operand(a)?, gemm_operand(b)?);
    let (m, n) = (oa.1, ob.2);
    Some(Flex::float_from_data(burn::tensor::TensorData::new(gemm_product(oa, ob), [m, n]), &Default::default()))
}

/// `a · b` into a new `[M, N]` buffer: decoding's few rows split across the team
/// (`decode_split`), anything else by the gemm crate.
fn gemm_product(oa: GemmOperand, ob: GemmOperand) -> Vec<f32> {
    let (m, k, n) = (oa.1, oa.2, ob.2);
    let mut out = Vec::<f32>::with_capacity(m * n);
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(tasks) = decode_split(m, k, n) {
        decode_product(oa, ob, tasks, &mut out);
        return out;
    }
    // Safety: `out` has room for m·n values; with `read_dst` false gemm writes every one of
    // them (zeros when k is 0) without reading them, so they are initialised before set_len.
    unsafe {
        gemm_into(oa, ob, out.as_mut_ptr(), n, false, gemm_parallelism(m, n, k));
        out.set_len(m * n);
    }
    out
}

/// `x [M, K] · w` for `w` a `[K, N]` matrix whose element (i, j) is `data[i·rs + j·cs]` (a
/// row-major weight, or the transpose of one): the product burn flex's `matmul` gives for the
/// same operands (`flex_matmul` on f32 tensors without a BLAS-sized side), on plain slices. For
/// the CPU engine's decoding step (`model::decode`).
pub(crate) fn product(x: &[f32], m: usize, data: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Vec<f32> {
    assert!(x.len() == m * k, "product: {} values for x [{m}, {k}]", x.len());
    assert!(k == 0 || n == 0 || (k - 1) * rs + (n - 1) * cs < data.len(), "product: a [{k}, {n}] matrix with strides ({rs}, {cs}) does not fit in {} values", data.len());
    gemm_product((x.as_ptr(), m, k, k as isize, 1), (data.as_ptr(), k, n, rs as isize, cs as isize))
}

/// How many tasks a product of a few rows by a large matrix (a decoding step's linear layers:
/// one row, a weight of `k × n`) is split into across oneMKL's OpenMP team, or None to keep it on
/// one thread. Such a product streams the weight once and is bound by memory, and a second core
/// adds bandwidth (`decode_bandwidth`: 12.6 against 7.3 GB/s on the Xeon). On rayon each
/// product's hand-off woke a sleeping worker and the gain was lost ("Two more, one kept" in
/// benches/README.md); the team's worker spins between products, so it is split only there. Two
/// tasks a thread, each at least 32K weights (128 KB).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn decode_split(m: usize, k: usize, n: usize) -> Option<usize> {
    if m > DECODE_ROWS || !team::on_team() {
        return None;
    }
    let tasks = (2 * rayon::current_num_threads()).min(k.saturating_mul(n) >> 15);
    (tasks >= 2).then_some(tasks)
}

/// `out = a · b` (`out` with room for m·n values) in `tasks` parts on oneMKL's team, each a
/// contiguous part of the weight: when b's rows are contiguous (the weights as the model holds
/// them, `[in, out]`), a range of its rows, whose partial sums are added after; when its columns
/// are (a transposed view of `nn.Linear`'s `[out, in]`), a range of columns. (Columns of a
/// row-major weight would be read as short strided pieces, which gained nothing.)
#[cfg(not(target_arch = "wasm32"))]
fn decode_product(oa: GemmOperand, ob: GemmOperand, tasks: usize, out: &mut Vec<f32>) {
    let (m, k, n, b_cs) = (oa.1, oa.2, ob.2, ob.4);
    let (a, b) = (Shared(oa), Shared(ob));
    if b_cs == 1 && k >= tasks {
        let rows = k.div_ceil(tasks);
        let parts = k.div_ceil(rows);
        let mut partial = vec![0f32; parts * m * n];
        par_chunks(&mut partial, m * n, |t, part| {
            let (k0, kw) = (t * rows, rows.min(k - t * rows));
            let ((pa, _, _, a_rs, a_cs), (pb, _, _, b_rs, b_cs)) = (a.get(), b.get());
            // Safety: a's columns and b's rows [k0, k0 + kw) lie inside them (gemm_operand's
            // strides); `part` holds this task's m·n values.
            unsafe { gemm_into((pa.wrapping_offset(k0 as isize * a_cs), m, kw, a_rs, a_cs), (pb.wrapping_offset(k0 as isize * b_rs), kw, n, b_rs, b_cs), part.as_mut_ptr(), n, false, gemm::Parallelism::None) };
        });
        out.resize(m * n, 0.0);
        tinytune_kernels::sum_parts(&partial, out);
        return;
    }
    let width = n.div_ceil(tasks);
    let dst = SharedMut(out.as_mut_ptr());
    for_each_task(n.div_ceil(width), &|t| {
        let (c0, w) = (t * width, width.min(n - t * width));
        let (pb, k, _, b_rs, b_cs) = b.get();
        // Safety: b's columns [c0, c0 + w) lie inside it; each task writes the columns
        // [c0, c0 + w) of the m rows of `out`, which has room for m·n values.
        unsafe { gemm_into(a.get(), (pb.wrapping_offset(c0 as isize * b_cs), k, w, b_rs, b_cs), dst.get().add(c0), n, false, gemm::Parallelism::None) };
    });
    // Safety: the blocks together wrote every one of the m·n values.
    unsafe { out.set_len(m * n) };
}

/// `out += x [M, K] · w` for one row (M = 1, which the BLAS never takes), `w` as `product`
/// takes it: what burn flex's `matmul_add` does for the same operands (`gemm_matmul_add`), on
/// plain slices. For the CPU engine's decoding step (`model::decode`).
pub(crate) fn row_product_add(x: &[f32], data: &[f32], n: usize, rs: usize, cs: usize, out: &mut [f32]) {
    let (m, k) = (1, x.len());
    assert!(out.len() == n, "row_product_add: out of {} values for {n} columns", out.len());
    assert!(k == 0 || n == 0 || (k - 1) * rs + (n - 1) * cs < data.len(), "row_product_add: a [{k}, {n}] matrix with strides ({rs}, {cs}) does not fit in {} values", data.len());
    // Safety: `out` holds the m·n initialised values, row-major, and shares no storage with the
    // operands (it is a `&mut`); the asserts keep the operands inside their slices.
    unsafe { gemm_into((x.as_ptr(), m, k, k as isize, 1), (data.as_ptr(), k, n, rs as isize, cs as isize), out.as_mut_ptr(), n, true, gemm_parallelism(m, n, k)) };
}

/// `x · W` for one row `x` of K values and several row-major `[K, n]` weights (`(data, n)`) at
/// once: what `product` gives for each, bit for bit, with the parts of all of them handed out
/// on the team in one go, so that the team starts and joins once for the lot (a decoding step's
/// q, k and v, or the MLP's gate and up; `model::decode`).
pub(crate) fn row_products(x: &[f32], weights: &[(&[f32], usize)]) -> Vec<Vec<f32>> {
    let k = x.len();
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(out) = team_row_products(x, weights) {
        return out;
    }
    weights.iter().map(|&(w, n)| product(x, 1, w, k, n, n, 1)).collect()
}

/// `row_products` as one job on oneMKL's team: each product cut as `decode_product` cuts it (the
/// same parts of the weight's rows, their partial sums added in the same order). None where
/// `decode_product` would not take every one of them.
#[cfg(not(target_arch = "wasm32"))]
fn team_row_products(x: &[f32], weights: &[(&[f32], usize)]) -> Option<Vec<Vec<f32>>> {
    let k = x.len();
    // Per product: rows a part, parts, where its partial sums start.
    let mut cuts = Vec::with_capacity(weights.len());
    let (mut tasks, mut values) = (0, 0);
    for &(w, n) in weights {
        assert!(n > 0 && w.len() >= k * n, "row_products: {} values for a [{k}, {n}] weight", w.len());
        let split = decode_split(1, k, n)?;
        if k < split {
            return None;
        }
        let rows = k.div_ceil(split);
        let parts = k.div_ceil(rows);
        cuts.push((rows, parts, tasks, values));
        tasks += parts;
        values += parts * n;
    }
    let mut partial = vec![0f32; values];
    let dst = SharedMut(partial.as_mut_ptr());
    let operands: Vec<Shared> = weights.iter().map(|&(w, n)| Shared((w.as_ptr(), k, n, n as isize, 1))).collect();
    let a = Shared((x.as_ptr(), 1, k, k as isize, 1));
    for_each_task(tasks, &|t| {
        let j = cuts.partition_point(|c| c.2 <= t) - 1;
        let (rows, _, first, start) = cuts[j];
        let (p, n) = (t - first, weights[j].1);
        let (k0, kw) = (p * rows, rows.min(k - p * rows));
        let ((pa, _, _, a_rs, a_cs), (pb, _, _, b_rs, b_cs)) = (a.get(), operands[j].get());
        // Safety: a's columns and the weight's rows [k0, k0 + kw) lie inside them (the assert
        // above); each task writes its own n values of `partial`, at start + p·n.
        unsafe {
            gemm_into(
                (pa.wrapping_offset(k0 as isize * a_cs), 1, kw, a_rs, a_cs),
                (pb.wrapping_offset(k0 as isize * b_rs), kw, n, b_rs, b_cs),
                dst.get().add(start + p * n),
                n,
                false,
                gemm::Parallelism::None,
            )
        };
    });
    Some(
        weights
            .iter()
            .zip(&cuts)
            .map(|(&(_, n), &(_, parts, _, start))| {
                let mut out = vec![0f32; n];
                tinytune_kernels::sum_parts(&partial[start..start + parts * n], &mut out);
                out
            })
            .collect(),
    )
}

/// Rows up to which a product counts as decoding's for `decode_split`.
#[cfg(not(target_arch = "wasm32"))]
const DECODE_ROWS: usize = 4;

/// A gemm operand shared by the tasks that read it.
#[cfg(not(target_arch = "wasm32"))]
struct Shared(GemmOperand);
// Safety: the tasks only read through it while the caller holds the tensor.
#[cfg(not(target_arch = "wasm32"))]
unsafe impl Sync for Shared {}
#[cfg(not(target_arch = "wasm32"))]
impl Shared {
    fn get(&self) -> GemmOperand {
        self.0
    }
}
/// An output the tasks write disjoint columns of (rows apart, so not `Chunks`).
#[cfg(not(target_arch = "wasm32"))]
struct SharedMut(*mut f32);
// Safety: each task writes its own columns only (`decode_product`).
#[cfg(not(target_arch = "wasm32"))]
unsafe impl Sync for SharedMut {}
#[cfg(not(target_arch = "wasm32"))]
impl SharedMut {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// A 2-d f32 tensor as the gemm crate takes it: a pointer to its first element, its rows and
/// columns, and its row and column strides (any strides: a transposed view is a pair of strides).
type GemmOperand = (*const f32, usize, usize, isize, isize);

/// `out = a · b`, or `out += a · b` with `read_dst`, for `out` `[M, N]` with rows `ld` apart, by
/// the gemm crate with `parallelism`.
///
/// # Safety
/// `out` must point to M rows of N writable f32 values, `ld` apart (initialised when `read_dst`),
/// that no operand shares; the operands' pointers and strides must stay inside their storage
/// (burn flex's layouts do). gemm keeps no pointer after the call.
unsafe fn gemm_into(a: GemmOperand, b: GemmOperand, out: *mut f32, ld: usize, read_dst: bool, parallelism: gemm::Parallelism) {
    let ((pa, m, k, a_rs, a_cs), (pb, kb, n, b_rs, b_cs)) = (a, b);
    assert_eq!(k, kb, "matmul: [{m}, {k}] by [{kb}, {n}]");
    // Decoding's one row by a row-major weight: tinytune's own kernel streams the weight at
    // 1.36× the gemm crate's rate (`benches/decode_bandwidth.rs`). Products big enough for
    // threads stay on gemm's, and so do products of more rows (the kernel reads the weight once
    // a row; gemm's register tiles read it once for all of them).
    #[cfg(not(target_arch = "wasm32"))]
    if m == 1
        && k > 0
        && n > 0
        && matches!(parallelism, gemm::Parallelism::None)
        && b_cs == 1
        && b_rs >= n as isize
        && a_cs == 1
    {
        // Safety: the caller's contract: a's row of k (columns adjacent), b's k rows of n (rows
        // b_rs apart) and out's row of n lie inside their storage.
        let (a, w, out) = unsafe { (std::slice::from_raw_parts(pa, k), std::slice::from_raw_parts(pb, (k - 1) * b_rs as usize + n), std::slice::from_raw_parts_mut(out, n)) };
        tinytune_kernels::matmul_rows(a, k, 1, k, w, b_rs as usize, n, read_dst, out, n);
        return;
    }
    let keep = if read_dst { 1.0f32 } else { 0.0 };
    // Safety: the caller's contract above.
    unsafe { gemm::gemm(m, n, k, out, 1, ld as isize, read_dst, pa, a_cs, a_rs, pb, b_cs, b_rs, keep, 1.0f32, false, false, false, parallelism) }
}

/// Rows up to which a product with bfloat16 weights streams them once through
/// `tinytune_kernels::matmul_bf16`; past it (a prompt's prefill) the weights are widened to f32
/// for one product, whose GEMM reuses each weight across many rows.
pub const BF16_MAX_ROWS: usize = 8;

/// `a [M, K] · b [K, N]` with `b` in bfloat16: the weights of a bf16 checkpoint kept as stored
/// for decoding (`Model::keep_bf16_weights`), `b` the transposed view of a contiguous `[N, K]`.
/// Exact up to the order of the f32 sums: widening a bfloat16 to f32 loses nothing.
fn bf16_matmul(a: FloatTensor<Flex>, b: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let (sa, sb) = (a.layout().shape().clone(), b.layout().shape().clone());
    let (m, k, n) = (sa[0], sa[1], sb[1]);
    let a = if a.dtype() == DType::F32 { a } else { Flex::float_cast(a, burn::tensor::FloatDType::F32) };
    // The kernel takes the weight as `nn.Linear` stores it, `[N, K]`: b is then its transposed view.
    let bt = Flex::float_transpose(b.clone());
    let rows = if bt.is_contiguous() { bt.as_slice::<half::bf16>() } else { None };
    let (Some(w), true) = (rows, m <= BF16_MAX_ROWS) else {
        return flex_matmul(a, Flex::float_cast(b, burn::tensor::FloatDType::F32));
    };
    let a = if a.is_contiguous() { a } else { a.to_contiguous() };
    let x = a.as_slice::<f32>().expect("a contiguous f32 tensor");
    let w: &[u16] = half::slice::HalfFloatSliceExt::reinterpret_cast(w);
    Flex::float_from_data(burn::tensor::TensorData::new(bf16_product(x, m, w, k, n), [m, n]), &Default::default())
}

/// `x [M, K] · wᵀ` for `w` `[N, K]` in bfloat16 (its raw bits), M up to `BF16_MAX_ROWS`:
/// `bf16_matmul` on slices (also the CPU engine's decoding step's, `model::decode`).
pub(crate) fn bf16_product(x: &[f32], m: usize, w: &[u16], k: usize, n: usize) -> Vec<f32> {
    assert!(x.len() == m * k && w.len() == n * k, "bf16_product: x of {} values, w of {}, for [{m}, {k}] · [{n}, {k}]ᵀ", x.len(), w.len());
    let mut out = vec![0f32; m * n];
    // One row (decoding): the weight's rows in parts on oneMKL's team, as `decode_split` says.
    #[cfg(not(target_arch = "wasm32"))]
    if m == 1
        && let Some(tasks) = decode_split(m, k, n)
    {
        let width = n.div_ceil(tasks);
        par_chunks(&mut out, width, |t, o| {
            let j0 = t * width;
            tinytune_kernels::matmul_bf16(x, &w[j0 * k..(j0 + o.len()) * k], 1, k, o.len(), o);
        });
        return out;
    }
    tinytune_kernels::matmul_bf16(x, w, m, k, n, &mut out);
    out
}

/// `c + a · b` on burn flex. Through the BLAS, when `c` is a tensor no one else holds, the
/// product is added into its buffer in place (no zeroed output, no separate add); otherwise the
/// product and an add.
pub fn flex_matmul_add(a: FloatTensor<Flex>, b: FloatTensor<Flex>, c: FloatTensor<Flex>) -> FloatTensor<Flex> {
    #[cfg(not(target_arch = "wasm32"))]
    let c = match library::get() {
        Some(blas) => match blas_matmul_add(blas, &a, &b, c) {
            Ok(out) => return out,
            Err(c) => c,
        },
        None => c,
    };
    match gemm_matmul_add(&a, &b, c) {
        Ok(out) => out,
        Err(c) => Flex::float_add(c, flex_matmul(a, b)),
    }
}

/// A 2-d f32 tensor as a `GemmOperand`, or None for other dtypes and ranks.
fn gemm_operand(t: &FloatTensor<Flex>) -> Option<GemmOperand> {
    let layout = t.layout();
    if t.dtype() != DType::F32 || layout.num_dims() != 2 {
        return None;
    }
    let data = t.storage::<f32>();
    if layout.start_offset() > data.len() {
        return None;
    }
    let (shape, strides) = (layout.shape(), layout.strides());
    Some((data[layout.start_offset()..].as_ptr(), shape[0], shape[1], strides[0], strides[1]))
}

/// `c + a · b` added into `c`'s buffer by the gemm crate (burn flex's own GEMM), for the products
/// the BLAS does not take (a LoRA factor's of rank under 8, or all of them without a BLAS): no
/// output to allocate, zero and copy into place (burn flex's `matmul` does all three) and no
/// separate add.
/// `Err(c)` when `c` is shared or not a contiguous f32 `[M, N]`, or an operand is not 2-d f32.
fn gemm_matmul_add(a: &FloatTensor<Flex>, b: &FloatTensor<Flex>, mut c: FloatTensor<Flex>) -> Result<FloatTensor<Flex>, FloatTensor<Flex>> {
    let (Some(oa), Some(ob)) = (gemm_operand(a), gemm_operand(b)) else { return Err(c) };
    let (m, k, kb, n) = (oa.1, oa.2, ob.1, ob.2);
    if k != kb
        || c.dtype() != DType::F32
        || !(c.layout().num_dims() == 2 && c.layout().shape()[0] == m && c.layout().shape()[1] == n)
        || !c.is_unique()
        || c.layout().contiguous_offsets() != Some((0, m * n))
    {
        return Err(c);
    }
    let Some(out) = c.try_storage_mut::<f32>() else { return Err(c) };
    // Safety: `out` is c's own buffer (c is unique, so it shares no storage with a or b),
    // exactly m·n initialised values, row-major.
    unsafe { gemm_into(oa, ob, out.as_mut_ptr(), n, true, gemm_parallelism(m, n, k)) };
    Ok(c)
}

#[cfg(not(target_arch = "wasm32"))]
fn blas_matmul_add(blas: &library::Blas, a: &FloatTensor<Flex>, b: &FloatTensor<Flex>, mut c: FloatTensor<Flex>) -> Result<FloatTensor<Flex>, FloatTensor<Flex>> {
    let (Some(oa), Some(ob)) = (operand(a), operand(b)) else { return Err(c) };
    let (m, n) = (oa.rows, ob.cols);
    let fits = oa.cols == ob.rows && m.min(oa.cols).min(n) >= BLAS_MIN_SIDE;
    if !fits
        || c.dtype() != burn::tensor::DType::F32
        || !(c.layout().num_dims() == 2 && c.layout().shape()[0] == m && c.layout().shape()[1] == n)
        || !c.is_unique()
        || c.layout().contiguous_offsets() != Some((0, m * n))
    {
        return Err(c);
    }
    let Some(out) = c.try_storage_mut::<f32>() else { return Err(c) };
    blas.matmul_add(&oa, &ob, &mut out[..m * n]);
    Ok(c)
}

/// Products with a side shorter than this stay on burn flex, whose kernels win there
/// (`benches/gemm_shapes.rs`, 2 threads): decoding's one row (19 against 6 GFLOPS) and four
/// (45 against 19). The rank-8 LoRA products go to the BLAS: alone, burn flex's kernel was
/// faster on them (52 against 42 GFLOPS on an AMD EPYC), but in a training step, where burn
/// flex runs them on one thread and the BLAS on two, the BLAS made steps 3.3% faster on an
/// Intel Xeon (benches/README.md, "Steps taking turns") and no slower on the EPYC.
#[cfg(not(target_arch = "wasm32"))]
const BLAS_MIN_SIDE: usize = 8;

#[cfg(not(target_arch = "wasm32"))]
fn blas_matmul(blas: &library::Blas, a: &FloatTensor<Flex>, b: &FloatTensor<Flex>) -> Option<FloatTensor<Flex>> {
    let (oa, ob) = (operand(a)?, operand(b)?);
    if oa.cols != ob.rows || oa.rows.min(oa.cols).min(ob.cols) < BLAS_MIN_SIDE {
        return None;
    }
    let out = blas.matmul(&oa, &ob);
    Some(Flex::float_from_data(burn::tensor::TensorData::new(out, [oa.rows, ob.cols]), &Default::default()))
}

/// A 2-d f32 tensor as a BLAS operand: rows contiguous (`ld` the row stride), or columns
/// contiguous (a transposed view), or None (other dtypes and ranks, broadcast, negative or
/// interleaved strides).
#[cfg(not(target_arch = "wasm32"))]
fn operand(t: &FloatTensor<Flex>) -> Option<library::Operand<'_>> {
    let layout = t.layout();
    if t.dtype() != burn::tensor::DType::F32 || layout.num_dims() != 2 {
        return None;
    }
    let (rows, cols) = (layout.shape()[0], layout.shape()[1]);
    let (s0, s1) = (layout.strides()[0], layout.strides()[1]);
    let data = t.storage::<f32>().get(layout.start_offset()..)?;
    // A dimension of length 1 is never stepped along, so its stride does not matter.
    let stride = |s: isize, len: usize, at_least: usize| if len <= 1 { Some(at_least.max(1)) } else { usize::try_from(s).ok().filter(|&s| s >= at_least.max(1)) };
    if s1 == 1 || cols <= 1 {
        if let Some(ld) = stride(s0, rows, cols) {
            return Some(library::Operand { data, rows, cols, ld, transposed: false });
        }
    }
    if s0 == 1 || rows <= 1 {
        if let Some(ld) = stride(s1, cols, rows) {
            return Some(library::Operand { data, rows, cols, ld, transposed: true });
        }
    }
    None
}
