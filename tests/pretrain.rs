//! `tinytune pretrain` on a very small config: the loss falls, and the output is a model folder
//! that `tinytune eval` and `tinytune generate` load.

mod common;
use common::Scratch;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tinytune")).current_dir(env!("CARGO_MANIFEST_DIR")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn pretraining_a_tiny_llama_lowers_the_loss_and_writes_a_loadable_model() {
    let dir = Scratch::dir("pretrain");
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"model_type": "llama", "vocab_size": 0, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true}"#).unwrap();
    let out = dir.join("model");
    let (ok, stdout, stderr) = run(&[
        "pretrain", "--device", "cpu", "--config", config.to_str().unwrap(), "--vocab-size", "400",
        "--data", "tests/fixtures/corpus/train.txt", "--out", out.to_str().unwrap(),
        "--steps", "40", "--batch-size", "8", "--seq-len", "64", "--warmup", "5", "--lr", "3e-3",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pretrained 40 steps"), "{stdout}");
    let losses: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("loss")?.as_f64())
        .collect();
    assert_eq!(losses.len(), 40);
    // From ln(400) ≈ 6.0 for a random model to clearly below it.
    assert!(losses[0] > 5.5 && losses[39] < losses[0] - 1.0, "losses {} -> {}", losses[0], losses[39]);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 400, "the config takes the trained tokenizer's size");
    let (ok, stdout, stderr) = run(&["eval", "--device", "cpu", "--model", out.to_str().unwrap(), "--data", "tests/fixtures/corpus/eval.jsonl", "--json"]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["loss"].as_f64().unwrap() < 5.0, "{report}");
    let (ok, _, stderr) = run(&["generate", "--device", "cpu", "--model", out.to_str().unwrap(), "--prompt", "The", "--max-new-tokens", "8"]);
    assert!(ok, "{stderr}");
    assert!(Path::new(&out).join("init/model.safetensors").exists(), "the random starting point is kept");
}
