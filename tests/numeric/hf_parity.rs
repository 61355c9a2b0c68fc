//! Parity with Hugging Face transformers on the tiny fixture models that
//! `tests/fixtures/make_fixtures.py` trained and measured: eval loss within 1e-4, logits
//! max |Δ| within 1e-4, greedy continuations identical.

use futures_lite::future::block_on;
use serde_json::Value;
use tinytune::generate::{Sampling, generate};
use tinytune::model::{Model, read_f32};

use crate::{device_under_test, fixture};

const MODELS: [&str; 4] = ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-llama-bf16"];

fn reference(model: &str) -> Value {
    let text = std::fs::read_to_string(fixture(model).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn eval_texts() -> Vec<String> {
    tinytune::train::data::read_texts(&fixture("corpus/eval.jsonl")).unwrap()
}

#[test]
fn eval_loss_matches_transformers_within_1e_4_for_every_architecture() {
    let device = device_under_test();
    for name in MODELS {
        let model = Model::load_dir(&fixture(name), &device.device).unwrap();
        let want = &reference(name)["eval"];
        // The tokenizer must agree first: same ids, special tokens included.
        for (text, record) in eval_texts().iter().zip(want["records"].as_array().unwrap()) {
            assert_eq!(model.tokenizer.encode(text, true).unwrap(), ids(&record["ids"]), "{name}: ids of {text:?}");
        }
        let got = block_on(tinytune::eval::eval_loss(&model, &eval_texts(), 1024, |_, _| {})).unwrap();
        let loss = want["loss"].as_f64().unwrap();
        assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap(), "{name}: predicted tokens");
        assert!((got.loss - loss).abs() < 1e-4, "{name}: loss {} vs transformers {loss}", got.loss);
    }
}

/// GGUF files in Q8_0 (tiny-qwen2's embedding is also its tied head): kept in 8-bit codes on the
/// CPU engine, widened to f32 on a GPU; either way transformers' eval loss and greedy tokens.
#[test]
fn q8_0_gguf_files_match_transformers_kept_or_widened() {
    use tinytune::model::layers::{Base, Embedding};
    let device = device_under_test();
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fixture("gguf/reference.json")).unwrap()).unwrap();
    for name in ["tiny-llama-Q8_0.gguf", "tiny-qwen2-Q8_0.gguf"] {
        let model = Model::load_dir(&fixture(&format!("gguf/{name}")), &device.device).unwrap();
        let tinytune::model::Arch::Llama(llama) = &model.arch else { unreachable!("{name} is a Llama") };
        let kept = model.arch.linears().iter().filter(|(_, l)| matches!(l.base, Base::Q8(_))).count();
        let cpu = tinytune::device::is_cpu(&device.device);
        if cpu {
            assert_eq!(kept, model.arch.linears().len(), "{name}: kept in 8-bit codes on the CPU engine");
            assert!(matches!(llama.embed_tokens, Embedding::Q8(_)), "{name}");
        } else {
            assert_eq!(kept, 0, "{name}: widened to f32 on a GPU");
            assert!(matches!(llama.embed_tokens, Embedding::Dense(_)), "{name}");
        }
        // tiny-llama's untied output head (tiny-qwen2's is its embedding).
        if let Some(head) = &llama.lm_head {
            assert_eq!(matches!(head.base, Base::Q8(_)), cpu, "{name}: the output head");
        }
        let want = &reference["models"][name];
        let got = block_on(tinytune::eval::eval_loss(&model, &eval_texts(), 1024, |_, _| {})).unwrap();
        let loss = want["eval"]["loss"].as_f64().unwrap();
        assert_eq!(got.tokens as u64, want["eval"]["tokens"].as_u64().unwrap(), "{name}: predicted tokens");
        assert!((got.loss - loss).abs() < 1e-4, "{name}: loss {} vs transformers {loss}", got.loss);
        for g in want["greedy"].as_array().unwrap() {
            let s = Sampling { max_new_tokens: reference["new_tokens"].as_u64().unwrap() as usize, temperature: 0.0, stop_at_eos: true, ..Sampling::default() };
            let (new, _) = block_on(generate(&model, &ids(&g["prompt_ids"]), &s, |_, _| true)).unwrap();
            assert_eq!(new, ids(&g["new_ids"]), "{name}: greedy after {}", g["prompt"]);
        }
    }
}

#[test]
fn logits_match_transformers_within_1e_4_for_every_architecture() {
    let device = device_under_test();
    for name in MODELS {
        let model = Model::load_dir(&fixture(name), &device.device).unwrap();
        let r = reference(name);
        let bytes = std::fs::read(fixture(name).join(r["logits"]["file"].as_str().unwrap())).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for prompt in r["logits"]["prompts"].as_array().unwrap() {
            let prompt_ids = ids(&prompt["ids"]);
            assert_eq!(model.tokenizer.encode(prompt["text"].as_str().unwrap(), true).unwrap(), prompt_ids);
            let view = st.tensor(prompt["tensor"].as_str().unwrap()).unwrap();
            let want: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let logits = model.forward(model.ids(&[prompt_ids.clone()]), None, None);
            assert_eq!(logits.dims(), [1, prompt_ids.len(), model.config.vocab_size()]);
            let got = block_on(read_f32(logits)).unwrap();
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-4, "{name} {}: logits max |Δ| {diff}", prompt["text"]);
        }
    }
}

#[test]
fn greedy_continuations_equal_transformers_token_for_token() {
    let device = device_under_test();
    for name in MODELS {
        let model = Model::load_dir(&fixture(name), &device.device).unwrap();
        for case in reference(name)["greedy"].as_array().unwrap() {
            let prompt = ids(&case["prompt_ids"]);
            let mut want = ids(&case["new_ids"]);
            if case["stopped_at_eos"].as_bool().unwrap() {
                // transformers keeps the EOS it stopped on; tinytune reports it as the stop reason.
                assert!(model.tokenizer.eos_ids.contains(&want.pop().unwrap()));
            }
            let sampling = Sampling {
                max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
                temperature: 0.0,
                ..Sampling::default()
            };
            let mut streamed = String::new();
            let (got, _) = block_on(generate(&model, &prompt, &sampling, |_, t| {
                streamed.push_str(t);
                true
            }))
            .unwrap();
            assert_eq!(got, want, "{name}: greedy after {:?}", case["prompt"]);
            assert_eq!(streamed, case["text"].as_str().unwrap(), "{name}: streamed text");
        }
    }
}

/// The bf16 checkpoint with its weights kept in bf16 (what `tinytune generate` does on the CPU
/// engine): the same logits as transformers within 1e-4 and the same greedy tokens, through
/// the one-row kernel (decoding) and the widened product (prompts longer than its row limit).
#[test]
fn bf16_weights_kept_as_stored_match_transformers() {
    let device = device_under_test();
    let name = "tiny-llama-bf16";
    let mut model = Model::load_dir(&fixture(name), &device.device).unwrap();
    let f32_bytes = model.summary.base_bytes;
    let kept = model.keep_bf16_weights();
    if device.info.kind != "cpu" {
        assert_eq!(kept, 0, "only the CPU engine keeps bf16 weights");
        return;
    }
    // 7 linear layers in each of 2 blocks, and the untied head.
    assert_eq!(kept, 15);
    // Each kept weight takes 2 bytes a value instead of 4; the embeddings and norms stay f32.
    let head = model.config.vocab_size() * model.config.hidden();
    let saved: usize = model.arch.linears().iter().map(|(_, l)| 2 * l.d_in() * l.d_out()).sum::<usize>() + 2 * head;
    assert_eq!(f32_bytes - model.summary.base_bytes, saved);
    let r = reference(name);
    let bytes = std::fs::read(fixture(name).join(r["logits"]["file"].as_str().unwrap())).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut lengths = Vec::new();
    for prompt in r["logits"]["prompts"].as_array().unwrap() {
        let prompt_ids = ids(&prompt["ids"]);
        lengths.push(prompt_ids.len());
        let view = st.tensor(prompt["tensor"].as_str().unwrap()).unwrap();
        let want: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let got = block_on(read_f32(model.forward(model.ids(&[prompt_ids]), None, None))).unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4, "{}: logits max |Δ| {diff}", prompt["text"]);
    }
    // The prompts fit the one-pass kernel; the eval texts' batches are past its row limit.
    assert!(lengths.iter().all(|&l| l <= tinytune::blas::BF16_MAX_ROWS), "prompts of {lengths:?} tokens");
    let got = block_on(tinytune::eval::eval_loss(&model, &eval_texts(), 1024, |_, _| {})).unwrap();
    assert!(got.tokens > tinytune::blas::BF16_MAX_ROWS);
    let loss = r["eval"]["loss"].as_f64().unwrap();
    assert!((got.loss - loss).abs() < 1e-4, "loss {} vs transformers {loss}", got.loss);
    for case in r["greedy"].as_array().unwrap() {
        let mut want = ids(&case["new_ids"]);
        if case["stopped_at_eos"].as_bool().unwrap() {
            want.pop();
        }
        let sampling = Sampling { max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize, temperature: 0.0, ..Sampling::default() };
        let (got, _) = block_on(generate(&model, &ids(&case["prompt_ids"]), &sampling, |_, _| true)).unwrap();
        assert_eq!(got, want, "greedy after {:?}", case["prompt"]);
    }
}

/// A weight with values a bf16 cannot hold (a tensor kept in f32 beside bf16 ones, a model
/// trained in f32) stays f32: keeping it would round it. bf16 values stored as f32 are kept.
#[test]
fn bf16_weights_are_kept_only_where_exact() {
    use tinytune::model::layers::Base;
    let device = device_under_test();
    if device.info.kind != "cpu" {
        return;
    }
    let mut model = Model::load_dir(&fixture("tiny-llama-bf16"), &device.device).unwrap();
    if let Some((_, linear)) = model.arch.linears_mut().into_iter().next()
        && let Base::Dense(w) = &mut linear.base
    {
        *w = w.clone() + 1e-3;
    }
    assert_eq!(model.keep_bf16_weights(), 14);
    // A model trained in f32 keeps nothing; the same bf16 values saved as f32 keep everything.
    let mut trained = Model::load_dir(&fixture("tiny-llama"), &device.device).unwrap();
    assert_eq!(trained.keep_bf16_weights(), 0);
    let bf16 = Model::load_dir(&fixture("tiny-llama-bf16"), &device.device).unwrap();
    let files = block_on(bf16.save_files_as(safetensors::Dtype::F32)).unwrap();
    let mut upcast = Model::load(&tinytune::model::load::ModelFiles::from_named(files).unwrap(), &device.device).unwrap();
    assert_eq!(upcast.source.dtype, safetensors::Dtype::F32);
    assert_eq!(upcast.keep_bf16_weights(), 15);
    let dtypes: Vec<_> = model.arch.linears().iter().map(|(_, l)| match &l.base {
        Base::Dense(w) => w.dtype(),
        Base::Quant(_) | Base::Q8(_) => unreachable!("a bf16 checkpoint"),
    }).collect();
    assert_eq!(dtypes[0], burn::tensor::DType::F32);
    assert!(dtypes[1..].iter().all(|d| *d == burn::tensor::DType::BF16), "{dtypes:?}");
}

/// With a LoRA adapter attached (`tinytune generate --adapter`), the bf16-kept model computes
/// what the same model widened to f32 does: the fused LoRA layer over a bf16 base, for a prompt
/// (one-pass kernel) and for every decoded token.
#[test]
fn bf16_weights_kept_as_stored_serve_an_adapter_as_f32_does() {
    let device = device_under_test();
    if device.info.kind != "cpu" {
        return;
    }
    let adapter = tinytune::lora::peft::PeftAdapter::read_dir(&fixture("tiny-llama/adapter")).unwrap();
    let load = || {
        let mut model = Model::load_dir(&fixture("tiny-llama-bf16"), &device.device).unwrap();
        assert!(adapter.load_into(&mut model, "default").unwrap() > 0);
        model
    };
    let (f32_model, mut kept) = (load(), load());
    assert_eq!(kept.keep_bf16_weights(), 15);
    let prompt = kept.tokenizer.encode("The old", true).unwrap();
    let logits = |m: &Model| block_on(read_f32(m.forward(m.ids(&[prompt.clone()]), None, None))).unwrap();
    let (a, b) = (logits(&f32_model), logits(&kept));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-4, "logits with the adapter: max |Δ| {diff}");
    let bare = Model::load_dir(&fixture("tiny-llama-bf16"), &device.device).unwrap();
    let moved = logits(&bare).iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-2, "the adapter should move the logits (max |Δ| {moved} from the bare model)");
    let sampling = Sampling { max_new_tokens: 24, temperature: 0.0, stop_at_eos: false, ..Sampling::default() };
    let run = |m: &Model| block_on(generate(m, &prompt, &sampling, |_, _| true)).unwrap().0;
    assert_eq!(run(&kept), run(&f32_model), "greedy with the adapter");
}

#[test]
fn decoding_with_the_kv_cache_equals_a_full_forward() {
    let device = device_under_test();
    let model = Model::load_dir(&fixture("tiny-llama"), &device.device).unwrap();
    // Long enough that the cache's buffers fill and grow (they start with 64 slots) while
    // decoding one token at a time, with grouped key/value heads (4 query heads, 2 kv heads).
    let text = "Once upon a time, the little fox ran to the river and saw a boat. ".repeat(6);
    let mut seq: Vec<u32> = model.tokenizer.encode(&text, true).unwrap();
    seq.truncate(100);
    assert!(seq.len() > 80, "the text gives {} tokens", seq.len());
    let v = model.config.vocab_size();
    let full = block_on(read_f32(model.forward(model.ids(&[seq.clone()]), None, None))).unwrap();
    let mut cache = model.new_cache();
    let split = 50;
    let _ = model.forward(model.ids(&[seq[..split].to_vec()]), Some(&mut cache), None);
    for (i, &tok) in seq.iter().enumerate().skip(split) {
        let step = block_on(read_f32(model.forward(model.ids(&[vec![tok]]), Some(&mut cache), None))).unwrap();
        let row = &full[i * v..(i + 1) * v];
        let diff = step.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4, "position {i}: cached vs full max |Δ| {diff}");
    }
    assert_eq!(cache.len(), seq.len());
}

#[test]
fn gpt2_s_activation_and_attention_scaling_settings_match_transformers_within_1e_4() {
    // relu with unscaled attention (and 1/(i+1) per layer) and an untied head; the erf GELU.
    let device = device_under_test();
    for name in ["edge/gpt2-relu-unscaled", "edge/gpt2-gelu"] {
        let model = Model::load_dir(&fixture(name), &device.device).unwrap();
        let r = reference(name);
        let ids = ids(&r["ids"]);
        let want: Vec<f32> = r["logits"].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
        let got = block_on(read_f32(model.forward(model.ids(&[ids]), None, None))).unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "{name}: logits max |Δ| {diff:e}");
    }
}
