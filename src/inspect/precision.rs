//! The precision lab: one weight matrix of the loaded model seen in every number format
//! (`quant::formats`), and the model's held-out loss with every linear weight in each format
//! (post-training quantization, measured by running the model).

use serde::Serialize;

use crate::model::layers::Base;
use crate::model::{Model, read_f32};
use crate::quant::formats::{ALL, ErrorStats, Format, error_stats};
use crate::quant::nf4::{NF4_CODE, BLOCK};
use crate::train::data::Example;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    /// `bins + 1` edges from the smallest to the largest value.
    pub edges: Vec<f32>,
    pub counts: Vec<u32>,
}

/// The 16 values one NF4 block can take: the code times the block's absmax.
#[derive(Clone, Debug, Serialize)]
pub struct BlockLevels {
    /// Which block of 64 (in bitsandbytes' row-major `[out, in]` order).
    pub block: usize,
    pub absmax: f32,
    pub levels: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FormatRow {
    pub format: Format,
    pub name: &'static str,
    pub about: &'static str,
    pub bits: f64,
    #[serde(flatten)]
    pub error: ErrorStats,
}

#[derive(Clone, Debug, Serialize)]
pub struct MatrixReport {
    pub path: String,
    /// `[out, in]`.
    pub shape: [usize; 2],
    pub histogram: Histogram,
    pub block: BlockLevels,
    pub formats: Vec<FormatRow>,
}

/// A linear weight as bitsandbytes sees it: `[out, in]` row-major f32 (dequantized when the
/// model holds it in 4 bits).
async fn weight_out_in(model: &Model, path: &str) -> Result<(Vec<f32>, [usize; 2])> {
    let linears = model.arch.linears();
    let (_, l) = linears
        .iter()
        .find(|(p, _)| p == path)
        .ok_or_else(|| Error::input(format!("the model has no linear layer {path}")))?;
    let (d_in, d_out) = (l.d_in(), l.d_out());
    Ok((read_f32(l.weight().transpose()).await?, [d_out, d_in]))
}

/// The histogram, one block's NF4 levels (the block with the largest absmax, whose levels are
/// spread widest) and the error of every format on the matrix at `path`.
pub async fn matrix_report(model: &Model, path: &str, bins: usize) -> Result<MatrixReport> {
    let (values, shape) = weight_out_in(model, path).await?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::input(format!("{path} has NaN or infinite values")));
    }
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let bins = bins.max(1);
    let width = ((hi - lo) / bins as f32).max(f32::MIN_POSITIVE);
    let mut counts = vec![0u32; bins];
    for &v in &values {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let edges = (0..=bins).map(|i| lo + width * i as f32).collect();
    let (block, absmax) = values
        .chunks(BLOCK)
        .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
        .enumerate()
        .fold((0, 0f32), |best, (i, a)| if a > best.1 { (i, a) } else { best });
    let mut formats = Vec::new();
    for f in ALL {
        let rounded = f.round_trip(&values, shape)?;
        formats.push(FormatRow { format: f, name: f.name(), about: f.about(), bits: f.bits(shape), error: error_stats(&values, &rounded) });
    }
    Ok(MatrixReport {
        path: path.to_string(),
        shape,
        histogram: Histogram { edges, counts },
        block: BlockLevels { block, absmax, levels: NF4_CODE.iter().map(|c| c * absmax).collect() },
        formats,
    })
}

/// The held-out loss with every linear weight rounded through `format` (embeddings, norms and
/// the output head stay f32, as quantization for QLoRA leaves them). The model is restored
/// afterwards, also when the evaluation fails.
pub async fn ptq_loss(model: &mut Model, format: Format, examples: &[Example], batch: usize, seq_len: usize) -> Result<f64> {
    let device = model.device.clone();
    let mut originals = Vec::new();
    let mut rounded = Vec::new();
    for (path, l) in model.arch.linears() {
        let (d_in, d_out) = (l.d_in(), l.d_out());
        let values = read_f32(l.weight().transpose()).await?;
        let r = format.round_trip(&values, [d_out, d_in]).map_err(|e| Error::input(format!("{path}: {e}")))?;
        // Back to the layer's [in, out].
        let w = burn::tensor::Tensor::<2>::from_data(burn::tensor::TensorData::new(r, [d_out, d_in]), &device).transpose();
        rounded.push(w);
        originals.push(l.base.clone());
    }
    for ((_, l), w) in model.arch.linears_mut().into_iter().zip(rounded) {
        l.base = Base::Dense(w);
    }
    let result = crate::train::loss::evaluate_examples(model, examples, batch, seq_len).await;
    for ((_, l), base) in model.arch.linears_mut().into_iter().zip(originals) {
        l.base = base;
    }
    Ok(result?.0)
}
