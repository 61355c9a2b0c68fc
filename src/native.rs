//! `tinytune train` natively (a driver over `train`, `lora` and `inspect`, as the page's worker
//! is in wasm): files in, progress on stderr, `metrics.jsonl`, checkpoints written
//! atomically, and the result (a PEFT adapter, or a Hugging Face model folder for full and
//! partial finetuning) in `--out`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_lite::future::block_on;
use serde::Serialize;

use crate::train::data::{read_dataset, split};
use crate::train::run::RunConfig;
use crate::train::checkpoint::{CHECKPOINT, OPTIMIZER_FILE, STATE_FILE, TrainerState, checkpoint_files, parse_optimizer, result_files};
use crate::train::trainer::{Method, Trainer};
use crate::device::{self, OpenedDevice};
use crate::inspect::memory;
use crate::lora::{self, peft};
use crate::model::Model;
use crate::{Error, Result};


#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub skipped_steps: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub final_loss: f64,
    pub best_valid_loss: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub out: PathBuf,
    pub losses: Vec<f64>,
}


fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s % 3600 / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// Load the model on an autodiff device, attach or restore the trainable part, and train.
/// `quiet` turns off the progress line (tests).
pub fn train(mut run: RunConfig, resume: Option<&Path>, stop_after: Option<usize>, opened: &OpenedDevice, quiet: bool) -> Result<TrainSummary> {
    let resumed: Option<TrainerState> = match resume {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join(STATE_FILE)).map_err(|e| {
                Error::input(format!("--resume {}: {e} (pass the checkpoint folder a run wrote into its --out)", dir.display()))
            })?;
            let state = TrainerState::parse(&text, &dir.join(STATE_FILE).display().to_string())?;
            // The checkpoint's run config wins except for where to write.
            let out = run.out.clone();
            run = RunConfig { out, ..state.run.clone() };
            Some(state)
        }
        None => None,
    };
    if run.model.is_empty() || run.data.is_empty() || run.out.is_empty() {
        return Err(Error::input("train needs --model, --data and --out (or a run.toml with those keys)"));
    }
    let cfg = run.train_config();
    cfg.validate()?;
    let out = PathBuf::from(&run.out);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let device = opened.device.clone().autodiff();
    let model_dir = match (resume, cfg.method) {
        (Some(dir), Method::Full | Method::Partial) => dir.to_path_buf(),
        _ => PathBuf::from(&run.model),
    };
    let mut model = Model::load_dir(&model_dir, &device)?;

    let opts = run.data_options();
    let data = read_dataset(Path::new(&run.data), &model.tokenizer, &opts)?;
    if !data.skipped.is_empty() {
        eprintln!("skipped {} bad lines in {} (first: line {}: {})", data.skipped.len(), run.data, data.skipped[0].line, data.skipped[0].reason);
    }
    if data.truncated > 0 {
        eprintln!("{} examples were longer than --seq-len {} and were truncated", data.truncated, cfg.seq_len);
    }
    let (train_set, valid_set) = match &run.valid_data {
        Some(v) => (data.examples, read_dataset(Path::new(v), &model.tokenizer, &opts)?.examples),
        None if run.valid_fraction > 0.0 => split(data.examples, run.valid_fraction, cfg.seed),
        None => (data.examples, Vec::new()),
    };
    if cfg.eval_every > 0 && valid_set.is_empty() {
        return Err(Error::input("--eval-every needs validation data: pass --valid-data FILE or --valid-fraction F"));
    }

    if let Some(note) = block_on(crate::train::trainer::prepare_base(&mut model, &cfg))? {
        eprintln!("{note}");
    }
    let base_in_use = device.memory_pool_usage().map(|u| u.bytes_in_use);
    match (cfg.method.is_adapter(), resume) {
        (true, Some(dir)) => {
            peft::PeftAdapter::read_dir(dir)?.load_into(&mut model, "default")?;
        }
        (true, None) => {
            block_on(lora::attach(&mut model, "default", &cfg.lora, cfg.seed))?;
        }
        _ => {}
    }
    let mut trainer = Trainer::new(&mut model, cfg.clone(), train_set)?;
    if let (Some(state), Some(dir)) = (resumed, resume) {
        trainer.restore(state.cursor, read_optimizer(&dir.join(OPTIMIZER_FILE))?)?;
    }

    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(resume.is_some())
        .write(true)
        .truncate(resume.is_none())
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let mut log = |v: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{v}").map_err(|e| Error::io(&metrics_path, e))
    };
    std::fs::write(out.join("run.toml"), run.to_toml()).map_err(|e| Error::io(out.join("run.toml"), e))?;

    let started = Instant::now();
    let (mut tokens, mut skipped, mut losses) = (0usize, 0usize, Vec::new());
    let mut best: Option<Vec<(String, Vec<u8>)>> = None;
    let first_step = trainer.cursor.step;
    let mut last_print = Instant::now();
    while !trainer.done() {
        let r = block_on(trainer.step(&mut model))?;
        tokens += r.tokens;
        losses.push(r.loss);
        if r.skipped {
            skipped += 1;
            eprintln!("\nstep {}: loss or gradient is not finite; the update was skipped ({} in a row)", r.step, trainer.cursor.nan_streak);
        }
        let secs = started.elapsed().as_secs_f64();
        let done_here = (r.step - first_step) as f64;
        let eta = secs / done_here.max(1.0) * (r.total_steps - r.step) as f64;
        log(serde_json::json!({"step": r.step, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm, "tokens": r.tokens,
            "tokens_per_second": tokens as f64 / secs, "elapsed": secs, "skipped": r.skipped}))?;
        if !quiet && (last_print.elapsed().as_secs_f64() > 0.5 || trainer.done()) {
            last_print = Instant::now();
            let width = 24;
            let filled = width * r.step / r.total_steps.max(1);
            eprint!(
                "\r[{}{}] step {}/{}  loss {:.4}  {:.0} tok/s  ETA {}   ",
                "#".repeat(filled),
                "-".repeat(width - filled),
                r.step,
                r.total_steps,
                r.loss,
                tokens as f64 / secs,
                fmt_duration(eta)
            );
        }
        let evaluate_now = cfg.eval_every > 0 && (r.step % cfg.eval_every == 0 || trainer.done());
        if evaluate_now {
            let valid = block_on(trainer.evaluate(&mut model, &valid_set))?;
            let improved = trainer.record_eval(valid);
            log(serde_json::json!({"step": r.step, "valid_loss": valid, "valid_perplexity": valid.exp(), "best": improved}))?;
            if !quiet {
                eprintln!("\nstep {}: valid loss {valid:.4} (perplexity {:.3}){}", r.step, valid.exp(), if improved { ", best so far" } else { "" });
            }
            if improved {
                best = Some(block_on(result_files(&model, &run))?);
            }
            if trainer.should_stop_early() {
                eprintln!("early stop: no better valid loss in {} evaluations", cfg.patience);
                break;
            }
        }
        let pause = stop_after.is_some_and(|n| r.step - first_step >= n);
        let checkpoint_now = run.checkpoint_every > 0 && r.step % run.checkpoint_every == 0;
        if checkpoint_now || trainer.done() || pause {
            write_checkpoint(&out, &model, &trainer, &run)?;
        }
        if pause && !trainer.done() {
            eprintln!("\nstopped after {} steps as asked; continue with --resume {}", r.step - first_step, out.join(CHECKPOINT).display());
            break;
        }
    }
    if !quiet {
        eprintln!();
    }
    trainer.release(&mut model)?;
    if trainer.cursor.nan_streak >= cfg.nan_patience.max(1) {
        return Err(Error::input(format!(
            "training stopped: {} steps in a row had a non-finite loss or gradient. Lower --lr, or check the data",
            trainer.cursor.nan_streak
        )));
    }
    // The result: the best adapter by valid loss when there was validation, else the last.
    let files = match best {
        Some(f) => f,
        None => block_on(result_files(&model, &run))?,
    };
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    peft::write_files(&out, &refs)?;
    let seconds = started.elapsed().as_secs_f64();
    let ledger = write_ledger(&out, &mut model, &cfg, base_in_use)?;
    if !quiet {
        eprintln!("{}", ledger_line(&ledger));
    }
    Ok(TrainSummary {
        steps: trainer.cursor.step,
        skipped_steps: skipped,
        tokens,
        seconds,
        tokens_per_second: tokens as f64 / seconds,
        final_loss: losses.last().copied().unwrap_or(f64::NAN),
        best_valid_loss: trainer.cursor.best_valid,
        peak_rss_bytes: crate::device::peak_rss_bytes(),
        out,
        losses,
    })
}

/// The memory ledger of the run (the page's Memory view) as `<out>/memory.json`.
fn write_ledger(out: &Path, model: &mut Model, cfg: &crate::train::trainer::TrainConfig, base_in_use: Option<u64>) -> Result<memory::Ledger> {
    let shape = memory::ModelShape::of(model);
    let run = memory::RunShape::of(cfg, model);
    let predicted = memory::predict(&shape, &run);
    let base = memory::base_weights(model, predicted.weights, base_in_use);
    let ledger = memory::ledger(&shape, &run, memory::measure(&model.device), Some(base));
    let path = out.join("memory.json");
    std::fs::write(&path, serde_json::to_string_pretty(&ledger).expect("ledger serialises")).map_err(|e| Error::io(&path, e))?;
    Ok(ledger)
}

/// One line of the ledger for the terminal: the frozen base measured against the formula, and
/// the run's predicted total against what the device measured.
pub fn ledger_line(l: &memory::Ledger) -> String {
    let mib = |b: f64| format!("{:.1} MiB", b / 1048576.0);
    let mut s = String::from("memory:");
    if let Some(b) = &l.base {
        s += &format!(" frozen weights {} on the device (predicted {}", mib(b.device_bytes as f64), mib(b.predicted));
        if let (Some(q), Some(bits), Some(dev)) = (&b.quantization, b.linear_bits, b.linear_bits_on_device) {
            s += &format!("; linear weights in {q}: {bits:.3} bits each, {dev:.3} with the code tables");
        }
        s += ")";
    }
    if let Some(row) = l.rows.first() {
        s += &format!("; run predicted {}", mib(row.total));
    }
    if let Some(m) = &l.measured {
        s += &format!(", measured {} ({})", mib(m.reserved as f64), m.source);
    }
    s + "; ledger in memory.json"
}

/// Write `<out>/checkpoint/` atomically: build it beside, then swap it in.
fn write_checkpoint(out: &Path, model: &Model, trainer: &Trainer, run: &RunConfig) -> Result<()> {
    let tmp = out.join(format!("{CHECKPOINT}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    let files = block_on(checkpoint_files(model, trainer, run))?;
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    peft::write_files(&tmp, &refs)?;
    let dest = out.join(CHECKPOINT);
    let old = out.join(format!("{CHECKPOINT}.old"));
    let _ = std::fs::remove_dir_all(&old);
    if dest.exists() {
        std::fs::rename(&dest, &old).map_err(|e| Error::io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn read_optimizer(path: &Path) -> Result<Vec<(String, Vec<f32>, [usize; 2])>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_optimizer(&bytes, &path.display().to_string())
}

/// Open the run's device.
pub fn open_device(name: &str) -> Result<OpenedDevice> {
    device::open(name.parse()?)
}
