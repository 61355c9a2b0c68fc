//! QLoRA beside LoRA on the built-in model: base-weight bytes on the device, training step time,
//! and the 4-bit kernels (dequantize-then-matmul vs the fused kernel) for decoding shapes. Prints
//! figures; asserts nothing about speed.
//!
//!     cargo bench --profile dev --bench qlora                 # CPU, and wgpu when an adapter opens
//!     cargo bench --profile dev --bench qlora -- --steps 10   # more steps
//!
//! Step times are the median of the timed steps (the first, which builds kernels and caches, is
//! not timed). On a machine without a GPU, wgpu runs on Mesa's lavapipe: a correctness device,
//! whose timings say little about real GPUs but do compare the two methods.

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use futures_lite::future::block_on;
use tinytune::device::{self, DeviceChoice, OpenedDevice};
use tinytune::lora;
use tinytune::model::{Model, read_f32};
use tinytune::quant::{Q4Tensor, QuantType, Quant4};
use tinytune::train::data::{DataOptions, OnBadLine, read_dataset};
use tinytune::train::trainer::{Method, TrainConfig, Trainer, prepare_base};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn mib(b: f64) -> String {
    format!("{:.2} MiB", b / 1048576.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Train `steps` + 1 steps with `method`; returns (median step seconds, tokens per step, base
/// bytes, allocator bytes in use after the base was ready and after the last step).
fn run(opened: &OpenedDevice, method: Method, steps: usize) -> (f64, usize, usize, Option<u64>, Option<u64>) {
    let device = opened.device.clone().autodiff();
    let mut model = Model::load_dir(&std::path::Path::new(ROOT).join("www/assets/builtin/model"), &device).unwrap();
    let cfg = TrainConfig { method, steps: steps + 1, batch_size: 8, seq_len: 128, lr: 2e-3, ..TrainConfig::default() };
    block_on(prepare_base(&mut model, &cfg)).unwrap();
    let in_use = || device.memory_pool_usage().map(|u| u.bytes_in_use);
    let after_base = in_use();
    block_on(lora::attach(&mut model, "default", &cfg.lora, 0)).unwrap();
    let opts = DataOptions { seq_len: 128, train_on_prompt: false, on_bad_line: OnBadLine::Stop };
    let data = read_dataset(&std::path::Path::new(ROOT).join("www/assets/builtin/tasks/json/train.jsonl"), &model.tokenizer, &opts).unwrap();
    let mut trainer = Trainer::new(&mut model, cfg, data.examples).unwrap();
    let mut times = Vec::new();
    let mut tokens = 0;
    for i in 0..=steps {
        let started = Instant::now();
        let r = block_on(trainer.step(&mut model)).unwrap();
        // The step's loss was read back, so the device has finished the step.
        if i > 0 {
            times.push(started.elapsed().as_secs_f64());
            tokens = r.tokens;
        }
    }
    (median(times), tokens, model.summary.base_bytes, after_base, in_use())
}

fn train_table(opened: &OpenedDevice, steps: usize) {
    println!("\n## LoRA vs QLoRA on {} (built-in model, r 8 on all linear layers, batch 8 × 128, AdamW)", opened.info.summary());
    println!("| method | base weights on the device | step time (median of {steps}) | tokens/s | allocator in use: base ready / after the last step |");
    println!("|---|---|---|---|---|");
    for method in [Method::Lora, Method::Qlora] {
        let (secs, tokens, base, after_base, after) = run(opened, method, steps);
        let alloc = match (after_base, after) {
            (Some(a), Some(b)) => format!("{} / {}", mib(a as f64), mib(b as f64)),
            _ => "– (CPU: no allocator count)".into(),
        };
        println!("| {method:?} | {} | {:.3} s | {:.0} | {alloc} |", mib(base as f64), secs, tokens as f64 / secs);
    }
}

fn kernel_table(opened: &OpenedDevice, reps: usize) {
    println!("\n## 4-bit linear map on {}: dequantize + matmul vs the fused kernel", opened.info.summary());
    println!("| x · Wᵀ | dequantize + matmul | fused | f32 matmul |");
    println!("|---|---|---|---|");
    let device = &opened.device;
    for (rows, out, cols) in [(1, 688, 256), (1, 256, 688), (1, 2048, 2048), (8, 2048, 2048), (64, 2048, 2048)] {
        let w: Vec<f32> = (0..out * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05).collect();
        let q = Q4Tensor::new(&Quant4::quantize(&w, [out, cols], QuantType::Nf4, true).unwrap(), device);
        let dense = Tensor::<2>::from_data(TensorData::new(w, [out, cols]), device).transpose();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.01f32; rows * cols], [rows, cols]), device);
        let time = |f: &dyn Fn() -> Tensor<2>| {
            block_on(read_f32(f())).unwrap();
            let started = Instant::now();
            let mut last = None;
            for _ in 0..reps {
                last = Some(f());
            }
            block_on(read_f32(last.unwrap())).unwrap();
            started.elapsed().as_secs_f64() / reps as f64 * 1e3
        };
        let unfused = time(&|| q.linear(x.clone(), false));
        let fused = time(&|| q.linear(x.clone(), true));
        let f32_mm = time(&|| x.clone().matmul(dense.clone()));
        println!("| [{rows}, {cols}] · [{out}, {cols}]ᵀ | {unfused:.3} ms | {fused:.3} ms | {f32_mm:.3} ms |");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps = args.iter().position(|a| a == "--steps").and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(4);
    let cpu = device::open(DeviceChoice::Cpu).unwrap();
    train_table(&cpu, steps);
    kernel_table(&cpu, 20);
    match device::open(DeviceChoice::Wgpu) {
        Ok(gpu) => {
            train_table(&gpu, steps.min(3));
            kernel_table(&gpu, 5);
        }
        Err(e) => println!("\nwgpu: {e}"),
    }
}
