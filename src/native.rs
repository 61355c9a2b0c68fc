//! `tinytune train` natively (a driver over `train`, `lora` and `inspect`, as the page's worker
//! is in wasm): files in, progress on stderr, `metrics.jsonl`, checkpoints written
//! atomically, and the result (a PEFT adapter, or a Hugging Face model folder for full and
//! partial finetuning) in `--out`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_lite::future::block_on;
use serde::Serialize;

use crate::train::batch::split;
use crate::train::data::read_dataset;
use crate::train::run::RunConfig;
use crate::train::checkpoint::{BEST_DIR, CHECKPOINT, OPTIMIZER_FILE, STATE_FILE, TrainerState, checkpoint_files, parse_optimizer, result_files};
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
    let resumed: Option<Resumed> = match resume {
        Some(path) => {
            let r = find_checkpoint(path)?;
            // The checkpoint's run config wins except for where to write.
            let out = run.out.clone();
            run = RunConfig { out, ..r.state.run.clone() };
            Some(r)
        }
        None => None,
    };
    let resume: Option<PathBuf> = resumed.as_ref().map(|r| r.dir.clone());
    let resume = resume.as_deref();
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
    if let Some(limits) = &opened.info.limits {
        limits.check_step(cfg.batch_size, cfg.seq_len, model.config.vocab_size(), model.config.heads())?;
    }
    // A full or partial checkpoint holds f32 master weights; the result is written as the
    // source was.
    if let Some(dtype) = resumed.as_ref().and_then(|r| r.state.source_dtype.as_deref()) {
        model.source.dtype = match dtype {
            "F16" => safetensors::Dtype::F16,
            "BF16" => safetensors::Dtype::BF16,
            _ => safetensors::Dtype::F32,
        };
    }

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
            block_on(crate::train::checkpoint::restore_adapter(&mut model, &cfg, &peft::PeftAdapter::read_dir(dir)?))?;
        }
        (true, None) => {
            block_on(lora::attach(&mut model, "default", &cfg.lora, cfg.seed))?;
        }
        _ => {}
    }
    let mut trainer = Trainer::new(&mut model, cfg.clone(), train_set)?;
    let mut best: Option<Vec<(String, Vec<u8>)>> = None;
    if let Some(r) = resumed {
        trainer.restore(&mut model, r.state.cursor, r.optimizer)?;
        best = r.best;
    }

    let metrics_path = out.join("metrics.jsonl");
    if resume.is_some() {
        // Lines past the checkpoint (a run killed after writing them) would appear twice.
        keep_metrics_until(&metrics_path, trainer.cursor.step)?;
    }
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
        let mut line = serde_json::json!({"step": r.step, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm, "tokens": r.tokens,
            "tokens_per_second": tokens as f64 / secs, "elapsed": secs, "skipped": r.skipped});
        if let Some(d) = &r.dpo {
            line["rewards/chosen"] = d.chosen_reward.into();
            line["rewards/rejected"] = d.rejected_reward.into();
            line["rewards/accuracies"] = d.reward_accuracy.into();
            line["rewards/margins"] = d.reward_margin.into();
        }
        log(line)?;
        if !quiet && (last_print.elapsed().as_secs_f64() > 0.5 || trainer.done()) {
            last_print = Instant::now();
            let width = 24;
            let filled = width * r.step / r.total_steps.max(1);
            let rewards = r.dpo.as_ref().map_or(String::new(), |d| {
                format!("  reward acc {:.0}% margin {:+.3}", d.reward_accuracy * 100.0, d.reward_margin)
            });
            eprint!(
                "\r[{}{}] step {}/{}  loss {:.4}{rewards}  {:.0} tok/s  ETA {}   ",
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
            let files = block_on(checkpoint_files(&model, &trainer, &run, best.as_deref()))?;
            write_checkpoint(&out, r.step, &files)?;
        }
        if pause && !trainer.done() {
            eprintln!("\nstopped after {} steps as asked; continue with --resume {}", r.step - first_step, out.display());
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
    crate::files::write_files(&out, &refs)?;
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

/// The file in `--out` naming the newest complete checkpoint folder.
pub const POINTER: &str = "checkpoint.json";

/// Write a checkpoint so that a crash at any moment leaves a complete one to resume from: the
/// files go into a temporary folder (each fsynced), which is renamed to `checkpoint-<step>`;
/// only then does the pointer (`checkpoint.json`, replaced atomically) name it. The previous
/// checkpoint stays as a fallback; older ones are removed.
fn write_checkpoint(out: &Path, step: usize, files: &[(String, Vec<u8>)]) -> Result<()> {
    let name = format!("{CHECKPOINT}-{step:08}");
    let tmp = out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    crate::files::write_files(&tmp, &refs)?;
    let dest = out.join(&name);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    crate::files::sync_dir(out)?;
    let pointer = serde_json::json!({ "dir": name, "step": step });
    crate::files::write_file(&out.join(POINTER), pointer.to_string().as_bytes())?;
    let mut all = checkpoint_dirs(out);
    all.retain(|(_, d)| d != &dest);
    // Keep the newest other one (the fallback); remove the rest and any leftover temporaries.
    for (_, d) in all.iter().skip(1) {
        let _ = std::fs::remove_dir_all(d);
    }
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&format!(".{CHECKPOINT}-")) && n.ends_with(".tmp") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// The `checkpoint-<step>` folders of `out`, newest first.
fn checkpoint_dirs(out: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let step = n.strip_prefix(&format!("{CHECKPOINT}-"))?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found
}

/// A checkpoint read back whole.
struct Resumed {
    dir: PathBuf,
    state: TrainerState,
    optimizer: Vec<(String, Vec<f32>, [usize; 2])>,
    best: Option<Vec<(String, Vec<u8>)>>,
}

/// Read and check every file of one checkpoint folder.
fn read_checkpoint(dir: &Path) -> Result<Resumed> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state = TrainerState::parse(&text, &state_path.display().to_string())?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&opt_path).map_err(|e| Error::io(&opt_path, e))?;
    let optimizer = parse_optimizer(&bytes, &opt_path.display().to_string())?;
    if state.run.method.is_adapter() {
        peft::PeftAdapter::read_dir(dir)?;
    } else {
        crate::model::ModelFiles::from_dir(dir)?.largest_tensor()?;
    }
    let best_dir = dir.join(BEST_DIR);
    let best = if best_dir.is_dir() {
        let mut files = Vec::new();
        for e in std::fs::read_dir(&best_dir).map_err(|e| Error::io(&best_dir, e))? {
            let e = e.map_err(|e| Error::io(&best_dir, e))?;
            let bytes = std::fs::read(e.path()).map_err(|err| Error::io(e.path(), err))?;
            files.push((e.file_name().to_string_lossy().to_string(), bytes));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Some(files)
    } else {
        None
    };
    Ok(Resumed { dir: dir.to_path_buf(), state, optimizer, best })
}

/// The checkpoint `--resume PATH` means: a checkpoint folder itself, or a run's `--out` (its
/// pointer names the newest). A checkpoint that does not read back whole (a crash during a save)
/// gives way to the previous one, with a note.
fn find_checkpoint(path: &Path) -> Result<Resumed> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    let out = if path.join(STATE_FILE).exists() {
        candidates.push(path.to_path_buf());
        path.parent().map(Path::to_path_buf)
    } else if path.join(POINTER).exists() || !checkpoint_dirs(path).is_empty() {
        Some(path.to_path_buf())
    } else if path.file_name().is_some_and(|n| n == CHECKPOINT) && path.parent().is_some_and(|p| p.join(POINTER).exists()) {
        path.parent().map(Path::to_path_buf)
    } else {
        return Err(Error::input(format!(
            "--resume {}: no checkpoint there. Pass the --out folder of the run (it holds {POINTER} and checkpoint-<step> folders), or a checkpoint folder",
            path.display()
        )));
    };
    if let Some(out) = out.filter(|o| o.join(POINTER).exists() || !checkpoint_dirs(o).is_empty()) {
        if let Ok(text) = std::fs::read_to_string(out.join(POINTER)) {
            if let Some(name) = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["dir"].as_str().map(String::from)) {
                candidates.push(out.join(name));
            }
        }
        candidates.extend(checkpoint_dirs(&out).into_iter().map(|(_, d)| d));
    }
    candidates.dedup();
    let mut problems = Vec::new();
    for dir in &candidates {
        match read_checkpoint(dir) {
            Ok(r) => {
                if !problems.is_empty() {
                    eprintln!("resuming from {}: the newer checkpoint is incomplete ({})", dir.display(), problems.join("; "));
                }
                return Ok(r);
            }
            Err(e) => problems.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(Error::input(format!("--resume {}: no complete checkpoint ({})", path.display(), problems.join("; "))))
}

/// Drop the lines of `metrics.jsonl` past `step`, atomically.
fn keep_metrics_until(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::files::write_file(path, kept.as_bytes())
}

/// Open the run's device.
pub fn open_device(name: &str) -> Result<OpenedDevice> {
    device::open(name.parse()?)
}
