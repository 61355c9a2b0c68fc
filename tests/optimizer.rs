//! The optimizer, the schedule, gradient accumulation and clipping against PyTorch: the same
//! micro-batches from the same adapter give PyTorch's losses, learning rates, gradient norms and
//! final adapter (`tests/fixtures/make_train_fixtures.py`) within 1e-5.

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use serde_json::Value;
use tinytune::lora::peft::PeftAdapter;
use tinytune::model::load::transpose;
use tinytune::lora::LoraConfig;
use tinytune::model::{Model, read_f32};
use tinytune::train::batch::Batch;
use tinytune::train::trainer::{Method, Optimizer, Schedule, TrainConfig, Trainer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn batches() -> Vec<Vec<Batch>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(fixture("train/batches.json")).unwrap()).unwrap();
    let rows = |x: &Value| -> Vec<Vec<u32>> { x.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect()).collect() };
    v.as_array()
        .unwrap()
        .iter()
        .map(|step| {
            step.as_array()
                .unwrap()
                .iter()
                .map(|mb| {
                    let weights: Vec<Vec<f32>> = mb["weights"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|w| w.as_f64().unwrap() as f32).collect()).collect();
                    Batch { ids: rows(&mb["ids"]), targets: rows(&mb["targets"]), pad: weights.iter().map(|r| r.iter().map(|w| *w > 0.0).collect()).collect(), weights }
                })
                .collect()
        })
        .collect()
}

fn trainer(model: &mut Model) -> Trainer {
    trainer_with(model, |_| {})
}

fn trainer_with(model: &mut Model, edit: impl FnOnce(&mut TrainConfig)) -> Trainer {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture("train/reference.json")).unwrap()).unwrap();
    let s = &r["settings"];
    let f = |k: &str| s[k].as_f64().unwrap();
    let cfg = TrainConfig {
        method: Method::Lora,
        lora: LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() },
        optimizer: Optimizer::Adamw,
        lr: f("lr"),
        beta1: s["betas"][0].as_f64().unwrap(),
        beta2: s["betas"][1].as_f64().unwrap(),
        eps: f("eps"),
        weight_decay: f("weight_decay"),
        schedule: Schedule::Cosine,
        warmup: s["warmup"].as_u64().unwrap() as usize,
        steps: s["steps"].as_u64().unwrap() as usize,
        grad_accum: s["grad_accum"].as_u64().unwrap() as usize,
        max_grad_norm: f("max_grad_norm"),
        batch_size: 2,
        seq_len: 24,
        ..TrainConfig::default()
    };
    let mut cfg = cfg;
    edit(&mut cfg);
    let one = tinytune::train::data::Example::new(vec![1, 2, 3], vec![true; 3]);
    Trainer::new(model, cfg, vec![one]).unwrap()
}

#[test]
fn adamw_warmup_cosine_accumulation_and_clipping_match_pytorch_within_1e_5() {
    let mut model = Model::load_dir(&fixture("tiny-llama"), &burn::tensor::Device::flex().autodiff()).unwrap();
    PeftAdapter::read_dir(&fixture("train/adapter_init")).unwrap().load_into(&mut model, "default").unwrap();
    let mut t = trainer(&mut model);
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fixture("train/reference.json")).unwrap()).unwrap();
    for (i, (micro, want)) in batches().into_iter().zip(reference["steps"].as_array().unwrap()).enumerate() {
        let r = block_on(t.step_on(&mut model, micro)).unwrap();
        for (what, got, want) in [("loss", r.loss, &want["loss"]), ("lr", r.lr, &want["lr"]), ("grad norm", r.grad_norm, &want["grad_norm"])] {
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() < 1e-5, "step {}: {what} {got} vs PyTorch {want}", i + 1);
        }
    }
    let bytes = std::fs::read(fixture("train/adapter_final.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut checked = 0;
    for (path, l) in model.arch.linears() {
        let a = l.adapter("default").unwrap();
        let (d_in, d_out, r) = (l.d_in(), l.d_out(), a.rank());
        let got_a = transpose(&block_on(read_f32(a.a.clone())).unwrap(), d_in, r);
        let got_b = transpose(&block_on(read_f32(a.b.clone())).unwrap(), r, d_out);
        for (which, got) in [("lora_A", got_a), ("lora_B", got_b)] {
            let v = st.tensor(&format!("base_model.model.{path}.{which}.weight")).unwrap();
            let want: Vec<f32> = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let diff = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{path}.{which}: max |Δ| {diff:e} from PyTorch");
            checked += 1;
        }
    }
    assert_eq!(checked, 28);
}

#[test]
fn a_step_the_nan_guard_skipped_does_not_count_in_adamw_s_bias_correction() {
    // Skip one step (a NaN in the factors), put the factors back, take a step: it must move the
    // adapter exactly as a fresh run's first step does (PyTorch counts only the steps taken).
    let device = burn::tensor::Device::flex().autodiff();
    let load = || {
        let mut m = Model::load_dir(&fixture("tiny-llama"), &device).unwrap();
        PeftAdapter::read_dir(&fixture("train/adapter_init")).unwrap().load_into(&mut m, "default").unwrap();
        m
    };
    let micro = || batches().into_iter().nth(3).unwrap();
    let b_after = |m: &Model| block_on(read_f32(m.arch.linears()[0].1.adapter("default").unwrap().b.clone())).unwrap();

    // A constant learning rate, so the two runs' updates differ only in the bias correction.
    let constant = |c: &mut TrainConfig| {
        c.schedule = Schedule::Constant;
        c.warmup = 0;
    };
    let mut fresh = load();
    let mut t1 = trainer_with(&mut fresh, constant);
    assert!(!block_on(t1.step_on(&mut fresh, micro())).unwrap().skipped);

    let mut skipped = load();
    let mut t2 = trainer_with(&mut skipped, constant);
    let saved = skipped.arch.linears()[0].1.adapter("default").unwrap().a.clone();
    let shape = saved.dims();
    let values = block_on(read_f32(saved.clone())).unwrap();
    let leaf = |v: Vec<f32>| burn::tensor::Tensor::<2>::from_data(burn::tensor::TensorData::new(v, shape), &device).require_grad();
    skipped.arch.linears_mut()[0].1.adapter_mut("default").unwrap().a = leaf(vec![f32::NAN; values.len()]);
    assert!(block_on(t2.step_on(&mut skipped, micro())).unwrap().skipped);
    skipped.arch.linears_mut()[0].1.adapter_mut("default").unwrap().a = leaf(values);
    assert!(!block_on(t2.step_on(&mut skipped, micro())).unwrap().skipped);
    assert_eq!(t2.cursor.taken, 1);
    let (x, y) = (b_after(&fresh), b_after(&skipped));
    assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-7), "the update after a skipped step differs from a first step");
    assert!(x.iter().any(|v| *v != 0.0), "the step moved B");
}

#[test]
fn weight_decay_skips_biases_and_norm_weights_as_hugging_face_s_trainer_does() {
    // A full-finetuning step whose loss has no tokens: every gradient is zero, so AdamW moves a
    // weight only by its decoupled decay, W ← W·(1 − lr·wd). Biases and norm weights must not move.
    for model_name in ["tiny-qwen2", "tiny-gpt2"] {
        let mut model = Model::load_dir(&fixture(model_name), &burn::tensor::Device::flex().autodiff()).unwrap();
        let before: Vec<(String, Vec<f32>)> = model
            .weight_keys(None)
            .into_iter()
            .map(|k| {
                let v = model.with_weight_mut(&k, |t| block_on(read_f32(t.clone())).unwrap()).unwrap();
                (k, v)
            })
            .collect();
        let mut t = trainer_with(&mut model, |c| {
            c.method = Method::Full;
            c.schedule = Schedule::Constant;
            c.warmup = 0;
            c.lr = 0.1;
            c.weight_decay = 0.5;
        });
        let silent = Batch { ids: vec![vec![1, 2, 3]], targets: vec![vec![2, 3, 4]], weights: vec![vec![0.0; 3]], pad: vec![vec![true; 3]] };
        block_on(t.step_on(&mut model, vec![silent])).unwrap();
        let mut decayed = 0;
        for (k, v) in before {
            let after = model.with_weight_mut(&k, |t| block_on(read_f32(t.clone())).unwrap()).unwrap();
            let exempt = k.ends_with(".bias") || k.contains("norm") || k.contains(".ln_");
            let factor = if exempt { 1.0 } else { 1.0 - 0.1 * 0.5 };
            for (a, b) in after.iter().zip(&v) {
                assert!((a - b * factor).abs() <= 1e-6 * b.abs().max(1.0), "{model_name} {k}: {b} → {a}, want ×{factor}");
            }
            decayed += (!exempt) as usize;
        }
        assert!(decayed > 0);
    }
}
