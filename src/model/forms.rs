//! The forms a model's weights take in memory: how its linear weights and embedding are stored
//! (f32, bf16 kept as stored, 4 bits, 8-bit codes), the bits a parameter that takes, and the
//! conversions between them (QLoRA's quantization, full finetuning's widening).

use burn::tensor::Tensor;

use super::{Arch, Model, layers, read_f32};
use crate::{Error, Result};

impl Model {
    /// How the linear weights are quantized: `None` when every one is dense f32.
    pub fn quantization(&self) -> Option<crate::quant::bnb::QuantConfig> {
        self.arch.linears().into_iter().find_map(|(_, l)| match &l.base {
            layers::Base::Quant(q) => Some(crate::quant::bnb::QuantConfig {
                quant_type: q.layout.quant_type,
                double_quant: q.layout.nested > 0,
            }),
            layers::Base::Dense(_) | layers::Base::Q8(_) => None,
        })
    }

    /// Bits a parameter of the 4-bit linear weights takes as stored (codes and scales); `None`
    /// when none is in 4 bits.
    pub fn linear_bits(&self) -> Option<f64> {
        let (mut params, mut bytes) = (0usize, 0usize);
        for (_, l) in self.arch.linears() {
            if let layers::Base::Quant(q) = &l.base {
                params += q.layout.numel();
                bytes += q.layout.storage_bytes();
            }
        }
        (params > 0).then(|| 8.0 * bytes as f64 / params as f64)
    }

    /// The GGUF types of the linear weights kept in 8-bit codes ("q8_0", "q6_k", or both as
    /// "q6_k+q8_0", as the summary names 4-bit types); `None` when none is.
    pub fn kept8_names(&self) -> Option<String> {
        let mut names: Vec<String> = self
            .arch
            .linears()
            .into_iter()
            .filter_map(|(_, l)| match &l.base {
                layers::Base::Q8(q) => Some(q.kind.name().to_lowercase()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        (!names.is_empty()).then(|| names.join("+"))
    }

    /// The bytes the token embedding and an untied output head save, where a GGUF file's 8-bit
    /// codes keep them (against f32); `None` when both are f32.
    pub fn kept8_saved_bytes(&self) -> Option<f64> {
        let Arch::Llama(m) = &self.arch else { return None };
        let embed = match &m.embed_tokens {
            layers::Embedding::Q8(q) => Some(&*q.codes),
            layers::Embedding::Dense(_) => None,
        };
        let head = m.lm_head.as_ref().and_then(|h| match &h.base {
            layers::Base::Q8(q) => Some(&*q.codes),
            _ => None,
        });
        let saved: usize = embed.into_iter().chain(head).map(|q| 4 * q.numel() - q.storage_bytes()).sum();
        (saved > 0).then_some(saved as f64)
    }

    /// Bits a parameter of the linear weights kept in 8-bit codes takes (codes and scales), over
    /// the linear weights a LoRA run leaves frozen as they are; `None` when none is kept so.
    pub fn kept8_bits(&self) -> Option<f64> {
        let (mut params, mut bytes, mut all) = (0usize, 0usize, 0usize);
        for (_, l) in self.arch.linears() {
            let n = l.d_in() * l.d_out();
            all += n;
            match &l.base {
                layers::Base::Q8(q) => {
                    params += n;
                    bytes += q.storage_bytes();
                }
                layers::Base::Dense(_) => bytes += 4 * n,
                layers::Base::Quant(_) => return None,
            }
        }
        (params > 0).then(|| 8.0 * bytes as f64 / all as f64)
    }

    /// Keep the linear weights and an untied output head in bfloat16 where every value of them
    /// is a bfloat16 (a checkpoint stored in bf16, or in f32 upcast from bf16, as many are) and
    /// the model runs on the CPU engine. Decoding reads every weight once a token and is bound
    /// by memory bandwidth, so half the bytes is up to twice the tokens/s; the products widen
    /// each weight to f32 and sum in f32, so the values are the checkpoint's own and only the
    /// order of the sums changes. A weight with any other value stays f32: nothing is rounded.
    /// For generation: training, merging and saving take f32 bases. Returns how many tensors it
    /// kept (0 on a GPU).
    pub fn keep_bf16_weights(&mut self) -> usize {
        if !crate::device::is_cpu(&self.device) {
            return 0;
        }
        let is_bf16 = |v: &[f32]| v.iter().all(|x| x.to_bits() & 0xFFFF == 0);
        // `[in, out]` views of `[out, in]` buffers, as the checkpoint stores them: decoding's
        // kernel streams each output's weights front to back (`blas::bf16_matmul`).
        let device = self.device.clone();
        let bf16 = |w: &mut Tensor<2>| {
            if w.dtype() == burn::tensor::DType::BF16 {
                return 0;
            }
            // One row first, so that an f32 model costs no copy of its weights.
            let [d_in, d_out] = w.dims();
            let first = w.clone().slice([0..d_in.min(1), 0..d_out]).into_data();
            if !first.as_slice::<f32>().is_ok_and(is_bf16) {
                return 0;
            }
            let rows = w.clone().transpose().into_data();
            if !rows.as_slice::<f32>().is_ok_and(is_bf16) {
                return 0;
            }
            *w = Tensor::<2>::from_data(rows, &device).cast(burn::tensor::FloatDType::BF16).transpose();
            1
        };
        let mut count = 0;
        for (_, linear) in self.arch.linears_mut() {
            if let layers::Base::Dense(w) = &mut linear.base {
                count += bf16(w);
            }
        }
        let head = match &mut self.arch {
            Arch::Llama(l) => l.lm_head.as_mut().and_then(|h| match &mut h.base {
                layers::Base::Dense(w) => Some(w),
                _ => None,
            }),
            Arch::Gpt2(g) => g.lm_head.as_mut(),
        };
        count += head.map_or(0, bf16);
        self.refresh_summary();
        count
    }

    /// Store every linear weight (not the embeddings or the output head, as bitsandbytes +
    /// transformers leave them) in 4 bits. Weights already in 4 bits stay as they are; those kept
    /// in 8-bit codes (GGUF) are quantized from their values.
    /// Returns how many were quantized.
    pub async fn quantize_linears(&mut self, cfg: crate::quant::bnb::QuantConfig) -> Result<usize> {
        let device = self.device.clone();
        let mut count = 0;
        for (path, linear) in self.arch.linears_mut() {
            let (values, d_in, d_out) = match &linear.base {
                layers::Base::Dense(w) => {
                    let [d_in, d_out] = w.dims();
                    // [in, out] on the device; bitsandbytes quantizes nn.Linear's [out, in].
                    (read_f32(w.clone().transpose()).await?, d_in, d_out)
                }
                // Kept in 8-bit codes (GGUF): its values, stored in 4 bits as asked.
                layers::Base::Q8(q) => (q.dequantize(), q.shape[1], q.shape[0]),
                layers::Base::Quant(_) => continue,
            };
            let q = crate::quant::Quant4::quantize(&values, [d_out, d_in], cfg.quant_type, cfg.double_quant)
                .map_err(|e| Error::input(format!("{path}: {e}")))?;
            linear.base = layers::Base::Quant(crate::quant::Q4Tensor::new(&q, &device));
            count += 1;
        }
        self.refresh_summary();
        Ok(count)
    }

    /// Bring every 4-bit or 8-bit linear weight, and a token embedding kept in 8-bit codes, back
    /// to dense f32 (for full and partial finetuning, which train the weights themselves).
    /// Returns how many were dequantized.
    pub fn dequantize_linears(&mut self) -> usize {
        let mut count = 0;
        for (_, linear) in self.arch.linears_mut() {
            if linear.is_quantized() {
                linear.base = layers::Base::Dense(linear.weight());
                count += 1;
            }
        }
        if let Arch::Llama(m) = &mut self.arch {
            if let layers::Embedding::Q8(_) = &m.embed_tokens {
                m.embed_tokens = layers::Embedding::Dense(m.embed_tokens.weight());
                count += 1;
            }
            if let Some(head) = m.lm_head.as_mut().filter(|h| h.is_quantized()) {
                head.base = layers::Base::Dense(head.weight());
                count += 1;
            }
        }
        self.refresh_summary();
        count
    }
}
