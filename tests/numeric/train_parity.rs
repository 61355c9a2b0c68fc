//! The same training run on the device under test and on the CPU gives the same first losses.

use futures_lite::future::block_on;
use tinytune::lora::{self, LoraConfig};
use tinytune::model::Model;
use tinytune::model::read_f32;
use tinytune::train::batch::batches;
use tinytune::train::data::{DataOptions, OnBadLine, read_dataset};
use tinytune::train::loss::batch_loss;
use tinytune::train::trainer::{TrainConfig, Trainer};

use crate::{device_under_test, fixture};

/// Float sums differ in order between devices; over 5 AdamW steps that stays far below 1e-3.
const TOLERANCE: f64 = 1e-3;

fn first_losses(device: &burn::tensor::Device) -> Vec<f64> {
    let mut m = Model::load_dir(&fixture("tiny-llama"), &device.clone().autodiff()).unwrap();
    let opts = DataOptions { seq_len: 64, train_on_prompt: false, on_bad_line: OnBadLine::Stop };
    let train = read_dataset(&fixture("corpus/eval.jsonl"), &m.tokenizer, &opts).unwrap().examples;
    block_on(lora::attach(&mut m, "default", &LoraConfig { r: 4, ..LoraConfig::default() }, 5)).unwrap();
    let cfg = TrainConfig { lr: 1e-2, steps: 5, batch_size: 4, seq_len: 64, seed: 5, ..TrainConfig::default() };
    let mut t = Trainer::new(&mut m, cfg, train).unwrap();
    let mut losses = Vec::new();
    while !t.done() {
        losses.push(block_on(t.step(&mut m)).unwrap().loss);
    }
    losses
}

#[test]
fn the_first_five_losses_match_the_cpu_within_1e_3() {
    let device = device_under_test();
    let here = first_losses(&device.device);
    let cpu = first_losses(&burn::tensor::Device::flex());
    assert_eq!(here.len(), 5);
    for (i, (a, b)) in here.iter().zip(&cpu).enumerate() {
        assert!((a - b).abs() < TOLERANCE, "step {}: {} on {} vs {b} on the CPU", i + 1, a, device.info.summary());
    }
    assert!(cpu[4] < cpu[0], "the loss falls: {cpu:?}");
}

/// Rows padded past their batch's longest (as a GPU pads them to a length it has compiled for)
/// give the same loss: the added tokens follow every real one and carry no weight.
#[test]
fn padding_the_rows_further_leaves_the_loss_unchanged() {
    let device = device_under_test();
    let m = Model::load_dir(&fixture("tiny-llama"), &device.device).unwrap();
    let opts = DataOptions { seq_len: 64, train_on_prompt: false, on_bad_line: OnBadLine::Stop };
    let examples = read_dataset(&fixture("corpus/eval.jsonl"), &m.tokenizer, &opts).unwrap().examples;
    for batch in batches(&examples, 3, false, 64, 0) {
        let t = batch.ids[0].len();
        let loss = |b| block_on(read_f32(batch_loss(&m, b).unwrap())).unwrap()[0];
        let (plain, padded) = (loss(&batch), loss(&batch.padded_to(t + 21, 0)));
        assert!((plain - padded).abs() < 1e-5, "T = {t}: {plain} unpadded, {padded} padded to {}", t + 21);
    }
}
