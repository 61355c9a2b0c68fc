//! GGUF files against transformers: tiny-llama written with gguf-py in every simple tensor type,
//! tiny-qwen2 (biases, tied embeddings), tiny-gpt2 (fused QKV, transposed Conv1D weights) and a
//! tiny Llama with a SentencePiece tokenizer
//! (tests/fixtures/make_gguf_fixtures.py), loaded by tinytune and by transformers
//! (`from_pretrained(..., gguf_file=...)`): the same token ids, the same eval loss within 1e-4,
//! the same greedy tokens; and the K-quants dequantized exactly as gguf-py does.

mod common;
use common::Scratch;

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use tinytune::generate::{Sampling, generate};
use tinytune::model::Model;
use tinytune::model::gguf::{Gguf, dequantize};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("gguf/reference.json")).unwrap()).unwrap()
}

fn texts() -> Vec<String> {
    std::fs::read_to_string(fixture("corpus/eval.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn every_tensor_type_loads_as_transformers_loads_it() {
    let reference = reference();
    let texts = texts();
    let models = reference["models"].as_object().unwrap();
    assert_eq!(
        models.len(),
        13,
        "tiny-llama in F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; tiny-qwen2 and tiny-gpt2 in F32, Q8_0; tiny-llama-sp"
    );
    for (name, want) in models {
        let model = Model::load_dir(&fixture(&format!("gguf/{name}")), &burn::tensor::Device::flex()).unwrap();
        // Tokenization of every eval text, from the tokenizer in the metadata.
        for (text, want_ids) in texts.iter().zip(want["ids"].as_array().unwrap()) {
            assert_eq!(model.tokenizer.encode(text, true).unwrap(), ids(want_ids), "{name}: ids of {text:?}");
        }
        // Byte fallback, leading and double spaces, and decoding back (the SentencePiece file).
        for extra in want["extra"].as_array().into_iter().flatten() {
            let text = extra["text"].as_str().unwrap();
            let got = model.tokenizer.encode(text, true).unwrap();
            assert_eq!(got, ids(&extra["ids"]), "{name}: ids of {text:?}");
            assert_eq!(model.tokenizer.decode(&got).unwrap(), extra["decoded"].as_str().unwrap(), "{name}: decoding {text:?}");
        }
        let report = block_on(tinytune::eval::eval_loss(&model, &texts, 1024, |_, _| {})).unwrap();
        assert_eq!(report.tokens as u64, want["eval"]["tokens"].as_u64().unwrap(), "{name}");
        let loss = want["eval"]["loss"].as_f64().unwrap();
        assert!((report.loss - loss).abs() < 1e-4, "{name}: eval loss {} vs transformers {loss}", report.loss);
        for g in want["greedy"].as_array().unwrap() {
            let prompt = ids(&g["prompt_ids"]);
            let s = Sampling { max_new_tokens: reference["new_tokens"].as_u64().unwrap() as usize, temperature: 0.0, stop_at_eos: true, ..Sampling::default() };
            let (new, _) = block_on(generate(&model, &prompt, &s, |_, _| true)).unwrap();
            assert_eq!(new, ids(&g["new_ids"]), "{name}: greedy after {}", g["prompt"]);
        }
    }
}

#[test]
fn q4_0_and_q4_1_weights_stay_in_4_bits_as_gguf_py_quantized_them() {
    use tinytune::quant::{QuantType, gguf4};
    let source = std::fs::read(fixture("gguf/tiny-llama-F32.gguf")).unwrap();
    let src = Gguf::parse(&source).unwrap();
    for (name, qt) in [("Q4_0", QuantType::Q4_0), ("Q4_1", QuantType::Q4_1)] {
        let path = fixture(&format!("gguf/tiny-llama-{name}.gguf"));
        let file = std::fs::read(&path).unwrap();
        let g = Gguf::parse(&file).unwrap();
        // gguf-py quantized the F32 file's values into these blocks: ours from the same values
        // are the same blocks (codes, f16 scales and minimums).
        let mut checked = 0;
        for t in g.tensors.iter().filter(|t| t.type_name() == name) {
            let shape = [t.dims[1] as usize, t.dims[0] as usize];
            let stored = gguf4::from_gguf(qt, &file[t.start..t.start + t.bytes], shape).unwrap();
            let values = dequantize(src.tensor(&t.name).unwrap(), &source).unwrap();
            assert_eq!(gguf4::quantize(&values, shape, qt), stored, "{name}: {}", t.name);
            checked += 1;
        }
        assert!(checked >= 8, "{name}: {checked} tensors in {name}");
        // Loaded, every linear weight of the layers stays in 4 bits: bytes on the device as stored.
        let model = Model::load_dir(&path, &burn::tensor::Device::flex()).unwrap();
        assert_eq!(model.summary.quantization.as_deref(), Some(qt.name()), "{name}");
        assert_eq!(model.summary.file_bytes, file.len(), "{name}: the file's size is what the page shows as in the files");
        let bits = model.linear_bits().unwrap();
        let want = if qt == QuantType::Q4_1 { 6.0 } else { 5.0 };
        assert!((bits - want).abs() < 1e-9, "{name}: {bits} bits a parameter");
        // Saved as a Hugging Face folder, they are float weights again, the values the file holds.
        let files = block_on(model.save_files()).unwrap();
        let config = String::from_utf8(files.iter().find(|(n, _)| n == "config.json").unwrap().1.clone()).unwrap();
        assert!(!config.contains("quantization_config"), "{name}: {config}");
        let (_, weights) = files.iter().find(|(n, _)| n == "model.safetensors").unwrap();
        let st = safetensors::SafeTensors::deserialize(weights).unwrap();
        let q = st.tensor("model.layers.0.mlp.down_proj.weight").unwrap();
        assert_eq!(q.dtype(), safetensors::Dtype::F32, "{name}");
        let t = g.tensor("blk.0.ffn_down.weight").unwrap();
        let want: Vec<u8> = dequantize(t, &file).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(q.data(), &want[..], "{name}: saved down_proj");
        // Widened for what reads checkpoints as safetensors (merge-models): f32, the same values.
        let mut files = tinytune::model::ModelFiles::from_dir(&path).unwrap();
        assert!(!files.packed.is_empty() && files.is_quantized());
        files.widen_packed().unwrap();
        assert!(files.packed.is_empty() && !files.is_quantized());
        let widened = Model::load(&files, &burn::tensor::Device::flex()).unwrap();
        assert_eq!(widened.summary.quantization, None, "{name}");
        let shard = files.weights.iter().find(|(n, _)| n == "model-kept.safetensors").unwrap();
        let st = safetensors::SafeTensors::deserialize(&shard.1).unwrap();
        assert_eq!(st.tensor("model.layers.0.mlp.down_proj.weight").unwrap().data(), &want[..], "{name}: widened down_proj");
    }
}

#[test]
fn q8_0_weights_stay_in_8_bit_codes_as_gguf_py_quantized_them() {
    use tinytune::model::layers::Base;
    use tinytune::quant::q8::{Kind8, Quant8, quantize_q8_0};
    for name in ["tiny-llama", "tiny-qwen2"] {
        let source = std::fs::read(fixture(&format!("gguf/{name}-F32.gguf"))).unwrap();
        let src = Gguf::parse(&source).unwrap();
        let path = fixture(&format!("gguf/{name}-Q8_0.gguf"));
        let file = std::fs::read(&path).unwrap();
        let g = Gguf::parse(&file).unwrap();
        // gguf-py quantized the F32 file's values into these blocks: ours from the same values are
        // the same bytes, and `Quant8` holds the values gguf-py's `dequantize` gives.
        let mut checked = 0;
        for t in g.tensors.iter().filter(|t| t.type_name() == "Q8_0") {
            let data = &file[t.start..t.start + t.bytes];
            let values = dequantize(src.tensor(&t.name).unwrap(), &source).unwrap();
            assert_eq!(quantize_q8_0(&values), data, "{name}: {}", t.name);
            let kept = Quant8::from_gguf(Kind8::Q8_0, data, [t.dims[1] as usize, t.dims[0] as usize]).unwrap();
            let want: Vec<u32> = dequantize(t, &file).unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(kept.dequantize().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{name}: {}", t.name);
            checked += 1;
        }
        assert!(checked >= 14, "{name}: {checked} tensors in Q8_0");
        // Loaded on the CPU engine, every linear weight of the layers stays in 8-bit codes.
        let model = Model::load_dir(&path, &burn::tensor::Device::flex()).unwrap();
        assert!(model.arch.linears().iter().all(|(_, l)| matches!(l.base, Base::Q8(_))), "{name}");
        assert_eq!(model.summary.quantization.as_deref(), Some("q8_0"), "{name}");
        assert_eq!(model.quantization(), None, "{name}: not a 4-bit model");
        let bits = model.kept8_bits().unwrap();
        assert!((bits - 9.0).abs() < 1e-9, "{name}: {bits} bits a parameter (a byte a code, an f32 scale a block of 32)");
        // The token embedding too (tiny-qwen2's is also its tied output head).
        let tinytune::model::Arch::Llama(llama) = &model.arch else { unreachable!("{name} is a Llama") };
        assert!(matches!(llama.embed_tokens, tinytune::model::layers::Embedding::Q8(_)), "{name}");
        // tiny-llama's untied output head as well.
        let head = llama.lm_head.as_ref().map_or(0, |h| {
            assert!(matches!(h.base, Base::Q8(_)), "{name}: the output head");
            h.d_in() * h.d_out()
        });
        let linear: usize = model.arch.linears().iter().map(|(_, l)| l.d_in() * l.d_out()).sum();
        let [v, c] = llama.embed_tokens.dims();
        assert_eq!(model.kept8_saved_bytes(), Some(((v * c + head) * 4 - (v * c + head) * 9 / 8) as f64), "{name}");
        let kept = linear + v * c + head;
        assert_eq!(model.summary.f32_bytes - model.summary.base_bytes, kept * 4 - kept * 9 / 8, "{name}: bytes held");
        // Saved, they are float weights again: the values the file holds.
        let files = block_on(model.save_files()).unwrap();
        let (_, weights) = files.iter().find(|(n, _)| n == "model.safetensors").unwrap();
        let st = safetensors::SafeTensors::deserialize(weights).unwrap();
        let t = g.tensor("blk.1.ffn_up.weight").unwrap();
        let want: Vec<u8> = dequantize(t, &file).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(st.tensor("model.layers.1.mlp.up_proj.weight").unwrap().data(), &want[..], "{name}: saved up_proj");
        // Widened for what reads checkpoints as safetensors: f32, the same values.
        let mut files = tinytune::model::ModelFiles::from_dir(&path).unwrap();
        assert!(files.packed.is_empty() && !files.packed8.is_empty() && files.is_quantized());
        files.widen_packed().unwrap();
        assert!(files.packed8.is_empty() && !files.is_quantized());
        let widened = Model::load(&files, &burn::tensor::Device::flex()).unwrap();
        assert_eq!(widened.summary.quantization, None, "{name}");
        let shard = files.weights.iter().find(|(n, _)| n == "model-kept.safetensors").unwrap();
        let st = safetensors::SafeTensors::deserialize(&shard.1).unwrap();
        assert_eq!(st.tensor("model.layers.1.mlp.up_proj.weight").unwrap().data(), &want[..], "{name}: widened up_proj");
    }
}

#[test]
fn q5_0_and_q5_1_weights_stay_in_8_bit_codes_with_gguf_py_s_values() {
    use tinytune::model::layers::Base;
    for (kind, bits) in [("Q5_0", 9.0), ("Q5_1", 10.0)] {
        let path = fixture(&format!("gguf/tiny-llama-{kind}.gguf"));
        let file = std::fs::read(&path).unwrap();
        let g = Gguf::parse(&file).unwrap();
        let model = Model::load_dir(&path, &burn::tensor::Device::flex()).unwrap();
        assert!(model.arch.linears().iter().all(|(_, l)| matches!(&l.base, Base::Q8(q) if q.kind.name() == kind)), "{kind}");
        assert_eq!(model.summary.quantization.as_deref(), Some(kind.to_lowercase().as_str()));
        assert_eq!(model.kept8_bits(), Some(bits), "{kind}: a byte a code, an f32 scale (and term) a block of 32");
        // The values the layers hold are gguf-py's (saved as float weights).
        let files = block_on(model.save_files()).unwrap();
        let (_, weights) = files.iter().find(|(n, _)| n == "model.safetensors").unwrap();
        let st = safetensors::SafeTensors::deserialize(weights).unwrap();
        let t = g.tensor("blk.0.ffn_gate.weight").unwrap();
        assert_eq!(t.type_name(), kind);
        let want: Vec<u8> = dequantize(t, &file).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(st.tensor("model.layers.0.mlp.gate_proj.weight").unwrap().data(), &want[..], "{kind}: saved gate_proj");
    }
}

#[test]
fn an_adapter_merged_into_a_q4_1_or_q8_0_base_is_quantized_again_in_its_format() {
    // PEFT's merge into a bitsandbytes base quantizes W₀ + ΔW again; into a GGUF file's Q4_1
    // base it is Q4_1 again, into a Q8_0 one Q8_0 (gguf-py's quantization, checked above against
    // gguf-py's blocks).
    let read = |t: burn::tensor::Tensor<2>| block_on(tinytune::model::read_f32(t)).unwrap();
    for kind in ["q4_1", "q8_0"] {
        let path = fixture(&format!("gguf/tiny-llama-{}.gguf", kind.to_uppercase()));
        let mut m = Model::load_dir(&path, &burn::tensor::Device::flex()).unwrap();
        tinytune::lora::peft::PeftAdapter::read_dir(&fixture("tiny-llama").join("adapter")).unwrap().load_into(&mut m, "default").unwrap();
        let wanted: Vec<(String, Vec<f32>, f32)> = m
            .arch
            .linears()
            .iter()
            .filter_map(|(p, l)| {
                let delta = read(l.adapter("default")?.delta());
                let sum: Vec<f32> = read(l.weight()).iter().zip(&delta).map(|(w, d)| w + d).collect();
                let largest = delta.iter().fold(0f32, |a, d| a.max(d.abs()));
                Some((p.clone(), sum, largest))
            })
            .collect();
        assert!(!wanted.is_empty());
        block_on(tinytune::merge::into_base(&mut m, "default")).unwrap();
        assert_eq!(m.summary.quantization.as_deref(), Some(kind));
        for (path, l) in m.arch.linears() {
            let Some((_, want, largest)) = wanted.iter().find(|(p, _, _)| *p == path) else { continue };
            let got = read(l.weight());
            // Within half a step of the grid: a Q4_1 block's step is at most the matrix's range / 15;
            // a Q8_0 block's d at most the matrix's largest |value| / 127, and its codes (up to 127)
            // round with d in f32 while d is stored in f16 (2⁻¹¹ of d apart).
            let (lo, hi) = want.iter().fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
            let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let bound = if kind == "q4_1" { 0.5 * (hi - lo) / 15.0 * 1.01 } else { hi.max(-lo) / 127.0 * (0.5 + 127.0 / 2048.0) * 1.01 };
            // The adapter moves some weight by more than that, so a merge left out would show.
            assert!(*largest > 2.0 * bound, "{kind} {path}: ΔW up to {largest} is within the grid's half step {bound}");
            assert!(worst <= bound, "{kind} {path}: max |Δ| {worst} against W₀ + ΔW (range {lo}..{hi}, ΔW up to {largest})");
        }
    }
}

#[test]
fn k_quants_dequantize_as_gguf_py_does_bit_for_bit() {
    let bytes = std::fs::read(fixture("gguf/kquants.gguf")).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let reference = std::fs::read(fixture("gguf/kquants.safetensors")).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&reference).unwrap();
    let mut seen = Vec::new();
    for t in &g.tensors {
        let kind = t.type_name();
        let want = reference.tensor(kind).unwrap();
        let want: Vec<f32> = want.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let got = dequantize(t, &bytes).unwrap();
        assert_eq!(got.len(), want.len(), "{kind}");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{kind} value {i}: {a} vs gguf-py {b}");
        }
        if let Some(qt) = tinytune::quant::gguf4::kept_type(kind) {
            // Kept in 4 bits (Q4_K): the same values from `Quant4`, and from the buffer the kernels read.
            let q = tinytune::quant::gguf4::from_gguf(qt, &bytes[t.start..t.start + t.bytes], [t.dims[1] as usize, t.dims[0] as usize]).unwrap();
            let (words, layout) = tinytune::quant::kernels::pack(&q);
            for (how, got) in [("Quant4", q.dequantize()), ("words", tinytune::quant::kernels::dequantize_words(&words, &layout))] {
                let first = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(first.is_none(), "{kind} kept in 4 bits ({how}): value {first:?} differs from gguf-py's");
            }
            seen.push("kept");
        }
        if let Some(k8) = tinytune::quant::q8::Kind8::of_gguf(kind) {
            // Kept in 8-bit codes (Q2_K, Q3_K, Q5_K, Q6_K): the same values from `Quant8`, and from
            // the kernels' reading of its codes, scales and terms.
            let q = tinytune::quant::q8::Quant8::from_gguf(k8, &bytes[t.start..t.start + t.bytes], [t.dims[1] as usize, t.dims[0] as usize]).unwrap();
            let mut read = vec![0f32; q.numel()];
            tinytune_kernels::q8_dequant(q.view(), 0, &mut read);
            for (how, got) in [("Quant8", q.dequantize()), ("q8_dequant", read)] {
                let first = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(first.is_none(), "{kind} kept in 8-bit codes ({how}): value {first:?} differs from gguf-py's");
            }
            let codes = match kind {
                "Q6_K" => -32..32,
                "Q5_K" => 0..32,
                "Q3_K" => -4..4,
                _ => 0..4,
            };
            assert!(q.codes.iter().all(|c| codes.contains(c)), "{kind}: codes outside {codes:?}");
            assert_eq!(q.terms.is_some(), kind == "Q5_K" || kind == "Q2_K", "{kind}: a term a block");
            seen.push("kept8");
        }
        seen.push(kind);
    }
    seen.sort();
    assert_eq!(seen, ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "kept", "kept8", "kept8", "kept8", "kept8"]);
}

#[test]
fn a_damaged_or_unsupported_gguf_is_a_clear_error() {
    let bytes = std::fs::read(fixture("gguf/tiny-llama-Q8_0.gguf")).unwrap();
    // Cut short: the last tensor no longer fits.
    let err = tinytune::model::gguf::to_model_files(&bytes[..bytes.len() - 100]).err().unwrap().to_string();
    assert!(err.contains("outside the file"), "{err}");
    // Another architecture name in the metadata.
    let mut other = bytes.clone();
    let at = other.windows(5).position(|w| w == b"llama").unwrap();
    other[at..at + 5].copy_from_slice(b"mamba");
    let err = tinytune::model::gguf::to_model_files(&other).err().unwrap().to_string();
    assert!(err.contains("\"mamba\" is not supported yet; supported: llama, qwen2, gpt2"), "{err}");
    // Another tokenizer type.
    let mut other = bytes.clone();
    let key = other.windows(20).position(|w| w == b"tokenizer.ggml.model").unwrap();
    let at = key + other[key..].windows(4).position(|w| w == b"gpt2").unwrap();
    other[at..at + 4].copy_from_slice(b"bert");
    let err = tinytune::model::gguf::to_model_files(&other).err().unwrap().to_string();
    assert!(err.contains("tokenizer \"bert\" is not supported yet; supported: gpt2") && err.contains("llama (SentencePiece"), "{err}");
}

/// `tinytune export-gguf` of tiny-llama with its fixture adapter merged in (F16, Q8_0) and of the
/// adapter alone: the same bytes as the files the fixtures script read back with gguf-py, and
/// the merged files give in tinytune the eval loss transformers gave on them.
#[test]
fn exported_gguf_files_are_what_gguf_py_and_transformers_checked() {
    let reference = reference();
    let exports = reference["exports"].as_object().expect("make_gguf_fixtures.py --tinytune wrote the exports");
    let tmp = Scratch::dir("gguf-export");
    let export = |args: &[&str], out: &Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_tinytune"))
            .args(["export-gguf", "--model"])
            .arg(fixture("tiny-llama"))
            .arg("--adapter")
            .arg(fixture("tiny-llama/adapter"))
            .args(args)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let texts = texts();
    for kind in ["F16", "Q8_0"] {
        let name = format!("export-merged-{kind}.gguf");
        let out = tmp.join(&name);
        export(&["--type", &kind.to_lowercase()], &out);
        assert!(std::fs::read(&out).unwrap() == std::fs::read(fixture(&format!("gguf/{name}"))).unwrap(), "{name} differs from the checked file");
        let model = Model::load_dir(&out, &burn::tensor::Device::flex()).unwrap();
        let report = block_on(tinytune::eval::eval_loss(&model, &texts, 1024, |_, _| {})).unwrap();
        let want = exports[&name]["eval"]["loss"].as_f64().unwrap();
        assert!((report.loss - want).abs() < 1e-4, "{name}: eval loss {} vs transformers {want}", report.loss);
    }
    let out = tmp.join("export-lora.gguf");
    export(&["--lora-only"], &out);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(fixture("gguf/export-lora.gguf")).unwrap(), "the GGUF LoRA differs from the checked file");
    let g = Gguf::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(g.get("adapter.type").and_then(|m| m.as_str()), Some("lora"));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Every method trains over a file kept in 8-bit codes, on the autodiff device the page and the
/// CLI train on: LoRA over the codes as they are (which do not move), full and partial finetuning
/// after widening them to f32 on that device.
#[test]
fn every_method_trains_over_a_q8_0_file() {
    use tinytune::model::layers::{Base, Embedding};
    use tinytune::train::data::{DataOptions, OnBadLine, read_dataset};
    use tinytune::train::trainer::{Method, TrainConfig, Trainer, prepare_base};
    for method in [Method::Lora, Method::Full, Method::Partial] {
        let mut m = Model::load_dir(&fixture("gguf/tiny-qwen2-Q8_0.gguf"), &burn::tensor::Device::flex().autodiff()).unwrap();
        // Full finetuning at LoRA's rate diverges on any base (f32 tiny-qwen2 too): 1e-3 for it.
        let lr = if method == Method::Lora { 1e-2 } else { 1e-3 };
        let cfg = TrainConfig { method, steps: 6, batch_size: 4, seq_len: 64, lr, ..TrainConfig::default() };
        block_on(prepare_base(&mut m, &cfg)).unwrap();
        let codes = |m: &Model| -> Vec<i8> {
            m.arch.linears().iter().flat_map(|(_, l)| match &l.base {
                Base::Q8(q) => q.codes.codes.clone(),
                _ => Vec::new(),
            }).collect()
        };
        let before = codes(&m);
        let tinytune::model::Arch::Llama(llama) = &m.arch else { unreachable!("tiny-qwen2 is a Llama") };
        let widened = method != Method::Lora;
        assert_eq!(before.is_empty(), widened, "{method:?}: the linear weights widened or kept");
        assert_eq!(matches!(llama.embed_tokens, Embedding::Dense(_)), widened, "{method:?}: the embedding");
        if method == Method::Lora {
            block_on(tinytune::lora::attach(&mut m, "default", &cfg.lora, 1)).unwrap();
        }
        let opts = DataOptions { seq_len: 64, train_on_prompt: false, on_bad_line: OnBadLine::Stop };
        let train = read_dataset(&fixture("corpus/eval.jsonl"), &m.tokenizer, &opts).unwrap().examples;
        let mut t = Trainer::new(&mut m, cfg, train).unwrap();
        let mut losses = Vec::new();
        while !t.done() {
            losses.push(block_on(t.step(&mut m)).unwrap().loss);
        }
        assert!(losses.iter().all(|l| l.is_finite()) && losses[5] < losses[0], "{method:?}: {losses:?}");
        assert_eq!(codes(&m), before, "{method:?}: the 8-bit base moved");
    }
}
