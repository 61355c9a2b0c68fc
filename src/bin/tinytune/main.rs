//! The native `tinytune` command: the same core as the page, on Vulkan, Metal, DX12, CUDA or CPU.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use futures_lite::future::block_on;
use tinytune::device::{self, DeviceChoice};
use tinytune::generate::Sampling;
use tinytune::model::Model;

mod args;
mod commands;

use args::*;
use commands::*;

fn main() -> ExitCode {
    tinytune::device::keep_freed_memory();
    tinytune::device::quiet_vulkan_layer_without_display();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> tinytune::Result<()> {
    match command {
        Command::Serve { host, port, root, models } => {
            let models = models.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tinytune/models")));
            let server = tinytune::serve::Server::bind(&host, port, &root)?.with_models(models);
            println!("tinytune playground: http://{}/  (serving {})", server.local_addr(), server.root().display());
            if let Some(dir) = server.models() {
                eprintln!("offering the .gguf models in {} under /models/", dir.display());
            }
            server.run();
            Ok(())
        }
        Command::Check { device, json } => {
            let choice: DeviceChoice = device.parse()?;
            let opened = device::open(choice)?;
            eprintln!("device: {}", opened.info.summary());
            let got = futures_lite::future::block_on(tinytune::check::run(&opened.device))?;
            let want = tinytune::check::reference();
            let diff = got.max_abs_diff(&want);
            if json {
                let out = serde_json::json!({ "device": opened.info, "result": got, "max_abs_diff_vs_reference": diff });
                println!("{out}");
            } else {
                println!("loss {:.6} (reference {:.6}), max |Δ| over loss and gradients: {diff:.2e}", got.loss, want.loss);
            }
            if diff > 1e-4 {
                return Err(tinytune::Error::device(format!(
                    "the device disagrees with the reference by {diff:.2e} (tolerance 1e-4)"
                )));
            }
            let q4 = block_on(tinytune::check::q4(&opened.device))?;
            if json {
                println!("{}", serde_json::json!({ "q4": q4 }));
            } else {
                println!(
                    "4-bit kernels: dequantization {} the CPU path bit for bit on {} matrices; fused multiply within {:.1e}",
                    if q4.equal { "equals" } else { "DIFFERS FROM" },
                    q4.cases.len(),
                    q4.fused_max_rel_diff
                );
            }
            if !q4.trusted {
                return Err(tinytune::Error::device("the 4-bit kernels disagree with the CPU path on this device: QLoRA here cannot be trusted"));
            }
            Ok(())
        }
        Command::Eval { model, adapter, data, valid_of, task, limit, shots, seq_len, json, quantize, double_quant, device } => {
            let opened = open_device(&device)?;
            let quantize = quantize.map(|q| quant_config(&q, &double_quant)).transpose()?;
            if let Some(run_path) = valid_of {
                let text = std::fs::read_to_string(&run_path).map_err(|e| tinytune::Error::io(&run_path, e))?;
                let run = tinytune::train::run::RunConfig::from_toml(&text)?;
                if run.valid_fraction <= 0.0 {
                    return Err(tinytune::Error::input(format!("{}: valid_fraction is 0, so the run had no held-out split", run_path.display())));
                }
                let model = load_model(&model, adapter.as_deref(), quantize, &opened)?;
                let data = tinytune::train::data::read_dataset(std::path::Path::new(&run.data), &model.tokenizer, &run.data_options())?;
                let (_, valid) = tinytune::train::batch::split(data.examples, run.valid_fraction, run.seed);
                let (loss, tokens) = block_on(tinytune::train::loss::evaluate_examples(&model, &valid, run.batch_size, run.seq_len))?;
                if json {
                    println!("{}", serde_json::json!({ "loss": loss, "perplexity": loss.exp(), "tokens": tokens, "examples": valid.len() }));
                } else {
                    println!("valid loss {loss:.6}  perplexity {:.4}  target tokens {tokens}  examples {}", loss.exp(), valid.len());
                }
                return Ok(());
            }
            if let Some(task) = task {
                let task = tinytune::tasks::Task::load(&task)?.few_shot(shots)?;
                let model = load_model(&model, adapter.as_deref(), quantize, &opened)?;
                let report = block_on(tinytune::tasks::evaluate(&model, &task, limit, |done, total| {
                    eprint!("\r{}: {done}/{total}", task.name);
                }))?;
                eprintln!();
                if json {
                    println!("{}", serde_json::to_string(&report).expect("report serialises"));
                } else {
                    for m in &report.metrics {
                        println!("{}: {} {:.1}% ({} examples)", report.task, m.label, 100.0 * m.score, report.examples);
                    }
                }
                return Ok(());
            }
            let data = data.expect("clap requires --data without --task");
            let texts = tinytune::train::data::read_texts(&data)?;
            let model = load_model(&model, adapter.as_deref(), quantize, &opened)?;
            let report = block_on(tinytune::eval::eval_loss(&model, &texts, seq_len, |done, total| {
                if total > 20 && (done % 10 == 0 || done == total) {
                    eprint!("\revaluating: {done}/{total} records");
                    if done == total {
                        eprintln!();
                    }
                }
            }))?;
            if json {
                println!("{}", serde_json::to_string(&report).expect("report serialises"));
            } else {
                println!("loss {:.6}  perplexity {:.4}  tokens {}", report.loss, report.perplexity, report.tokens);
            }
            Ok(())
        }
        Command::Generate { model, adapter, adapters, route, prompt, chat, max_new_tokens, temperature, top_k, top_p, seed, ignore_eos, device } => {
            use std::io::Write;
            let opened = open_device(&device)?;
            let mut model = load_model(&model, adapter.as_deref(), None, &opened)?;
            let kept = model.keep_bf16_weights();
            if kept > 0 {
                let mib = |b: usize| b as f64 / 1048576.0;
                eprintln!(
                    "model: {kept} weight matrices kept in bf16 (every value of them is one), computed in f32 ({:.1} MiB of weights; {:.1} MiB in f32)",
                    mib(model.summary.base_bytes),
                    mib(model.summary.f32_bytes)
                );
            }
            let sampling = Sampling { max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos: !ignore_eos };
            if adapters.is_some() || prompt.len() > 1 {
                return generate_batch(&mut model, adapters.as_deref(), route.as_deref(), &prompt, &sampling, chat);
            }
            let ids = if chat { tinytune::generate::chat_prompt(&model, &prompt[0])? } else { model.tokenizer.encode(&prompt[0], true)? };
            let started = std::time::Instant::now();
            let mut stdout = std::io::stdout();
            let (new, stop) = block_on(tinytune::generate::generate(&model, &ids, &sampling, |_, text| {
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
                true
            }))?;
            println!();
            let secs = started.elapsed().as_secs_f64();
            eprintln!("{} tokens in {secs:.2} s ({:.1} tokens/s), stopped: {stop:?}", new.len(), new.len() as f64 / secs);
            Ok(())
        }
        Command::Train(args) => {
            let run = run_config(&args)?;
            let opened = open_device(&run.device)?;
            let summary = tinytune::native::train(run, args.resume.as_deref(), args.stop_after, &opened, false)?;
            let peak = summary.peak_rss_bytes.map_or("unknown".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0));
            eprintln!("wrote {}", summary.out.display());
            println!(
                "trained {} steps ({} skipped), {} tokens in {:.1} s: {:.0} train tokens/s; final loss {:.4}{}; peak memory {peak} (process RSS)",
                summary.steps,
                summary.skipped_steps,
                summary.tokens,
                summary.seconds,
                summary.tokens_per_second,
                summary.final_loss,
                summary.best_valid_loss.map_or(String::new(), |v| format!(", best valid loss {v:.4}")),
            );
            Ok(())
        }
        Command::Pretrain(args) => pretrain(&args),
        Command::Quantize { model, out, quant_type, double_quant } => {
            let q = quant_config(&quant_type, &double_quant)?;
            let opened = device::cpu();
            let mut m = Model::load_dir(&model, &opened.device)?;
            if let Some(have) = m.quantization() {
                return Err(tinytune::Error::input(format!(
                    "{} is already stored in {} bits ({}): quantize the f32 model it came from",
                    model.display(),
                    4,
                    have.quant_type.name()
                )));
            }
            let n = block_on(m.quantize_linears(q))?;
            let files = block_on(m.save_files())?;
            let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
            tinytune::files::write_files(&out, &refs)?;
            let (mut params, mut stored, mut on_device) = (0usize, 0usize, 0usize);
            for (_, l) in m.arch.linears() {
                if let tinytune::model::layers::Base::Quant(t) = &l.base {
                    params += t.layout.numel();
                    stored += t.layout.storage_bytes();
                    on_device += t.layout.bytes();
                }
            }
            eprintln!(
                "quantized {n} linear weights ({params} parameters) to {}{}: {:.3} bits a weight as stored, {:.3} on the \
                 device with each matrix's code tables; weights {:.2} MiB (f32 {:.2} MiB); wrote {}",
                q.quant_type.name(),
                if q.double_quant { " with double quantization" } else { "" },
                stored as f64 * 8.0 / params as f64,
                on_device as f64 * 8.0 / params as f64,
                m.summary.base_bytes as f64 / 1048576.0,
                m.summary.f32_bytes as f64 / 1048576.0,
                out.display()
            );
            Ok(())
        }
        Command::Init { config, tokenizer, out, seed } => {
            let config_text = std::fs::read_to_string(&config).map_err(|e| tinytune::Error::io(&config, e))?;
            let tok = std::fs::read(&tokenizer).map_err(|e| tinytune::Error::io(&tokenizer, e))?;
            let files = tinytune::model::init::random_model(&config_text, tok, seed)?;
            // Load it once: the same checks as any model folder (tokenizer vs vocab, shapes).
            let model = Model::load(&files, &tinytune::device::cpu().device)?;
            let mut named: Vec<(String, Vec<u8>)> = vec![("config.json".into(), files.config.into_bytes())];
            named.extend(files.weights);
            named.push(("tokenizer.json".into(), files.tokenizer.unwrap_or_default()));
            let refs: Vec<(&str, &[u8])> = named.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
            tinytune::files::write_files(&out, &refs)?;
            eprintln!("wrote {} ({} parameters, {})", out.display(), model.summary.parameters, model.summary.model_type);
            Ok(())
        }
        Command::Memory { config, batch_size, seq_len, rank, targets, optimizer, bf16_activations, checkpointing, json } => {
            use tinytune::inspect::calculator;
            let text = match calculator::config_text(&config) {
                Some(t) => t.to_string(),
                None => std::fs::read_to_string(&config).map_err(|e| {
                    tinytune::Error::input(format!("--config {config}: {e} (give a config.json, or a preset: gpt2-124m, llama-3-8b, llama-2-65b)"))
                })?,
            };
            let cfg = tinytune::model::ModelConfig::from_json(&text)?;
            let run = tinytune::inspect::memory::RunShape {
                method: tinytune::train::trainer::Method::Lora,
                rank,
                targets: tinytune::lora::Targets::parse(&targets),
                partial_layers: 1,
                optimizer: match optimizer.as_str() {
                    "adamw" => tinytune::train::trainer::Optimizer::Adamw,
                    "sgd" => tinytune::train::trainer::Optimizer::Sgd,
                    other => return Err(tinytune::Error::input(format!("--optimizer {other}: use adamw or sgd"))),
                },
                batch: batch_size,
                seq: seq_len,
                nf4: false,
                quant_bits: tinytune::inspect::memory::NF4_BITS,
                kept8_bits: None,
                kept8_saved: None,
            };
            let a = calculator::Assumptions { bf16_activations, checkpointing };
            let rows = calculator::table(&cfg, &run, a)?;
            if json {
                println!("{}", serde_json::json!({ "rows": rows, "assumptions": a, "formula": calculator::formula(a) }));
            } else {
                let gib = |b: f64| {
                    if b >= (1u64 << 30) as f64 { format!("{:.2} GiB", b / (1u64 << 30) as f64) } else { format!("{:.1} MiB", b / 1048576.0) }
                };
                println!("{} parameters; batch {batch_size} x {seq_len} tokens; LoRA r {rank} on {targets}; {optimizer}", calculator::shape_of(&cfg).params);
                println!("| method | weights | trainable | gradients | optimizer | activations | total |");
                println!("|---|---|---|---|---|---|---|");
                for r in &rows {
                    let p = &r.parts;
                    println!("| {} | {} | {} | {} | {} | {} | **{}** |", r.method, gib(p.weights), gib(p.trainable), gib(p.gradients), gib(p.optimizer), gib(p.activations), gib(r.total));
                }
                println!("{}", calculator::formula(a));
            }
            Ok(())
        }
        Command::ExportGguf { model, adapter, lora_only, r#type, out, device } => {
            use tinytune::model::gguf_write;
            let bytes = if lora_only {
                let adapter = adapter.as_ref().ok_or_else(|| tinytune::Error::input("--lora-only writes --adapter: give --adapter"))?;
                let base = tinytune::model::ModelFiles::from_dir(&model)?;
                let a = tinytune::lora::peft::PeftAdapter::read_dir(adapter)?;
                gguf_write::export_lora(&a.modules, a.config.lora_alpha, a.config.r, a.config.use_rslora, &base.config)?
            } else {
                let kind: gguf_write::OutType = r#type.parse()?;
                let opened = open_device(&device)?;
                let mut m = load_model(&model, adapter.as_deref(), None, &opened)?;
                if adapter.is_some() {
                    block_on(tinytune::merge::into_base(&mut m, "default"))?;
                }
                let files = tinytune::model::ModelFiles::from_named(block_on(m.save_files_as(safetensors::Dtype::F32))?)?;
                gguf_write::export_model(&files, kind)?
            };
            tinytune::files::write_file(&out, &bytes)?;
            eprintln!("wrote {} ({:.1} MiB)", out.display(), bytes.len() as f64 / 1048576.0);
            Ok(())
        }
        Command::Merge(args) => merge(&args),
        Command::MergeModels { config, out, seed } => merge_models(&config, &out, seed),
        Command::BenchServe { model, adapters, prompts, max_new_tokens, json, device } => {
            let opened = open_device(&device)?;
            let adapters: Vec<(String, PathBuf)> = adapters
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|spec| {
                    spec.split_once('=')
                        .map(|(n, d)| (n.trim().to_string(), PathBuf::from(d.trim())))
                        .ok_or_else(|| tinytune::Error::input(format!("--adapters: '{spec}' is not name=folder")))
                })
                .collect::<tinytune::Result<_>>()?;
            let prompts: Vec<String> = match &prompts {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| tinytune::Error::io(path, e))?;
                    text.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["prompt"].as_str().map(String::from)).unwrap_or_else(|| l.to_string()))
                        .collect()
                }
                None => ["Once upon a time,", "The old man", "Where is the", "A cat sat on", "Anna went to the", "The weather today", "In the kitchen,", "He opened the door and"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            let files = tinytune::model::ModelFiles::from_dir(&model)?;
            let adapters = adapters
                .iter()
                .map(|(name, dir)| {
                    let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| tinytune::Error::io(dir.join(f), e));
                    Ok(tinytune::serving::AdapterFiles {
                        name: name.clone(),
                        config: String::from_utf8(read(tinytune::lora::peft::CONFIG_FILE)?).map_err(|_| tinytune::Error::input("adapter_config.json is not UTF-8"))?,
                        weights: read(tinytune::lora::peft::WEIGHTS_FILE)?,
                    })
                })
                .collect::<tinytune::Result<Vec<_>>>()?;
            let reports = block_on(tinytune::serving::measure(&files, &opened.device, &adapters, &prompts, max_new_tokens, |m| eprintln!("serving: {m}")))?;
            if json {
                println!("{}", serde_json::to_string(&reports).expect("reports serialise"));
            } else {
                println!("| mode | requests | tokens | tokens/s | time to first token | memory |");
                println!("|---|---|---|---|---|---|");
                for r in &reports {
                    let mem = r.memory_bytes.map_or("–".into(), |b| format!("{:.1} MiB ({})", b as f64 / 1048576.0, r.memory_source));
                    println!("| {} | {} | {} | {:.1} | {:.1} ms | {mem} |", r.mode, r.requests, r.tokens, r.tokens_per_second, r.time_to_first_token_ms);
                }
            }
            Ok(())
        }
        Command::ExtractLora { base, tuned, rank, out, json } => {
            let cpu = device::cpu();
            let b = Model::load_dir(&base, &cpu.device)?;
            let t = Model::load_dir(&tuned, &cpu.device)?;
            let (adapter, energy) = block_on(tinytune::merge::extract::extract(&b, &t, rank, &base.display().to_string()))?;
            let (config, weights) = adapter.to_files()?;
            tinytune::files::write_files(&out, &[(tinytune::lora::peft::CONFIG_FILE, config.as_bytes()), (tinytune::lora::peft::WEIGHTS_FILE, &weights)])?;
            if json {
                println!("{}", serde_json::to_string(&energy).expect("energy serialises"));
            } else {
                for e in &energy {
                    println!("{:<48} ‖ΔW‖ {:.4e}  energy kept at rank {rank}: {:.2}%", e.path, e.norm, 100.0 * e.kept);
                }
            }
            let total: f64 = energy.iter().map(|e| e.norm * e.norm).sum();
            let kept: f64 = energy.iter().map(|e| e.norm * e.norm * e.kept).sum();
            eprintln!(
                "extracted a rank-{rank} adapter on {} modules ({:.2}% of the change's energy overall); wrote {}",
                energy.len(),
                if total > 0.0 { 100.0 * kept / total } else { 100.0 },
                out.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_has_its_own_help_line() {
        let cli = super::Cli::command();
        cli.clone().debug_assert();
        let about = |name: &str| cli.find_subcommand(name).and_then(|c| c.get_about()).map(|a| a.to_string()).unwrap_or_default();
        for sub in cli.get_subcommands() {
            assert!(!about(sub.get_name()).is_empty(), "`tinytune {}` has no help line", sub.get_name());
        }
        // Each line belongs to its command (serve's once sat on top of memory's).
        assert!(about("serve").starts_with("Serve the playground page"), "{}", about("serve"));
        assert!(about("memory").starts_with("The memory calculator"), "{}", about("memory"));
    }
}
