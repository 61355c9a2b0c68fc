//! 4-bit quantization against bitsandbytes: the outputs `tests/fixtures/make_quant_fixtures.py`
//! recorded from bitsandbytes' CPU build, and the folders transformers saved and loaded.
//!
//! tinytune follows bitsandbytes' CUDA kernels (see `src/quant/nf4.rs`). Where the CPU build
//! computes differently, the tests below predict each difference from the CPU build's own
//! arithmetic and require every other code to be equal, byte for byte.

mod common;
use common::Scratch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;
use tinytune::quant::nf4::{self, Absmax, QuantType, Quant4};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Reference {
        Reference { bytes: std::fs::read(fixture("quant/bnb_reference.safetensors")).unwrap() }
    }
    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn f32(&self, key: &str) -> Vec<f32> {
        let st = self.tensors();
        let v = st.tensor(key).unwrap_or_else(|_| panic!("no {key}"));
        v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }
    fn u8(&self, key: &str) -> Vec<u8> {
        self.tensors().tensor(key).unwrap_or_else(|_| panic!("no {key}")).data().to_vec()
    }
    fn shape(&self, case: &str) -> [usize; 2] {
        let s = self.tensors().tensor(&format!("{case}.input")).unwrap().shape().to_vec();
        [s[0], s[1]]
    }
}

const CASES: [&str; 5] = ["random", "ties", "odd", "real", "builtin"];

fn nibble(packed: &[u8], i: usize) -> u8 {
    if i % 2 == 0 { packed[i / 2] >> 4 } else { packed[i / 2] & 0xF }
}

/// bitsandbytes' CPU `quantize_4bit` (its default backend): a zero absmax is clamped to 1e-38,
/// full blocks multiply by the reciprocal, the last partial block divides, values are clamped to
/// [−1, 1], and the code is `torch.bucketize` over the f32 midpoints of the sorted code (ties go
/// to the lower code). FP4's +0 and −0 compare equal, and its sort keeps +0 (code 0) first, so
/// small positive values land on −0 (code 8).
fn cpu_build_code(qt: QuantType, values: &[f32], i: usize, absmax: &[f32]) -> u8 {
    let code = qt.code();
    let mut order: Vec<usize> = (0..16).collect();
    order.sort_by(|&a, &b| code[a].partial_cmp(&code[b]).unwrap());
    let bounds: Vec<f32> = order.windows(2).map(|w| (code[w[0]] + code[w[1]]) / 2.0).collect();
    let n = values.len();
    let full = n - n % 64;
    let am = absmax[i / 64].max(1e-38);
    let scaled = if i < full { values[i] * (1.0f32 / am) } else { values[i] / am }.clamp(-1.0, 1.0);
    let bucket = bounds.iter().filter(|&&b| scaled > b).count();
    order[bucket] as u8
}

#[test]
fn nf4_and_fp4_codes_equal_bitsandbytes_byte_for_byte_except_where_its_cpu_build_departs_from_cuda() {
    let r = Reference::load();
    let mut departures: BTreeMap<String, usize> = BTreeMap::new();
    for case in CASES {
        let input = r.f32(&format!("{case}.input"));
        let shape = r.shape(case);
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            let name = qt.name();
            let q = Quant4::quantize(&input, shape, qt, false).unwrap();
            let want_packed = r.u8(&format!("{case}.{name}.packed"));
            let want_absmax = r.f32(&format!("{case}.{name}.absmax"));
            let Absmax::F32(absmax) = &q.absmax else { unreachable!() };
            assert_eq!(absmax, &want_absmax, "{case} {name}: absmax");
            assert_eq!(q.packed.len(), want_packed.len(), "{case} {name}: packed length");
            for i in 0..input.len() {
                let (ours, theirs) = (nibble(&q.packed, i), nibble(&want_packed, i));
                // The CPU build's own arithmetic must explain what bitsandbytes wrote...
                assert_eq!(cpu_build_code(qt, &input, i, absmax), theirs, "{case} {name}: value {i} ({})", input[i]);
                if ours != theirs {
                    // ...and every departure must be one the module documents.
                    let reason = if absmax[i / 64] == 0.0 {
                        assert_eq!(ours, qt.quantize(f32::NAN), "an all-zero block takes the NaN path under CUDA");
                        "all-zero block"
                    } else if qt == QuantType::Fp4 && ours & 7 == 0 && theirs & 7 == 0 {
                        "fp4 zero: +0 vs −0"
                    } else if i >= input.len() - input.len() % 64 {
                        "last partial block: division vs reciprocal"
                    } else {
                        "threshold literal vs f32 midpoint"
                    };
                    *departures.entry(format!("{case} {name}: {reason}")).or_default() += 1;
                }
            }
            // Both dequantize the all-zero block to zeros.
            let values = q.dequantize();
            for (i, v) in values.iter().enumerate() {
                if absmax[i / 64] == 0.0 {
                    assert_eq!(*v, 0.0);
                }
            }
        }
    }
    eprintln!("codes where bitsandbytes' CPU build departs from its CUDA kernels: {departures:?}");
    // The fixture's all-zero block is the documented departure; it must be seen, so the test
    // checks the case it claims to cover.
    assert!(departures.keys().any(|k| k.contains("all-zero block")), "{departures:?}");
}

#[test]
fn the_dynamic_map_equals_the_one_bitsandbytes_writes() {
    let r = Reference::load();
    let want = r.f32("nested_map");
    let got = nf4::dynamic_map();
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "map[{i}]: {a} vs {b}");
    }
}

#[test]
fn double_quantization_dequantizes_like_bitsandbytes_within_1e_6_relative() {
    let r = Reference::load();
    let map = nf4::dynamic_map();
    // Resolution of the CPU build's lookup table for the 8-bit code: 65536 entries over [−1, 1].
    let lut_step = 2.0 / 65535.0;
    let mut code_departures = 0;
    for case in CASES {
        let input = r.f32(&format!("{case}.input"));
        let q = Quant4::quantize(&input, r.shape(case), QuantType::Nf4, true).unwrap();
        // bitsandbytes packs the same 4-bit codes with and without double quantization.
        assert_eq!(r.u8(&format!("{case}.nf4dq.packed")), r.u8(&format!("{case}.nf4.packed")), "{case}");
        let Absmax::Double(n) = &q.absmax else { unreachable!() };
        // The offset is torch's f32 mean, whose summation order tinytune does not copy (it
        // sums in f64): the two may differ in the last bit, and the file records the one used.
        let want_offset = r.f32(&format!("{case}.nf4dq.offset"))[0];
        assert!((n.offset - want_offset).abs() <= want_offset.abs() * 2.0 * f32::EPSILON, "{case}: offset {} vs {want_offset}", n.offset);
        // From bitsandbytes' offset on, everything is exact: the same second-level absmaxes, and
        // the same 8-bit codes except next to a midpoint (below).
        let plain = Quant4::quantize(&input, r.shape(case), QuantType::Nf4, false).unwrap().block_absmax();
        let n = &nf4::Nested::quantize_with_offset(&plain, 256, want_offset);
        assert_eq!(n.absmax, r.f32(&format!("{case}.nf4dq.nested_absmax")), "{case}: second-level absmax");
        let want_codes = r.u8(&format!("{case}.nf4dq.absmax_codes"));
        for (b, (&ours, &theirs)) in n.codes.iter().zip(&want_codes).enumerate() {
            if ours != theirs {
                // Only next to a midpoint of the map, where the CPU build's table lookup can land
                // on the neighbour that CUDA's comparison does not pick.
                let x = (plain[b] - n.offset) * (1.0 / n.absmax[b / n.blocksize]);
                let mid = (map[ours as usize] + map[theirs as usize]) / 2.0;
                assert!((ours as i32 - theirs as i32).abs() == 1, "{case} block {b}: codes {ours} vs {theirs}");
                assert!((x - mid).abs() <= 2.0 * lut_step, "{case} block {b}: {x} is {} from the midpoint", (x - mid).abs());
                code_departures += 1;
            }
        }
        let q = Quant4 { absmax: Absmax::Double(n.clone()), ..q.clone() };
        let got = q.dequantize();
        let want = r.f32(&format!("{case}.nf4dq.dequant"));
        let absmax = q.block_absmax();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if plain[i / 64] == 0.0 {
                // An all-zero block: CUDA's codes are 0 (−1.0), so its values are −1 times the
                // block's double-quantized absmax, which is near but not exactly 0; the CPU
                // build's codes are 7 (0.0), so its values are 0.
                assert_eq!((*a, *b), (-absmax[i / 64], 0.0), "{case} value {i} in the all-zero block");
                assert!(a.abs() < 0.01 * n.absmax[(i / 64) / n.blocksize], "{case} value {i}: {a}");
                continue;
            }
            let scale = absmax[i / 64].abs().max(1e-30);
            let differs_by_code = n.codes[i / 64] != want_codes[i / 64];
            let tol = if differs_by_code {
                // A neighbouring 8-bit code: the absmax differs by one map step at most.
                let c = n.codes[i / 64] as usize;
                (map[c.min(254) + 1] - map[c.max(1) - 1]).abs() * n.absmax[(i / 64) / n.blocksize] + 1e-6 * scale
            } else {
                1e-6 * scale
            };
            assert!((a - b).abs() <= tol, "{case} value {i}: {a} vs {b}");
        }
    }
    eprintln!("8-bit absmax codes next to a midpoint where the CPU build's lookup table departs from CUDA: {code_departures}");
}

fn tinytune() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tinytune"))
}

fn temp(tag: &str) -> Scratch {
    Scratch::path(&format!("quant-{tag}"))
}

fn run(args: &[&str]) -> String {
    let o = Command::new(tinytune()).args(args).output().unwrap();
    assert!(o.status.success(), "tinytune {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn tinytune_quantize_reproduces_the_folder_transformers_loaded() {
    // The committed folder is what `tinytune quantize` wrote when the fixtures were made, and
    // transformers + bitsandbytes loaded it (reference.json). Writing it again must give the
    // same tensors, so that check still speaks for today's code.
    let out = temp("quantize");
    let log = run(&["quantize", "--model", fixture("tiny-llama").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(log.contains("bits a weight"), "{log}");
    let committed = std::fs::read(fixture("quant/tiny-llama-tt-nf4/model.safetensors")).unwrap();
    let written = std::fs::read(out.join("model.safetensors")).unwrap();
    let (a, b) = (SafeTensors::deserialize(&committed).unwrap(), SafeTensors::deserialize(&written).unwrap());
    let mut keys = a.names();
    keys.sort();
    let mut keys_b = b.names();
    keys_b.sort();
    assert_eq!(keys, keys_b);
    // Embeddings, norms and the output head stay f32, as bitsandbytes + transformers leave them.
    for k in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"] {
        assert_eq!(b.tensor(k).unwrap().dtype(), safetensors::Dtype::F32, "{k}");
    }
    assert_eq!(b.tensor("model.layers.0.mlp.up_proj.weight").unwrap().dtype(), safetensors::Dtype::U8);
    for k in keys {
        let (x, y) = (a.tensor(k).unwrap(), b.tensor(k).unwrap());
        if k.contains("quant_state") {
            let (x, y): (serde_json::Value, serde_json::Value) =
                (serde_json::from_slice(x.data()).unwrap(), serde_json::from_slice(y.data()).unwrap());
            assert_eq!(x, y, "{k}");
        } else {
            assert_eq!((x.dtype(), x.shape(), x.data()), (y.dtype(), y.shape(), y.data()), "{k}");
        }
    }
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["bnb_4bit_quant_type"], "nf4");
    assert_eq!(config["quantization_config"]["bnb_4bit_use_double_quant"], true);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn quantizing_a_4_bit_folder_again_is_refused() {
    let o = Command::new(tinytune())
        .args(["quantize", "--model", fixture("quant/tiny-llama-nf4").to_str().unwrap(), "--out", temp("again").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already stored in 4 bits"), "{err}");
}

#[test]
fn qlora_training_lowers_the_loss_and_writes_a_plain_peft_adapter() {
    let out = temp("qlora");
    let log = run(&[
        "train", "--model", fixture("tiny-llama").to_str().unwrap(), "--data", fixture("corpus/train.txt").to_str().unwrap(),
        "--out", out.to_str().unwrap(), "--method", "qlora", "--rank", "4", "--steps", "12", "--batch-size", "4",
        "--seq-len", "64", "--lr", "3e-3", "--seed", "5", "--device", "cpu",
    ]);
    assert!(log.contains("nf4 with double quantization"), "{log}");
    let losses: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("loss")?.as_f64())
        .collect();
    assert_eq!(losses.len(), 12);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[9..].iter().sum::<f64>() / 3.0;
    assert!(last < first - 0.05, "the loss did not fall: {losses:?}");
    // An ordinary PEFT adapter: LoRA keys and config, nothing about quantization.
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    let _ = std::fs::remove_dir_all(out);
}

fn cpu_autodiff() -> burn::tensor::Device {
    burn::tensor::Device::flex().autodiff()
}

fn corpus_examples(m: &tinytune::model::Model) -> Vec<tinytune::train::data::Example> {
    use tinytune::train::data::{DataOptions, OnBadLine, read_dataset};
    let opts = DataOptions { seq_len: 64, train_on_prompt: false, on_bad_line: OnBadLine::Stop };
    read_dataset(&fixture("corpus/eval.jsonl"), &m.tokenizer, &opts).unwrap().examples
}

#[test]
fn qlora_trains_every_architecture_and_any_targets_while_the_4_bit_base_stays_bit_identical() {
    use futures_lite::future::block_on;
    use tinytune::model::layers::Base;
    use tinytune::train::trainer::{Method, TrainConfig, Trainer, prepare_base};
    for (model, targets) in [("tiny-llama", "all-linear"), ("tiny-llama", "q_proj,v_proj"), ("tiny-qwen2", "all-linear"), ("tiny-gpt2", "c_attn,c_fc")] {
        let mut m = tinytune::model::Model::load_dir(&fixture(model), &cpu_autodiff()).unwrap();
        let cfg = TrainConfig {
            method: Method::Qlora,
            lora: tinytune::lora::LoraConfig { r: 4, targets: tinytune::lora::Targets::parse(targets), ..Default::default() },
            steps: 6,
            batch_size: 4,
            seq_len: 64,
            lr: 1e-2,
            ..TrainConfig::default()
        };
        block_on(prepare_base(&mut m, &cfg)).unwrap();
        // Every linear layer is 4-bit, targeted or not; the embeddings and head are not linears.
        assert!(m.arch.linears().iter().all(|(_, l)| l.is_quantized()), "{model}");
        let packed = |m: &tinytune::model::Model| -> Vec<Vec<u32>> {
            m.arch
                .linears()
                .iter()
                .map(|(_, l)| match &l.base {
                    Base::Quant(q) => q.words.clone().into_data().iter::<u32>().collect(),
                    Base::Dense(_) | Base::Q8(_) => unreachable!(),
                })
                .collect()
        };
        let before = packed(&m);
        block_on(tinytune::lora::attach(&mut m, "default", &cfg.lora, 1)).unwrap();
        let train = corpus_examples(&m);
        let mut t = Trainer::new(&mut m, cfg, train).unwrap();
        let mut losses = Vec::new();
        while !t.done() {
            losses.push(block_on(t.step(&mut m)).unwrap().loss);
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{model} {targets}: {losses:?}");
        assert!(losses[5] < losses[0], "{model} {targets}: the loss did not fall: {losses:?}");
        assert_eq!(packed(&m), before, "{model} {targets}: the 4-bit base moved");
    }
}

#[test]
fn eval_quantize_scores_the_base_as_qlora_sees_it() {
    // tinytune's nf4 + double quantization of tiny-llama is what transformers + bitsandbytes made
    // of it (tiny-llama-nf4), so the loss is that folder's reference loss.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quant/tiny-llama-nf4/reference.json")).unwrap()).unwrap();
    let out = run(&[
        "eval", "--model", fixture("tiny-llama").to_str().unwrap(), "--data", fixture("corpus/eval.jsonl").to_str().unwrap(),
        "--quantize", "nf4", "--json", "--device", "cpu",
    ]);
    let json: serde_json::Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let (got, want) = (json["loss"].as_f64().unwrap(), r["eval"]["loss"].as_f64().unwrap());
    assert!((got - want).abs() < 1e-4, "eval --quantize nf4: {got} vs transformers {want}");
    assert!(out.contains("quantized 14 linear weights to nf4 with double quantization"), "{out}");
}

#[test]
fn merging_into_a_4_bit_base_quantizes_again_as_peft_does() {
    // PEFT's merge into a bitsandbytes Linear4bit dequantizes, adds ΔW and quantizes again; the
    // result is a 4-bit folder whose loss is close to base + adapter (one more rounding).
    let out = temp("merge4");
    let log = run(&[
        "merge", "--model", fixture("quant/tiny-llama-nf4").to_str().unwrap(), "--adapter",
        fixture("quant/qlora-adapter").to_str().unwrap(), "--out", out.to_str().unwrap(),
    ]);
    assert!(log.contains("merged the adapter into"), "{log}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["bnb_4bit_quant_type"], "nf4");
    let eval = |dir: &Path| -> f64 {
        let o = run(&["eval", "--model", dir.to_str().unwrap(), "--data", fixture("corpus/eval.jsonl").to_str().unwrap(), "--json", "--device", "cpu"]);
        serde_json::from_str::<serde_json::Value>(o.lines().find(|l| l.starts_with('{')).unwrap()).unwrap()["loss"].as_f64().unwrap()
    };
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quant/qlora-adapter/reference.json")).unwrap()).unwrap();
    let (merged, separate) = (eval(&out), r["eval"]["loss"].as_f64().unwrap());
    assert!((merged - separate).abs() < 0.02, "merged {merged} vs base + adapter {separate}");
    let _ = std::fs::remove_dir_all(out);
}
