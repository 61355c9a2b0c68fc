//! One fuzz target per parser of untrusted input. Each takes raw bytes and feeds them to the
//! same entry point the CLI and the page use; an `Err` is a fine answer, a panic (or an abort) is
//! a defect. Shared by the stable fuzzer (`examples/fuzz.rs`) and the property tests
//! (`tests/props.rs`), so both exercise the same code.

#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use tinytune::lora::peft::PeftAdapter;
use tinytune::model::load::ModelFiles;
use tinytune::model::tokenizer::Tokenizer;
use tinytune::model::{Model, config::ModelConfig};
use tinytune::train::chat::{ChatTemplate, Message};
use tinytune::train::data::{DataOptions, OnBadLine, load_dataset};
use tinytune::train::run::RunConfig;

/// Separates the parts of a target that reads two files (`a SEP b`).
pub const SEP: &[u8] = b"\n--8<--\n";

pub type Target = fn(&[u8]) -> Result<(), String>;

/// Every target, by name (the corpus folder under `fuzz/corpus/`).
pub const TARGETS: [(&str, Target); 9] = [
    ("safetensors", safetensors),
    ("config", config),
    ("tokenizer", tokenizer),
    ("adapter", adapter),
    ("run_toml", run_toml),
    ("data", data),
    ("chat_template", chat_template),
    ("quant_state", quant_state),
    ("gguf", gguf),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn split(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.windows(SEP.len()).position(|w| w == SEP) {
        Some(i) => (&bytes[..i], Some(&bytes[i + SEP.len()..])),
        None => (bytes, None),
    }
}

fn fixtures() -> &'static Path {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// The tiny model every weight target loads into: tiny-llama's tokenizer (512 tokens), width 8.
pub const TINY_CONFIG: &str = r#"{"model_type": "llama", "vocab_size": 512, "hidden_size": 8, "intermediate_size": 16,
"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
"max_position_embeddings": 64, "tie_word_embeddings": false}"#;

/// TINY_CONFIG with 4-bit linear weights, as transformers writes it.
pub fn tiny_config_4bit() -> String {
    let mut c: serde_json::Value = serde_json::from_str(TINY_CONFIG).unwrap();
    c["quantization_config"] = serde_json::json!({
        "quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": true, "bnb_4bit_compute_dtype": "float32"
    });
    c.to_string()
}

pub fn tiny_tokenizer_json() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| std::fs::read(fixtures().join("tiny-llama/tokenizer.json")).unwrap())
}

fn tokenizer_of_tiny_llama() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let config = std::fs::read_to_string(fixtures().join("tiny-llama/config.json")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&config).unwrap();
        Tokenizer::from_files(Some(tiny_tokenizer_json()), None, None, &value, 512).unwrap()
    })
}

fn device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// A model folder's safetensors file: the header, the tensor table, dtypes and shapes against
/// the config.
pub fn safetensors(bytes: &[u8]) -> Result<(), String> {
    weights(TINY_CONFIG, bytes)
}

/// The 4-bit (bitsandbytes) form: the quant state JSON, absmax, maps, packed codes.
pub fn quant_state(bytes: &[u8]) -> Result<(), String> {
    weights(&tiny_config_4bit(), bytes)
}

fn weights(config_json: &str, bytes: &[u8]) -> Result<(), String> {
    let config = ModelConfig::from_json(config_json).map_err(|e| e.to_string())?;
    let files = ModelFiles {
        config: config_json.to_string(),
        weights: vec![("model.safetensors".into(), bytes.to_vec())],
        ..ModelFiles::default()
    };
    tinytune::model::load::build(&files, &config, &device()).map(drop).map_err(|e| e.to_string())
}

/// `config.json`.
pub fn config(bytes: &[u8]) -> Result<(), String> {
    ModelConfig::from_json(&text(bytes)).map(drop).map_err(|e| e.to_string())
}

/// `tokenizer.json SEP tokenizer_config.json`, then a text encoded and decoded.
pub fn tokenizer(bytes: &[u8]) -> Result<(), String> {
    let (tok, cfg) = split(bytes);
    let cfg = cfg.map(text);
    let model_config = serde_json::json!({});
    let t = Tokenizer::from_files(Some(tok), cfg.as_deref(), None, &model_config, 4096).map_err(|e| e.to_string())?;
    let ids = t.encode("Hello, world: <s> ünïcödé 123", true).map_err(|e| e.to_string())?;
    t.decode(&ids).map(drop).map_err(|e| e.to_string())
}

/// The model adapters are loaded into (tiny-llama's shapes), built once.
fn adapter_model() -> &'static std::sync::Mutex<Model> {
    static M: OnceLock<std::sync::Mutex<Model>> = OnceLock::new();
    M.get_or_init(|| std::sync::Mutex::new(Model::load_dir(&fixtures().join("tiny-llama"), &device()).unwrap()))
}

/// `adapter_config.json SEP adapter_model.safetensors`, loaded into tiny-llama and removed.
pub fn adapter(bytes: &[u8]) -> Result<(), String> {
    let (config, weights) = split(bytes);
    let adapter = PeftAdapter::from_bytes(&text(config), weights.unwrap_or(b"")).map_err(|e| e.to_string())?;
    let mut model = adapter_model().lock().unwrap_or_else(|e| e.into_inner());
    let loaded = adapter.load_into(&mut model, "fuzz");
    tinytune::lora::remove(&mut model, "fuzz");
    loaded.map(drop).map_err(|e| e.to_string())
}

/// `run.toml`, and the run it describes checked as `tinytune train` checks it.
pub fn run_toml(bytes: &[u8]) -> Result<(), String> {
    let run = RunConfig::from_toml(&text(bytes)).map_err(|e| e.to_string())?;
    run.train_config().validate().map_err(|e| e.to_string())
}

/// A data file: the first byte picks the format (text, JSONL, JSON array), the rest is the file.
pub fn data(bytes: &[u8]) -> Result<(), String> {
    let Some((&kind, rest)) = bytes.split_first() else { return Ok(()) };
    let name = ["data.txt", "data.jsonl", "data.json"][kind as usize % 3];
    let opts = DataOptions { seq_len: 32, train_on_prompt: kind & 4 != 0, on_bad_line: if kind & 8 != 0 { OnBadLine::Skip } else { OnBadLine::Stop } };
    load_dataset(name, &text(rest), tokenizer_of_tiny_llama(), &opts).map(drop).map_err(|e| e.to_string())
}

/// A chat template, rendered for a two-turn conversation and turned into training targets.
pub fn chat_template(bytes: &[u8]) -> Result<(), String> {
    let mut tok = tokenizer_of_tiny_llama().clone();
    tok.chat_template = Some(text(bytes));
    let t = ChatTemplate::new(&tok).map_err(|e| e.to_string())?;
    let messages = [
        Message { role: "system".into(), content: "Be brief.".into() },
        Message { role: "user".into(), content: "Where is the cup?".into() },
        Message { role: "assistant".into(), content: "In the kitchen.".into() },
    ];
    t.render(&messages, true).map_err(|e| e.to_string())?;
    t.encode(&tok, &messages[..2], true).map(drop).map_err(|e| e.to_string())
}

/// A GGUF file: header, metadata, tensor table, every tensor dequantized; a parsed file with a
/// tokenizer is also converted to the Hugging Face form.
pub fn gguf(bytes: &[u8]) -> Result<(), String> {
    let g = tinytune::model::gguf::Gguf::parse(bytes).map_err(|e| e.to_string())?;
    for t in &g.tensors {
        tinytune::model::gguf::dequantize(t, bytes).map_err(|e| e.to_string())?;
    }
    if g.get("tokenizer.ggml.tokens").is_some() && bytes.len() < 200_000 {
        tinytune::model::gguf::to_model_files(bytes).map(drop).map_err(|e| e.to_string())?;
    }
    Ok(())
}
