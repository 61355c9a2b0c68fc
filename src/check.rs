//! The device check: a small forward + backward pass (a two-layer matmul chain with a squared
//! error loss) run through burn's autodiff on any device, and the same pass computed by hand in
//! f64 as the reference. The page runs it on WebGPU and on the wasm CPU path and shows both;
//! the tests hold every device to the hand-computed values.
//!
//!   h = tanh(x·W1)          x [B, C], W1 [C, H]
//!   y = h·W2                W2 [H, O]
//!   loss = mean((y - t)²)   t [B, O]

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::{Error, Result};

const B: usize = 4;
const C: usize = 8;
const H: usize = 16;
const O: usize = 4;

/// The loss and the two weight gradients, flattened row-major.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CheckResult {
    pub loss: f32,
    pub grad_w1: Vec<f32>,
    pub grad_w2: Vec<f32>,
}

impl CheckResult {
    /// The largest absolute difference between two results, over the loss and every gradient.
    pub fn max_abs_diff(&self, other: &CheckResult) -> f32 {
        let pairs = self.grad_w1.iter().zip(&other.grad_w1).chain(self.grad_w2.iter().zip(&other.grad_w2));
        pairs.fold((self.loss - other.loss).abs(), |m, (a, b)| m.max((a - b).abs()))
    }
}

/// Deterministic inputs: smooth functions of the index, so every device sees the same numbers
/// without a random generator.
fn inputs() -> [(Vec<f32>, [usize; 2]); 4] {
    let fill = |n: usize, f: &dyn Fn(usize) -> f32| (0..n).map(f).collect::<Vec<f32>>();
    [
        (fill(B * C, &|i| (0.37 * i as f32 + 0.1).sin()), [B, C]),
        (fill(C * H, &|i| 0.3 * (0.11 * i as f32 - 0.5).cos()), [C, H]),
        (fill(H * O, &|i| 0.25 * (0.23 * i as f32 + 0.7).sin()), [H, O]),
        (fill(B * O, &|i| (i % 3) as f32 * 0.5 - 0.5), [B, O]),
    ]
}

/// Run the pass on `device` through burn autodiff. Reads back asynchronously, so it works in the
/// browser, where synchronous GPU reads are not allowed.
pub async fn run(device: &Device) -> Result<CheckResult> {
    let device = device.clone().autodiff();
    let [x, w1, w2, t] = inputs();
    let tensor = |(v, s): (Vec<f32>, [usize; 2])| Tensor::<2>::from_data(TensorData::new(v, s), &device);
    let x = tensor(x);
    let w1 = tensor(w1).require_grad();
    let w2 = tensor(w2).require_grad();
    let t = tensor(t);

    let y = x.matmul(w1.clone()).tanh().matmul(w2.clone());
    let loss = (y - t).square().mean();
    let grads = loss.backward();

    let read = |t: Option<Tensor<2>>| t.ok_or_else(|| Error::device("autodiff returned no gradient"));
    let g1 = read(w1.grad(&grads))?;
    let g2 = read(w2.grad(&grads))?;
    Ok(CheckResult {
        loss: to_vec(loss.into_data_async().await)?[0],
        grad_w1: to_vec(g1.into_data_async().await)?,
        grad_w2: to_vec(g2.into_data_async().await)?,
    })
}

fn to_vec<E: std::fmt::Debug>(data: std::result::Result<TensorData, E>) -> Result<Vec<f32>> {
    data.map_err(|e| Error::device(format!("reading a tensor back from the device failed: {e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| Error::device(format!("tensor data is not f32: {e:?}")))
}

/// The same pass with the chain rule written out, in f64.
pub fn reference() -> CheckResult {
    let [x, w1, w2, t] = inputs().map(|(v, _)| v.into_iter().map(f64::from).collect::<Vec<f64>>());
    let (loss, gw1, gw2) = reference_f64(&x, &w1, &w2, &t);
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    CheckResult { loss: loss as f32, grad_w1: f(gw1), grad_w2: f(gw2) }
}

fn reference_f64(x: &[f64], w1: &[f64], w2: &[f64], t: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
    let mut h = vec![0.0; B * H];
    for b in 0..B {
        for j in 0..H {
            h[b * H + j] = (0..C).map(|c| x[b * C + c] * w1[c * H + j]).sum::<f64>().tanh();
        }
    }
    let mut dy = vec![0.0; B * O];
    let mut loss = 0.0;
    for b in 0..B {
        for o in 0..O {
            let y: f64 = (0..H).map(|j| h[b * H + j] * w2[j * O + o]).sum();
            let e = y - t[b * O + o];
            loss += e * e / (B * O) as f64;
            dy[b * O + o] = 2.0 * e / (B * O) as f64;
        }
    }
    // dW2 = hᵀ·dy; dz = (dy·W2ᵀ) ⊙ (1 - h²); dW1 = xᵀ·dz
    let mut gw2 = vec![0.0; H * O];
    let mut dz = vec![0.0; B * H];
    for b in 0..B {
        for j in 0..H {
            let hj = h[b * H + j];
            let mut dh = 0.0;
            for o in 0..O {
                gw2[j * O + o] += hj * dy[b * O + o];
                dh += dy[b * O + o] * w2[j * O + o];
            }
            dz[b * H + j] = dh * (1.0 - hj * hj);
        }
    }
    let mut gw1 = vec![0.0; C * H];
    for b in 0..B {
        for c in 0..C {
            for j in 0..H {
                gw1[c * H + j] += x[b * C + c] * dz[b * H + j];
            }
        }
    }
    (loss, gw1, gw2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_loss_is_hand_checkable_at_zero_weights() {
        // With W2 = 0 the output is 0, so the loss is mean(t²): t cycles -0.5, 0, 0.5 over 16
        // entries (6 of -0.5, 5 of 0, 5 of 0.5), giving (6 + 5)·0.25 / 16 = 0.171875.
        let [_, _, _, (t, _)] = inputs();
        let mean_sq: f32 = t.iter().map(|v| v * v).sum::<f32>() / t.len() as f32;
        assert_eq!(mean_sq, 0.171875);
    }

    #[test]
    fn reference_gradient_matches_central_finite_differences() {
        let [x, w1, w2, t] = inputs().map(|(v, _)| v.into_iter().map(f64::from).collect::<Vec<f64>>());
        let (_, g1, g2) = reference_f64(&x, &w1, &w2, &t);
        let eps = 1e-6;
        for k in [0, 7, 50, C * H - 1] {
            let (mut up, mut down) = (w1.clone(), w1.clone());
            up[k] += eps;
            down[k] -= eps;
            let fd = (reference_f64(&x, &up, &w2, &t).0 - reference_f64(&x, &down, &w2, &t).0) / (2.0 * eps);
            assert!((fd - g1[k]).abs() < 1e-8, "dW1[{k}]: chain rule {} vs finite difference {fd}", g1[k]);
        }
        for k in [0, 9, H * O - 1] {
            let (mut up, mut down) = (w2.clone(), w2.clone());
            up[k] += eps;
            down[k] -= eps;
            let fd = (reference_f64(&x, &w1, &up, &t).0 - reference_f64(&x, &w1, &down, &t).0) / (2.0 * eps);
            assert!((fd - g2[k]).abs() < 1e-8, "dW2[{k}]: chain rule {} vs finite difference {fd}", g2[k]);
        }
        assert!(g1.iter().any(|g| g.abs() > 1e-3), "gradients must not be trivially zero");
    }
}

/// The 4-bit kernels on a device against the CPU path (`quant::kernels::dequantize_words`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Q4Check {
    /// One line per matrix: its shape, type, and whether every dequantized value is the same f32.
    pub cases: Vec<Q4Case>,
    /// All dequantizations equal bit for bit.
    pub equal: bool,
    /// The fused kernel's largest difference from dequantize-then-multiply, relative to the
    /// output's largest magnitude.
    pub fused_max_rel_diff: f32,
    /// Both hold: every dequantization equal, and the fused kernel within `FUSED_TOLERANCE`.
    pub trusted: bool,
}

/// How far the fused kernel may stray from dequantize-then-multiply (relative to the output's
/// largest magnitude): the two sum in different orders.
pub const FUSED_TOLERANCE: f32 = 1e-5;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Q4Case {
    pub shape: [usize; 2],
    pub quant: String,
    pub values: usize,
    /// Values whose f32 bits differ from the CPU path's.
    pub differing: usize,
}

/// Dequantize matrices of awkward sizes (a partial last block, an odd count, an all-zero
/// block, more than 256 blocks) in NF4 and FP4, with and without double quantization, and in
/// GGUF's Q4_0 and Q4_1, on `device`; compare with the CPU path bit for bit; and run the fused
/// kernel on one row, in NF4 and in Q4_1.
pub async fn q4(device: &Device) -> Result<Q4Check> {
    use crate::quant::kernels::{dequantize_words, pack};
    use crate::quant::{Q4Tensor, QuantType, Quant4};
    let values = |n: usize, seed: f32| -> Vec<f32> { (0..n).map(|i| 0.1 * (0.37 * i as f32 + seed).sin() * (1.0 + (i % 7) as f32)).collect() };
    let mut cases = Vec::new();
    for (shape, seed) in [([37usize, 100usize], 0.1f32), ([7, 9], 0.2), ([300, 64], 0.3)] {
        let mut v = values(shape[0] * shape[1], seed);
        if v.len() >= 128 {
            v[64..128].iter_mut().for_each(|x| *x = 0.0); // an all-zero block
        }
        for (qt, dq) in [(QuantType::Nf4, true), (QuantType::Nf4, false), (QuantType::Fp4, false), (QuantType::Q4_0, false), (QuantType::Q4_1, false)] {
            let q = Quant4::quantize(&v, shape, qt, dq)?;
            let (words, layout) = pack(&q);
            let want = dequantize_words(&words, &layout);
            let got = crate::model::read_f32(Q4Tensor::new(&q, device).dequantize()).await?;
            let differing = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count() + got.len().abs_diff(want.len());
            cases.push(Q4Case { shape, quant: format!("{}{}", qt.name(), if dq { "+dq" } else { "" }), values: want.len(), differing });
        }
    }
    let mut fused_max_rel_diff = 0f32;
    for qt in [QuantType::Nf4, QuantType::Q4_1] {
        let q = Quant4::quantize(&values(96 * 128, 0.4), [96, 128], qt, true)?;
        let t = Q4Tensor::new(&q, device);
        let x = Tensor::<2>::from_data(TensorData::new(values(128, 0.5), [1, 128]), device);
        let fused = crate::model::read_f32(t.linear(x.clone(), true)).await?;
        let plain = crate::model::read_f32(x.matmul(t.dequantize().transpose())).await?;
        let scale = plain.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
        if fused.len() != plain.len() {
            return Err(Error::device(format!("the fused kernel gave {} values, not {}", fused.len(), plain.len())));
        }
        fused_max_rel_diff = fused_max_rel_diff.max(fused.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale);
    }
    let equal = cases.iter().all(|c| c.differing == 0);
    Ok(Q4Check { equal, cases, fused_max_rel_diff, trusted: equal && fused_max_rel_diff <= FUSED_TOLERANCE })
}
