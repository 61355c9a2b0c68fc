//! The trainer on the CPU: what moves, what must not, exact resume, the NaN guard, and the
//! `tinytune train` command end to end.

mod common;
use common::Scratch;

use std::path::{Path, PathBuf};
use std::process::Command;

use futures_lite::future::block_on;
use tinytune::lora::{self, LoraConfig};
use tinytune::model::{Model, read_f32};
use tinytune::train::data::{DataOptions, OnBadLine, read_dataset};
use tinytune::train::trainer::{Method, Optimizer, TrainConfig, Trainer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn temp(tag: &str) -> Scratch {
    Scratch::path(&format!("train-{tag}"))
}

fn model() -> Model {
    Model::load_dir(&fixture("tiny-llama"), &burn::tensor::Device::flex().autodiff()).unwrap()
}

fn examples(m: &Model) -> Vec<tinytune::train::data::Example> {
    let opts = DataOptions { seq_len: 64, train_on_prompt: false, on_bad_line: OnBadLine::Stop };
    read_dataset(&fixture("corpus/eval.jsonl"), &m.tokenizer, &opts).unwrap().examples
}

fn weights(m: &mut Model) -> Vec<(String, Vec<f32>)> {
    m.weight_keys(None)
        .into_iter()
        .map(|k| {
            let v = m.with_weight_mut(&k, |t| block_on(read_f32(t.clone())).unwrap()).unwrap();
            (k, v)
        })
        .collect()
}

#[test]
fn only_adapter_weights_change_three_sgd_steps_leave_the_base_bit_identical() {
    let mut m = model();
    let cfg = TrainConfig { optimizer: Optimizer::Sgd, lr: 0.5, steps: 3, batch_size: 4, seq_len: 64, ..TrainConfig::default() };
    block_on(lora::attach(&mut m, "default", &LoraConfig { r: 4, ..LoraConfig::default() }, 1)).unwrap();
    let before = weights(&mut m);
    let b_before = block_on(read_f32(m.arch.linears()[0].1.adapter("default").unwrap().b.clone())).unwrap();
    let train = examples(&m);
    let mut t = Trainer::new(&mut m, cfg, train).unwrap();
    while !t.done() {
        assert!(!block_on(t.step(&mut m)).unwrap().skipped);
    }
    let after = weights(&mut m);
    assert_eq!(before.len(), after.len());
    for ((k, a), (_, b)) in before.iter().zip(&after) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "base weight {k} changed");
    }
    let b_after = block_on(read_f32(m.arch.linears()[0].1.adapter("default").unwrap().b.clone())).unwrap();
    assert_ne!(b_before, b_after, "the adapter must have moved");
}

#[test]
fn the_loss_falls_on_a_small_dataset() {
    let mut m = model();
    block_on(lora::attach(&mut m, "default", &LoraConfig { r: 8, ..LoraConfig::default() }, 3)).unwrap();
    let cfg = TrainConfig { lr: 1e-2, steps: 30, batch_size: 8, seq_len: 64, ..TrainConfig::default() };
    let train = examples(&m);
    let mut t = Trainer::new(&mut m, cfg, train.clone()).unwrap();
    let start = block_on(t.evaluate(&mut m, &train)).unwrap();
    while !t.done() {
        block_on(t.step(&mut m)).unwrap();
    }
    let end = block_on(t.evaluate(&mut m, &train)).unwrap();
    assert!(end < start * 0.8, "loss {start} -> {end}");
}

#[test]
fn full_and_partial_finetuning_train_the_right_weights() {
    for (method, layers) in [(Method::Full, 0), (Method::Partial, 1)] {
        let mut m = model();
        let before = weights(&mut m);
        let cfg = TrainConfig { method, partial_layers: layers.max(1), optimizer: Optimizer::Sgd, lr: 0.1, steps: 2, batch_size: 4, seq_len: 64, ..TrainConfig::default() };
        let train = examples(&m);
        let mut t = Trainer::new(&mut m, cfg, train).unwrap();
        while !t.done() {
            block_on(t.step(&mut m)).unwrap();
        }
        for ((k, a), (_, b)) in before.iter().zip(&weights(&mut m)) {
            let frozen = method == Method::Partial && (k.contains("layers.0.") || k.contains("embed_tokens") || k == "lm_head.weight");
            let changed = a != b;
            assert_eq!(changed, !frozen, "{method:?}: {k} changed = {changed}");
        }
    }
}

#[test]
fn non_finite_steps_are_skipped_and_training_stops_after_k_in_a_row() {
    let mut m = model();
    block_on(lora::attach(&mut m, "default", &LoraConfig { r: 4, ..LoraConfig::default() }, 1)).unwrap();
    // Poison one adapter: every forward pass now gives NaN.
    for (_, l) in m.arch.linears_mut().into_iter().take(1) {
        let a = l.adapter_mut("default").unwrap();
        a.a = a.a.clone() * f64::NAN;
    }
    let cfg = TrainConfig { steps: 50, nan_patience: 3, batch_size: 4, seq_len: 64, ..TrainConfig::default() };
    let train = examples(&m);
    let mut t = Trainer::new(&mut m, cfg, train).unwrap();
    let mut reports = Vec::new();
    while !t.done() {
        reports.push(block_on(t.step(&mut m)).unwrap());
    }
    assert_eq!(reports.len(), 3, "stops after 3 skipped steps");
    assert!(reports.iter().all(|r| r.skipped && r.loss.is_nan()));
}

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tinytune")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn losses(metrics: &Path) -> Vec<f64> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("loss")?.as_f64())
        .collect()
}

#[test]
fn resume_continues_exactly_losses_equal_an_uninterrupted_run() {
    let (model, data) = (fixture("tiny-llama"), fixture("corpus/eval.jsonl"));
    let common = |out: &Path, steps: &str| {
        vec![
            "train".to_string(), "--device".into(), "cpu".into(), "--model".into(), model.display().to_string(),
            "--data".into(), data.display().to_string(), "--out".into(), out.display().to_string(),
            "--steps".into(), steps.into(), "--batch-size".into(), "2".into(), "--rank".into(), "4".into(),
            "--dropout".into(), "0.1".into(), "--lr".into(), "5e-3".into(), "--schedule".into(), "cosine".into(),
            "--warmup".into(), "2".into(), "--seed".into(), "11".into(),
        ]
    };
    let straight = temp("straight");
    let args = common(&straight, "8");
    let (ok, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let want = losses(&straight.join("metrics.jsonl"));
    assert_eq!(want.len(), 8);

    // The same run, stopped after 4 of its 8 steps (leaving a checkpoint), then resumed.
    let resumed = temp("resumed");
    let mut args4 = common(&resumed, "8");
    args4.extend(["--stop-after".into(), "4".into()]);
    let (ok, _, err) = run(&args4.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert_eq!(losses(&resumed.join("metrics.jsonl")).len(), 4);
    let (ok, _, err) = run(&["train", "--device", "cpu", "--resume", resumed.to_str().unwrap(), "--out", resumed.to_str().unwrap()]);
    assert!(ok, "{err}");
    let got = losses(&resumed.join("metrics.jsonl"));
    assert_eq!(got, want, "losses after resume must equal the uninterrupted run's");
}

/// `tinytune train` arguments for a short run of `method` on `model`.
fn train_args(model: &str, out: &Path, method: &str, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train", "--device", "cpu", "--model", fixture(model).to_str().unwrap(), "--data",
        fixture("corpus/eval.jsonl").to_str().unwrap(), "--out", out.to_str().unwrap(), "--method", method,
        "--steps", &steps.to_string(), "--batch-size", "2", "--lr", "2e-3", "--seed", "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_strings(args: &[String]) -> (bool, String, String) {
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn resume(out: &Path) -> (bool, String, String) {
    run(&["train", "--device", "cpu", "--resume", out.to_str().unwrap(), "--out", out.to_str().unwrap()])
}

fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v.get("loss")?;
            v["step"].as_u64()
        })
        .collect()
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn resume_restores_the_best_adapter_and_writes_each_metrics_line_once() {
    let extra = ["--valid-fraction", "0.25", "--eval-every", "2", "--rank", "4"];
    let straight = temp("best-straight");
    let (ok, _, err) = run_strings(&train_args("tiny-llama", &straight, "lora", 8, &extra));
    assert!(ok, "{err}");

    let resumed = temp("best-resumed");
    let mut first = train_args("tiny-llama", &resumed, "lora", 8, &extra);
    first.extend(["--stop-after".into(), "4".into()]);
    let (ok, _, err) = run_strings(&first);
    assert!(ok, "{err}");
    // A run killed after logging step 5 but before its checkpoint: the line must not stay twice.
    let mut metrics = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap();
    metrics.push_str("{\"step\":5,\"loss\":9.0}\n");
    std::fs::write(resumed.join("metrics.jsonl"), metrics).unwrap();
    let (ok, _, err) = resume(&resumed);
    assert!(ok, "{err}");
    assert_eq!(metric_steps(&resumed), (1..=8).collect::<Vec<_>>(), "each step logged once");
    assert_eq!(losses(&resumed.join("metrics.jsonl")), losses(&straight.join("metrics.jsonl")));
    // The result is the adapter of the best valid loss, across the pause.
    assert_eq!(
        read(resumed.join("adapter_model.safetensors")),
        read(straight.join("adapter_model.safetensors")),
        "the resumed run must write the same best adapter as the uninterrupted one"
    );
}

#[test]
fn a_pissa_run_resumes_exactly() {
    let extra = ["--init", "pissa", "--rank", "4"];
    let straight = temp("pissa-straight");
    let (ok, _, err) = run_strings(&train_args("tiny-llama", &straight, "lora", 6, &extra));
    assert!(ok, "{err}");
    let resumed = temp("pissa-resumed");
    let mut first = train_args("tiny-llama", &resumed, "lora", 6, &extra);
    first.extend(["--stop-after".into(), "3".into()]);
    let (ok, _, err) = run_strings(&first);
    assert!(ok, "{err}");
    let (ok, _, err) = resume(&resumed);
    assert!(ok, "{err}");
    assert_eq!(losses(&resumed.join("metrics.jsonl")), losses(&straight.join("metrics.jsonl")));
    assert_eq!(read(resumed.join("adapter_model.safetensors")), read(straight.join("adapter_model.safetensors")));
}

#[test]
fn a_bf16_full_finetune_resumes_exactly_and_is_written_back_as_bf16() {
    let straight = temp("bf16-straight");
    let (ok, _, err) = run_strings(&train_args("tiny-llama-bf16", &straight, "full", 6, &[]));
    assert!(ok, "{err}");
    let resumed = temp("bf16-resumed");
    let mut first = train_args("tiny-llama-bf16", &resumed, "full", 6, &[]);
    first.extend(["--stop-after".into(), "3".into()]);
    let (ok, _, err) = run_strings(&first);
    assert!(ok, "{err}");
    let (ok, _, err) = resume(&resumed);
    assert!(ok, "{err}");
    assert_eq!(losses(&resumed.join("metrics.jsonl")), losses(&straight.join("metrics.jsonl")));
    let bytes = read(resumed.join("model.safetensors"));
    assert_eq!(bytes, read(straight.join("model.safetensors")), "the same weights, bit for bit");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensors().iter().all(|(_, t)| t.dtype() == safetensors::Dtype::BF16), "written back in the source's dtype");
}

/// Kill `tinytune train` at arbitrary moments (often in the middle of writing a checkpoint) and
/// resume each time: the run must end exactly where an uninterrupted one does.
#[test]
fn a_run_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let steps = 30;
    let extra = ["--checkpoint-every", "1"];
    let straight = temp("kill-straight");
    let (ok, _, err) = run_strings(&train_args("tiny-llama", &straight, "full", steps, &extra));
    assert!(ok, "{err}");

    let out = temp("kill-resumed");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    loop {
        // Killed before the first checkpoint: nothing to resume, start again.
        let args = if out.join("checkpoint.json").exists() {
            vec!["train".to_string(), "--device".into(), "cpu".into(), "--resume".into(), out.display().to_string(), "--out".into(), out.display().to_string()]
        } else {
            train_args("tiny-llama", &out, "full", steps, &extra)
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_tinytune"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if kills < 10 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let wait = std::time::Duration::from_millis(20 + rng % 180);
            let t = std::time::Instant::now();
            while t.elapsed() < wait && child.try_wait().unwrap().is_none() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                continue;
            }
        }
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "the run failed after {kills} kills: {}", String::from_utf8_lossy(&o.stderr));
        break;
    }
    assert!(kills >= 3, "the test must actually interrupt the run (killed {kills} times)");
    assert_eq!(metric_steps(&out), (1..=steps as u64).collect::<Vec<_>>());
    assert_eq!(losses(&out.join("metrics.jsonl")), losses(&straight.join("metrics.jsonl")));
    assert_eq!(read(out.join("model.safetensors")), read(straight.join("model.safetensors")));
}

#[test]
fn train_reports_a_bad_data_line_by_number() {
    let bad = temp("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let data = bad.join("d.jsonl");
    std::fs::write(&data, "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n").unwrap();
    let (ok, _, err) = run(&["train", "--device", "cpu", "--model", fixture("tiny-llama").to_str().unwrap(), "--data",
        data.to_str().unwrap(), "--out", bad.join("o").to_str().unwrap(), "--steps", "1"]);
    assert!(!ok);
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_finished_run_leaves_its_adapter_untracked_and_a_later_step_tracks_it_again() {
    let mut m = model();
    let cfg = TrainConfig { steps: 3, batch_size: 4, seq_len: 64, lr: 1e-2, ..TrainConfig::default() };
    block_on(lora::attach(&mut m, "default", &LoraConfig { r: 4, ..LoraConfig::default() }, 1)).unwrap();
    let train = examples(&m);
    let mut t = Trainer::new(&mut m, cfg, train).unwrap();
    block_on(t.step(&mut m)).unwrap();
    let tracked = |m: &Model| m.arch.linears().iter().all(|(_, l)| l.adapters.iter().all(|a| a.a.is_require_grad() && a.b.is_require_grad()));
    let untracked = |m: &Model| m.arch.linears().iter().all(|(_, l)| l.adapters.iter().all(|a| !a.a.is_require_grad() && !a.b.is_require_grad()));
    assert!(tracked(&m), "training tracks the adapter");
    t.release(&mut m).unwrap();
    assert!(untracked(&m), "a released adapter records no graph in later forward passes");
    let b = block_on(read_f32(m.arch.linears()[0].1.adapter("default").unwrap().b.clone())).unwrap();
    assert!(!block_on(t.step(&mut m)).unwrap().skipped);
    assert!(tracked(&m));
    let b2 = block_on(read_f32(m.arch.linears()[0].1.adapter("default").unwrap().b.clone())).unwrap();
    assert_ne!(b, b2, "the step after a release still trains");
}

#[test]
fn an_optimizer_state_of_another_shape_is_refused_before_it_is_used() {
    let mut m = model();
    block_on(lora::attach(&mut m, "default", &LoraConfig { r: 4, ..LoraConfig::default() }, 1)).unwrap();
    let train = examples(&m);
    let cfg = TrainConfig { steps: 2, batch_size: 2, seq_len: 64, ..TrainConfig::default() };
    let mut t = Trainer::new(&mut m, cfg, train).unwrap();
    block_on(t.step(&mut m)).unwrap();
    let state = block_on(t.optimizer_state()).unwrap();
    let cursor = t.cursor.clone();
    // The state as saved goes back in.
    t.restore(&mut m, cursor.clone(), state.clone()).unwrap();
    // A moment of the wrong shape (a rank-8 run's), one with too few values, and one naming a
    // parameter the run does not have: each is an error, none a panic.
    let (name, values, [r, c]) = state[0].clone();
    let bad_shape = vec![(name.clone(), vec![0.0; values.len() * 2], [r * 2, c])];
    let short = vec![(name.clone(), values[1..].to_vec(), [r, c])];
    let unknown = vec![("m.100000".to_string(), values.clone(), [r, c])];
    for bad in [bad_shape, short, unknown] {
        let err = t.restore(&mut m, cursor.clone(), bad).unwrap_err().to_string();
        assert!(err.contains("does not match this run's parameters"), "{err}");
    }
}

#[test]
fn run_sizes_past_the_limits_are_refused_with_their_names() {
    let ok = TrainConfig { steps: 1, ..TrainConfig::default() };
    assert!(ok.validate().is_ok());
    let cases = [
        (TrainConfig { batch_size: 1 << 20, ..ok.clone() }, "batch size 1048576"),
        (TrainConfig { batch_size: 1024, seq_len: 1 << 16, ..ok.clone() }, "batch size × seq len"),
        (TrainConfig { steps: usize::MAX, ..ok.clone() }, "steps 18446744073709551615"),
        (TrainConfig { steps: 0, epochs: f64::INFINITY, ..ok.clone() }, "epochs inf"),
        (TrainConfig { beta2: 1.0, ..ok.clone() }, "betas"),
        (TrainConfig { max_grad_norm: f64::NAN, ..ok.clone() }, "max grad norm"),
        (TrainConfig { lora: LoraConfig { r: 1 << 20, ..LoraConfig::default() }, ..ok.clone() }, "rank r 1048576"),
    ];
    for (cfg, want) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn an_example_longer_than_the_context_is_refused_before_training() {
    let mut m = model();
    block_on(lora::attach(&mut m, "default", &LoraConfig { r: 2, ..LoraConfig::default() }, 1)).unwrap();
    let n = m.context() + 2;
    let long = vec![tinytune::train::data::Example::new(vec![1; n], vec![true; n])];
    let cfg = TrainConfig { steps: 1, batch_size: 1, seq_len: n, ..TrainConfig::default() };
    let err = Trainer::new(&mut m, cfg, long).err().expect("refused").to_string();
    assert!(err.contains("longer than the model's context"), "{err}");
}

#[test]
fn measuring_a_step_times_two_lora_steps_and_leaves_the_model_as_it_was() {
    use tinytune::train::estimate::measure_step;
    let mut m = model();
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(vec![1i64, 5, 9, 14, 3], [1, 5]), &m.device);
    let before = block_on(read_f32(m.forward(ids.clone(), None, None))).unwrap();
    let cfg = TrainConfig { batch_size: 3, seq_len: 16, ..TrainConfig::default() };
    let timing = block_on(measure_step(&mut m, &cfg)).unwrap();
    assert_eq!(timing.tokens, 3 * 16);
    assert!(timing.seconds > 0.0 && timing.first_seconds > 0.0, "{timing:?}");
    assert!((timing.seconds_for(6 * 16) / timing.seconds - 2.0).abs() < 1e-9);
    assert!(m.arch.linears().iter().all(|(_, l)| l.adapters.is_empty()), "the measured adapter must be gone");
    let after = block_on(read_f32(m.forward(ids, None, None))).unwrap();
    assert!(before.iter().zip(&after).all(|(a, b)| a.to_bits() == b.to_bits()), "the model's logits changed");

    // A held adapter is not replaced, and other methods are refused.
    block_on(lora::attach(&mut m, "default", &LoraConfig::default(), 1)).unwrap();
    let err = block_on(measure_step(&mut m, &cfg)).unwrap_err().to_string();
    assert!(err.contains("holds an adapter"), "{err}");
    let err = block_on(measure_step(&mut m, &TrainConfig { method: Method::Full, ..cfg })).unwrap_err().to_string();
    assert!(err.contains("LoRA only"), "{err}");
}
