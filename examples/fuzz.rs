//! A mutation fuzzer on stable Rust for every parser of untrusted input (`fuzz/targets.rs`).
//!
//! ```text
//! cargo run --example fuzz -- seeds                      # write the seed corpus to fuzz/corpus/
//! cargo run --example fuzz -- run TARGET|all [--execs N] [--seed S] [--save]
//! cargo run --example fuzz -- replay FILE TARGET          # run one input (a saved crash)
//! ```
//!
//! Each execution takes an input from the corpus, applies one to four mutations (bit flips,
//! interesting bytes and numbers, deletions, insertions, duplications, tokens from a dictionary
//! of the formats' keywords, splices with another input) and runs the target under
//! `catch_unwind`. An input that gives a new kind of answer (a new error message, its numbers and
//! quoted parts removed) joins the corpus: a cheap stand-in for coverage feedback that steers
//! the mutations past each check in turn. A panic is a crash: its input is written to
//! `fuzz/crashes/` and counted. With `--save`, the inputs that joined are written to the corpus.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use targets::{SEP, TARGETS, Target};

const MAX_INPUT: usize = 256 * 1024;
const MAX_CORPUS: usize = 4096;
/// Inputs that joined the corpus in one run and are written back with `--save`, per target.
const MAX_SAVED: usize = 150;

const DICTIONARY: &[&str] = &[
    "\"", "{", "}", "[", "]", ",", ":", "null", "true", "false", "-1", "0", "1e309", "NaN", "4294967296",
    "18446744073709551615", "99999999999999999999", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F32\"",
    "\"F16\"", "\"BF16\"", "\"U8\"", "\"I64\"", "\"__metadata__\"", "\"model_type\"", "\"llama\"", "\"gpt2\"",
    "\"qwen2\"", "\"vocab_size\"", "\"hidden_size\"", "\"num_attention_heads\"", "\"num_key_value_heads\"",
    "\"head_dim\"", "\"n_embd\"", "\"n_head\"", "\"rope_scaling\"", "\"r\"", "\"lora_alpha\"",
    "\"target_modules\"", "\"init_lora_weights\"", "\"pissa\"", "\"use_rslora\"", "\"fan_in_fan_out\"",
    "\"modules_to_save\"", "\"quant_type\"", "\"blocksize\"", "\"nested_blocksize\"", "\"nested_offset\"",
    "\"added_tokens\"", "\"model\"", "\"vocab\"", "\"merges\"", "\"pre_tokenizer\"", "\"normalizer\"",
    "\"decoder\"", "\"post_processor\"", "\"chat_template\"", "\"bos_token\"", "\"eos_token\"", "\"text\"",
    "\"prompt\"", "\"completion\"", "\"messages\"", "\"role\"", "\"content\"", "\"assistant\"", "\"user\"",
    "rank = ", "steps = ", "batch_size = ", "seq_len = ", "method = ", "\"qlora\"", "lr = ", "epochs = ",
    "[", "\n", "{%", "%}", "{{", "}}", "{#", "#}", "for ", "endfor", "if ", "endif", "range(", "loop.",
    "namespace(", "messages", "raise_exception(", "set ", "macro ", "endmacro", "|tojson", "* 100000000",
    "generation", "endgeneration", "\u{0}", "\u{feff}", "é", "😀",
];

const INTERESTING: &[u8] = b"\0\xff\x7f\x80\"{}[],:09-\n\\%.e";

/// xorshift64*: fast, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(input: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(16)).min(len - at);
                input.drain(at..at + n);
            }
            3 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let n = (1 + rng.below(64)).min(len - from);
                let chunk = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            5 | 6 => {
                let word = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let at = rng.below(len + 1);
                if rng.below(2) == 0 || len == 0 {
                    input.splice(at..at, word.iter().copied());
                } else {
                    let end = (at + word.len()).min(len);
                    input.splice(at..end, word.iter().copied());
                }
            }
            7 => {
                // Replace a run of digits with an interesting number.
                let digits: Vec<usize> = (0..len).filter(|&i| input[i].is_ascii_digit()).collect();
                if let Some(&start) = digits.get(rng.below(digits.len())) {
                    let mut end = start;
                    while end < len && input[end].is_ascii_digit() {
                        end += 1;
                    }
                    let n = ["0", "1", "2", "-1", "3", "64", "255", "256", "65536", "4294967295", "4294967296", "9007199254740993", "18446744073709551615", "1e30"];
                    input.splice(start..end, n[rng.below(n.len())].bytes());
                }
            }
            _ => {
                if let Some(other) = corpus.get(rng.below(corpus.len())) {
                    let cut = rng.below(len + 1);
                    let from = rng.below(other.len() + 1);
                    input.truncate(cut);
                    input.extend_from_slice(&other[from..]);
                }
            }
        }
    }
    input.truncate(MAX_INPUT);
}

/// The kind of an answer: `ok`, or the error message with numbers and quoted parts removed.
fn signature(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => {
            let mut out = String::new();
            let mut quoted = false;
            for c in e.lines().next().unwrap_or("").chars() {
                if c == '"' || c == '\'' || c == '`' {
                    quoted = !quoted;
                    continue;
                }
                if quoted || c.is_ascii_digit() {
                    continue;
                }
                out.push(c);
                if out.len() >= 80 {
                    break;
                }
            }
            out
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: names for corpus and crash files.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn read_corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = root().join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

struct Report {
    execs: u64,
    seconds: f64,
    corpus: usize,
    crashes: usize,
    kinds: usize,
}

fn fuzz(name: &str, target: Target, execs: u64, seed: u64, save: bool) -> Report {
    let mut corpus = read_corpus(name);
    if corpus.is_empty() {
        eprintln!("{name}: no seeds in fuzz/corpus/{name}; run `cargo run --example fuzz -- seeds` first");
        corpus.push(Vec::new());
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut crashes: HashSet<String> = HashSet::new();
    let mut saved = 0;
    // The seeds' own answers first: all must run without a panic.
    for input in corpus.clone() {
        if let Ok(r) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
            seen.insert(signature(&r));
        }
    }
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let start = Instant::now();
    let mut last_print = Instant::now();
    for n in 0..execs {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut input, &corpus, &mut rng);
        match catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(result) => {
                let sig = signature(&result);
                if !seen.contains(&sig) {
                    seen.insert(sig);
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input.clone());
                    }
                    if save && saved < MAX_SAVED {
                        let dir = root().join("corpus").join(name);
                        let _ = std::fs::write(dir.join(format!("found-{:016x}", hash(&input))), &input);
                        saved += 1;
                    }
                }
            }
            Err(_) => {
                let message = LAST_PANIC.with(|m| m.borrow().lines().next().unwrap_or("").to_string());
                let dir = root().join("crashes");
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("{name}-{:016x}", hash(&input)));
                let _ = std::fs::write(&file, &input);
                if crashes.insert(message.clone()) {
                    eprintln!("{name}: CRASH after {n} executions: {message}\n  input: {}", file.display());
                }
            }
        }
        if last_print.elapsed().as_secs() >= 30 {
            eprintln!(
                "{name}: {n} executions, {:.0}/s, corpus {}, kinds of answer {}",
                n as f64 / start.elapsed().as_secs_f64(),
                corpus.len(),
                seen.len()
            );
            last_print = Instant::now();
        }
    }
    Report { execs, seconds: start.elapsed().as_secs_f64(), corpus: corpus.len(), crashes: crashes.len(), kinds: seen.len() }
}

fn write_seeds() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let read = |p: &str| std::fs::read(fixtures.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let join = |a: &[u8], b: &[u8]| [a, SEP, b].concat();
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| seeds.push((target, name.to_string(), bytes));

    // Weights: a random model of the tiny config, in f32 and in 4 bits with double quantization.
    let files = tinytune::model::init::random_model(targets::TINY_CONFIG, targets::tiny_tokenizer_json().to_vec(), 1).unwrap();
    add("safetensors", "tiny-f32", files.weights[0].1.clone());
    let mut model = tinytune::model::Model::load(&files, &burn::tensor::Device::flex()).unwrap();
    let files16 = futures_lite::future::block_on(model.save_files_as(safetensors::Dtype::BF16)).unwrap();
    let weights16 = files16.iter().find(|(n, _)| n.ends_with(".safetensors")).unwrap().1.clone();
    add("safetensors", "tiny-bf16", weights16);
    let q = tinytune::quant::bnb::QuantConfig { quant_type: tinytune::quant::nf4::QuantType::Nf4, double_quant: true };
    futures_lite::future::block_on(model.quantize_linears(q)).unwrap();
    let saved = futures_lite::future::block_on(model.save_files()).unwrap();
    add("quant_state", "tiny-nf4-dq", saved.iter().find(|(n, _)| n.ends_with(".safetensors")).unwrap().1.clone());

    for m in ["tiny-llama", "tiny-gpt2", "tiny-qwen2", "tiny-llama-bf16"] {
        add("config", m, read(&format!("{m}/config.json")));
    }
    add("config", "builtin", std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("www/assets/builtin/model/config.json")).unwrap());
    for m in ["tiny-llama", "tiny-gpt2"] {
        add("tokenizer", m, join(&read(&format!("{m}/tokenizer.json")), &read(&format!("{m}/tokenizer_config.json"))));
    }
    add("tokenizer", "tiny-llama-alone", read("tiny-llama/tokenizer.json"));

    for a in ["tiny-llama/adapter", "tiny-llama/adapter-rslora", "pissa/adapter"] {
        add("adapter", &a.replace('/', "-"), join(&read(&format!("{a}/adapter_config.json")), &read(&format!("{a}/adapter_model.safetensors"))));
    }

    add("run_toml", "default", tinytune::train::run::RunConfig::default().to_toml().into_bytes());
    add("run_toml", "qlora", read("quant/qlora-adapter/run.toml"));

    let jsonl = read("corpus/eval.jsonl");
    add("data", "text-jsonl", [&[1u8][..], &jsonl].concat());
    add("data", "plain-text", [&[0u8][..], b"Once upon a time.\n\nThe end.\n"].concat());
    add("data", "prompt-completion", [&[1u8][..], b"{\"prompt\": \"Q: 2+2?\", \"completion\": \" 4\"}\n{\"prompt\": \"Hi\", \"completion\": \" there\"}\n"].concat());
    add("data", "chat", [&[1u8][..], b"{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}\n"].concat());
    add("data", "json-array", [&[2u8][..], b"[{\"text\": \"one\"}, {\"prompt\": \"a\", \"completion\": \"b\"}]"].concat());

    let zephyr = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
    let chatml = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] | trim + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let generation = "{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}{% endgeneration %}{% else %}{{ m.role }}: {{ m.content.strip() }}\n{% endif %}{% endfor %}";
    let raising = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}{% set ns.n = ns.n + 1 %}{{ m.content|tojson }}{% endfor %}";
    add("gguf", "kquants", read("gguf/kquants.gguf"));
    add("gguf", "tiny-llama-q4_0", read("gguf/tiny-llama-Q4_0.gguf"));
    for (name, t) in [("zephyr", zephyr), ("chatml", chatml), ("generation", generation), ("raising", raising)] {
        add("chat_template", name, t.as_bytes().to_vec());
    }

    for (target, name, bytes) in seeds {
        let dir = root().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
    eprintln!("wrote the seeds to {}", root().join("corpus").display());
}

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("{info}");
        LAST_PANIC.with(|m| *m.borrow_mut() = message);
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<u64>().ok());
    match args.first().map(String::as_str) {
        Some("seeds") => write_seeds(),
        Some("run") => {
            let which = args.get(1).map(String::as_str).unwrap_or("all");
            let execs = flag("--execs").unwrap_or(1_000_000);
            let seed = flag("--seed").unwrap_or(1);
            let save = args.iter().any(|a| a == "--save");
            println!("| target | executions | seconds | executions/s | corpus | kinds of answer | crashes |");
            println!("|---|---|---|---|---|---|---|");
            let mut failed = false;
            for (name, target) in TARGETS {
                if which != "all" && which != name {
                    continue;
                }
                let r = fuzz(name, target, execs, seed, save);
                failed |= r.crashes > 0;
                println!(
                    "| {name} | {} | {:.0} | {:.0} | {} | {} | {} |",
                    r.execs,
                    r.seconds,
                    r.execs as f64 / r.seconds,
                    r.corpus,
                    r.kinds,
                    r.crashes
                );
            }
            std::process::exit(i32::from(failed));
        }
        Some("replay") => {
            let (Some(file), Some(name)) = (args.get(1), args.get(2)) else {
                eprintln!("usage: fuzz replay FILE TARGET");
                std::process::exit(2);
            };
            let input = std::fs::read(file).expect("read the input");
            let target = TARGETS.iter().find(|(n, _)| n == name).expect("a target name").1;
            let _ = std::panic::take_hook();
            println!("{:?}", target(&input));
        }
        _ => {
            eprintln!("usage: fuzz seeds | fuzz run TARGET|all [--execs N] [--seed S] [--save] | fuzz replay FILE TARGET");
            eprintln!("targets: {}", TARGETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "));
            std::process::exit(2);
        }
    }
}
