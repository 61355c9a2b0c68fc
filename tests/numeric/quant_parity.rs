//! 4-bit weights on every device: the dequantization kernel equals the CPU path bit for bit,
//! the fused kernel agrees with dequantize-then-multiply, and 4-bit models give the losses
//! transformers + bitsandbytes (and PEFT over them) computed in f32.

use burn::tensor::{Tensor, TensorData};
use futures_lite::future::block_on;
use serde_json::Value;
use tinytune::lora::peft::PeftAdapter;
use tinytune::model::{Model, read_f32};
use tinytune::quant::kernels::{dequantize_words, pack};
use tinytune::quant::{Q4Tensor, QuantType, Quant4};

use crate::{device_under_test, fixture};

fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.2
        })
        .collect()
}

/// The real weights the parity covers, besides random ones: the built-in model's largest.
fn builtin_weight() -> (Vec<f32>, [usize; 2]) {
    let bytes = std::fs::read(fixture("../../www/assets/builtin/model/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("model.layers.0.mlp.down_proj.weight").unwrap();
    let shape = [v.shape()[0], v.shape()[1]];
    (v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), shape)
}

#[test]
fn the_dequantization_kernel_equals_the_cpu_path_bit_for_bit() {
    let device = device_under_test().device;
    let mut cases: Vec<(Vec<f32>, [usize; 2])> = vec![
        (matrix(64, 64, 1), [64, 64]),
        (matrix(37, 100, 2), [37, 100]), // 3700 values: a partial last block
        (matrix(7, 9, 3), [7, 9]),       // odd: the padded nibble
        (vec![0.0; 256], [4, 64]),       // all-zero blocks
        builtin_weight(),
    ];
    // Enough blocks for a second-level block of 256 and the dispatch's second dimension.
    cases.push((matrix(300, 256, 4), [300, 256]));
    for (values, shape) in &cases {
        for (qt, dq) in [(QuantType::Nf4, true), (QuantType::Nf4, false), (QuantType::Fp4, true), (QuantType::Fp4, false), (QuantType::Q4_0, false), (QuantType::Q4_1, false), (QuantType::Q4K, false)] {
            let q = Quant4::quantize(values, *shape, qt, dq).unwrap();
            let (words, layout) = pack(&q);
            let cpu: Vec<u32> = dequantize_words(&words, &layout).iter().map(|v| v.to_bits()).collect();
            let reference: Vec<u32> = q.dequantize().iter().map(|v| v.to_bits()).collect();
            assert_eq!(cpu, reference, "{shape:?} {qt:?} dq {dq}: CPU path vs reference");
            let on_device = Q4Tensor::new(&q, &device);
            let got: Vec<u32> = block_on(read_f32(on_device.dequantize())).unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(got.len(), cpu.len());
            let first = got.iter().zip(&cpu).position(|(a, b)| a != b);
            assert!(first.is_none(), "{shape:?} {qt:?} dq {dq}: device and CPU differ first at {first:?}");
        }
    }
}

#[test]
fn the_fused_kernel_agrees_with_dequantize_then_multiply() {
    // Summation order differs (a workgroup tree vs the matmul's tiles) and WGSL may fuse
    // multiply-adds, so this is a tolerance, relative to the output's scale.
    let device = device_under_test().device;
    // GGUF's Q4_1 adds a term a block of 32.
    for (rows_x, out, cols, qt) in [(1, 96, 64, QuantType::Nf4), (3, 130, 200, QuantType::Nf4), (8, 64, 256, QuantType::Nf4), (2, 70, 320, QuantType::Q4_1)] {
        let q = Quant4::quantize(&matrix(out, cols, 7), [out, cols], qt, true).unwrap();
        let t = Q4Tensor::new(&q, &device);
        let x = Tensor::<2>::from_data(TensorData::new(matrix(rows_x, cols, 8), [rows_x, cols]), &device);
        let fused = block_on(read_f32(t.linear(x.clone(), true))).unwrap();
        let plain = block_on(read_f32(x.matmul(t.dequantize().transpose()))).unwrap();
        let scale = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = fused.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-5 * scale.max(1.0), "{qt:?} [{rows_x}, {cols}]·[{out}, {cols}]ᵀ: max |Δ| {diff}");
    }
}

fn reference_loss(dir: &str) -> f64 {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture(dir).join("reference.json")).unwrap()).unwrap();
    r["eval"]["loss"].as_f64().unwrap()
}

fn eval_texts() -> Vec<String> {
    tinytune::train::data::read_texts(&fixture("corpus/eval.jsonl")).unwrap()
}

#[test]
fn four_bit_models_saved_by_transformers_evaluate_to_transformers_loss_within_1e_4() {
    let device = device_under_test();
    for (dir, quant) in [("quant/tiny-llama-nf4", "nf4+dq"), ("quant/tiny-gpt2-fp4", "fp4"), ("quant/tiny-llama-tt-nf4", "nf4+dq")] {
        let model = Model::load_dir(&fixture(dir), &device.device).unwrap();
        assert_eq!(model.summary.quantization.as_deref(), Some(quant), "{dir}");
        let got = block_on(tinytune::eval::eval_loss(&model, &eval_texts(), 128, |_, _| {})).unwrap();
        let want = reference_loss(dir);
        assert!((got.loss - want).abs() < 1e-4, "{dir}: loss {} vs transformers {want}", got.loss);
    }
}

#[test]
fn a_qlora_adapter_gives_the_loss_peft_gives_over_the_bitsandbytes_base() {
    let device = device_under_test();
    let mut model = Model::load_dir(&fixture("quant/tiny-llama-nf4"), &device.device).unwrap();
    PeftAdapter::read_dir(&fixture("quant/qlora-adapter")).unwrap().load_into(&mut model, "default").unwrap();
    let got = block_on(tinytune::eval::eval_loss(&model, &eval_texts(), 128, |_, _| {})).unwrap();
    let want = reference_loss("quant/qlora-adapter");
    assert!((got.loss - want).abs() < 1e-4, "loss {} vs PEFT {want}", got.loss);
    // And the adapter matters: without it the loss is the base's.
    tinytune::lora::set_active(&mut model, &[]);
    let base = block_on(tinytune::eval::eval_loss(&model, &eval_texts(), 128, |_, _| {})).unwrap();
    assert!((base.loss - reference_loss("quant/tiny-llama-nf4")).abs() < 1e-4);
    assert!((base.loss - got.loss).abs() > 1e-3, "the adapter changes nothing: {} vs {}", base.loss, got.loss);
}
