//! What streaming costs during generation: greedy decoding of 128 new tokens on the CPU engine,
//! then the two things streaming adds per token, timed apart over the same tokens:
//! - turning each new id into text (`StreamDecoder::push`, which `generate` runs for its callback);
//! - writing that text and flushing it, as `tinytune generate` does, into a pipe read by `cat`.
//!
//! Prints one JSON line per model; asserts nothing.
//!
//!     cargo bench --profile dev --bench streaming [-- MODEL_DIR ...]
//!
//! Without arguments it runs the built-in model.

use std::io::Write;
use std::time::Instant;

use burn::tensor::Device;
use futures_lite::future::block_on;
use tinytune::generate::{Sampling, StreamDecoder, generate};
use tinytune::model::Model;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PROMPT: &str = "The little robot looked at the";
const NEW: usize = 128;

fn main() {
    let mut dirs: Vec<std::path::PathBuf> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).map(Into::into).collect();
    if dirs.is_empty() {
        dirs.push(std::path::Path::new(ROOT).join("www/assets/builtin/model"));
    }
    let device = Device::flex();
    for dir in dirs {
        let model = Model::load_dir(&dir, &device).unwrap();
        let ids = model.tokenizer.encode(PROMPT, true).unwrap();
        let sampling = Sampling { max_new_tokens: NEW, temperature: 0.0, stop_at_eos: false, ..Sampling::default() };
        // One untimed run warms the caches and the allocator.
        block_on(generate(&model, &ids, &sampling, |_, _| true)).unwrap();
        let mut runs = Vec::new();
        let mut new = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            new = block_on(generate(&model, &ids, &sampling, |_, _| true)).unwrap().0;
            runs.push(started.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        let total = runs[1];

        // The decoding alone, replayed over the same tokens (it ran inside `total` too).
        let started = Instant::now();
        let mut texts = Vec::new();
        let mut stream = StreamDecoder::new(&ids);
        for &id in &new {
            texts.push(stream.push(&model.tokenizer, id).unwrap());
        }
        let decode = started.elapsed().as_secs_f64();

        // Writing and flushing each piece into a pipe, as the CLI does to its stdout.
        let mut cat = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("cat runs");
        let mut pipe = cat.stdin.take().unwrap();
        let started = Instant::now();
        for text in &texts {
            write!(pipe, "{text}").unwrap();
            pipe.flush().unwrap();
        }
        let write = started.elapsed().as_secs_f64();
        drop(pipe);
        cat.wait().unwrap();

        let n = new.len() as f64;
        println!(
            "{}",
            serde_json::json!({
                "model": dir.file_name().map(|f| f.to_string_lossy().into_owned()),
                "new_tokens": new.len(),
                "tokens_per_s": n / total,
                "ms_per_token": 1e3 * total / n,
                "decode_us_per_token": 1e6 * decode / n,
                "write_flush_us_per_token": 1e6 * write / n,
                "streaming_share_percent": 100.0 * (decode + write) / (total + write),
            })
        );
    }
}
