//! The commands whose work is more than a few lines: batch generation, merging, pretraining.

use std::path::PathBuf;

use futures_lite::future::block_on;
use tinytune::device;
use tinytune::generate::Sampling;
use tinytune::model::Model;
use tinytune::quant::bnb::QuantConfig;
use tinytune::train::run::RunConfig;

use crate::args::*;

/// `generate` with several prompts in one batch, optionally each through its own adapter.
pub(crate) fn generate_batch(model: &mut Model, adapters: Option<&str>, route: Option<&str>, prompts: &[String], sampling: &Sampling, chat: bool) -> tinytune::Result<()> {
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

pub(crate) fn merge_models(config: &std::path::Path, out: &std::path::Path, seed: u64) -> tinytune::Result<()> {
    use tinytune::Error;
    use tinytune::merge::models::{Checkpoint, merge};
    use tinytune::merge::recipe::MergeConfig;
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
        let mut files = tinytune::model::ModelFiles::from_dir(&dir)?;
        // Merging whole models reads every weight as f32 (a GGUF file's 4-bit ones too).
        files.widen_packed()?;
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

pub(crate) fn merge(a: &MergeArgs) -> tinytune::Result<()> {
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

pub(crate) fn pretrain(a: &PretrainArgs) -> tinytune::Result<()> {
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

/// Load a model folder, report what it is stored in, and optionally quantize it and attach an
/// adapter.
pub(crate) fn load_model(dir: &std::path::Path, adapter: Option<&std::path::Path>, quantize: Option<QuantConfig>, opened: &device::OpenedDevice) -> tinytune::Result<Model> {
    let mut model = Model::load_dir(dir, &opened.device)?;
    let embedding = model.summary.embedding_quantization.as_ref().map(|e| format!(", the token embedding in {e}")).unwrap_or_default();
    if let Some(q) = model.quantization() {
        eprintln!(
            "model: linear weights in {}{}{embedding} ({:.1} MiB of weights on the device)",
            q.quant_type.name(),
            if q.double_quant { " with double quantization" } else { "" },
            model.summary.base_bytes as f64 / 1048576.0
        );
    } else if let Some(kept) = &model.summary.quantization {
        eprintln!("model: linear weights in {kept}{embedding}, 8-bit codes as the file stores them ({:.1} MiB of weights)", model.summary.base_bytes as f64 / 1048576.0);
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

/// Open the device a command asked for and say which it is.
pub(crate) fn open_device(name: &str) -> tinytune::Result<device::OpenedDevice> {
    let opened = device::open(name.parse()?)?;
    eprintln!("device: {}", opened.info.summary());
    Ok(opened)
}
