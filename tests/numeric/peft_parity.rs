//! Parity with Hugging Face PEFT: the fixture adapters (non-zero A and B, made by
//! `tests/fixtures/make_fixtures.py`) evaluate as PEFT evaluated them, and merging does not
//! change the numbers.

use futures_lite::future::block_on;
use serde_json::Value;
use tinytune::lora::{self, LoraConfig, peft::PeftAdapter};
use tinytune::model::{Model, read_f32};

use crate::{device_under_test, fixture};

const CASES: [(&str, &str, &str); 4] = [
    ("tiny-gpt2", "adapter", "adapter"),
    ("tiny-llama", "adapter", "adapter"),
    ("tiny-qwen2", "adapter", "adapter"),
    ("tiny-llama", "adapter-rslora", "adapter_rslora"),
];

fn reference(model: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(model).join("reference.json")).unwrap()).unwrap()
}

fn texts() -> Vec<String> {
    tinytune::train::data::read_texts(&fixture("corpus/eval.jsonl")).unwrap()
}

fn load_with_adapter(model: &str, adapter: &str, device: &burn::tensor::Device) -> Model {
    let mut m = Model::load_dir(&fixture(model), device).unwrap();
    let peft = PeftAdapter::read_dir(&fixture(model).join(adapter)).unwrap();
    assert!(peft.load_into(&mut m, "default").unwrap() > 0);
    m
}

fn logits_tensor(model: &str, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture(model).join("logits.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn eval_with_a_peft_adapter_matches_peft_within_1e_4() {
    let device = device_under_test();
    for (model, dir, key) in CASES {
        let m = load_with_adapter(model, dir, &device.device);
        let want = &reference(model)[key];
        let got = block_on(tinytune::eval::eval_loss(&m, &texts(), 1024, |_, _| {})).unwrap();
        let loss = want["eval"]["loss"].as_f64().unwrap();
        assert!((got.loss - loss).abs() < 1e-4, "{model}/{dir}: loss {} vs PEFT {loss}", got.loss);
        // The adapter really changes the model: its loss is not the base's.
        let base = reference(model)["eval"]["loss"].as_f64().unwrap();
        assert!((loss - base).abs() > 1e-2, "{model}/{dir}: the fixture adapter must move the loss");

        let prompt = &want["logits"];
        let ids: Vec<u32> = prompt["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = block_on(read_f32(m.forward(m.ids(&[ids]), None, None))).unwrap();
        let diff = max_abs_diff(&got, &logits_tensor(model, prompt["tensor"].as_str().unwrap()));
        assert!(diff <= 1e-4, "{model}/{dir}: logits max |Δ| {diff}");
    }
}

#[test]
fn a_merged_model_evaluates_the_same_as_base_plus_adapter() {
    let device = device_under_test();
    for (model, dir, key) in CASES {
        let mut m = load_with_adapter(model, dir, &device.device);
        let merged_layers = block_on(tinytune::merge::into_base(&mut m, "default")).unwrap();
        assert!(merged_layers > 0);
        assert!(m.arch.linears().iter().all(|(_, l)| l.adapters.is_empty()), "merge removes the adapter");
        let got = block_on(tinytune::eval::eval_loss(&m, &texts(), 1024, |_, _| {})).unwrap();
        let want = reference(model)[key]["merged_eval"]["loss"].as_f64().unwrap();
        assert!((got.loss - want).abs() < 1e-4, "{model}/{dir}: merged loss {} vs PEFT merged {want}", got.loss);
    }
}

#[test]
fn a_new_adapter_changes_nothing() {
    let device = device_under_test();
    for model in ["tiny-gpt2", "tiny-llama"] {
        let mut m = Model::load_dir(&fixture(model), &device.device).unwrap();
        let ids = m.tokenizer.encode("Once upon a time, the fox", true).unwrap();
        let before = block_on(read_f32(m.forward(m.ids(&[ids.clone()]), None, None))).unwrap();
        let cfg = LoraConfig { r: 8, ..LoraConfig::default() };
        let layers = block_on(lora::attach(&mut m, "fresh", &cfg, 7)).unwrap();
        assert_eq!(layers, m.arch.linears().len(), "all-linear adapts every linear layer");
        let after = block_on(read_f32(m.forward(m.ids(&[ids]), None, None))).unwrap();
        let diff = max_abs_diff(&before, &after);
        assert!(diff <= 1e-6, "{model}: B = 0 must leave the logits unchanged, max |Δ| {diff}");
    }
}

#[test]
fn a_pissa_adapter_starts_where_the_base_was() {
    // PiSSA moves the top singular directions of W₀ into A·B and keeps the residual in the base,
    // so the model's output is unchanged at initialisation (up to f32 rounding).
    let device = device_under_test();
    let mut m = Model::load_dir(&fixture("tiny-llama"), &device.device).unwrap();
    let ids = m.tokenizer.encode("The little fox", true).unwrap();
    let before = block_on(read_f32(m.forward(m.ids(&[ids.clone()]), None, None))).unwrap();
    let cfg = LoraConfig { r: 4, init: lora::Init::Pissa, ..LoraConfig::default() };
    block_on(lora::attach(&mut m, "pissa", &cfg, 3)).unwrap();
    let (_, l) = &m.arch.linears()[0];
    let b = block_on(read_f32(l.adapter("pissa").unwrap().b.clone())).unwrap();
    assert!(b.iter().any(|v| v.abs() > 1e-3), "PiSSA's B is not zero");
    let after = block_on(read_f32(m.forward(m.ids(&[ids]), None, None))).unwrap();
    let diff = max_abs_diff(&before, &after);
    assert!(diff <= 1e-4, "max |Δ| {diff}");
}
