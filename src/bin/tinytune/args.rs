//! The command line: every command, its flags, and how `train`'s flags become a run config.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tinytune::quant::bnb::QuantConfig;
use tinytune::train::run::RunConfig;

#[derive(Parser)]
#[command(name = "tinytune", version, about = "LoRA and QLoRA finetuning playground: the native twin of the page")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct MergeArgs {
    /// The base model. With --adapter, the adapter is merged into it; with --adapters, the
    /// combined adapter is checked against it (every module must fit).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A PEFT LoRA adapter folder to merge into --model (W ← W + s·A·B).
    #[arg(long, conflicts_with = "adapters")]
    pub adapter: Option<PathBuf>,
    /// Adapter folders to combine, comma-separated.
    #[arg(long, required_unless_present = "adapter")]
    pub adapters: Option<String>,
    /// One weight per adapter, comma-separated (negative ones subtract). Default: 1 each.
    #[arg(long, allow_hyphen_values = true)]
    pub weights: Option<String>,
    /// linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd,
    /// magnitude_prune, magnitude_prune_svd.
    #[arg(long, default_value = "svd")]
    pub combination: String,
    /// For the pruning types: the fraction of values kept.
    #[arg(long)]
    pub density: Option<f64>,
    /// For the TIES types: total (sign of the sum) or frequency (sign of the count).
    #[arg(long, default_value = "total")]
    pub majority_sign: String,
    /// For the SVD types: the merged adapter's rank (default: the largest input rank).
    #[arg(long)]
    pub svd_rank: Option<usize>,
    /// For the SVD types: clamp the factors at this quantile of their entries.
    #[arg(long)]
    pub svd_clamp: Option<f64>,
    /// DARE's random draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// peft (PEFT's config: α = r, rsLoRA copied, so an rsLoRA merge is scaled by √r) or exact
    /// (scaling 1).
    #[arg(long, default_value = "peft")]
    pub scaling: String,
    /// Output folder (created; existing files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// auto, cpu, wgpu (or cuda when built with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Every flag is also a key of run.toml (`--batch-size` is `batch_size`); flags override the file.
#[derive(clap::Args)]
pub(crate) struct TrainArgs {
    /// A run.toml with the same keys as these flags (the page's "Export run config" writes one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue exactly from a checkpoint folder (<out>/checkpoint).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop this invocation after N steps, leaving a checkpoint to --resume from.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// A Hugging Face model folder.
    #[arg(long)]
    pub model: Option<String>,
    /// .txt (continued pretraining), or JSONL with {"text"}, {"prompt","completion"} or {"messages"}.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub valid_data: Option<String>,
    /// Hold out this fraction of --data for validation when there is no --valid-data.
    #[arg(long)]
    pub valid_fraction: Option<f64>,
    #[arg(long)]
    pub out: Option<String>,
    /// lora, qlora, full, partial or dpo. QLoRA stores the base's linear weights in 4 bits first
    /// (see --quant-type); over a model folder already in 4 bits, lora and qlora are the same.
    /// DPO trains a LoRA adapter on {"prompt", "chosen", "rejected"} pairs against the base with
    /// the adapter off (see --beta).
    #[arg(long)]
    pub method: Option<String>,
    /// For --method dpo: β, how far the adapter may move the model from the base (default 0.1;
    /// higher keeps it closer).
    #[arg(long)]
    pub beta: Option<f64>,
    /// For --method qlora: nf4 or fp4.
    #[arg(long)]
    pub quant_type: Option<String>,
    /// For --method qlora: quantize the absmaxes too (true or false).
    #[arg(long)]
    pub double_quant: Option<String>,
    /// LoRA rank r.
    #[arg(long)]
    pub rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha/r, or alpha/√r with --rslora).
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long)]
    pub dropout: Option<f64>,
    /// all-linear, or module names such as q_proj,v_proj (GPT-2: c_attn,c_proj,c_fc).
    #[arg(long)]
    pub targets: Option<String>,
    #[arg(long)]
    pub rslora: bool,
    /// default (A Kaiming-uniform, B = 0), gaussian or pissa.
    #[arg(long)]
    pub init: Option<String>,
    /// For --method partial: how many of the last blocks train.
    #[arg(long)]
    pub partial_layers: Option<usize>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Pack examples into full windows instead of padding each.
    #[arg(long)]
    pub pack: bool,
    /// Also compute the loss on prompt tokens of {"prompt","completion"} data.
    #[arg(long)]
    pub train_on_prompt: bool,
    /// Skip bad data lines (counted and reported) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// adamw or sgd.
    #[arg(long)]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// constant, linear or cosine.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Warmup steps.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate on the validation data every N steps.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Stop after N evaluations without a better validation loss.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Write <out>/checkpoint every N steps (it is always written at the end).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// auto, cpu, wgpu (or cuda when built with --features cuda).
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct PretrainArgs {
    /// The architecture: a Hugging Face config.json (llama family or gpt2). Its vocab_size is
    /// set to the tokenizer's.
    #[arg(long)]
    pub config: PathBuf,
    /// A tokenizer.json to use instead of training one.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary size of the tokenizer trained on --data.
    #[arg(long, default_value_t = 2048)]
    pub vocab_size: usize,
    /// Plain text (.txt): one stream cut into --seq-len windows.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub valid_data: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

pub(crate) fn parse_bool(flag: &str, value: &str) -> tinytune::Result<bool> {
    match value {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(tinytune::Error::input(format!("--{flag} {value}: use true or false"))),
    }
}

pub(crate) fn quant_config(quant_type: &str, double_quant: &str) -> tinytune::Result<QuantConfig> {
    Ok(QuantConfig { quant_type: quant_type.parse()?, double_quant: parse_bool("double-quant", double_quant)? })
}

pub(crate) fn enum_value<T: serde::de::DeserializeOwned>(flag: &str, value: &str, choices: &str) -> tinytune::Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| tinytune::Error::input(format!("--{flag} {value}: choose one of {choices}")))
}

pub(crate) fn run_config(a: &TrainArgs) -> tinytune::Result<RunConfig> {
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
