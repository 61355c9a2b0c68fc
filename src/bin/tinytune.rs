//! The native `tinytune` command: the same core as the page, on Vulkan, Metal, DX12, CUDA or CPU.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_lite::future::block_on;
use tinytune::device::{self, DeviceChoice};
use tinytune::generate::Sampling;
use tinytune::model::Model;
use tinytune::quant::bnb::QuantConfig;
use tinytune::train::run::RunConfig;

#[derive(Parser)]
#[command(name = "tinytune", version, about = "LoRA and QLoRA finetuning playground: the native twin of the page")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The memory calculator: the ledger's predicted bytes for full finetuning, LoRA and QLoRA
    /// of any config.json (or a preset: gpt2-124m, llama-3-8b, llama-2-65b), with the formula.
    Memory {
        /// A config.json file, or a preset's name.
        #[arg(long)]
        config: String,
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        #[arg(long, default_value_t = 16)]
        rank: usize,
        #[arg(long, default_value = "all-linear")]
        targets: String,
        /// adamw or sgd.
        #[arg(long, default_value = "adamw")]
        optimizer: String,
        /// Activations in bf16 (2 bytes), as mixed-precision training keeps them.
        #[arg(long)]
        bf16_activations: bool,
        /// Gradient checkpointing: keep only each block's input.
        #[arg(long)]
        checkpointing: bool,
        #[arg(long)]
        json: bool,
    },
    /// Export for llama.cpp: a model (with --adapter merged in) as one GGUF file, or with
    /// --lora-only the adapter as a GGUF LoRA (`llama-cli -m base.gguf --lora adapter.gguf`).
    ExportGguf {
        /// A Hugging Face model folder or a .gguf file.
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter folder: merged into the model, or exported alone with --lora-only.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Write only the adapter, as llama.cpp's GGUF LoRA (F32).
        #[arg(long)]
        lora_only: bool,
        /// The linear weights' type in a model export: f16 or q8_0 (norms stay f32).
        #[arg(long, default_value = "f16")]
        r#type: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Serve the playground page (www/ and its wasm bundle) on this machine.
    Serve {
        /// Address to bind. Loopback by default; use 0.0.0.0 only on a network you trust.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Folder to serve; nothing outside it is ever sent.
        #[arg(long, default_value = "www")]
        root: PathBuf,
        /// Offer the .gguf models of this folder to the page, read-only, under /models/
        /// (default: ~/.cache/tinytune/models, where scripts/get-model puts them).
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// Run the device check (a small forward + backward pass) and compare it with the hand-computed
    /// reference; then the 4-bit (QLoRA) kernels against the CPU path.
    Check {
        /// auto, cpu, wgpu (or cuda when built with --features cuda).
        #[arg(long, default_value = "auto")]
        device: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model's loss and perplexity on a data file.
    ///
    /// Each record (a JSONL line {"text": ...} or a non-empty line of a .txt file) is tokenized on
    /// its own, with special tokens as the tokenizer adds them, and truncated to --seq-len. The
    /// loss is the token-weighted mean cross-entropy of predicting token t+1 from tokens up to t.
    Eval {
        /// A Hugging Face model folder: config.json, *.safetensors, tokenizer.json.
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to apply.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// .jsonl with {"text": ...} per line, or .txt with one record per line.
        #[arg(long, required_unless_present_any = ["task", "valid_of"], conflicts_with_all = ["task", "valid_of"])]
        data: Option<PathBuf>,
        /// Instead of --data: the held-out split of a training run, given its run.toml (its data,
        /// valid_fraction, seed, seq_len and batch_size), scored as the trainer scores it: only
        /// the target tokens (completions, assistant turns) count. The page's "valid loss".
        #[arg(long, conflicts_with = "task")]
        valid_of: Option<PathBuf>,
        /// Instead of a loss: a task's metric, by built-in name (json, sql, style, qa) or folder
        /// (task.json + test.jsonl). Greedy generation, cut at the task's stop string.
        #[arg(long)]
        task: Option<String>,
        /// With --task: score only the first N test examples.
        #[arg(long)]
        limit: Option<usize>,
        /// With --task: few-shot prompting, the first K test examples (prompt and answer) written
        /// before every other test prompt, which are the ones scored.
        #[arg(long, default_value_t = 0)]
        shots: usize,
        /// Truncate each record to this many tokens (capped at the model's context).
        #[arg(long, default_value_t = 1024)]
        seq_len: usize,
        /// Print {"loss", "perplexity", "tokens"} as JSON.
        #[arg(long)]
        json: bool,
        /// Evaluate the base as QLoRA sees it: every linear weight stored in this 4-bit format
        /// (nf4 or fp4) first, with double quantization unless --double-quant false.
        #[arg(long)]
        quantize: Option<String>,
        /// With --quantize: quantize the absmaxes too (true or false).
        #[arg(long, default_value = "true")]
        double_quant: String,
        /// auto, cpu, wgpu (or cuda when built with --features cuda).
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Store a model's linear weights in 4 bits (NF4 or FP4, blocks of 64), exactly as
    /// bitsandbytes does, and write the folder transformers + bitsandbytes load (the
    /// `quantization_config` in config.json). Embeddings, norms and the output head stay f32.
    Quantize {
        /// A Hugging Face model folder.
        #[arg(long)]
        model: PathBuf,
        /// Output folder (created; existing files of the same names are replaced).
        #[arg(long)]
        out: PathBuf,
        /// nf4 (QLoRA's NormalFloat) or fp4.
        #[arg(long, default_value = "nf4")]
        quant_type: String,
        /// Quantize the absmaxes too: 8 bits in blocks of 256 (4.127 bits a weight, not 4.5).
        #[arg(long, default_value = "true")]
        double_quant: String,
    },
    /// Continue a prompt. Prints only the continuation, streamed; tokens/s goes to stderr.
    Generate {
        /// A Hugging Face model folder: config.json, *.safetensors, tokenizer.json.
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter folder to apply.
        #[arg(long, conflicts_with = "adapters")]
        adapter: Option<PathBuf>,
        /// Multi-LoRA serving: several adapters on one base, `name=folder,name=folder`; each
        /// prompt names its adapter with --route.
        #[arg(long)]
        adapters: Option<String>,
        /// With --adapters: one adapter name per prompt, comma-separated (`base` for none). The
        /// prompts run as one batch, each row through its own adapter.
        #[arg(long, requires = "adapters")]
        route: Option<String>,
        /// The text to continue. Repeat it for a batch (one row per prompt).
        #[arg(long, required = true)]
        prompt: Vec<String>,
        /// Treat the prompt as a user message: render it with the model's chat template (from
        /// tokenizer_config.json or chat_template.jinja) and generate the assistant's answer.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// 0 is greedy decoding.
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        /// Keep only the K most likely tokens (0: no limit).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Keep the smallest set of tokens whose probability reaches P (1: no limit).
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep going past the end-of-sequence token, to exactly --max-new-tokens (benchmarks).
        #[arg(long)]
        ignore_eos: bool,
        /// auto, cpu, wgpu (or cuda when built with --features cuda).
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Finetune a model: LoRA (default), full or partial. Writes a PEFT adapter (LoRA) or a
    /// Hugging Face model folder (full, partial) into --out, with metrics.jsonl, run.toml and a
    /// checkpoint/ to --resume from.
    Train(Box<TrainArgs>),
    /// Pretrain a model from scratch: train a byte-level BPE tokenizer on --data (or take
    /// --tokenizer), initialise the --config architecture with random weights, and train every
    /// parameter on the text. Writes a Hugging Face model folder into --out.
    Pretrain(Box<PretrainArgs>),
    /// Create a model with fresh random weights from a config.json and a tokenizer.json (the
    /// starting point of pretraining from scratch: then `tinytune train --method full`).
    Init {
        /// A Hugging Face config.json (gpt2, llama, mistral or qwen2).
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Merge a LoRA adapter into its base model: W ← W + s·A·B, computed in f32, written as a
    /// Hugging Face model folder in the base's dtype.
    ///
    /// With --adapters A,B,… instead: combine several adapters into one PEFT adapter, as PEFT's
    /// `add_weighted_adapter` does (see README: Merging).
    Merge(Box<MergeArgs>),
    /// Merge whole models from a mergekit YAML config (merge_method linear, task_arithmetic,
    /// ties, dare_ties, dare_linear or slerp; models or slices; per-model weight and density,
    /// gradients and filters; dtype / out_dtype) into a Hugging Face model folder, with mergekit's
    /// arithmetic. Model paths are read as given, else beside the config file.
    MergeModels {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// DARE's random draws (mergekit's --random-seed: the same seed gives the same masks).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Serving, measured: one base and N adapters, the same prompts served with the adapters
    /// merged into the weights, as a separate adapter on the base, as one multi-LoRA batch, and
    /// swapping adapters from disk per request. Prints tokens/s, time to first token and memory.
    BenchServe {
        #[arg(long)]
        model: PathBuf,
        /// `name=folder,name=folder`: request i uses adapter i mod N.
        #[arg(long)]
        adapters: String,
        /// One prompt per line (.txt) or {"prompt": ...} per line (.jsonl); default: 8 built-in prompts.
        #[arg(long)]
        prompts: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Extract a LoRA adapter from a finetuned model: the rank-r truncated SVD of each linear
    /// layer's change W_tuned − W_base, written as a PEFT adapter; prints the share of each
    /// module's change the r directions keep.
    ExtractLora {
        /// The model before finetuning.
        #[arg(long)]
        base: PathBuf,
        /// The finetuned model (same architecture).
        #[arg(long)]
        tuned: PathBuf,
        #[arg(long)]
        rank: usize,
        #[arg(long)]
        out: PathBuf,
        /// Print the per-module energy as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The base model. With --adapter, the adapter is merged into it; with --adapters, the
    /// combined adapter is checked against it (every module must fit).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A PEFT LoRA adapter folder to merge into --model (W ← W + s·A·B).
    #[arg(long, conflicts_with = "adapters")]
    adapter: Option<PathBuf>,
    /// Adapter folders to combine, comma-separated.
    #[arg(long, required_unless_present = "adapter")]
    adapters: Option<String>,
    /// One weight per adapter, comma-separated (negative ones subtract). Default: 1 each.
    #[arg(long, allow_hyphen_values = true)]
    weights: Option<String>,
    /// linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd,
    /// magnitude_prune, magnitude_prune_svd.
    #[arg(long, default_value = "svd")]
    combination: String,
    /// For the pruning types: the fraction of values kept.
    #[arg(long)]
    density: Option<f64>,
    /// For the TIES types: total (sign of the sum) or frequency (sign of the count).
    #[arg(long, default_value = "total")]
    majority_sign: String,
    /// For the SVD types: the merged adapter's rank (default: the largest input rank).
    #[arg(long)]
    svd_rank: Option<usize>,
    /// For the SVD types: clamp the factors at this quantile of their entries.
    #[arg(long)]
    svd_clamp: Option<f64>,
    /// DARE's random draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// peft (PEFT's config: α = r, rsLoRA copied, so an rsLoRA merge is scaled by √r) or exact
    /// (scaling 1).
    #[arg(long, default_value = "peft")]
    scaling: String,
    /// Output folder (created; existing files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// auto, cpu, wgpu (or cuda when built with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// `generate` with several prompts in one batch, optionally each through its own adapter.
fn generate_batch(model: &mut Model, adapters: Option<&str>, route: Option<&str>, prompts: &[String], sampling: &Sampling, chat: bool) -> tinytune::Result<()> {
    use tinytune::Error;
    let mut names = Vec::new();
    for spec in adapters.unwrap_or("").split(',').filter(|s| !s.trim().is_empty()) {
        let (name, dir) = spec.split_once('=').ok_or_else(|| Error::input(format!("--adapters: '{spec}' is not name=folder")))?;
        let n = tinytune::lora::peft::PeftAdapter::read_dir(std::path::Path::new(dir.trim()))?.load_into(model, name.trim())?;
        eprintln!("adapter {}: {} on {n} layers", name.trim(), dir.trim());
        names.push(name.trim().to_string());
    }
    let per_row: Vec<Option<String>> = match route {
        Some(r) => r.split(',').map(|n| n.trim()).map(|n| (n != "base").then(|| n.to_string())).collect(),
        None => vec![names.first().cloned(); prompts.len()],
    };
    if per_row.len() != prompts.len() {
        return Err(Error::input(format!("{} prompts but --route names {} adapters: give one per prompt", prompts.len(), per_row.len())));
    }
    let refs: Vec<Option<&str>> = per_row.iter().map(|r| r.as_deref()).collect();
    if !names.is_empty() {
        tinytune::lora::route(model, &refs)?;
    }
    let ids = prompts
        .iter()
        .map(|p| if chat { tinytune::generate::chat_prompt(model, p) } else { model.tokenizer.encode(p, true) })
        .collect::<tinytune::Result<Vec<_>>>()?;
    let started = std::time::Instant::now();
    let rows = block_on(tinytune::generate::generate_batch(model, &ids, sampling, |_, _| true))?;
    let secs = started.elapsed().as_secs_f64();
    let total: usize = rows.iter().map(|r| r.ids.len()).sum();
    for ((row, p), adapter) in rows.iter().zip(prompts).zip(&per_row) {
        println!("[{}] {p}{}", adapter.as_deref().unwrap_or("base"), model.tokenizer.decode(&row.ids)?);
    }
    eprintln!("{total} tokens in {} rows in {secs:.2} s ({:.1} tokens/s)", rows.len(), total as f64 / secs);
    Ok(())
}

fn merge_models(config: &std::path::Path, out: &std::path::Path, seed: u64) -> tinytune::Result<()> {
    use tinytune::Error;
    use tinytune::merge::models::{Checkpoint, MergeConfig, merge};
    let text = std::fs::read_to_string(config).map_err(|e| Error::io(config, e))?;
    let cfg = MergeConfig::from_yaml(&text)?;
    let beside = config.parent().unwrap_or(std::path::Path::new("."));
    let resolve = |m: &str| -> PathBuf {
        let p = PathBuf::from(m);
        if p.exists() { p } else { beside.join(m) }
    };
    let mut models = std::collections::BTreeMap::new();
    for m in cfg.models() {
        let dir = resolve(&m);
        let files = tinytune::model::ModelFiles::from_dir(&dir)?;
        eprintln!("read {} ({:.1} MiB of weights)", dir.display(), files.weight_bytes() as f64 / 1048576.0);
        models.insert(m.clone(), Checkpoint::from_files(&files.config, &files.weights, &m)?);
    }
    let started = std::time::Instant::now();
    let merged = merge(&cfg, &models, seed)?;
    let donor_name = cfg.base_model.clone().unwrap_or_else(|| cfg.models().into_iter().next().expect("a model"));
    let donor = &models[&donor_name];
    let dtype = cfg.out_dtype.or(cfg.dtype).unwrap_or_else(|| {
        donor.tensors.values().next().map_or(safetensors::Dtype::F32, |(_, _, d)| *d)
    });
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = merged
        .into_iter()
        .map(|(k, (v, shape))| {
            let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            (k, dtype, shape, tinytune::model::load::encode_values(&v32, dtype))
        })
        .collect();
    let count = tensors.len();
    let weights = tinytune::model::load::serialize_typed(&tensors, "model.safetensors")?;
    let mut cfg_json = donor.config.clone();
    let dtype_name = match dtype {
        safetensors::Dtype::F16 => "float16",
        safetensors::Dtype::BF16 => "bfloat16",
        _ => "float32",
    };
    cfg_json["dtype"] = dtype_name.into();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("config.json".into(), serde_json::to_vec_pretty(&cfg_json).expect("config serialises")),
        ("model.safetensors".into(), weights),
        ("mergekit_config.yml".into(), text.into_bytes()),
    ];
    // The tokenizer files of the donor, else of the first model that has a tokenizer.
    let mut dirs = vec![resolve(&donor_name)];
    dirs.extend(cfg.models().iter().map(|m| resolve(m)));
    if let Some(dir) = dirs.iter().find(|d| d.join("tokenizer.json").exists()) {
        for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja", "special_tokens_map.json"] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                files.push((name.into(), bytes));
            }
        }
    } else {
        eprintln!("no model has a tokenizer.json: the merged folder has none either");
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    tinytune::files::write_files(out, &refs)?;
    eprintln!(
        "merged {} models with {:?} into {count} tensors ({dtype:?}) in {:.1} s; wrote {}",
        models.len(),
        cfg.method,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn merge(a: &MergeArgs) -> tinytune::Result<()> {
    use tinytune::Error;
    use tinytune::lora::peft::PeftAdapter;
    use tinytune::merge::combine::{CombineOptions, Scaling};
    if let Some(adapter) = &a.adapter {
        let model = a.model.as_ref().ok_or_else(|| Error::input("--adapter merges into --model: give --model too"))?;
        let opened = open_device(&a.device)?;
        let mut model = load_model(model, Some(adapter), None, &opened)?;
        let layers = block_on(tinytune::merge::into_base(&mut model, "default"))?;
        let files = block_on(model.save_files())?;
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        tinytune::files::write_files(&a.out, &refs)?;
        eprintln!("merged the adapter into {layers} layers; wrote {} ({:?})", a.out.display(), model.source.dtype);
        return Ok(());
    }
    let dirs: Vec<PathBuf> = a.adapters.as_deref().unwrap_or("").split(',').filter(|s| !s.trim().is_empty()).map(|s| PathBuf::from(s.trim())).collect();
    let adapters = dirs.iter().map(|d| PeftAdapter::read_dir(d)).collect::<tinytune::Result<Vec<_>>>()?;
    let weights: Vec<f64> = match &a.weights {
        Some(w) => w
            .split(',')
            .map(|x| x.trim().parse::<f64>().map_err(|_| Error::input(format!("--weights: '{x}' is not a number"))))
            .collect::<tinytune::Result<_>>()?,
        None => vec![1.0; adapters.len()],
    };
    let mut opts = CombineOptions::new(a.combination.parse()?, weights);
    opts.density = a.density;
    opts.majority_sign = a.majority_sign.parse()?;
    opts.svd_rank = a.svd_rank;
    opts.svd_clamp = a.svd_clamp;
    opts.seed = a.seed;
    opts.scaling = enum_value::<Scaling>("scaling", &a.scaling, "peft, exact")?;
    let refs: Vec<&PeftAdapter> = adapters.iter().collect();
    let (merged, _) = tinytune::merge::combine(&refs, &opts, None)?;
    if let Some(model) = &a.model {
        let mut m = Model::load_dir(model, &device::cpu().device)?;
        merged.load_into(&mut m, "merged")?;
    }
    let (config, weights) = merged.to_files()?;
    tinytune::files::write_files(&a.out, &[(tinytune::lora::peft::CONFIG_FILE, config.as_bytes()), (tinytune::lora::peft::WEIGHTS_FILE, &weights)])?;
    eprintln!(
        "combined {} adapters with {:?} into one of rank {} on {} modules; wrote {}",
        adapters.len(),
        opts.combination,
        merged.config.r,
        merged.modules.len(),
        a.out.display()
    );
    Ok(())
}

/// Every flag is also a key of run.toml (`--batch-size` is `batch_size`); flags override the file.
#[derive(clap::Args)]
struct TrainArgs {
    /// A run.toml with the same keys as these flags (the page's "Export run config" writes one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue exactly from a checkpoint folder (<out>/checkpoint).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop this invocation after N steps, leaving a checkpoint to --resume from.
    #[arg(long)]
    stop_after: Option<usize>,
    /// A Hugging Face model folder.
    #[arg(long)]
    model: Option<String>,
    /// .txt (continued pretraining), or JSONL with {"text"}, {"prompt","completion"} or {"messages"}.
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    valid_data: Option<String>,
    /// Hold out this fraction of --data for validation when there is no --valid-data.
    #[arg(long)]
    valid_fraction: Option<f64>,
    #[arg(long)]
    out: Option<String>,
    /// lora, qlora, full, partial or dpo. QLoRA stores the base's linear weights in 4 bits first
    /// (see --quant-type); over a model folder already in 4 bits, lora and qlora are the same.
    /// DPO trains a LoRA adapter on {"prompt", "chosen", "rejected"} pairs against the base with
    /// the adapter off (see --beta).
    #[arg(long)]
    method: Option<String>,
    /// For --method dpo: β, how far the adapter may move the model from the base (default 0.1;
    /// higher keeps it closer).
    #[arg(long)]
    beta: Option<f64>,
    /// For --method qlora: nf4 or fp4.
    #[arg(long)]
    quant_type: Option<String>,
    /// For --method qlora: quantize the absmaxes too (true or false).
    #[arg(long)]
    double_quant: Option<String>,
    /// LoRA rank r.
    #[arg(long)]
    rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha/r, or alpha/√r with --rslora).
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long)]
    dropout: Option<f64>,
    /// all-linear, or module names such as q_proj,v_proj (GPT-2: c_attn,c_proj,c_fc).
    #[arg(long)]
    targets: Option<String>,
    #[arg(long)]
    rslora: bool,
    /// default (A Kaiming-uniform, B = 0), gaussian or pissa.
    #[arg(long)]
    init: Option<String>,
    /// For --method partial: how many of the last blocks train.
    #[arg(long)]
    partial_layers: Option<usize>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    epochs: Option<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    seq_len: Option<usize>,
    /// Pack examples into full windows instead of padding each.
    #[arg(long)]
    pack: bool,
    /// Also compute the loss on prompt tokens of {"prompt","completion"} data.
    #[arg(long)]
    train_on_prompt: bool,
    /// Skip bad data lines (counted and reported) instead of stopping at the first.
    #[arg(long)]
    skip_bad_lines: bool,
    /// adamw or sgd.
    #[arg(long)]
    optimizer: Option<String>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// constant, linear or cosine.
    #[arg(long)]
    schedule: Option<String>,
    /// Warmup steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long)]
    max_grad_norm: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate on the validation data every N steps.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Stop after N evaluations without a better validation loss.
    #[arg(long)]
    patience: Option<usize>,
    /// Write <out>/checkpoint every N steps (it is always written at the end).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// auto, cpu, wgpu (or cuda when built with --features cuda).
    #[arg(long)]
    device: Option<String>,
}

#[derive(clap::Args)]
struct PretrainArgs {
    /// The architecture: a Hugging Face config.json (llama family or gpt2). Its vocab_size is
    /// set to the tokenizer's.
    #[arg(long)]
    config: PathBuf,
    /// A tokenizer.json to use instead of training one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Vocabulary size of the tokenizer trained on --data.
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// Plain text (.txt): one stream cut into --seq-len windows.
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    valid_data: Option<String>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value = "cosine")]
    schedule: String,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    #[arg(long, default_value = "auto")]
    device: String,
}

fn pretrain(a: &PretrainArgs) -> tinytune::Result<()> {
    use tinytune::Error;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    let (tokenizer, trained) = match &a.tokenizer {
        Some(p) => (read(p)?, false),
        None => {
            eprintln!("training a byte-level BPE tokenizer of {} tokens on {}", a.vocab_size, a.data.display());
            (tinytune::model::tokenizer::train_bpe(&a.data, a.vocab_size)?, true)
        }
    };
    let tok = tokenizers::Tokenizer::from_bytes(&tokenizer).map_err(|e| Error::input(format!("tokenizer.json: {e}")))?;
    let mut config: serde_json::Value = serde_json::from_slice(&read(&a.config)?)
        .map_err(|e| Error::input(format!("{}: {e}", a.config.display())))?;
    config["vocab_size"] = tok.get_vocab_size(true).into();
    if trained {
        config["bos_token_id"] = tok.token_to_id("<s>").into();
        config["eos_token_id"] = tok.token_to_id("</s>").into();
    }
    let config_text = serde_json::to_string_pretty(&config).expect("config serialises");
    let init = a.out.join("init");
    let files = tinytune::model::init::random_model(&config_text, tokenizer.clone(), a.seed)?;
    let mut named: Vec<(String, Vec<u8>)> = vec![("config.json".into(), config_text.into_bytes()), ("tokenizer.json".into(), tokenizer)];
    named.extend(files.weights);
    if trained {
        let context = config.get("max_position_embeddings").or(config.get("n_positions")).cloned().unwrap_or(1024.into());
        let tc = serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "model_max_length": context, "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false});
        let gc = serde_json::json!({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]});
        named.push(("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tc).expect("json")));
        named.push(("generation_config.json".into(), serde_json::to_vec_pretty(&gc).expect("json")));
    }
    let refs: Vec<(&str, &[u8])> = named.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    tinytune::files::write_files(&init, &refs)?;
    let run = RunConfig {
        model: init.display().to_string(),
        data: a.data.display().to_string(),
        valid_data: a.valid_data.clone(),
        out: a.out.display().to_string(),
        method: tinytune::train::trainer::Method::Full,
        steps: a.steps.unwrap_or(0),
        epochs: a.epochs,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        lr: a.lr,
        schedule: enum_value("schedule", &a.schedule, "constant, linear, cosine")?,
        warmup: a.warmup,
        seed: a.seed,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        device: a.device.clone(),
        weight_decay: 0.1,
        ..RunConfig::default()
    };
    let opened = open_device(&run.device)?;
    let summary = tinytune::native::train(run, None, None, &opened, false)?;
    println!(
        "pretrained {} steps, {} tokens in {:.1} s ({:.0} tokens/s); final loss {:.4}{}; wrote {}",
        summary.steps,
        summary.tokens,
        summary.seconds,
        summary.tokens_per_second,
        summary.final_loss,
        summary.best_valid_loss.map_or(String::new(), |v| format!(", best valid loss {v:.4}")),
        summary.out.display()
    );
    Ok(())
}

fn parse_bool(flag: &str, value: &str) -> tinytune::Result<bool> {
    match value {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(tinytune::Error::input(format!("--{flag} {value}: use true or false"))),
    }
}

fn quant_config(quant_type: &str, double_quant: &str) -> tinytune::Result<QuantConfig> {
    Ok(QuantConfig { quant_type: quant_type.parse()?, double_quant: parse_bool("double-quant", double_quant)? })
}

fn enum_value<T: serde::de::DeserializeOwned>(flag: &str, value: &str, choices: &str) -> tinytune::Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| tinytune::Error::input(format!("--{flag} {value}: choose one of {choices}")))
}

fn run_config(a: &TrainArgs) -> tinytune::Result<RunConfig> {
    let mut c = match &a.config {
        Some(path) => RunConfig::from_toml(&std::fs::read_to_string(path).map_err(|e| tinytune::Error::io(path, e))?)?,
        None => RunConfig::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    set!(model, data, out, beta, rank, alpha, dropout, targets, partial_layers, steps, epochs, batch_size, grad_accum, seq_len,
         lr, weight_decay, warmup, max_grad_norm, seed, eval_every, patience, checkpoint_every, device, valid_fraction);
    if a.valid_data.is_some() {
        c.valid_data = a.valid_data.clone();
    }
    if let Some(m) = &a.method {
        c.method = enum_value("method", m, "lora, qlora, full, partial, dpo")?;
    }
    if let Some(v) = &a.quant_type {
        c.quant_type = v.parse()?;
    }
    if let Some(v) = &a.double_quant {
        c.double_quant = parse_bool("double-quant", v)?;
    }
    if let Some(v) = &a.optimizer {
        c.optimizer = enum_value("optimizer", v, "adamw, sgd")?;
    }
    if let Some(v) = &a.schedule {
        c.schedule = enum_value("schedule", v, "constant, linear, cosine")?;
    }
    if let Some(v) = &a.init {
        c.init = v.parse()?;
    }
    c.rslora |= a.rslora;
    c.pack |= a.pack;
    c.train_on_prompt |= a.train_on_prompt;
    c.skip_bad_lines |= a.skip_bad_lines;
    Ok(c)
}

fn main() -> ExitCode {
    tinytune::device::keep_freed_memory();
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
            if !q4.equal || q4.fused_max_rel_diff > 1e-5 {
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
                let (_, valid) = tinytune::train::data::split(data.examples, run.valid_fraction, run.seed);
                let (loss, tokens) = block_on(tinytune::train::trainer::evaluate_examples(&model, &valid, run.batch_size, run.seq_len))?;
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
                    "model: {kept} weight matrices kept in bf16 as stored, computed in f32 ({:.1} MiB of weights; {:.1} MiB in f32)",
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

fn load_model(dir: &std::path::Path, adapter: Option<&std::path::Path>, quantize: Option<QuantConfig>, opened: &device::OpenedDevice) -> tinytune::Result<Model> {
    let mut model = Model::load_dir(dir, &opened.device)?;
    if let Some(q) = model.quantization() {
        eprintln!(
            "model: linear weights in {}{} ({:.1} MiB of weights on the device)",
            q.quant_type.name(),
            if q.double_quant { " with double quantization" } else { "" },
            model.summary.base_bytes as f64 / 1048576.0
        );
    }
    if let Some(q) = quantize {
        let n = block_on(model.quantize_linears(q))?;
        eprintln!(
            "quantized {n} linear weights to {}{}: {:.1} MiB of weights on the device (f32: {:.1} MiB)",
            q.quant_type.name(),
            if q.double_quant { " with double quantization" } else { "" },
            model.summary.base_bytes as f64 / 1048576.0,
            model.summary.f32_bytes as f64 / 1048576.0
        );
    }
    if let Some(adapter) = adapter {
        let peft = tinytune::lora::peft::PeftAdapter::read_dir(adapter)?;
        let n = peft.load_into(&mut model, "default")?;
        eprintln!("adapter: {} on {n} layers (r = {}, alpha = {})", adapter.display(), peft.config.r, peft.config.lora_alpha);
    }
    Ok(model)
}

fn open_device(name: &str) -> tinytune::Result<device::OpenedDevice> {
    let opened = device::open(name.parse()?)?;
    eprintln!("device: {}", opened.info.summary());
    Ok(opened)
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
