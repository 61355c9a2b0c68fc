//! The shipped base model and a task: a short LoRA on the json task lifts the task metric well
//! above the base model's. (The full-length numbers are in www/assets/builtin/model/MODEL_CARD.md.)

mod common;
use common::Scratch;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_tinytune")).current_dir(env!("CARGO_MANIFEST_DIR")).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn json_task_score(adapter: Option<&str>) -> f64 {
    let mut args = vec!["eval", "--device", "cpu", "--model", "www/assets/builtin/model", "--task", "json", "--limit", "20", "--json"];
    if let Some(a) = adapter {
        args.extend(["--adapter", a]);
    }
    let report: serde_json::Value = serde_json::from_str(&run(&args)).unwrap();
    report["metrics"][0]["score"].as_f64().unwrap()
}

#[test]
fn a_short_lora_on_the_json_task_beats_the_base_model() {
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("www/assets/builtin/model/model.safetensors").exists());
    let scratch = Scratch::path("builtin-json");
    let out = scratch.to_str().unwrap();
    let before = json_task_score(None);
    run(&[
        "train", "--device", "cpu", "--model", "www/assets/builtin/model", "--data", "www/assets/builtin/tasks/json/train.jsonl",
        "--out", out, "--steps", "60", "--batch-size", "16", "--seq-len", "128", "--rank", "16", "--alpha", "32", "--lr", "2e-3",
        "--warmup", "10", "--seed", "0",
    ]);
    let after = json_task_score(Some(out));
    eprintln!("json task, valid JSON with the right keys on 20 test prompts: {before} before, {after} after 60 LoRA steps");
    assert!(after >= before + 0.3, "{before} -> {after}");
}
