//! Each broken model folder or data file gives a clear error, never a panic.

mod common;
use common::Scratch;

use std::path::{Path, PathBuf};

use tinytune::model::Model;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A copy of the tiny Llama fixture, changed by `edit`.
fn broken_copy(tag: &str, edit: impl FnOnce(&Path)) -> Scratch {
    let dir = Scratch::dir(&format!("broken-{tag}"));
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(fixture("tiny-llama").join(f), dir.join(f)).unwrap();
    }
    edit(&dir);
    dir
}

fn load_error(dir: &Path) -> String {
    match Model::load_dir(dir, &burn::tensor::Device::flex()) {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_intact_fixture_loads() {
    let model = Model::load_dir(&broken_copy("intact", |_| {}), &burn::tensor::Device::flex()).unwrap();
    assert_eq!(model.summary.model_type, "llama");
    assert_eq!((model.summary.layers, model.summary.heads, model.summary.kv_heads), (2, 4, 2));
}

#[test]
fn a_truncated_safetensors_file_is_named_as_damaged() {
    let dir = broken_copy("truncated", |d| {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    });
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors is damaged or truncated"), "{err}");
}

#[test]
fn a_tensor_of_the_wrong_shape_names_the_tensor_and_both_shapes() {
    // Claim a wider MLP than the weights have.
    let dir = broken_copy("shape", |d| {
        let text = std::fs::read_to_string(d.join("config.json")).unwrap();
        std::fs::write(d.join("config.json"), text.replace("\"intermediate_size\": 160", "\"intermediate_size\": 128")).unwrap();
    });
    let err = load_error(&dir);
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight"), "{err}");
    assert!(err.contains("[160, 64]") && err.contains("[128, 64]"), "{err}");
}

#[test]
fn a_missing_tokenizer_is_named() {
    let dir = broken_copy("notok", |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap());
    let err = load_error(&dir);
    assert!(err.contains("tokenizer.json is missing"), "{err}");
}

#[test]
fn an_unknown_model_type_lists_the_supported_ones() {
    let dir = broken_copy("type", |d| {
        let text = std::fs::read_to_string(d.join("config.json")).unwrap();
        std::fs::write(d.join("config.json"), text.replace("\"model_type\": \"llama\"", "\"model_type\": \"mamba\"")).unwrap();
    });
    let err = load_error(&dir);
    assert!(err.contains("\"mamba\"") && err.contains("gpt2, llama, mistral, qwen2"), "{err}");
}

#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_refused() {
    let dir = broken_copy("vocab", |d| {
        let text = std::fs::read_to_string(d.join("config.json")).unwrap();
        std::fs::write(d.join("config.json"), text.replace("\"vocab_size\": 512", "\"vocab_size\": 300")).unwrap();
    });
    let err = load_error(&dir);
    assert!(err.contains("tokenizer.json has 512 tokens but config.json says vocab_size 300"), "{err}");
}

#[test]
fn a_missing_folder_says_what_it_should_hold() {
    let err = load_error(Path::new("/no/such/model"));
    assert!(err.contains("does not exist") && err.contains("config.json"), "{err}");
}

#[test]
fn a_folder_that_holds_the_model_folder_names_it() {
    let outer = Scratch::dir("outer");
    let inner = outer.join("model");
    std::fs::create_dir(&inner).unwrap();
    std::fs::copy(fixture("tiny-llama").join("config.json"), inner.join("config.json")).unwrap();
    let err = load_error(&outer);
    assert!(err.contains("config.json is missing") && err.contains(&inner.display().to_string()), "{err}");
}

#[test]
fn eval_names_the_line_that_is_not_json() {
    let dir = Scratch::dir("bad-jsonl");
    let path = dir.join("bad.jsonl");
    std::fs::write(&path, "{\"text\": \"fine\"}\n{\"text\": \"also fine\"}\nnot json at all\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tinytune"))
        .args(["eval", "--device", "cpu", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--data")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3: not valid JSON"), "{stderr}");
}

#[test]
fn a_tensor_larger_than_the_gpu_can_bind_is_explained() {
    let files = tinytune::model::ModelFiles::from_dir(&fixture("tiny-llama")).unwrap();
    let (key, n) = files.largest_tensor().unwrap();
    // The embedding and the head are 512 × 64 = 32768 values, the largest in this model.
    assert_eq!(n, 32768, "{key}");
    let tight = tinytune::device::DeviceLimits { max_buffer_size: 1 << 30, max_storage_buffer_binding_size: 100_000, ..Default::default() };
    let err = files.check_fits(&tight).unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("max_storage_buffer_binding_size") && err.contains("gpu=off"), "{err}");
    let roomy = tinytune::device::DeviceLimits { max_buffer_size: 1 << 30, max_storage_buffer_binding_size: 1 << 30, ..Default::default() };
    files.check_fits(&roomy).unwrap();
}

#[test]
fn a_sharded_checkpoint_with_an_index_loads_and_evaluates_like_the_single_file() {
    // Split the tiny Llama's weights into two shards named by model.safetensors.index.json.
    let dir = broken_copy("shards", |d| {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let half = tensors.len() / 2;
        let (first, second) = tensors.split_at(half);
        let mut map = serde_json::Map::new();
        for (name, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
            std::fs::write(d.join(name), safetensors::serialize(part.to_vec(), None).unwrap()).unwrap();
            for (k, _) in part {
                map.insert(k.clone(), name.into());
            }
        }
        std::fs::remove_file(d.join("model.safetensors")).unwrap();
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    });
    let model = Model::load_dir(&dir, &burn::tensor::Device::flex()).unwrap();
    let texts = tinytune::train::data::read_texts(&fixture("corpus/eval.jsonl")).unwrap();
    let report = futures_lite::future::block_on(tinytune::eval::eval_loss(&model, &texts, 1024, |_, _| {})).unwrap();
    // transformers' loss for this model (tests/fixtures/tiny-llama/reference.json).
    assert!((report.loss - 0.8362556882736777).abs() < 1e-4, "{}", report.loss);
    // A shard the index names but that is missing is named.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model-00002-of-00002.safetensors") && err.contains("missing"), "{err}");
}

#[test]
fn a_chat_template_jinja_file_is_read_when_tokenizer_config_has_none() {
    let template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
    let dir = broken_copy("jinja", |d| {
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("tokenizer_config.json")).unwrap()).unwrap();
        cfg.as_object_mut().unwrap().remove("chat_template");
        std::fs::write(d.join("tokenizer_config.json"), cfg.to_string()).unwrap();
        std::fs::write(d.join("chat_template.jinja"), template).unwrap();
    });
    let model = Model::load_dir(&dir, &burn::tensor::Device::flex()).unwrap();
    assert_eq!(model.tokenizer.chat_template.as_deref(), Some(template));
}

#[test]
fn an_untied_gpt2_without_its_head_is_refused_rather_than_silently_tied() {
    let dir = Scratch::dir("untied");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/edge/gpt2-relu-unscaled");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().filter(|(k, _)| k != "lm_head.weight").collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(kept, None).unwrap()).unwrap();
    let err = tinytune::model::Model::load_dir(&dir, &burn::tensor::Device::flex()).err().unwrap().to_string();
    assert!(err.contains("lm_head.weight") && err.contains("tie_word_embeddings false"), "{err}");
}

#[test]
fn a_huge_position_limit_costs_nothing_until_positions_are_used() {
    // Llama 3 configs say 131072 positions; this one says 2^26. A rotary table of the whole
    // context would be 2^26 × 16 × 2 f32 (8.6 GB); the model must load and run as tiny-llama does.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    let mut files = tinytune::model::ModelFiles::from_dir(&src).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&files.config).unwrap();
    config["max_position_embeddings"] = (1u64 << 26).into();
    files.config = config.to_string();
    let device = burn::tensor::Device::flex();
    let big = Model::load(&files, &device).unwrap();
    let small = Model::load_dir(&src, &device).unwrap();
    assert_eq!(big.context(), 1 << 26);
    let ids = small.tokenizer.encode("The old man", true).unwrap();
    let run = |m: &Model| futures_lite::future::block_on(tinytune::model::read_f32(m.forward(m.ids(&[ids.clone()]), None, None))).unwrap();
    assert_eq!(run(&big), run(&small));
}

/// tiny-llama's files with some config.json fields replaced.
fn load_with(patch: serde_json::Value) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    let mut files = tinytune::model::ModelFiles::from_dir(&src).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&files.config).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        config[k] = v.clone();
    }
    files.config = config.to_string();
    match Model::load(&files, &burn::tensor::Device::flex()) {
        Ok(_) => "loaded".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_sizes_past_the_limits_are_refused_before_anything_is_allocated() {
    // Each would otherwise ask for terabytes, overflow a product, or divide by zero.
    let cases = [
        (serde_json::json!({ "vocab_size": 1u64 << 40 }), "vocab_size is 1099511627776"),
        (serde_json::json!({ "hidden_size": 0 }), "hidden size is 0"),
        (serde_json::json!({ "num_hidden_layers": 100000 }), "number of layers is 100000"),
        (serde_json::json!({ "num_attention_heads": 0 }), "num_attention_heads is 0"),
        (serde_json::json!({ "intermediate_size": usize::MAX }), "inner size is 18446744073709551615"),
        (serde_json::json!({ "head_dim": 1u64 << 20 }), "head_dim is 1048576"),
        (serde_json::json!({ "rms_norm_eps": -1.0 }), "epsilon must be a positive number"),
        (
            serde_json::json!({ "vocab_size": 4000000, "hidden_size": 65536, "intermediate_size": 500000, "num_hidden_layers": 1000 }),
            "more than 1099511627776 parameters",
        ),
    ];
    for (patch, want) in cases {
        let err = load_with(patch.clone());
        assert!(err.contains(want) && err.starts_with("config.json"), "{patch}: {err}");
    }
    assert_eq!(load_with(serde_json::json!({})), "loaded");
}

#[test]
fn a_tokenizer_id_past_the_vocabulary_is_refused() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    let files = tinytune::model::ModelFiles::from_dir(&src).unwrap();
    let config: serde_json::Value = serde_json::from_str(&files.config).unwrap();
    // A model padded to 8 more rows than its tokens, and an added token whose id is past even
    // that (ids need not be dense): the count fits, the id does not.
    // (Ids in the model's vocabulary are kept as written.)
    let vocab = config["vocab_size"].as_u64().unwrap() + 8;
    let mut tok: serde_json::Value = serde_json::from_slice(files.tokenizer.as_ref().unwrap()).unwrap();
    tok["model"]["vocab"]["<far>"] = serde_json::json!(vocab + 100);
    let err = tinytune::model::tokenizer::Tokenizer::from_files(
        Some(tok.to_string().as_bytes()),
        None,
        None,
        &config,
        vocab as usize,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("<far>") && err.contains("vocab_size"), "{err}");
}

#[test]
fn token_ids_from_outside_are_checked_against_the_model() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    let model = Model::load_dir(&src, &burn::tensor::Device::flex()).unwrap();
    let v = model.config.vocab_size() as u32;
    assert!(model.check_ids(&[1, 2, 3]).is_ok());
    assert!(model.check_ids(&[]).unwrap_err().to_string().contains("at least one"));
    let err = model.check_ids(&[1, v, 2]).unwrap_err().to_string();
    assert!(err.contains(&format!("token id {v} (at position 1)")), "{err}");
    let too_long = vec![1u32; model.context() + 1];
    assert!(model.check_ids(&too_long).unwrap_err().to_string().contains("context"));
    // Generation checks its prompt the same way.
    let s = tinytune::generate::Sampling::default();
    let err = futures_lite::future::block_on(tinytune::generate::generate(&model, &[v + 100], &s, |_, _| true)).unwrap_err();
    assert!(err.to_string().contains("not below the vocabulary size"), "{err}");
}
