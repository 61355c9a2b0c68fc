//! DPO against TRL's DPOTrainer (tests/fixtures/make_dpo_fixtures.py): the same tokenization of
//! each preference pair, and from the same adapter the same loss, reward accuracy, margin and
//! rewards at each of three AdamW steps within 1e-4 (the reference being the base with the
//! adapter off, as TRL does for a fresh PEFT adapter).

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use serde_json::Value;
use tinytune::lora::LoraConfig;
use tinytune::lora::peft::PeftAdapter;
use tinytune::model::Model;
use tinytune::train::data::{DataOptions, Format, load_dataset};
use tinytune::train::trainer::{Method, Schedule, TrainConfig, Trainer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn dpo_matches_trl_s_dpo_trainer_within_1e_4() {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fixture("dpo/reference.json")).unwrap()).unwrap();
    let mut model = Model::load_dir(&fixture("tiny-llama"), &burn::tensor::Device::flex().autodiff()).unwrap();
    let text = std::fs::read_to_string(fixture("dpo/prefs.jsonl")).unwrap();
    let data = load_dataset("prefs.jsonl", &text, &model.tokenizer, &DataOptions { seq_len: 127, ..DataOptions::default() }).unwrap();
    assert_eq!(data.format, Format::Preference);
    let pairs = reference["tokenized"].as_array().unwrap();
    assert_eq!(data.examples.len(), pairs.len());
    for (i, (e, want)) in data.examples.iter().zip(pairs).enumerate() {
        let prompt = ids(&want["prompt_ids"]);
        let rejected = e.rejected.as_deref().unwrap();
        for (row, completion) in [(e, "chosen_ids"), (rejected, "rejected_ids")] {
            let whole: Vec<u32> = prompt.iter().copied().chain(ids(&want[completion])).collect();
            assert_eq!(row.ids, whole, "pair {i}: {completion} as TRL tokenizes it");
            let learned: Vec<bool> = (0..whole.len()).map(|k| k >= prompt.len()).collect();
            assert_eq!(row.target, learned, "pair {i}: the {completion} tokens carry the loss");
        }
    }

    PeftAdapter::read_dir(&fixture("train/adapter_init")).unwrap().load_into(&mut model, "default").unwrap();
    let cfg = TrainConfig {
        method: Method::Dpo,
        lora: LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() },
        lr: reference["lr"].as_f64().unwrap(),
        schedule: Schedule::Constant,
        warmup: 0,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        steps: reference["steps"].as_u64().unwrap() as usize,
        batch_size: pairs.len(),
        seq_len: 127,
        dpo_beta: reference["beta"].as_f64().unwrap(),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&mut model, cfg, data.examples).unwrap();
    for want in reference["train"].as_array().unwrap() {
        let r = block_on(trainer.step(&mut model)).unwrap();
        let dpo = r.dpo.clone().expect("a DPO step reports its rewards");
        let step = want["step"].as_u64().unwrap();
        for (what, got, key) in [
            ("loss", r.loss, "loss"),
            ("reward accuracy", dpo.reward_accuracy, "rewards/accuracies"),
            ("reward margin", dpo.reward_margin, "rewards/margins"),
            ("chosen reward", dpo.chosen_reward, "rewards/chosen"),
            ("rejected reward", dpo.rejected_reward, "rewards/rejected"),
        ] {
            let want = want[key].as_f64().unwrap();
            assert!((got - want).abs() < 1e-4, "step {step}: {what} {got} vs TRL {want}");
        }
    }
    // The steps moved the adapter the way TRL's did: the last loss is well below ln 2.
    assert!(reference["train"][2]["loss"].as_f64().unwrap() < 0.2);
}

#[test]
fn preference_data_and_the_method_must_go_together() {
    let mut model = Model::load_dir(&fixture("tiny-llama"), &burn::tensor::Device::flex().autodiff()).unwrap();
    let text = std::fs::read_to_string(fixture("dpo/prefs.jsonl")).unwrap();
    let pairs = load_dataset("p.jsonl", &text, &model.tokenizer, &DataOptions::default()).unwrap().examples;
    let plain = load_dataset("t.jsonl", "{\"text\": \"Once upon a time\"}\n", &model.tokenizer, &DataOptions::default()).unwrap().examples;
    block_on(tinytune::lora::attach(&mut model, "default", &LoraConfig { r: 2, ..LoraConfig::default() }, 0)).unwrap();
    let cfg = |method| TrainConfig { method, steps: 1, ..TrainConfig::default() };
    let err = Trainer::new(&mut model, cfg(Method::Dpo), plain).err().unwrap().to_string();
    assert!(err.contains("DPO trains on preference pairs"), "{err}");
    let err = Trainer::new(&mut model, cfg(Method::Lora), pairs.clone()).err().unwrap().to_string();
    assert!(err.contains("train with --method dpo"), "{err}");
    let err = Trainer::new(&mut model, TrainConfig { dpo_beta: 0.0, ..cfg(Method::Dpo) }, pairs).err().unwrap().to_string();
    assert!(err.contains("beta must be positive"), "{err}");
    // A record with half a pair names the missing field.
    let err = load_dataset("p.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\"}\n", &model.tokenizer, &DataOptions::default()).unwrap_err().to_string();
    assert!(err.contains("line 1: missing the \"rejected\" field"), "{err}");
}
